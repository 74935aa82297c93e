"""Fixtures for the browser test: a served dashboard on 127.0.0.1 over a temp CARVIZ_HOME, and headless Chromium."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("CARVIZ_E2E_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = REPO_ROOT / "test-artifacts" / "e2e"
HEALTH_TIMEOUT = 60.0
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",  # no DNS lookups: only 127.0.0.1 is reachable
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(base_url: str, server: subprocess.Popen, log: Path, timeout: float = HEALTH_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"streamlit exited with {server.returncode} before it was healthy:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{base_url}/_stcore/health", timeout=2) as response:
                if response.status == 200 and response.read().strip() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.25)
    pytest.fail(f"streamlit was not healthy within {timeout:.0f} s:\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def e2e_home(tmp_path: Path) -> Path:
    """A CARVIZ_HOME with an empty runs/ and a small pre-drawn demo dataset (4 classes × 16 images, 64 px)."""
    from carviz.data.datasets import generate_demo_dataset

    home = tmp_path / "home"
    (home / "runs").mkdir(parents=True)
    generate_demo_dataset(home / "data" / "demo", per_class=16, image_size=64)
    return home


@pytest.fixture
def dashboard(e2e_home: Path, tmp_path: Path) -> Iterator[dict]:
    """`streamlit run dashboard.py` on 127.0.0.1:<free port>; stops the server and any job it launched."""
    from carviz.core import jobs
    from carviz.core.store import list_runs

    port = free_port()
    env = dict(os.environ)
    env["CARVIZ_HOME"] = str(e2e_home)
    for name in ("CARVIZ_RUNS", "CARVIZ_DATA"):
        env.pop(name, None)
    env["PYTHONUNBUFFERED"] = "1"
    log_path = tmp_path / "streamlit.log"
    log = open(log_path, "wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "dashboard.py",
         "--server.address", "127.0.0.1", "--server.port", str(port),
         "--server.headless", "true", "--server.fileWatcherType", "none",
         "--browser.gatherUsageStats", "false"],
        cwd=str(REPO_ROOT), env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base_url, server, log_path)
        yield {"url": base_url, "home": e2e_home, "runs": e2e_home / "runs", "log": log_path}
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        log.close()
        for run in list_runs(e2e_home / "runs"):  # jobs run in their own sessions: the server's end does not stop them
            if not run.status().is_terminal():
                jobs.stop(run, timeout=15)


@pytest.fixture
def browser_page(artifacts_dir: Path) -> Iterator:
    """A fresh headless Chromium page (Debian's binary; Playwright's own download is not used)."""
    if not CHROMIUM.exists() or not shutil.which(str(CHROMIUM)):
        pytest.skip(f"no Chromium at {CHROMIUM} (install Debian's chromium package)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright Python package is not installed")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1440, "height": 1100})
            page = context.new_page()
            page.set_default_timeout(60_000)
            yield page
            context.close()
        finally:
            browser.close()
