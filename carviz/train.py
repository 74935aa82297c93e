"""One training job, start to finish: `python -m carviz.train RUN_DIR` (writes the run record as it goes)."""

from __future__ import annotations

import csv
import logging
import math
import os
import platform
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from . import __version__, features, jobs, settings
from .config import TrainConfig
from .runs import (
    CHECKPOINT_DIR,
    CLASSES_FILE,
    EVALUATION_FILE,
    HEARTBEAT_FILE,
    INFO_FILE,
    LOG_FILE,
    METRIC_COLUMNS,
    METRICS_FILE,
    MODEL_FILE,
    PROGRESS_FILE,
    Run,
    Status,
    atomic_write_json,
    atomic_write_text,
    now_iso,
    process_create_time,
    read_json,
    read_metrics,
)

log = logging.getLogger("carviz.train")

PROGRESS_INTERVAL = 0.5  # seconds between progress.json writes
HEARTBEAT_INTERVAL = 2.0


class StopRequested(Exception):
    """Raised inside fit() when a stop was requested, so no partial epoch is recorded."""


class Heartbeat:
    """Touches RUN/heartbeat every few seconds from a thread, so readers can tell a live job from a hung one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)

    def _beat(self) -> None:
        while not self._stop.is_set():
            self.path.write_text(now_iso() + "\n", encoding="utf-8")
            self._stop.wait(HEARTBEAT_INTERVAL)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class MetricsWriter:
    """Appends one row per finished epoch to metrics.csv, fsynced, so a kill loses at most the running epoch."""

    def __init__(self, path: Path, keep_through_epoch: int) -> None:
        self.path = path
        kept = [row for row in read_metrics(path) if row["epoch"] <= keep_through_epoch]
        # Rewrite what a resumed run keeps, so every epoch appears exactly once.
        lines = [",".join(METRIC_COLUMNS)]
        lines += [",".join(_csv_value(row.get(col)) for col in METRIC_COLUMNS) for row in kept]
        atomic_write_text(path, "\n".join(lines) + "\n")

    def append(self, row: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8", newline="") as handle:
            csv.writer(handle, lineterminator="\n").writerow([_csv_value(row.get(col)) for col in METRIC_COLUMNS])
            handle.flush()
            os.fsync(handle.fileno())


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    return str(value)


def _install_stop_signals(stop_flag: threading.Event) -> None:
    def on_signal(signum: int, frame: object) -> None:
        stop_flag.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def make_recorder(run: Run, stop_flag: threading.Event, steps_per_epoch: int, epochs: int, batch_size: int,
                  metrics_writer: MetricsWriter, checkpoint_every: int, whole_model: Any = None):
    """The Keras callback that keeps the run record: metrics rows, throttled progress, checkpoints, stops.

    whole_model is what checkpoints save when fit() trains only part of it (the remainder on cached features).
    """
    import keras

    checkpoint_dir = run.file(CHECKPOINT_DIR)

    class RunRecorder(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.last_progress_write = 0.0
            self.epoch_started = 0.0
            self.measure_from: tuple[float, int] | None = None
            self.images_per_second: float | None = None
            self.epoch = 0

        def _check_stop(self) -> None:
            if stop_flag.is_set() or run.stop_requested():
                stop_flag.set()
                raise StopRequested()

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self._check_stop()
            self.epoch = epoch
            self.epoch_started = time.perf_counter()
            self.measure_from = None
            self._write_progress(epoch, 0, force=True)

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            now = time.perf_counter()
            # Throughput over this epoch's steps after the first (the first may include tracing).
            if self.measure_from is None:
                self.measure_from = (now, batch + 1)
            elif batch + 1 > self.measure_from[1]:
                elapsed = now - self.measure_from[0]
                if elapsed > 0:
                    self.images_per_second = (batch + 1 - self.measure_from[1]) * batch_size / elapsed
            if now - self.last_progress_write >= PROGRESS_INTERVAL:
                self._check_stop()
                self._write_progress(self.epoch, batch + 1, logs=logs)

        def _write_progress(self, epoch: int, step: int, logs: dict | None = None, force: bool = False,
                            phase: str = "training") -> None:
            now = time.perf_counter()
            if not force and now - self.last_progress_write < PROGRESS_INTERVAL:
                return
            self.last_progress_write = now
            remaining_steps = (epochs - epoch) * steps_per_epoch - step
            eta = None
            if self.images_per_second:
                eta = remaining_steps * batch_size / self.images_per_second
            atomic_write_json(run.file(PROGRESS_FILE), {
                "phase": phase,
                "epoch": epoch + 1,
                "epochs": epochs,
                "step": step,
                "steps_per_epoch": steps_per_epoch,
                "images_per_second": self.images_per_second,
                "eta_seconds": eta,
                "loss": _as_float((logs or {}).get("loss")),
                "accuracy": _as_float((logs or {}).get("accuracy")),
                "updated_at": now_iso(),
            }, durable=False)

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logs = dict(logs or {})
            learning_rate = self.model.optimizer.learning_rate
            row = {
                "epoch": epoch + 1,
                "loss": _as_float(logs.get("loss")),
                "accuracy": _as_float(logs.get("accuracy")),
                "val_loss": _as_float(logs.get("val_loss")),
                "val_accuracy": _as_float(logs.get("val_accuracy")),
                "learning_rate": _as_float(learning_rate),
                "seconds": round(time.perf_counter() - self.epoch_started, 3),
            }
            metrics_writer.append(row)
            log.info("epoch %d/%d %s", epoch + 1, epochs,
                     " ".join(f"{k}={v:.4g}" for k, v in row.items() if isinstance(v, float)))
            if (epoch + 1) % checkpoint_every == 0 or epoch + 1 == epochs:
                save_checkpoint(whole_model if whole_model is not None else self.model, checkpoint_dir, epoch + 1)
            self._write_progress(epoch, steps_per_epoch, logs=logs, force=True)

    return RunRecorder()


def _as_float(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        try:
            return float(value.numpy())
        except Exception:  # noqa: BLE001 - a metric we cannot read is left empty, not fatal
            return None


def save_checkpoint(model: Any, checkpoint_dir: Path, epochs_done: int) -> None:
    """Whole model with optimizer state, replaced atomically, then the epoch it holds."""
    checkpoint_dir.mkdir(exist_ok=True)
    tmp = checkpoint_dir / "tmp-last.keras"
    model.save(tmp)
    os.replace(tmp, checkpoint_dir / "last.keras")
    atomic_write_json(checkpoint_dir / "state.json", {"epochs_done": epochs_done, "saved_at": now_iso()})


def load_checkpoint(checkpoint_dir: Path) -> tuple[Any, int] | None:
    state = read_json(checkpoint_dir / "state.json")
    model_path = checkpoint_dir / "last.keras"
    if not state or not model_path.exists():
        return None
    import keras

    return keras.saving.load_model(model_path), int(state["epochs_done"])


def configure_devices() -> dict[str, Any]:
    """Memory growth on every visible GPU; returns what TensorFlow sees."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            pass
    names = []
    for gpu in gpus:
        try:
            names.append(tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name))
        except Exception:  # noqa: BLE001 - details are informational
            names.append(gpu.name)
    return {
        "kind": "gpu" if gpus else "cpu",
        "gpus": names,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }


def library_versions() -> dict[str, str]:
    import keras
    import numpy
    import tensorflow as tf

    return {
        "carviz": __version__,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": numpy.__version__,
    }


def train(run: Run, stop_flag: threading.Event | None = None, extra_callbacks: list[Any] | None = None) -> Status:
    """Run the job in this process: wait for a slot, train, record. Returns the final status.

    extra_callbacks are appended after the run's own (benchmarks use this to time epochs).
    """
    stop_flag = stop_flag or threading.Event()
    config = run.config()
    run.write_status(Status.QUEUED, pid=os.getpid(), pid_create_time=process_create_time(os.getpid()))
    slot = jobs.acquire_slot(run.path.parent, run, lambda: stop_flag.is_set() or run.stop_requested())
    if slot is None:
        run.write_status(Status.STOPPED, ended_at=now_iso())
        return Status.STOPPED
    slot_index, slot_fd = slot
    try:
        return _train_in_slot(run, config, slot_index, stop_flag, extra_callbacks)
    finally:
        os.close(slot_fd)  # frees the slot (the kernel does this too if the process dies)


def _train_in_slot(run: Run, config: TrainConfig, slot_index: int, stop_flag: threading.Event,
                   extra_callbacks: list[Any] | None) -> Status:
    """The job proper, once a slot is held: data, model, fit, final evaluation, record."""
    if jobs.gpu_count() and "CUDA_VISIBLE_DEVICES" not in os.environ:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(slot_index)  # one GPU per job, before TensorFlow loads
    run.write_status(Status.RUNNING, started_at=now_iso(), slot=slot_index)
    atomic_write_json(run.file(PROGRESS_FILE), {"phase": "loading data", "updated_at": now_iso()})

    from . import datasets
    from .model import build_model, resolve_precision

    device = configure_devices()
    dataset_root = settings.resolve_dataset(config.dataset)
    scan = datasets.scan_dataset(dataset_root)
    if len(scan.classes) < 2:
        raise ValueError(f"dataset {config.dataset!r} needs at least 2 classes with images, found {scan.counts()}")
    split = datasets.split_files(scan, config.validation_split, config.seed)
    if not split.train_paths or not split.val_paths:
        raise ValueError(f"dataset {config.dataset!r} is too small to split ({scan.total()} usable images)")
    atomic_write_json(run.file(CLASSES_FILE), split.classes)
    atomic_write_json(run.file("split.json"), split.to_json_dict(dataset_root))

    import keras

    checkpoint = load_checkpoint(run.file(CHECKPOINT_DIR))
    atomic_write_json(run.file(PROGRESS_FILE), {"phase": "building model", "updated_at": now_iso()})
    precision = resolve_precision(config.precision, on_gpu=device["kind"] == "gpu")
    if checkpoint is not None:
        model, initial_epoch = checkpoint
        summary = None
        log.info("resuming from checkpoint after epoch %d", initial_epoch)
    else:
        keras.utils.set_random_seed(config.seed)  # the seed decides the head's initial weights too
        model, summary = build_model(config, len(split.classes), on_gpu=device["kind"] == "gpu")
        initial_epoch = 0
    n_backbone_layers = len(model.get_layer("backbone").layers)
    freeze_index = config.freeze_index(n_backbone_layers)

    info = read_json(run.file(INFO_FILE)) or {}
    info.update({
        "device": device,
        "versions": library_versions(),
        "dataset_path": str(dataset_root),
        "dataset_fingerprint": scan.fingerprint,
        "classes": split.classes,
        "class_counts": scan.counts(),
        "train_images": len(split.train_paths),
        "val_images": len(split.val_paths),
        "skipped_images": [{"path": str(p.path), "kind": p.kind, "detail": p.detail} for p in scan.problems],
    })
    if summary is not None:
        info["model"] = {
            "backbone_layers": summary.backbone_layers,
            "freeze_index": summary.freeze_index,
            "first_trainable": summary.first_trainable,
            "trainable_params": summary.trainable_params,
            "non_trainable_params": summary.non_trainable_params,
            "precision": summary.precision,
        }
    info.setdefault("attempts", []).append({"started_at": now_iso(), "initial_epoch": initial_epoch})
    atomic_write_json(run.file(INFO_FILE), info)

    keras.utils.set_random_seed(config.seed + initial_epoch)  # before the pipelines: same shuffles either way
    cached = _cached_training(run, model, config, freeze_index, precision, dataset_root, scan, split)
    info["feature_cache"] = cached.info if isinstance(cached, features.CachedTraining) else {"used": False,
                                                                                           "reason": cached}
    atomic_write_json(run.file(INFO_FILE), info)
    if isinstance(cached, features.CachedTraining):
        fit_model, train_data, val_data = cached.remainder, cached.train_data, cached.val_data
    else:
        fit_model = model
        train_data = datasets.make_pipeline(split.train_paths, split.train_labels, len(split.classes),
                                            config.image_size, config.batch_size, training=True,
                                            augmentation=config.augmentation, seed=config.seed)
        val_data = datasets.make_pipeline(split.val_paths, split.val_labels, len(split.classes), config.image_size,
                                          config.batch_size, training=False)
    steps_per_epoch = math.ceil(len(split.train_paths) / config.batch_size)

    metrics_writer = MetricsWriter(run.file(METRICS_FILE), keep_through_epoch=initial_epoch)
    callbacks: list[Any] = [
        make_recorder(run, stop_flag, steps_per_epoch, config.epochs, config.batch_size, metrics_writer,
                      config.checkpoint_every, whole_model=model),
        keras.callbacks.TensorBoard(log_dir=str(run.file("tensorboard")), profile_batch=0),
    ]
    if config.early_stopping_patience:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.early_stopping_patience,
                                                       restore_best_weights=True))
    if config.sweep:  # after the recorder, so a pruned epoch's row and checkpoint are written first
        from .sweep import pruning_callback_for

        pruning = pruning_callback_for(run, config.sweep)
        if pruning is not None:
            callbacks.append(pruning)
    callbacks += list(extra_callbacks or [])
    from .sweep import Pruned

    if initial_epoch < config.epochs:
        try:
            fit_model.fit(train_data, validation_data=val_data, epochs=config.epochs, initial_epoch=initial_epoch,
                      callbacks=callbacks, verbose=2)
        except Pruned as pruned:  # before StopRequested: Pruned is one
            log.info("pruned by the sweep at epoch %d (val_accuracy %s)", pruned.epoch, pruned.value)
            atomic_write_json(run.file(PROGRESS_FILE), {"phase": "pruned", "epoch": pruned.epoch,
                                                        "epochs": config.epochs, "updated_at": now_iso()})
            run.write_status(Status.PRUNED, ended_at=now_iso(), pruned_at_epoch=pruned.epoch)
            return Status.PRUNED
        except StopRequested:
            log.info("stopped on request")
            run.write_status(Status.STOPPED, ended_at=now_iso())
            return Status.STOPPED

    atomic_write_json(run.file(PROGRESS_FILE), {"phase": "evaluating", "epoch": config.epochs,
                                                "epochs": config.epochs, "updated_at": now_iso()})
    val_loss, val_accuracy = fit_model.evaluate(val_data, verbose=0)  # the remainder on cached features is exact
    tmp = run.file("tmp-model.keras")
    model.save(tmp)
    os.replace(tmp, run.file(MODEL_FILE))
    atomic_write_json(run.file(EVALUATION_FILE), {
        "split": "validation", "images": len(split.val_paths),
        "loss": float(val_loss), "accuracy": float(val_accuracy), "evaluated_at": now_iso(),
    })
    atomic_write_json(run.file(PROGRESS_FILE), {"phase": "done", "epoch": config.epochs, "epochs": config.epochs,
                                                "updated_at": now_iso()})
    run.write_status(Status.SUCCEEDED, ended_at=now_iso())
    return Status.SUCCEEDED


def _cached_training(run: Run, model: Any, config: TrainConfig, freeze_index: int, precision: str,
                     dataset_root: Path, scan: Any, split: Any) -> "features.CachedTraining | str":
    """The cached-features setup for this run, or the reason (logged) why it trains on images."""
    reason = features.unavailable_reason(config)
    if reason is None:
        def on_progress(done: int, total: int) -> None:
            atomic_write_json(run.file(PROGRESS_FILE), {"phase": "computing features", "step": done,
                                                        "steps_per_epoch": total, "updated_at": now_iso()},
                              durable=False)

        all_paths, all_labels = scan.labelled_files()
        cache_settings = features.load_settings()
        try:
            cached = features.prepare_cached_training(
                model, config, freeze_index, precision, dataset_root, all_paths, all_labels, scan.fingerprint, split,
                features.FeatureCache(features.cache_root(), cache_settings.max_bytes), cache_settings.dtype,
                on_progress, also_positions=_sweep_positions(run, model, config))
        except (features.CacheFull, ValueError, OSError) as error:  # e.g. a full disk: train on images instead
            reason = f"{type(error).__name__}: {error}" if isinstance(error, OSError) else str(error)
        else:
            log.info("training on cached %s features (%s, %.1f s, %.1f MiB)", cached.info["layer"],
                     cached.info["source"], cached.info["seconds"], cached.info["bytes"] / 2**20)
            return cached
    log.info("training on images: %s", reason)
    return reason


def _sweep_positions(run: Run, model: Any, config: TrainConfig) -> list[int]:
    """The cache positions the other freeze points of this run's sweep (same backbone) will need, so the pass that
    computes this run's features can store those on the way too; [] for a lone run."""
    if not config.sweep:
        return []
    from .sweep import read_record

    try:
        points = read_record(config.sweep, run.path.parent).config.points_for(config.backbone)
    except (LookupError, ValueError, KeyError, TypeError):
        return []
    from .backbones import layers_of

    backbone = model.get_layer("backbone")
    layers, n = layers_of(backbone), len(backbone.layers)  # the graph walk once, not once per point
    return sorted({features.cache_position(model, config.replace(freeze=point).freeze_index(n), layers)
                   for point in points})


def _setup_logging(log_path: Path) -> None:
    """Log to stderr, and to train.log too unless stderr already is train.log (as when jobs.launch started us)."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    try:
        same = os.path.samestat(os.fstat(sys.stderr.fileno()), os.stat(log_path))
    except (OSError, ValueError):
        same = False
    if not same:
        handlers.append(logging.FileHandler(log_path, encoding="utf-8"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", handlers=handlers,
                        force=True)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m carviz.train RUN_DIR", file=sys.stderr)
        return 2
    run = Run(Path(args[0]).resolve())
    if not run.file("config.json").exists():
        print(f"not a run folder (no config.json): {run.path}", file=sys.stderr)
        return 2
    _setup_logging(run.file(LOG_FILE))
    stop_flag = threading.Event()
    _install_stop_signals(stop_flag)
    with Heartbeat(run.file(HEARTBEAT_FILE)):
        try:
            status = train(run, stop_flag)
        except Exception as error:  # noqa: BLE001 - any failure ends the run as failed, with its reason
            log.error("training failed:\n%s", traceback.format_exc())
            run.write_status(Status.FAILED, ended_at=now_iso(), error=f"{type(error).__name__}: {error}")
            return 1
    return 0 if status in (Status.SUCCEEDED, Status.STOPPED, Status.PRUNED) else 1


if __name__ == "__main__":
    # Run the imported module's main, not this __main__ copy, so exception classes such as StopRequested
    # are the very ones other modules (carviz.sweep) subclass and raise.
    from carviz.train import main as module_main

    sys.exit(module_main())
