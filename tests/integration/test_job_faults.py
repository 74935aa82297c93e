"""Real job processes under faults: a stop then two resumes at once, a SIGKILLed and a SIGSTOPped (hung) job,
and a full disk.

One writer per run: the job holds an exclusive lock on its record for its whole life, `resume` refuses while the
recorded process lives, and `stop` kills a live job whose heartbeat went stale. A full disk mid-training leaves the
run failed with the reason and no partial files; a launch into a full disk leaves no half-made run folder.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from carviz.core import jobs, launch
from carviz.core.config import TrainConfig
from carviz.core.jobs.status import ProcessCheck, check_process, process_create_time
from carviz.core.store import Run, Status, create_run, list_runs
from carviz.data.datasets import generate_demo_dataset

try:
    from .job_helpers import metric_epochs_on_disk, wait_terminal
except ImportError:  # collected as a top-level module (rootdir-relative imports)
    from job_helpers import metric_epochs_on_disk, wait_terminal

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]

# small_cnn at 48 px: a few tenths of a second per epoch on 2 cores; its checkpoint is about 1.2 MB.
TINY = TrainConfig(name="tiny", dataset="demo", backbone="small_cnn", weights="none", image_size=48, epochs=2,
                   batch_size=16, learning_rate=1e-3, precision="float32")


@pytest.fixture
def home(job_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    generate_demo_dataset(job_home / "data" / "demo", per_class=16, image_size=48)
    monkeypatch.setenv("CARVIZ_SLOTS", "1")
    return job_home



def partial_files(folder: Path) -> list[Path]:
    """Temp files of interrupted writes: atomic writes' .NAME.PID.TID.tmp and model saves' tmp-NAME."""
    return [path for path in folder.rglob("*") if path.name.endswith(".tmp") or path.name.startswith("tmp-")]


def resume_command(run: Run) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "carviz", "resume", run.id], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)


# ---------------------------------------------------------------- stop, then two resumes at once


def test_a_stopped_job_keeps_its_epochs_and_two_resume_commands_at_once_start_one_trainer(home, wait_for):
    run = launch.submit(TINY.replace(epochs=8))
    wait_for(lambda: len(run.metrics()) >= 2, 120, "two finished epochs", poll=0.05)
    assert jobs.stop(run, timeout=30) == Status.STOPPED
    assert run.state().recorded == Status.STOPPED, "the job itself recorded the stop (graceful)"
    kept = metric_epochs_on_disk(run)
    assert len(kept) >= 2 and kept == list(range(1, len(kept) + 1)) and len(kept) < 8
    assert not run.file("model.keras").exists()

    commands = [resume_command(run), resume_command(run)]  # started together, racing for the run
    results = [(command.wait(timeout=120), *command.communicate()) for command in commands]
    launched = [result for result in results if result[0] == 0]
    assert launched, results
    for code, out, err in results:
        if code != 0:  # refused: one clear line, nothing launched
            assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, (out, err)

    assert wait_terminal(wait_for, run) == Status.SUCCEEDED, run.log_tail()
    assert metric_epochs_on_disk(run) == list(range(1, 9)), run.file("metrics.csv").read_text()
    attempts = run.info()["attempts"]
    assert len(attempts) == 2, attempts  # the first launch and exactly one resumed trainer
    assert attempts[1]["initial_epoch"] == len(kept)
    if len(launched) == 2:  # both commands launched: the second trainer found the lock taken and wrote nothing
        assert "already running" in run.log_tail(400)


# ---------------------------------------------------------------- a killed job, then a SIGSTOPped (hung) one


def test_a_killed_job_reads_lost_at_once_a_hung_one_once_its_heartbeat_is_stale_and_both_resume(home, wait_for):
    """One run through both faults (one trainer's start-up fewer than a run each): SIGKILL reads lost within
    seconds; the resumed job, SIGSTOPped, reads lost once its heartbeat is stale, blocks resume while it lives, and
    is killed at once by stop; the second resume completes every epoch exactly once."""
    epochs = 16
    run = launch.submit(TINY.replace(epochs=epochs))
    wait_for(lambda: len(run.metrics()) >= 3, 120, "three finished epochs", poll=0.05)
    os.killpg(run.state().pid, signal.SIGKILL)
    started = time.monotonic()
    wait_for(lambda: run.status() == Status.LOST, 10, "status lost after SIGKILL")
    assert time.monotonic() - started < 5
    kept = run.metrics()
    assert len(kept) >= 3 and [row["epoch"] for row in kept] == list(range(1, len(kept) + 1))

    launch.resume(run)
    wait_for(lambda: len(run.metrics()) >= len(kept) + 2, 120, "two epochs after resuming", poll=0.05)
    state = run.state()
    pid, create_time = state.pid, run.raw_status()["pid_create_time"]
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_for(lambda: psutil.Process(pid).status() == psutil.STATUS_STOPPED, 10, "the job to be stopped")
        past = time.time() - 300  # its heartbeat thread is frozen too: make the heartbeat stale now
        os.utime(run.file("heartbeat"), (past, past))
        state = run.state()
        assert state.status == Status.LOST and state.reason.startswith("no heartbeat"), state
        assert state.process == ProcessCheck.ALIVE

        with pytest.raises(ValueError, match="still runs"):
            launch.resume(run)
        assert run.raw_status()["pid"] == pid and run.raw_status()["state"] == "running"

        started = time.monotonic()
        assert jobs.stop(run, timeout=30) == Status.STOPPED
        assert time.monotonic() - started < 15, "a hung job is killed at once, not after the timeout"
        assert check_process(pid, create_time) == ProcessCheck.GONE
        assert run.state().recorded == Status.STOPPED
    finally:
        try:
            os.kill(pid, signal.SIGCONT)  # never leave a stopped process behind
        except ProcessLookupError:
            pass

    done = metric_epochs_on_disk(run)
    assert len(done) >= len(kept) + 2 and done == list(range(1, len(done) + 1))
    launch.resume(run)
    assert wait_terminal(wait_for, run) == Status.SUCCEEDED, run.log_tail()
    assert metric_epochs_on_disk(run) == list(range(1, epochs + 1))
    assert len(run.info()["attempts"]) == 3


def test_the_stop_command_kills_a_live_job_whose_heartbeat_went_stale(home, capsys):
    """`python -m carviz stop` on a hung job (reads lost, process alive) kills it instead of saying "already lost"."""
    from carviz.cli import main

    run = create_run(TINY)
    hung = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    try:
        os.kill(hung.pid, signal.SIGSTOP)
        run.write_status(Status.RUNNING, pid=hung.pid, pid_create_time=process_create_time(hung.pid),
                         backend="local", started_at=jobs.now_iso())
        run.touch_heartbeat()
        past = time.time() - 300
        os.utime(run.file("heartbeat"), (past, past))
        assert run.status() == Status.LOST

        assert main(["stop", run.id, "--timeout", "30"]) == 0
        assert capsys.readouterr().out.strip() == f"{run.id} stopped"
        assert hung.wait(timeout=10) == -signal.SIGKILL
        assert run.state().recorded == Status.STOPPED
    finally:
        if hung.poll() is None:
            hung.kill()
            hung.wait()


# ---------------------------------------------------------------- a full disk


def _free_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def fill(mount: Path, leave: int) -> Path:
    """Grow mount/filler until about `leave` bytes are free (0: until the disk is full)."""
    filler = mount / "filler"
    chunk = bytes(64 * 1024)
    with open(filler, "ab") as handle:
        try:
            while (free := _free_bytes(mount)) > leave:
                handle.write(chunk[: max(4096, min(len(chunk), free - leave))])
                handle.flush()
        except OSError:
            pass  # full
    return filler


@pytest.fixture
def small_disk(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A 16 MB tmpfs holding the runs folder (CARVIZ_RUNS); skipped where mounting is not permitted."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs: {mounted.stderr.strip() or mounted.returncode}")
    monkeypatch.setenv("CARVIZ_RUNS", str(mount / "runs"))
    try:
        yield mount
    finally:
        for run in list_runs(mount / "runs"):  # never leave a job behind, nor a disk it writes to
            if not run.status().is_terminal() or jobs._process_lives(run, run.state()):
                jobs.stop(run, timeout=5)
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_mid_training_fails_with_the_reason_and_resume_completes(small_disk, wait_for):
    run = launch.submit(TINY.replace(epochs=10))
    wait_for(lambda: run.checkpoint() is not None, 120, "the first checkpoint", poll=0.05)
    pid, create_time = run.state().pid, run.raw_status()["pid_create_time"]
    os.kill(pid, signal.SIGSTOP)  # hold it while the disk fills, so the next checkpoint is sure to hit it
    try:
        checkpoint_size = run.checkpoint()[0].stat().st_size
        assert checkpoint_size > 400_000, checkpoint_size
        filler = fill(small_disk, leave=256 * 1024)  # room for status, metrics and logs; not for a checkpoint
    finally:
        os.kill(pid, signal.SIGCONT)

    assert wait_terminal(wait_for, run, 120) == Status.FAILED, run.log_tail()
    error = run.state().error
    assert "No space left" in error or "ENOSPC" in error, error
    assert not partial_files(run.path)
    assert not partial_files(small_disk / "runs" / ".slots")
    wait_for(lambda: check_process(pid, create_time) == ProcessCheck.GONE, 30, "the failed job to exit")
    done = metric_epochs_on_disk(run)
    assert done == list(range(1, len(done) + 1)) and len(done) < 10
    assert run.checkpoint() is not None and run.checkpoint()[1] >= 1, "the last good checkpoint is kept"
    checkpoint_epochs = run.checkpoint()[1]

    filler.unlink()
    launch.resume(run)
    assert wait_terminal(wait_for, run) == Status.SUCCEEDED, run.log_tail()
    assert metric_epochs_on_disk(run) == list(range(1, 11))
    assert run.info()["attempts"][1]["initial_epoch"] == checkpoint_epochs
    assert not partial_files(run.path)


def test_a_launch_into_a_full_disk_leaves_no_run_folder_and_says_so_in_one_line(small_disk):
    runs_root = small_disk / "runs"
    runs_root.mkdir()
    fill(small_disk, leave=0)

    with pytest.raises(OSError, match="No space left"):
        launch.submit(TINY)
    assert [entry.name for entry in runs_root.iterdir() if not entry.name.startswith(".")] == []

    command = subprocess.run([sys.executable, "-m", "carviz", "train", "--dataset", "demo", "--backbone",
                              "small_cnn", "--weights", "none", "--image-size", "48", "--epochs", "1"],
                             capture_output=True, text=True, timeout=120, cwd=REPO)
    lines = command.stderr.strip().splitlines()
    assert command.returncode == 2 and len(lines) == 1, command.stderr
    assert lines[0].startswith("error: ") and "No space left" in lines[0], lines
    assert command.stdout == ""
    assert [entry.name for entry in runs_root.iterdir() if not entry.name.startswith(".")] == []
