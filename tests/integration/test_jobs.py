"""Real job processes: a complete run record, stop, SIGKILL → lost → resume, and the slot queue."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from carviz.core import jobs, launch
from carviz.core.config import TrainConfig
from carviz.data.datasets import generate_demo_dataset
from carviz.core.store import Status, create_run

try:
    from .job_helpers import metric_epochs_on_disk, wait_terminal
except ImportError:  # collected as a top-level module (rootdir-relative imports)
    from job_helpers import metric_epochs_on_disk, wait_terminal

pytestmark = pytest.mark.slow

# small_cnn at 48 px: a few tenths of a second per epoch on 2 cores, so tests can act mid-run.
TINY = TrainConfig(name="tiny", dataset="demo", backbone="small_cnn", weights="none", image_size=48, epochs=2,
                   batch_size=16, learning_rate=1e-3, precision="float32")


@pytest.fixture
def home(job_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    generate_demo_dataset(job_home / "data" / "demo", per_class=16, image_size=48)
    monkeypatch.setenv("CARVIZ_SLOTS", "1")
    return job_home



def test_a_job_finishes_with_a_complete_run_record(home, wait_for):
    run = launch.submit(TINY.replace(epochs=3))
    assert wait_terminal(wait_for, run) == Status.SUCCEEDED, run.log_tail()
    for name in ("config.json", "status.json", "metrics.csv", "progress.json", "heartbeat", "job.log",
                 "model.keras", "classes.json", "evaluation.json", "run.json", "split.json",
                 "checkpoint/last.npz", "checkpoint/state.json"):
        assert run.file(name).exists(), name
    assert metric_epochs_on_disk(run) == [1, 2, 3]
    rows = run.metrics()
    assert all(isinstance(rows[0][key], float) for key in ("loss", "accuracy", "val_loss", "val_accuracy"))
    assert rows[0]["learning_rate"] == pytest.approx(1e-3)
    assert list(run.file("tensorboard").rglob("events.out.tfevents.*")), "TensorBoard event files"
    assert run.classes() == ["bus", "sedan", "sports car", "suv"]
    info = run.info()
    assert info["device"]["kind"] == "cpu"
    assert info["versions"]["tensorflow"] and info["versions"]["keras"].startswith("3.")
    assert len(info["dataset_fingerprint"]) == 64
    assert info["train_images"] + info["val_images"] == 64
    evaluation = run.evaluation()
    assert evaluation["images"] == info["val_images"]
    # the saved model is the best-validation epoch (the first of equals), restored before this evaluation
    accuracies = [row["val_accuracy"] for row in rows]
    assert evaluation["kept_epoch"] == accuracies.index(max(accuracies)) + 1 and evaluation["kept"] == "best val"
    assert evaluation["accuracy"] == pytest.approx(max(accuracies), abs=1e-6)
    assert info["kept"]["epoch"] == evaluation["kept_epoch"]
    assert run.progress()["phase"] == "done"
    assert "epoch 3/3" in run.file("job.log").read_text()
    assert run.raw_status()["backend"] == "local" and run.info()["device"]["backend"] == "local"


def test_stop_mid_training_keeps_finished_epochs_and_resume_continues(home, wait_for):
    run = launch.submit(TINY.replace(epochs=40))
    wait_for(lambda: len(run.metrics()) >= 2, 120, "two finished epochs")
    assert jobs.stop(run, timeout=30) == Status.STOPPED
    state = run.state()
    assert state.recorded == Status.STOPPED, "the job itself recorded the stop (graceful)"
    done = metric_epochs_on_disk(run)
    assert len(done) >= 2 and done == list(range(1, len(done) + 1))
    assert not run.file("model.keras").exists()

    launch.resume(run)
    wait_for(lambda: len(run.metrics()) > len(done), 120, "an epoch after resuming")
    jobs.stop(run, timeout=30)  # 40 epochs is long: stop again, then finish a short remainder
    assert run.status() == Status.STOPPED


def test_killed_job_is_lost_then_resume_completes_every_epoch_exactly_once(home, wait_for):
    run = launch.submit(TINY.replace(epochs=12))
    wait_for(lambda: len(run.metrics()) >= 3, 120, "three finished epochs")
    pid = run.state().pid
    os.killpg(pid, signal.SIGKILL)
    started = time.monotonic()
    wait_for(lambda: run.status() == Status.LOST, 10, "status lost after SIGKILL")
    assert time.monotonic() - started < 5
    kept = run.metrics()
    assert len(kept) >= 3 and [row["epoch"] for row in kept] == list(range(1, len(kept) + 1))

    launch.resume(run)
    assert wait_terminal(wait_for, run) == Status.SUCCEEDED, run.log_tail()
    assert metric_epochs_on_disk(run) == list(range(1, 13))
    assert len(run.info()["attempts"]) == 2


def test_one_slot_runs_jobs_one_after_another_and_a_queued_job_can_be_stopped(home, wait_for):
    first = launch.submit(TINY.replace(name="first", epochs=2000))  # runs until stopped, however slow the rest starts
    wait_for(lambda: first.status() == Status.RUNNING, 60, "the first job to run")
    second = launch.submit(TINY.replace(name="second", epochs=1))
    third = launch.submit(TINY.replace(name="third", epochs=1))
    wait_for(lambda: second.state().pid is not None and third.state().pid is not None, 30, "queued processes")
    time.sleep(1.5)
    assert second.status() == Status.QUEUED and third.status() == Status.QUEUED
    assert first.status() == Status.RUNNING
    for queued in (second, third):  # a waiting job has not loaded TensorFlow (it would hold ~0.6 GB for nothing)
        assert "tensorflow" not in Path(f"/proc/{queued.state().pid}/maps").read_text(), queued.id

    assert jobs.stop(third, timeout=15) == Status.STOPPED  # leaves the queue without ever running
    assert not third.file("metrics.csv").exists()
    jobs.stop(first, timeout=30)
    assert wait_terminal(wait_for, second) == Status.SUCCEEDED, second.log_tail()


def test_a_failing_job_is_failed_with_its_reason(home, wait_for):
    (home / "data" / "empty" / "only").mkdir(parents=True)
    run = create_run(TINY.replace(dataset="empty"))
    launch.launch(run)
    assert wait_terminal(wait_for, run, 60) == Status.FAILED
    assert "at least 2 classes" in run.state().error
    assert "Traceback" in run.log_tail(200)


def test_an_lr_range_test_waits_for_a_busy_slot(home, wait_for):
    from carviz.ml import lr_range

    busy = launch.submit(TINY.replace(name="busy", epochs=2000))
    wait_for(lambda: busy.status() == Status.RUNNING, 60, "the training job to hold the only slot")
    path = lr_range.launch_lr_range(TINY, min_lr=1e-4, max_lr=1e-1, steps=8)
    wait_for(lambda: lr_range.read_lr_range(path).status == Status.QUEUED and
             (path / "status.json").read_text().count('"pid": ') == 1, 60, "the LR test process to wait")
    time.sleep(1.0)  # it keeps waiting while the slot is taken
    assert lr_range.read_lr_range(path).status == Status.QUEUED and not (path / "result.json").exists()
    jobs.stop(busy, timeout=30)
    wait_for(lambda: lr_range.read_lr_range(path).status.is_terminal(), 120, "the LR test to run once the slot frees")
    state = lr_range.read_lr_range(path)
    assert state.status == Status.SUCCEEDED, (path / "job.log").read_text()[-2000:]
    assert state.result is not None and len(state.result.lrs) == 8
    assert '"slot": 0' in (path / "status.json").read_text()


def test_a_second_process_for_the_same_run_refuses_to_start(home, wait_for):
    import subprocess
    import sys

    run = launch.submit(TINY.replace(epochs=2000))
    wait_for(lambda: run.status() == Status.RUNNING, 60, "the job to run")
    before = run.raw_status()
    second = subprocess.run([sys.executable, "-m", "carviz.ml.train", str(run.path)], capture_output=True, text=True,
                            timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert second.returncode == 4 and "already running" in second.stderr
    assert run.raw_status()["pid"] == before["pid"] and run.status() == Status.RUNNING
    with pytest.raises(ValueError, match="only stopped, lost or failed"):
        launch.resume(run)
    jobs.stop(run, timeout=30)
