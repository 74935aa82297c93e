"""Sweeps: launch a grid of runs as one record, feed its runs to a backend as capacity frees, read its state.

The definition (SweepConfig) is in config.py, the record layout in store.py, pruning in ml/callbacks.py; the feeder
is a light job (`python -m carviz.core.sweeps SWEEP_DIR`) on the shared job runtime.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from carviz.core import eta, jobs
from carviz.core.config import (  # noqa: F401 - the sweep definition is re-exported for callers
    FREEZE_ALL,
    MAX_SWEEP_NAME,
    PruneConfig,
    SweepConfig,
    _is_index,
    expand,
    format_lr,
    grid_point,
    run_name,
)
from carviz.core.jobs import JobContext, JobKind, Outcome, Status
from carviz.core.launch import launch as launch_run
from carviz.core.store import Run, Store, Sweep, summarize
from carviz.core import workers
from carviz.core.workers import never_launched, pruned_sibling_of  # noqa: F401 - pruned_sibling_of re-exported

if TYPE_CHECKING:
    from carviz.ml.backbones import LayerInfo

FEEDER_JOB = JobKind("sweep feeder", "carviz.core.sweeps", needs_accelerator=False)

# Freeze-point rules: long name (UI) -> short name (CLI).
FREEZE_RULES: dict[str, str] = {
    "every convolution": "conv",
    "every block boundary": "block",
    "every k-th cut point": "cut",
}

# ---------------------------------------------------------------- freeze-point rules


def rule_key(rule: str) -> str:
    """The short name (conv, block, cut) of a rule given by its long or short name."""
    if rule in FREEZE_RULES:
        return FREEZE_RULES[rule]
    if rule in FREEZE_RULES.values():
        return rule
    raise ValueError(f"freeze rule must be one of {', '.join(FREEZE_RULES)} (or {', '.join(FREEZE_RULES.values())})"
                     f"; got {rule!r}")


def freeze_points_from_layers(layers: Sequence["LayerInfo"], rule: str, k: int | None = None) -> list[int]:
    """Seed-rule freeze indices from a layer listing: training starts at each chosen layer (freeze = its index).

    conv: every convolution; block: every block's first layer; cut: every k-th cut point (the k-th, 2k-th, …).
    """
    key = rule_key(rule)
    if key == "conv":
        return [layer.index for layer in layers if layer.is_conv]
    if key == "block":
        return [layer.index for layer in layers if layer.block_start]
    step = 1 if k is None else k
    if not _is_index(step) or step < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    cuts = [layer.index for layer in layers if layer.is_cut_point]
    return cuts[step - 1 :: step]


def freeze_points(backbone: str, rule: str, image_size: int, alpha: float = 1.0, k: int | None = None) -> list[int]:
    """freeze_points_from_layers on the backbone's listing (builds it once with weights=None: imports Keras)."""
    from carviz.ml.backbones import list_layers

    return freeze_points_from_layers(list_layers(backbone, image_size, alpha), rule, k)


# ---------------------------------------------------------------- launching and feeding


def create_sweep(sweep: SweepConfig, runs_root: Path | None = None, backend: str | None = None) -> Sweep:
    """The sweep's record and its queued runs, without a feeder (launch_sweep starts one)."""
    return Store(runs_root).create_sweep(sweep, backend or jobs.default_backend())


def launch_sweep(sweep: SweepConfig, runs_root: Path | None = None, backend: str | None = None) -> Sweep:
    """Create the sweep and start its feeder, a light job that launches the runs in order as capacity frees up
    (a 500-run grid never holds 500 waiting processes). Returns at once. The runs go to `backend`."""
    record = create_sweep(sweep, runs_root, backend)
    start_feeder(record)
    return record


def start_feeder(record: Sweep) -> None:
    """Start the sweep's feeder job on the sweep's backend (it outlives the dashboard)."""
    record.write_status(Status.QUEUED, created_at=jobs.now_iso(), pid=None, pid_create_time=None, ended_at=None)
    record.clear_launch()
    jobs.launch(record, FEEDER_JOB, record.backend)


def feeder_alive(record: Sweep) -> bool:
    return not record.feeder_state().status.is_terminal()


def feed(record: Sweep, max_waiting: int | None = None, poll: float = 1.0,
         should_stop: Any = None) -> int:
    """Launch the sweep's never-launched runs in order, keeping at most max_waiting (default: the backend's
    capacity) of its launched runs waiting, so one is ready whenever capacity frees. Ends when every run is
    launched or the sweep is stopped; returns how many runs it launched."""
    should_stop = should_stop or record.stop_requested
    launched = 0
    while not should_stop():
        pending: list[Run] = []
        waiting = 0
        for run in record.runs():
            if not run.path.is_dir():
                continue
            if never_launched(run):
                if not run.stop_requested():
                    pending.append(run)
            elif run.status() == Status.QUEUED:
                waiting += 1
        if not pending:
            break
        if waiting < (max_waiting or jobs.capacity(record.backend)):
            sibling = pruned_sibling_of(pending[0], record.runs())
            if sibling is not None:  # its configuration was dropped at a rung: no seed of it trains any more
                pending[0].write_status(Status.PRUNED, ended_at=jobs.now_iso(), pruned_at_epoch=0,
                                        pruned_reason=f"its configuration was pruned ({sibling.id})")
                continue
            launch_run(pending[0], record.backend)
            launched += 1
        else:
            time.sleep(poll)
    return launched


def read_record(sweep_id: str, runs_root: Path | None = None) -> Sweep:
    """The sweep with exactly this id; LookupError when it is missing or unreadable."""
    return Store(runs_root).get_sweep(sweep_id)


def list_sweeps(runs_root: Path | None = None) -> list[Sweep]:
    return Store(runs_root).list_sweeps()


def find_sweep(ref: str, runs_root: Path | None = None) -> Sweep:
    return Store(runs_root).find_sweep(ref)


# ---------------------------------------------------------------- state


DONE_STATUSES = (Status.SUCCEEDED.value, Status.PRUNED.value, Status.FAILED.value)


def _seconds_between(start: str | None, end: str | None) -> float | None:
    try:
        return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def run_summary(run: Run) -> dict[str, Any]:
    """summarize() plus what a sweep chart needs: seed, trainable parameters, first trainable layer, wall time."""
    config, info = run.config_dict(), run.run_info()
    row = summarize(run, config, info=info)
    model = info.model  # wrong-typed fields read as missing (row["problems"] says)
    status = run.raw_status()
    seed, pruned_at = config.get("seed"), status.get("pruned_at_epoch")
    row.update({
        "seed": seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
        "sweep": config.get("sweep") if isinstance(config.get("sweep"), str) else "",
        "trainable_params": model.trainable_params if model else None,
        "layer": model.first_trainable if model else None,
        "wall_seconds": _seconds_between(status.get("started_at"), status.get("ended_at")),
        "pruned_at_epoch": pruned_at if row["status"] == Status.PRUNED.value and isinstance(pruned_at, int)
        and not isinstance(pruned_at, bool) else None,
    })
    return row


def sweep_status(statuses: Iterable[str]) -> str:
    """One word for a sweep: running / queued while any run is; done when all succeeded or were pruned;
    stopped when any run stopped or was lost (resumable); else failed."""
    statuses = list(statuses)
    if Status.RUNNING.value in statuses:
        return "running"
    if Status.QUEUED.value in statuses:
        return "queued"
    if all(s in (Status.SUCCEEDED.value, Status.PRUNED.value) for s in statuses):
        return "done"
    if any(s in (Status.STOPPED.value, Status.LOST.value) for s in statuses):
        return "stopped"
    return "failed"


def _timing(run: Run, row: dict[str, Any]) -> eta.RunTiming:
    """What the sweep's estimate needs of one run (its configuration, epochs and times), from its summary row."""
    try:
        point = grid_point(run.config())
    except (ValueError, TypeError, KeyError):
        point = run.id  # unreadable config: a configuration of its own
    seconds = [row["seconds"] for row in run.metrics() if isinstance(row.get("seconds"), (int, float))]
    progress = run.progress() or {}
    started = bool(seconds) or progress.get("phase") == "training"
    epochs = row["epochs"] if isinstance(row["epochs"], int) else len(seconds)
    return eta.RunTiming(status=row["status"], point=point, epochs=epochs, epoch_seconds=seconds,
                         wall_seconds=row["wall_seconds"], started=started)


def sweep_eta(record: Sweep, present: Sequence[Run], rows: Sequence[dict[str, Any]], workers: int) -> float | None:
    """Seconds left (core/eta.py: epochs left with pruning, per-configuration epoch times, the fixed cost of a run,
    the sweep's concurrent workers)."""
    prune = record.config.prune
    rule = eta.PruneRule(prune.rungs[0], prune.keep_fraction) if prune and prune.rungs else None
    return eta.sweep_eta([_timing(run, row) for run, row in zip(present, rows)], rule, workers)


@dataclass(frozen=True)
class SweepState:
    """A sweep as read now: its record, one run_summary per run (launch order), counts, ETA and best run (the
    finished run with the highest kept val accuracy; whether a configuration wins is views.plots.sweeps.verdict's
    call)."""

    record: Sweep
    rows: list[dict[str, Any]]
    status: str
    n_done: int
    n_total: int
    counts: dict[str, int]
    eta_seconds: float | None
    best: dict[str, Any] | None

    @property
    def progress_text(self) -> str:
        return f"{self.n_done} of {self.n_total} done"


def read_sweep(sweep_id: str, runs_root: Path | None = None, slots: int | None = None) -> SweepState:
    """The sweep's runs with their statuses, n done of m, the time left (sweep_eta) and the best run."""
    record = read_record(sweep_id, runs_root)
    present = [run for run in record.runs() if run.path.is_dir()]
    rows = [run_summary(run) for run in present]
    if not feeder_alive(record):  # runs nobody will launch (the feeder was killed): stopped, resumable
        for run, row in zip(present, rows):
            if never_launched(run):
                row["status"] = Status.STOPPED.value
    statuses = [row["status"] for row in rows]
    counts: dict[str, int] = {}
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    scored = [row for row in rows if row["status"] == Status.SUCCEEDED.value and not row.get("problems")
              and isinstance(row.get("kept_val_accuracy"), (int, float))]  # pruned and unfinished runs: not a best
    best = max(scored, key=lambda row: row["kept_val_accuracy"]) if scored else None
    status = sweep_status(statuses)
    left = None
    if status != "stopped":
        try:
            workers = slots or jobs.capacity(record.backend)
        except (jobs.ray_backend.RayUnavailable, ValueError):  # an unreachable Ray cluster: no ETA, the rest reads
            workers = 0
        left = sweep_eta(record, present, rows, workers) if workers else None
    return SweepState(
        record=record, rows=rows, status=status,
        n_done=sum(1 for s in statuses if s in DONE_STATUSES), n_total=len(record.run_ids), counts=counts,
        eta_seconds=left, best=best,
    )


def stop_sweep(sweep_id: str, runs_root: Path | None = None) -> list[str]:
    """Stop the feeder, ask every launched run that has not ended to stop (waiting ones leave the queue) and mark
    never-launched runs stopped; returns their ids. Never blocks."""
    record = read_record(sweep_id, runs_root)
    record.request_stop()  # first, so the feeder launches nothing more
    workers.stop_workers(record)
    stopped = []
    for run in record.runs():
        if run.path.is_dir() and not run.status().is_terminal():
            run.request_stop()
            if never_launched(run):
                run.write_status(Status.STOPPED, ended_at=jobs.now_iso())
            elif run.raw_status().get("state") == Status.QUEUED.value:  # still pending in Ray: it would start
                state = run.state()                                           # only to stop
                if state.pid is None:
                    jobs.backend_of(run.launch_info()).cancel_pending(run, state)
            stopped.append(run.id)
    return stopped


def resume_sweep(sweep_id: str, runs_root: Path | None = None) -> list[str]:
    """Queue the sweep's stopped and lost runs again (and any never launched) and start a feeder for them; they
    continue from their checkpoints. Pruned, failed and succeeded runs stay as they are."""
    record = read_record(sweep_id, runs_root)
    resumed = []
    for run in record.runs():
        if not run.path.is_dir():
            continue
        state = run.state()
        if state.status in (Status.STOPPED, Status.LOST):
            if state.process == jobs.ProcessCheck.ALIVE:
                continue  # a hung process still holds it: stop it first
            run.clear_stop_request()
            run.clear_launch()  # first (its process is gone): queued beside the old launch would read as its end
            run.write_status(Status.QUEUED, pid=None, pid_create_time=None, error=None, ended_at=None,
                             resumed_at=jobs.now_iso())
            resumed.append(run.id)
        elif never_launched(run):
            resumed.append(run.id)
    if resumed and not feeder_alive(record):
        record.clear_stop_request()
        start_feeder(record)
    return resumed


# ---------------------------------------------------------------- the feeder job


def feeder_body(context: JobContext) -> Outcome:
    """Warm workers (default): keep the sweep's workers alive while runs wait; else launch each run as its own
    process (feed)."""
    record = Sweep(context.record.path)
    if workers.enabled():
        started = workers.supervise(record, context.should_stop)
        print(f"{jobs.now_iso()} feeder done: started {started} workers", flush=True)
        fields = {"workers": started}
    else:
        launched = feed(record, should_stop=context.should_stop)
        print(f"{jobs.now_iso()} feeder done: launched {launched} runs", flush=True)
        fields = {"launched": launched}
    return Outcome(Status.STOPPED if context.should_stop() else Status.SUCCEEDED, fields)


def main(argv: list[str] | None = None) -> int:
    """`python -m carviz.core.sweeps SWEEP_DIR`: the sweep's feeder (see feed)."""
    return jobs.job_main(argv, feeder_body, kind="sweep feeder", needs_accelerator=False, record_type=Sweep)


if __name__ == "__main__":
    from carviz.core.sweeps import main as module_main

    sys.exit(module_main())
