"""Data page helpers: the import form's reset, rejected uploads, undoing an import, and trash thumbnails."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from carviz.data.collect import upload_problem
from carviz.data.import_log import list_imports, undo_import
from carviz.data.importer import ImportReport, TrashEntry
from carviz.views.formatting import format_time
from app_pages._common import refresh_scan, thumbnail_of

ROUND = "imp_form_round"  # bumped after each import: the uploader gets a new key, so it is empty again
REPORT = "imp_report"  # (source, dataset name, ImportReport) of the last import, shown until the next
UNDO_MESSAGE = "imp_undo_message"
RECENT_SHOWN = 5
ss = st.session_state


def zip_key() -> str:
    """The uploader's key this round ("imp_zip" first, then "imp_zip_1", …)."""
    n = ss.get(ROUND, 0)
    return "imp_zip" if not n else f"imp_zip_{n}"


def reset_import_form() -> None:
    """Empty the uploader and the folder box after an import (call from a callback), so that a second click has
    nothing to import again."""
    ss[ROUND] = ss.get(ROUND, 0) + 1
    ss["imp_folder"] = ""


def upload_type_error(upload: Any) -> bool:
    """Say plainly why an uploaded file cannot be imported (its name, the accepted types); True when it cannot."""
    problem = upload_problem(upload.name) if upload is not None else None
    if problem:
        st.error(problem)
    return problem is not None


def _undo(root: Path, import_id: str) -> None:
    try:
        report = undo_import(root, import_id)
    except (LookupError, ValueError, OSError) as exc:
        ss[UNDO_MESSAGE] = ("warning", f"Nothing undone: {exc}")
        return
    shown = ss.get(REPORT)
    if shown and shown[2].import_id == import_id:
        ss[REPORT] = None  # its report no longer describes the dataset
    refresh_scan()
    ss[UNDO_MESSAGE] = ("warning" if report.kept else "success", report.summary())


def import_result(report: ImportReport, root: Path) -> None:
    """The last import's skipped files and its Undo button."""
    if report.skipped:
        with st.expander(f"{len(report.skipped)} already present, skipped (same content as an image of the dataset)"):
            rows = [(member, why.removeprefix("already present as ")) for member, why in report.skipped]
            st.dataframe(pd.DataFrame(rows, columns=["member", "already present as"]), hide_index=True,
                         key="imp_skipped")
    if report.import_id:
        st.button("Undo this import", key="imp_undo", on_click=_undo, args=(root, report.import_id),
                  help="Removes the images this import added (an image changed or moved since is left)")


def recent_imports(root: Path | None) -> None:
    """The outcome of an undo, and the dataset's latest imports, each with Undo while it is not undone."""
    kind, text = ss.pop(UNDO_MESSAGE, (None, None))
    if kind:
        getattr(st, kind)(text)
    if root is None or not root.is_dir():
        return
    records = list_imports(root)[:RECENT_SHOWN]
    if not records:
        return
    with st.expander(f"Latest imports into `{root.name}`"):
        for record in records:
            left, right = st.columns([5, 1])
            left.caption(f"{format_time(record.created_at)} · `{record.source}` · {len(record.files)} image(s) "
                         f"added, {record.skipped} already present"
                         + (f" · undone {format_time(record.undone_at)}" if record.undone_at else ""))
            if not record.undone_at:
                right.button("Undo", key=f"imp_undo::{root.name}::{record.id}", on_click=_undo,
                             args=(root, record.id))


def trash_grid(entries: Sequence[TrashEntry], key_of: Callable[[TrashEntry], str], columns: int) -> None:
    """The trash as thumbnails, each with its restore checkbox (labelled with where it came from and when)."""
    for start in range(0, len(entries), columns):
        for column, entry in zip(st.columns(columns), entries[start:start + columns]):
            with column:
                thumb = thumbnail_of(entry.path)
                if thumb is None:
                    st.caption(":material/broken_image: does not decode")
                else:
                    st.image(thumb, width="stretch")
                when = f" · {format_time(entry.trashed_at)}" if entry.trashed_at else ""
                st.checkbox(f"{entry.original}{when}", key=key_of(entry))
