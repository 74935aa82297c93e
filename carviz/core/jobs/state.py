"""A job's state as derived on read: the record, corrected for a dead, reused or stale process, or Ray's verdict."""

from __future__ import annotations

from typing import Any

from carviz.core.jobs.backend import Recorded, Verdict
from carviz.core.jobs.record import HEARTBEAT_STALE_SECONDS, JobRecord
from carviz.core.jobs.registry import backend_of
from carviz.core.jobs.status import JobState, ProcessCheck, Status


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def derive_state(record: JobRecord, _reread: bool = True) -> JobState:
    """The job's state now. A queued/running record is judged by its backend (local: a process that is gone reads
    LOST, or STOPPED after a stop request; Ray: Ray's own job status); then one whose heartbeat went stale reads
    LOST."""
    raw = record.raw_status()
    launch = record.launch_info()
    try:
        recorded: Status | None = Status(raw.get("state"))
    except ValueError:
        recorded = None
    backend = backend_of(launch)
    own_pid = _int_or_none(raw.get("pid"))
    pid = own_pid or _int_or_none(launch.get("pid"))
    create_time = raw.get("pid_create_time") if own_pid else launch.get("pid_create_time")
    host = _text_or_none(raw.get("host") if own_pid else launch.get("host"))
    status = recorded if recorded is not None else Status.LOST
    reason = "" if recorded is not None else "status.json missing or unreadable"
    process: ProcessCheck | None = None
    if recorded in (Status.QUEUED, Status.RUNNING):
        verdict = backend.judge(record, Recorded(recorded, raw, launch, pid, create_time, host))
        if verdict is None:  # the job recorded its end while being judged: read it again (once)
            if _reread:
                return derive_state(record, _reread=False)
            verdict = Verdict(Status.LOST, f"process {pid} is gone", process=ProcessCheck.GONE)
        status, reason, process = verdict.status, verdict.reason, verdict.process
        if verdict.error:
            raw = {**raw, "error": verdict.error}
        # A job's harness beats from its start, also while it waits for a slot: a stale beat means hung or gone.
        if status == recorded and process != ProcessCheck.GONE:
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
        backend=backend.name,
        host=host,
        process=process,
    )
