"""Frozen-feature cache: cut a built model at a cut point, cache the frozen part's output on disk, train the rest."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # Keras is imported lazily: importing this module must stay light
    import keras
    import tensorflow as tf

    from carviz.backbones import LayerInfo

_KEY_FORMAT = 1  # bump when what is cached (or how) changes, so old entries stop matching
_KEY_RE = re.compile(r"^[0-9a-f]{64}$")
STORAGE_DTYPES = ("float32", "float16")


# ---------------------------------------------------------------- cut point and key


def cut_point_for(layers: list["LayerInfo"], freeze_index: int) -> int:
    """The largest cut-point layer index c < freeze_index (1-based; its output is cached), or 1 when none."""
    best = 1
    for info in layers:
        if info.index < freeze_index and info.is_cut_point:
            best = max(best, info.index)
    return best


@functools.lru_cache(maxsize=16)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _weights_identity(weights: str) -> Any:
    choice = weights.strip()
    if choice.lower() in ("imagenet", "none"):
        return choice.lower()
    path = Path(choice).expanduser().resolve()
    stat = path.stat()
    # Content, not the path: a file overwritten in place (or copied elsewhere) is told apart correctly.
    return {"file": path.name, "size": stat.st_size, "sha256": _file_digest(str(path), stat.st_size, stat.st_mtime_ns)}


def cache_key(
    backbone: str,
    weights: str,
    alpha: float,
    image_size: int,
    head: str,
    cut_layer_name: str,
    dataset_fingerprint: str,
    dtype: str = "float32",
) -> str:
    """sha256 hex of a canonical JSON of everything the cached tensors depend on."""
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"feature dtype must be one of {', '.join(STORAGE_DTYPES)}; got {dtype!r}")
    ingredients = {
        "format": _KEY_FORMAT,
        "backbone": backbone,
        "weights": _weights_identity(weights),
        "alpha": float(alpha),
        "image_size": int(image_size),
        "head": head,  # seed head: x/255 before the backbone; recommended: the backbone's preprocess_input
        "cut": cut_layer_name,
        "dataset": dataset_fingerprint,
        "dtype": dtype,
    }
    text = json.dumps(ingredients, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------- on-disk cache


@dataclass(frozen=True)
class CacheEntry:
    """One cached feature set: its key, size on disk, last use (epoch seconds) and the meta given to put."""

    key: str
    bytes: int
    last_used: float
    meta: dict[str, Any]


class FeatureCache:
    """Feature sets under root/<key>/ (features.npy, labels.npy, meta.json), kept below max_bytes by LRU eviction."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = Path(root)
        self.max_bytes = int(max_bytes)

    def path_for(self, key: str) -> Path:
        if not _KEY_RE.match(key):  # keys become folder names: only sha256 hex is accepted
            raise ValueError(f"not a cache key: {key!r}")
        return self.root / key

    def get(self, key: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(features as a read-only memmap, labels), or None when not cached; marks the entry as just used."""
        folder = self.path_for(key)
        try:
            features = np.load(folder / "features.npy", mmap_mode="r")
            labels = np.load(folder / "labels.npy")
            os.utime(folder / "meta.json")  # last_used is meta.json's mtime
        except (FileNotFoundError, NotADirectoryError):
            return None
        return features, labels

    def put(
        self,
        key: str,
        features: np.ndarray,
        labels: np.ndarray,
        meta: dict[str, Any] | None = None,
        dtype: str | None = None,
    ) -> bool:
        """Store atomically (temp folder, then os.replace), then evict down to max_bytes; False if it cannot fit."""
        target = self.path_for(key)
        if dtype is not None:
            if dtype not in STORAGE_DTYPES:
                raise ValueError(f"feature dtype must be one of {', '.join(STORAGE_DTYPES)}; got {dtype!r}")
            features = np.asarray(features).astype(dtype, copy=False)
        features = np.asarray(features)
        labels = np.asarray(labels)
        if len(features) != len(labels):
            raise ValueError(f"{len(features)} feature rows but {len(labels)} labels")
        if features.nbytes + labels.nbytes > self.max_bytes:
            return False
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.root))
        try:
            np.save(tmp / "features.npy", features)
            np.save(tmp / "labels.npy", labels)
            record = {
                **(meta or {}),
                "shape": list(features.shape),
                "dtype": str(features.dtype),
                "created": time.time(),
            }
            (tmp / "meta.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
            try:
                os.replace(tmp, target)
            except OSError:
                if not target.is_dir():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)  # another writer stored the same key first: keep theirs
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.evict(self.max_bytes)
        return True

    def entries(self) -> list[CacheEntry]:
        """Every complete entry, most recently used first."""
        if not self.root.is_dir():
            return []
        found = []
        for folder in self.root.iterdir():
            if not _KEY_RE.match(folder.name):
                continue  # temp folders of writes in progress, foreign files
            try:
                meta_path = folder / "meta.json"
                last_used = meta_path.stat().st_mtime
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
                size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
            except (OSError, ValueError):
                continue  # evicted meanwhile, or damaged
            found.append(CacheEntry(folder.name, size, last_used, meta))
        return sorted(found, key=lambda e: e.last_used, reverse=True)

    def size_bytes(self) -> int:
        return sum(entry.bytes for entry in self.entries())

    def evict(self, to_bytes: int) -> list[str]:
        """Remove least recently used entries until the cache holds at most to_bytes; returns the removed keys."""
        entries = self.entries()
        total = sum(entry.bytes for entry in entries)
        removed = []
        for entry in reversed(entries):
            if total <= to_bytes:
                break
            self.remove(entry.key)
            total -= entry.bytes
            removed.append(entry.key)
        return removed

    def remove(self, key: str) -> None:
        folder = self.path_for(key)
        doomed = self.root / f".tmp-evict-{key}-{os.getpid()}-{time.time_ns()}"
        try:
            os.replace(folder, doomed)  # readers see the entry whole or not at all
        except FileNotFoundError:
            return
        shutil.rmtree(doomed, ignore_errors=True)


# ---------------------------------------------------------------- cutting the model


def _nodes_of(model: "keras.Model") -> list[Any]:
    """The model's own graph nodes in execution order (deepest first)."""
    by_depth = model._nodes_by_depth
    return [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]]


def _node_for(model: "keras.Model", layer: Any) -> Any:
    matches = [node for node in _nodes_of(model) if node.operation is layer]
    if len(matches) != 1:
        raise ValueError(f"layer {layer.name} is called {len(matches)} times in {model.name}; need exactly once")
    return matches[0]


def _replay(model: "keras.Model", tensors: dict[int, Any], skip: set[int]) -> None:
    """Call model's layers again on new tensors: tensors maps id(original tensor) -> new tensor and is filled in."""
    for node in _nodes_of(model):
        if not node.operation or node.is_input or id(node.operation) in skip:
            continue
        if any(id(x) not in tensors for x in node.input_tensors):
            continue  # depends on something not replayed (before the cut, or a skipped layer)
        args, kwargs = node.arguments.fill_in(tensors)
        outputs = node.operation(*args, **kwargs)
        for original, new in zip(node.outputs, outputs if isinstance(outputs, (list, tuple)) else [outputs]):
            tensors[id(original)] = new


def _split(model: "keras.Model", cut_layer_index: int) -> tuple["keras.Model", Any, Any]:
    """(backbone, backbone's node in model, the backbone-graph tensor that layer cut_layer_index outputs)."""
    backbone = model.get_layer("backbone")
    if not 1 <= cut_layer_index <= len(backbone.layers):
        raise ValueError(f"cut layer must be 1..{len(backbone.layers)}, got {cut_layer_index}")
    cut_node = _node_for(backbone, backbone.layers[cut_layer_index - 1])
    if len(cut_node.outputs) != 1:
        raise ValueError(f"layer {cut_layer_index} ({backbone.layers[cut_layer_index - 1].name}) has several outputs")
    return backbone, _node_for(model, backbone), cut_node.outputs[0]


def frozen_extractor(model: "keras.Model", cut_layer_index: int) -> "keras.Model":
    """Raw image -> preprocessing -> backbone layers 1..cut_layer_index, sharing model's layers.

    Refuses when a layer up to the cut has trainable weights (e.g. freeze_batchnorm=False): that part would
    then not compute the same thing in training, and caching it would change results.
    """
    import keras

    backbone, outer_node, cut_tensor = _split(model, cut_layer_index)
    trainable = [layer.name for layer in backbone.layers[:cut_layer_index] if layer.trainable_weights]
    if trainable:
        raise ValueError(f"layers up to the cut are trainable ({', '.join(trainable[:5])}): nothing to cache")
    image = keras.Input(model.inputs[0].shape[1:], dtype=model.inputs[0].dtype, name="image")
    outer = {id(model.inputs[0]): image}
    _replay(model, outer, skip={id(backbone)})
    (backbone_input,), _ = outer_node.arguments.fill_in(outer)
    inner = {id(backbone.inputs[0]): backbone_input}
    _replay(backbone, inner, skip={id(layer) for layer in backbone.layers[cut_layer_index:]})
    return keras.Model(image, inner[id(cut_tensor)], name=f"{model.name}_frozen_to_{cut_layer_index}")


def trainable_remainder(model: "keras.Model", cut_layer_index: int) -> "keras.Model":
    """Cached tensor -> backbone layers cut_layer_index+1..end -> head, sharing (and so training) model's layers."""
    import keras

    backbone, outer_node, cut_tensor = _split(model, cut_layer_index)
    features = keras.Input(cut_tensor.shape[1:], dtype=cut_tensor.dtype, name="features")
    inner = {id(cut_tensor): features}
    _replay(backbone, inner, skip={id(layer) for layer in backbone.layers[:cut_layer_index]})
    if id(backbone.outputs[0]) not in inner:
        raise ValueError(
            f"layer {cut_layer_index} ({backbone.layers[cut_layer_index - 1].name}) is not a cut point: "
            "later layers need tensors from before it"
        )
    outer = {id(outer_node.outputs[0]): inner[id(backbone.outputs[0])]}
    _replay(model, outer, skip={id(backbone)})
    return keras.Model(features, outer[id(model.outputs[0])], name=f"{model.name}_from_{cut_layer_index}")


def compute_features(extractor: "keras.Model", dataset: "tf.data.Dataset") -> tuple[np.ndarray, np.ndarray]:
    """Run the extractor (inference mode) over a dataset of (images, labels) batches; concatenated numpy arrays."""
    feature_batches: list[np.ndarray] = []
    label_batches: list[np.ndarray] = []
    for images, labels in dataset:
        feature_batches.append(np.asarray(extractor(images, training=False)))
        label_batches.append(np.asarray(labels))
    if not feature_batches:
        shape = tuple(int(d) for d in extractor.outputs[0].shape[1:])
        return np.zeros((0, *shape), dtype="float32"), np.zeros((0,), dtype="int64")
    return np.concatenate(feature_batches), np.concatenate(label_batches)
