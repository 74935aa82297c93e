"""Shared fixtures (an isolated CARVIZ_HOME per test, one tiny trained run per session, a polling wait, pages set up
as dashboard.py sets them up) and the test order: files with slow tests first."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import pytest

import carviz.ml  # noqa: F401  (before any test module imports Keras: the same CPU kernels as carviz's own processes)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the files that hold slow tests first (otherwise in collection order). scripts/test.sh hands whole files to
    two xdist workers in this order; a long file handed out last would leave one worker alone at the end."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: each file's tests keep their order


@pytest.fixture(scope="session", autouse=True)
def pages_as_under_the_dashboard() -> None:
    """Page files run by AppTest get the end-of-run cleanup dashboard.py installs for them in the real app."""
    from app_pages import _rerun_cleanup

    _rerun_cleanup.install()


@pytest.fixture
def carviz_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty CARVIZ_HOME with runs/ and data/, used by everything that reads settings."""
    home = tmp_path / "home"
    (home / "runs").mkdir(parents=True)
    (home / "data").mkdir()
    monkeypatch.setenv("CARVIZ_HOME", str(home))
    monkeypatch.delenv("CARVIZ_RUNS", raising=False)
    monkeypatch.delenv("CARVIZ_DATA", raising=False)
    monkeypatch.delenv("CARVIZ_CACHE", raising=False)
    return home


@pytest.fixture(scope="session")
def tiny_trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(home, run folder): demo data and one finished tiny run (small_cnn, 32 px, 1 epoch), trained once per
    session; tests only read it (they may add runs of their own beside it)."""
    from carviz.data import datasets
    from carviz.core import store as runs
    from carviz.ml import train
    from carviz.core.config import TrainConfig

    home = tmp_path_factory.mktemp("carviz-tiny-trained")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CARVIZ_HOME", str(home))
        patch.delenv("CARVIZ_RUNS", raising=False)
        patch.delenv("CARVIZ_DATA", raising=False)
        patch.delenv("CARVIZ_CACHE", raising=False)
        datasets.generate_demo_dataset(home / "data" / "demo", per_class=12, image_size=64)
        run = runs.create_run(TrainConfig(name="tiny", dataset="demo", backbone="small_cnn", weights="none",
                                          image_size=32, epochs=1, batch_size=16, head="recommended",
                                          precision="float32"))
        assert train.train(run) == runs.Status.SUCCEEDED, run.log_tail()
    return home, run.path


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
