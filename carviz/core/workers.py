"""Warm workers: a sweep's runs run one after another inside long-lived worker jobs (one per slot, or per Ray
GPU/CPU share), so a run skips a process's start-up: imports, the dataset scan, the feature load.

This module is the protocol, without TensorFlow: how the feeder keeps enough workers alive, how a worker claims
the next run (under the run's own job lock, so a worker, a resume and another worker never take the same run), and
what a claimed run's launch.json says. The worker's body is ml/worker.py. Each run keeps its own record, lock,
status, heartbeat, stop request and checkpoint exactly as a run with a process of its own; it reads lost when its
worker dies (its recorded process is the worker's), and resumes like any run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable

from carviz.core import jobs
from carviz.core.config import grid_point
from carviz.core.jobs import JobKind, Status
from carviz.core.jobs.harness import _hold_job_lock
from carviz.core.jobs.hosted import WORKER_KEY
from carviz.core.store import Run, Sweep, Worker

WORKER_JOB = JobKind("sweep worker", "carviz.ml.worker", needs_accelerator=True)
TRAIN_MODULE = "carviz.ml.train"  # what a hosted run's launch.json names as its module (resume relaunches it)
WARM_ENV = "CARVIZ_WARM_WORKERS"  # "0": every run of a sweep gets a process of its own (the feeder launches it)
MAX_FAILED_STARTS = 3  # workers that ended without hosting a run before the feeder gives the sweep's runs up


def enabled() -> bool:
    """Whether sweeps run in warm workers ($CARVIZ_WARM_WORKERS, default on)."""
    return os.environ.get(WARM_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def never_launched(run: Run) -> bool:
    """Queued and never given to a process: no pid recorded and no launch.json."""
    status = run.raw_status()
    return status.get("state") == Status.QUEUED.value and not status.get("pid") and not run.launch_info()


def pending_runs(sweep: Sweep) -> list[Run]:
    """The sweep's runs that wait for a worker, in launch order."""
    return [run for run in sweep.runs() if run.path.is_dir() and never_launched(run) and not run.stop_requested()]


def pruned_sibling_of(run: Run, runs: Iterable[Run]) -> Run | None:
    """Another run of the same grid point (backbone, lr, freeze) that was pruned, or None."""
    try:
        point = grid_point(run.config())
    except (ValueError, TypeError, KeyError):
        return None
    for other in runs:
        if other.id != run.id and other.raw_status().get("state") == Status.PRUNED.value:
            try:
                if grid_point(other.config()) == point:
                    return other
            except (ValueError, TypeError, KeyError):
                continue
    return None


def claim_next(sweep: Sweep, launch: dict[str, object]) -> tuple[Run, int] | None:
    """The next run of `sweep` that waits, claimed for the calling worker: its job lock taken (the fd is returned,
    for run_job) and its launch.json written from `launch` (the worker's identity, see Backend.identify_self).
    A run whose configuration was pruned meanwhile is recorded pruned and passed over. None when none waits."""
    runs = sweep.runs()
    for run in runs:
        if not run.path.is_dir() or not never_launched(run) or run.stop_requested():
            continue
        lock_fd = _hold_job_lock(run)
        if lock_fd is None:
            continue  # another worker or a resume is taking it
        if not never_launched(run) or run.stop_requested():  # taken or stopped before we held the lock
            os.close(lock_fd)
            continue
        sibling = pruned_sibling_of(run, runs)
        if sibling is not None:  # its configuration was dropped at a rung: no seed of it trains any more
            run.write_status(Status.PRUNED, ended_at=jobs.now_iso(), pruned_at_epoch=0,
                             pruned_reason=f"its configuration was pruned ({sibling.id})")
            os.close(lock_fd)
            continue
        run.write_launch({**launch, "module": TRAIN_MODULE})
        return run, lock_fd
    return None


def hosted_launch(worker: Worker, backend: str) -> dict[str, object]:
    """What the runs a worker claims record as their launch: the worker's process as its backend knows it."""
    return {**jobs.get_backend(backend).identify_self(worker), WORKER_KEY: worker.id}


def _ended_without_hosting(worker: Worker) -> str | None:
    """The error of a worker that failed before it hosted any run (a broken start), else None."""
    state = jobs.derive_state(worker)
    if state.status != Status.FAILED or worker.raw_status().get("runs"):
        return None
    progress = worker.progress() or {}
    if progress.get("run"):
        return None  # it hosted one, which then crashed it: that run reads lost; a new worker takes the rest
    return state.error or state.reason or state.status.value


def supervise(sweep: Sweep, should_stop: Callable[[], bool], poll: float = 1.0) -> int:
    """The feeder's loop with warm workers: while runs wait, keep min(capacity, runs waiting) workers alive,
    replacing any that ended (a worker killed with a run reads lost in that run; the next worker takes the rest).
    After MAX_FAILED_STARTS workers that failed before hosting anything, the waiting runs are recorded failed with
    the last worker's reason. Returns how many workers it started."""
    started = 0
    while not should_stop():
        pending = pending_runs(sweep)
        if not pending:
            break
        workers = sweep.workers()
        broken = [error for error in map(_ended_without_hosting, workers) if error]
        if len(broken) >= MAX_FAILED_STARTS:
            for run in pending:
                run.write_status(Status.FAILED, ended_at=jobs.now_iso(),
                                 error=f"no worker could start ({len(broken)} tried): {broken[-1]}")
            raise RuntimeError(f"{len(broken)} workers failed before running anything; last: {broken[-1]}")
        live = sum(1 for worker in workers if not jobs.derive_state(worker).status.is_terminal())
        if live < min(jobs.capacity(sweep.backend), len(pending)):
            worker = sweep.create_worker()
            jobs.launch_or_fail(worker, WORKER_JOB, sweep.backend)
            started += 1
            continue
        time.sleep(poll)
    return started


def stop_workers(sweep: Sweep) -> None:
    """Ask the sweep's workers to stop (each ends after its current run, which its own stop request ends); one
    still waiting in its backend's queue (Ray) is withdrawn."""
    for worker in sweep.workers():
        state = jobs.derive_state(worker)
        if state.status.is_terminal():
            continue
        worker.request_stop()
        if state.recorded == Status.QUEUED and state.pid is None and \
                jobs.backend_of(worker.launch_info()).cancel_pending(worker, state):
            worker.write_status(Status.STOPPED, ended_at=jobs.now_iso())
