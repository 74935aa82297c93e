"""Warm workers, for real: a sweep's runs in one long-lived worker process keep records of the same shape as runs
with a process of their own; a stopped run leaves the worker going on with the next; a worker killed mid-run leaves
that run lost (resumable, every epoch once) and the next runs still run."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from carviz.core import jobs, launch
from carviz.core import sweeps as sweep
from carviz.core.config import TrainConfig
from carviz.core.store import Run, Status
from carviz.core.sweeps import SweepConfig
from carviz.data.datasets import generate_demo_dataset

try:
    from .job_helpers import metric_epochs_on_disk, wait_terminal
except ImportError:  # collected as a top-level module (rootdir-relative imports)
    from job_helpers import metric_epochs_on_disk, wait_terminal

pytestmark = pytest.mark.slow

TINY = TrainConfig(name="tiny", dataset="demo", backbone="small_cnn", weights="none", image_size=32, epochs=2,
                   batch_size=16, learning_rate=1e-3, precision="float32", test_fraction=0.2)


@pytest.fixture
def home(job_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    generate_demo_dataset(job_home / "data" / "demo", per_class=12, image_size=48)
    monkeypatch.setenv("CARVIZ_SLOTS", "1")  # one worker: the runs go through it one after another
    monkeypatch.delenv("CARVIZ_WARM_WORKERS", raising=False)
    return job_home


def wait_sweep(wait_for, record, timeout: float = 240):
    return wait_for(lambda: (s := sweep.read_sweep(record.id)).status not in ("queued", "running") and s, timeout,
                    "the sweep to end (logs:\n" + "\n".join(run.log_tail(8) for run in record.runs()) + ")")


def shape(run: Run) -> dict[str, object]:
    """A record's shape: its files, and the keys of the JSON files the pages and CLI read."""
    files = sorted(p.relative_to(run.path).as_posix() for p in run.path.rglob("*")
                   if p.is_file() and "tensorboard" not in p.parts and p.name != "sweep_context.json")
    keys = {name: sorted(json.loads(run.file(name).read_text())) for name in ("status.json", "run.json",
                                                                             "evaluation.json", "progress.json")}
    keys["attempt"] = sorted(run.info()["attempts"][-1])
    keys["launch"] = sorted(set(run.launch_info()) - {"worker"})
    return {"files": files, **keys}


def test_six_runs_in_one_worker_keep_records_shaped_like_a_lone_processs(home: Path, wait_for) -> None:
    config = SweepConfig(name="warm", base=TINY, backbones=("small_cnn",), learning_rates=(1e-3, 3e-3),
                         freeze_points=(1, 4, "all"), seeds=(1,))
    record = sweep.launch_sweep(config)
    state = wait_sweep(wait_for, record)
    assert state.status == "done" and state.counts == {"succeeded": 6}, state.counts
    (worker,) = record.workers()
    # The sweep reads done when its last run has ended; the worker records its own end just after.
    hosted = wait_for(lambda: (status := worker.raw_status()).get("state") not in (None, "queued", "running")
                      and status, 30, "the worker to record its end")
    assert hosted["state"] == "succeeded" and hosted["runs"] == 6
    assert [entry["run"] for entry in hosted["hosted"]] == list(record.run_ids)  # in launch order
    for run in record.runs():
        assert run.launch_info()["worker"] == worker.id and run.raw_status()["pid"] == hosted["pid"]
        assert metric_epochs_on_disk(run) == [1, 2] and run.evaluation()["test"]["images"] > 0
        assert "epoch 2/2" in run.file("job.log").read_text(), "each run's output goes to its own log"

    lone = launch.submit(TINY.replace(freeze=4, learning_rate=3e-3, seed=1))
    assert wait_terminal(wait_for, lone) == Status.SUCCEEDED, lone.log_tail()
    twin = next(run for run in record.runs() if run.config().replace(name="", sweep="") ==
                lone.config().replace(name=""))
    assert shape(twin) == shape(lone)
    # The same configuration and seed train alike in the worker and in a process of its own.
    assert [row["val_accuracy"] for row in twin.metrics()] == pytest.approx(
        [row["val_accuracy"] for row in lone.metrics()], abs=1e-6)


def test_a_stopped_run_leaves_its_worker_going_and_a_killed_worker_loses_only_its_run_which_resumes(home: Path,
                                                                                                     wait_for) -> None:
    """One sweep, one worker through both: the first run is stopped (the worker goes on with the next), then the
    worker is killed during the second (that run reads lost, a new worker takes the rest, and the lost run resumes
    with every epoch once)."""
    epochs = 20
    config = SweepConfig(name="stop-kill", base=TINY.replace(epochs=200), backbones=("small_cnn",),
                         learning_rates=(1e-3, 2e-3, 3e-3, 4e-3), freeze_points=(1,), seeds=(1,))
    record = sweep.create_sweep(config)
    first, second, third, fourth = record.runs()
    second.file("config.json").write_text(second.config().replace(epochs=epochs).to_json())
    for run in (third, fourth):  # short, so the test ends soon
        run.file("config.json").write_text(run.config().replace(epochs=2).to_json())
    sweep.start_feeder(record)

    wait_for(lambda: first.metrics(), 120, f"an epoch of the first run (log:\n{first.log_tail()})")
    worker_pid = first.raw_status()["pid"]
    assert launch.stop(first, timeout=30) == Status.STOPPED
    assert first.state().recorded == Status.STOPPED, "it stopped itself, between steps: nothing was killed"
    wait_for(lambda: len(second.metrics()) >= 2, 120, f"two epochs of the second run (log:\n{second.log_tail()})",
             poll=0.05)
    assert second.raw_status()["pid"] == worker_pid  # the same worker went on
    assert not jobs.still_exiting(first, first.state())  # its worker moved on: Resume is offered at once

    os.kill(worker_pid, signal.SIGKILL)
    lost = wait_for(lambda: (s := second.state()).status == Status.LOST and s, 30, "the second run to read lost")
    assert lost.recorded == Status.RUNNING and "is gone" in lost.reason
    state = wait_sweep(wait_for, record)
    assert third.status() == fourth.status() == Status.SUCCEEDED, state.counts
    assert third.raw_status()["pid"] == fourth.raw_status()["pid"] != worker_pid
    workers = record.workers()
    assert len(workers) == 2 and jobs.derive_state(workers[0]).status == Status.LOST  # replaced

    launch.resume(second)
    assert wait_terminal(wait_for, second, 180) == Status.SUCCEEDED, second.log_tail()
    assert metric_epochs_on_disk(second) == list(range(1, epochs + 1))
    assert second.info()["attempts"][1]["initial_epoch"] >= 1
