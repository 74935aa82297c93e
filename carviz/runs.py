"""The run store: one folder per run holding its config, status, metrics and progress (no TensorFlow here)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any

from . import settings
from .config import TrainConfig

METRIC_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds")
HEARTBEAT_STALE_SECONDS = 60.0  # a live job touches its heartbeat every 2 s, even while building a model

CONFIG_FILE = "config.json"
STATUS_FILE = "status.json"
LAUNCH_FILE = "launch.json"
METRICS_FILE = "metrics.csv"
PROGRESS_FILE = "progress.json"
HEARTBEAT_FILE = "heartbeat"
STOP_FILE = "stop_request"
LOG_FILE = "train.log"
INFO_FILE = "run.json"
EVALUATION_FILE = "evaluation.json"
CLASSES_FILE = "classes.json"
MODEL_FILE = "model.keras"
CHECKPOINT_DIR = "checkpoint"


class Status(str, Enum):
    """A run's state. LOST is never written: it is derived on read from a dead or stale process."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STOPPED = "stopped"
    LOST = "lost"
    PRUNED = "pruned"  # a sweep's pruning stopped it at a rung: it trailed the other runs there

    def is_terminal(self) -> bool:
        return self in (Status.SUCCEEDED, Status.FAILED, Status.STOPPED, Status.LOST, Status.PRUNED)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


_last_id_millis = 0
_id_lock = threading.Lock()


def new_run_id() -> str:
    """Sortable by creation time (to the millisecond) and unique: 20261128-001502.123-3fa9c1.

    Ids made by one process are strictly increasing even within a millisecond (a sweep creates its runs in one
    go, and launch order is id order), by moving a repeat to the next millisecond.
    """
    global _last_id_millis
    with _id_lock:
        millis = max(int(time.time() * 1000), _last_id_millis + 1)
        _last_id_millis = millis
    seconds, rest = divmod(millis, 1000)
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime(seconds)) + f".{rest:03d}-" + secrets.token_hex(3)


def atomic_write_text(path: Path, text: str, durable: bool = True) -> None:
    """Write a whole file so readers see the old or the new content, never a mix.

    durable=False skips the fsync: for files rewritten every second (progress), where losing the last
    write in a power cut costs nothing and an fsync on the training thread costs time.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        if durable:
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, data: Any, durable: bool = True) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False, default=str), durable)


def read_json(path: Path) -> Any | None:
    """The parsed file, or None when it is missing or (mid-write by a foreign tool) unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _to_number(text: str) -> float | int | None:
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


_metrics_cache: dict[Path, tuple[tuple[int, int], list[dict[str, Any]]]] = {}


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Rows of metrics.csv, one per epoch. A truncated last line is skipped; a repeated epoch keeps the last row.

    Parsed rows are cached by (mtime, size), so a dashboard polling many runs re-reads only what changed.
    """
    try:
        stat = path.stat()
    except OSError:
        return []
    key = (stat.st_mtime_ns, stat.st_size)
    cached = _metrics_cache.get(path)
    if cached and cached[0] == key:
        return [dict(row) for row in cached[1]]
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError:
        return []
    if not raw.endswith("\n"):
        raw = raw[: raw.rfind("\n") + 1]  # the last line is still being written
    by_epoch: dict[int, dict[str, Any]] = {}
    reader = csv.reader(io.StringIO(raw))
    header = next(reader, None) or []
    for values in reader:
        if len(values) != len(header):
            continue
        row = {key_: _to_number(value) for key_, value in zip(header, values)}
        epoch = row.get("epoch")
        if isinstance(epoch, int):
            by_epoch[epoch] = row
    rows = [by_epoch[epoch] for epoch in sorted(by_epoch)]
    if len(_metrics_cache) > 5000:
        _metrics_cache.clear()
    _metrics_cache[path] = (key, rows)
    return [dict(row) for row in rows]


def pid_alive(pid: int | None, create_time: float | None = None) -> bool:
    """True when `pid` runs and is the same process (its start time matches), not a zombie."""
    if not pid:
        return False
    import psutil

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        if create_time is not None and abs(process.create_time() - create_time) > 1.0:
            return False  # the pid was reused by another process
        return True
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def process_create_time(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


@dataclass(frozen=True)
class RunState:
    """A run's status as derived on read: what status.json says, corrected for a dead process."""

    status: Status
    recorded: Status | None  # what status.json says (None when unreadable)
    pid: int | None
    error: str | None
    created_at: str | None
    started_at: str | None
    ended_at: str | None
    reason: str  # why a derived state differs from the recorded one, else ""


class Run:
    """A handle on one run folder. Cheap to make; every accessor reads the files afresh."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.id = self.path.name

    def __repr__(self) -> str:
        return f"Run({self.path})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Run) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    def file(self, name: str) -> Path:
        return self.path / name

    # --- reading -------------------------------------------------------------------
    def config(self) -> TrainConfig:
        return TrainConfig.load(self.file(CONFIG_FILE))

    def config_dict(self) -> dict[str, Any]:
        return read_json(self.file(CONFIG_FILE)) or {}

    def metrics(self) -> list[dict[str, Any]]:
        return read_metrics(self.file(METRICS_FILE))

    def progress(self) -> dict[str, Any] | None:
        return read_json(self.file(PROGRESS_FILE))

    def info(self) -> dict[str, Any]:
        return read_json(self.file(INFO_FILE)) or {}

    def evaluation(self) -> dict[str, Any] | None:
        return read_json(self.file(EVALUATION_FILE))

    def classes(self) -> list[str] | None:
        return read_json(self.file(CLASSES_FILE))

    def stop_requested(self) -> bool:
        return self.file(STOP_FILE).exists()

    def heartbeat_age(self) -> float | None:
        try:
            return time.time() - self.file(HEARTBEAT_FILE).stat().st_mtime
        except OSError:
            return None

    def log_tail(self, lines: int = 40) -> str:
        try:
            with open(self.file(LOG_FILE), "rb") as handle:
                handle.seek(0, os.SEEK_END)
                size = handle.tell()
                handle.seek(max(0, size - 64 * 1024))
                text = handle.read().decode("utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def state(self) -> RunState:
        """The status, with LOST (or STOPPED after a stop request) derived from a dead process."""
        raw = read_json(self.file(STATUS_FILE)) or {}
        launch = read_json(self.file(LAUNCH_FILE)) or {}
        try:
            recorded: Status | None = Status(raw.get("state"))
        except ValueError:
            recorded = None
        pid = raw.get("pid") or launch.get("pid")
        create_time = raw.get("pid_create_time") if raw.get("pid") else launch.get("pid_create_time")
        status = recorded if recorded is not None else Status.LOST
        reason = "" if recorded is not None else "status.json missing or unreadable"
        if recorded in (Status.QUEUED, Status.RUNNING) and (pid or launch):
            if not pid_alive(pid, create_time):
                if self.stop_requested():
                    status, reason = Status.STOPPED, "stopped on request (process ended)"
                else:
                    status, reason = Status.LOST, f"process {pid} is gone"
            else:
                age = self.heartbeat_age()
                if recorded == Status.RUNNING and age is not None and age > HEARTBEAT_STALE_SECONDS:
                    status, reason = Status.LOST, f"no heartbeat for {age:.0f} s"
        return RunState(
            status=status,
            recorded=recorded,
            pid=pid,
            error=raw.get("error"),
            created_at=raw.get("created_at"),
            started_at=raw.get("started_at"),
            ended_at=raw.get("ended_at"),
            reason=reason,
        )

    def status(self) -> Status:
        return self.state().status

    # --- writing (each file has one writer; see DESIGN.md) ---------------------------
    def write_status(self, state: Status, **fields: Any) -> None:
        """Only the job process (or the creator, before any process exists) calls this."""
        current = read_json(self.file(STATUS_FILE)) or {}
        current.update(fields)
        current["state"] = state.value
        current["updated_at"] = now_iso()
        atomic_write_json(self.file(STATUS_FILE), current)

    def request_stop(self) -> None:
        """What the UI writes to stop a job: the job notices between steps."""
        atomic_write_text(self.file(STOP_FILE), now_iso() + "\n")

    def clear_stop_request(self) -> None:
        self.file(STOP_FILE).unlink(missing_ok=True)


def create_run(config: TrainConfig, runs_root: Path | None = None) -> Run:
    """A new run folder with an id made here (never from the display name), status queued."""
    root = Path(runs_root or settings.runs_dir())
    root.mkdir(parents=True, exist_ok=True)
    for _ in range(20):
        path = root / new_run_id()
        try:
            path.mkdir()  # exclusive: two creators never share a folder
        except FileExistsError:
            continue
        run = Run(path)
        atomic_write_text(run.file(CONFIG_FILE), config.to_json())
        run.write_status(Status.QUEUED, created_at=now_iso())
        return run
    raise RuntimeError(f"could not create a unique run folder under {root}")


def list_runs(runs_root: Path | None = None) -> list[Run]:
    """Every run folder, newest first (ids sort by creation time)."""
    root = Path(runs_root or settings.runs_dir())
    if not root.is_dir():
        return []
    runs = [
        Run(entry.path)
        for entry in os.scandir(root)
        if entry.is_dir() and not entry.name.startswith(".") and os.path.exists(os.path.join(entry.path, CONFIG_FILE))
    ]
    return sorted(runs, key=lambda run: run.id, reverse=True)


def find_run(ref: str, runs_root: Path | None = None) -> Run:
    """A run by id, unique id prefix, or exact display name."""
    runs = list_runs(runs_root)
    exact = [run for run in runs if run.id == ref]
    if exact:
        return exact[0]
    matches = [run for run in runs if run.id.startswith(ref)]
    if not matches:
        matches = [run for run in runs if run.config_dict().get("name") == ref]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise LookupError(f"no run matches {ref!r}")
    raise LookupError(f"{ref!r} matches {len(matches)} runs: {', '.join(run.id for run in matches[:5])}")


def summarize(run: Run) -> dict[str, Any]:
    """One row for a runs table: config essentials, status, best/final metrics, duration."""
    config = run.config_dict()
    state = run.state()
    metrics = run.metrics()
    val_acc = [row["val_accuracy"] for row in metrics if isinstance(row.get("val_accuracy"), (int, float))]
    best_index = max(range(len(val_acc)), key=val_acc.__getitem__) if val_acc else None
    return {
        "id": run.id,
        "name": config.get("name", ""),
        "dataset": config.get("dataset"),
        "backbone": config.get("backbone"),
        "weights": config.get("weights"),
        "learning_rate": config.get("learning_rate"),
        "freeze": config.get("freeze"),
        "head": config.get("head"),
        "epochs": config.get("epochs"),
        "status": state.status.value,
        "epochs_done": len(metrics),
        "best_val_accuracy": val_acc[best_index] if best_index is not None else None,
        "best_epoch": metrics[best_index]["epoch"] if best_index is not None else None,
        "final_val_accuracy": val_acc[-1] if val_acc else None,
        "final_val_loss": metrics[-1].get("val_loss") if metrics else None,
        "seconds": sum(row.get("seconds") or 0 for row in metrics),
        "created_at": state.created_at,
        "error": state.error,
    }
