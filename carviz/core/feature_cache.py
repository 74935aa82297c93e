"""Frozen-feature cache storage: cache keys, the cache's settings and the on-disk LRU cache (no Keras needed)."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from carviz.core import settings

if TYPE_CHECKING:
    from carviz.core.config import TrainConfig

_KEY_FORMAT = 2  # bump when what is cached (or how) changes, so old entries stop matching
_KEY_RE = re.compile(r"^[0-9a-f]{64}$")
STORAGE_DTYPES = ("float32", "float16")
SETTINGS_FILE = "settings.json"
DEFAULT_MAX_GB = 20.0


# ---------------------------------------------------------------- when the cache applies


def unavailable_reason(config: "TrainConfig") -> str | None:
    """Why a run with this config cannot train on cached features (None when it can); no TensorFlow needed."""
    from carviz.core.config import FREEZE_ALL

    if not config.feature_cache:
        return "the feature cache is off for this run"
    if config.augmentation.enabled and not config.augment_views:
        return ("augmentation is on with 0 cached views: every epoch feeds new pixels, so the frozen part's output "
                "cannot be reused")
    if config.freeze != FREEZE_ALL and int(config.freeze) <= 2:
        return "nothing before the first trainable layer is worth caching (freeze index ≤ 2)"
    if not config.freeze_batchnorm:
        return "frozen BatchNormalization layers are trainable (freeze_batchnorm off), so the frozen part changes"
    return None


# ---------------------------------------------------------------- keys


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


def _sha256_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class FeatureSpec:
    """Everything cached tensors depend on except where the model is cut (one "family" of positions)."""

    backbone: str
    weights: str
    alpha: float
    image_size: int
    head: str  # seed head: x/255 before the backbone; recommended: the backbone's preprocess_input
    dataset_fingerprint: str
    precision: str = "float32"  # the compute policy the frozen layers ran under (mixed_float16 differs)
    dtype: str = "float32"  # storage
    init_seed: int | None = None  # with weights "none": the run seed drew the frozen layers' random weights
    parent_model: str = ""  # a transfer run's: its parent's model.keras sha256, where the frozen weights come from

    def __post_init__(self) -> None:
        if self.dtype not in STORAGE_DTYPES:
            raise ValueError(f"feature dtype must be one of {', '.join(STORAGE_DTYPES)}; got {self.dtype!r}")

    def _ingredients(self) -> dict[str, Any]:
        values = asdict(self)
        parent = values.pop("parent_model")  # absent from other keys, so they are unchanged
        values.update(format=_KEY_FORMAT, alpha=float(self.alpha), image_size=int(self.image_size),
                      weights={"run_model_sha256": parent} if parent else _weights_identity(self.weights))
        if values["weights"] != "none":  # pretrained frozen layers do not depend on the run seed (keys unchanged)
            del values["init_seed"]
        return values

    def family(self) -> str:
        return _sha256_json(self._ingredients())

    def key(self, position_name: str, augmented: dict[str, Any] | None = None) -> str:
        """sha256 hex of a canonical JSON of every ingredient plus the cut position's name (and, for an augmented
        view, what makes that view: augmentation settings, view index and seed, its rows)."""
        extra = {"augmented": augmented} if augmented is not None else {}
        return _sha256_json({**self._ingredients(), "cut": position_name, **extra})


def feature_spec(config: "TrainConfig", fingerprint: str, precision: str, dtype: str,
                 parent_model: str = "") -> FeatureSpec:
    """A run's FeatureSpec. A run started from another run (init_from_run) has its frozen weights from that run's
    model, so parent_model (the model file's sha256, recorded in run.json) stands for its weights: two transfer runs
    share features only with the same parent model, and never with runs on ImageNet weights. ValueError (the run
    then trains on images) when a transfer run's parent_model is unknown."""
    if config.init_from_run and not parent_model:
        raise ValueError("the parent run's model hash is not recorded: its features cannot be told apart")
    weights = f"run:{config.init_from_run}" if config.init_from_run else config.weights
    return FeatureSpec(config.backbone, weights, config.alpha, config.image_size, config.head, fingerprint, precision,
                       dtype, init_seed=config.seed, parent_model=parent_model if config.init_from_run else "")


def cache_key(backbone: str, weights: str, alpha: float, image_size: int, head: str, cut_layer_name: str,
              dataset_fingerprint: str, dtype: str = "float32", precision: str = "float32") -> str:
    """FeatureSpec(...).key(cut_layer_name), as one call."""
    spec = FeatureSpec(backbone, weights, alpha, image_size, head, dataset_fingerprint, precision, dtype)
    return spec.key(cut_layer_name)


# ---------------------------------------------------------------- on-disk cache


@dataclass(frozen=True)
class CacheEntry:
    """One cached feature set: its key, size on disk, last use (epoch seconds) and the meta given to put."""

    key: str
    bytes: int
    last_used: float
    meta: dict[str, Any]


@dataclass(frozen=True)
class CacheSettings:
    """The user's choices for the cache: a size limit and the storage precision."""

    max_gb: float = DEFAULT_MAX_GB
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if not (isinstance(self.max_gb, (int, float)) and 0 <= self.max_gb <= 100_000):
            raise ValueError(f"cache size limit must be 0..100000 GB, got {self.max_gb!r}")
        if self.dtype not in STORAGE_DTYPES:
            raise ValueError(f"feature dtype must be one of {', '.join(STORAGE_DTYPES)}; got {self.dtype!r}")

    @property
    def max_bytes(self) -> int:
        return int(self.max_gb * 1024**3)


def cache_root() -> Path:
    """Where cached features live: <cache dir>/features."""
    return settings.cache_dir() / "features"


def load_settings(root: Path | None = None) -> CacheSettings:
    """The saved settings, or the defaults when none are saved (or the file is damaged)."""
    try:
        data = json.loads((Path(root or cache_root()) / SETTINGS_FILE).read_text(encoding="utf-8"))
        return CacheSettings(max_gb=float(data["max_gb"]), dtype=str(data["dtype"]))
    except (OSError, ValueError, KeyError, TypeError):
        return CacheSettings()


def save_settings(values: CacheSettings, root: Path | None = None) -> None:
    from carviz.core.store import atomic_write_json

    folder = Path(root or cache_root())
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / SETTINGS_FILE, asdict(values))


def default_cache() -> "FeatureCache":
    """The cache under cache_root() with the saved size limit."""
    return FeatureCache(cache_root(), load_settings().max_bytes)


class FeatureCache:
    """Feature sets under root/<key>/ (features.npy, labels.npy, paths.json, meta.json), LRU-evicted to max_bytes."""

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

    def paths(self, key: str) -> list[str] | None:
        """The image paths (relative to the dataset) of an entry's rows, in row order; None when not stored."""
        try:
            return json.loads((self.path_for(key) / "paths.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def put(self, key: str, features: np.ndarray, labels: np.ndarray, meta: dict[str, Any] | None = None,
            dtype: str | None = None, paths: Sequence[str] | None = None) -> bool:
        """Store a whole array at once (see writing()); False if it cannot fit under max_bytes."""
        features = np.asarray(features)
        if len(features) != len(labels):
            raise ValueError(f"{len(features)} feature rows but {len(labels)} labels")
        dtype = dtype or str(features.dtype)
        try:
            with self.writing(key, features.shape, dtype, labels, meta, paths) as out:
                out[:] = features
        except CacheFull:
            return False
        return True

    @contextlib.contextmanager
    def writing(self, key: str, shape: Sequence[int], dtype: str, labels: Sequence[int],
                meta: dict[str, Any] | None = None, paths: Sequence[str] | None = None) -> Iterator[np.ndarray]:
        """Yield a writable on-disk array of `shape`; when the block ends without error the entry appears whole
        (temp folder, then os.replace) and the cache is evicted down to max_bytes. CacheFull if it cannot fit."""
        if dtype not in STORAGE_DTYPES:
            raise ValueError(f"feature dtype must be one of {', '.join(STORAGE_DTYPES)}; got {dtype!r}")
        target = self.path_for(key)
        labels = np.asarray(labels, dtype="int64")
        needed = int(np.prod(shape)) * np.dtype(dtype).itemsize + labels.nbytes
        if needed > self.max_bytes:
            raise CacheFull(needed, self.max_bytes)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.root))
        try:
            out = np.lib.format.open_memmap(tmp / "features.npy", mode="w+", dtype=dtype, shape=tuple(shape))
            yield out
            out.flush()
            del out
            np.save(tmp / "labels.npy", labels)
            if paths is not None:
                (tmp / "paths.json").write_text(json.dumps(list(paths)), encoding="utf-8")
            record = {**(meta or {}), "shape": list(shape), "dtype": dtype, "created": time.time()}
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
        self.evict(self.max_bytes, keep=key)

    @contextlib.contextmanager
    def locked(self, key: str, wait: bool = True) -> Iterator[bool]:
        """Hold an exclusive lock for `key`, so concurrent jobs compute a feature set once (the kernel frees it
        if the holder dies). With wait=False, yields False at once when another process holds it."""
        self.path_for(key)  # validates
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / f".lock-{key}", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    def entries(self) -> list[CacheEntry]:
        """Every complete entry, most recently used first."""
        if not self.root.is_dir():
            return []
        found = []
        for folder in self.root.iterdir():
            if not _KEY_RE.match(folder.name):
                continue  # temp folders of writes in progress, locks, settings
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

    def evict(self, to_bytes: int, keep: str = "") -> list[str]:
        """Remove least recently used entries (never `keep`) until at most to_bytes are held; the removed keys."""
        entries = self.entries()
        total = sum(entry.bytes for entry in entries)
        removed = []
        for entry in reversed(entries):
            if total <= to_bytes:
                break
            if entry.key == keep:
                continue
            self.remove(entry.key)
            total -= entry.bytes
            removed.append(entry.key)
        return removed

    def remove(self, key: str) -> None:
        folder = self.path_for(key)
        doomed = self.root / f".tmp-evict-{key}-{os.getpid()}-{time.time_ns()}"
        try:
            os.replace(folder, doomed)  # readers see the entry whole or not at all (open memmaps stay valid)
        except FileNotFoundError:
            return
        shutil.rmtree(doomed, ignore_errors=True)

    def shallower(self, family: str, depth: int) -> CacheEntry | None:
        """The deepest entry of the same family cut before `depth` (deeper cuts are computed from it)."""
        candidates = [e for e in self.entries()
                      if e.meta.get("family") == family and isinstance(e.meta.get("depth"), int)
                      and 1 < e.meta["depth"] < depth]
        return max(candidates, key=lambda e: e.meta["depth"]) if candidates else None


class CacheFull(Exception):
    """A feature set is larger than the cache's size limit."""

    def __init__(self, needed: int, limit: int) -> None:
        super().__init__(f"the features would take {needed / 1024**3:.2f} GiB, above the cache limit of "
                         f"{limit / 1024**3:.2f} GiB")
        self.needed = needed
        self.limit = limit
