"""The local backend: a job is a detached process on this machine (its own session, so it outlives the dashboard)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from typing import Any

from carviz.core.jobs.backend import Backend, JobKind, Recorded, Verdict
from carviz.core.jobs.record import BACKEND_ENV, JobRecord, hostname
from carviz.core.jobs.slots import slot_count, take_ticket
from carviz.core.jobs.status import JobState, ProcessCheck, Status, check_process, process_create_time

NAME = "local"


def job_environment(backend: str) -> dict[str, str]:
    """The environment a job starts with: this one, the project on PYTHONPATH, the backend named, quiet TF logs."""
    from carviz.core import settings

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(settings.PROJECT_ROOT), env.get("PYTHONPATH")]))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    env[BACKEND_ENV] = backend
    return env


def spawn(record: JobRecord, module: str, needs_accelerator: bool) -> None:
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


def kill(pid: int | None, create_time: float | None, host: str | None) -> bool:
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


def recorded_process(record: JobRecord, state: JobState) -> tuple[int | None, float | None, str | None]:
    """(pid, its start time, host) of the job's process: status.json's once the job wrote its own, else launch.json's
    (the process the launcher started)."""
    raw = record.raw_status()
    source = raw if raw.get("pid") == state.pid else record.launch_info()
    return state.pid, source.get("pid_create_time"), state.host


class LocalBackend(Backend):
    """A job is a detached process on this machine, queued on the local slots when it needs an accelerator."""

    name = NAME
    local_slots = True

    def launch(self, record: JobRecord, kind: JobKind) -> None:
        spawn(record, kind.module, kind.needs_accelerator)

    def capacity(self) -> int:
        """The slot count."""
        return slot_count()

    def judge(self, record: JobRecord, seen: Recorded) -> Verdict | None:
        """A recorded process that is gone reads lost (stopped after a stop request); one whose pid is no valid
        number reads lost; a live or unverifiable one keeps the record's status (the heartbeat judges it next)."""
        if seen.pid is None:
            if seen.raw.get("pid") is not None:
                return Verdict(Status.LOST, f"status.json names no valid process (pid {seen.raw.get('pid')!r})")
            return Verdict(seen.status)  # never started: queued until its launcher's process writes
        process = check_process(seen.pid, seen.create_time, seen.host)
        if process != ProcessCheck.GONE:
            return Verdict(seen.status, process=process)
        if record.raw_status().get("state") != seen.raw.get("state"):
            return None  # it recorded its end just before exiting: not lost
        if record.stop_requested():
            return Verdict(Status.STOPPED, "stopped on request (process ended)", process=process)
        return Verdict(Status.LOST, f"process {seen.pid} is gone", process=process)

    def lives(self, record: JobRecord, state: JobState) -> bool:
        pid, create_time, host = recorded_process(record, state)
        return pid is not None and check_process(pid, create_time, host) == ProcessCheck.ALIVE

    def kill(self, record: JobRecord, state: JobState) -> bool:
        return kill(*recorded_process(record, state))

    def exits_after_status(self) -> bool:
        return True

    def identify_self(self, record: JobRecord) -> dict[str, Any]:
        me = os.getpid()
        return {"backend": NAME, "pid": me, "pid_create_time": process_create_time(me), "host": hostname()}
