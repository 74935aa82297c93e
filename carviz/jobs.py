"""Launch, queue, stop and resume training jobs as detached processes that outlive the dashboard."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from . import settings
from .config import TrainConfig
from .runs import (
    LAUNCH_FILE,
    LOG_FILE,
    Run,
    Status,
    atomic_write_json,
    create_run,
    now_iso,
    pid_alive,
    process_create_time,
    read_json,
)

SLOTS_DIR = ".slots"


def gpu_count() -> int:
    """GPUs that nvidia-smi sees (0 without a driver); no TensorFlow import."""
    if not shutil.which("nvidia-smi"):
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def slot_count() -> int:
    """Concurrent jobs: $CARVIZ_SLOTS, else one per GPU, else one."""
    configured = os.environ.get("CARVIZ_SLOTS")
    if configured:
        return max(1, int(configured))
    return max(1, gpu_count())


def spawn_detached(module: str, folder: Path, log_path: Path) -> int:
    """Start `python -m MODULE FOLDER` in its own session (it outlives us), output appended to log_path.

    Writes FOLDER/launch.json (pid and its start time) so readers can tell a live process from a reused pid.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(settings.PROJECT_ROOT), env.get("PYTHONPATH")]))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", module, str(folder)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=str(settings.PROJECT_ROOT),
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    atomic_write_json(
        folder / LAUNCH_FILE,
        {"pid": process.pid, "pid_create_time": process_create_time(process.pid), "launched_at": now_iso()},
    )
    return process.pid


def launch(run: Run) -> int:
    """Start the run's job (`python -m carviz.train RUN_DIR`) detached; returns its pid.

    The launcher writes launch.json; the job itself writes status.json.
    """
    return spawn_detached("carviz.train", run.path, run.file(LOG_FILE))


def submit(config: TrainConfig, runs_root: Path | None = None) -> Run:
    """Create a run for `config` and launch its job; it waits for a free slot by itself."""
    run = create_run(config, runs_root)
    launch(run)
    return run


def _job_pid(run: Run) -> tuple[int | None, float | None]:
    status = read_json(run.file("status.json")) or {}
    if status.get("pid"):
        return status["pid"], status.get("pid_create_time")
    launch_info = read_json(run.file(LAUNCH_FILE)) or {}
    return launch_info.get("pid"), launch_info.get("pid_create_time")


def stop(run: Run, timeout: float = 30.0) -> Status:
    """Ask the job to stop between steps; after `timeout` seconds kill it. Returns the final status."""
    run.request_stop()
    pid, create_time = _job_pid(run)
    deadline = time.monotonic() + timeout
    while pid_alive(pid, create_time) and time.monotonic() < deadline:
        time.sleep(0.2)
    if pid_alive(pid, create_time):
        try:
            os.killpg(pid, signal.SIGKILL)  # the job leads its own session/process group
        except (ProcessLookupError, PermissionError):
            pass
        for _ in range(50):
            if not pid_alive(pid, create_time):
                break
            time.sleep(0.1)
    return run.status()


def resume(run: Run) -> int:
    """Relaunch a stopped, lost or failed run; the job continues from its last checkpoint."""
    state = run.state()
    if not state.status.is_terminal() or state.status == Status.SUCCEEDED:
        raise ValueError(f"run {run.id} is {state.status.value}: only stopped, lost or failed runs resume")
    run.clear_stop_request()
    run.write_status(Status.QUEUED, pid=None, pid_create_time=None, error=None, resumed_at=now_iso())
    return launch(run)


def acquire_slot(runs_root: Path, me: Run, should_stop: Callable[[], bool], poll: float = 0.5) -> tuple[int, int] | None:
    """Wait for one of the slot locks (FIFO among waiting runs); returns (slot, fd), or None if asked to stop.

    A slot is an flock on runs/.slots/slot-K.lock: the kernel releases it when the holder dies,
    so a killed job never leaks its slot. Slot K maps to GPU K.
    """
    slots = slot_count()
    lock_dir = runs_root / SLOTS_DIR
    lock_dir.mkdir(parents=True, exist_ok=True)
    while True:
        if should_stop():
            return None
        if not _older_run_waiting(runs_root, me):
            for slot in range(slots):
                fd = os.open(lock_dir / f"slot-{slot}.lock", os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                return slot, fd
        time.sleep(poll)


def _older_run_waiting(runs_root: Path, me: Run) -> bool:
    """Whether a run created before `me` is also waiting for a slot (it goes first)."""
    for entry in sorted(os.listdir(runs_root)):
        if entry >= me.id:
            break
        if entry.startswith("."):
            continue
        other = Run(runs_root / entry)
        status = read_json(other.file("status.json")) or {}
        if status.get("state") == Status.QUEUED.value and status.get("pid"):
            if pid_alive(status["pid"], status.get("pid_create_time")):
                return True
    return False
