"""Real job processes: a complete run record, the slot queue (with a duplicate trainer refused and an LR range test
waiting its turn), and a failing job. Stop, kill and resume are in test_job_faults.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from carviz.core import jobs, launch
from carviz.core.config import TrainConfig
from carviz.data.datasets import generate_demo_dataset
from carviz.core.store import Status, create_run

try:
    from .job_helpers import holds_for, metric_epochs_on_disk, wait_terminal
except ImportError:  # collected as a top-level module (rootdir-relative imports)
    from job_helpers import holds_for, metric_epochs_on_disk, wait_terminal

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]

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


def test_while_a_job_holds_the_only_slot_its_duplicate_is_refused_and_later_jobs_and_an_lr_test_wait(home,
                                                                                                       wait_for):
    """One busy job for four checks (each would otherwise start a trainer of its own): a second process for the
    running run refuses to start; jobs and an LR range test queue behind it without loading TensorFlow; a queued job
    can be stopped; once the slot frees, the waiting job and the LR test run."""
    from carviz.ml import lr_range

    first = launch.submit(TINY.replace(name="first", epochs=2000))  # runs until stopped, however slow the rest starts
    wait_for(lambda: first.status() == Status.RUNNING, 60, "the first job to run")

    before = first.raw_status()
    duplicate = subprocess.run([sys.executable, "-m", "carviz.ml.train", str(first.path)], capture_output=True,
                               text=True, timeout=120, cwd=REPO)
    assert duplicate.returncode == 4 and "already running" in duplicate.stderr
    assert first.raw_status()["pid"] == before["pid"] and first.status() == Status.RUNNING
    with pytest.raises(ValueError, match="only stopped, lost or failed"):
        launch.resume(first)

    second = launch.submit(TINY.replace(name="second", epochs=1))
    third = launch.submit(TINY.replace(name="third", epochs=1))
    lr_test = lr_range.launch_lr_range(TINY, min_lr=1e-4, max_lr=1e-1, steps=8)
    wait_for(lambda: second.state().pid is not None and third.state().pid is not None
             and lr_range.read_lr_range(lr_test).status == Status.QUEUED
             and (lr_test / "status.json").read_text().count('"pid": ') == 1, 60, "queued processes")
    holds_for(lambda: second.status() == third.status() == lr_range.read_lr_range(lr_test).status == Status.QUEUED
              and first.status() == Status.RUNNING and not (lr_test / "result.json").exists(), 1.5,
              "the queue waiting while the slot is taken")
    waiting_pids = {second.id: second.state().pid, third.id: third.state().pid,
                    "LR test": json.loads((lr_test / "status.json").read_text())["pid"]}
    for name, pid in waiting_pids.items():  # a waiting job has not loaded TensorFlow (~0.6 GB for nothing)
        assert "tensorflow" not in Path(f"/proc/{pid}/maps").read_text(), name

    assert jobs.stop(third, timeout=15) == Status.STOPPED  # leaves the queue without ever running
    assert not third.file("metrics.csv").exists()
    jobs.stop(first, timeout=30)
    assert wait_terminal(wait_for, second) == Status.SUCCEEDED, second.log_tail()
    wait_for(lambda: lr_range.read_lr_range(lr_test).status.is_terminal(), 120,
             "the LR test to run once the slot frees")
    state = lr_range.read_lr_range(lr_test)
    assert state.status == Status.SUCCEEDED, (lr_test / "job.log").read_text()[-2000:]
    assert state.result is not None and len(state.result.lrs) == 8
    assert '"slot": 0' in (lr_test / "status.json").read_text()


def test_a_failing_job_is_failed_with_its_reason(home, wait_for):
    (home / "data" / "empty" / "only").mkdir(parents=True)
    run = create_run(TINY.replace(dataset="empty"))
    launch.launch(run)
    assert wait_terminal(wait_for, run, 60) == Status.FAILED
    assert "at least 2 classes" in run.state().error
    assert "Traceback" in run.log_tail(200)
    # The dataset is read before TensorFlow loads, so such a job fails without paying for that import (2-2.5 s).
    again = create_run(TINY.replace(dataset="empty"))
    code = (f"import sys\nfrom carviz.ml import train\n"
            f"print(train.main([{str(again.path)!r}]), 'tensorflow' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=REPO)
    assert result.stdout.split()[-2:] == ["1", "False"], result.stdout + result.stderr[-2000:]
    assert again.status() == Status.FAILED and "at least 2 classes" in again.state().error
