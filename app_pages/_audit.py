"""Data page, Check tab: audit the dataset (a background job) and act on what it finds: move an image to the class
it belongs to, trash it, or take either back. Nothing is deleted; every action is recorded with the audit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from carviz.core.config import BACKBONES as CONFIG_BACKBONES
from carviz.core.jobs import Status, derive_state
from carviz.data import audit_record
from carviz.views.audit_view import Done, actions_by_image, described, headline
from carviz.views.formatting import STATUS_ICONS, format_accuracy, format_left, format_time
from app_pages._common import refresh_scan, thumbnail_of

SHOWN = 12  # findings of each kind shown at first
COLUMNS = 4
BACKBONES = tuple(name for name in CONFIG_BACKBONES if name != "small_cnn")  # ImageNet-trained ones
MESSAGE = "audit_message"
ss = st.session_state


def _start(root: Path) -> None:
    try:
        audit_record.launch_audit(root, ss.get("audit_backbone", "mobilenet"))
    except (OSError, ValueError) as exc:
        ss[MESSAGE] = ("error", f"Could not start the audit: {exc}")


def _act(record: audit_record.AuditRecord, kind: str, image: str, finding: str, target: str = "") -> None:
    """A finding's button: move (to target), trash, move back or restore; the scan is refreshed after."""
    try:
        if kind == "move":
            where = audit_record.move_finding(record, image, target, finding)
            ss[MESSAGE] = ("success", f"Moved {image} to {where}.")
        elif kind == "trash":
            audit_record.trash_finding(record, image, finding)
            ss[MESSAGE] = ("success", f"{image} is in the trash (Review tab, or Restore here).")
        elif kind == "restore":
            where = audit_record.restore_finding(record, image)
            ss[MESSAGE] = ("success", f"Restored {where}.")
    except (OSError, ValueError) as exc:
        ss[MESSAGE] = ("error", f"Nothing done: {exc}")
    refresh_scan()


def _image(root: Path, relative: str, caption: str) -> None:
    thumb = thumbnail_of(root / relative)
    if thumb is None:
        st.caption(f":material/hide_image: {relative} (no longer there)")
    else:
        st.image(thumb, caption=caption, width="stretch")


def _actions(record: audit_record.AuditRecord, image: str, done: Done | None, finding: str, key: str,
             move_to: str = "") -> None:
    """The buttons under a finding: what can be done now, or how to take back what was done."""
    if done is not None and done.undo:
        st.caption(described(done))
        if done.undo == "move back":
            st.button("Move back", key=f"{key}_back", on_click=_act,
                      args=(record, "move", done.now, "undo", image.split("/", 1)[0]))
        else:
            st.button("Restore", key=f"{key}_restore", on_click=_act, args=(record, "restore", done.now, "undo"))
        return
    if done is not None:
        st.caption(described(done))
    if move_to:
        st.button(f"Move to {move_to}", key=f"{key}_move", on_click=_act, args=(record, "move", image, finding,
                                                                                move_to))
    st.button("Trash", key=f"{key}_trash", on_click=_act, args=(record, "trash", image, finding))


def _grid(items: list[Any], draw: Any) -> None:
    for start in range(0, len(items), COLUMNS):
        for column, item in zip(st.columns(COLUMNS), items[start:start + COLUMNS]):
            with column:
                draw(item)


@st.fragment(run_every=2)
def _live(record: audit_record.AuditRecord) -> None:
    """A running audit's phase and time left; the page redraws once it ends."""
    state = derive_state(record)
    if state.status not in (Status.QUEUED, Status.RUNNING):
        st.rerun()
    progress = record.progress() or {}
    done, total = progress.get("done") or 0, progress.get("total") or 0
    left = format_left(progress.get("eta_seconds"))
    st.progress(min(1.0, done / total) if total else 0.0,
                text=f"{progress.get('phase') or state.status.value}" + (f" · {done}/{total}" if total else "")
                + (f" · {left}" if left else ""))
    st.button("Stop", key="audit_stop", on_click=record.request_stop)


def audit_section(root: Path | None) -> None:
    st.caption("Finds what is wrong in the data: images whose label looks wrong, near-duplicates (and those on both "
               "sides of the train / validation / test split: leakage), outliers, and small classes. It embeds every "
               "image with an ImageNet backbone (cached, shared with the recommended sweep's classifier-only runs) "
               "and predicts each image with a classifier that never saw it.")
    if root is None:
        st.info("No dataset to check yet.")
        return
    kind, text = ss.pop(MESSAGE, (None, None))
    if kind:
        getattr(st, kind)(text)
    record = audit_record.latest_audit(root)
    state = derive_state(record) if record is not None else None
    running = state is not None and state.status in (Status.QUEUED, Status.RUNNING)
    left, right = st.columns([1, 3])
    left.selectbox("Backbone", BACKBONES, key="audit_backbone", disabled=running)
    right.button("Check this dataset", key="audit_start", type="primary", on_click=_start, args=(root,),
                 disabled=running)
    if record is None:
        return
    if running:
        _live(record)
        return
    raw = record.result()
    if raw is None:
        icon = STATUS_ICONS.get(state.status.value, "")
        st.warning(f"{icon} The last audit ({format_time(record.raw_status().get('created_at'))}) ended "
                   f"{state.status.value}" + (f": {state.error}" if state.error else "") + ".")
        return
    findings_section(root, record, raw)


def findings_section(root: Path, record: audit_record.AuditRecord, raw: dict[str, Any]) -> None:
    settings_ = raw.get("settings") or {}
    st.markdown(f"**{headline(raw)}**")
    st.caption(f"Audited {format_time(raw.get('audited_at'))} with {settings_.get('backbone')} in "
               f"{settings_.get('seconds', '?')} s; out-of-fold accuracy {format_accuracy(raw.get('accuracy'))}. "
               "Images changed since are shown as they are now.")
    done = actions_by_image(record.actions())

    st.subheader("Suspected label errors")
    issues = [row for row in raw.get("label_issues", []) if row.get("flagged")]
    limit = st.number_input("Show", 1, max(1, len(issues)), min(SHOWN, max(1, len(issues))), key="audit_issues_n") \
        if len(issues) > SHOWN else SHOWN
    if not issues:
        st.success("No image's label looks wrong.")

    def issue_card(row: dict[str, Any]) -> None:
        _image(root, done[row["path"]].now if row["path"] in done else row["path"],
               f"{row['path']}: looks like {row['looks_like']} ({row['looks_like_probability']:.0%}; "
               f"{row['given']} {row['given_probability']:.0%})")
        _actions(record, row["path"], done.get(row["path"]), "label error", f"audit_issue_{row['path']}",
                 move_to=row["looks_like"])

    _grid(issues[:int(limit)], issue_card)

    st.subheader("Near-duplicates")
    pairs = raw.get("duplicates", [])
    st.caption(f"Pairs at cosine similarity ≥ {raw.get('duplicate_threshold', 0):.3f}: the lowest similarity of an "
               "image to a resized, re-encoded copy of itself, measured on this dataset. Exact copies are set aside "
               "by the scan already (Browse → Health report).")
    if not pairs:
        st.success("No near-duplicates.")
    for index, pair in enumerate(sorted(pairs, key=lambda p: not p.get("leakage"))[:SHOWN]):
        st.markdown(f"similarity {pair['similarity']:.3f}" + (f" · **leakage: {pair['leakage']}**"
                                                               if pair.get("leakage") else ""))
        for column, image in zip(st.columns(COLUMNS), (pair["first"], pair["second"])):
            with column:
                _image(root, done[image].now if image in done else image, image)
                _actions(record, image, done.get(image), "near-duplicate", f"audit_dup_{index}_{image}")

    st.subheader("Outliers")
    outliers = raw.get("outliers", [])
    if not outliers:
        st.success("No image is far from every class.")

    def outlier_card(row: dict[str, Any]) -> None:
        _image(root, done[row["path"]].now if row["path"] in done else row["path"],
               f"{row['path']}: nearest class {row['nearest_class']} (z {row['z']})")
        _actions(record, row["path"], done.get(row["path"]), "outlier", f"audit_out_{row['path']}")

    _grid(outliers[:SHOWN], outlier_card)

    st.subheader("Classes")
    if raw.get("imbalance"):
        st.warning(raw["imbalance"])
    st.dataframe(pd.DataFrame([{"class": row["name"], "images": row["images"],
                                "out-of-fold accuracy": None if row["out_of_fold_accuracy"] is None
                                else 100 * row["out_of_fold_accuracy"]} for row in raw.get("class_health", [])]),
                 hide_index=True, key="audit_classes",
                 column_config={"out-of-fold accuracy": st.column_config.NumberColumn(format="%.0f %%")})
    actions = record.actions()
    if actions:
        with st.expander(f"What was done ({len(actions)} actions)"):
            st.dataframe(pd.DataFrame(actions), hide_index=True, key="audit_actions")
