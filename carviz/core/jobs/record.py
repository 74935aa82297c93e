"""A job's record folder: one set of file names, atomic writes, forgiving reads, ids made here, exclusive creation."""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

# The files every job kind shares (runs, sweep feeders, LR range tests, crawls).
STATUS_FILE = "status.json"  # written by the job (and its creator before any process exists)
LAUNCH_FILE = "launch.json"  # written by whoever started the process: backend, pid or Ray submission id
PROGRESS_FILE = "progress.json"  # the job's live progress, rewritten often
HEARTBEAT_FILE = "heartbeat"  # touched by the job every few seconds
STOP_FILE = "stop_request"  # the one thing the UI/CLI writes: "please stop"
LOG_FILE = "job.log"  # the job's stdout/stderr and log lines
OLD_LOG_FILES = ("train.log",)  # what records made before the shared runtime call their log

BACKEND_ENV = "CARVIZ_JOB_BACKEND"  # set by the launcher for the job: "local" or "ray"

HEARTBEAT_INTERVAL = 2.0  # seconds between heartbeat touches
HEARTBEAT_STALE_SECONDS = 60.0  # no touch for this long: the job is hung or gone


def now_iso() -> str:
    """The time now in UTC, ISO 8601 to the millisecond (one precision for every record)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def parse_iso(text: Any) -> datetime | None:
    """A timestamp written by now_iso (or an older second-precision one); None when it is not one."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def hostname() -> str:
    return socket.gethostname()


_last_id_millis = 0
_id_lock = threading.Lock()


def new_id() -> str:
    """Sortable by creation time (to the millisecond) and unique: 20261128-001502.123-3fa9c1.

    Ids made by one process strictly increase even within a millisecond (a sweep creates its runs in one go and
    launch order is id order): a repeat moves to the next millisecond.
    """
    global _last_id_millis
    with _id_lock:
        millis = max(int(time.time() * 1000), _last_id_millis + 1)
        _last_id_millis = millis
    seconds, rest = divmod(millis, 1000)
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime(seconds)) + f".{rest:03d}-" + secrets.token_hex(3)


def make_record_dir(root: Path) -> Path:
    """A new folder under `root` named by new_id(), created with an exclusive mkdir (two creators never share one)."""
    root.mkdir(parents=True, exist_ok=True)
    for _ in range(20):
        path = root / new_id()
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise RuntimeError(f"could not create a unique record folder under {root}")


def atomic_write_text(path: Path, text: str, durable: bool = True) -> None:
    """Write a whole file so readers see the old or the new content, never a mix.

    durable=False skips the fsync: for files rewritten every second (progress), where losing the last write in a
    power cut costs nothing and an fsync on the training thread costs time. A failed write (a full disk) removes
    its temp file before the error goes on.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: Any, durable: bool = True) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False, default=str), durable)


def read_json(path: Path) -> Any | None:
    """The parsed file, or None when it is missing, not UTF-8 or not JSON (mid-write by a foreign tool)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_json_object(path: Path) -> dict[str, Any]:
    """read_json, but only a JSON object counts: anything else (a list, a string, a number) reads as {}."""
    data = read_json(path)
    return data if isinstance(data, dict) else {}


class JobRecord:
    """A handle on one job's record folder: the files every job kind shares. Cheap to make; reads afresh.

    The job process writes status, progress and heartbeat; the UI and CLI write only the stop request; whoever
    starts the process writes launch.json.
    """

    MARKER = STATUS_FILE  # the file whose presence says "this folder is such a record" (job_main checks it)

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.id = self.path.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JobRecord) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    def file(self, name: str) -> Path:
        return self.path / name

    # --- reading ------------------------------------------------------------------
    def raw_status(self) -> dict[str, Any]:
        return read_json_object(self.file(STATUS_FILE))

    def launch_info(self) -> dict[str, Any]:
        return read_json_object(self.file(LAUNCH_FILE))

    def progress(self) -> dict[str, Any] | None:
        data = read_json(self.file(PROGRESS_FILE))
        return data if isinstance(data, dict) else None

    def stop_requested(self) -> bool:
        return self.file(STOP_FILE).exists()

    def heartbeat_age(self) -> float | None:
        try:
            return time.time() - self.file(HEARTBEAT_FILE).stat().st_mtime
        except OSError:
            return None

    def log_path(self) -> Path:
        """The job's log; records made before the shared runtime used another name."""
        path = self.file(LOG_FILE)
        if not path.exists():
            for old in OLD_LOG_FILES:
                if self.file(old).exists():
                    return self.file(old)
        return path

    def log_tail(self, lines: int = 40) -> str:
        try:
            with open(self.log_path(), "rb") as handle:
                handle.seek(0, os.SEEK_END)
                size = handle.tell()
                handle.seek(max(0, size - 64 * 1024))
                text = handle.read().decode("utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # --- writing (each file has one writer) ----------------------------------------
    def write_status(self, state: Any, **fields: Any) -> None:
        """Only the job process (or the creator/launcher, while no job process lives) calls this."""
        current = self.raw_status()
        current.update(fields)
        current["state"] = getattr(state, "value", state)
        current["updated_at"] = now_iso()
        atomic_write_json(self.file(STATUS_FILE), current)

    def write_progress(self, data: dict[str, Any], durable: bool = False) -> None:
        atomic_write_json(self.file(PROGRESS_FILE), {**data, "updated_at": now_iso()}, durable=durable)

    def write_launch(self, data: dict[str, Any]) -> None:
        atomic_write_json(self.file(LAUNCH_FILE), {**data, "launched_at": now_iso()})

    def clear_launch(self) -> None:
        """Forget the last process before a relaunch: its launch record and its (stale) heartbeat."""
        self.file(LAUNCH_FILE).unlink(missing_ok=True)
        self.file(HEARTBEAT_FILE).unlink(missing_ok=True)

    def touch_heartbeat(self) -> None:
        self.file(HEARTBEAT_FILE).write_text(now_iso() + "\n", encoding="utf-8")

    def request_stop(self) -> None:
        """What the UI writes to stop a job: the job notices between steps."""
        atomic_write_text(self.file(STOP_FILE), now_iso() + "\n")

    def clear_stop_request(self) -> None:
        self.file(STOP_FILE).unlink(missing_ok=True)

    def clear_stale_temp_files(self) -> None:
        """Temp files left by a process killed mid-write (they are never read)."""
        for entry in self.path.glob(".*.tmp"):
            entry.unlink(missing_ok=True)
