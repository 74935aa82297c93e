"""The local backend: a job is a detached process on this machine (its own session, so it outlives the dashboard)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

from carviz.core.jobs.record import BACKEND_ENV, JobRecord, hostname
from carviz.core.jobs.slots import slot_count, take_ticket
from carviz.core.jobs.status import ProcessCheck, check_process, process_create_time

NAME = "local"


def job_environment(backend: str) -> dict[str, str]:
    """The environment a job starts with: this one, the project on PYTHONPATH, the backend named, quiet TF logs."""
    from carviz.core import settings

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(settings.PROJECT_ROOT), env.get("PYTHONPATH")]))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    env[BACKEND_ENV] = backend
    return env


def launch(record: JobRecord, module: str, needs_accelerator: bool) -> None:
    """Start `python -m MODULE FOLDER` detached, output appended to the job log; writes launch.json (pid and its
    start time, so readers can tell the job from a process that later got the same pid)."""
    from carviz.core import settings

    with open(record.log_path(), "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", module, str(record.path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=str(settings.PROJECT_ROOT),
            env=job_environment(NAME),
            start_new_session=True,
            close_fds=True,
        )
    create_time = process_create_time(process.pid)
    if needs_accelerator:  # in the slot queue from now, not from when the process gets to write its own ticket
        take_ticket(settings.slots_dir(), record.id, process.pid, create_time)
    record.write_launch({"backend": NAME, "module": module, "pid": process.pid, "pid_create_time": create_time,
                         "host": hostname()})
    # Reap the child when it ends, so a long-lived launcher (the dashboard) collects no zombies.
    threading.Thread(target=process.wait, name=f"reap-{process.pid}", daemon=True).start()


def kill(record: JobRecord, pid: int | None, create_time: float | None, host: str | None) -> bool:
    """SIGKILL the job's process group, but only when the process is verifiably the job; True if signalled."""
    if pid is None or check_process(pid, create_time, host) != ProcessCheck.ALIVE:
        return False
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)  # the job leads its own session: its children (Chromium) go too
        else:
            os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def capacity() -> int:
    """How many accelerator jobs run at once here: the slot count."""
    return slot_count()
