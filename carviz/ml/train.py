"""One training job, start to finish: `python -m carviz.ml.train RUN_DIR` (the run's record is written as it goes).

train_body's steps, in order: load_data (the split; train_data.py), build_or_resume (the model, from its checkpoint
on a resume), record_start (run.json), make_feed (cached features or images; train_data.py), make_callbacks, fit,
and at the end the kept model's evaluation and calibration (kept_model.py)."""

from __future__ import annotations

import logging
import math
import sys
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from carviz.core.config import TrainConfig
from carviz.core.jobs import JobContext, Outcome, Status, job_main, run_job
from carviz.core.jobs.record import now_iso
from carviz.core.run_info import Attempt, ModelSummary
from carviz.core.store import Run, Store

if TYPE_CHECKING:
    from carviz.ml.train_data import Feed, TrainingData

# TensorFlow is imported in train_body, once the job holds its run and a slot and has read its dataset: a queued job
# waits without it (about 0.6 GB less memory per waiting process, and no 3-4 s of CPU taken from the running job), a
# second start of a running job is refused at once, and a dataset it cannot train on fails at once.
log = logging.getLogger("carviz.ml.train")


def train(run: Run, stop_flag: threading.Event | None = None, extra_callbacks: list[Any] | None = None) -> Status:
    """Run the run's job in this process: wait for a slot, train, record. Returns the final status.

    extra_callbacks are appended after the run's own (benchmarks use this to time epochs).
    """
    return run_job(run, lambda context: train_body(run, context, extra_callbacks), needs_accelerator=True,
                   stop_flag=stop_flag)


def load_checkpoint(run: Run, build: Callable[[], Any]) -> tuple[Any, int] | None:
    """(the whole model with optimizer state, the epochs it holds) from the run's checkpoint, or None. build()
    makes the model (compiled, untrained) that a checkpoint's arrays go into; an older run's whole-model .keras
    checkpoint is loaded as it is."""
    found = run.checkpoint()
    if found is None:
        return None
    path, epochs_done = found
    if path.suffix == ".keras":
        import keras

        return keras.saving.load_model(path), epochs_done
    from carviz.ml import checkpoints

    model = build()
    checkpoints.restore(model, path)
    return model, epochs_done


@dataclass(frozen=True)
class Built:
    """The model this start of the job trains, and what it is: from a checkpoint (initial_epoch > 0) or new."""

    model: Any
    initial_epoch: int
    summary: Any  # model.ModelSummary of a new model; None on a resume (run.json has it from the first start)
    precision: str
    precision_reason: str
    freeze_index: int


def train_body(run: Run, context: JobContext, extra_callbacks: list[Any] | None = None) -> Outcome:
    """The job proper, once the harness holds the run (and a slot): data, model, record, fit, kept model."""
    from carviz.ml.train_data import load_data, make_feed

    config = run.config()
    run.write_progress({"phase": "loading data"})
    data = load_data(run, config)  # before TensorFlow loads: an unusable dataset fails in a fraction of a second
    from carviz.ml.devices import configure_devices
    from carviz.ml.kept_model import best_so_far, evaluate_kept, restore_kept

    device = configure_devices()
    run.write_progress({"phase": "building model"})
    built = build_or_resume(run, config, data, device)
    record_start(run, config, data, device, built)

    import keras

    keras.utils.set_random_seed(config.seed + built.initial_epoch)  # before the pipelines: same shuffles either way
    feed = make_feed(run, built.model, config, built.freeze_index, built.precision, data, built.initial_epoch)
    run.update_info(feature_cache=feed.cache_info)
    from carviz.ml.callbacks import KeepBest

    keep_best = KeepBest(run, whole_model=built.model, best=best_so_far(run, built.model, built.initial_epoch))
    callbacks = make_callbacks(run, config, context, built.model, keep_best, data, built.initial_epoch)
    ended = fit(run, config, feed, data, built.initial_epoch, callbacks + list(extra_callbacks or []))
    if ended is not None:
        return ended
    run.write_progress({"phase": "evaluating", "epoch": config.epochs, "epochs": config.epochs})
    kept = restore_kept(run, keep_best)  # the best-validation epoch's weights, in the whole model (and remainder)
    run.save_model(built.model)
    run.write_evaluation(evaluate_kept(run, config, data.split, built.model, feed.model, feed.val_data,
                                       feed.test_data, kept))
    run.write_progress({"phase": "done", "epoch": config.epochs, "epochs": config.epochs})
    return Outcome(Status.SUCCEEDED)


def build_or_resume(run: Run, config: TrainConfig, data: TrainingData, device: dict[str, Any]) -> Built:
    """The model from the run's checkpoint (a resume), else a new one: the seed decides the head's initial weights;
    a transfer run starts from its parent's weights with a new classifier (recorded in run.json)."""
    import keras

    from carviz.ml.model import build_model, choose_precision

    on_gpu = device["kind"] == "gpu"
    classes = len(data.split.classes)
    precision, reason = choose_precision(config.precision, on_gpu, config.backbone)
    checkpoint = load_checkpoint(run, lambda: build_model(config, classes, on_gpu=on_gpu)[0])
    if checkpoint is not None:
        model, initial_epoch = checkpoint
        summary = None
        log.info("resuming from checkpoint after epoch %d", initial_epoch)
    else:
        keras.utils.set_random_seed(config.seed)
        model, summary = build_model(config, classes, on_gpu=on_gpu)
        initial_epoch = 0
        if config.init_from_run:  # the parent's weights but a new classifier; a resume has them in its checkpoint
            from carviz.ml.transfer import init_from_parent

            run.update_info(parent=init_from_parent(model, config, Store(run.path.parent)))
    freeze_index = config.freeze_index(len(model.get_layer("backbone").layers))
    return Built(model, initial_epoch, summary, precision, reason, freeze_index)


def record_start(run: Run, config: TrainConfig, data: TrainingData, device: dict[str, Any], built: Built) -> None:
    """run.json at this start: where it runs, library versions, the data and split, this attempt, the precision,
    and (on a first start) the model's summary."""
    from carviz.ml.devices import library_versions

    info = run.run_info()
    attempt = Attempt(started_at=now_iso(), initial_epoch=built.initial_epoch, backend=device["backend"],
                      node=device["node"], gpus=device["gpus"])
    scan, split = data.scan, data.split
    fields: dict[str, Any] = {
        "device": device, "versions": library_versions(), "dataset_path": str(data.root),
        "dataset_fingerprint": scan.fingerprint, "launch_fingerprint": info.launch_fingerprint or scan.fingerprint,
        "classes": split.classes, "class_counts": scan.counts(), "train_images": len(split.train_paths),
        "val_images": len(split.val_paths), "test_images": len(split.test_paths),
        "skipped_images": [{"path": str(p.path), "kind": p.kind, "detail": p.detail} for p in scan.problems],
        "attempts": info.attempts + [attempt],
        "precision": {"used": built.precision, "setting": config.precision, "reason": built.precision_reason},
    }
    if built.summary is not None:
        summary = built.summary
        fields["model"] = ModelSummary(summary.backbone_layers, summary.freeze_index, summary.first_trainable,
                                       summary.trainable_params, summary.non_trainable_params, summary.precision)
    run.update_info(**fields)


def make_callbacks(run: Run, config: TrainConfig, context: JobContext, model: Any, keep_best: Any,
                   data: TrainingData, initial_epoch: int) -> list[Any]:
    """The run's callbacks, in this order: an epoch's row, best weights and checkpoint exist before pruning."""
    import keras

    from carviz.ml.callbacks import (MetricsCsv, ProgressFile, StepTimes, StopOnRequest, WholeModelCheckpoint,
                                     sweep_pruning_for)

    steps_per_epoch = math.ceil(len(data.split.train_paths) / config.batch_size)
    callbacks: list[Any] = [
        MetricsCsv(run.metrics_writer(keep_through_epoch=initial_epoch), config.epochs),
        keep_best,
        WholeModelCheckpoint(run, config.checkpoint_every, config.epochs, whole_model=model, keep_best=keep_best),
        ProgressFile(run, steps_per_epoch, config.epochs, config.batch_size),
        StopOnRequest(context.should_stop),
        StepTimes(run),
        keras.callbacks.TensorBoard(log_dir=str(run.tensorboard_dir()), profile_batch=0),
    ]
    if config.early_stopping_patience:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.early_stopping_patience,
                                                       restore_best_weights=False))  # KeepBest decides what is kept
    pruning = sweep_pruning_for(run) if config.sweep else None
    if pruning is not None:
        callbacks.append(pruning)
    return callbacks


def fit(run: Run, config: TrainConfig, feed: Feed, data: TrainingData, initial_epoch: int,
        callbacks: list[Any]) -> Outcome | None:
    """fit() the feed from initial_epoch; the outcome when it ended early (pruned by its sweep, stopped), else None."""
    from carviz.ml.callbacks import Pruned, StopRequested
    from carviz.ml.keras_graph import build_training_state
    from carviz.ml.train_data import class_weights

    if initial_epoch >= config.epochs:
        return None
    split = data.split
    build_training_state(feed.model, feed.train_data.element_spec)
    try:
        feed.model.fit(feed.train_data, validation_data=feed.val_data, epochs=config.epochs,
                       initial_epoch=initial_epoch, steps_per_epoch=feed.steps_per_epoch, callbacks=callbacks,
                       verbose=2, class_weight=class_weights(config.class_weight, split.train_labels,
                                                             len(split.classes)))
    except Pruned as pruned:  # before StopRequested: Pruned is one
        _fit_ended(callbacks)
        log.info("pruned by the sweep at epoch %d (val_accuracy %s)", pruned.epoch, pruned.value)
        run.write_progress({"phase": "pruned", "epoch": pruned.epoch, "epochs": config.epochs})
        return Outcome(Status.PRUNED, {"pruned_at_epoch": pruned.epoch, "pruned_reason": pruned.reason})
    except StopRequested:
        _fit_ended(callbacks)
        log.info("stopped on request")
        return Outcome(Status.STOPPED)
    return None


def _fit_ended(callbacks: list[Any]) -> None:
    """What fit() would have told the callbacks had it not ended by an exception: its end (StepTimes notes when)."""
    from carviz.ml.callbacks import StepTimes

    for callback in callbacks:
        if isinstance(callback, StepTimes):
            callback.on_train_end()


def main(argv: list[str] | None = None) -> int:
    return job_main(argv, lambda context: train_body(Run(context.record.path), context), kind="training",
                    needs_accelerator=True, record_type=Run)


if __name__ == "__main__":
    # Run the imported module's main, not this __main__ copy, so exception classes are the very ones other
    # modules import.
    from carviz.ml.train import main as module_main

    sys.exit(module_main())
