"""The dashboard's server settings (.streamlit/config.toml): XSRF protection, an upload cap equal to the importer's,
a Host allow-list against DNS rebinding, checked on a real `streamlit run dashboard.py` on 127.0.0.1, and no
garbage collection after every run."""

from __future__ import annotations

import base64
import http.client
import os
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from carviz.data import importer

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / ".streamlit" / "config.toml"


def test_config_sets_xsrf_the_upload_cap_and_the_host_allow_list() -> None:
    server = tomllib.loads(CONFIG.read_text(encoding="utf-8"))["server"]
    assert server["address"] == "127.0.0.1"
    assert server["enableXsrfProtection"] is True and server["enableCORS"] is True
    assert server["maxUploadSize"] * (1 << 20) == importer.MAX_TOTAL_BYTES  # MiB, as Streamlit counts them
    assert server["maxUploadSize"] * (1 << 20) >= importer.MAX_FILE_BYTES
    assert sorted(server["allowedHosts"]) == ["127.0.0.1", "localhost"]
    assert server["enableAgentApi"] is False


def test_config_turns_off_the_garbage_collection_after_every_run(monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit import config

    assert tomllib.loads(CONFIG.read_text(encoding="utf-8"))["runner"]["postScriptGC"] is False
    monkeypatch.chdir(REPO)  # where `streamlit run dashboard.py` reads .streamlit/config.toml
    config.get_config_options(force_reparse=True)
    assert config.get_option("runner.postScriptGC") is False  # an option this Streamlit knows, read as set


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _request(port: int, method: str, path: str, headers: dict[str, str]) -> int:
    """Send one request to 127.0.0.1:port with exactly these headers (Host included); return the status."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        return conn.getresponse().status
    finally:
        conn.close()


def _websocket(port: int, host: str, origin: str | None = None) -> int:
    """A WebSocket handshake on the app's stream: 101 when accepted, 403 when refused."""
    headers = {"Host": host, "Upgrade": "websocket", "Connection": "Upgrade",
               "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(), "Sec-WebSocket-Version": "13"}
    if origin:
        headers["Origin"] = origin
    return _request(port, "GET", "/_stcore/stream", headers)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[int]:
    """`streamlit run dashboard.py` on 127.0.0.1:<free port> with the project's config (no overriding flags)."""
    port = _free_port()
    env = dict(os.environ, CARVIZ_HOME=str(tmp_path / "home"), PYTHONUNBUFFERED="1")
    for name in ("CARVIZ_RUNS", "CARVIZ_DATA", "CARVIZ_CACHE"):
        env.pop(name, None)
    log_path = tmp_path / "streamlit.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "dashboard.py", "--server.address", "127.0.0.1",
             "--server.port", str(port), "--server.headless", "true"],
            cwd=str(REPO), env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while True:
                if server.poll() is not None:
                    pytest.fail(f"streamlit exited with {server.returncode}:\n{log_path.read_text()[-3000:]}")
                try:
                    if _request(port, "GET", "/_stcore/health", {"Host": f"127.0.0.1:{port}"}) == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"streamlit was not healthy within 60 s:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.25)
            yield port
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=10)


@pytest.mark.slow
def test_a_foreign_host_is_refused_and_the_served_one_accepted(served: int) -> None:
    port = served
    # DNS rebinding: a page at evil.example whose name now points at 127.0.0.1 is same-origin with its own Host
    assert _websocket(port, f"evil.example:{port}", f"http://evil.example:{port}") == 403
    assert _websocket(port, f"evil.example:{port}") == 403
    assert _websocket(port, f"127.0.0.1.evil.example:{port}") == 403
    assert _websocket(port, f"127.0.0.1:{port}", f"http://127.0.0.1:{port}") == 101
    assert _websocket(port, f"localhost:{port}", f"http://localhost:{port}") == 101
    # XSRF protection on: an upload without the token is refused before anything else is looked at
    assert _request(port, "PUT", "/_stcore/upload_file/session/file",
                    {"Host": f"127.0.0.1:{port}", "Content-Length": "0"}) == 403
