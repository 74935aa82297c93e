"""Helpers shared by the pages: cached dataset scans and layer listings, dataset names, job formatting."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import streamlit as st

from carviz.core import settings
from carviz.data.datasets import DatasetScan, generate_demo_dataset, scan_dataset

DEMO_DATASET = "demo"


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
