"""One-line notes about a run's history for cards and `show`: how its last resume treated a changed dataset."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def resume_line(info: Mapping[str, Any]) -> str | None:
    """What the last resume found, e.g. "Resumed on the split recorded at launch: 1 image gone (skipped), 3 new
    images not added."; None when the run was never resumed or the dataset was unchanged."""
    resumes = info.get("resumes")
    if not isinstance(resumes, list) or not resumes or not isinstance(resumes[-1], Mapping):
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
