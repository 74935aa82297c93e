"""The Runs page's table: summarize() rows filtered, paged and shaped into display columns."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from carviz.core.store import display_status
from carviz.views.formatting import format_time, is_number

PAGE_SIZE = 25
COLUMNS = ("name", "status", "dataset", "backbone", "learning_rate", "freeze", "epochs", "kept_val_accuracy",
           "test_accuracy", "tags", "created", "id")


def page_count(n_rows: int, page_size: int = PAGE_SIZE) -> int:
    return max(1, math.ceil(n_rows / page_size))


def page_of(rows: Sequence[dict[str, Any]], page: int, page_size: int = PAGE_SIZE) -> list[dict[str, Any]]:
    """Rows of page 1..page_count (a page past the end clamps to the last)."""
    page = min(max(1, page), page_count(len(rows), page_size))
    return list(rows[(page - 1) * page_size: page * page_size])


def display_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One table row per run: the name (with "(archived)"), status word, config essentials, epochs done of
    planned, the kept model's val and test accuracy (in percent: a "%.1f %%" column reads as format_accuracy
    writes it and still sorts as a number), tags, created time."""
    shaped = []
    for row in rows:
        planned = row.get("epochs")
        shaped.append({
            "name": (row.get("name") or "(unnamed)") + (" (archived)" if row.get("archived") else ""),
            "status": display_status(row),
            "dataset": row.get("dataset"),
            "backbone": row.get("backbone"),
            "learning_rate": row.get("learning_rate"),
            "freeze": None if row.get("freeze") is None else str(row.get("freeze")),
            "epochs": f"{row.get('epochs_done', 0)}/{planned if planned is not None else '?'}",
            "kept_val_accuracy": _percent(row.get("kept_val_accuracy")),
            "test_accuracy": _percent(row.get("test_accuracy")),
            "tags": ", ".join(row.get("tags") or []),
            "created": format_time(row.get("created_at")),
            "id": row.get("id"),
        })
    return shaped


def _percent(value: Any) -> float | None:
    return value * 100 if is_number(value) else None


def choices(rows: Sequence[dict[str, Any]], key: str) -> list[str]:
    """The distinct values of a field (tags: every tag) for a filter's options, sorted."""
    if key == "tags":
        return sorted({tag for row in rows for tag in row.get("tags") or []})
    return sorted({str(row[key]) for row in rows if row.get(key) is not None})
