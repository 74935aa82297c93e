"""The frozen-feature cache in words and rows, and changes to its settings: shared by the pages and the CLI."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from carviz.core import feature_cache
from carviz.core.run_info import RunInfo
from carviz.core.config import FREEZE_ALL, TrainConfig
from carviz.views.formatting import MIB, format_size  # noqa: F401 (format_size stays importable from here)

USED_NOTE = ("Feature cache on: the frozen layers run once per image, and later epochs and runs (same backbone, "
             "weights, size, head and data) train on their cached output.")
AUGMENTED_NOTE = ("Feature cache on with {views} augmented views: each training image is augmented {views} times and "
                  "its frozen layers' output cached; epoch e trains on view (e-1) mod {views}, validation on "
                  "unaugmented features.")


def totals_text(entries: Sequence[feature_cache.CacheEntry], max_bytes: int) -> str:
    """E.g. '1.2 GiB of 20 GiB, 5 feature sets'."""
    count = len(entries)
    return (f"{format_size(sum(e.bytes for e in entries))} of {format_size(max_bytes)}, "
            f"{count} feature set{'' if count == 1 else 's'}")


def entry_rows(entries: Iterable[feature_cache.CacheEntry]) -> list[dict[str, Any]]:
    """One display row per cached feature set, most recently used first (as entries() orders them)."""
    rows = []
    for entry in entries:
        meta = entry.meta
        rows.append({
            "layer": meta.get("layer"),
            "augmented view": meta.get("view"),  # None: the plain (unaugmented) features
            "backbone": meta.get("backbone"),
            "alpha": meta.get("alpha"),
            "image size": meta.get("image_size"),
            "head": meta.get("head"),
            "precision": meta.get("precision"),
            "images": meta.get("images"),
            "size MiB": round(entry.bytes / MIB, 1),
            "stored dtype": meta.get("dtype"),
            "last used": dt.datetime.fromtimestamp(entry.last_used),
            "key": entry.key[:12],
        })
    return rows


def change_settings(max_gb: float | None = None,
                    dtype: str | None = None) -> tuple[feature_cache.CacheSettings, list[str]]:
    """Save a new size limit and/or storage dtype (ValueError, before any change, when one is bad), then evict
    down to the limit; returns the saved settings and the keys evicted."""
    current = feature_cache.load_settings()
    new = feature_cache.CacheSettings(max_gb=current.max_gb if max_gb is None else float(max_gb),
                                      dtype=current.dtype if dtype is None else dtype)
    feature_cache.save_settings(new)
    removed = feature_cache.FeatureCache(feature_cache.cache_root(), new.max_bytes).evict(new.max_bytes)
    return new, removed


def clear_cache() -> int:
    """Remove every cached feature set; how many were removed."""
    return len(feature_cache.default_cache().evict(0))


def config_note(config: TrainConfig) -> str:
    """One line for a config: whether its run will train on cached features, and if not, why."""
    reason = feature_cache.unavailable_reason(config)
    if reason is not None:
        return f"Feature cache not used: {reason}"
    return AUGMENTED_NOTE.format(views=config.augment_views) if config.augmentation.enabled else USED_NOTE


def sweep_note(base: TrainConfig, freeze_points: Sequence[int | str]) -> str:
    """config_note for a sweep, whose runs differ in freeze point; no points (made by a rule): judge the rest."""
    if not freeze_points:
        return config_note(base.replace(freeze=FREEZE_ALL))
    by_reason: dict[str | None, list[str]] = {}
    for point in freeze_points:
        by_reason.setdefault(feature_cache.unavailable_reason(base.replace(freeze=point)), []).append(str(point))
    if len(by_reason) == 1:
        return config_note(base.replace(freeze=freeze_points[0]))
    views = f" (with {base.augment_views} augmented views)" if base.augmentation.enabled else ""
    parts = [f"used by the runs with freeze {', '.join(by_reason.pop(None))}{views}"] if None in by_reason else []
    parts += [f"not used with freeze {', '.join(points)}: {reason}" for reason, points in by_reason.items()]
    return "Feature cache " + "; ".join(parts)


def run_line(info: RunInfo) -> str | None:
    """How a run trained, from its run.json: on cached features (which, how obtained, how long) or on images
    (why); None before the run has decided (or for runs older than the cache)."""
    record = info.feature_cache
    if not record:
        return None
    if not record.get("used"):
        return f"Trained on images: {record.get('reason') or 'no reason recorded'}"
    seconds = record.get("seconds")
    timing = f", {seconds:.1f} s" if isinstance(seconds, (int, float)) else ""
    if isinstance(record.get("engine"), str):  # which engine computed them, when this run did
        timing = f", by {record['engine']}{timing}"
    views = record.get("augmented_views")
    if isinstance(views, int) and not isinstance(views, bool) and views > 0:
        return (f"Trained on cached {record.get('layer') or '?'} features with {views} augmented views, one per "
                f"epoch in turn (features: {record.get('source') or '?'}; views: {record.get('views_source') or '?'}"
                f"{timing})")
    return f"Trained on cached {record.get('layer') or '?'} features ({record.get('source') or '?'}{timing})"


# An upper bound on a cut's values per input pixel (the largest maps of the backbones here hold about 16.6 per pixel:
# MobileNet's 112 x 112 x 64 and ResNet50/DenseNet121's 56 x 56 x 256 at 224 px); below it a cut surely fits.
MAX_CUT_VALUES_PER_PIXEL = 32


def _shape_numbers(shape: str) -> list[int]:
    """'(None, 14, 14, 512)' -> [14, 14, 512]: a layer listing's output shape without its batch axis."""
    return [int(part) for part in shape.strip("()[] ").replace(" ", "").split(",")[1:] if part.isdigit()]


def cut_size(config: TrainConfig, layers: Sequence[Any], images: int, train_images: int,
             dtype: str) -> tuple[str, int] | None:
    """(the layer whose output a run of this config caches, the bytes the cache needs for it: every image once,
    plus the augmented views of the training images), from the backbone's layer listing; None when nothing is
    cached or the shape is unknown."""
    from carviz.ml.features import cut_point_for

    if feature_cache.unavailable_reason(config) is not None or not layers:
        return None
    freeze_index = config.freeze_index(len(layers))
    if freeze_index > len(layers) and config.head != "seed":  # the pooled vector: one value per channel
        name, numbers = "head_pool", _shape_numbers(layers[-1].output_shape)[-1:]
    else:
        cut = cut_point_for(list(layers), freeze_index)
        name, numbers = layers[cut - 1].name, _shape_numbers(layers[cut - 1].output_shape)
    if not numbers:
        return None
    rows = images + (config.augment_views * train_images if config.augmentation.enabled else 0)
    row_bytes = 4 if dtype == "float32" else 2
    for number in numbers:
        row_bytes *= number
    return name, rows * row_bytes


def cut_fit_warning(config: TrainConfig, layers: Sequence[Any], images: int, train_images: int,
                    settings: feature_cache.CacheSettings, memory_budget: int) -> str | None:
    """What to know before launching when the cut is large: it will not fit the cache limit (the run trains on
    images), or not the memory budget (epochs read it from disk in shuffled blocks); None when it fits both."""
    found = cut_size(config, layers, images, train_images, settings.dtype)
    if found is None:
        return None
    layer, needed = found
    what = f"The cached output of {layer} for {images:,} images needs {format_size(needed)}"
    if needed > settings.max_bytes:
        return (f"{what}, more than the cache limit ({format_size(settings.max_bytes)}): this run would train on "
                "images, much more slowly. Raise the limit in the feature-cache panel, store float16, or freeze "
                "later.")
    if needed > memory_budget:
        return (f"{what}, more than half the machine's (or its container's) free memory "
                f"({format_size(memory_budget)}): epochs will "
                "read it from disk in shuffled blocks, so they are bound by the disk's speed.")
    return None


def launch_cut_warning(config: TrainConfig, images: int, list_layers: Callable[[], Sequence[Any]],
                       settings: feature_cache.CacheSettings, memory_budget: int) -> str | None:
    """cut_fit_warning for a config about to launch on `images` images; the backbone's layers are listed (Keras
    builds it) only when the cut could be too large for the cache limit or the memory budget."""
    if feature_cache.unavailable_reason(config) is not None:
        return None
    views = 1 + (config.augment_views if config.augmentation.enabled else 0)
    if images * views * config.image_size ** 2 * MAX_CUT_VALUES_PER_PIXEL * 4 <= min(settings.max_bytes,
                                                                                     memory_budget):
        return None  # fits whatever the cut
    train_images = int(images * (1 - config.validation_split - config.test_fraction))
    return cut_fit_warning(config, list_layers(), images, train_images, settings, memory_budget)
