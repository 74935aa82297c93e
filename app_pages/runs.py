"""Runs page: every run, filtered and paged; rename, tag, note, archive, delete to the trash, download the model."""

from __future__ import annotations

import hashlib

import streamlit as st

from carviz.core import trash
from carviz.core.annotations import filter_rows
from carviz.core.store import Run, Status, Store, display_status, summarize
from carviz.views.formatting import format_accuracy, format_size, format_time
from carviz.views.run_table import PAGE_SIZE, choices, display_rows, page_count, page_of
from app_pages._keys import PREDICT_RUN

PAGE_KEY = "runs_page"
CONFIRM_DELETE = "runs_confirm_delete"
NOTICE = "runs_notice"
SELECTED = "runs_selected_ids"

st.title("Runs")
store = Store()
all_rows = [summarize(run) for run in store.list_runs()]
notice = st.session_state.pop(NOTICE, None)
if notice:
    st.success(notice)

search, status_col, dataset_col, backbone_col, tag_col = st.columns([2, 1, 1, 1, 1])
text = search.text_input("Search", key="runs_search", placeholder="name, id, tag or note")
statuses = status_col.multiselect("Status", sorted({display_status(r) for r in all_rows}), key="runs_status")
datasets = dataset_col.multiselect("Dataset", choices(all_rows, "dataset"), key="runs_dataset")
backbones = backbone_col.multiselect("Backbone", choices(all_rows, "backbone"), key="runs_backbone")
tags = tag_col.multiselect("Tags", choices(all_rows, "tags"), key="runs_tags")
archived = st.checkbox("Show archived runs", key="runs_archived")

rows = [row for row in filter_rows(all_rows, text=text, tags=tags, include_archived=archived)
        if (not statuses or display_status(row) in statuses)
        and (not datasets or str(row.get("dataset")) in datasets)
        and (not backbones or str(row.get("backbone")) in backbones)]
if not all_rows:
    st.info("No runs yet. Launch one on the **Train** page.")
elif not rows:
    st.info(f"No run matches these filters ({len(all_rows)} runs in all).")
else:
    pages = page_count(len(rows))
    page = st.number_input(f"Page (of {pages})", 1, pages, key=PAGE_KEY) if pages > 1 else 1
    shown = page_of(rows, int(page))
    first = (min(int(page), pages) - 1) * PAGE_SIZE
    st.caption(f"Runs {first + 1}–{first + len(shown)} of {len(rows)} shown ({len(all_rows)} in all), newest first. "
               "Select rows to act on them.")
    # The selection is remembered by run id and the table's key follows its rows, so a filter or page change
    # never moves a selection onto other runs.
    shown_ids = [row["id"] for row in shown]
    remembered = st.session_state.get(SELECTED, [])
    event = st.dataframe(
        display_rows(shown), key="runs_table_" + hashlib.sha1("\n".join(shown_ids).encode()).hexdigest()[:12],
        on_select="rerun", selection_mode="multi-row", hide_index=True, width="stretch",
        selection_default={"selection": {"rows": [i for i, run_id in enumerate(shown_ids) if run_id in remembered]}},
        column_config={
            "name": st.column_config.TextColumn("Name", width="medium"),
            "status": st.column_config.TextColumn("Status"),
            "dataset": st.column_config.TextColumn("Dataset"),
            "backbone": st.column_config.TextColumn("Backbone"),
            "learning_rate": st.column_config.NumberColumn("LR", format="%.0e"),
            "freeze": st.column_config.TextColumn("Freeze"),
            "epochs": st.column_config.TextColumn("Epochs"),
            "kept_val_accuracy": st.column_config.NumberColumn(
                "Val acc (kept)", format="%.1f %%", help="The kept model's: the best-validation epoch"),
            "test_accuracy": st.column_config.NumberColumn("Test acc", format="%.1f %%"),
            "tags": st.column_config.TextColumn("Tags"),
            "created": st.column_config.TextColumn("Created"),
            "id": st.column_config.TextColumn("Id"),
        })
    picked = [shown[i] for i in event.selection.rows if i < len(shown)]
    st.session_state[SELECTED] = [row["id"] for row in picked]
    if picked:
        ids = [row["id"] for row in picked]
        links = st.columns(4)
        links[0].page_link("app_pages/compare.py", label=f"Compare {len(ids)} run{'s' if len(ids) > 1 else ''}",
                           icon=":material/compare:", query_params={"runs": ",".join(ids)})
        all_archived = all(row.get("archived") for row in picked)
        if links[1].button("Show again" if all_archived else "Archive", key="runs_archive"):
            for run_id in ids:
                store.get_run(run_id).annotate(archived=not all_archived)
            st.session_state[NOTICE] = f"{len(ids)} run(s) {'shown again' if all_archived else 'archived'}."
            st.rerun()
        active = [row["id"] for row in picked if row["status"] in (Status.QUEUED.value, Status.RUNNING.value)]
        if links[2].button("Delete…", key="runs_delete", disabled=bool(active),
                           help="Stop running runs first" if active else "Moves them to the trash below"):
            st.session_state[CONFIRM_DELETE] = ids
        if st.session_state.get(CONFIRM_DELETE) == ids:
            st.warning(f"Move {len(ids)} run(s) to the trash? They can be restored until the trash is emptied.")
            yes, no = st.columns([1, 6])
            if yes.button("Delete", type="primary", key="runs_delete_confirm"):
                moved = [trash.trash_run(store, store.get_run(run_id)) for run_id in ids]
                st.session_state.pop(CONFIRM_DELETE, None)
                st.session_state[NOTICE] = (f"Moved {len(moved)} run(s) to the trash "
                                            f"({format_size(sum(m.size_bytes for m in moved))}).")
                st.rerun()
            if no.button("Cancel", key="runs_delete_cancel"):
                st.session_state.pop(CONFIRM_DELETE, None)
                st.rerun()
        if len(picked) == 1:
            row = picked[0]
            run: Run = store.get_run(row["id"])
            if run.has_model():
                links[3].download_button(
                    "Download model", data=lambda: run.model_path().read_bytes(), file_name=f"{run.id}.keras",
                    mime="application/octet-stream", key="runs_download", icon=":material/download:")
                if st.button("Open in Predict", key="runs_predict"):
                    st.session_state[PREDICT_RUN] = run.id
                    st.switch_page("app_pages/predict.py")
            st.subheader(row["name"] or row["id"])
            st.caption(f"{row['id']} · {display_status(row)} · val acc (kept) {format_accuracy(row['kept_val_accuracy'])}"
                       f" · test acc {format_accuracy(row['test_accuracy'])} · created {format_time(row['created_at'])}")
            with st.form(f"runs_edit_{run.id}"):
                name = st.text_input("Name", value=row["name"], help="Empty goes back to the name it was launched "
                                                                     f"with ({row['config_name'] or 'none'})")
                new_tags = st.multiselect("Tags", choices(all_rows, "tags"), default=row["tags"],
                                          accept_new_options=True, help="Type a new tag and press Enter")
                note = st.text_area("Note", value=row["note"], help="Free text, searchable here and in Compare")
                if st.form_submit_button("Save"):
                    try:
                        run.annotate(name=name, tags=new_tags, note=note)
                    except ValueError as error:
                        st.error(str(error))
                    else:
                        st.session_state[NOTICE] = f"Saved {run.display_name() or run.id}."
                        st.rerun()

trashed = trash.list_trash(store)
with st.expander(f"Trash: {len(trashed)} run{'' if len(trashed) == 1 else 's'}, "
                 f"{format_size(sum(t.size_bytes for t in trashed))}", expanded=False):
    if not trashed:
        st.caption("Deleted runs land here and can be restored until the trash is emptied.")
    for item in trashed:
        name_col, restore_col = st.columns([5, 1])
        name_col.write(f"**{item.name or '(unnamed)'}** · {item.id} · deleted {format_time(item.trashed_at)} · "
                       f"{format_size(item.size_bytes)}")
        if restore_col.button("Restore", key=f"runs_restore_{item.id}"):
            try:
                trash.restore_run(store, item.id)
            except (LookupError, ValueError) as error:
                st.error(str(error))
            else:
                st.session_state[NOTICE] = f"Restored {item.name or item.id}."
                st.rerun()
    sure = bool(trashed) and st.checkbox("Delete these runs for good", key="runs_empty_sure")
    if trashed and st.button(f"Empty trash (frees {format_size(sum(t.size_bytes for t in trashed))})",
                             key="runs_empty_trash", type="primary", disabled=not sure):
        freed = trash.empty_trash(store, [t.id for t in trashed])
        st.session_state[NOTICE] = f"Trash emptied: {format_size(freed)} freed."
        st.rerun()
