"""Helpers shared by the pages: cached dataset scans and layer listings, dataset names, job formatting."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, Callable

import streamlit as st

from carviz.core import settings
from carviz.core.config import Augmentation, ConfigError, TrainConfig
from carviz.data.datasets import DatasetScan, generate_demo_dataset, scan_dataset
from carviz.views.layer_select import parse_freeze

DEMO_DATASET = "demo"
STATUS_ICONS = {  # Material icons: they render everywhere (emoji need a font)
    "queued": ":material/schedule:",
    "running": ":material/play_circle:",
    "succeeded": ":material/check_circle:",
    "failed": ":material/error:",
    "stopped": ":material/stop_circle:",
    "lost": ":material/warning:",
    "pruned": ":material/content_cut:",
    "broken": ":material/report:",  # a damaged record (store.BROKEN): shown instead of the job's status
}


@st.cache_resource(show_spinner="Drawing the demo dataset…")
def ensure_demo_dataset(data_root: str) -> str:
    """Make data/demo once per process when it is missing or empty, so the first screen is never empty."""
    demo = Path(data_root) / DEMO_DATASET
    if not demo.is_dir() or not any(demo.iterdir()):
        generate_demo_dataset(demo)
    return str(demo)


def dataset_names() -> list[str]:
    """Dataset folders under data/ (sorted, hidden ones skipped); [] when data/ is missing."""
    root = settings.data_dir()
    if not root.is_dir():
        return []
    return sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith("."))


def _folder_signature(root: Path) -> tuple:
    """Cheap change detector for a dataset folder: each class folder's name, mtime and entry count."""
    signature = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.is_dir():
            stat = entry.stat()
            signature.append((entry.name, stat.st_mtime_ns, len(os.listdir(entry.path))))
    return tuple(signature)


@st.cache_data(show_spinner="Checking images…", max_entries=16)
def _cached_scan(root: str, signature: tuple) -> DatasetScan:
    return scan_dataset(root)


def scan(root: Path) -> DatasetScan:
    """scan_dataset, cached until a class folder changes."""
    return _cached_scan(str(root), _folder_signature(root))


@st.cache_data(show_spinner="Building the backbone to list its layers…", max_entries=16)
def layers_of(backbone: str, image_size: int, alpha: float) -> list:
    from carviz.ml.backbones import list_layers  # imports keras: only when the Layers page needs it

    return list_layers(backbone, image_size, alpha)


def where_ran(state: Any, info: dict[str, Any]) -> str:
    """Where a run ran (or runs) and in what precision, e.g. "ray · node-3 · GPU 0 (NVIDIA H200) · mixed_float16"."""
    device = info.get("device") if isinstance(info.get("device"), dict) else {}
    parts = [str(getattr(state, "backend", None) or device.get("backend") or "local")]
    node = device.get("node") or getattr(state, "host", None)
    if node:
        parts.append(str(node))
    if device.get("gpus") and isinstance(device["gpus"], list):
        visible = device.get("cuda_visible_devices")
        parts.append(f"GPU {visible} ({', '.join(map(str, device['gpus']))})" if visible else
                     ", ".join(map(str, device["gpus"])))
    elif device.get("kind") == "cpu":
        parts.append("CPU")
    precision = info.get("precision") if isinstance(info.get("precision"), dict) else {}
    if isinstance(precision.get("used"), str):  # what "auto" became, with its reason in run.json
        parts.append(precision["used"])
    return " · ".join(parts)


def status_label(status: str) -> str:
    return f"{STATUS_ICONS.get(status, '')} {status}".strip()


def number(value: Any) -> float | int | None:
    """value when it is a finite number (not a bool), else None: record fields are read, never trusted."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return value


def progress_fraction(progress: dict[str, Any] | None, status: str, epochs_done: int, epochs: Any) -> float:
    """Share of the job done, 0..1: epochs finished plus the current epoch's steps (wrong-typed fields ignored)."""
    if status == "succeeded":
        return 1.0
    epochs = max(1, int(number(epochs) or 1))
    fraction = epochs_done / epochs
    if progress and progress.get("phase") == "training":
        epoch = number(progress.get("epoch")) or 0
        step = number(progress.get("step")) or 0
        steps = number(progress.get("steps_per_epoch")) or 0
        if epoch and steps > 0:
            fraction = max(fraction, ((epoch - 1) + min(step / steps, 1.0)) / epochs)
    return max(0.0, min(1.0, fraction))


def format_metric(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if number(value) is not None else "–"


# ---------------------------------------------------------------- the Train form <-> TrainConfig

WEIGHT_CHOICES = ("imagenet", "none", "file")


def config_to_form(config: TrainConfig) -> dict[str, Any]:
    """The Train form's widget values (keys tf_*) for a config."""
    weights_choice = config.weights if config.weights in ("imagenet", "none") else "file"
    aug = config.augmentation
    return {
        "tf_name": config.name,
        "tf_dataset": config.dataset,
        "tf_backbone": config.backbone,
        "tf_alpha": float(config.alpha),
        "tf_weights": weights_choice,
        "tf_weights_path": config.weights if weights_choice == "file" else "",
        "tf_image_size": int(config.image_size),
        "tf_head": config.head,
        "tf_dropout": float(config.dropout),
        "tf_optimizer": config.optimizer,
        "tf_learning_rate": float(config.learning_rate),
        "tf_epochs": int(config.epochs),
        "tf_batch_size": int(config.batch_size),
        "tf_freeze": str(config.freeze),
        "tf_freeze_batchnorm": bool(config.freeze_batchnorm),
        "tf_train_batchnorm": bool(config.train_batchnorm),
        "tf_aug_enabled": bool(aug.enabled),
        "tf_aug_rotation": float(aug.rotation),
        "tf_aug_width_shift": float(aug.width_shift),
        "tf_aug_height_shift": float(aug.height_shift),
        "tf_aug_zoom": float(aug.zoom),
        "tf_aug_flip": bool(aug.horizontal_flip),
        "tf_aug_views": int(config.augment_views),
        "tf_validation_split": float(config.validation_split),
        "tf_seed": int(config.seed),
        "tf_split_seed": int(config.split_seed),
        "tf_test_fraction": float(config.test_fraction),
        "tf_patience": int(config.early_stopping_patience),
        "tf_precision": config.precision,
        "tf_feature_cache": bool(config.feature_cache),
        "tf_class_weight": config.class_weight,
        "tf_init_from_run": config.init_from_run,  # the "Start from a finished run" box, above the form
    }


def form_to_config(values: dict[str, Any], base: TrainConfig | None = None) -> TrainConfig:
    """A TrainConfig from the form's values; ConfigError with a clear message when one is wrong."""
    base = base or TrainConfig()
    weights = values["tf_weights"]
    if weights == "file":
        weights = str(values.get("tf_weights_path") or "").strip()
        if not weights:
            raise ConfigError("weights: give the path of a weights file, or choose imagenet / none")
        if not Path(weights).expanduser().is_file():
            raise ConfigError(f"weights file {weights!r} does not exist")
    augmentation = Augmentation(
        enabled=bool(values["tf_aug_enabled"]),
        rotation=float(values["tf_aug_rotation"]),
        width_shift=float(values["tf_aug_width_shift"]),
        height_shift=float(values["tf_aug_height_shift"]),
        zoom=float(values["tf_aug_zoom"]),
        horizontal_flip=bool(values["tf_aug_flip"]),
    )
    return base.replace(
        name=str(values["tf_name"]).strip(),
        dataset=str(values["tf_dataset"] or ""),
        backbone=values["tf_backbone"],
        alpha=float(values["tf_alpha"]),
        weights=weights,
        image_size=int(values["tf_image_size"]),
        head=values["tf_head"],
        dropout=float(values["tf_dropout"]),
        optimizer=values["tf_optimizer"],
        learning_rate=float(values["tf_learning_rate"]),
        epochs=int(values["tf_epochs"]),
        batch_size=int(values["tf_batch_size"]),
        freeze=parse_freeze(values["tf_freeze"]),
        freeze_batchnorm=bool(values["tf_freeze_batchnorm"]),
        train_batchnorm=bool(values.get("tf_train_batchnorm", True)),
        augmentation=augmentation,
        augment_views=int(values.get("tf_aug_views", base.augment_views)),
        validation_split=float(values["tf_validation_split"]),
        seed=int(values["tf_seed"]),
        split_seed=int(values.get("tf_split_seed", base.split_seed)),
        test_fraction=float(values.get("tf_test_fraction", base.test_fraction)),
        early_stopping_patience=int(values["tf_patience"]),
        precision=values["tf_precision"],
        feature_cache=bool(values.get("tf_feature_cache", True)),
        class_weight=str(values.get("tf_class_weight", base.class_weight)),
        init_from_run=str(values.get("tf_init_from_run") or ""),
    )


# ---------------------------------------------------------------- Data page: collect, import, review


def refresh_scan() -> None:
    """Forget cached dataset scans (after trashing, restoring or importing images)."""
    _cached_scan.clear()


@st.cache_data(max_entries=2000, show_spinner=False)
def _cached_thumbnail(path: str, mtime_ns: int, side: int) -> bytes | None:
    from carviz.data.collect import thumbnail

    return thumbnail(path, side)


def thumbnail_of(path: Path, side: int = 160) -> bytes | None:
    """A small JPEG of an image (cached per file version); None when it does not decode."""
    try:
        mtime_ns = path.stat().st_mtime_ns
    except OSError:
        return None
    return _cached_thumbnail(str(path), mtime_ns, side)


RELAUNCH_GUARD_SECONDS = 10.0  # the same config submitted again this soon is a double click


def launch_once(state_key: str, fingerprint: str, launch: Callable[[], str]) -> tuple[str, bool]:
    """Call launch() unless the same fingerprint was launched moments ago; returns (id, launched now)."""
    last = st.session_state.get(state_key)
    if last and last[0] == fingerprint and time.monotonic() - last[1] < RELAUNCH_GUARD_SECONDS:
        return last[2], False
    launched_id = launch()
    st.session_state[state_key] = (fingerprint, time.monotonic(), launched_id)
    return launched_id, True
