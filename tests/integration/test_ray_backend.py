"""The Ray backend against a real Ray head (one per module, on 127.0.0.1, stopped at the end).

A one-machine cluster: CARVIZ_HOME is on the local disk, which its only node sees. The head has 2 CPUs and no
GPU, so a training job asks Ray for 1 CPU and two run at once.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from carviz import cli
from carviz.core import jobs, launch
from carviz.core import sweeps as sweep
from carviz.core.config import TrainConfig
from carviz.core.jobs import ray_backend
from carviz.core.jobs.harness import EXIT_NO_RECORD
from carviz.core.jobs.record import hostname
from carviz.core.store import CONFIG_FILE, Run, Status, Store
from carviz.core.sweeps import PruneConfig, SweepConfig
from carviz.data.datasets import generate_demo_dataset

try:
    from .ray_head import RayHead, listening_addresses, start_ray_head
except ImportError:  # collected as a top-level module (rootdir-relative imports)
    from ray_head import RayHead, listening_addresses, start_ray_head

try:
    from .job_helpers import metric_epochs_on_disk, wait_terminal
except ImportError:  # collected as a top-level module (rootdir-relative imports)
    from job_helpers import metric_epochs_on_disk, wait_terminal

pytestmark = pytest.mark.slow

TINY = TrainConfig(name="tiny", dataset="demo", backbone="small_cnn", weights="none", image_size=32, epochs=2,
                   batch_size=16, learning_rate=1e-3, precision="float32")

# What a finished run's folder holds, whichever backend ran it (besides tensorboard/ and launch.json).
RUN_FILES = ("config.json", "status.json", "metrics.csv", "progress.json", "run.json", "split.json", "classes.json",
             "model.keras", "evaluation.json", "job.log", "heartbeat", "checkpoint/last.npz",
             "checkpoint/state.json")


@pytest.fixture(scope="module")
def ray_head() -> RayHead:
    head = start_ray_head(num_cpus=2, num_gpus=0)
    try:
        yield head
    finally:
        head.stop()


@pytest.fixture
def home(job_home: Path, ray_head: RayHead, monkeypatch: pytest.MonkeyPatch) -> Path:
    generate_demo_dataset(job_home / "data" / "demo", per_class=12, image_size=48)
    monkeypatch.setenv("CARVIZ_RAY_ADDRESS", ray_head.address)
    monkeypatch.setenv("CARVIZ_SLOTS", "1")
    for name in ("CARVIZ_RAY_CPUS_PER_JOB", "CARVIZ_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    return job_home


def ray_info(run: Run):
    info = ray_backend.job_info(run.launch_info())
    assert info is not None, f"Ray does not know the job of {run.id}"
    return info


def ray_status(run: Run) -> str:
    return ray_backend.status_name(ray_info(run))



def tensorboard_epochs(run: Run) -> int:
    """Epochs in the run's TensorBoard log (a Ray job skips Python's teardown: its writers must have flushed)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run.tensorboard_dir() / "train"))
    events.Reload()
    return len(events.Tensors("epoch_loss")) if "epoch_loss" in events.Tags()["tensors"] else 0


def record_files(run: Run) -> set[str]:
    return {str(path.relative_to(run.path)) for path in run.path.rglob("*")
            if path.is_file() and "tensorboard" not in path.parts and path.name != "launch.json"
            and not path.name.startswith(".")}


def test_the_head_listens_on_loopback_only(ray_head: RayHead) -> None:
    addresses = listening_addresses(ray_head)
    assert addresses and addresses <= {"127.0.0.1", "::ffff:127.0.0.1"}, addresses


def test_a_run_on_ray_has_the_same_record_as_a_local_run(home: Path, wait_for) -> None:
    on_ray = launch.submit(TINY, backend="ray")
    on_here = launch.submit(TINY, backend="local")  # at the same time: the machine has 2 cores
    assert on_ray.launch_info()["resources"] == {"entrypoint_num_cpus": 1.0}
    assert wait_terminal(wait_for, on_ray, 120) == Status.SUCCEEDED, on_ray.log_tail()
    assert wait_terminal(wait_for, on_here, 120) == Status.SUCCEEDED, on_here.log_tail()

    assert record_files(on_ray) == record_files(on_here)
    for name in RUN_FILES:
        assert on_ray.file(name).is_file(), name
    assert metric_epochs_on_disk(on_ray) == [1, 2]
    assert tensorboard_epochs(on_ray) == tensorboard_epochs(on_here) == 2
    assert on_ray.progress()["phase"] == "done"
    assert on_ray.evaluation()["images"] == on_ray.info()["val_images"]
    assert "epoch 2/2" in on_ray.file("job.log").read_text()

    state = on_ray.state()
    assert (state.backend, state.host) == ("ray", hostname())
    raw = on_ray.raw_status()
    assert (raw["backend"], raw["host"], raw["slot"]) == ("ray", hostname(), None)  # Ray, not a local slot
    device = on_ray.info()["device"]
    assert (device["backend"], device["node"], device["kind"]) == ("ray", hostname(), "cpu")
    assert [attempt["backend"] for attempt in on_ray.info()["attempts"]] == ["ray"]
    assert on_here.info()["device"]["backend"] == "local" and on_here.raw_status()["slot"] == 0

    wait_for(lambda: ray_status(on_ray) == "SUCCEEDED", 60, "Ray to see the job exit")
    assert ray_info(on_ray).driver_exit_code == 0
    assert jobs.capacity("ray") == 2


def test_cli_stop_stops_a_long_ray_run_and_a_job_waiting_in_rays_queue(home: Path, wait_for, capsys) -> None:
    long = TINY.replace(epochs=500)
    run, other = launch.submit(long, backend="ray"), launch.submit(long, backend="ray")  # both CPUs taken
    wait_for(lambda: run.metrics() and other.status() == Status.RUNNING, 120,
             f"a finished epoch (logs:\n{run.log_tail()}\n{other.log_tail()})")
    waiting = launch.submit(long, backend="ray")
    wait_for(lambda: ray_status(waiting) == "PENDING", 30, "the third job to wait for a CPU in Ray")
    started = time.monotonic()
    assert launch.stop(waiting, timeout=30) == Status.STOPPED
    assert time.monotonic() - started < 5, "a job still waiting in Ray's queue stops at once"
    assert waiting.status() == Status.STOPPED

    assert cli.main(["stop", run.id, "--timeout", "10"]) == 0
    assert f"{run.id} stopped" in capsys.readouterr().out
    state = run.state()
    assert state.status == state.recorded == Status.STOPPED, "the job itself recorded the stop (graceful)"
    assert ray_status(run) in ("STOPPED", "SUCCEEDED"), "stop returns once Ray's job has ended"
    done = metric_epochs_on_disk(run)
    assert done == list(range(1, len(done) + 1)) and len(done) < 500
    assert not run.file("model.keras").exists()
    assert tensorboard_epochs(run) == len(done), "a stopped job's TensorBoard log is complete too"

    # the freed CPU goes to the waiting job, which Ray stops as it starts, before it trains
    wait_for(lambda: ray_status(waiting) in ("STOPPED", "SUCCEEDED", "FAILED"), 60, "Ray to end the waiting job")
    assert waiting.status() == Status.STOPPED and not waiting.metrics()
    assert launch.stop(other, timeout=10) == Status.STOPPED


def test_an_unreachable_cluster_fails_the_launch_and_leaves_states_as_recorded(home: Path, ray_head: RayHead,
                                                                               monkeypatch) -> None:
    closed = f"http://127.0.0.1:{ray_head.port_map['port'] + 99}"  # inside the head's block, never listened on
    monkeypatch.setenv("CARVIZ_RAY_ADDRESS", closed)
    with pytest.raises(ray_backend.RayUnavailable, match="cannot"):
        launch.submit(TINY, backend="ray")
    failed = Store().list_runs()[0]
    assert failed.status() == Status.FAILED and "could not launch" in failed.state().error
    running = Store().create_run(TINY)
    running.write_status(Status.RUNNING, started_at="2026-01-01T00:00:00.000+00:00")
    running.write_launch({"backend": "ray", "address": closed, "submission_id": "carviz-gone"})
    state = running.state()
    assert state.status == Status.RUNNING and "cannot reach the Ray cluster" in state.reason, state.reason
    running.touch_heartbeat()
    os.utime(running.file("heartbeat"), (time.time() - 600, time.time() - 600))
    assert running.state().status == Status.LOST  # hung, as far as the record can tell
    with pytest.raises(ValueError, match="still runs"):
        launch.resume(running)  # but Ray cannot say the job ended: never resumed beside itself
    running.write_status(Status.FAILED)  # nothing for the fixture to stop


def test_a_pruning_sweep_through_ray_ends_done_with_every_run_recorded(home: Path, wait_for) -> None:
    # Pruning judges configurations (their mean over the seeds at the rung) and Ray runs two at once, so which run
    # is pruned depends on arrival order (the decision itself is unit-tested): here every run must end succeeded
    # with all its epochs, pruned at the rung with the epochs it finished, or pruned with its configuration before
    # training, and the sweep must end done.
    config = SweepConfig(name="ray-prune", base=TINY.replace(epochs=3), backbones=("small_cnn",),
                         learning_rates=(3e-3, 1e-7), freeze_points=(1,), seeds=(1, 2),
                         prune=PruneConfig(rungs=(1,), keep_fraction=0.5, min_runs=2))
    record = sweep.launch_sweep(config, backend="ray")
    assert len(record.run_ids) == 4 and record.backend == "ray"
    feeder_launch = record.launch_info()
    assert (feeder_launch["backend"], feeder_launch["resources"]) == ("ray", {}), "the feeder asks Ray for nothing"

    state = wait_for(lambda: (s := sweep.read_sweep(record.id)).status not in ("queued", "running") and s, 240,
                     "the sweep to end")
    runs = record.runs()
    logs = "\n".join(run.log_tail(10) for run in runs)
    assert state.status == "done", (state.counts, logs)
    assert state.progress_text == "4 of 4 done"
    for run in runs:
        if run.status() == Status.PRUNED and run.raw_status()["pruned_at_epoch"] == 0:
            assert "configuration was pruned" in run.raw_status()["pruned_reason"] and not run.metrics()
            continue
        assert run.raw_status()["backend"] == "ray" and run.launch_info()["backend"] == "ray"
        if run.status() == Status.PRUNED:
            assert run.raw_status()["pruned_at_epoch"] == 1
            assert metric_epochs_on_disk(run) == [1], "a pruned run keeps the epochs it finished"
            assert run.checkpoint()[1] == 1 and not run.has_model()
        else:
            assert run.status() == Status.SUCCEEDED and metric_epochs_on_disk(run) == [1, 2, 3]
    feeder = record.feeder_state()
    assert feeder.status == Status.SUCCEEDED and feeder.backend == "ray"
    workers = {worker.id: worker.launch_info() for worker in record.workers()}
    assert 1 <= len(workers) <= 2 and record.raw_status()["workers"] == len(workers)  # Ray runs two at once
    for run in runs:
        if run.launch_info():  # hosted by a worker, a Ray job of its own: the run's launch names it
            worker = workers[run.launch_info()["worker"]]
            assert run.launch_info()["submission_id"] == worker["submission_id"]
            assert worker["resources"] == {"entrypoint_num_cpus": 1.0}
    wait_for(lambda: ray_backend.status_name(ray_backend.job_info(feeder_launch)) == "SUCCEEDED", 30,
             "Ray to see the feeder exit")


def test_a_killed_ray_worker_loses_its_run_and_a_killed_ray_job_too_and_each_resumes_with_every_epoch_once(
        home: Path, wait_for) -> None:
    """One run through both kills (a Ray job's start-up fewer than a run each): its sweep worker is killed, the other
    runs still run, it resumes as a Ray job of its own; that job is killed too and the run resumes to its end."""
    epochs = 30
    config = SweepConfig(name="ray-kill", base=TINY.replace(epochs=epochs), backbones=("small_cnn",),
                         learning_rates=(1e-3, 2e-3, 3e-3), freeze_points=(1,), seeds=(1,))
    record = sweep.create_sweep(config, backend="ray")
    first, second, third = record.runs()
    for run in (second, third):  # short, so the test ends soon: only the first is killed
        run.file("config.json").write_text(run.config().replace(epochs=2).to_json())
    sweep.start_feeder(record)
    wait_for(lambda: len(first.metrics()) >= 2, 120, f"two finished epochs (log:\n{first.log_tail()})")
    os.kill(first.raw_status()["pid"], signal.SIGKILL)  # its worker: a Ray job running it

    state = wait_for(lambda: (s := first.state()).status == Status.LOST and s, 30, "the run to read lost")
    assert "killed by SIGKILL" in state.reason, state.reason
    for run in (second, third):  # the other worker takes them (or one started in place of the killed one)
        assert wait_terminal(wait_for, run, 180) == Status.SUCCEEDED, run.log_tail()
    launch.resume(first)
    assert first.launch_info()["backend"] == "ray" and "worker" not in first.launch_info()  # a job of its own

    done = len(first.metrics())
    wait_for(lambda: len(first.metrics()) >= done + 2, 120, f"two epochs after resuming (log:\n{first.log_tail()})")
    os.kill(first.raw_status()["pid"], signal.SIGKILL)
    state = wait_for(lambda: (s := first.state()).status == Status.LOST and s, 30, "the resumed run to read lost")
    assert state.recorded == Status.RUNNING
    assert "killed by SIGKILL" in state.reason and "never recorded an end" in state.reason, state.reason
    assert ray_status(first) == "FAILED"

    launch.resume(first)
    assert first.launch_info()["backend"] == "ray", "resumed on its last backend"
    assert wait_terminal(wait_for, first, 180) == Status.SUCCEEDED, first.log_tail()
    assert metric_epochs_on_disk(first) == list(range(1, epochs + 1))
    attempts = first.info()["attempts"]
    # two epochs' rows were there, so the first epoch's checkpoint was too (a kill may land before the next one's)
    assert [a["backend"] for a in attempts] == ["ray", "ray", "ray"]
    assert attempts[1]["initial_epoch"] >= 1 and attempts[2]["initial_epoch"] > attempts[1]["initial_epoch"]


def test_a_job_that_cannot_see_its_record_fails_saying_so(home: Path, wait_for) -> None:
    run = Store().create_run(TINY)
    run.file(CONFIG_FILE).rename(run.file("config.moved"))  # what a node without the shared CARVIZ_HOME sees
    launch.launch(run, backend="ray")
    assert wait_terminal(wait_for, run, 120) == Status.FAILED
    state = run.state()
    assert "cannot see its record" in state.error and str(run.path) in state.error, state.error
    assert state.reason.startswith("Ray job failed before it started: carviz: the training job on host")
    info = ray_info(run)
    assert ray_backend.status_name(info) == "FAILED" and info.driver_exit_code == EXIT_NO_RECORD
    assert "cannot see its record" in info.message
