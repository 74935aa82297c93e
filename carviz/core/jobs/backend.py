"""The Backend interface: what the job runtime asks of whatever starts, watches and kills a job's process.

Implementations: local.LocalBackend (a detached process here), ray_backend.RayBackend (a Ray job on a cluster) and
hosted.WorkerHosted (a job run inside a warm worker, itself a job of one of the other two). registry.py picks one
by name or from a record's launch.json; nobody else compares backend names.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from carviz.core.jobs.record import JobRecord
from carviz.core.jobs.status import JobState, ProcessCheck, Status


@dataclass(frozen=True)
class JobKind:
    """A kind of job: the module whose main is job_main, and whether it needs an accelerator (then it takes a
    slot locally, or a GPU on Ray)."""

    name: str
    module: str
    needs_accelerator: bool


@dataclass(frozen=True)
class Verdict:
    """A backend's view of a job whose record says queued or running: the status to show, why it differs from the
    record (else ""), an error to show in place of the record's (else None), and what was found of the process."""

    status: Status
    reason: str = ""
    error: str | None = None
    process: ProcessCheck | None = None


@dataclass(frozen=True)
class Recorded:
    """What the record says of the job's process, read once: status.json (written by the job) and launch.json
    (written by the launcher). pid, create_time and host come from status.json once the job wrote its own."""

    status: Status
    raw: dict[str, Any]
    launch: dict[str, Any]
    pid: int | None
    create_time: Any
    host: str | None


class Backend(ABC):
    """Starts a job's process and answers for it: how many run at once, whether it lives, how to kill it, and what
    a queued or running record really means."""

    name: ClassVar[str]
    remote: ClassVar[bool] = False  # the job's process runs elsewhere: its pid means nothing here
    local_slots: ClassVar[bool] = False  # accelerator jobs queue on this machine's slots (else the backend's own)

    @abstractmethod
    def launch(self, record: JobRecord, kind: JobKind) -> None:
        """Start `kind`'s job on `record`; writes launch.json. The job writes its own status."""

    @abstractmethod
    def capacity(self) -> int:
        """How many accelerator jobs run at once."""

    @abstractmethod
    def judge(self, record: JobRecord, seen: Recorded) -> Verdict | None:
        """The job's status now, for a record that says queued or running; None when the record changed while it
        was being judged (the job recorded its end just before exiting): read it again."""

    @abstractmethod
    def lives(self, record: JobRecord, state: JobState) -> bool:
        """Whether the job's process may still run (then it is never resumed beside itself)."""

    @abstractmethod
    def kill(self, record: JobRecord, state: JobState) -> bool:
        """End the job's process now, only when it is verifiably the job; True if it was signalled."""

    @abstractmethod
    def identify_self(self, record: JobRecord) -> dict[str, Any]:
        """Called inside the running job of `record` (a worker): the launch.json fields by which this backend knows
        this very process, for the jobs it hosts (so they read lost if it dies, and stop kills it)."""

    def available(self) -> bool:
        """Whether a user can pick this backend now."""
        return True

    def cancel_pending(self, record: JobRecord, state: JobState) -> bool:
        """Withdraw a job that waits in the backend's own queue with no process yet; True if it was withdrawn
        (then nobody runs it and the caller records it stopped). Locally a queued job's process exists at once."""
        return False

    def exits_after_status(self) -> bool:
        """Whether the job's process may outlive its final status by a moment (it saves and cleans up), so Resume
        waits until it is gone (see jobs.still_exiting)."""
        return False
