"""Compare page: search and pick runs (or ?runs=<id>,<id>), overlay their curves, kept/best/final metrics, config
diff, a sweep's accuracy against freeze point, CSV export."""

from __future__ import annotations

import hashlib

import streamlit as st

from carviz.views import compare
from carviz.views.config_diff import DIFFERS, FIELD, config_diff
from carviz.views.plots.curves import chance_level, curves_figure
from carviz.views.plots.sweeps import freeze_figure, sweep_points
from carviz.core.lineage import lineage_line
from carviz.core.store import Run, Store, list_runs

LIVE_REFRESH_SECONDS = 3.0  # curves change once per epoch; faster polling only adds redraw churn
SELECTED_KEY = "compare_selected_ids"
QUERY_APPLIED_KEY = "compare_query_applied"  # the ?runs= value already turned into the selection
TABLE_GENERATION_KEY = "compare_table_generation"
X_AXES = {"epoch": "epoch", "fraction": "fraction of the run"}

st.title("Compare runs")

rows = compare.summaries(list_runs())
if not rows:
    st.info("No runs yet. Launch one on the **Train** page; it will show up here.")
    st.stop()

table = compare.runs_table(rows)
by_id = {row["id"]: row for row in rows}
colours = compare.run_colours(by_id)  # by creation order over every run: the same whatever is selected
broken_note = compare.broken_note(rows)
if broken_note:
    st.warning(broken_note)

# ?runs=<id>,<id> (other pages link here with it) selects those runs, once per distinct value; the selection is
# written back below, so a reload or a copied address shows the same runs.
query = ",".join(st.query_params.get_all(compare.QUERY_KEY))
if query and st.session_state.get(QUERY_APPLIED_KEY) != query:
    st.session_state[QUERY_APPLIED_KEY] = query
    wanted = compare.preselected(query, list(by_id))
    if wanted:
        st.session_state[SELECTED_KEY] = wanted
        # a new table (key below), so its selection starts from these runs, not from the rows clicked before
        st.session_state[TABLE_GENERATION_KEY] = st.session_state.get(TABLE_GENERATION_KEY, 0) + 1
    else:
        st.warning(f"The link names no run that exists here ({query[:80]}).")

filter_text, filter_status, filter_backbone, filter_archived = st.columns([2, 1, 1, 1])
text = filter_text.text_input("Search", key="compare_text", placeholder="name, tag or note",
                              help="Runs whose name, id, tags or note contain this text (any case)")
statuses = filter_status.multiselect("Status", sorted(table["status"].dropna().unique()), key="compare_status")
backbones = filter_backbone.multiselect("Backbone", sorted(table["backbone"].dropna().unique()), key="compare_backbone")
filter_archived.write("")  # aligns the checkbox with the boxes
show_archived = filter_archived.checkbox("Show archived", key="compare_archived",  # a fixed label: a fixed widget
                                         help=f"{int(table['archived'].sum())} archived run(s), hidden unless this "
                                              "is on")
shown = compare.filter_table(table, statuses, backbones, text, show_archived=show_archived)

# Row positions are what st.dataframe reports, so the table's key changes whenever the rows do: the
# selection is then rebuilt from the remembered run ids instead of pointing at other rows.
remembered: list[str] = (
    st.session_state[SELECTED_KEY] if SELECTED_KEY in st.session_state else compare.default_selection(table)
)
ids = shown["id"].tolist()
generation = st.session_state.get(TABLE_GENERATION_KEY, 0)
table_key = "compare_runs_" + hashlib.sha1("\n".join([str(generation), *ids]).encode()).hexdigest()[:12]
headers = compare.RUNS_TABLE_HEADERS
event = st.dataframe(
    compare.percent_table(shown),  # accuracies in percent: the cells read "41.7 %" as everywhere else
    key=table_key,
    on_select="rerun",
    selection_mode="multi-row",
    selection_default={"selection": {"rows": [i for i, run_id in enumerate(ids) if run_id in remembered]}},
    hide_index=True,
    width="stretch",
    column_order=compare.visible_columns(table, headers),  # tags, note, test acc, problems: when some run has one
    column_config={  # widths in pixels: the usual columns fit a 1440 px wide window beside the sidebar
        "name": st.column_config.TextColumn(headers["name"], width=200, pinned=True),
        "status": st.column_config.TextColumn(headers["status"], width=80),
        "dataset": st.column_config.TextColumn(headers["dataset"], width=70),
        "backbone": st.column_config.TextColumn(headers["backbone"], width=90),
        "parent": st.column_config.TextColumn(headers["parent"], width=120,
                                              help="Transfer: the finished run this one started from (its weights, "
                                                   "a new classifier)"),
        "learning_rate": st.column_config.NumberColumn(headers["learning_rate"], format="%.0e", width=50),
        "freeze": st.column_config.TextColumn(headers["freeze"], width=50),
        "epochs_done": st.column_config.NumberColumn(headers["epochs_done"], width=55, help="Epochs trained so far"),
        "kept_val_accuracy": st.column_config.NumberColumn(
            headers["kept_val_accuracy"], format="%.1f %%", width=100,
            help="The kept model's validation accuracy: the best-validation epoch, restored and saved (not the "
                 "last epoch's; 'Kept model' says which epoch)"),
        "test_accuracy": st.column_config.NumberColumn(headers["test_accuracy"], format="%.1f %%", width=70,
                                                       help="The kept model on the test split, when the run has one"),
        "kept": st.column_config.TextColumn(headers["kept"], width=130),
        "seconds": st.column_config.NumberColumn(headers["seconds"], format="%.0f", width=60),
        "tags": st.column_config.TextColumn(headers["tags"], width="small"),
        "note": st.column_config.TextColumn(headers["note"], width="medium"),
        "problems": st.column_config.TextColumn(headers["problems"], width="medium"),
    },
)
selected_rows = event.selection.rows if event is not None else []
selected = [ids[i] for i in selected_rows if i < len(ids)]
# runs hidden by the filters stay selected; what is visible follows the table
hidden = [run_id for run_id in remembered if run_id not in ids and run_id in by_id]
selected = hidden + selected
st.session_state[SELECTED_KEY] = selected
st.session_state[QUERY_APPLIED_KEY] = ",".join(selected)
if selected:
    st.query_params[compare.QUERY_KEY] = ",".join(selected)
elif compare.QUERY_KEY in st.query_params:
    del st.query_params[compare.QUERY_KEY]
st.caption(f"{len(shown)} of {len(table)} runs shown · {len(selected)} selected (click rows to pick runs)"
           + (f" · {len(hidden)} of them hidden by the search or filters" if hidden else ""))

if not selected:
    st.info("Select one or more runs in the table to compare their curves.")
    st.stop()

chosen = [by_id[run_id] for run_id in selected]
smooth_col, axis_col, range_col = st.columns([2, 1, 2])
smoothing = smooth_col.slider("Smoothing (exponential moving average)", 0.0, 0.95, 0.0, 0.05, key="compare_smoothing",
                              help="Weight of the past in the moving average; the raw points stay visible as faint "
                                   "markers.")
x_axis = axis_col.radio("X axis", list(X_AXES), format_func=X_AXES.get, key="compare_x_axis", horizontal=True,
                        help="fraction of the run: epoch / the run's planned epochs, so runs of 8 and 90 epochs "
                             "line up from start to end")
last_epoch = max([1] + [int(value) for row in chosen for value in (row.get("epochs"), row.get("epochs_done"))
                        if isinstance(value, int) and not isinstance(value, bool)])
epoch_range: tuple[int, int] | None = None
if x_axis == "epoch" and last_epoch > 1:
    # keyed by the length: a selection of another length starts from all its epochs
    shown_epochs = range_col.slider("Epochs shown", 1, last_epoch, (1, last_epoch), key=f"compare_epochs_{last_epoch}",
                                    help="Zoom in on some epochs, e.g. the first 8 of a long run; the y axis fits "
                                         "what is shown")
    epoch_range = None if shown_epochs == (1, last_epoch) else shown_epochs
active = compare.any_active(chosen)
store = Store()


def _existing(run_ids: list[str]) -> list[Run]:
    """The runs still there (one may have been deleted since the table was read)."""
    found = []
    for run_id in run_ids:
        try:
            found.append(store.get_run(run_id))
        except LookupError:
            continue
    return found


@st.fragment(run_every=LIVE_REFRESH_SECONDS if active else None)
def charts(run_ids: list[str], smoothing: float, x_axis: str, epoch_range: tuple[int, int] | None,
           was_active: bool) -> None:
    runs = _existing(run_ids)
    fresh, metrics, configs = compare.read_runs(runs)
    curve_runs = [(compare.run_label(row), configs[row["id"]], metrics[row["id"]]) for row in fresh]
    run_colours = [colours.get(row["id"], "grey") for row in fresh]
    if was_active:
        st.caption(f"Live: refreshing every {LIVE_REFRESH_SECONDS:.0f} s while a selected run is active.")
    loss_col, acc_col = st.columns(2)
    for column, metric in ((loss_col, "loss"), (acc_col, "accuracy")):
        column.plotly_chart(curves_figure(curve_runs, metric, smoothing, colours=run_colours, x_axis=x_axis,
                                          epoch_range=epoch_range, chance=chance_level(fresh)),
                            key=f"compare_{metric}")

    st.subheader("Kept model, best and final metrics")
    headers = compare.METRICS_TABLE_HEADERS
    view = compare.metrics_view(fresh, metrics)
    st.dataframe(
        view,
        hide_index=True,
        width="stretch",
        column_order=compare.visible_columns(view, headers),
        column_config={
            "run": st.column_config.TextColumn(headers["run"], width=170, pinned=True),
            "kept": st.column_config.TextColumn(headers["kept"], width=130, help="Which epoch the kept model is"),
            "kept_val_accuracy": st.column_config.TextColumn(
                headers["kept_val_accuracy"], width=100,
                help="The kept model's: the best-validation epoch, restored and saved (what Predict uses)"),
            "test_accuracy": st.column_config.TextColumn(headers["test_accuracy"], width=70,
                                                         help="The kept model on the test split"),
            "best_val_accuracy": st.column_config.TextColumn(
                headers["best_val_accuracy"], width=125, help="The highest validation accuracy of any epoch, and "
                                                              "that epoch"),
            "final_val_accuracy": st.column_config.TextColumn(headers["final_val_accuracy"], width=90,
                                                              help="The last epoch's validation accuracy"),
            "final_accuracy": st.column_config.TextColumn(headers["final_accuracy"], width=100,
                                                          help="The last epoch's training accuracy"),
            "best_val_loss": st.column_config.TextColumn(headers["best_val_loss"], width=125,
                                                         help="The lowest validation loss of any epoch, and that "
                                                              "epoch"),
            "epochs": st.column_config.NumberColumn(headers["epochs"], width=55),
            "seconds": st.column_config.NumberColumn(headers["seconds"], width=60, format="%.0f"),
        },
    )
    for row in fresh:  # lineage: where each transfer run started
        line = lineage_line(row.get("parent"), row.get("init_from_run"))
        if line:
            st.caption(f"**{compare.run_label(row)}** · {line}")
    st.caption("Every metric of every epoch is in the CSV.")
    st.download_button(
        "Download metrics (CSV)",
        compare.metrics_csv([(row["id"], row.get("name", ""), metrics[row["id"]]) for row in fresh]),
        file_name="carviz-metrics.csv",
        mime="text/csv",
        on_click="ignore",
        key="compare_download",
    )
    if len(fresh) > 1:
        config_diff_section([(compare.run_label(row), configs[row["id"]]) for row in fresh])
    sweep_section(runs, fresh)
    if was_active and not compare.any_active(fresh):
        st.rerun()  # the last active run finished: refresh the table and stop polling


def config_diff_section(labelled: list[tuple[str, dict]]) -> None:
    """The selected runs' configs side by side: the fields that differ (all with the toggle)."""
    st.subheader("Config diff")
    show_all = st.toggle("Show identical fields", key="compare_diff_identical")
    diff = config_diff(labelled, show_identical=show_all)
    if diff.empty:
        st.caption("The selected runs' configs are identical.")
        return
    st.dataframe(diff, hide_index=True, width="stretch", key="compare_diff",
                 column_order=[FIELD, *(column for column in diff.columns if column not in (FIELD, DIFFERS)),
                               *([DIFFERS] if show_all else [])],
                 column_config={FIELD: st.column_config.TextColumn("Field", pinned=True),
                                DIFFERS: st.column_config.CheckboxColumn("Differs", width="small")})


def sweep_section(runs: list[Run], fresh: list[dict]) -> None:
    """For runs of one sweep that differ in their freeze point: the Sweeps page's chart of them."""
    sweep_id = compare.common_sweep(runs)
    if sweep_id is None or len({str(row.get("freeze")) for row in fresh}) < 2:
        return
    try:
        sweep_name = store.get_sweep(sweep_id).config.name
    except LookupError:
        sweep_name = sweep_id
    st.subheader("Kept val accuracy vs freeze point")
    st.plotly_chart(freeze_figure(sweep_points(fresh), chance=chance_level(fresh),
                                  title=f"Sweep {sweep_name}: the selected runs"), key="compare_sweep")
    st.caption("As the Sweeps page draws it: mean ± std over the selected runs of each configuration (its seeds), "
               "'all' at the backbone's layer count + 1, the dotted line is chance. The Sweeps page shows every "
               "run of the sweep.")


charts(selected, smoothing, x_axis, epoch_range, active)
