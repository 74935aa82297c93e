"""Compare page: pick runs in a table, overlay their loss/accuracy curves, best/final metrics, CSV export."""

from __future__ import annotations

import hashlib

import streamlit as st

from carviz.views import compare
from carviz.views.plots.curves import curves_figure, sweep_figure
from carviz.core.store import Store, list_runs

LIVE_REFRESH_SECONDS = 3.0  # curves change once per epoch; faster polling only adds redraw churn
SELECTED_KEY = "compare_selected_ids"

st.title("Compare runs")

rows = compare.summaries(list_runs())
if not rows:
    st.info("No runs yet. Launch one on the **Train** page; it will show up here.")
    st.stop()

table = compare.runs_table(rows)
by_id = {row["id"]: row for row in rows}
broken_note = compare.broken_note(rows)
if broken_note:
    st.warning(broken_note)

filter_status, filter_backbone, filter_text = st.columns([1, 1, 1])
statuses = filter_status.multiselect("Status", sorted(table["status"].dropna().unique()), key="compare_status")
backbones = filter_backbone.multiselect("Backbone", sorted(table["backbone"].dropna().unique()), key="compare_backbone")
text = filter_text.text_input("Name contains", key="compare_text")
shown = compare.filter_table(table, statuses, backbones, text)

# Row positions are what st.dataframe reports, so the table's key changes whenever the rows do: the
# selection is then rebuilt from the remembered run ids instead of pointing at other rows.
remembered: list[str] = (
    st.session_state[SELECTED_KEY] if SELECTED_KEY in st.session_state else compare.default_selection(table)
)
ids = shown["id"].tolist()
table_key = "compare_runs_" + hashlib.sha1("\n".join(ids).encode()).hexdigest()[:12]
event = st.dataframe(
    shown,
    key=table_key,
    on_select="rerun",
    selection_mode="multi-row",
    selection_default={"selection": {"rows": [i for i, run_id in enumerate(ids) if run_id in remembered]}},
    hide_index=True,
    column_order=["name", "backbone", "learning_rate", "freeze", "status", "epochs_done", "kept_val_accuracy",
                  "test_accuracy", "kept", "seconds", "dataset", "id", "problems"],
    column_config={
        "name": st.column_config.TextColumn("name"),
        "learning_rate": st.column_config.NumberColumn("lr", format="%.0e"),
        "epochs_done": st.column_config.NumberColumn("epochs"),
        "kept_val_accuracy": st.column_config.NumberColumn(
            "val acc", format="percent", help="The kept model's: the best-validation epoch, restored and saved "
                                              "(the 'kept' column says which epoch)"),
        "test_accuracy": st.column_config.NumberColumn("test acc", format="percent",
                                                       help="The kept model on the test split, when the run has one"),
        "kept": st.column_config.TextColumn("kept model"),
        "seconds": st.column_config.NumberColumn("time (s)", format="%.0f"),
    },
)
selected_rows = event.selection.rows if event is not None else []
selected = [ids[i] for i in selected_rows if i < len(ids)]
# runs hidden by the filters stay selected; what is visible follows the table
selected = [run_id for run_id in remembered if run_id not in ids and run_id in by_id] + selected
st.session_state[SELECTED_KEY] = selected
st.caption(f"{len(shown)} of {len(table)} runs shown · {len(selected)} selected (click rows to pick runs)")

if not selected:
    st.info("Select one or more runs in the table to compare their curves.")
    st.stop()

smoothing = st.slider("Smoothing (exponential moving average)", 0.0, 0.95, 0.0, 0.05, key="compare_smoothing",
                      help="Weight of the past in the moving average; the raw points stay visible as faint markers.")
active = compare.any_active(by_id[run_id] for run_id in selected)
store = Store()


@st.fragment(run_every=LIVE_REFRESH_SECONDS if active else None)
def charts(run_ids: list[str], smoothing: float, was_active: bool) -> None:
    fresh, metrics, configs = compare.read_runs(store.get_run(run_id) for run_id in run_ids)
    curve_runs = [(compare.run_label(row), configs[row["id"]], metrics[row["id"]]) for row in fresh]
    if was_active:
        st.caption(f"Live: refreshing every {LIVE_REFRESH_SECONDS:.0f} s while a selected run is active.")
    loss_col, acc_col = st.columns(2)
    loss_col.plotly_chart(curves_figure(curve_runs, "loss", smoothing), key="compare_loss")
    acc_col.plotly_chart(curves_figure(curve_runs, "accuracy", smoothing), key="compare_accuracy")

    st.subheader("Kept model, best and final metrics")
    st.dataframe(
        compare.best_final_table(fresh, metrics),
        hide_index=True,
        column_config={
            column: st.column_config.NumberColumn(format="%.4f")
            for column in ("kept_val_accuracy", "test_accuracy", "best_val_accuracy", "best_val_loss",
                           "final_accuracy", "final_val_accuracy", "final_loss", "final_val_loss")
        },
    )
    st.download_button(
        "Download metrics (CSV)",
        compare.metrics_csv([(row["id"], row.get("name", ""), metrics[row["id"]]) for row in fresh]),
        file_name="carviz-metrics.csv",
        mime="text/csv",
        on_click="ignore",
        key="compare_download",
    )
    if was_active and not compare.any_active(fresh):
        st.rerun()  # the last active run finished: refresh the table and stop polling


charts(selected, smoothing, active)

chosen = [by_id[run_id] for run_id in selected]
if len({row.get("freeze") for row in chosen}) > 1:
    with st.expander("Kept val accuracy vs freeze index", expanded=True):
        st.plotly_chart(sweep_figure(chosen, colour_by="backbone"), key="compare_sweep")
        st.caption("One point per run (open: not succeeded), no lines: the runs may differ in more than their freeze "
                   "point. 'all' sits at the backbone's layer count + 1; the dotted line is chance.")
