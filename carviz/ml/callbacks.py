"""The Keras callbacks that keep a run's record while fit() runs: one concept per class.

MetricsCsv (a row per epoch), KeepBest (the best-validation epoch's weights, restored at the end),
WholeModelCheckpoint (resumable state), ProgressFile (live progress), StopOnRequest (stop requests and signals),
SweepPruning (stop a run whose configuration trails its sweep's others at a rung epoch).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import keras

from carviz.core.config import grid_point
from carviz.core.store import MetricsWriter, Run, now_iso
from carviz.ml import checkpoints
from carviz.core.sweeps import pruned_sibling_of

log = logging.getLogger("carviz.ml.train")

PROGRESS_INTERVAL = 0.5  # seconds between progress.json writes (and stop checks within an epoch)


class StopRequested(Exception):
    """Raised inside fit() when a stop was requested, so no partial epoch is recorded."""


class Pruned(StopRequested):
    """Raised inside fit() by SweepPruning: the run's configuration trailed the others of its sweep at a rung epoch
    (or, at epoch 0, had been pruned already; reason says by which run)."""

    def __init__(self, epoch: int, value: float | None = None, reason: str = "") -> None:
        super().__init__(f"pruned at epoch {epoch}")
        self.epoch = epoch
        self.value = value
        self.reason = reason or f"its configuration trailed the sweep's others at epoch {epoch}"


def as_float(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        try:
            return float(value.numpy())
        except Exception:  # noqa: BLE001 - a metric we cannot read is left empty, not fatal
            return None


class MetricsCsv(keras.callbacks.Callback):
    """Appends one fsynced row per finished epoch (losses, accuracies, learning rate, seconds) to metrics.csv."""

    def __init__(self, writer: MetricsWriter, epochs: int) -> None:
        super().__init__()
        self.writer = writer
        self.epochs = epochs
        self.epoch_started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = dict(logs or {})
        row = {
            "epoch": epoch + 1,
            "loss": as_float(logs.get("loss")),
            "accuracy": as_float(logs.get("accuracy")),
            "val_loss": as_float(logs.get("val_loss")),
            "val_accuracy": as_float(logs.get("val_accuracy")),
            "learning_rate": as_float(self.model.optimizer.learning_rate),
            "seconds": round(time.perf_counter() - self.epoch_started, 3),
        }
        self.writer.append(row)
        log.info("epoch %d/%d %s", epoch + 1, self.epochs,
                 " ".join(f"{k}={v:.4g}" for k, v in row.items() if isinstance(v, float)))


class KeepBest(keras.callbacks.Callback):
    """The model a run keeps: the epoch with the highest val_accuracy (the first of equals). Whenever an epoch beats
    the best so far, the whole model's weights are copied in memory; save() writes them to the run's best-weights
    file (the checkpoint calls it, so a resumed run still has them); restore() puts them back after fit(), before
    the final evaluation and save.

    whole_model is the model whose weights are kept when fit() trains only part of it (the remainder on cached
    features shares its layers, so restoring the whole model restores the remainder too). best is the best epoch
    so far as (epoch, val_accuracy) when resuming; its weights file must exist. Goes before WholeModelCheckpoint,
    which records the best epoch with each checkpoint."""

    MONITOR = "val_accuracy"

    def __init__(self, run: Run, whole_model: Any = None, best: tuple[int, float] | None = None) -> None:
        super().__init__()
        self.run = run
        self.whole_model = whole_model
        self.best_epoch, self.best_value = best if best is not None else (None, None)
        self.best_weights: list[Any] | None = None  # in memory since the last improvement; None: in the file
        self.unsaved = False

    @property
    def best(self) -> tuple[int, float] | None:
        return (self.best_epoch, self.best_value) if self.best_epoch is not None else None

    def _whole(self) -> Any:
        return self.whole_model if self.whole_model is not None else self.model

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = as_float((logs or {}).get(self.MONITOR))
        if value is None or not math.isfinite(value):
            return
        if self.best_value is None or value > self.best_value:
            self.best_weights = self._whole().get_weights()
            self.best_epoch, self.best_value, self.unsaved = epoch + 1, value, True

    def save(self) -> None:
        """Write the best epoch's weights to its file, if they are not there yet."""
        if self.unsaved and self.best_weights is not None:
            weights = self.best_weights
            self.run.save_best(lambda path: checkpoints.write(path, weights), self.best_epoch)
            self.unsaved = False

    def restore(self) -> int | None:
        """Put the best epoch's weights back into the whole model; returns that epoch (None: no epoch had a value,
        the model stays as it is)."""
        if self.best_epoch is None:
            return None
        if self.best_weights is not None:
            self._whole().set_weights(self.best_weights)
        else:
            checkpoints.load_weights(self._whole(), self.run.best_weights_path(self.best_epoch))
        return self.best_epoch


class WholeModelCheckpoint(keras.callbacks.Callback):
    """Saves the whole model's weights with the optimizer's state every `every` epochs and after the last one, for
    resuming (ml/checkpoints.py), with keep_best's best epoch so far and its weights, so a resumed run still knows it.

    whole_model is what is saved when fit() trains only part of it (the remainder on cached features)."""

    def __init__(self, run: Run, every: int, epochs: int, whole_model: Any = None,
                 keep_best: KeepBest | None = None) -> None:
        super().__init__()
        self.run = run
        self.every = every
        self.epochs = epochs
        self.whole_model = whole_model
        self.keep_best = keep_best

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if (epoch + 1) % self.every == 0 or epoch + 1 == self.epochs:
            model = self.whole_model if self.whole_model is not None else self.model
            if self.keep_best is not None:
                self.keep_best.save()
            self.run.save_checkpoint(lambda path: checkpoints.save(path, model), epoch + 1,
                                     best=self.keep_best.best if self.keep_best is not None else None)


class ProgressFile(keras.callbacks.Callback):
    """Writes progress.json (epoch, step, images/s, ETA, running loss and accuracy) at most every 0.5 s."""

    def __init__(self, run: Run, steps_per_epoch: int, epochs: int, batch_size: int) -> None:
        super().__init__()
        self.run = run
        self.steps_per_epoch = steps_per_epoch
        self.epochs = epochs
        self.batch_size = batch_size
        self.last_write = 0.0
        self.measure_from: tuple[float, int] | None = None
        self.images_per_second: float | None = None
        self.epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch
        self.measure_from = None
        self._write(epoch, 0, force=True)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        now = time.perf_counter()
        # Throughput over this epoch's steps after the first (the first may include tracing).
        if self.measure_from is None:
            self.measure_from = (now, batch + 1)
        elif batch + 1 > self.measure_from[1]:
            elapsed = now - self.measure_from[0]
            if elapsed > 0:
                self.images_per_second = (batch + 1 - self.measure_from[1]) * self.batch_size / elapsed
        self._write(self.epoch, batch + 1, logs=logs)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._write(epoch, self.steps_per_epoch, logs=logs, force=True)

    def _write(self, epoch: int, step: int, logs: dict | None = None, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self.last_write < PROGRESS_INTERVAL:
            return
        self.last_write = now
        remaining_steps = (self.epochs - epoch) * self.steps_per_epoch - step
        eta = remaining_steps * self.batch_size / self.images_per_second if self.images_per_second else None
        self.run.write_progress({
            "phase": "training", "epoch": epoch + 1, "epochs": self.epochs, "step": step,
            "steps_per_epoch": self.steps_per_epoch, "images_per_second": self.images_per_second,
            "eta_seconds": eta, "loss": as_float((logs or {}).get("loss")),
            "accuracy": as_float((logs or {}).get("accuracy")),
        })


class StepTimes(keras.callbacks.Callback):
    """Records in run.json's current attempt when the first training step began and when fit() ended, so the time
    a job spends before and after training (its start-up and wind-down) can be told from its training."""

    def __init__(self, run: Run) -> None:
        super().__init__()
        self.run = run
        self.started = False

    def _note(self, **fields: str) -> None:
        attempts = self.run.info().get("attempts")
        if isinstance(attempts, list) and attempts and isinstance(attempts[-1], dict):
            attempts[-1].update(fields)
            self.run.update_info(attempts=attempts)

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        if not self.started:
            self.started = True
            self._note(first_step_at=now_iso())

    def on_train_end(self, logs: dict | None = None) -> None:
        self._note(fit_ended_at=now_iso())


class StopOnRequest(keras.callbacks.Callback):
    """Raises StopRequested at an epoch's start, or between steps (checked every 0.5 s), once should_stop() says so."""

    def __init__(self, should_stop: Callable[[], bool]) -> None:
        super().__init__()
        self.should_stop = should_stop
        self.last_check = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self.should_stop():
            raise StopRequested()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        now = time.perf_counter()
        if now - self.last_check >= PROGRESS_INTERVAL:
            self.last_check = now
            if self.should_stop():
                raise StopRequested()


def should_prune(my_value: float | None, others: Sequence[float], keep_fraction: float, min_runs: int) -> bool:
    """Whether the configuration whose score at a rung is my_value stops, given the other configurations' scores
    there (each the mean over its seeds that reached the rung).

    Nothing is pruned until min_runs configurations (this one included) have reached the rung; then the top
    max(1, floor(n × keep_fraction)) of the n go on. Ties count in this one's favour; a missing value (no
    validation metric) is never pruned.
    """
    if my_value is None or not math.isfinite(my_value):
        return False
    values = [v for v in others if isinstance(v, (int, float)) and math.isfinite(v)]
    n = len(values) + 1
    if n < min_runs:
        return False
    keep = max(1, math.floor(n * keep_fraction))
    better = sum(1 for v in values if v > my_value)
    return better >= keep


def rung_values(peers: Sequence[Run], epoch: int, metric: str = "val_accuracy") -> list[float]:
    """`metric` at `epoch` of every peer run that has recorded that epoch."""
    return [value for values in rung_values_by_point(peers, epoch, metric).values() for value in values]


def _value_at(run: Run, epoch: int, metric: str) -> float | None:
    for row in run.metrics():
        if row.get("epoch") == epoch and isinstance(row.get(metric), (int, float)):
            return float(row[metric])
    return None


def rung_values_by_point(peers: Sequence[Run], epoch: int,
                         metric: str = "val_accuracy") -> dict[tuple[str, float, str], list[float]]:
    """`metric` at `epoch` of the peers that recorded it, grouped by grid point (backbone, lr, freeze)."""
    groups: dict[tuple[str, float, str], list[float]] = {}
    for peer in peers:
        value = _value_at(peer, epoch, metric)
        if value is not None:
            try:
                point = grid_point(peer.config())
            except (ValueError, TypeError, KeyError):
                continue  # an unreadable config.json: not part of the comparison
            groups.setdefault(point, []).append(value)
    return groups


class SweepPruning(keras.callbacks.Callback):
    """Prunes by configuration (PruneConfig): at a rung epoch, raises Pruned when should_prune says this run's
    configuration (its mean over the seeds at the rung, this run included) trails the others named in the run's
    own sweep context; and at the start, when a run of the same configuration was pruned already (a queued seed
    launched before the decision). Goes after MetricsCsv and WholeModelCheckpoint, so the epoch's row and checkpoint
    exist first. A run that was pruned and then resumed is never pruned again."""

    def __init__(self, run: Run, prune: dict[str, Any], peers: Sequence[Run]) -> None:
        super().__init__()
        self.rungs = tuple(prune["rungs"])
        self.keep_fraction = float(prune["keep_fraction"])
        self.min_runs = int(prune["min_runs"])
        self.peers = list(peers)
        self.run = run
        self.point = grid_point(run.config())
        self.resumed_after_pruning = run.raw_status().get("pruned_at_epoch") is not None

    def on_train_begin(self, logs: dict | None = None) -> None:
        sibling = None if self.resumed_after_pruning else pruned_sibling_of(self.run, self.peers)
        if sibling is not None:
            raise Pruned(0, reason=f"its configuration was pruned ({sibling.id})")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        number = epoch + 1
        if self.resumed_after_pruning or number not in self.rungs:
            return
        value = as_float((logs or {}).get("val_accuracy"))
        if value is None or not math.isfinite(value):
            return
        groups = rung_values_by_point(self.peers, number)
        mine = groups.pop(self.point, []) + [value]
        others = [sum(values) / len(values) for values in groups.values()]
        if should_prune(sum(mine) / len(mine), others, self.keep_fraction, self.min_runs):
            raise Pruned(number, value)


def sweep_pruning_for(run: Run) -> SweepPruning | None:
    """The pruning callback of a sweep's run, from its own sweep context; None when its sweep prunes nothing."""
    context = run.sweep_context()
    prune = context.get("prune")
    if not isinstance(prune, dict):
        return None
    try:
        peers = [Run(run.path.parent / str(peer)) for peer in context.get("peer_run_ids") or []]
        return SweepPruning(run, prune, peers)
    except (KeyError, TypeError, ValueError):
        log.warning("sweep context of %s is unreadable: no pruning", run.id)
        return None
