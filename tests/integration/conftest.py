"""Fixtures for tests that start real job processes."""

from __future__ import annotations

from pathlib import Path

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
