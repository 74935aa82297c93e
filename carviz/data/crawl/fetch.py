"""Downloads for the crawler (http(s) and data: URLs, size and time caps) and the headless Chromium it drives."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import os
import shlex
import shutil
import socket
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

from carviz import __version__

USER_AGENT = f"Mozilla/5.0 (compatible; carviz-crawler/{__version__})"
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
CHROMEDRIVER_CANDIDATES = ("/usr/bin/chromedriver",)
# Headless, and quiet: no sync, updates, metrics or other traffic besides the pages we open.
CHROMIUM_ARGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
    "--disable-default-apps", "--disable-domain-reliability", "--disable-client-side-phishing-detection",
    "--no-default-browser-check", "--disable-dev-shm-usage", "--disable-extensions", "--window-size=1280,1000",
)


# ---------------------------------------------------------------- downloads


class FetchError(Exception):
    """A candidate URL could not be downloaded; reason is a short code (http_error, timeout, too_large...)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


class _HttpOnlyRedirect(urllib.request.HTTPRedirectHandler):
    # urllib would also follow redirects to ftp://; a results page must not steer us off http(s)
    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any,
                         newurl: str) -> urllib.request.Request | None:
        if urlsplit(newurl).scheme not in ("http", "https"):
            raise FetchError("bad_redirect", newurl[:200])
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_opener = urllib.request.build_opener(_HttpOnlyRedirect)


def url_key(url: str) -> str:
    """How a URL is recorded: as is, except data: URLs, which become data:<type>;sha256=<hex> (short)."""
    if url.startswith("data:"):
        head = url[5:].split(",", 1)[0].split(";", 1)[0]
        return f"data:{head};sha256={hashlib.sha256(url.encode()).hexdigest()}"
    return url


def fetch(url: str, timeout: float = 15.0, max_bytes: int = 15 << 20, user_agent: str = USER_AGENT) -> bytes:
    """Download a http(s) or data: URL; FetchError past `timeout` seconds in all or `max_bytes` bytes."""
    scheme = urlsplit(url).scheme.lower()
    if scheme == "data":
        header, _, payload = url[5:].partition(",")
        if len(payload) > max_bytes * 4 // 3 + 4:
            raise FetchError("too_large", f"data: URL over {max_bytes} bytes")
        try:
            if header.endswith(";base64"):
                data = base64.b64decode(payload, validate=False)
            else:
                data = unquote_to_bytes(payload)
        except ValueError as exc:
            raise FetchError("bad_data_url", str(exc)) from None
        if len(data) > max_bytes:
            raise FetchError("too_large", f"over {max_bytes} bytes")
        return data
    if scheme not in ("http", "https"):
        raise FetchError("unsupported_scheme", scheme or "none")
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(url, headers={"User-Agent": user_agent, "Accept": "image/*,*/*;q=0.5"})
    try:
        with _opener.open(request, timeout=timeout) as response:
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise FetchError("too_large", f"Content-Length {declared} over {max_bytes}")
            chunks, size = [], 0
            while True:
                if time.monotonic() > deadline:
                    raise FetchError("timeout", f"over {timeout:g} s")
                chunk = response.read(64 << 10)
                if not chunk:
                    break
                size += len(chunk)
                if size > max_bytes:
                    raise FetchError("too_large", f"over {max_bytes} bytes")
                chunks.append(chunk)
            return b"".join(chunks)
    except FetchError:
        raise
    except urllib.error.HTTPError as exc:
        raise FetchError("http_error", f"HTTP {exc.code}") from None
    except (TimeoutError, socket.timeout) as exc:
        raise FetchError("timeout", f"over {timeout:g} s ({exc})") from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, (TimeoutError, socket.timeout)):
            raise FetchError("timeout", f"over {timeout:g} s") from None
        raise FetchError("network", str(exc.reason)) from None
    except (OSError, ValueError, http.client.HTTPException) as exc:  # reset, bad URL, incomplete read
        raise FetchError("network", f"{type(exc).__name__}: {exc}") from None


# ---------------------------------------------------------------- browser


def find_browser() -> tuple[str, str]:
    """Paths of Chromium and chromedriver ($CARVIZ_CHROMIUM / $CARVIZ_CHROMEDRIVER, else Debian's);
    FileNotFoundError if missing."""

    def pick(env: str, candidates: tuple[str, ...], what: str) -> str:
        chosen = os.environ.get(env)
        options = (chosen,) if chosen else candidates
        for path in options:
            if path and os.access(path, os.X_OK):
                return path
        raise FileNotFoundError(
            f"{what} not found (looked at {', '.join(options)}); install it "
            f"(Debian: apt-get install chromium chromium-driver) or set ${env}"
        )

    return (pick("CARVIZ_CHROMIUM", CHROMIUM_CANDIDATES, "Chromium"),
            pick("CARVIZ_CHROMEDRIVER", CHROMEDRIVER_CANDIDATES, "chromedriver"))


@contextlib.contextmanager
def open_browser(page_timeout: float = 30.0, extra_args: tuple[str, ...] = (),
                 profile_dir: Path | None = None) -> Iterator[Any]:
    """Headless Chromium through chromedriver with a throwaway profile; never lets Selenium Manager download.

    The profile is a new temporary folder, or `profile_dir` emptied first (what a killed crawl left there goes:
    a job that may be killed keeps its profile in its record, not in /tmp). Removed on the way out.
    $CARVIZ_CHROMIUM_ARGS (shell-quoted) adds arguments, e.g. a --host-resolver-rules that keeps tests
    off DNS: Chromium still looks up its update and sign-in hosts otherwise.
    """
    chromium, chromedriver = find_browser()
    os.environ.setdefault("SE_OFFLINE", "true")
    from selenium import webdriver  # lazy: reading crawl state must not pay for Selenium
    from selenium.webdriver.chrome.service import Service

    if profile_dir is None:
        profile = tempfile.mkdtemp(prefix="carviz-chromium-")
    else:
        shutil.rmtree(profile_dir, ignore_errors=True)
        profile_dir.mkdir(parents=True)
        profile = str(profile_dir)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in CHROMIUM_ARGS:
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={profile}")
    for arg in (*shlex.split(os.environ.get("CARVIZ_CHROMIUM_ARGS", "")), *extra_args):
        options.add_argument(arg)
    driver = None
    try:
        driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
        driver.set_page_load_timeout(page_timeout)
        driver.set_script_timeout(page_timeout)
        yield driver
    finally:
        if driver is not None:
            with contextlib.suppress(Exception):
                driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
