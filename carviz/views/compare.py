"""Data for the Compare page: runs table, filters, default selection, best/final metrics, long-format metrics CSV."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from carviz.core.store import Run, Status, display_status, kept_label, summarize

ACTIVE_STATUSES = (Status.QUEUED.value, Status.RUNNING.value)
# kept_val_accuracy / test_accuracy: the kept model's (the best-validation epoch; "kept" says which epoch)
TABLE_COLUMNS = ("id", "name", "backbone", "learning_rate", "freeze", "status", "epochs_done", "epochs",
                 "kept_val_accuracy", "test_accuracy", "kept", "kept_epoch", "seconds", "dataset", "weights", "head",
                 "created_at", "problems")
METRIC_FIELDS = ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds")


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
                           "kept": kept_label(row), "problems": "; ".join(row.get("problems") or ())}
                          for row in rows], columns=list(TABLE_COLUMNS))
    frame["freeze"] = frame["freeze"].map(lambda value: "" if value is None else str(value))
    for column in ("learning_rate", "kept_val_accuracy", "test_accuracy", "seconds"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    for column in ("epochs_done", "epochs", "kept_epoch"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    return frame


def filter_table(frame: pd.DataFrame, statuses: Iterable[str] = (), backbones: Iterable[str] = (),
                 text: str = "") -> pd.DataFrame:
    """Rows whose status and backbone are among those given (empty: any) and whose name or id contains text
    (case-insensitive); the index is reset so row positions match what st.dataframe reports."""
    mask = pd.Series(True, index=frame.index)
    statuses, backbones = list(statuses), list(backbones)
    if statuses:
        mask &= frame["status"].isin(statuses)
    if backbones:
        mask &= frame["backbone"].isin(backbones)
    needle = text.strip().casefold()
    if needle:
        haystack = frame["name"].fillna("").astype(str) + " " + frame["id"].astype(str)
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
    """Legend label of a run: its name, else its id; the id's random tail disambiguates equal names."""
    name = str(row.get("name") or "").strip()
    run_id = str(row["id"])
    return f"{name} ({run_id[-6:]})" if name else run_id
