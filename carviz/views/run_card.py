"""What a run's card on the Train page says (no Streamlit here): its headline, progress bar, metrics line, kept
model and notes, read from the run's files once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from carviz.core.lineage import lineage_line
from carviz.core.record_checks import BROKEN
from carviz.core.run_info import RunInfo
from carviz.core.store import Run, RunState, Status, kept_label, summarize
from carviz.views.cache_report import run_line
from carviz.views.formatting import format_accuracy, format_metric, format_seconds, number, status_label
from carviz.views.run_notes import live_value, progress_line, resume_line


def where_ran(state: Any, info: RunInfo) -> str:
    """Where a run ran (or runs) and in what precision, e.g. "ray · node-3 · GPU 0 (NVIDIA H200) · mixed_float16"."""
    device = info.device
    parts = [str(getattr(state, "backend", None) or device.get("backend") or "local")]
    node = device.get("node") or getattr(state, "host", None)
    if node:
        parts.append(str(node))
    if device.get("gpus") and isinstance(device["gpus"], list):
        visible = device.get("cuda_visible_devices")
        parts.append(f"GPU {visible} ({', '.join(map(str, device['gpus']))})" if visible else
                     ", ".join(map(str, device["gpus"])))
    elif device.get("kind") == "cpu":
        parts.append("CPU")
    if isinstance(info.precision.get("used"), str):  # what "auto" became, with its reason in run.json
        parts.append(info.precision["used"])
    return " · ".join(parts)


def progress_fraction(progress: Mapping[str, Any] | None, status: str, epochs_done: int, epochs: Any) -> float:
    """Share of the job done, 0..1: epochs finished plus the current epoch's steps (wrong-typed fields ignored)."""
    if status == "succeeded":
        return 1.0
    epochs = max(1, int(number(epochs) or 1))
    fraction = epochs_done / epochs
    if progress and progress.get("phase") == "training":
        epoch = number(progress.get("epoch")) or 0
        step = number(progress.get("step")) or 0
        steps = number(progress.get("steps_per_epoch")) or 0
        if epoch and steps > 0:
            fraction = max(fraction, ((epoch - 1) + min(step / steps, 1.0)) / epochs)
    return max(0.0, min(1.0, fraction))


@dataclass(frozen=True)
class RunCard:
    """A run's card, as text: the page places it and adds the buttons."""

    title: str
    status: Status
    live: bool  # queued or running
    headline: str  # status · backbone · lr · freeze · where it runs
    progress_text: str
    progress: float
    metrics_line: str
    kept_line: str  # "" before the run has a kept model
    notes: list[str] = field(default_factory=list)  # lineage, how it trained (cache), what its last resume found
    problems: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    row: dict[str, Any] = field(default_factory=dict)  # summarize()'s


def run_card(run: Run, state: RunState) -> RunCard:
    """The card of `run` in `state`, each of its files read once."""
    status = state.status
    config = run.config_dict()
    metrics = run.metrics()
    progress = run.progress() or {}
    info = run.run_info()
    row = summarize(run, config, metrics, info, state)
    problems = row["problems"]  # a damaged record shows as broken, with what is wrong
    epochs = int(number(config.get("epochs")) or number(progress.get("epochs")) or 1)
    name = config.get("name") if isinstance(config.get("name"), str) else ""
    shown = f"{status_label(BROKEN)} (job {status.value})" if problems else status_label(status.value)
    headline = (f"{shown} · {config.get('backbone')} · lr {config.get('learning_rate')} · freeze "
                f"{config.get('freeze')} · {where_ran(state, info)}" + (f"  \n{state.reason}" if state.reason else ""))
    live = status in (Status.QUEUED, Status.RUNNING)
    last = metrics[-1] if metrics else {}
    ips = number(progress.get("images_per_second"))
    metrics_line = (
        (f"{ips:.0f} img/s · ETA {format_seconds(progress.get('eta_seconds'))} · " if live and ips else "")
        + f"loss {format_metric(live_value(progress, last, 'loss') if live else last.get('loss'))} · "
        f"acc {format_accuracy(live_value(progress, last, 'accuracy') if live else last.get('accuracy'))} · "
        f"val loss {format_metric(last.get('val_loss'))} · val acc {format_accuracy(last.get('val_accuracy'))}"
        + (f" (latest: epoch {last['epoch']})" if number(last.get("epoch")) else ""))
    kept = kept_label(row)
    kept_line = (f"**{kept}** · val acc {format_accuracy(row['kept_val_accuracy'])}"
                 + (f" · test acc {format_accuracy(row['test_accuracy'])}" if row.get("test_accuracy") is not None
                    else "")) if kept else ""
    notes = [note for note in (lineage_line(info.parent, config.get("init_from_run")), run_line(info),
                               resume_line(info)) if note]
    return RunCard(
        title=name or run.id, status=status, live=live, headline=headline,
        progress_text=progress_line(status.value, progress, len(metrics), epochs),
        progress=progress_fraction(progress, BROKEN if problems else status.value, len(metrics), epochs),
        metrics_line=metrics_line, kept_line=kept_line, notes=notes, problems=problems, config=config,
        metrics=metrics, row=row)
