"""Frozen-feature cache: cut a built model at a cut point, cache the frozen part's output on disk, train the rest."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from carviz.ml import extraction, feature_rows, keras_graph, warm
from carviz.core.feature_cache import CacheFull, FeatureCache, FeatureSpec, feature_spec  # storage: core/

if TYPE_CHECKING:  # Keras is imported lazily: importing this module must stay light
    import keras
    import tensorflow as tf

    from carviz.ml.backbones import LayerInfo
    from carviz.core.config import TrainConfig

IMAGE = 0  # position of the raw image (model input); 1..n: backbone layer n's output; n+1: pooled vector
POOLED_LAYER = "head_pool"  # the recommended head's GlobalAveragePooling2D
EXTRACTION_PIXELS = 64 * 224 * 224  # input pixels per feature-pass batch (extraction_batch)


# ---------------------------------------------------------------- cut points


def cut_point_for(layers: list["LayerInfo"], freeze_index: int) -> int:
    """The largest cut-point layer index c < freeze_index (1-based; its output is cached), or 1 when none."""
    best = 1
    for info in layers:
        if info.index < freeze_index and info.is_cut_point:
            best = max(best, info.index)
    return best


# ---------------------------------------------------------------- cutting the model
#
# A position says where a tensor sits in the model: IMAGE (the raw input), 1..n (the output of backbone layer
# number k, the seed's 1-based count with the InputLayer as 1), or n+1 (the pooled vector after the recommended
# head's GlobalAveragePooling2D: for a fully frozen backbone that is all there is to cache).


def pooled_position(model: "keras.Model") -> int | None:
    """The pooled vector's position (n+1), or None when the model has no pooling layer (the seed head)."""
    names = {layer.name for layer in model.layers}
    return len(model.get_layer("backbone").layers) + 1 if POOLED_LAYER in names else None


def position_name(model: "keras.Model", position: int) -> str:
    """The layer whose output sits at `position` (its name keys the cache)."""
    backbone = model.get_layer("backbone")
    if position == IMAGE:
        return "image"
    if position == len(backbone.layers) + 1:
        return POOLED_LAYER
    return backbone.layers[position - 1].name


def submodel(model: "keras.Model", start: int, end: int | None = None, also: Sequence[int] = ()) -> "keras.Model":
    """The part of a built carviz model from position `start` to position `end` (None: the model's output), as a
    new functional model that shares (and so trains) the original layers. With `also` (backbone positions between
    start and end) it has several outputs: the tensors at those positions, then the one at `end`."""
    import keras

    backbone = model.get_layer("backbone")
    n = len(backbone.layers)
    pooled = pooled_position(model)
    last = n + 1 if pooled else n
    if not IMAGE <= start <= last or (end is not None and not start < end <= last):
        raise ValueError(f"cannot cut from position {start} to {end} (positions run 0..{last})")
    if any(not start < q <= n or (end is not None and q >= end) for q in also):
        raise ValueError(f"extra outputs {list(also)} must lie between positions {start} and {end}")
    outer_node = keras_graph.node_for(model, backbone)

    def backbone_tensor(position: int) -> Any:
        layer_node = keras_graph.node_for(backbone, backbone.layers[position - 1])
        if len(layer_node.outputs) != 1:
            raise ValueError(f"layer {position} ({backbone.layers[position - 1].name}) has several outputs")
        return layer_node.outputs[0]

    def outer_tensor(position: int | None) -> Any:
        return model.outputs[0] if position is None else model.get_layer(POOLED_LAYER).output

    # Where the new input goes in and what it stands for.
    if start == IMAGE:
        original_in = model.inputs[0]
    elif start <= n:
        original_in = backbone_tensor(start)
    else:
        original_in = outer_tensor(start)
    new_in = keras.Input(original_in.shape[1:], dtype=original_in.dtype, name="image" if start == IMAGE else "features")

    outer: dict[int, Any] = {}
    inner: dict[int, Any] = {}
    if start == IMAGE:
        outer[id(model.inputs[0])] = new_in
        keras_graph.replay(model, outer, skip={id(backbone)})  # preprocessing, up to the backbone
        (backbone_in,), _ = keras_graph.fill_in(outer_node, outer)
        inner[id(backbone.inputs[0])] = backbone_in
    elif start <= n:
        inner[id(original_in)] = new_in
    else:
        outer[id(original_in)] = new_in

    def reached(position: int) -> Any:
        if id(backbone_tensor(position)) not in inner:
            raise ValueError(f"layer {position} ({backbone.layers[position - 1].name}) cannot be reached from {start}")
        return inner[id(backbone_tensor(position))]

    def outputs(main: Any) -> Any:
        return [reached(q) for q in also] + [main] if also else main

    if start <= n:  # through the backbone, from after `start` up to `end` (or its end)
        stop_at = end if end is not None and end <= n else n
        keras_graph.replay(backbone, inner, skip={id(layer) for layer in backbone.layers[:start]}
                | {id(layer) for layer in backbone.layers[stop_at:]})
        if end is not None and end <= n:
            return keras.Model(new_in, outputs(reached(end)), name=f"{model.name}_{start}_to_{end}")
        if id(backbone.outputs[0]) not in inner:
            raise ValueError(f"layer {start} ({backbone.layers[start - 1].name}) is not a cut point: "
                             "later layers need tensors from before it")
        outer[id(outer_node.outputs[0])] = inner[id(backbone.outputs[0])]

    keras_graph.replay(model, outer, skip={id(backbone)})  # the head, up to `end`
    return keras.Model(new_in, outputs(outer[id(outer_tensor(end))]), name=f"{model.name}_{start}_to_{end or 'output'}")


def _check_frozen_through(model: "keras.Model", position: int) -> None:
    backbone = model.get_layer("backbone")
    trainable = [layer.name for layer in backbone.layers[:position] if layer.trainable_weights]
    if trainable:
        raise ValueError(f"layers up to the cut are trainable ({', '.join(trainable[:5])}): nothing to cache")


def frozen_extractor(model: "keras.Model", cut_layer_index: int) -> "keras.Model":
    """Raw image -> preprocessing -> backbone layers 1..cut_layer_index (or the pooled vector), sharing model's
    layers. Refuses when a layer up to the cut has trainable weights (e.g. freeze_batchnorm=False): that part would
    then not compute the same thing in training, and caching it would change results."""
    _check_frozen_through(model, cut_layer_index)
    return submodel(model, IMAGE, cut_layer_index)


def trainable_remainder(model: "keras.Model", cut_layer_index: int) -> "keras.Model":
    """Cached tensor -> backbone layers cut_layer_index+1..end -> head, sharing (and so training) model's layers."""
    return submodel(model, cut_layer_index, None)


# ---------------------------------------------------------------- a run on cached features


@dataclass
class CachedTraining:
    """What a run trains on when the cache applies: the remainder model and its feature pipelines."""

    remainder: "keras.Model"
    train_data: "tf.data.Dataset"
    val_data: "tf.data.Dataset"
    info: dict[str, Any]  # recorded in run.json: position, key, how the features were obtained, seconds, bytes
    steps_per_epoch: int | None = None  # set when train_data repeats without end (augmented views: one per epoch)
    test_data: "tf.data.Dataset | None" = None  # the test split's features, when the split has one


def cache_position(model: "keras.Model", freeze_index: int, layers: list["LayerInfo"] | None = None) -> int:
    """Where to cut a model frozen before freeze_index: the pooled vector for a fully frozen backbone with a
    pooling head, else the deepest cut point before the first trainable layer (1 = nothing worth caching).
    layers: the backbone's layers_of() listing, when the caller already has it (it walks the whole graph)."""
    from carviz.ml.backbones import layers_of

    backbone = model.get_layer("backbone")
    n = len(backbone.layers)
    pooled = pooled_position(model)
    if freeze_index > n and pooled:
        return pooled
    return cut_point_for(layers if layers is not None else layers_of(backbone), freeze_index)


@dataclass(frozen=True)
class CacheRequest:
    """What a run asks of the cache (the one argument of prepare_cached_training and of augmented_views'
    prepare_augmented_training; train_data.make_feed picks which): its built model and config, where the frozen part
    ends (freeze_index) and the precision it computes in, every usable image of the dataset (paths, labels,
    fingerprint: the cache holds them all) and the run's split, the cache and how it stores features, and
    also_positions (other cuts its sweep needs, stored on the way), a transfer run's parent_model hash, and the
    epoch it resumes from (augmented views cycle from it)."""

    model: "keras.Model"
    config: "TrainConfig"
    freeze_index: int
    precision: str
    dataset_root: Path
    paths: Sequence[Path]
    labels: Sequence[int]
    fingerprint: str
    split: Any
    cache: FeatureCache
    storage_dtype: str = "float32"
    on_progress: Callable[[int, int], None] | None = None
    also_positions: Sequence[int] = ()
    parent_model: str = ""
    initial_epoch: int = 0


def prepare_cached_training(request: CacheRequest) -> CachedTraining:
    """Get (from the cache, from a shallower cached cut, or from the images) the frozen part's output for every
    image of the dataset, then build the remainder model and its training/validation pipelines over the split.
    When it has to compute them, it also stores the features at also_positions (other cuts its sweep needs) that
    lie on the way, in the same pass. parent_model: a transfer run's parent model hash (feature_spec).

    Raises CacheFull or ValueError when the cache cannot be used; the caller then trains on images."""
    model, config, precision, split, cache = request.model, request.config, request.precision, request.split, \
        request.cache
    all_paths, all_labels = request.paths, request.labels
    position = cache_position(model, request.freeze_index)
    if position <= 1:
        raise ValueError("no cut point after the input before the first trainable layer")
    _check_frozen_through(model, min(position, len(model.get_layer("backbone").layers)))
    computed_in = extraction.spec_precision(config.backbone, len(all_paths), config.image_size, precision)
    spec = feature_spec(config, request.fingerprint, computed_in, request.storage_dtype, request.parent_model)
    name = position_name(model, position)
    key = spec.key(name)
    root = Path(request.dataset_root).resolve()
    relative = [Path(p).resolve().relative_to(root).as_posix() for p in all_paths]
    started = time.perf_counter()
    with cache.locked(key):
        source, engine = "cache hit", None
        found = cache.get(key)
        if found is not None and cache.paths(key) != relative:  # cannot happen for one fingerprint; never trust it
            cache.remove(key)
            found = None
        if found is None:
            source, engine = _compute_entry(model, config, spec, position, all_paths, all_labels, relative, cache,
                                            request.on_progress, request.also_positions)
            found = cache.get(key)
            if found is None:  # evicted at once by a concurrent writer: extremely unlikely; refuse, do not guess
                raise ValueError("the cached features disappeared right after being written")
    features, _ = found
    seconds = time.perf_counter() - started

    remainder = compiled_remainder(model, position, config)
    row_of = {path: row for row, path in enumerate(relative)}
    as_rows = lambda paths: [row_of[Path(p).resolve().relative_to(root).as_posix()] for p in paths]  # noqa: E731
    num_classes = len(split.classes)
    input_dtype = remainder.inputs[0].dtype
    features, in_memory = warm.hold(features)  # steady epochs: rows in process memory when they fit
    pipeline = feature_pipeline if in_memory else feature_rows.block_pipeline
    train_data = pipeline(features, as_rows(split.train_paths), split.train_labels, num_classes,
                          config.batch_size, training=True, seed=config.seed, dtype=input_dtype)
    val_data = pipeline(features, as_rows(split.val_paths), split.val_labels, num_classes,
                        config.batch_size, training=False, seed=config.seed, dtype=input_dtype)
    test_data = pipeline(features, as_rows(split.test_paths), split.test_labels, num_classes, config.batch_size,
                         training=False, seed=config.seed, dtype=input_dtype) if split.test_paths else None
    info = {"used": True, "position": position, "layer": name, "key": key, "source": source,
            "shape": list(features.shape[1:]), "dtype": str(features.dtype),
            "bytes": int(features.nbytes), "seconds": round(seconds, 3), "computed_in": spec.precision,
            **({"engine": engine} if engine else {}),
            "read": "in memory" if in_memory else "from disk in shuffled blocks (larger than the memory budget)"}
    return CachedTraining(remainder, train_data, val_data, info, test_data=test_data)


def precompute(model: "keras.Model", config: "TrainConfig", precision: str, dataset_root: Path,
               all_paths: Sequence[Path], all_labels: Sequence[int], fingerprint: str, cache: FeatureCache,
               storage_dtype: str, positions: Sequence[int], on_progress: Callable[[int, int], None] | None = None,
               ) -> str | None:
    """Store the cuts at `positions` in one pass (the deepest, the others on the way) unless the deepest is cached;
    the pass's source, or None when there was nothing to do. Only for a model that has not trained yet (an LR
    test about to start): the layers past its own freeze point still hold the weights that freezing them keeps."""
    positions = sorted({p for p in positions if p > 1})
    if not positions:
        return None
    computed_in = extraction.spec_precision(config.backbone, len(all_paths), config.image_size, precision)
    spec = feature_spec(config, fingerprint, computed_in, storage_dtype)
    deepest = positions[-1]
    key = spec.key(position_name(model, deepest))
    root = Path(dataset_root).resolve()
    relative = [Path(p).resolve().relative_to(root).as_posix() for p in all_paths]
    with cache.locked(key):
        if cache.get(key) is not None and cache.paths(key) == relative:
            return None
        source, engine = _compute_entry(model, config, spec, deepest, all_paths, all_labels, relative, cache,
                                        on_progress, positions[:-1])
        return f"{source}, by {engine}"


def compiled_remainder(model: "keras.Model", position: int, config: "TrainConfig") -> "keras.Model":
    """The trainable remainder from `position`, compiled with the whole model's optimizer (so checkpoints of the
    whole model carry its state)."""
    remainder = submodel(model, position, None)
    if not model.optimizer.built:  # build in the whole model's variable order, so its checkpoints load back
        model.optimizer.build(model.trainable_variables)
    remainder.compile(optimizer=model.optimizer, loss="categorical_crossentropy", metrics=["accuracy"],
                      jit_compile=config.jit_compile)
    return remainder


def _compute_entry(model: "keras.Model", config: "TrainConfig", spec: FeatureSpec, position: int,
                   all_paths: Sequence[Path], all_labels: Sequence[int], relative: list[str], cache: FeatureCache,
                   on_progress: Callable[[int, int], None] | None, also_positions: Sequence[int] = (),
                   ) -> tuple[str, str]:
    """Compute and store the entry at `position` (plus any missing also_positions passed on the way), from the
    deepest shallower cached cut of the same family when there is one, else from the images; (where the features
    came from, which engine computed them)."""
    from carviz.ml.pipelines import make_pipeline

    shallower = cache.shallower(spec.family(), position)
    total = len(all_paths)
    batch = extraction_batch(config.image_size)
    start = IMAGE
    if shallower is not None and cache.paths(shallower.key) == relative and cache.get(shallower.key):
        start = shallower.meta["depth"]
    n = len(model.get_layer("backbone").layers)
    targets = sorted({q for q in also_positions if max(start, 1) < q < min(position, n + 1)})
    targets = [q for q in targets if cache.get(spec.key(position_name(model, q))) is None] + [position]
    with contextlib.ExitStack() as stack:
        outputs: list[tuple[int, np.ndarray]] = []
        for q in targets:
            key = spec.key(position_name(model, q))
            if q != position and not stack.enter_context(cache.locked(key, wait=False)):
                continue  # another job is computing it
            part_shape = _output_shape(model, q)
            meta = {"family": spec.family(), "depth": q, "layer": position_name(model, q), "backbone": spec.backbone,
                    "weights": spec.weights, "alpha": spec.alpha, "image_size": spec.image_size, "head": spec.head,
                    "precision": spec.precision, "dataset_fingerprint": spec.dataset_fingerprint, "images": total}
            try:
                out = stack.enter_context(cache.writing(key, (total, *part_shape), spec.dtype, all_labels, meta,
                                                        relative))
            except CacheFull:
                if q == position:
                    raise
                continue  # an extra that does not fit is simply not stored
            outputs.append((q, out))
        extra = [q for q, _ in outputs if q != position]
        part = submodel(model, start, position, also=extra)
        if start == IMAGE:
            images = make_pipeline(all_paths, all_labels, 2, config.image_size, batch, training=False, cache=False)
            batches: Iterator[Any] = (x for x, _ in images)
            source = "computed from the images"
        else:
            source_features, _ = cache.get(shallower.key)  # type: ignore[misc, union-attr]
            batches = (np.asarray(source_features[i:i + batch]) for i in range(0, total, batch))
            source = f"computed from the cached {shallower.meta.get('layer')} features"  # type: ignore[union-attr]
        infer = extraction.extractor(part, extraction.plan(config.backbone, total, config.image_size), spec.precision)
        done = 0
        for x in batches:
            values = infer(x)
            size = len(values[0])
            for (_, out), value in zip(outputs, values):
                out[done:done + size] = np.asarray(value)
            done += size
            if on_progress:
                on_progress(done, total)
        if done != total:
            raise ValueError(f"computed features for {done} of {total} images")
    if extra:
        source += f" (with {', '.join(position_name(model, q) for q in extra)} on the way)"
    return source, infer.note


def extraction_batch(image_size: int) -> int:
    """Images per batch of the feature pass: EXTRACTION_PIXELS' worth (64 at 224 px), 8 to 256. Inference results
    do not depend on it; speed hardly does (at 224 px on 2 CPUs, writing the cut included: Keras 75-88 img/s at 32 a
    batch and 83-86 at 128; TFLite 121-122 at 32, 127-129 at 64, 105-124 at 128), and memory grows with it."""
    return max(8, min(256, EXTRACTION_PIXELS // max(1, image_size) ** 2))


def _output_shape(model: "keras.Model", position: int) -> tuple[int, ...]:
    """The shape (without batch) of the tensor at a position, read from the built model."""
    backbone = model.get_layer("backbone")
    layer = model.get_layer(POOLED_LAYER) if position > len(backbone.layers) else backbone.layers[position - 1]
    return tuple(int(d) for d in layer.output.shape[1:])


def feature_pipeline(features: np.ndarray, rows: Sequence[int], labels: Sequence[int], num_classes: int,
                     batch_size: int, training: bool, seed: int, dtype: Any = "float32") -> "tf.data.Dataset":
    """Batches of (features[rows], one-hot labels), reshuffled each epoch when training: the same order in which
    pipelines.make_pipeline would feed the images (the same shuffle of the same number of elements and seed)."""
    import tensorflow as tf

    if len(rows) != len(labels):
        raise ValueError(f"{len(rows)} rows but {len(labels)} labels")
    row_shape = tuple(int(d) for d in features.shape[1:])
    tf_dtype = tf.as_dtype(dtype)
    ds = tf.data.Dataset.from_tensor_slices((np.asarray(rows, dtype="int64"), np.asarray(labels, dtype="int32")))
    if training:
        ds = ds.shuffle(max(1, len(rows)), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)

    def gather(batch_rows: np.ndarray) -> np.ndarray:
        return np.asarray(features[np.asarray(batch_rows)], dtype=tf_dtype.as_numpy_dtype)

    def load(batch_rows: Any, batch_labels: Any) -> tuple[Any, Any]:
        x = tf.numpy_function(gather, [batch_rows], tf_dtype, stateful=False)
        x.set_shape((None, *row_shape))
        return x, tf.one_hot(batch_labels, num_classes, dtype=tf.float32)

    from carviz.ml.pipelines import steady

    return steady(ds.map(load, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE))
