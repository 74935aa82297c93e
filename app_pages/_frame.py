"""The frame every page shares: the sidebar's facts, and the landing page's "Start here" with links in order."""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from carviz.core import jobs, settings
from carviz.core.store import list_runs
from app_pages._keys import TRAIN_FORM
from carviz.views.overview import (
    MORE_PAGES,
    START_INTRO,
    START_STEPS,
    cache_line,
    dataset_line,
    jobs_line,
    quick_counts,
    run_counts,
    runs_line,
)

FRAME_PAGES = "frame_pages"  # set by dashboard.py each run: the page files st.navigation serves
DEFAULT_DATASET = "demo"
FACTS_TTL = 3  # seconds: the sidebar renders on every rerun of every page; its facts may lag this much


def _mtime_ns(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


@st.cache_data(ttl=FACTS_TTL, show_spinner=False, max_entries=8)
def _dataset_counts(root: str, signature: int) -> tuple[int, int]:
    return quick_counts(Path(root))


@st.cache_data(ttl=FACTS_TTL, show_spinner=False, max_entries=8)
def _run_statuses(runs_root: str, signature: int) -> list[str]:
    return [run.status().value for run in list_runs(Path(runs_root))]


@st.cache_data(ttl=60, show_spinner=False, max_entries=8)
def _slots(configured: str) -> int | None:
    from carviz.core.jobs.slots import slot_count  # nvidia-smi at most once a minute

    try:
        return slot_count()
    except ValueError:
        return None


@st.cache_data(ttl=30, show_spinner=False, max_entries=8)
def _cache_bytes(cache_root: str) -> int | None:
    from carviz.core import feature_cache  # numpy and the file layout only: no TensorFlow

    try:
        return feature_cache.default_cache().size_bytes()
    except (OSError, ValueError):
        return None


def shown_dataset(names: list[str]) -> str | None:
    """The dataset the sidebar describes: the one browsed on Data, else the Train form's, else demo, else the first."""
    for candidate in (st.session_state.get("data_dataset"), st.session_state.get("tf_dataset"),
                      (st.session_state.get(TRAIN_FORM) or {}).get("tf_dataset"), DEFAULT_DATASET):
        if candidate in names:
            return candidate
    return names[0] if names else None


def sidebar_facts(dataset_names: list[str]) -> None:
    """Dataset in use with its counts, runs by state, where jobs run, the feature cache's size; folders on hover."""
    name = shown_dataset(dataset_names)
    if name is None:
        st.caption(f"No dataset yet (put class folders in `{settings.data_dir()}`)")
    else:
        root = settings.data_dir() / name
        classes, images = _dataset_counts(str(root), _mtime_ns(root))
        st.caption(dataset_line(name, classes, images), help=f"Datasets are the folders in `{settings.data_dir()}`")
    runs_root = settings.runs_dir()
    try:
        statuses = _run_statuses(str(runs_root), _mtime_ns(runs_root))
    except OSError as exc:
        st.caption(f"Runs · cannot be read ({exc})")
    else:
        st.caption(runs_line(run_counts(statuses)), help=f"Runs are kept in `{runs_root}`")
    try:
        backend = jobs.default_backend()
    except ValueError as exc:
        backend = f"? ({exc})"
    st.caption(jobs_line(backend, settings.ray_address(), _slots(os.environ.get("CARVIZ_SLOTS", ""))))
    st.caption(cache_line(_cache_bytes(str(settings.cache_dir()))), help=f"In `{settings.cache_dir()}`")


def _has_runs() -> bool:
    runs_root = settings.runs_dir()
    try:
        return bool(_run_statuses(str(runs_root), _mtime_ns(runs_root)))
    except OSError:
        return False


def start_here() -> None:
    """What carviz does and the pages in the order a first visit takes them, as links; open until a run exists."""
    pages = st.session_state.get(FRAME_PAGES)
    if not pages:  # the page runs alone (tests): there is no navigation to link to
        return
    with st.expander("**Start here**", expanded=not _has_runs(), icon=":material/explore:"):
        st.markdown(START_INTRO)
        for number, (path, label, text) in enumerate(START_STEPS, start=1):
            if path not in pages:
                continue
            left, right = st.columns([1, 5], vertical_alignment="center")
            left.page_link(path, label=f"{number}. {label}")
            right.markdown(text)
        for path, label, text in MORE_PAGES:  # off the main path: quieter
            if path in pages:
                left, right = st.columns([1, 5], vertical_alignment="center")
                left.page_link(path, label=label)
                right.caption(text)
