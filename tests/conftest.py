"""Shared fixtures: an isolated CARVIZ_HOME per test, and where ../shared lives (if it does)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("CARVIZ_SHARED") or REPO_ROOT.parent / "shared")
SHARED_DATA = SHARED / "data"
SHARED_KERAS_HOME = SHARED / "keras_home"


def needs_shared(path: Path, what: str):
    """Skip marker for tests that need real data or weights from ../shared."""
    return pytest.mark.skipif(not path.exists(), reason=f"needs {what} at {path} (../shared is absent here)")


@pytest.fixture
def carviz_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty CARVIZ_HOME with runs/ and data/, used by everything that reads settings."""
    home = tmp_path / "home"
    (home / "runs").mkdir(parents=True)
    (home / "data").mkdir()
    monkeypatch.setenv("CARVIZ_HOME", str(home))
    monkeypatch.delenv("CARVIZ_RUNS", raising=False)
    monkeypatch.delenv("CARVIZ_DATA", raising=False)
    return home
