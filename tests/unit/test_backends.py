"""The Backend interface: names to backends, a record's launch.json to the backend that answers for it, and the
one difference of a job hosted by a warm worker (its process lives on after the job ends)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from carviz.core import jobs
from carviz.core.jobs.hosted import WorkerHosted
from carviz.core.jobs.local import LocalBackend
from carviz.core.jobs.ray_backend import RayBackend
from carviz.core.jobs.record import JobRecord, hostname
from carviz.core.jobs.status import Status, process_create_time


def test_backends_by_name_and_the_configured_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(jobs.get_backend("local"), LocalBackend) and isinstance(jobs.get_backend("ray"), RayBackend)
    with pytest.raises(ValueError, match="backend must be one of local, ray; got 'slurm'"):
        jobs.get_backend("slurm")
    monkeypatch.setenv("CARVIZ_BACKEND", "Ray ")
    assert jobs.default_backend() == "ray"
    monkeypatch.setenv("CARVIZ_BACKEND", "slurm")
    with pytest.raises(ValueError, match="CARVIZ_BACKEND must be one of local, ray"):
        jobs.default_backend()


def test_ray_is_offered_once_a_cluster_is_configured(monkeypatch: pytest.MonkeyPatch, carviz_home: Path) -> None:
    monkeypatch.delenv("CARVIZ_RAY_ADDRESS", raising=False)
    assert jobs.available_backends() == ["local"]
    monkeypatch.setenv("CARVIZ_RAY_ADDRESS", "http://127.0.0.1:8265")
    assert jobs.available_backends() == ["local", "ray"]


def test_a_records_launch_names_its_backend() -> None:
    assert isinstance(jobs.backend_of({}), LocalBackend)  # never launched, or recorded before backends were named
    assert isinstance(jobs.backend_of({"backend": "ray"}), RayBackend)
    hosted = jobs.backend_of({"backend": "ray", "worker": "20261206-000000.000-abcdef"})
    assert isinstance(hosted, WorkerHosted) and isinstance(hosted.inner, RayBackend)
    assert hosted.name == "ray" and hosted.remote


def _running_here(path: Path, **launch: object) -> JobRecord:
    """A record whose process is this test's own (alive, verifiable)."""
    path.mkdir()
    record = JobRecord(path)
    me = os.getpid()
    record.write_status(Status.RUNNING, pid=me, pid_create_time=process_create_time(me), host=hostname())
    record.write_launch({"backend": "local", "pid": me, "pid_create_time": process_create_time(me),
                         "host": hostname(), **launch})
    return record


def test_a_hosted_job_lives_only_until_it_ends_though_its_worker_goes_on(tmp_path: Path) -> None:
    lone = _running_here(tmp_path / "lone")
    hosted = _running_here(tmp_path / "hosted", worker="w1")
    for record in (lone, hosted):
        assert jobs.derive_state(record).status == Status.RUNNING
        assert jobs.backend_of(record.launch_info()).lives(record, jobs.derive_state(record))
    for record in (lone, hosted):
        record.write_status(Status.SUCCEEDED)
    # The lone job's process still runs after its final status: Resume waits for it to exit. The worker that
    # hosted the other goes on with its next job: that job is over now.
    assert jobs.still_exiting(lone, jobs.derive_state(lone))
    assert not jobs.still_exiting(hosted, jobs.derive_state(hosted))
    assert not jobs.backend_of(hosted.launch_info()).lives(hosted, jobs.derive_state(hosted))
    assert jobs.backend_of(hosted.launch_info()).kill(hosted, jobs.derive_state(hosted)) is False  # never kills
    with pytest.raises(TypeError, match="claims it"):
        jobs.backend_of(hosted.launch_info()).launch(hosted, jobs.JobKind("x", "x", False))
