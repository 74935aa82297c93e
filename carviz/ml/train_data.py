"""What a training job trains on: the dataset's split (made and recorded at the first start, the recorded one on a
resume), and the feed for fit() (the remainder on cached features, or the whole model on images)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from carviz.core import eta
from carviz.core.config import TrainConfig
from carviz.core.jobs.record import now_iso
from carviz.core.store import Run
from carviz.ml import warm
from carviz.core import feature_cache

if TYPE_CHECKING:  # features and pipelines load Keras: imported where a feed is made, so load_data runs without it
    from carviz.ml import features

log = logging.getLogger("carviz.ml.train")


class DatasetChanged(ValueError):
    """The dataset changed since the run was launched, and the resume did not accept that."""


@dataclass(frozen=True)
class TrainingData:
    """The dataset as this start of the job sees it: its folder, its scan, and the split it trains on."""

    root: Path
    scan: Any  # datasets.DatasetScan
    split: Any  # datasets.Split


@dataclass(frozen=True)
class Feed:
    """What fit() trains and validates: the model it steps (the remainder on cached features, else the whole
    model) and its pipelines; test_data only on cached features (on images the kept model reads the test images)."""

    model: Any
    train_data: Any
    val_data: Any
    test_data: Any = None
    steps_per_epoch: int | None = None  # set when train_data repeats without end (augmented views)
    cache_info: dict[str, Any] | None = None  # run.json's feature_cache


def load_data(run: Run, config: TrainConfig) -> TrainingData:
    """The dataset's scan (in a warm worker, reused while no file changed) and the split: made now and recorded on
    the first start (split_seed, not the run seed: runs differing only in their seed share it), else the one
    recorded at launch (recorded_split_for_resume)."""
    from carviz.core import settings
    from carviz.data import datasets

    root = settings.resolve_dataset(config.dataset)
    scan = warm.scan_dataset(root)
    if len(scan.classes) < 2:
        raise ValueError(f"dataset {config.dataset!r} needs at least 2 classes with images, found {scan.counts()}")
    recorded = run.split()
    if recorded is not None:
        return TrainingData(root, scan, recorded_split_for_resume(run, recorded, root, scan))
    split = datasets.split_files(scan, config.validation_split, config.split_seed, config.test_fraction)
    if not split.train_paths or not split.val_paths:
        raise ValueError(f"dataset {config.dataset!r} is too small to split ({scan.total()} usable images)")
    run.write_classes(split.classes)
    run.write_split(split.to_json_dict(root))
    return TrainingData(root, scan, split)


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
    info = run.run_info()
    classes_changed = list(scan.classes) != list(split.classes)
    fingerprint_changed = bool(info.fingerprint_at_launch) and info.fingerprint_at_launch != scan.fingerprint
    accepted = bool(run.resume_request().get("accept_dataset_changes"))
    note = {"at": now_iso(), "dataset_changed": fingerprint_changed or bool(gone) or bool(new),
            "classes_changed": classes_changed, "gone": len(gone), "new_ignored": new, "accepted": accepted,
            "gone_examples": [path.relative_to(dataset_root).as_posix() for path in gone[:20]]}
    run.update_info(resumes=info.resumes + [note])
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


def make_feed(run: Run, model: Any, config: TrainConfig, freeze_index: int, precision: str, data: TrainingData,
              initial_epoch: int) -> Feed:
    """On cached features when the run can (feature_cache.unavailable_reason), else on images; run.json's
    feature_cache says which, and why not."""
    from carviz.ml import features, pipelines

    cached = _cached_training(run, model, config, freeze_index, precision, data, initial_epoch)
    if isinstance(cached, features.CachedTraining):
        return Feed(cached.remainder, cached.train_data, cached.val_data, cached.test_data, cached.steps_per_epoch,
                    cached.info)
    split = data.split
    train = pipelines.make_pipeline(split.train_paths, split.train_labels, len(split.classes), config.image_size,
                                    config.batch_size, training=True, augmentation=config.augmentation,
                                    seed=config.seed)
    val = pipelines.make_pipeline(split.val_paths, split.val_labels, len(split.classes), config.image_size,
                                  config.batch_size, training=False)
    return Feed(model, train, val, cache_info={"used": False, "reason": cached})


def _cached_training(run: Run, model: Any, config: TrainConfig, freeze_index: int, precision: str,
                     data: TrainingData, initial_epoch: int) -> "features.CachedTraining | str":
    """The cached-features setup for this run (with augmentation: cached augmented views, one per epoch in turn,
    starting at initial_epoch's), or the reason (logged) why it trains on images."""
    reason = feature_cache.unavailable_reason(config)
    if reason is None:
        rate = eta.Rate()

        def on_progress(done: int, total: int) -> None:
            run.write_progress({"phase": "computing features", "step": done, "steps_per_epoch": total,
                                "eta_seconds": rate.eta(done, total)})

        all_paths, all_labels = data.scan.labelled_files()
        cache_settings = feature_cache.load_settings()
        from carviz.ml import features
        from carviz.ml.augmented_views import prepare_augmented_training

        prepare = prepare_augmented_training if config.augmentation.enabled else features.prepare_cached_training
        try:
            cached = prepare(features.CacheRequest(
                model, config, freeze_index, precision, data.root, all_paths, all_labels, data.scan.fingerprint,
                data.split, feature_cache.FeatureCache(feature_cache.cache_root(), cache_settings.max_bytes),
                cache_settings.dtype, on_progress, also_positions=_sweep_positions(run, model, config),
                parent_model=run.run_info().parent_model,  # a transfer run's frozen weights are its parent's
                initial_epoch=initial_epoch))
        except (feature_cache.CacheFull, ValueError, OSError) as error:  # e.g. a full disk: train on images instead
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
    from carviz.ml import features
    from carviz.ml.backbones import layers_of

    backbone = model.get_layer("backbone")
    layers, n = layers_of(backbone), len(backbone.layers)  # the graph walk once, not once per point
    try:
        return sorted({features.cache_position(model, config.replace(freeze=point).freeze_index(n), layers)
                       for point in points})
    except (ValueError, TypeError):
        return []


def class_weights(rule: str, labels: list[int], num_classes: int) -> dict[int, float] | None:
    """Keras' class_weight for the rule: "balanced" gives class c the weight n / (classes x n_c) over the training
    labels (a class without training images gets 1); "none" gives None (every image alike)."""
    if rule == "none":
        return None
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
    return {c: float(len(labels) / (num_classes * counts[c])) if counts[c] else 1.0 for c in range(num_classes)}
