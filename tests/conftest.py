"""Shared fixtures: an isolated CARVIZ_HOME per test."""

from __future__ import annotations

from pathlib import Path

import pytest


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
