"""Launching training runs and LR range tests as jobs: create the record in the store, hand it to a backend."""

from __future__ import annotations

from pathlib import Path

from carviz.core import jobs
from carviz.core.config import TrainConfig
from carviz.core.jobs import JobKind, Status
from carviz.core.lineage import parent_of
from carviz.core.store import LRTest, Run, Store

TRAIN_JOB = JobKind("training", "carviz.ml.train", needs_accelerator=True)
LR_TEST_JOB = JobKind("LR range test", "carviz.ml.lr_range", needs_accelerator=True)


def launch(run: Run, backend: str | None = None) -> None:
    """Start the run's training job; it waits for a slot (local) or for Ray's resources by itself."""
    jobs.launch(run, TRAIN_JOB, backend)


def submit(config: TrainConfig, runs_root: Path | None = None, backend: str | None = None) -> Run:
    """Create a run for `config` and launch its job. A launch that fails (e.g. Ray refused it) leaves the run
    failed with the reason, never queued forever. A config that starts from a run is refused (ConfigError) unless
    that run is finished and of the same architecture."""
    store = Store(runs_root)
    if config.init_from_run:
        parent_of(config, store)
    run = store.create_run(config)
    jobs.launch_or_fail(run, TRAIN_JOB, backend)
    return run


def stop(run: Run, timeout: float = 30.0) -> Status:
    """Stop a run's job: gracefully between steps, killed after `timeout` seconds."""
    return jobs.stop(run, timeout)


def resume(run: Run, backend: str | None = None, accept_dataset_changes: bool = False) -> None:
    """Relaunch a stopped, lost or failed run from its last checkpoint (on its last backend by default). It trains on
    the split recorded at launch; if the dataset changed since, it stops unless accept_dataset_changes."""
    state = run.state()
    if state.status.is_terminal() and state.status != Status.SUCCEEDED:
        run.request_resume(accept_dataset_changes)
    jobs.resume(run, TRAIN_JOB, backend)


def launch_lr_test(config: TrainConfig, params: dict[str, float | int], runs_root: Path | None = None,
                   backend: str | None = None) -> LRTest:
    """Create an LR range test record and start its job; like training, it takes a slot (or a Ray GPU)."""
    test = Store(runs_root).create_lr_test(config, params)
    jobs.launch_or_fail(test, LR_TEST_JOB, backend)
    return test
