"""job_main: the one harness every background job runs in (logging, signals, heartbeat, lock, slot, final status)."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import sys
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from carviz.core.jobs.registry import get_backend
from carviz.core.jobs.record import BACKEND_ENV, HEARTBEAT_INTERVAL, LOG_FILE, JobRecord, hostname, now_iso
from carviz.core.jobs.slots import Slot, acquire_slot, gpu_count
from carviz.core.jobs.status import Status, process_create_time

log = logging.getLogger("carviz.jobs")

LOCK_FILE = ".job.lock"
EXIT_NO_RECORD = 3  # the job cannot see its record folder (e.g. CARVIZ_HOME not on shared storage)
EXIT_BUSY = 4  # another process already runs this job


@dataclass
class Outcome:
    """How a job body ended: its final status and any fields to record beside it (e.g. pruned_at_epoch)."""

    status: Status
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass
class JobContext:
    """What a job body gets: its record, the stop flag (signals and stop requests) and its slot, if any."""

    record: JobRecord
    stop_flag: threading.Event
    slot: Slot | None = None
    backend: str = "local"
    host_stop: threading.Event | None = None  # a hosted job's worker's stop flag: stopping the worker stops it too

    def should_stop(self) -> bool:
        if self.stop_flag.is_set() or self.record.stop_requested() or \
                (self.host_stop is not None and self.host_stop.is_set()):
            self.stop_flag.set()
            return True
        return False


class Heartbeat:
    """Touches the record's heartbeat from a thread, so readers can tell a live job from a hung one."""

    def __init__(self, record: JobRecord) -> None:
        self.record = record
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)

    def _beat(self) -> None:
        while not self._stop.is_set():
            try:
                self.record.touch_heartbeat()
            except OSError:
                pass  # a full disk: the job goes on; a stale heartbeat is the right signal if it lasts
            self._stop.wait(HEARTBEAT_INTERVAL)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def setup_logging(log_path: Path) -> None:
    """Log to stderr, and to the job log too unless stderr already is that file (as when a launcher started us)."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    try:
        same = os.path.samestat(os.fstat(sys.stderr.fileno()), os.stat(log_path))
    except (OSError, ValueError):
        same = False
    if not same:
        handlers.append(logging.FileHandler(log_path, encoding="utf-8"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", handlers=handlers,
                        force=True)


@contextlib.contextmanager
def output_to(log_path: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors 1 and 2: Python's prints, log lines and what native
    code writes) to `log_path`, appended, until the block ends: a worker gives each job it hosts its own log."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = [os.dup(1), os.dup(2)]
    target = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.dup2(target, 1)
        os.dup2(target, 2)
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, target):
            os.close(fd)


def install_stop_signals(stop_flag: threading.Event) -> None:
    """SIGTERM and SIGINT ask the job to stop between steps, as a stop request does."""

    def on_signal(signum: int, frame: object) -> None:
        stop_flag.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def _hold_job_lock(record: JobRecord) -> int | None:
    """An exclusive lock on the record for this process's whole life (one writer per job); None if held."""
    fd = os.open(record.file(LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _record_failure(record: JobRecord, error: BaseException) -> None:
    """Write "failed" with the reason; on a full disk, free what this job left behind and try once more."""
    message = f"{type(error).__name__}: {error}"
    for attempt in range(2):
        try:
            record.write_status(Status.FAILED, ended_at=now_iso(), error=message)
            return
        except OSError as write_error:
            log.error("could not record the failure (%s)", write_error)
            record.clear_stale_temp_files()
            if attempt:
                print(f"carviz: job failed ({message}) and its status could not be written", file=sys.stderr)


def run_job(record: JobRecord, body: Callable[[JobContext], Outcome | Status], *, needs_accelerator: bool,
            stop_flag: threading.Event | None = None, slots_dir: Path | None = None, lock_fd: int | None = None,
            host: JobContext | None = None) -> Status:
    """Run `body` as the job of `record` in this process: lock, status, slot (local accelerator jobs), heartbeat,
    final status. A body's exception propagates after "failed" is recorded. Returns the final status.

    A warm worker hosting the job passes the job's lock, already taken when it claimed the job (closed here), and
    its own context as `host`: the job then runs on the worker's slot, and stops when the worker is told to."""
    stop_flag = stop_flag or threading.Event()
    backend = os.environ.get(BACKEND_ENV, "local")
    lock_fd = lock_fd if lock_fd is not None else _hold_job_lock(record)
    if lock_fd is None:
        raise JobBusy(f"another process is already running {record.path}")
    context = JobContext(record, stop_flag, backend=backend, slot=host.slot if host else None,
                         host_stop=host.stop_flag if host else None)
    if host is not None:
        needs_accelerator = False  # the worker holds a slot for its whole life, and this job runs on it
    try:
        try:
            with Heartbeat(record):
                outcome = _start_and_run(record, body, context, needs_accelerator, slots_dir)
        except BaseException as error:  # also before the body starts: a full disk at the first status write
            if isinstance(error, KeyboardInterrupt):
                record.write_status(Status.STOPPED, ended_at=now_iso())
            else:
                log.error("job failed:\n%s", traceback.format_exc())
                _record_failure(record, error)
            raise
        record.write_status(outcome.status, ended_at=now_iso(), **outcome.fields)
        return outcome.status
    finally:
        if context.slot is not None and host is None:
            context.slot.release()
        os.close(lock_fd)


def _start_and_run(record: JobRecord, body: Callable[[JobContext], Outcome | Status], context: JobContext,
                   needs_accelerator: bool, slots_dir: Path | None) -> Outcome:
    """Record the process, wait for a slot (local accelerator jobs), record "running", run the body."""
    from carviz.core import settings

    record.clear_stale_temp_files()
    me = os.getpid()
    record.write_status(Status.QUEUED, pid=me, pid_create_time=process_create_time(me), host=hostname(),
                        backend=context.backend, error=None, ended_at=None)
    if needs_accelerator and get_backend(context.backend).local_slots:
        context.slot = acquire_slot(slots_dir or settings.slots_dir(), record.id, context.should_stop)
        if context.slot is None:
            return Outcome(Status.STOPPED)
        if gpu_count() and "CUDA_VISIBLE_DEVICES" not in os.environ:
            os.environ["CUDA_VISIBLE_DEVICES"] = str(context.slot.index)  # one GPU per job, before TF loads
    if context.should_stop():  # asked to stop while waiting (for a slot, or in Ray's queue)
        return Outcome(Status.STOPPED)
    record.write_status(Status.RUNNING, started_at=now_iso(), slot=context.slot.index if context.slot else None,
                        cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"))
    outcome = body(context)
    return Outcome(outcome) if isinstance(outcome, Status) else outcome


class JobBusy(RuntimeError):
    """Another process holds the job's lock: it is running this very job."""


def job_main(argv: list[str] | None, body: Callable[[JobContext], Outcome | Status], *, kind: str,
             needs_accelerator: bool, record_type: type[JobRecord] = JobRecord, marker_file: str | None = None) -> int:
    """`python -m <module> FOLDER`: the process entry point of every job kind. Exit 0 when the job ended as
    succeeded, stopped or pruned; 1 when it failed; 2 on bad arguments; 3 when it cannot see its record (say, on a
    cluster node without the shared CARVIZ_HOME); 4 when another process already runs it."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(f"usage: python -m <{kind} module> FOLDER", file=sys.stderr)
        return 2
    folder = Path(args[0])
    marker_file = marker_file or record_type.MARKER
    if not (folder / marker_file).is_file():
        print(f"carviz: the {kind} job on host {hostname()} cannot see its record {folder} (no {marker_file}). "
              f"CARVIZ_HOME must be on storage that every node sees (see README, 'Clusters').", file=sys.stderr)
        return EXIT_NO_RECORD
    record = record_type(folder.resolve())
    setup_logging(record.file(LOG_FILE))
    stop_flag = threading.Event()
    install_stop_signals(stop_flag)
    try:
        status = run_job(record, body, needs_accelerator=needs_accelerator, stop_flag=stop_flag)
    except JobBusy as busy:
        print(f"carviz: {busy}", file=sys.stderr)
        return EXIT_BUSY
    except Exception:  # noqa: BLE001 - recorded as failed by run_job, with its reason
        return 1
    return 0 if status in (Status.SUCCEEDED, Status.STOPPED, Status.PRUNED) else 1
