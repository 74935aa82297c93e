"""One row per run for tables (the Runs, Compare, Train and Sweeps pages, `runs` and `compare`): config essentials,
status, the kept model's numbers and the record's problems, read forgivingly (a wrong-typed field reads as None)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from carviz.core.jobs.status import JobState, Status
from carviz.core.record_checks import BROKEN, CONFIG_FIELDS, is_int, is_number
from carviz.core.run_info import RunInfo


class Run(Protocol):
    """What a summary reads of a run (store.Run)."""

    id: str

    def config_dict(self) -> dict[str, Any]: ...
    def state(self) -> JobState: ...
    def metrics(self) -> list[dict[str, Any]]: ...
    def run_info(self) -> RunInfo: ...
    def evaluation(self) -> dict[str, Any] | None: ...
    def annotations(self) -> dict[str, Any]: ...
    def problems(self, config: Any = None, metrics: Any = None, state: Any = None) -> list[str]: ...


def config_value(config: dict[str, Any], key: str) -> Any:
    """config[key] when it has the type the field must have, else None (the run's problems say what is wrong)."""
    value = config.get(key)
    check = CONFIG_FIELDS.get(key)
    if value is None or check is None or not check[0](value):
        return None
    return int(value) if key == "freeze" and isinstance(value, str) and value.isdigit() else value


KEPT_RULE = "best val"  # what a run keeps: the epoch with the highest val_accuracy (ml/callbacks.py KeepBest)
KEPT_LAST = "last"  # what runs trained before carviz kept the best epoch saved: the last epoch


def _kept(evaluation: dict[str, Any], metrics: list[dict[str, Any]], best_epoch: Any,
          best_value: Any) -> tuple[Any, Any, str]:
    """(kept epoch, its val accuracy, the rule) of a run: from evaluation.json when the run finished (the saved
    model, measured), else the best epoch so far (what the run would keep)."""
    accuracy = evaluation.get("accuracy")
    if is_number(accuracy) and is_int(evaluation.get("kept_epoch")):
        rule = evaluation.get("kept")
        return evaluation["kept_epoch"], accuracy, rule if isinstance(rule, str) and rule else KEPT_RULE
    if is_number(accuracy):  # saved before carviz kept the best epoch: model.keras is the last epoch
        last = metrics[-1].get("epoch") if metrics else None
        return (last if is_int(last) else None), accuracy, KEPT_LAST
    return best_epoch, best_value, KEPT_RULE


def summarize(run: Run, config: dict[str, Any] | None = None,
              metrics: list[dict[str, Any]] | None = None, info: RunInfo | None = None,
              state: JobState | None = None) -> dict[str, Any]:
    """One row for a runs table: config essentials, status, best/final metrics, duration, where it ran, and the
    record's problems ("broken": True when there are any; "status" stays the job's state, display_status(row)
    is the word to show). Config values of the wrong type read as None. A caller that has read the config,
    metrics, run.json or the derived state already passes them in (each is read once).

    The one number per run is the kept model's: kept_epoch, kept_val_accuracy and kept_rule ("best val": the
    epoch with the highest val_accuracy, restored before the final evaluation and saved; "last" for runs saved
    before that rule), test_accuracy when evaluation.json has a test split's result; kept_label(row) says it."""
    config = run.config_dict() if config is None else config
    state = run.state() if state is None else state
    metrics = run.metrics() if metrics is None else metrics
    info = run.run_info() if info is None else info
    problems = run.problems(config, metrics, state)
    val_acc = [row["val_accuracy"] for row in metrics if is_number(row.get("val_accuracy"))]
    best_index = max(range(len(val_acc)), key=val_acc.__getitem__) if val_acc else None
    best_row = [row for row in metrics if is_number(row.get("val_accuracy"))][best_index] \
        if best_index is not None else None
    evaluation = run.evaluation() or {}
    kept_epoch, kept_value, kept_rule = _kept(evaluation, metrics, best_row["epoch"] if best_row else None,
                                              val_acc[best_index] if best_index is not None else None)
    test = evaluation.get("test")
    test_accuracy = test.get("accuracy") if isinstance(test, dict) and is_number(test.get("accuracy")) else None
    layers, classes = info.model.backbone_layers if info.model else None, info.classes
    annotations = run.annotations()
    return {
        "id": run.id,
        "name": annotations.get("name") or config_value(config, "name") or "",
        "display_name": annotations.get("name") or config_value(config, "name") or "",
        "config_name": config_value(config, "name") or "",
        "tags": annotations.get("tags", []),
        "note": annotations.get("note", ""),
        "archived": annotations.get("archived", False),
        "dataset": config_value(config, "dataset"),
        "backbone": config_value(config, "backbone"),
        "weights": config_value(config, "weights"),
        "learning_rate": config_value(config, "learning_rate"),
        "freeze": config_value(config, "freeze"),
        "head": config_value(config, "head"),
        "epochs": config_value(config, "epochs"),
        "status": state.status.value,
        "broken": bool(problems),
        "problems": problems,
        "epochs_done": len(metrics),
        "best_val_accuracy": val_acc[best_index] if best_index is not None else None,
        "best_epoch": best_row["epoch"] if best_row is not None else None,
        "final_val_accuracy": val_acc[-1] if val_acc else None,
        "final_val_loss": metrics[-1].get("val_loss") if metrics else None,
        "kept_epoch": kept_epoch,
        "kept_val_accuracy": kept_value,
        "kept_rule": kept_rule,
        "test_accuracy": test_accuracy,
        "backbone_layers": layers if layers is not None and layers > 0 else None,
        "num_classes": len(classes) or None,
        "init_from_run": config_value(config, "init_from_run") or "",  # transfer: the run it started from
        "parent": info.parent,
        "seconds": sum(row.get("seconds") or 0 for row in metrics),
        "created_at": state.created_at,
        "error": state.error,
        "backend": state.backend,
        "host": state.host,
    }


def display_status(row: Mapping[str, Any]) -> Any:
    """The status word to show for a summarize() row: "broken" when its record has problems, else the job's."""
    return BROKEN if row.get("problems") else row.get("status")


def kept_label(row: Mapping[str, Any]) -> str:
    """Which model a summarize() row's number is about, e.g. "kept: epoch 7 (best val)"; "best val so far" while
    the run trains, and "no model saved" for a run that ended without one; "" before its first epoch."""
    epoch, rule, status = row.get("kept_epoch"), row.get("kept_rule") or KEPT_RULE, row.get("status")
    if not is_int(epoch):
        return ""
    if status == Status.SUCCEEDED.value:
        return f"kept: epoch {epoch} ({rule})"
    if status in (Status.QUEUED.value, Status.RUNNING.value):
        return f"kept: epoch {epoch} ({rule} so far)"
    return f"{rule}: epoch {epoch} ({status}: no model saved)"
