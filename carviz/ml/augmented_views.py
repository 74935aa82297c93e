"""Augmentation with the feature cache: K augmented views of each training image cached at the cut, one per epoch."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from carviz.ml import extraction, feature_rows, features, warm
from carviz.core.feature_cache import CacheFull, FeatureCache, FeatureSpec, feature_spec

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

    from carviz.core.config import Augmentation, TrainConfig

# Training images per augmentation call while extracting: fixed (not the batch size), so the random draws, and so a
# view's content, follow from its cache key alone.
VIEW_CHUNK = 32
_VIEW_SEED_BASE = 1_000_003  # view v augments with seed base + 10 v (augmentation_model uses seed .. seed + 3)
VIEW_RULE = "epoch e (from 1) trains on view (e-1) mod K of every image; validation on unaugmented features"


def view_seed(view: int) -> int:
    """The augmentation seed of view number `view` (from 0); not the run seed, so runs that differ in their seed
    (a sweep's) share the views."""
    return _VIEW_SEED_BASE + 10 * view


def view_for_epoch(epoch: int, views: int) -> int:
    """The view every training image is fed in 0-based epoch `epoch` (Keras' count): epoch mod views, so K
    consecutive epochs see K distinct views and a resumed run picks up where it stopped."""
    return epoch % views


def view_ingredients(augmentation: "Augmentation", view: int, train_relative: Sequence[str]) -> dict[str, Any]:
    """What an augmented view's content depends on beyond the plain features' key: the augmentation amounts, the
    view's index and seed, the extraction chunk and the training rows (their relative paths, in order)."""
    amounts = {name: value for name, value in asdict(augmentation).items() if name != "enabled"}
    rows = hashlib.sha256(json.dumps(list(train_relative), ensure_ascii=False).encode("utf-8")).hexdigest()
    return {"settings": amounts, "view": view, "seed": view_seed(view), "chunk": VIEW_CHUNK, "rows": rows}


def _usable(cache: FeatureCache, key: str, paths: list[str]) -> bool:
    """Whether an entry is stored for exactly these rows (an entry with other rows is removed: never trusted)."""
    if cache.get(key) is None:
        return False
    if cache.paths(key) != paths:
        cache.remove(key)
        return False
    return True


def prepare_augmented_training(request: features.CacheRequest) -> features.CachedTraining:
    """features.prepare_cached_training for a run with augmentation: the plain features of every image (validation
    reads them) and config.augment_views augmented views of the training images, at the cut, taken from the cache or
    computed in one pass over the images; training cycles through the views (view_for_epoch) from initial_epoch.

    Raises CacheFull or ValueError when the cache cannot be used; the caller then trains on images."""
    model, config, precision, split, cache = request.model, request.config, request.precision, request.split, \
        request.cache
    all_paths, all_labels, storage_dtype = request.paths, request.labels, request.storage_dtype
    dataset_root, on_progress, also_positions = request.dataset_root, request.on_progress, request.also_positions
    initial_epoch, freeze_index = request.initial_epoch, request.freeze_index
    views = config.augment_views
    if not (config.augmentation.enabled and views):
        raise ValueError("augmented views need augmentation on and augment_views >= 1")
    position = features.cache_position(model, freeze_index)
    if position <= 1:
        raise ValueError("no cut point after the input before the first trainable layer")
    features._check_frozen_through(model, min(position, len(model.get_layer("backbone").layers)))
    computed_in = extraction.spec_precision(config.backbone, len(all_paths), config.image_size, precision)
    spec = feature_spec(config, request.fingerprint, computed_in, storage_dtype, request.parent_model)
    root = Path(dataset_root).resolve()
    relative = [Path(p).resolve().relative_to(root).as_posix() for p in all_paths]
    train_relative = [Path(p).resolve().relative_to(root).as_posix() for p in split.train_paths]
    name = features.position_name(model, position)
    plain_key = spec.key(name)
    view_keys = [spec.key(name, view_ingredients(config.augmentation, v, train_relative)) for v in range(views)]
    row_bytes = int(np.prod(features._output_shape(model, position))) * np.dtype(storage_dtype).itemsize
    needed = row_bytes * (len(relative) + views * len(train_relative))
    if needed > cache.max_bytes:  # all of them must fit at once, or writing the last would evict the first
        raise CacheFull(needed, cache.max_bytes)
    started = time.perf_counter()
    with contextlib.ExitStack() as locks:
        for key in (plain_key, *view_keys):  # always in this order, so concurrent jobs cannot deadlock
            locks.enter_context(cache.locked(key))
        plain_ready = _usable(cache, plain_key, relative)
        missing = [v for v, key in enumerate(view_keys) if not _usable(cache, key, train_relative)]
        source, engine = "cache hit", None
        if not plain_ready:
            shallower = cache.shallower(spec.family(), position)
            if shallower is not None and cache.paths(shallower.key) == relative and cache.get(shallower.key):
                source, engine = features._compute_entry(model, config, spec, position, all_paths, all_labels,
                                                         relative, cache, on_progress, also_positions)
                plain_ready = True
        views_source = "cache hit"
        if missing or not plain_ready:
            engine = _extract(model, config, spec, position, all_paths, all_labels, relative, split, train_relative,
                              cache, not plain_ready, missing, also_positions, on_progress)
            if not plain_ready:
                source = "computed from the images"
            if missing:
                views_source = (f"{len(missing)} of {views} computed from the images" if len(missing) < views
                                else "computed from the images")
        found = [cache.get(key) for key in (plain_key, *view_keys)]
        if any(entry is None for entry in found):  # evicted at once by a concurrent writer: refuse, do not guess
            raise ValueError("cached features disappeared right after being written")
    plain, _ = found[0]  # type: ignore[misc]
    view_arrays = [entry[0] for entry in found[1:]]  # type: ignore[index]
    seconds = time.perf_counter() - started
    # Held in process memory when all of them fit (steady epochs: see feature_rows); else read from the files.
    budget = feature_rows.ram_budget()
    in_memory = plain.nbytes + sum(array.nbytes for array in view_arrays) <= budget
    if in_memory:
        plain = warm.hold(plain, budget)[0]
        view_arrays = [warm.hold(array, budget)[0] for array in view_arrays]

    remainder = features.compiled_remainder(model, position, config)
    row_of = {path: row for row, path in enumerate(relative)}
    val_rows = [row_of[Path(p).resolve().relative_to(root).as_posix()] for p in split.val_paths]
    input_dtype = remainder.inputs[0].dtype
    train_data, steps = view_pipeline(view_arrays, split.train_labels, len(split.classes), config.batch_size,
                                      seed=config.seed, dtype=input_dtype, initial_epoch=initial_epoch)
    val_data = features.feature_pipeline(plain, val_rows, split.val_labels, len(split.classes), config.batch_size,
                                         training=False, seed=config.seed, dtype=input_dtype)
    test_rows = [row_of[Path(p).resolve().relative_to(root).as_posix()] for p in split.test_paths]
    test_data = features.feature_pipeline(plain, test_rows, split.test_labels, len(split.classes), config.batch_size,
                                          training=False, seed=config.seed, dtype=input_dtype) if test_rows else None
    info = {"used": True, "position": position, "layer": name, "key": plain_key, "source": source,
            "augmented_views": views, "views_source": views_source, "view_keys": view_keys, "view_rule": VIEW_RULE,
            "shape": list(plain.shape[1:]), "dtype": str(plain.dtype),
            "bytes": int(plain.nbytes + sum(array.nbytes for array in view_arrays)), "seconds": round(seconds, 3),
            "computed_in": spec.precision, **({"engine": engine} if engine else {}),
            "read": "in memory" if in_memory else "from the cache files (larger than the memory budget)"}
    return features.CachedTraining(remainder, train_data, val_data, info, steps_per_epoch=steps,
                                   test_data=test_data)


def _extract(model: "keras.Model", config: "TrainConfig", spec: FeatureSpec, position: int,
             all_paths: Sequence[Path], all_labels: Sequence[int], relative: list[str], split: Any,
             train_relative: list[str], cache: FeatureCache, plain: bool, views: list[int],
             also_positions: Sequence[int], on_progress: Callable[[int, int], None] | None) -> str:
    """One pass over the images storing, at `position` (the caller holds its locks) and at the also_positions on
    the way that are missing and fit: the plain features of every image when `plain`, and each view in `views` of
    the training images (each view: the run's augmentation with view_seed(view), in chunks of VIEW_CHUNK). Returns
    which engine computed them (extraction.Extractor.note)."""
    from carviz.ml.pipelines import augmentation_model, make_pipeline

    n = len(model.get_layer("backbone").layers)
    budget = cache.max_bytes
    wanted = ([None] if plain else []) + list(views)
    with contextlib.ExitStack() as stack:
        outputs: dict[tuple[int, int | None], np.ndarray] = {}
        also = sorted({q for q in also_positions if 1 < q < min(position, n + 1)})
        for q in [position] + also:  # the run's own cut first: the extras take only what room is left
            layer = features.position_name(model, q)
            shape = features._output_shape(model, q)
            for view in wanted:
                ingredients = None if view is None else view_ingredients(config.augmentation, view, train_relative)
                key = spec.key(layer, ingredients)
                rows, labels = (relative, all_labels) if view is None else (train_relative, split.train_labels)
                size = len(rows) * int(np.prod(shape)) * np.dtype(spec.dtype).itemsize
                if q != position and (size > budget or cache.get(key) is not None
                                      or not stack.enter_context(cache.locked(key, wait=False))):
                    continue  # no room, already stored, or another job is computing it
                meta = {"depth": q, "layer": layer, "backbone": spec.backbone, "weights": spec.weights,
                        "alpha": spec.alpha, "image_size": spec.image_size, "head": spec.head,
                        "precision": spec.precision, "dataset_fingerprint": spec.dataset_fingerprint,
                        "images": len(rows)}
                if view is None:
                    meta["family"] = spec.family()  # only plain entries are sources for deeper cuts
                else:
                    meta.update(view=view, view_seed=view_seed(view), augmentation=ingredients["settings"])
                try:
                    outputs[(q, view)] = stack.enter_context(cache.writing(key, (len(rows), *shape), spec.dtype,
                                                                           labels, meta, rows))
                except CacheFull:
                    if q == position:
                        raise
                    continue
                budget -= size
        extra = sorted({q for q, _ in outputs if q != position})
        order = extra + [position]
        infer = extraction.extractor(features.submodel(model, features.IMAGE, position, also=extra),
                                     extraction.plan(config.backbone, len(relative), config.image_size), spec.precision)

        def store(x: Any, view: int | None, rows: Any) -> None:
            for q, value in zip(order, infer(x)):
                if (q, view) in outputs:
                    outputs[(q, view)][rows] = np.asarray(value)

        augmenters = {view: augmentation_model(config.augmentation, seed=view_seed(view)) for view in views}
        row_of = {path: row for row, path in enumerate(relative)}
        train_rows = np.asarray([row_of[path] for path in train_relative], dtype="int64")
        total = (len(relative) if plain else 0) + len(views) * len(train_relative)
        done = 0
        start = 0
        for x, _ in make_pipeline(split.train_paths, split.train_labels, 2, config.image_size, VIEW_CHUNK,
                                  training=False, cache=False):
            size = int(x.shape[0])
            if plain:
                store(x, None, train_rows[start:start + size])
            for view in views:
                store(augmenters[view](x, training=True), view, slice(start, start + size))
            start += size
            done += size * ((1 if plain else 0) + len(views))
            if on_progress:
                on_progress(done, total)
        if start != len(train_relative):
            raise ValueError(f"computed views for {start} of {len(train_relative)} training images")
        if plain:  # the images that are not training images (validation, test): plain features only
            in_train = set(train_rows.tolist())
            rest = [row for row in range(len(relative)) if row not in in_train]
            start = 0
            for x, _ in make_pipeline([all_paths[row] for row in rest], [all_labels[row] for row in rest], 2,
                                      config.image_size, VIEW_CHUNK, training=False, cache=False):
                size = int(x.shape[0])
                store(x, None, np.asarray(rest[start:start + size], dtype="int64"))
                start += size
                done += size
                if on_progress:
                    on_progress(done, total)
            if start != len(rest):
                raise ValueError(f"computed features for {start} of {len(rest)} images")
    return infer.note


def view_pipeline(views: Sequence[np.ndarray], labels: Sequence[int], num_classes: int, batch_size: int, seed: int,
                  dtype: Any = "float32", initial_epoch: int = 0) -> tuple["tf.data.Dataset", int]:
    """(batches of (views[v][rows], one-hot labels) without end, steps per epoch): each epoch shuffles the rows as
    features.feature_pipeline does, and feeds every row's view view_for_epoch(epoch) (epochs counted from
    initial_epoch, so a resumed run continues with the right view). Fit it with steps_per_epoch."""
    import tensorflow as tf

    if not views or any(len(view) != len(labels) for view in views):
        raise ValueError(f"{len(labels)} labels, but views of {[len(view) for view in views]} rows")
    count = len(labels)
    steps = max(1, math.ceil(count / batch_size))
    row_shape = tuple(int(d) for d in views[0].shape[1:])
    tf_dtype = tf.as_dtype(dtype)
    ds = tf.data.Dataset.from_tensor_slices((np.arange(count, dtype="int64"), np.asarray(labels, dtype="int32")))
    # batch before repeat: an epoch's last, smaller batch never mixes in the next epoch's rows
    ds = ds.shuffle(max(1, count), seed=seed, reshuffle_each_iteration=True).batch(batch_size).repeat().enumerate()

    def gather(step: np.ndarray, batch_rows: np.ndarray) -> np.ndarray:
        view = views[view_for_epoch(initial_epoch + int(step) // steps, len(views))]
        return np.asarray(view[np.asarray(batch_rows)], dtype=tf_dtype.as_numpy_dtype)

    def load(step: Any, batch: Any) -> tuple[Any, Any]:
        batch_rows, batch_labels = batch
        x = tf.numpy_function(gather, [step, batch_rows], tf_dtype, stateful=False)
        x.set_shape((None, *row_shape))
        return x, tf.one_hot(batch_labels, num_classes, dtype=tf.float32)

    from carviz.ml.pipelines import steady

    return steady(ds.map(load, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)), steps
