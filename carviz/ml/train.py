"""One training job, start to finish: `python -m carviz.ml.train RUN_DIR` (the run's record is written as it goes)."""

from __future__ import annotations

import logging
import math
import sys
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np

from carviz.core import eta
from carviz.core.config import TrainConfig
from carviz.core.jobs import JobContext, Outcome, Status, job_main, run_job
from carviz.core.jobs.record import now_iso
from carviz.core.store import Run, Store
from carviz.ml import features, warm

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


class DatasetChanged(ValueError):
    """The dataset changed since the run was launched, and the resume did not accept that."""


def recorded_split_for_resume(run: Run, recorded: dict[str, Any], dataset_root: Path, scan: Any) -> Any:
    """The split recorded at launch, for a resumed run. Images gone since then are left out (and listed); new images
    are not added; a changed class list or dataset fingerprint stops the run (DatasetChanged) unless the resume
    accepted changes. What happened is recorded in run.json under "resumes"."""
    from carviz.data.datasets import Split

    try:
        split = Split.from_json_dict(recorded, dataset_root)
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"split.json is unreadable ({type(error).__name__}: {error}); the run cannot resume on "
                         f"its recorded split") from None
    usable = {path for files in scan.files.values() for path in files}
    recorded_paths = set(split.train_paths) | set(split.val_paths) | set(split.test_paths)
    gone = sorted(path for path in recorded_paths if path not in usable)
    new = sum(1 for path in usable if path not in recorded_paths)
    launch_fingerprint = run.info().get("launch_fingerprint") or run.info().get("dataset_fingerprint")
    classes_changed = list(scan.classes) != list(split.classes)
    fingerprint_changed = bool(launch_fingerprint) and launch_fingerprint != scan.fingerprint
    accepted = bool(run.resume_request().get("accept_dataset_changes"))
    note = {"at": now_iso(), "dataset_changed": fingerprint_changed or bool(gone) or bool(new),
            "classes_changed": classes_changed, "gone": len(gone), "new_ignored": new, "accepted": accepted,
            "gone_examples": [path.relative_to(dataset_root).as_posix() for path in gone[:20]]}
    resumes = run.info().get("resumes")
    run.update_info(resumes=(resumes if isinstance(resumes, list) else []) + [note])
    if (classes_changed or fingerprint_changed) and not accepted:
        what = []
        if classes_changed:
            what.append(f"classes {split.classes} are now {scan.classes}")
        if gone:
            what.append(f"{len(gone)} image(s) gone (e.g. {note['gone_examples'][0]})")
        if new:
            what.append(f"{new} new image(s)")
        raise DatasetChanged("the dataset changed since this run was launched: " + "; ".join(what or ["its content"])
                             + ". Resume with 'accept dataset changes' to continue on the recorded split and classes "
                               "without the gone images (new images are not added).")
    keep = lambda paths, labels: [(p, label) for p, label in zip(paths, labels) if p in usable]  # noqa: E731
    train = keep(split.train_paths, split.train_labels)
    val = keep(split.val_paths, split.val_labels)
    test = keep(split.test_paths, split.test_labels)  # still held out: a test image never joins training
    if not train or not val:
        raise DatasetChanged(f"too few recorded images are left to resume ({len(train)} training, {len(val)} "
                             "validation)")
    if gone:
        log.warning("resuming without %d image(s) gone since launch, e.g. %s", len(gone), note["gone_examples"][:3])
    return Split(list(split.classes), [p for p, _ in train], [label for _, label in train], [p for p, _ in val],
                 [label for _, label in val], [p for p, _ in test], [label for _, label in test])


def train_body(run: Run, context: JobContext, extra_callbacks: list[Any] | None = None) -> Outcome:
    """The job proper, once the harness holds the run (and a slot): data, model, fit, final evaluation, record."""
    config = run.config()
    run.write_progress({"phase": "loading data"})

    from carviz.core import settings
    from carviz.data import datasets
    from carviz.ml.devices import configure_devices, library_versions
    from carviz.ml.model import build_model, choose_precision

    device = configure_devices()
    dataset_root = settings.resolve_dataset(config.dataset)
    scan = warm.scan_dataset(dataset_root)  # in a warm worker, reused while no file changed
    if len(scan.classes) < 2:
        raise ValueError(f"dataset {config.dataset!r} needs at least 2 classes with images, found {scan.counts()}")
    recorded_split = run.split()
    if recorded_split is None:  # the first start: split now, and record it for every later resume
        # split_seed, not the run seed: runs that differ only in their seed train and validate on the same images
        split = datasets.split_files(scan, config.validation_split, config.split_seed, config.test_fraction)
        if not split.train_paths or not split.val_paths:
            raise ValueError(f"dataset {config.dataset!r} is too small to split ({scan.total()} usable images)")
        run.write_classes(split.classes)
        run.write_split(split.to_json_dict(dataset_root))
    else:  # a resume trains and validates on exactly what was recorded at launch
        split = recorded_split_for_resume(run, recorded_split, dataset_root, scan)

    import keras

    run.write_progress({"phase": "building model"})
    precision, precision_reason = choose_precision(config.precision, device["kind"] == "gpu", config.backbone)
    checkpoint = load_checkpoint(run, lambda: build_model(config, len(split.classes),
                                                          on_gpu=device["kind"] == "gpu")[0])
    if checkpoint is not None:
        model, initial_epoch = checkpoint
        summary = None
        log.info("resuming from checkpoint after epoch %d", initial_epoch)
    else:
        keras.utils.set_random_seed(config.seed)  # the seed decides the head's initial weights too
        model, summary = build_model(config, len(split.classes), on_gpu=device["kind"] == "gpu")
        initial_epoch = 0
        if config.init_from_run:  # the parent's weights but a new classifier; a resume has them in its checkpoint
            from carviz.ml.transfer import init_from_parent

            run.update_info(parent=init_from_parent(model, config, Store(run.path.parent)))
    n_backbone_layers = len(model.get_layer("backbone").layers)
    freeze_index = config.freeze_index(n_backbone_layers)

    attempts = run.info().get("attempts")
    attempts = attempts if isinstance(attempts, list) else []
    attempts.append({"started_at": now_iso(), "initial_epoch": initial_epoch, "backend": device["backend"],
                     "node": device["node"], "gpus": device["gpus"]})
    info_fields: dict[str, Any] = {
        "device": device,
        "versions": library_versions(),
        "dataset_path": str(dataset_root),
        "dataset_fingerprint": scan.fingerprint,
        "launch_fingerprint": run.info().get("launch_fingerprint") or scan.fingerprint,
        "classes": split.classes,
        "class_counts": scan.counts(),
        "train_images": len(split.train_paths),
        "val_images": len(split.val_paths),
        "test_images": len(split.test_paths),
        "skipped_images": [{"path": str(p.path), "kind": p.kind, "detail": p.detail} for p in scan.problems],
        "attempts": attempts,
        "precision": {"used": precision, "setting": config.precision, "reason": precision_reason},
    }
    if summary is not None:
        info_fields["model"] = {
            "backbone_layers": summary.backbone_layers,
            "freeze_index": summary.freeze_index,
            "first_trainable": summary.first_trainable,
            "trainable_params": summary.trainable_params,
            "non_trainable_params": summary.non_trainable_params,
            "precision": summary.precision,
        }
    run.update_info(**info_fields)

    keras.utils.set_random_seed(config.seed + initial_epoch)  # before the pipelines: same shuffles either way
    cached = _cached_training(run, model, config, freeze_index, precision, dataset_root, scan, split, initial_epoch)
    run.update_info(feature_cache=cached.info if isinstance(cached, features.CachedTraining)
                    else {"used": False, "reason": cached})
    fit_steps = None  # the pipeline's own length, except for cached augmented views (they repeat without end)
    if isinstance(cached, features.CachedTraining):
        fit_model, train_data, val_data = cached.remainder, cached.train_data, cached.val_data
        fit_steps = cached.steps_per_epoch
    else:
        fit_model = model
        train_data = datasets.make_pipeline(split.train_paths, split.train_labels, len(split.classes),
                                            config.image_size, config.batch_size, training=True,
                                            augmentation=config.augmentation, seed=config.seed)
        val_data = datasets.make_pipeline(split.val_paths, split.val_labels, len(split.classes), config.image_size,
                                          config.batch_size, training=False)
    steps_per_epoch = math.ceil(len(split.train_paths) / config.batch_size)

    from carviz.ml.callbacks import (
        KeepBest,
        MetricsCsv,
        ProgressFile,
        Pruned,
        StepTimes,
        StopOnRequest,
        StopRequested,
        WholeModelCheckpoint,
        sweep_pruning_for,
    )

    keep_best = KeepBest(run, whole_model=model, best=_best_so_far(run, model, initial_epoch))
    callbacks: list[Any] = [  # in this order: an epoch's row, best weights and checkpoint exist before pruning
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
    if config.sweep:
        pruning = sweep_pruning_for(run)
        if pruning is not None:
            callbacks.append(pruning)
    callbacks += list(extra_callbacks or [])

    if initial_epoch < config.epochs:
        try:
            fit_model.fit(train_data, validation_data=val_data, epochs=config.epochs, initial_epoch=initial_epoch,
                          steps_per_epoch=fit_steps, callbacks=callbacks, verbose=2,
                          class_weight=class_weights(config.class_weight, split.train_labels, len(split.classes)))
        except Pruned as pruned:  # before StopRequested: Pruned is one
            log.info("pruned by the sweep at epoch %d (val_accuracy %s)", pruned.epoch, pruned.value)
            run.write_progress({"phase": "pruned", "epoch": pruned.epoch, "epochs": config.epochs})
            return Outcome(Status.PRUNED, {"pruned_at_epoch": pruned.epoch, "pruned_reason": pruned.reason})
        except StopRequested:
            log.info("stopped on request")
            return Outcome(Status.STOPPED)

    run.write_progress({"phase": "evaluating", "epoch": config.epochs, "epochs": config.epochs})
    kept = _restore_kept(run, keep_best)  # the best-validation epoch's weights, in the whole model (and remainder)
    run.save_model(model)
    test_data = cached.test_data if isinstance(cached, features.CachedTraining) else None
    run.write_evaluation(evaluate_kept(run, config, split, model, fit_model, val_data, test_data, kept))
    run.write_progress({"phase": "done", "epoch": config.epochs, "epochs": config.epochs})
    return Outcome(Status.SUCCEEDED)


def _loss_and_accuracy(probabilities: np.ndarray, labels: list[int]) -> tuple[float, float]:
    """Categorical cross-entropy (clipped as Keras clips it) and accuracy of probabilities against labels."""
    true = probabilities[np.arange(len(labels)), np.asarray(labels, dtype=np.int64)]
    return float(-np.mean(np.log(np.clip(true, 1e-7, 1.0)))), float(np.mean(probabilities.argmax(axis=1) == labels))


def evaluate_kept(run: Run, config: TrainConfig, split: Any, model: Any, fit_model: Any, val_data: Any,
                  cached_test: Any, kept: dict[str, Any]) -> dict[str, Any]:
    """The kept model's evaluation (validation, and the test split when there is one: looked at once, never used to
    choose anything), and its calibration: a temperature fitted on validation (calibration.json, with the expected
    calibration error before and after on both splits). A cached run evaluates on the frozen part's cached output
    of the images, which is exact, so the test split costs no second pass over its images."""
    from carviz.core.calibration import calibrate
    from carviz.data import datasets

    val_loss, val_accuracy = fit_model.evaluate(val_data, verbose=0)
    val_probabilities = np.asarray(fit_model.predict(val_data, verbose=0), dtype=np.float64)
    evaluation: dict[str, Any] = {"split": "validation", "images": len(split.val_paths), "loss": float(val_loss),
                                  "accuracy": float(val_accuracy), **kept}
    test_probabilities = None
    if split.test_paths:
        if cached_test is not None:
            test_probabilities = fit_model.predict(cached_test, verbose=0)
            computed_on = "cached features"
        else:
            images = datasets.make_pipeline(split.test_paths, split.test_labels, len(split.classes),
                                            config.image_size, config.batch_size, training=False, cache=False)
            test_probabilities = model.predict(images, verbose=0)  # the whole model on the images
            computed_on = "images"
        test_probabilities = np.asarray(test_probabilities, dtype=np.float64)
        test_loss, test_accuracy = _loss_and_accuracy(test_probabilities, split.test_labels)
        evaluation["test"] = {"split": "test", "images": len(split.test_paths), "loss": test_loss,
                              "accuracy": test_accuracy, "computed_on": computed_on}
        evaluation["test_accuracy"] = test_accuracy
        log.info("test split: accuracy %.4f on %d images", test_accuracy, len(split.test_paths))
    calibration = calibrate(val_probabilities, np.asarray(split.val_labels), test_probabilities,
                            np.asarray(split.test_labels) if split.test_paths else None)
    run.write_calibration(calibration.to_dict())
    log.info("calibration: temperature %.3f, validation ECE %.4f -> %.4f", calibration.temperature,
             calibration.ece_validation, calibration.ece_validation_scaled)
    return evaluation


def class_weights(rule: str, labels: list[int], num_classes: int) -> dict[int, float] | None:
    """Keras' class_weight for the rule: "balanced" gives class c the weight n / (classes x n_c) over the training
    labels (a class without training images gets 1); "none" gives None (every image alike)."""
    if rule == "none":
        return None
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
    return {c: float(len(labels) / (num_classes * counts[c])) if counts[c] else 1.0 for c in range(num_classes)}


def _best_so_far(run: Run, model: Any, initial_epoch: int) -> tuple[int, float] | None:
    """The best epoch up to the checkpoint this run resumes from, as (epoch, val_accuracy); None for a first start.
    Best-weights files of epochs after the checkpoint (an attempt that stopped before its next checkpoint) go: those
    epochs are trained again. A checkpoint that recorded no best (made before carviz kept the best epoch) offers its
    own epoch, the only earlier weights there are."""
    from carviz.ml import checkpoints

    run.discard_best(after=initial_epoch)
    if initial_epoch == 0:
        return None
    found = run.checkpoint_best()
    if found is not None and found[1] <= initial_epoch:
        return found[1], found[2]
    value = next((row.get("val_accuracy") for row in run.metrics() if row.get("epoch") == initial_epoch), None)
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    weights = model.get_weights()
    run.save_best(lambda path: checkpoints.write(path, weights), initial_epoch)
    return initial_epoch, float(value)


def _restore_kept(run: Run, keep_best: Any) -> dict[str, Any]:
    """Restore the kept epoch's weights into the whole model and say which epoch that is and why: the fields for
    evaluation.json, also recorded in run.json under "kept"."""
    last = max((row["epoch"] for row in run.metrics() if isinstance(row.get("epoch"), int)), default=None)
    epoch = keep_best.restore()
    if epoch is not None:
        kept = {"kept_epoch": epoch, "kept": "best val", "last_epoch": last,
                "kept_reason": f"epoch {epoch} had the highest val_accuracy ({keep_best.best_value:.4f}; the first "
                               f"of equals) of epochs 1-{last}; its weights were restored before this evaluation "
                               "and saved as model.keras"}
    else:
        kept = {"kept_epoch": last, "kept": "last", "last_epoch": last,
                "kept_reason": "no epoch recorded a val_accuracy: the last epoch's weights are kept"}
    run.update_info(kept={key.removeprefix("kept_") if key != "kept" else "rule": value
                          for key, value in kept.items()})
    log.info("kept epoch %s (%s) of %s", kept["kept_epoch"], kept["kept"], last)
    return kept


def _cached_training(run: Run, model: Any, config: TrainConfig, freeze_index: int, precision: str,
                     dataset_root: Path, scan: Any, split: Any,
                     initial_epoch: int = 0) -> "features.CachedTraining | str":
    """The cached-features setup for this run (with augmentation: cached augmented views, one per epoch in turn,
    starting at initial_epoch's), or the reason (logged) why it trains on images."""
    reason = features.unavailable_reason(config)
    if reason is None:
        rate = eta.Rate()

        def on_progress(done: int, total: int) -> None:
            run.write_progress({"phase": "computing features", "step": done, "steps_per_epoch": total,
                                "eta_seconds": rate.eta(done, total)})

        all_paths, all_labels = scan.labelled_files()
        cache_settings = features.load_settings()
        try:
            arguments = (model, config, freeze_index, precision, dataset_root, all_paths, all_labels, scan.fingerprint,
                         split, features.FeatureCache(features.cache_root(), cache_settings.max_bytes),
                         cache_settings.dtype, on_progress)
            also = _sweep_positions(run, model, config)
            parent = run.info().get("parent")  # a transfer run's frozen weights are its parent model's: in the key
            parent_model = str(parent.get("model_sha256") or "") if isinstance(parent, dict) else ""
            if config.augmentation.enabled:
                from carviz.ml.augmented_views import prepare_augmented_training

                cached = prepare_augmented_training(*arguments, also_positions=also, initial_epoch=initial_epoch,
                                                    parent_model=parent_model)
            else:
                cached = features.prepare_cached_training(*arguments, also_positions=also, parent_model=parent_model)
        except (features.CacheFull, ValueError, OSError) as error:  # e.g. a full disk: train on images instead
            reason = f"{type(error).__name__}: {error}" if isinstance(error, OSError) else str(error)
        else:
            views = cached.info.get("augmented_views")
            log.info("training on cached %s features (%s, %.1f s, %.1f MiB%s)", cached.info["layer"],
                     cached.info["source"], cached.info["seconds"], cached.info["bytes"] / 2**20,
                     f", {views} augmented views" if views else "")
            return cached
    log.info("training on images: %s", reason)
    return reason


def _sweep_positions(run: Run, model: Any, config: TrainConfig) -> list[int]:
    """The cache positions the other freeze points of this run's sweep (same backbone) will need, so the pass that
    computes this run's features can store those on the way too; [] for a lone run. Read from the run's own
    sweep context, never from the sweep's record."""
    points = run.sweep_context().get("freeze_points")
    if not config.sweep or not isinstance(points, list):
        return []
    from carviz.ml.backbones import layers_of

    backbone = model.get_layer("backbone")
    layers, n = layers_of(backbone), len(backbone.layers)  # the graph walk once, not once per point
    try:
        return sorted({features.cache_position(model, config.replace(freeze=point).freeze_index(n), layers)
                       for point in points})
    except (ValueError, TypeError):
        return []


def main(argv: list[str] | None = None) -> int:
    return job_main(argv, lambda context: train_body(Run(context.record.path), context), kind="training",
                    needs_accelerator=True, record_type=Run)


if __name__ == "__main__":
    # Run the imported module's main, not this __main__ copy, so exception classes are the very ones other
    # modules import.
    from carviz.ml.train import main as module_main

    sys.exit(module_main())
