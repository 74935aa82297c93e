"""One Status for every job kind, the one rule for telling whether a recorded process is the job, and JobState."""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from carviz.core.jobs.record import hostname


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


# A recorded start below this is seconds since boot (what process_create_time records on Linux); above, seconds since
# the epoch (other systems, and records written before carviz recorded boot-relative starts).
BOOT_RELATIVE_BELOW = 1e8


def check_process(pid: Any, create_time: Any, host: Any = None) -> ProcessCheck:
    """One rule for every job kind: a process counts as the job only when its start time matches the record.

    A process that cannot be verified (AccessDenied, another host, or no start time recorded) is UNVERIFIABLE: it
    is never signalled, and its liveness falls back to the heartbeat. A pid with no process behind it is GONE.
    """
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return ProcessCheck.GONE
    if isinstance(host, str) and host and host != hostname():
        return ProcessCheck.UNVERIFIABLE
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
    if isinstance(create_time, bool) or not isinstance(create_time, (int, float)):
        return ProcessCheck.UNVERIFIABLE  # some process has this pid, but nothing says it is the job
    if create_time < BOOT_RELATIVE_BELOW:
        started = start_since_boot(pid)
        if started is None:
            return ProcessCheck.GONE
    if abs(started - create_time) > 1.0:
        return ProcessCheck.GONE  # the pid was reused by another process
    return ProcessCheck.ALIVE


def start_since_boot(pid: int) -> float | None:
    """Linux: when the process started, in seconds since boot (/proc/PID/stat). Unlike an epoch start time, which is
    the boot time plus this, a step of the wall clock (a time sync, a resumed VM) does not move it; None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat[stat.rindex(")") + 2:].split()[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def process_create_time(pid: int) -> float | None:
    """The start time a record keeps to tell its process from a later one with the same pid: seconds since boot on
    Linux (a wall-clock step would otherwise make every running job read lost), else seconds since the epoch. A
    process that reuses the pid after a reboot at the same second of uptime would pass for the job: far less likely
    than a clock step."""
    import psutil

    since_boot = start_since_boot(pid)
    if since_boot is not None:
        return since_boot
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
