"""Local accelerator slots: one flock per slot (slot K is GPU K), first come first served across every job kind."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from carviz.core.jobs.record import atomic_write_json, read_json_object
from carviz.core.jobs.status import ProcessCheck, check_process, process_create_time

WAITING_DIR = "waiting"


def gpu_count() -> int:
    """GPUs that nvidia-smi sees (0 without a driver); no TensorFlow import."""
    if not shutil.which("nvidia-smi"):
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


CPU_SLOTS = 2  # jobs at once on a machine without GPUs (measured on 2 cores: two runs on cached features, one
# thread each, trained 1.2x the epochs of one run on both threads; the runs' start-up and saving overlap too)


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity: a container or a Ray worker may have fewer)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def slot_count() -> int:
    """Concurrent accelerator jobs on this machine: $CARVIZ_SLOTS, else one per GPU, else CPU_SLOTS (one on a
    single core)."""
    configured = os.environ.get("CARVIZ_SLOTS", "").strip()
    if configured:
        try:
            return max(1, int(configured))
        except ValueError:
            raise ValueError(f"CARVIZ_SLOTS must be a whole number, got {configured!r}") from None
    return gpu_count() or min(CPU_SLOTS, usable_cores())


@dataclass
class Slot:
    """A held slot: its index (= the GPU this job may use) and the open lock; release() frees it."""

    index: int
    fd: int

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # the kernel frees the lock (it also does when the process dies)
            self.fd = -1


def _older_job_waiting(waiting_dir: Path, my_id: str) -> bool:
    """Whether a job with an older id than mine is also waiting (it goes first). Ids sort by creation time."""
    try:
        names = sorted(os.listdir(waiting_dir))
    except OSError:
        return False
    for name in names:
        if name >= my_id:
            break
        entry = read_json_object(waiting_dir / name)
        check = check_process(entry.get("pid"), entry.get("pid_create_time"))
        if check == ProcessCheck.ALIVE:
            return True
        if check == ProcessCheck.GONE:
            (waiting_dir / name).unlink(missing_ok=True)  # its process is gone: not in the queue any more
    return False


def take_ticket(slots_dir: Path, job_id: str, pid: int, create_time: float | None) -> None:
    """Join the slot queue as job `job_id` run by process `pid`; the queue is served in id (creation) order."""
    waiting_dir = slots_dir / WAITING_DIR
    waiting_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(waiting_dir / job_id, {"pid": pid, "pid_create_time": create_time})


def acquire_slot(slots_dir: Path, job_id: str, should_stop: Callable[[], bool], poll: float = 0.5) -> Slot | None:
    """Wait for a free slot, in id order among the waiting jobs of every kind; None if asked to stop first.

    A slot is an flock on <slots_dir>/slot-K.lock: the kernel releases it when the holder dies, so a killed job
    never leaks its slot.
    """
    waiting_dir = slots_dir / WAITING_DIR
    ticket = waiting_dir / job_id
    take_ticket(slots_dir, job_id, os.getpid(), process_create_time(os.getpid()))
    try:
        while True:
            if should_stop():
                return None
            if not _older_job_waiting(waiting_dir, job_id):
                for index in range(slot_count()):
                    fd = os.open(slots_dir / f"slot-{index}.lock", os.O_RDWR | os.O_CREAT, 0o644)
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        os.close(fd)
                        continue
                    return Slot(index, fd)
            time.sleep(poll)
    finally:
        ticket.unlink(missing_ok=True)
