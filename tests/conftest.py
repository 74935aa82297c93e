"""Shared fixtures (an isolated CARVIZ_HOME per test, one tiny trained run per session, a polling wait, pages set up
as dashboard.py sets them up) and the test order: files with slow tests first."""

from __future__ import annotations

import os
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


@pytest.fixture(scope="session", autouse=True)
def component_scan_once() -> None:
    """AppTest scans every installed distribution's metadata for Streamlit components at each new AppTest (0.15 s
    here, over 100 times a run; a served dashboard scans once at start). Nothing is installed during a run: scan
    once."""
    try:
        from streamlit.components.v2 import manifest_scanner
    except ImportError:  # a Streamlit without components v2 does not scan
        return
    scan = manifest_scanner.scan_component_manifests
    found: list = []

    def scan_once(*args: Any, **kwargs: Any) -> list:
        if not found:
            found.append(scan(*args, **kwargs))
        return list(found[0])

    manifest_scanner.scan_component_manifests = scan_once


@pytest.fixture(scope="session", autouse=True)
def scripts_compiled_once() -> None:
    """AppTest starts every run with an empty script cache, so each run parses and rewrites (Streamlit's "magic")
    dashboard.py and the page again; a served dashboard compiles each once. Share the compiled code, keyed by the
    file's path, mtime and size."""
    try:
        from streamlit.runtime.scriptrunner.script_cache import ScriptCache
        from streamlit.testing.v1 import app_test
    except ImportError:
        return
    if getattr(app_test, "ScriptCache", None) is not ScriptCache:
        return
    compiled: dict[tuple, Any] = {}

    class ScriptCacheOfTheSession(ScriptCache):
        def get_bytecode(self, script_path: str) -> Any:
            stat = os.stat(script_path)
            key = (script_path, stat.st_mtime_ns, stat.st_size)
            if key not in compiled:
                compiled[key] = super().get_bytecode(script_path)
            return compiled[key]

    app_test.ScriptCache = ScriptCacheOfTheSession


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
