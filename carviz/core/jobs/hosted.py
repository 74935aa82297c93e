"""A job hosted by a warm worker: it runs inside the worker's process (a local process or a Ray job), one job at a
time, so the worker's backend answers for its process, with one difference: the worker lives on after the job
ends, so the job's process counts as alive only while its record says it has not ended."""

from __future__ import annotations

from typing import Any

from carviz.core.jobs.backend import Backend, JobKind, Recorded, Verdict
from carviz.core.jobs.record import JobRecord
from carviz.core.jobs.status import JobState, Status

WORKER_KEY = "worker"  # in a hosted job's launch.json: the id of the worker that runs it


class WorkerHosted(Backend):
    """The backend of a job that a worker claimed; `inner` is the worker's own backend."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.name = inner.name  # type: ignore[misc] - per instance: a hosted job reads as its worker's backend
        self.remote = inner.remote  # type: ignore[misc]

    def launch(self, record: JobRecord, kind: JobKind) -> None:
        raise TypeError(f"{record.id} is run by a worker, which claims it; it is not launched on its own")

    def capacity(self) -> int:
        return self.inner.capacity()

    def judge(self, record: JobRecord, seen: Recorded) -> Verdict | None:
        return self.inner.judge(record, seen)

    def lives(self, record: JobRecord, state: JobState) -> bool:
        try:
            recorded = Status(record.raw_status().get("state"))
        except ValueError:
            recorded = None
        if recorded is not None and recorded not in (Status.QUEUED, Status.RUNNING):
            return False  # ended: its worker goes on with the next job
        return self.inner.lives(record, state)

    def identify_self(self, record: JobRecord) -> dict[str, Any]:
        return self.inner.identify_self(record)

    def kill(self, record: JobRecord, state: JobState) -> bool:
        """Kill the worker, which runs this job and nothing else now (its supervisor starts another for the rest)."""
        return self.lives(record, state) and self.inner.kill(record, state)
