"""Selenium image crawler: search-page adapters in, a deduplicated class folder and manifest out; runs as a job."""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import http.client
import json
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

import psutil
from PIL import Image

from carviz import __version__
from carviz.core import settings
from carviz.data.crawl.engines import Candidate, SearchEngine, make_engine
from carviz.data.importer import (
    DEFAULT_MAX_PIXELS,
    TRASH_DIR,
    dataset_path,
    decode_image,
    is_image_file,
    safe_class_name,
    to_rgb,
)

log = logging.getLogger("carviz.data.crawl.crawler")

STATE_DIR = ".crawl"
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
PROGRESS_INTERVAL = 0.25  # seconds between progress.json writes


# ---------------------------------------------------------------- spec


@dataclass(frozen=True)
class ClassRequest:
    """One class to collect: its folder name, the search queries to run in order, how many images to keep."""

    name: str
    queries: tuple[str, ...]
    target: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", safe_class_name(self.name))
        queries = (self.queries,) if isinstance(self.queries, str) else tuple(self.queries)
        queries = tuple(q.strip() for q in queries if isinstance(q, str) and q.strip())
        if not queries:
            raise ValueError(f"class {self.name!r} needs at least one search query")
        object.__setattr__(self, "queries", queries)
        if not isinstance(self.target, int) or not 1 <= self.target <= 100_000:
            raise ValueError(f"class {self.name!r}: target must be an integer in 1..100000, got {self.target!r}")


@dataclass(frozen=True)
class CrawlSpec:
    """A crawl request (saved as .crawl/spec.json): engine, classes, filters and politeness settings."""

    classes: tuple[ClassRequest, ...]
    engine: str = "bing"
    engine_options: dict[str, Any] = field(default_factory=dict)  # GenericEngine arguments
    min_side: int = 100  # pixels; smaller images are dropped
    max_bytes: int = 15 << 20  # per download; aborted past it
    delay: float = 1.0  # seconds between two downloads
    timeout: float = 15.0  # seconds allowed for one download
    near_threshold: int = 6  # phash Hamming distance counted as the same picture
    scroll_pause: float = 1.5  # seconds to wait for new results after scrolling / "more"
    stall_rounds: int = 3  # scrolls without new results before moving to the next query
    max_rounds: int = 60  # scrolls per query at most
    thumbnail_fallback: bool = True  # try the thumbnail when the full-size link is broken
    page_timeout: float = 30.0  # seconds for a results page to load

    def __post_init__(self) -> None:
        classes = tuple(c if isinstance(c, ClassRequest) else ClassRequest(**c) for c in self.classes)
        if not classes:
            raise ValueError("a crawl needs at least one class")
        names = [c.name for c in classes]
        if len(set(names)) != len(names):
            raise ValueError("class names must be unique")
        object.__setattr__(self, "classes", classes)
        object.__setattr__(self, "engine_options", dict(self.engine_options or {}))
        make_engine(self.engine, self.engine_options)  # validates engine and options
        checks = {
            "min_side": (1, 100_000), "max_bytes": (1, 1 << 32), "delay": (0, 3600), "timeout": (0.1, 3600),
            "near_threshold": (0, 64), "scroll_pause": (0, 600), "stall_rounds": (1, 1000),
            "max_rounds": (0, 100_000), "page_timeout": (1, 3600),
        }
        for name, (low, high) in checks.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                raise ValueError(f"{name} must be a number in {low}..{high}, got {value!r}")

    def make_engine(self) -> SearchEngine:
        return make_engine(self.engine, self.engine_options)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["classes"] = [{"name": c.name, "queries": list(c.queries), "target": c.target} for c in self.classes]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CrawlSpec:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown crawl spec keys: {', '.join(sorted(unknown))}")
        try:
            return cls(**{**data, "classes": tuple(ClassRequest(**c) for c in data.get("classes", ()))})
        except TypeError as exc:  # a class entry with missing or unknown keys
            raise ValueError(f"bad crawl spec: {exc}") from None


# ---------------------------------------------------------------- files


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _write_json_atomic(path: Path, data: Any, fsync: bool = True) -> None:
    """Temp file in the same folder, then os.replace: readers see the old or the new file, never half."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; other readers (a dashboard user) must see it
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False, indent=1)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file; a truncated or garbled line (a crash mid-write) is skipped."""
    rows = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict):
                    rows.append(row)
    except FileNotFoundError:
        pass
    return rows


def _append_jsonl(path: Path, row: dict[str, Any], fsync: bool) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()
        if fsync:
            os.fsync(f.fileno())


def state_dir(dataset_dir: Path) -> Path:
    return settings.safe_join(dataset_dir, STATE_DIR)


def _class_dirs(dataset: Path) -> list[Path]:
    if not dataset.is_dir():
        return []
    return sorted(p for p in dataset.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith("."))


def _count_images(folder: Path) -> int:
    try:
        return sum(1 for p in folder.iterdir() if is_image_file(p) and p.is_file())
    except FileNotFoundError:
        return 0


# ---------------------------------------------------------------- downloads


class FetchError(Exception):
    """A candidate URL could not be downloaded; reason is a short code (http_error, timeout, too_large...)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


class _HttpOnlyRedirect(urllib.request.HTTPRedirectHandler):
    # urllib would also follow redirects to ftp://; a results page must not steer us off http(s)
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
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
            data = base64.b64decode(payload, validate=False) if header.endswith(";base64") else unquote_to_bytes(payload)
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
    """Paths of Chromium and chromedriver ($CARVIZ_CHROMIUM / $CARVIZ_CHROMEDRIVER, else Debian's); FileNotFoundError if missing."""

    def pick(env: str, candidates: tuple[str, ...], what: str) -> str:
        chosen = os.environ.get(env)
        options = (chosen,) if chosen else candidates
        for path in options:
            if path and os.access(path, os.X_OK):
                return path
        raise FileNotFoundError(
            f"{what} not found (looked at {', '.join(options)}); install it (Debian: apt-get install chromium chromium-driver) or set ${env}"
        )

    return pick("CARVIZ_CHROMIUM", CHROMIUM_CANDIDATES, "Chromium"), pick("CARVIZ_CHROMEDRIVER", CHROMEDRIVER_CANDIDATES, "chromedriver")


@contextlib.contextmanager
def open_browser(page_timeout: float = 30.0, extra_args: tuple[str, ...] = ()) -> Iterator[Any]:
    """Headless Chromium through chromedriver with a throwaway profile; never lets Selenium Manager download.

    $CARVIZ_CHROMIUM_ARGS (shell-quoted) adds arguments, e.g. a --host-resolver-rules that keeps tests
    off DNS: Chromium still looks up its update and sign-in hosts otherwise.
    """
    chromium, chromedriver = find_browser()
    os.environ.setdefault("SE_OFFLINE", "true")
    from selenium import webdriver  # lazy: reading crawl state must not pay for Selenium
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="carviz-chromium-")
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


# ---------------------------------------------------------------- the crawl


@dataclass
class ClassProgress:
    """Per-class counters: target, images saved (in the folder), candidates seen, broken links, rejected images."""

    target: int
    saved: int = 0
    candidates: int = 0
    failed: int = 0
    rejected: int = 0
    state: str = "pending"  # pending, crawling, done, exhausted (results ran out), stopped

    @property
    def fraction(self) -> float:
        return min(1.0, self.saved / self.target) if self.target else 1.0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClassProgress:
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**fields)


@dataclass
class CrawlResult:
    """What crawl() returns: whether it was stopped, per-class progress, images saved by this run."""

    stopped: bool
    classes: dict[str, ClassProgress]
    saved_now: int


def _phash(image: Image.Image) -> int:
    import imagehash  # lazy: it pulls in SciPy (about 2 s the first time), which reading state does not need

    return int(str(imagehash.phash(image)), 16)


class _Crawler:
    def __init__(self, spec: CrawlSpec, dataset: Path, should_stop: Callable[[], bool],
                 on_progress: Callable[[dict[str, ClassProgress]], None] | None) -> None:
        self.spec, self.dataset = spec, dataset
        self.should_stop, self.on_progress = should_stop, on_progress
        self.engine = spec.make_engine()
        self.dir = state_dir(dataset)
        self.manifest = self.dir / "manifest.jsonl"
        self.errors = self.dir / "errors.jsonl"
        self.progress_file = self.dir / "progress.json"
        self.tried: dict[str, str] = {}  # url key -> "saved" | "broken" | "rejected"
        self.exact: set[str] = set()  # sha256 of downloaded bytes and of files present
        self.phashes: list[int] = []
        self.classes = {c.name: ClassProgress(target=c.target) for c in spec.classes}
        self.current: dict[str, str] = {}
        self.saved_now = 0
        self.stopped = False
        self._last_fetch = 0.0
        self._last_progress = 0.0

    # -- resume state

    def load_known(self) -> None:
        """Everything tried before (manifest + errors) and the hashes of every image in the dataset and its trash."""
        by_file: dict[str, dict[str, Any]] = {}
        for row in read_jsonl(self.manifest):
            if row.get("url"):
                self.tried[row["url"]] = "saved"
            if row.get("sha256"):
                self.exact.add(row["sha256"])
            if row.get("file"):
                by_file[row["file"]] = row
        for row in read_jsonl(self.errors):
            if row.get("url"):
                self.tried.setdefault(row["url"], row.get("kind", "broken"))
        folders = _class_dirs(self.dataset) + _class_dirs(self.dataset / TRASH_DIR)
        for folder in folders:
            for path in sorted(folder.iterdir()):
                if not (is_image_file(path) and path.is_file()):
                    continue
                row = by_file.get(f"{folder.name}/{path.name}")
                if row and row.get("phash"):
                    self.phashes.append(int(row["phash"], 16))
                    continue
                try:
                    data = path.read_bytes()
                    self.exact.add(hashlib.sha256(data).hexdigest())
                    self.phashes.append(_phash(to_rgb(decode_image(data))))
                except (OSError, ValueError) as exc:
                    log.warning("skipping unreadable %s: %s", path, exc)
        for name, progress in self.classes.items():
            progress.saved = _count_images(settings.safe_join(self.dataset, name))
        log.info("known: %d tried URLs, %d images hashed", len(self.tried), len(self.phashes))

    # -- progress

    def write_progress(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_progress < PROGRESS_INTERVAL:
            return
        self._last_progress = now
        data = {"updated": _now(), "current": self.current,
                "classes": {name: asdict(p) for name, p in self.classes.items()}}
        _write_json_atomic(self.progress_file, data, fsync=False)
        if self.on_progress:
            self.on_progress(self.classes)

    def check_stop(self) -> bool:
        if not self.stopped and self.should_stop():
            log.info("stop requested")
            self.stopped = True
        return self.stopped

    def sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self.check_stop() and time.monotonic() < end:
            time.sleep(min(0.05, max(0.0, end - time.monotonic())))

    # -- one candidate

    def record_error(self, cls: str, query: str, url: str, kind: str, reason: str, detail: str) -> None:
        self.tried[url] = kind
        progress = self.classes[cls]
        if kind in ("broken", "page"):
            progress.failed += 1
        else:
            progress.rejected += 1
        _append_jsonl(self.errors, {"time": _now(), "class": cls, "query": query, "url": url, "kind": kind,
                                    "reason": reason, "detail": detail, "engine": self.engine.name}, fsync=False)
        log.info("%s %s (%s %s) %s", kind, url[:120], reason, detail, cls)

    def try_candidate(self, cls: str, query: str, candidate: Candidate) -> None:
        urls = [u for u in (candidate.url, candidate.thumbnail_url) if u]
        if candidate.url and not self.spec.thumbnail_fallback:
            urls = urls[:1]
        for url in dict.fromkeys(urls):
            key = url_key(url)
            previous = self.tried.get(key)
            if previous in ("saved", "rejected"):
                return  # that picture was judged already
            if previous == "broken":
                continue  # maybe the fallback works
            if self.check_stop():
                return
            outcome = self.try_url(cls, query, url, key)
            if outcome != "broken":
                return

    def try_url(self, cls: str, query: str, url: str, key: str) -> str:
        if not url.startswith("data:"):
            self.sleep(self.spec.delay - (time.monotonic() - self._last_fetch))  # polite delay
            if self.stopped:
                return "stopped"
            self._last_fetch = time.monotonic()
        try:
            data = fetch(url, self.spec.timeout, self.spec.max_bytes)
        except FetchError as exc:
            self.record_error(cls, query, key, "broken", exc.reason, exc.detail)
            return "broken"
        finally:
            if not url.startswith("data:"):
                self._last_fetch = time.monotonic()
        sha = hashlib.sha256(data).hexdigest()
        if sha in self.exact:
            self.record_error(cls, query, key, "rejected", "duplicate", f"sha256 {sha[:16]}")
            return "rejected"
        try:
            image = decode_image(data, DEFAULT_MAX_PIXELS)
        except ValueError as exc:
            self.record_error(cls, query, key, "broken", "not_image", str(exc)[:200])
            return "broken"
        width, height = image.size
        if min(width, height) < self.spec.min_side:
            self.record_error(cls, query, key, "rejected", "too_small", f"{width}x{height}")
            return "rejected"
        rgb = to_rgb(image)
        phash = _phash(rgb)
        near = min(((phash ^ other).bit_count() for other in self.phashes), default=65)
        if near <= self.spec.near_threshold:
            self.record_error(cls, query, key, "rejected", "near_duplicate", f"phash distance {near}")
            return "rejected"
        self.save(cls, query, key, rgb, sha, phash)
        return "saved"

    def save(self, cls: str, query: str, key: str, rgb: Image.Image, sha: str, phash: int) -> None:
        class_dir = settings.safe_join(self.dataset, cls)
        class_dir.mkdir(exist_ok=True)
        name = f"{sha[:16]}.jpg"
        target = settings.safe_join(class_dir, name)
        fd, tmp = tempfile.mkstemp(prefix=".dl-", suffix=".tmp", dir=class_dir)
        try:
            os.fchmod(fd, 0o644)
            with os.fdopen(fd, "wb") as f:
                rgb.save(f, "JPEG", quality=92)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self.exact.add(sha)
        self.phashes.append(phash)
        self.tried[key] = "saved"
        row = {"file": f"{cls}/{name}", "class": cls, "url": key, "query": query, "engine": self.engine.name,
               "time": _now(), "sha256": sha, "phash": f"{phash:016x}", "width": rgb.width, "height": rgb.height}
        _append_jsonl(self.manifest, row, fsync=True)
        self.classes[cls].saved = _count_images(class_dir)
        self.saved_now += 1
        log.info("saved %s <- %s", row["file"], key[:120])

    # -- pages

    def crawl_query(self, driver: Any, cls: str, query: str) -> None:
        progress = self.classes[cls]
        started = time.monotonic()
        driver.get(self.engine.search_url(query))
        self.engine.prepare(driver)
        log.info("results page for %r loaded in %.1f s", query, time.monotonic() - started)
        seen: set[str] = set()
        stall = rounds = 0
        while progress.saved < progress.target and not self.check_stop():
            found = self.engine.candidates(driver)
            new = [c for c in found if c.key not in seen]
            seen.update(c.key for c in new)
            progress.candidates += len(new)
            self.write_progress()
            for candidate in new:
                if progress.saved >= progress.target or self.check_stop():
                    return
                self.try_candidate(cls, query, candidate)
                self.write_progress()
            if rounds >= self.spec.max_rounds:
                log.info("%s / %r: %d scrolls, moving on", cls, query, rounds)
                return
            rounds += 1
            before = len(found)
            self.engine.load_more(driver)
            if self.wait_for_more(driver, before):
                stall = 0
            else:
                stall += 1
                if stall >= self.spec.stall_rounds:
                    log.info("%s / %r: no more results", cls, query)
                    return

    def wait_for_more(self, driver: Any, before: int) -> bool:
        end = time.monotonic() + self.spec.scroll_pause
        while True:
            if len(self.engine.candidates(driver)) > before:
                return True
            if time.monotonic() >= end or self.check_stop():
                return False
            time.sleep(0.1)

    def run(self, driver: Any | None) -> None:
        from selenium.common.exceptions import WebDriverException

        pending = [c for c in self.spec.classes if self.classes[c.name].saved < c.target]
        for c in self.spec.classes:
            if c not in pending:
                self.classes[c.name].state = "done"
        self.write_progress(force=True)
        if not pending or self.check_stop():
            return
        with contextlib.ExitStack() as stack:
            if driver is None:
                driver = stack.enter_context(open_browser(self.spec.page_timeout))
            page_failures = 0
            for request in pending:
                progress = self.classes[request.name]
                progress.state = "crawling"
                for query in request.queries:
                    if progress.saved >= progress.target or self.check_stop():
                        break
                    self.current = {"class": request.name, "query": query}
                    log.info("class %s: query %r (%d/%d saved)", request.name, query, progress.saved, progress.target)
                    try:
                        self.crawl_query(driver, request.name, query)
                        page_failures = 0
                    except WebDriverException as exc:
                        page_failures += 1
                        lines = str(exc.msg or exc).splitlines()
                        message = next((line for line in lines if line.strip()), type(exc).__name__)
                        self.record_error(request.name, query, self.engine.search_url(query), "page", "browser", message[:300])
                        if page_failures >= 3:
                            raise RuntimeError(f"the browser failed 3 times in a row; last: {message}") from exc
                if self.stopped:
                    progress.state = "stopped" if progress.saved < progress.target else "done"
                    break
                progress.state = "done" if progress.saved >= progress.target else "exhausted"
                self.write_progress(force=True)
        self.current = {}
        self.write_progress(force=True)


def crawl(
    spec: CrawlSpec | dict[str, Any],
    dataset_dir: str | Path,
    should_stop: Callable[[], bool] | None = None,
    *,
    on_progress: Callable[[dict[str, ClassProgress]], None] | None = None,
    driver: Any | None = None,
) -> CrawlResult:
    """Collect images for every class of `spec` into dataset_dir/<class>/, in this process.

    Resumes: URLs already tried (manifest.jsonl, errors.jsonl) are skipped and images already in a
    class folder count toward its target. should_stop is polled between steps; `driver` lets a caller
    reuse a WebDriver (else headless Chromium is started and closed here).
    """
    spec = spec if isinstance(spec, CrawlSpec) else CrawlSpec.from_dict(spec)
    dataset = dataset_path(dataset_dir, create=True) if isinstance(dataset_dir, str) else Path(dataset_dir).resolve()
    dataset.mkdir(parents=True, exist_ok=True)
    sdir = state_dir(dataset)
    sdir.mkdir(exist_ok=True)
    handler = logging.FileHandler(sdir / "crawl.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    if log.level == logging.NOTSET or log.level > logging.INFO:
        log.setLevel(logging.INFO)
    # pay the SciPy import for phash while the browser starts, not on the first download
    warm_up = threading.Thread(target=_phash, args=(Image.new("RGB", (32, 32)),), daemon=True)
    warm_up.start()
    try:
        crawler = _Crawler(spec, dataset, should_stop or (lambda: False), on_progress)
        log.info("crawl start: engine %s, %d classes, dataset %s", spec.engine, len(spec.classes), dataset)
        crawler.load_known()
        crawler.run(driver)
        log.info("crawl %s: %d saved in this run", "stopped" if crawler.stopped else "finished", crawler.saved_now)
        return CrawlResult(crawler.stopped, crawler.classes, crawler.saved_now)
    finally:
        warm_up.join()
        log.removeHandler(handler)
        handler.close()


# ---------------------------------------------------------------- job: status, launch, stop


class CrawlStatus(str, Enum):
    """Where a crawl job is; "lost" is only ever derived on read (the process vanished)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STOPPED = "stopped"
    LOST = "lost"

    def is_terminal(self) -> bool:
        return self not in (CrawlStatus.QUEUED, CrawlStatus.RUNNING)


class CrawlBusy(RuntimeError):
    """A crawl is already queued or running for this dataset."""


@dataclass(frozen=True)
class CrawlState:
    """A crawl as read from disk: request, status (with derived "lost"), per-class progress and counts."""

    dataset_dir: Path
    status: CrawlStatus | None  # None: this dataset was never crawled
    spec: CrawlSpec | None
    info: dict[str, Any]  # status.json as written (pid, started, ended, error, message)
    classes: dict[str, ClassProgress]
    manifest_count: int
    failed: int
    rejected: int
    stop_requested: bool
    current: dict[str, str]

    @property
    def active(self) -> bool:
        return self.status in (CrawlStatus.QUEUED, CrawlStatus.RUNNING)

    @property
    def saved(self) -> int:
        return sum(p.saved for p in self.classes.values())

    @property
    def target(self) -> int:
        return sum(p.target for p in self.classes.values())

    @property
    def error(self) -> str | None:
        return self.info.get("error")


def _process_alive(pid: Any, create_time: Any) -> bool:
    """True when pid runs and is the same process (create time matches); a zombie is gone."""
    try:
        proc = psutil.Process(int(pid))
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        if create_time is not None and abs(proc.create_time() - float(create_time)) > 1.0:
            return False  # pid reused by another process
        return True
    except (psutil.NoSuchProcess, ValueError, TypeError):
        return False
    except psutil.AccessDenied:
        return True


_children: list[subprocess.Popen[bytes]] = []


def _reap() -> None:
    # poll() collects finished children so detached crawls never linger as zombies of a long-lived UI
    for child in list(_children):
        if child.poll() is not None:
            _children.remove(child)


def read_crawl(dataset_dir: str | Path) -> CrawlState:
    """The crawl state of a dataset; "lost" when the job's process is gone or its pid was reused."""
    _reap()
    dataset = dataset_path(dataset_dir) if isinstance(dataset_dir, str) else Path(dataset_dir).resolve()
    sdir = dataset / STATE_DIR
    spec = None
    raw_spec = _read_json(sdir / "spec.json")
    if isinstance(raw_spec, dict):
        with contextlib.suppress(ValueError, TypeError):
            spec = CrawlSpec.from_dict(raw_spec)
    info = _read_json(sdir / "status.json")
    info = info if isinstance(info, dict) else {}
    try:
        status: CrawlStatus | None = CrawlStatus(info.get("state"))
    except ValueError:
        status = None
    if status == CrawlStatus.RUNNING:
        if not _process_alive(info.get("pid"), info.get("create_time")):
            status = CrawlStatus.LOST
    elif status == CrawlStatus.QUEUED:
        launch = _read_json(sdir / "launch.json")
        if isinstance(launch, dict) and launch.get("pid"):
            if not _process_alive(launch["pid"], launch.get("create_time")):
                # the job may have written its final state and exited since the first read
                again = _read_json(sdir / "status.json")
                if isinstance(again, dict) and again.get("state") in {s.value for s in CrawlStatus if s.is_terminal()}:
                    info, status = again, CrawlStatus(again["state"])
                else:
                    status = CrawlStatus.LOST
        elif time.time() - _mtime(sdir / "status.json") > 120:
            status = CrawlStatus.LOST  # launched but never started
    progress = _read_json(sdir / "progress.json")
    progress = progress if isinstance(progress, dict) else {}
    classes: dict[str, ClassProgress] = {}
    for name, row in (progress.get("classes") or {}).items():
        with contextlib.suppress(TypeError, ValueError):
            classes[name] = ClassProgress.from_dict(row)
    if spec is not None:
        for request in spec.classes:
            classes.setdefault(request.name, ClassProgress(target=request.target))
            classes[request.name].target = request.target
    active = status in (CrawlStatus.QUEUED, CrawlStatus.RUNNING)
    if not active:  # the folders may have changed since (review, import): count what is there
        for name, item in classes.items():
            with contextlib.suppress(ValueError):
                item.saved = _count_images(settings.safe_join(dataset, name))
    errors = read_jsonl(sdir / "errors.jsonl")
    return CrawlState(
        dataset_dir=dataset,
        status=status,
        spec=spec,
        info=info,
        classes=classes,
        manifest_count=len(read_jsonl(sdir / "manifest.jsonl")),
        failed=sum(1 for e in errors if e.get("kind") in ("broken", "page")),
        rejected=sum(1 for e in errors if e.get("kind") == "rejected"),
        stop_requested=(sdir / "stop_request").exists(),
        current=(progress.get("current") or {}) if active else {},
    )


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def launch_crawl(dataset: str | Path, spec: CrawlSpec | dict[str, Any]) -> Path:
    """Start `python -m carviz.data.crawl.crawler DATASET_DIR` detached (own session; survives the caller); returns the dataset dir."""
    spec = spec if isinstance(spec, CrawlSpec) else CrawlSpec.from_dict(spec)
    ds = dataset_path(dataset, create=True)
    if read_crawl(ds).active:
        raise CrawlBusy(f"a crawl is already running for {ds.name}; stop it first")
    sdir = state_dir(ds)
    sdir.mkdir(exist_ok=True)
    for stale in ("stop_request", "launch.json"):
        settings.safe_join(sdir, stale).unlink(missing_ok=True)
    _write_json_atomic(sdir / "spec.json", spec.to_dict())
    _write_json_atomic(sdir / "status.json", {"state": "queued", "queued": _now()})
    _write_json_atomic(sdir / "progress.json", {"updated": _now(), "classes": {}})
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(settings.PROJECT_ROOT), env.get("PYTHONPATH")) if p)
    env.setdefault("SE_OFFLINE", "true")
    with open(sdir / "job.out", "ab") as out:
        try:
            child = subprocess.Popen(
                [sys.executable, "-m", "carviz.data.crawl.crawler", str(ds)],
                cwd=settings.PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, close_fds=True,
            )
        except OSError as exc:
            _write_json_atomic(sdir / "status.json", {"state": "failed", "ended": _now(), "error": f"could not start: {exc}"})
            raise
    _children.append(child)
    try:
        create_time = psutil.Process(child.pid).create_time()
    except psutil.Error:
        create_time = None
    _write_json_atomic(sdir / "launch.json", {"pid": child.pid, "create_time": create_time, "launched": _now()})
    return ds


def request_stop(dataset_dir: str | Path) -> bool:
    """Write the stop request only (never blocks, never signals); False when no crawl is active."""
    state = read_crawl(dataset_dir)
    if not state.active:
        return False
    (state_dir(state.dataset_dir) / "stop_request").write_text(_now() + "\n", encoding="utf-8")
    return True


def stop_crawl(dataset_dir: str | Path, timeout: float = 10.0) -> CrawlState:
    """Ask the job to stop (stop_request), wait up to `timeout` s, then SIGTERM and finally SIGKILL its process group."""
    state = read_crawl(dataset_dir)
    if not state.active:
        return state
    sdir = state_dir(state.dataset_dir)
    (sdir / "stop_request").write_text(_now() + "\n", encoding="utf-8")
    if _wait_inactive(state.dataset_dir, timeout):
        return read_crawl(state.dataset_dir)
    pid, create_time = _job_pid(state)
    if pid is None:
        return read_crawl(state.dataset_dir)
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 3.0)):
        if not _process_alive(pid, create_time):
            break
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if sig == signal.SIGKILL and os.getpgid(pid) == pid:
                os.killpg(pid, sig)  # the job leads its own session: take chromedriver and Chromium too
            else:
                os.kill(pid, sig)
        if _wait_inactive(state.dataset_dir, wait):
            break
    final = read_crawl(state.dataset_dir)
    if final.status == CrawlStatus.LOST:  # killed before it could write: the writer is dead, so nobody races this
        _write_json_atomic(sdir / "status.json", {**final.info, "state": "stopped", "ended": _now(),
                                                  "error": f"killed: did not stop within {timeout:g} s"})
        final = read_crawl(state.dataset_dir)
    return final


def _job_pid(state: CrawlState) -> tuple[int | None, float | None]:
    if state.info.get("pid"):
        return int(state.info["pid"]), state.info.get("create_time")
    launch = _read_json(state.dataset_dir / STATE_DIR / "launch.json") or {}
    return (int(launch["pid"]), launch.get("create_time")) if launch.get("pid") else (None, None)


def _wait_inactive(dataset: Path, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not read_crawl(dataset).active:
            return True
        time.sleep(0.1)
    return not read_crawl(dataset).active


def wait_crawl(dataset_dir: str | Path, timeout: float | None = None, poll: float = 0.5,
               on_state: Callable[[CrawlState], None] | None = None) -> CrawlState:
    """Block until the crawl is no longer active (or timeout); on_state gets each state read (CLI progress)."""
    end = None if timeout is None else time.monotonic() + timeout
    while True:
        state = read_crawl(dataset_dir)
        if on_state:
            on_state(state)
        if not state.active or (end is not None and time.monotonic() >= end):
            return state
        time.sleep(poll)


def progress_lines(state: CrawlState, width: int = 30) -> list[str]:
    """Text progress bars, one per class, for the CLI."""
    lines = []
    label = max((len(n) for n in state.classes), default=0)
    for name, p in state.classes.items():
        filled = int(round(p.fraction * width))
        lines.append(f"{name:<{label}} [{'#' * filled}{'.' * (width - filled)}] {p.saved}/{p.target}"
                     f"  ({p.candidates} seen, {p.failed} broken, {p.rejected} rejected, {p.state})")
    status = state.status.value if state.status else "never crawled"
    lines.append(f"status: {status}" + (f" - {state.error}" if state.error else ""))
    return lines


def run_job(dataset_dir: Path) -> int:
    """The job body: status running -> crawl -> succeeded / stopped / failed. Stops on stop_request or SIGTERM."""
    dataset = Path(dataset_dir).resolve()
    sdir = state_dir(dataset)
    stop_flag = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop_flag.set())
    me = psutil.Process()
    base = {"pid": me.pid, "create_time": me.create_time(), "started": _now(), "engine": None}

    def finish(state: str, **extra: Any) -> None:
        _write_json_atomic(sdir / "status.json", {**base, "state": state, "ended": _now(), **extra})

    try:
        spec = CrawlSpec.from_dict(json.loads((sdir / "spec.json").read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as exc:
        finish("failed", error=f"bad spec.json: {exc}")
        return 2
    base["engine"] = spec.engine
    stop_file = sdir / "stop_request"
    if stop_file.exists():
        finish("stopped", message="stopped before it started")
        return 0
    _write_json_atomic(sdir / "status.json", {**base, "state": "running"})
    try:
        result = crawl(spec, dataset, lambda: stop_flag.is_set() or stop_file.exists())
    except Exception as exc:  # noqa: BLE001 - any failure ends the job as "failed" with its reason
        with contextlib.suppress(OSError), open(sdir / "crawl.log", "a", encoding="utf-8") as f:
            f.write(f"{_now()} ERROR crawl failed\n")
            traceback.print_exc(file=f)
        finish("failed", error=f"{type(exc).__name__}: {exc}")
        return 1
    short = {n: f"{p.saved}/{p.target}" for n, p in result.classes.items() if p.saved < p.target}
    message = "" if not short else "search results ran out: " + ", ".join(f"{n} {v}" for n, v in short.items())
    finish("stopped" if result.stopped else "succeeded", saved_now=result.saved_now, message=message)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m carviz.data.crawl.crawler", description="Run the crawl job of a dataset (reads DATASET_DIR/.crawl/spec.json).")
    parser.add_argument("dataset_dir", type=Path)
    args = parser.parse_args(argv)
    return run_job(args.dataset_dir)


if __name__ == "__main__":
    sys.exit(main())
