"""What the Data page's 'Check this dataset' shows of an audit: its headline, and what was done about each finding
(an audited image's latest action: moved, trashed, restored, and where it is now)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Done:
    """The latest action on an audited image: what, where the image is now, and how to take it back."""

    action: str  # "move", "trash" or "restore"
    now: str  # its place in the dataset now ("class/file", or ".trash/class/file")
    undo: str  # "move back", "restore" or "" (a restored image is where it was)


def actions_by_image(actions: Sequence[Mapping[str, Any]]) -> dict[str, Done]:
    """Each audited image's latest action, keyed by its path in the audit; an image acted on again under its new
    name (moved back, restored) keeps its audited path as key."""
    origin: dict[str, str] = {}  # a place an image was moved to -> the path it was audited under
    latest: dict[str, Done] = {}
    for row in actions:
        image, now, action = row.get("image"), row.get("now"), row.get("action")
        if not isinstance(image, str) or not isinstance(now, str) or action not in ("move", "trash", "restore"):
            continue
        audited = origin.get(image, image)
        if action == "trash":
            origin[f".trash/{now}" if not now.startswith(".trash/") else now] = audited
            now = now if now.startswith(".trash/") else f".trash/{now}"
        origin[now] = audited
        undo = {"move": "move back", "trash": "restore"}.get(action, "")
        if action == "move" and now.split("/", 1)[0] == audited.split("/", 1)[0]:
            undo = ""  # moved back where it was audited
        latest[audited] = Done(action, now, undo)
    return latest


def headline(result: Mapping[str, Any]) -> str:
    """"946 images: 31 suspected label errors · 4 near-duplicate pairs (2 across the split) · 3 outliers"."""
    counts = result.get("counts") or {}
    leaks = counts.get("leaking_pairs", 0)
    return (f"{result.get('images', 0)} images: {counts.get('suspected_label_errors', 0)} suspected label errors · "
            f"{counts.get('near_duplicate_pairs', 0)} near-duplicate pairs"
            + (f" ({leaks} across the split: leakage)" if leaks else "")
            + f" · {counts.get('outliers', 0)} outliers")


def described(done: Done | None) -> str:
    """What was done, for a caption: "moved to suv/x.jpg", "in the trash", "restored"; "" when nothing."""
    if done is None:
        return ""
    return {"move": f"moved to {done.now}", "trash": "in the trash", "restore": "restored"}[done.action]
