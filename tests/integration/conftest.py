"""Fixtures for tests that start real job processes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import pytest

from carviz.core import jobs
from carviz.core.store import list_runs


@pytest.fixture
def job_home(carviz_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """CARVIZ_HOME for real jobs (quiet TensorFlow logs); any job still running at the end is stopped."""
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    yield carviz_home
    for run in list_runs(carviz_home / "runs"):  # never leave a job behind
        if not run.status().is_terminal():
            jobs.stop(run, timeout=5)


@pytest.fixture
def wait_for() -> Callable[..., Any]:
    """wait_for(predicate, timeout, what): poll until predicate() is truthy and return it, else fail saying what."""

    def wait(predicate: Callable[[], Any], timeout: float, what: str, poll: float = 0.2) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(poll)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")

    return wait
