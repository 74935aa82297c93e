"""The crawl as a job on the shared runtime: launch, read, stop, wait; `python -m carviz.data.crawl.job DATASET_DIR`."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from carviz.core import jobs, settings
from carviz.core.jobs import JobContext, JobKind, JobState, Outcome, Status, derive_state, job_main
from carviz.core.jobs.record import STATUS_FILE
from carviz.core.jobs.status import ProcessCheck
from carviz.data.crawl.crawler import crawl
from carviz.data.crawl.record import SPEC_FILE, STATE_DIR, ClassProgress, CrawlRecord, count_images
from carviz.data.crawl.spec import CrawlSpec
from carviz.data.importer import dataset_path

CRAWL_JOB = JobKind(name="crawl", module="carviz.data.crawl.job", needs_accelerator=False)
LAUNCH_LOCK = ".launch.lock"  # held while checking "busy?" and launching, so two launches never both start
NEVER_STARTED_SECONDS = 120.0  # queued this long with no process recorded: the launcher died before starting it


class CrawlBusy(RuntimeError):
    """A crawl is already queued or running for this dataset."""


@dataclass(frozen=True)
class CrawlState:
    """A crawl as read from disk: request, status (lost derived on read), per-class progress and counts."""

    dataset_dir: Path
    status: Status | None  # None: this dataset was never crawled as a job
    spec: CrawlSpec | None
    info: dict[str, Any]  # status.json as written (pid, started_at, ended_at, error, message, saved_now)
    classes: dict[str, ClassProgress]
    manifest_count: int
    failed: int
    rejected: int
    stop_requested: bool
    current: dict[str, str]
    reason: str = ""  # why the status differs from the recorded one (e.g. "process 123 is gone")
    job: JobState | None = None  # the job's state as derived by the shared runtime
    eta_seconds: float | None = None  # while active: the images still wanted at this crawl's rate so far

    @property
    def record(self) -> CrawlRecord:
        return CrawlRecord.for_dataset(self.dataset_dir)

    @property
    def active(self) -> bool:
        return self.status in (Status.QUEUED, Status.RUNNING)

    @property
    def process_alive(self) -> bool:
        """The recorded job process verifiably runs (also when it reads lost: hung, its heartbeat stale)."""
        return self.job is not None and self.job.process == ProcessCheck.ALIVE

    @property
    def saved(self) -> int:
        return sum(p.saved for p in self.classes.values())

    @property
    def target(self) -> int:
        return sum(p.target for p in self.classes.values())

    @property
    def error(self) -> str | None:
        error = self.info.get("error")
        return error if isinstance(error, str) and error else None

    @property
    def message(self) -> str:
        """A note from the end of the job: results that ran out, or a stop that had to kill it."""
        message = self.info.get("message")
        return message if isinstance(message, str) else ""


def _derive(record: CrawlRecord) -> tuple[Status | None, JobState | None, str]:
    if not record.file(STATUS_FILE).exists():
        return None, None, ""
    state = derive_state(record)
    if state.process == ProcessCheck.GONE:
        state = derive_state(record)  # the job may have written its final status and exited since the first read
    status, reason = state.status, state.reason
    if status == Status.QUEUED and state.pid is None and not record.launch_info():
        age = time.time() - record.file(STATUS_FILE).stat().st_mtime
        if age > NEVER_STARTED_SECONDS:
            status, reason = Status.LOST, f"queued {age:.0f} s ago and never started"
    return status, state, reason


def read_crawl(dataset_dir: str | Path) -> CrawlState:
    """The crawl state of a dataset; "lost" when the job's process is gone, its pid reused or its heartbeat stale."""
    dataset = dataset_path(dataset_dir)
    record = CrawlRecord.for_dataset(dataset)
    status, job, reason = _derive(record)
    spec = record.spec_or_none()
    progress = record.progress() or {}
    classes: dict[str, ClassProgress] = {}
    rows = progress.get("classes")
    for name, row in (rows.items() if isinstance(rows, dict) else ()):
        with contextlib.suppress(TypeError, ValueError, AttributeError):
            classes[name] = ClassProgress.from_dict(row)
    if spec is not None:
        for request in spec.classes:
            classes.setdefault(request.name, ClassProgress(target=request.target))
            classes[request.name].target = request.target
    active = status in (Status.QUEUED, Status.RUNNING)
    if not active:  # the folders may have changed since (review, import): count what is there
        for name, item in classes.items():
            with contextlib.suppress(ValueError):
                item.saved = count_images(settings.safe_join(record.dataset_dir, name))
    errors = record.error_rows()
    current = progress.get("current") if active else None
    return CrawlState(
        dataset_dir=record.dataset_dir,
        status=status,
        spec=spec,
        info=record.raw_status(),
        classes=classes,
        manifest_count=len(record.manifest_rows()),
        failed=sum(1 for e in errors if e.get("kind") in ("broken", "page")),
        rejected=sum(1 for e in errors if e.get("kind") == "rejected"),
        stop_requested=record.stop_requested(),
        current=current if isinstance(current, dict) else {},
        reason=reason,
        job=job,
        eta_seconds=progress.get("eta_seconds") if active and isinstance(progress.get("eta_seconds"), (int, float))
        else None,
    )


@contextlib.contextmanager
def _launch_lock(record: CrawlRecord) -> Iterator[None]:
    fd = os.open(record.file(LAUNCH_LOCK), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def launch_crawl(dataset: str | Path, spec: CrawlSpec | dict[str, Any]) -> Path:
    """Save the request and start the crawl job (a detached process in its own session: it outlives the caller).

    A dataset crawled before resumes: URLs already tried are not fetched again, images kept count toward the
    targets. CrawlBusy while a crawl of this dataset is queued or running. Returns the dataset folder.
    """
    spec = spec if isinstance(spec, CrawlSpec) else CrawlSpec.from_dict(spec)
    ds = dataset_path(dataset, create=True)
    record = CrawlRecord.for_dataset(ds)
    record.path.mkdir(exist_ok=True)
    with _launch_lock(record):
        state = read_crawl(ds)
        if state.active:
            raise CrawlBusy(f"a crawl is already running for {ds.name}; stop it first")
        if state.process_alive:
            raise CrawlBusy(f"the last crawl of {ds.name} ({state.reason}) still has a process; stop it first")
        record.clear_stop_request()
        record.clear_launch()
        record.write_spec(spec)
        record.reset_status(Status.QUEUED, engine=spec.engine)
        record.write_progress({"current": {}, "classes": {}})
        jobs.launch_or_fail(record, CRAWL_JOB, "local")
    return ds


def request_stop(dataset_dir: str | Path) -> bool:
    """Write the stop request only (never blocks, never signals); False when no crawl is active."""
    state = read_crawl(dataset_dir)
    if not state.active:
        return False
    state.record.request_stop()
    return True


def _poll(dataset: Path, done: Callable[[CrawlState], bool], timeout: float, poll: float = 0.1) -> CrawlState | None:
    """read_crawl until done(state) or timeout; the state, or None on timeout."""
    end = time.monotonic() + timeout
    while True:
        state = read_crawl(dataset)
        if done(state):
            return state
        if time.monotonic() >= end:
            return None
        time.sleep(poll)


def stop_crawl(dataset_dir: str | Path, timeout: float = 10.0) -> CrawlState:
    """Ask the job to stop and give it `timeout` seconds to end by itself (it keeps every image saved so far);
    then stop it through the runtime, which kills its process group (chromedriver and Chromium too) once verified
    to be the job. A hung job (stale heartbeat) is killed at once."""
    dataset = dataset_path(dataset_dir)
    state = read_crawl(dataset)
    if not (state.active or state.process_alive):
        return state
    record = state.record
    record.request_stop()
    if state.active and _poll(dataset, lambda s: not s.active, timeout) is not None:
        return read_crawl(dataset)
    jobs.stop(record, timeout=0)
    final = read_crawl(dataset)
    if final.job is not None and final.job.recorded == Status.STOPPED and "saved_now" not in final.info:
        # the runtime recorded the stop (the job never got to): its writer is dead, so nobody races this write
        record.write_status(Status.STOPPED, message=f"killed: did not stop within {timeout:g} s")
        final = read_crawl(dataset)
    return final


def wait_crawl(dataset_dir: str | Path, timeout: float | None = None, poll: float = 0.5,
               on_state: Callable[[CrawlState], None] | None = None) -> CrawlState:
    """Block until the crawl is no longer active (or timeout); on_state gets each state read (CLI progress)."""
    end = None if timeout is None else time.monotonic() + timeout
    while True:
        state = read_crawl(dataset_dir)
        if on_state:
            on_state(state)
        if not state.active or (end is not None and time.monotonic() >= end):
            return state
        time.sleep(poll)


# ---------------------------------------------------------------- the job process


def crawl_body(context: JobContext) -> Outcome:
    """The job: run the saved request until done or asked to stop; the end status says which."""
    record = CrawlRecord(context.record.path)
    spec = record.spec()  # a bad spec.json fails the job with the reason
    result = crawl(spec, record.dataset_dir, context.should_stop, log_to_record=False)
    short = {n: f"{p.saved}/{p.target}" for n, p in result.classes.items() if p.saved < p.target}
    message = "" if result.stopped or not short else \
        "search results ran out: " + ", ".join(f"{n} {v}" for n, v in short.items())
    fields: dict[str, Any] = {"saved_now": result.saved_now, "message": message}
    if spec.audit_when_done and not result.stopped:  # a job of its own: the crawl's Chromium is not kept waiting
        from carviz.data.audit_record import launch_audit

        try:
            fields["audit"] = launch_audit(record.dataset_dir).id
        except (OSError, ValueError) as error:
            fields["message"] = (message + "; " if message else "") + f"the audit could not start: {error}"
    return Outcome(Status.STOPPED if result.stopped else Status.SUCCEEDED, fields)


def main(argv: list[str] | None = None) -> int:
    """`python -m carviz.data.crawl.job DATASET_DIR` (or its .crawl folder): run the dataset's saved crawl."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) == 1:
        folder = Path(args[0])
        if not (folder / SPEC_FILE).is_file() and (folder / STATE_DIR / SPEC_FILE).is_file():
            args = [str(folder / STATE_DIR)]
    return job_main(args, crawl_body, kind="crawl", needs_accelerator=False, marker_file=SPEC_FILE,
                    record_type=CrawlRecord)


if __name__ == "__main__":
    from carviz.data.crawl.job import main as module_main

    sys.exit(module_main())
