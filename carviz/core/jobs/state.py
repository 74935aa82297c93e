"""A job's state as derived on read: the record, corrected for a dead, reused or stale process, or Ray's verdict."""

from __future__ import annotations

from typing import Any

from carviz.core.jobs import ray_backend
from carviz.core.jobs.record import HEARTBEAT_STALE_SECONDS, JobRecord
from carviz.core.jobs.status import JobState, ProcessCheck, Status, check_process


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def derive_state(record: JobRecord, _reread: bool = True) -> JobState:
    """The job's state now. A queued/running record whose process is gone reads LOST (or STOPPED after a stop
    request); a running one whose heartbeat went stale reads LOST; a Ray job is judged by Ray's own status."""
    raw = record.raw_status()
    launch = record.launch_info()
    try:
        recorded: Status | None = Status(raw.get("state"))
    except ValueError:
        recorded = None
    backend = launch.get("backend") if isinstance(launch.get("backend"), str) else "local"
    own_pid = _int_or_none(raw.get("pid"))
    pid = own_pid or _int_or_none(launch.get("pid"))
    create_time = raw.get("pid_create_time") if own_pid else launch.get("pid_create_time")
    host = _text_or_none(raw.get("host") if own_pid else launch.get("host"))
    status = recorded if recorded is not None else Status.LOST
    reason = "" if recorded is not None else "status.json missing or unreadable"
    process: ProcessCheck | None = None
    if recorded in (Status.QUEUED, Status.RUNNING):
        if backend == "ray":
            status, reason, error = ray_backend.derive(record, recorded, launch)
            if error:
                raw = {**raw, "error": error}
        elif pid is None and "pid" in raw and raw.get("pid") is not None:
            status, reason = Status.LOST, f"status.json names no valid process (pid {raw.get('pid')!r})"
        elif pid is not None:
            process = check_process(pid, create_time, host)
            if process == ProcessCheck.GONE:
                again = record.raw_status()  # a job that recorded its end just before exiting is not lost
                if _reread and again.get("state") != raw.get("state"):
                    return derive_state(record, _reread=False)
                if record.stop_requested():
                    status, reason = Status.STOPPED, "stopped on request (process ended)"
                else:
                    status, reason = Status.LOST, f"process {pid} is gone"
        # A job's harness beats from its start, also while it waits for a slot: a stale beat means hung or gone.
        if status == recorded and status in (Status.RUNNING, Status.QUEUED) and process != ProcessCheck.GONE:
            age = record.heartbeat_age()
            if age is not None and age > HEARTBEAT_STALE_SECONDS:
                status, reason = Status.LOST, f"no heartbeat for {age:.0f} s"
    return JobState(
        status=status,
        recorded=recorded,
        pid=pid,
        error=_text_or_none(raw.get("error")),
        created_at=_text_or_none(raw.get("created_at")),
        started_at=_text_or_none(raw.get("started_at")),
        ended_at=_text_or_none(raw.get("ended_at")),
        reason=reason,
        backend=backend,
        host=host,
        process=process,
    )
