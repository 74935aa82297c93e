"""The first screen's orientation and the sidebar's facts (dataset, runs, where jobs run, cache) in words."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from carviz.core.jobs.status import Status
from carviz.data.datasets import IMAGE_EXTENSIONS
from carviz.views.formatting import format_size

# The loop in the order a first visit takes it: (page file, link label, what to do there).
START_STEPS: tuple[tuple[str, str, str], ...] = (
    ("app_pages/data.py", "Data", "look at the images: classes, counts, samples, a health report. The demo "
                                  "dataset (four kinds of drawn vehicles) is ready."),
    ("app_pages/layers.py", "Layers", "browse a backbone's layers and pick where training starts (the freeze "
                                      "point)."),
    ("app_pages/train.py", "Train", "launch a run. The default preset, **demo quick**, trains a small CNN on the "
                                    "demo data in about a minute on a CPU, with nothing to download."),
    ("app_pages/compare.py", "Compare", "overlay the runs' curves and compare their accuracy."),
    ("app_pages/predict.py", "Predict", "classify new images with a trained run, or evaluate it."),
)
MORE_PAGES: tuple[tuple[str, str, str], ...] = (
    ("app_pages/sweeps.py", "Sweeps", "Later: grids of runs (learning rates × freeze points × seeds), compared."),
    ("app_pages/runs.py", "Runs", "Every run: rename, tag, archive or delete."),
)
START_INTRO = ("carviz fine-tunes ImageNet backbones on your own image classes and keeps every experiment. "
               "Work through the pages in this order:")


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def quick_counts(root: Path) -> tuple[int, int]:
    """(class folders, image files) of a dataset, by name only (nothing decoded; hidden folders such as the trash
    left out): cheap enough for every page. (0, 0) for a missing folder."""
    classes = images = 0
    try:
        entries = list(os.scandir(root))
    except OSError:
        return 0, 0
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        classes += 1
        try:
            images += sum(1 for child in os.scandir(entry.path) if _is_image(child.name))
        except OSError:
            continue
    return classes, images


def dataset_line(name: str, classes: int, images: int) -> str:
    """E.g. "Dataset **demo** · 4 classes · 240 images"."""
    return (f"Dataset **{name}** · {classes} class{'' if classes == 1 else 'es'} · "
            f"{images:,} image{'' if images == 1 else 's'}")


def run_counts(statuses: Iterable[str]) -> dict[str, int]:
    """How many runs are running, queued and finished (any terminal status: succeeded, failed, stopped, …)."""
    counts = {"running": 0, "queued": 0, "finished": 0}
    for status in statuses:
        if status == Status.RUNNING.value:
            counts["running"] += 1
        elif status == Status.QUEUED.value:
            counts["queued"] += 1
        else:
            counts["finished"] += 1
    return counts


def runs_line(counts: Mapping[str, int]) -> str:
    """E.g. "Runs · 1 running · 2 queued · 5 finished"; "Runs · none yet" when there are none."""
    if not any(counts.values()):
        return "Runs · none yet"
    return "Runs · " + " · ".join(f"{counts.get(kind, 0)} {kind}" for kind in ("running", "queued", "finished"))


def jobs_line(backend: str, ray_address: str, slots: int | None) -> str:
    """Where jobs run unless the user picks: "Jobs run locally · 1 at a time" or "Jobs run on Ray (http://…)"."""
    if backend == "ray":
        return f"Jobs run on Ray ({ray_address or 'no cluster address set'})"
    line = "Jobs run locally" + (f" · {slots} at a time" if slots else "")
    if ray_address:
        line += " (Ray offered when launching)"
    return line


def cache_line(size_bytes: int | None) -> str:
    """E.g. "Feature cache · 1.2 GiB"; "Feature cache · empty"."""
    if not size_bytes:
        return "Feature cache · empty"
    return f"Feature cache · {format_size(size_bytes)}"
