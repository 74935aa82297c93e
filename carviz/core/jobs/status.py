"""One Status for every job kind, and the state of a job as derived on read (lost is derived, never written)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from carviz.core.jobs.record import HEARTBEAT_STALE_SECONDS, JobRecord, hostname


class Status(str, Enum):
    """A job's state. LOST is never written: it is derived on read from a dead or stale process."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STOPPED = "stopped"
    LOST = "lost"
    PRUNED = "pruned"  # a sweep's pruning stopped the run at a rung: it trailed the other runs there

    def is_terminal(self) -> bool:
        return self in (Status.SUCCEEDED, Status.FAILED, Status.STOPPED, Status.LOST, Status.PRUNED)


class ProcessCheck(str, Enum):
    """What can be said of a recorded process from this machine."""

    ALIVE = "alive"  # runs, and its start time matches: it is the job
    GONE = "gone"  # no such process, a zombie, or the pid now belongs to another process
    UNVERIFIABLE = "unverifiable"  # exists but cannot be inspected, or runs on another host


def check_process(pid: Any, create_time: Any, host: Any = None) -> ProcessCheck:
    """One rule for every job kind: a process counts as the job only when its start time matches the record.

    A process that cannot be inspected (AccessDenied, another host) is UNVERIFIABLE: it is never signalled, and
    its liveness falls back to the heartbeat.
    """
    if isinstance(host, str) and host and host != hostname():
        return ProcessCheck.UNVERIFIABLE
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return ProcessCheck.GONE
    import psutil

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return ProcessCheck.GONE
        started = process.create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return ProcessCheck.GONE
    except psutil.AccessDenied:
        return ProcessCheck.UNVERIFIABLE
    if isinstance(create_time, (int, float)) and abs(started - create_time) > 1.0:
        return ProcessCheck.GONE  # the pid was reused by another process
    return ProcessCheck.ALIVE


def process_create_time(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


@dataclass(frozen=True)
class JobState:
    """A job's status as derived on read: what status.json says, corrected for a dead, stale or failed process."""

    status: Status
    recorded: Status | None  # what status.json says (None when unreadable)
    pid: int | None
    error: str | None
    created_at: str | None
    started_at: str | None
    ended_at: str | None
    reason: str  # why the derived state differs from the recorded one, else ""
    backend: str = "local"
    host: str | None = None
    process: ProcessCheck | None = None  # None: no process recorded (never launched) or not checked


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def derive_state(record: JobRecord) -> JobState:
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
            from carviz.core.jobs import ray_backend

            status, reason, error = ray_backend.derive(record, recorded, launch)
            if error:
                raw = {**raw, "error": error}
        elif pid is not None:
            process = check_process(pid, create_time, host)
            if process == ProcessCheck.GONE:
                if record.stop_requested():
                    status, reason = Status.STOPPED, "stopped on request (process ended)"
                else:
                    status, reason = Status.LOST, f"process {pid} is gone"
        if status == recorded == Status.RUNNING and process != ProcessCheck.GONE:
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
