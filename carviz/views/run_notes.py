"""One-line notes about a run's history for cards and `show`: how its last resume treated a changed dataset."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from carviz.core.run_info import RunInfo
from carviz.views.formatting import format_left


def resume_line(info: RunInfo) -> str | None:
    """What the last resume found, e.g. "Resumed on the split recorded at launch: 1 image gone (skipped), 3 new
    images not added."; None when the run was never resumed or the dataset was unchanged."""
    resumes = info.resumes
    if not resumes:
        return None
    last = resumes[-1]
    gone, new = last.get("gone") or 0, last.get("new_ignored") or 0
    if not (last.get("dataset_changed") or last.get("classes_changed")):
        return None
    parts = []
    if last.get("classes_changed"):
        parts.append("the class list changed")
    if isinstance(gone, int) and gone:
        parts.append(f"{gone} image{'s' if gone != 1 else ''} gone (skipped)")
    if isinstance(new, int) and new:
        parts.append(f"{new} new image{'s' if new != 1 else ''} not added")
    detail = ", ".join(parts) or "the dataset's content changed"
    if last.get("accepted"):
        return f"Resumed on the split recorded at launch: {detail}."
    return f"Resume refused: since launch {detail}. Resume with 'accept dataset changes' to continue."


def progress_line(status: str, progress: Mapping[str, Any], epochs_done: int, epochs: int) -> str:
    """The progress bar's words, agreeing with the run's state: a finished, stopped or lost run says so (not its last
    progress phase); a running one says its phase, epoch and, mid-epoch, its step."""
    if status not in ("queued", "running"):
        return f"{status} · {epochs_done}/{epochs} epochs"
    phase = progress.get("phase") if isinstance(progress.get("phase"), str) else None
    if phase is None:
        return "waiting for a slot" if status == "queued" else "starting"
    if phase == "training":
        epoch = progress.get("epoch") if isinstance(progress.get("epoch"), int) else epochs_done + 1
        text = f"training · epoch {epoch}/{epochs}"
        step, steps = progress.get("step"), progress.get("steps_per_epoch")
        if isinstance(step, int) and isinstance(steps, int) and 0 < step < steps:
            text += f" · step {step}/{steps}"
        return text
    if phase == "computing features" and isinstance(progress.get("step"), int):
        left = format_left(progress.get("eta_seconds"))
        return f"computing features · batch {progress['step']}/{progress.get('steps_per_epoch') or '?'}" + \
            (f" · {left}" if left else "")
    return phase


def live_value(progress: Mapping[str, Any], last_epoch: Mapping[str, Any], key: str) -> Any:
    """A running run's current `key` (loss, accuracy): the live value when there is one, else the last epoch's."""
    value = progress.get(key)
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else last_epoch.get(key)
