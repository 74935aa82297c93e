"""Data for the Compare page: runs table and search, run colours, kept/best/final metrics, sweep check, metrics CSV."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from carviz.core.store import Run, Status, display_status, kept_label, summarize
from carviz.views.formatting import format_accuracy
from carviz.views.plots.curves import run_colour

ACTIVE_STATUSES = (Status.QUEUED.value, Status.RUNNING.value)
# kept_val_accuracy / test_accuracy: the kept model's (the best-validation epoch; "kept" says which epoch)
TABLE_COLUMNS = ("id", "name", "backbone", "learning_rate", "freeze", "status", "epochs_done", "epochs",
                 "kept_val_accuracy", "test_accuracy", "kept", "kept_epoch", "seconds", "dataset", "weights", "head",
                 "created_at", "problems", "tags", "note", "archived", "parent")
ACCURACY_COLUMNS = ("kept_val_accuracy", "test_accuracy")
# the runs table as the page shows it: column -> header (the rest of TABLE_COLUMNS stay in the data, not on screen)
RUNS_TABLE_HEADERS = {"name": "Name", "status": "Status", "dataset": "Dataset", "backbone": "Backbone",
                      "parent": "From run", "learning_rate": "LR", "freeze": "Freeze", "epochs_done": "Epochs",
                      "kept_val_accuracy": "Val acc (kept)", "test_accuracy": "Test acc", "kept": "Kept model",
                      "seconds": "Time (s)", "tags": "Tags", "note": "Note", "problems": "Problems"}
OPTIONAL_COLUMNS = ("test_accuracy", "tags", "note", "problems", "parent")  # shown only when some run has one
METRIC_FIELDS = ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds")
QUERY_KEY = "runs"  # Compare?runs=<id>,<id> preselects those runs


def summaries(runs: Iterable[Run]) -> list[dict[str, Any]]:
    """summarize() of every run, in the given order (list_runs: newest first)."""
    return [summarize(run) for run in runs]


def read_runs(runs: Iterable[Run]) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]],
                                             dict[str, dict[str, Any]]]:
    """(summaries, metrics by id, configs by id) of `runs`, reading each run's files once."""
    rows, metrics, configs = [], {}, {}
    for run in runs:
        configs[run.id], metrics[run.id] = run.config_dict(), run.metrics()
        rows.append(summarize(run, configs[run.id], metrics[run.id]))
    return rows, metrics, configs


def runs_table(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The runs table: one row per summary, TABLE_COLUMNS in order; freeze as text (it may be an int or 'all');
    status as shown ("broken" for a damaged record), "kept" as kept_label says it, problems as one text ("" for a
    sound run)."""
    frame = pd.DataFrame([{**{column: row.get(column) for column in TABLE_COLUMNS}, "status": display_status(row),
                           "name": row.get("display_name") or row.get("name") or row.get("id"),
                           "kept": short_kept_label(row), "problems": "; ".join(row.get("problems") or ()),
                           "tags": ", ".join(str(tag) for tag in row.get("tags") or ()),
                           "note": str(row.get("note") or ""), "archived": bool(row.get("archived")),
                           "parent": parent_label(row)}
                          for row in rows], columns=list(TABLE_COLUMNS))
    frame["freeze"] = frame["freeze"].map(lambda value: "" if value is None else str(value))
    for column in ("learning_rate", "kept_val_accuracy", "test_accuracy", "seconds"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    for column in ("epochs_done", "epochs", "kept_epoch"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    return frame


def filter_table(frame: pd.DataFrame, statuses: Iterable[str] = (), backbones: Iterable[str] = (),
                 text: str = "", show_archived: bool = False) -> pd.DataFrame:
    """Rows whose status and backbone are among those given (empty: any), whose name, id, tags or note contain
    text (case-insensitive), archived ones only with show_archived; the index is reset so row positions match what
    st.dataframe reports."""
    mask = pd.Series(True, index=frame.index)
    if not show_archived:
        mask &= ~frame["archived"].fillna(False).astype(bool)
    statuses, backbones = list(statuses), list(backbones)
    if statuses:
        mask &= frame["status"].isin(statuses)
    if backbones:
        mask &= frame["backbone"].isin(backbones)
    needle = text.strip().casefold()
    if needle:
        haystack = frame["name"].fillna("").astype(str)
        for column in ("id", "tags", "note"):
            haystack = haystack + "\n" + frame[column].fillna("").astype(str)
        mask &= haystack.str.casefold().str.contains(needle, regex=False)
    return frame[mask].reset_index(drop=True)


def default_selection(frame: pd.DataFrame, count: int = 3) -> list[str]:
    """Ids of the latest `count` succeeded runs (the table is newest first; a broken one is not among them), else
    the latest runs of any status."""
    finished = frame[frame["status"] == Status.SUCCEEDED.value]
    chosen = finished if not finished.empty else frame
    return chosen["id"].head(count).tolist()


def any_active(rows: Iterable[Mapping[str, Any]]) -> bool:
    """True when some run is queued or running (its curves may still grow)."""
    return any(row.get("status") in ACTIVE_STATUSES for row in rows)


def best_final_table(rows: Sequence[Mapping[str, Any]], metrics: Mapping[str, Sequence[Mapping[str, Any]]]) -> pd.DataFrame:
    """The kept model's numbers (which epoch, its val accuracy, test accuracy), then best and final metrics per
    run: summaries in `rows`, metrics rows by run id in `metrics`."""
    records = []
    for row in rows:
        history = list(metrics.get(row["id"], []))
        final = history[-1] if history else {}
        val_losses = [(r["val_loss"], r["epoch"]) for r in history if isinstance(r.get("val_loss"), (int, float))]
        val_accs = [(r["val_accuracy"], r["epoch"]) for r in history if isinstance(r.get("val_accuracy"), (int, float))]
        best_acc = max(val_accs, key=lambda item: item[0]) if val_accs else (None, None)
        best_loss = min(val_losses, key=lambda item: item[0]) if val_losses else (None, None)
        records.append({
            "id": row["id"],
            "name": row.get("name", ""),
            "status": display_status(row),
            "kept": kept_label(row),
            "kept_val_accuracy": row.get("kept_val_accuracy"),
            "test_accuracy": row.get("test_accuracy"),
            "epochs": len(history),
            "best_val_accuracy": best_acc[0],
            "best_val_accuracy_epoch": best_acc[1],
            "best_val_loss": best_loss[0],
            "best_val_loss_epoch": best_loss[1],
            "final_accuracy": final.get("accuracy"),
            "final_val_accuracy": final.get("val_accuracy"),
            "final_loss": final.get("loss"),
            "final_val_loss": final.get("val_loss"),
            "seconds": sum(r.get("seconds") or 0 for r in history),
        })
    return pd.DataFrame.from_records(records, columns=[
        "id", "name", "status", "kept", "kept_val_accuracy", "test_accuracy", "epochs", "best_val_accuracy",
        "best_val_accuracy_epoch", "best_val_loss", "best_val_loss_epoch", "final_accuracy", "final_val_accuracy",
        "final_loss", "final_val_loss", "seconds",
    ])


def metrics_long(runs: Sequence[tuple[str, str, Sequence[Mapping[str, Any]]]]) -> pd.DataFrame:
    """One row per (run, epoch): run_id, name, epoch, then every metric; from (run id, name, metrics rows)."""
    records = [
        {"run_id": run_id, "name": name, "epoch": row.get("epoch"), **{key: row.get(key) for key in METRIC_FIELDS}}
        for run_id, name, rows in runs
        for row in rows
    ]
    return pd.DataFrame.from_records(records, columns=["run_id", "name", "epoch", *METRIC_FIELDS])


def metrics_csv(runs: Sequence[tuple[str, str, Sequence[Mapping[str, Any]]]]) -> str:
    """metrics_long as CSV text (what the download button serves)."""
    return metrics_long(runs).to_csv(index=False)


def broken_note(rows: Iterable[Mapping[str, Any]], consequence: str = "shown as 'broken', with what is wrong",
                limit: int = 20) -> str | None:
    """Markdown naming every run whose record is damaged and what is wrong with it; None when there is none."""
    broken = [row for row in rows if row.get("problems")]
    if not broken:
        return None
    lines = [f"- **{run_label(row)}**: " + "; ".join(row["problems"]) for row in broken[:limit]]
    if len(broken) > limit:
        lines.append(f"- … and {len(broken) - limit} more")
    return (f"{len(broken)} run{'s are' if len(broken) > 1 else ' is'} broken (a damaged record file); "
            f"{consequence}:\n" + "\n".join(lines))


def run_label(row: Mapping[str, Any]) -> str:
    """Legend label of a run: its name (the user's rename first), else its id; the id's random tail disambiguates
    equal names."""
    name = str(row.get("display_name") or row.get("name") or "").strip()
    run_id = str(row["id"])
    return f"{name} ({run_id[-6:]})" if name else run_id


def percent_table(frame: pd.DataFrame, columns: Iterable[str] = ACCURACY_COLUMNS) -> pd.DataFrame:
    """A copy with the accuracy columns in percent (0.417 -> 41.7), for a NumberColumn formatted "%.1f %%": the
    cell reads "41.7 %" as format_accuracy writes it and still sorts as a number."""
    shown = frame.copy()
    for column in columns:
        shown[column] = pd.to_numeric(shown[column], errors="coerce") * 100
    return shown


def run_colours(run_ids: Iterable[str]) -> dict[str, str]:
    """One colour per run, by creation order over every run given (ids start with their creation time): a run
    keeps its colour whichever runs are selected or filtered, and a new run does not change the older ones'."""
    return {run_id: run_colour(index) for index, run_id in enumerate(sorted(set(run_ids)))}


def preselected(value: str | Sequence[str] | None, run_ids: Sequence[str]) -> list[str]:
    """The runs a `?runs=<id>,<id>` query value names (ids or unique id prefixes, comma-separated), in its order,
    each once; unknown or ambiguous names are left out."""
    parts = [value] if isinstance(value, str) else list(value or [])
    chosen: list[str] = []
    for part in ",".join(parts).split(","):
        ref = part.strip()
        if not ref:
            continue
        matches = [ref] if ref in run_ids else [run_id for run_id in run_ids if run_id.startswith(ref)]
        if len(matches) == 1 and matches[0] not in chosen:
            chosen.append(matches[0])
    return chosen


def compare_query(run_ids: Iterable[str]) -> dict[str, str]:
    """Query parameters that open Compare with these runs selected (st.page_link / st.switch_page query_params)."""
    return {QUERY_KEY: ",".join(run_ids)}


def common_sweep(runs: Iterable[Run]) -> str | None:
    """The sweep id every one of two or more runs was launched by (their sweep context), else None: only runs of
    one sweep share a grid, so only they are drawn against their freeze point."""
    ids = [run.sweep_context().get("sweep_id") for run in runs]
    if len(ids) < 2 or not isinstance(ids[0], str) or not ids[0]:
        return None
    return ids[0] if all(sweep_id == ids[0] for sweep_id in ids) else None


def parent_label(row: Mapping[str, Any]) -> str:
    """The run a run started from (transfer), short: "tiny on demo"; its id before it has started; "" for none."""
    parent = row.get("parent")
    if isinstance(parent, Mapping) and isinstance(parent.get("run_id"), str):
        dataset = str(parent.get("dataset") or "").rstrip("/").rsplit("/", 1)[-1]
        return f"{parent.get('name') or parent['run_id']}" + (f" on {dataset}" if dataset else "")
    return str(row.get("init_from_run") or "")


METRICS_TABLE_HEADERS = {"run": "Run", "kept": "Kept model", "kept_val_accuracy": "Val acc (kept)",
                         "test_accuracy": "Test acc", "best_val_accuracy": "Best val acc (epoch)",
                         "final_val_accuracy": "Final val acc", "final_accuracy": "Final train acc",
                         "best_val_loss": "Best val loss (epoch)", "epochs": "Epochs", "seconds": "Time (s)"}
EMPTY = "–"


def short_kept_label(row: Mapping[str, Any]) -> str:
    """kept_label without its "kept: " (the column is headed "Kept model"): "epoch 7 (best val)"."""
    return kept_label(row).removeprefix("kept: ")


def visible_columns(frame: pd.DataFrame, columns: Iterable[str],
                    optional: Iterable[str] = OPTIONAL_COLUMNS) -> list[str]:
    """`columns` less the optional ones no row has a value in (empty, None, NaN or "–"), so a table fits the page."""
    optional = set(optional)
    shown = []
    for column in columns:
        if column in optional and column in frame:
            values = frame[column]
            if not (values.notna() & ~values.astype(str).isin(("", EMPTY))).any():
                continue
        shown.append(column)
    return shown


def _at_epoch(text: str, epoch: Any) -> str:
    if text == EMPTY or not isinstance(epoch, (int, float)) or epoch != epoch:
        return text
    return f"{text} ({int(epoch)})"


def _loss(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value \
        else EMPTY


def metrics_view(rows: Sequence[Mapping[str, Any]], metrics: Mapping[str, Sequence[Mapping[str, Any]]]) -> pd.DataFrame:
    """best_final_table as the page shows it: one row per run (id kept, hidden on the page), accuracies as
    format_accuracy writes them, the best values with their epoch in brackets, columns as METRICS_TABLE_HEADERS
    names them (the CSV download has every metric of every epoch)."""
    table = best_final_table(rows, metrics)
    labels = {row["id"]: run_label(row) for row in rows}
    records = []
    for item in table.to_dict("records"):
        records.append({
            "id": item["id"], "run": labels.get(item["id"], item["id"]), "kept": item["kept"].removeprefix("kept: "),
            "kept_val_accuracy": format_accuracy(item["kept_val_accuracy"]),
            "test_accuracy": format_accuracy(item["test_accuracy"]),
            "best_val_accuracy": _at_epoch(format_accuracy(item["best_val_accuracy"]), item["best_val_accuracy_epoch"]),
            "final_val_accuracy": format_accuracy(item["final_val_accuracy"]),
            "final_accuracy": format_accuracy(item["final_accuracy"]),
            "best_val_loss": _at_epoch(_loss(item["best_val_loss"]), item["best_val_loss_epoch"]),
            "epochs": item["epochs"], "seconds": round(item["seconds"]),
        })
    return pd.DataFrame.from_records(records, columns=["id", *METRICS_TABLE_HEADERS])
