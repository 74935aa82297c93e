"""Real sweep jobs: a 4-run sweep finishes on 2 slots with every run recorded; a losing run is pruned at its rung."""

from __future__ import annotations

from pathlib import Path

import pytest

from carviz.core import launch
from carviz.core import sweeps as sweep
from carviz.core.config import TrainConfig
from carviz.data.datasets import generate_demo_dataset
from carviz.core.store import METRICS_FILE, Run, Status, now_iso
from carviz.core.sweeps import PruneConfig, SweepConfig

pytestmark = pytest.mark.slow

TINY = TrainConfig(name="tiny", dataset="demo", backbone="small_cnn", weights="none", image_size=32, epochs=2,
                   batch_size=16, learning_rate=1e-3, precision="float32")


@pytest.fixture
def home(job_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    generate_demo_dataset(job_home / "data" / "demo", per_class=12, image_size=48)
    monkeypatch.setenv("CARVIZ_SLOTS", "2")
    return job_home


def test_a_sweep_of_four_runs_finishes(home: Path, wait_for) -> None:
    config = SweepConfig(name="grid", base=TINY, backbones=("small_cnn",), learning_rates=(1e-3, 3e-3),
                         freeze_points=(1, 4), seeds=(7,))
    record = sweep.launch_sweep(config)
    assert len(record.run_ids) == 4
    state = wait_for(lambda: (s := sweep.read_sweep(record.id)).status not in ("queued", "running") and s, 240,
                     "the sweep to end")
    logs = "\n".join(run.log_tail(15) for run in record.runs())
    assert state.status == "done", logs
    assert state.progress_text == "4 of 4 done" and state.counts == {"succeeded": 4}
    assert state.eta_seconds == 0.0 and state.best is not None
    for row in state.rows:
        assert row["epochs_done"] == 2 and row["sweep"] == record.id
        assert isinstance(row["trainable_params"], int) and row["wall_seconds"] > 0
    assert {row["freeze"] for row in state.rows} == {1, 4}
    assert {row["layer"] for row in state.rows} == {"input_layer", "block2_conv"}  # layer at the freeze index
    slots = {Run(home / "runs" / run_id).file("status.json").read_text().count('"slot"') for run_id in record.run_ids}
    assert slots == {1}


def test_a_trailing_run_is_pruned_and_keeps_its_epochs(home: Path, wait_for) -> None:
    # Deterministic: the other run of the sweep is a hand-made record at 1.0 validation accuracy after epoch 1,
    # and the real run learns nothing (lr 1e-7) in its 1 epoch before the rung.
    config = SweepConfig(name="prune", base=TINY.replace(epochs=3), backbones=("small_cnn",),
                         learning_rates=(1e-3, 1e-7), freeze_points=(1,), seeds=(7,),
                         prune=PruneConfig(rungs=(1,), keep_fraction=0.5, min_runs=2))
    record = sweep.create_sweep(config)
    leader, loser = record.runs()
    leader.file(METRICS_FILE).write_text("epoch,loss,accuracy,val_loss,val_accuracy,learning_rate,seconds\n"
                                         "1,0.1,1.0,0.1,1.0,0.001,1.0\n")
    leader.write_status(Status.SUCCEEDED, ended_at=now_iso())
    launch.launch(loser)
    wait_for(lambda: loser.status().is_terminal(), 180, f"the run to end (log:\n{loser.log_tail()})")
    assert loser.status() == Status.PRUNED, loser.log_tail()
    assert [row["epoch"] for row in loser.metrics()] == [1]
    assert loser.state().ended_at
    assert sweep.run_summary(loser)["pruned_at_epoch"] == 1
    assert (loser.path / "checkpoint" / "state.json").is_file()  # resumable by hand
    state = sweep.read_sweep(record.id)
    assert state.counts == {"succeeded": 1, "pruned": 1} and state.status == "done"


def test_the_feeder_keeps_one_run_waiting_and_a_stopped_sweep_resumes(home: Path, wait_for,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # A process per run (CARVIZ_WARM_WORKERS=0): the feeder launches each run itself, one ahead of the slot.
    monkeypatch.setenv("CARVIZ_SLOTS", "1")
    monkeypatch.setenv("CARVIZ_WARM_WORKERS", "0")
    config = SweepConfig(name="feed", base=TINY, backbones=("small_cnn",), learning_rates=(1e-3, 2e-3, 3e-3),
                         freeze_points=(1,), seeds=(7,))
    record = sweep.launch_sweep(config)
    first, second, third = record.runs()
    wait_for(lambda: first.status() == Status.RUNNING, 60, "the first run to start")
    # One slot: the first runs, the second waits for it, the third has no process yet.
    assert second.file("launch.json").exists() or wait_for(lambda: second.file("launch.json").exists(), 10,
                                                            "the second run to be launched")
    assert not third.file("launch.json").exists()
    sweep.stop_sweep(record.id)
    wait_for(lambda: all(run.status().is_terminal() for run in record.runs()), 60, "every run to end")
    assert third.status() == Status.STOPPED and not third.file("launch.json").exists()  # never had a process
    assert sweep.read_sweep(record.id).status == "stopped"

    resumed = sweep.resume_sweep(record.id)
    assert third.id in resumed
    state = wait_for(lambda: (s := sweep.read_sweep(record.id)).status not in ("queued", "running") and s, 240,
                     "the resumed sweep to end")
    assert state.status == "done", "\n".join(run.log_tail(15) for run in record.runs())
    for run in record.runs():
        assert [row["epoch"] for row in run.metrics()] == [1, 2]
