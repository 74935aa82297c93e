"""One runtime for every background job (training, sweep feeder, LR range test, crawl): launch, stop, resume.

A job is `python -m MODULE FOLDER` run by job_main over a record folder (see record.py for its files). Backends
start it: `local` (a detached process here, queued on flock slots) or `ray` (a Ray job on an existing cluster).
"""

from __future__ import annotations

import os
import time

from carviz.core.jobs import local, ray_backend  # noqa: F401 - ray_backend.RayUnavailable is part of the API
from carviz.core.jobs.backend import Backend, JobKind
from carviz.core.jobs.harness import JobContext, Outcome, _hold_job_lock, job_main, run_job
from carviz.core.jobs.record import JobRecord, now_iso  # noqa: F401 - now_iso is part of the API
from carviz.core.jobs.registry import NAMES as BACKENDS
from carviz.core.jobs.registry import backend_of, get_backend
from carviz.core.jobs.slots import gpu_count, slot_count
from carviz.core.jobs.state import derive_state
from carviz.core.jobs.status import JobState, ProcessCheck, Status, check_process

__all__ = [
    "BACKENDS", "Backend", "JobContext", "JobKind", "JobRecord", "JobState", "Outcome", "ProcessCheck", "Status",
    "available_backends", "backend_of", "capacity", "check_process", "derive_state", "get_backend", "gpu_count",
    "job_main", "launch", "launch_or_fail", "resume", "run_job", "slot_count", "still_exiting", "stop",
]


def default_backend() -> str:
    """The configured backend's name ($CARVIZ_BACKEND, else local); ValueError for an unknown one."""
    return get_backend().name


def available_backends() -> list[str]:
    """Backends a user can pick now: local always, ray when a cluster address is configured."""
    return [name for name in BACKENDS if get_backend(name).available()]


def launch(record: JobRecord, kind: JobKind, backend: str | None = None) -> None:
    """Start the job of `record` on `backend` (default: the configured one). The job writes its own status."""
    get_backend(backend).launch(record, kind)


def launch_or_fail(record: JobRecord, kind: JobKind, backend: str | None = None) -> None:
    """launch(), and when the job cannot be started, record it failed with why (so it never reads queued for ever)
    before raising."""
    try:
        launch(record, kind, backend)
    except Exception as error:
        record.write_status(Status.FAILED, error=f"could not launch: {error}", ended_at=now_iso())
        raise


def capacity(backend: str | None = None) -> int:
    """How many accelerator jobs `backend` runs at once (local: slots; ray: the cluster's GPUs or CPUs)."""
    return get_backend(backend).capacity()


def _backend(record: JobRecord) -> Backend:
    return backend_of(record.launch_info())


def _process_lives(record: JobRecord, state: JobState) -> bool:
    return _backend(record).lives(record, state)


def still_exiting(record: JobRecord, state: JobState) -> bool:
    """True for a job recorded as ended whose process has not exited yet (a local job writes its status, then saves
    and cleans up): resuming it now would be refused, so offer Resume only once this is False."""
    backend = _backend(record)
    return state.status.is_terminal() and backend.exits_after_status() and backend.lives(record, state)


def stop(record: JobRecord, timeout: float = 30.0) -> Status:
    """Ask the job to stop between steps; after `timeout` seconds (or at once if it is hung: stale heartbeat)
    kill it. A job that never launched is marked stopped. Returns the final status."""
    record.request_stop()
    state = derive_state(record)
    if state.recorded == Status.QUEUED and state.pid is None and not record.launch_info():
        record.write_status(Status.STOPPED, ended_at=now_iso())  # nobody runs it, so nobody races this write
        return Status.STOPPED
    backend = _backend(record)
    if state.recorded == Status.QUEUED and state.pid is None and state.status == Status.QUEUED and \
            backend.cancel_pending(record, state):  # e.g. still pending in Ray's queue
        record.write_status(Status.STOPPED, ended_at=now_iso())
        return Status.STOPPED
    hung = state.status == Status.LOST and state.reason.startswith("no heartbeat")
    deadline = time.monotonic() + (0 if hung else timeout)
    while time.monotonic() < deadline and backend.lives(record, state):
        time.sleep(0.2)
        state = derive_state(record)
    if backend.lives(record, state) and backend.kill(record, state):
        for _ in range(100):
            if not backend.lives(record, state):
                break
            time.sleep(0.1)
    final = derive_state(record)
    if final.recorded in (Status.QUEUED, Status.RUNNING) and not backend.lives(record, final):
        record.write_status(Status.STOPPED, ended_at=now_iso())  # the writer is dead: record what happened
        return Status.STOPPED
    return final.status


def _wait_for_job_lock(record: JobRecord, seconds: float) -> int | None:
    deadline = time.monotonic() + seconds
    while (fd := _hold_job_lock(record)) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return fd


def resume(record: JobRecord, kind: JobKind, backend: str | None = None) -> None:
    """Relaunch a stopped, lost or failed job (on its last backend unless told otherwise); it continues from its
    own checkpoint. Refused while the recorded process still lives, even if it looks lost (e.g. SIGSTOPped).

    The resumer holds the job's lock while it checks and records "queued" (the job holds it for its whole life), so
    of two resumes at once one launches and the other is refused."""
    lock_fd = _hold_job_lock(record)
    if lock_fd is None and not _process_lives(record, derive_state(record)):
        lock_fd = _wait_for_job_lock(record, 10.0)  # a killed job's last threads still exiting, or another resume
    try:
        state = derive_state(record)
        if not state.status.is_terminal() or state.status == Status.SUCCEEDED:
            raise ValueError(f"{record.id} is {state.status.value}: only stopped, lost or failed jobs resume")
        if _process_lives(record, state):
            what = f"Ray job {record.launch_info().get('submission_id')}" if _backend(record).remote else \
                f"process {state.pid}"
            raise ValueError(f"{record.id}: its {what} still runs (or waits in Ray's queue); stop it first")
        if lock_fd is None:
            raise ValueError(f"{record.id}: another process holds its lock (its job, or another resume under way)")
        backend = backend or state.backend if record.launch_info() else backend
        record.clear_stop_request()
        record.clear_launch()  # first: queued beside the old launch.json would read as that (ended) Ray job's end
        record.write_status(Status.QUEUED, pid=None, pid_create_time=None, error=None, ended_at=None,
                            resumed_at=now_iso())
    finally:
        if lock_fd is not None:
            os.close(lock_fd)  # before the launch: the job takes the lock itself
    launch(record, kind, backend)
