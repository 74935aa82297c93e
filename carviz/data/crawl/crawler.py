"""The crawling itself: search pages in, a deduplicated class folder and its manifest out (resumable, stoppable)."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from carviz.core import settings
from carviz.core.eta import Rate
from carviz.core.jobs.record import now_iso
from carviz.data.crawl.engines import Candidate
from carviz.data.crawl.fetch import FetchError, fetch, open_browser, url_key
from carviz.data.crawl.record import (
    ERRORS_FILE,
    MANIFEST_FILE,
    ClassProgress,
    CrawlRecord,
    append_jsonl,
    count_images,
    read_jsonl,
)
from carviz.data.crawl.spec import CrawlSpec
from carviz.data.importer import TRASH_DIR, dataset_path, decode_image, is_image_file, to_rgb

log = logging.getLogger("carviz.data.crawl.crawler")

PROGRESS_INTERVAL = 0.25  # seconds between progress.json writes
BROWSER_PROFILE = ".chromium-profile"  # in the crawl folder: a killed job leaves it there, the next run clears it


def _class_dirs(dataset: Path) -> list[Path]:
    if not dataset.is_dir():
        return []
    return sorted(p for p in dataset.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith("."))


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
    """One crawl in this process: what was tried before, the hashes of every image kept, per-class counters."""

    def __init__(self, spec: CrawlSpec, record: CrawlRecord, should_stop: Callable[[], bool],
                 on_progress: Callable[[dict[str, ClassProgress]], None] | None) -> None:
        self.spec, self.record, self.dataset = spec, record, record.dataset_dir
        self.should_stop, self.on_progress = should_stop, on_progress
        self.engine = spec.make_engine()
        self.manifest = record.file(MANIFEST_FILE)
        self.errors = record.file(ERRORS_FILE)
        self.tried: dict[str, str] = {}  # url key -> "saved" | "broken" | "rejected"
        self.exact: set[str] = set()  # sha256 of downloaded bytes and of files present
        self.phashes: list[int] = []
        self.classes = {c.name: ClassProgress(target=c.target) for c in spec.classes}
        self.current: dict[str, str] = {}
        self.saved_now = 0
        self.rate = Rate()  # images saved by this crawl per second: its time left
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
            progress.saved = count_images(settings.safe_join(self.dataset, name))
        log.info("known: %d tried URLs, %d images hashed", len(self.tried), len(self.phashes))

    # -- progress

    def write_progress(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_progress < PROGRESS_INTERVAL:
            return
        self._last_progress = now
        left = sum(max(0, p.target - p.saved) for p in self.classes.values())
        self.record.write_progress({"current": self.current,
                                    "classes": {name: asdict(p) for name, p in self.classes.items()},
                                    "saved_now": self.saved_now,
                                    "eta_seconds": self.rate.eta(self.saved_now, self.saved_now + left)})
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
        append_jsonl(self.errors, {"time": now_iso(), "class": cls, "query": query, "url": url, "kind": kind,
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
            image = decode_image(data)  # the scanner's loader and pixel limit: what is kept trains
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
               "time": now_iso(), "sha256": sha, "phash": f"{phash:016x}", "width": rgb.width, "height": rgb.height}
        append_jsonl(self.manifest, row, fsync=True)
        self.classes[cls].saved = count_images(class_dir)
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
                profile = self.record.file(BROWSER_PROFILE)
                driver = stack.enter_context(open_browser(self.spec.page_timeout, profile_dir=profile))
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
                        self.record_error(request.name, query, self.engine.search_url(query), "page", "browser",
                                          message[:300])
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
    log_to_record: bool = True,
) -> CrawlResult:
    """Collect images for every class of `spec` into dataset_dir/<class>/, in this process.

    Resumes: URLs already tried (manifest.jsonl, errors.jsonl) are skipped and images already in a
    class folder count toward its target. should_stop is polled between steps; `driver` lets a caller
    reuse a WebDriver (else headless Chromium is started and closed here). Progress goes to .crawl/progress.json;
    log lines to .crawl/job.log too unless log_to_record is False (the crawl job, whose harness logs there).
    """
    spec = spec if isinstance(spec, CrawlSpec) else CrawlSpec.from_dict(spec)
    dataset = dataset_path(dataset_dir, create=True) if isinstance(dataset_dir, str) else Path(dataset_dir).resolve()
    dataset.mkdir(parents=True, exist_ok=True)
    record = CrawlRecord.for_dataset(dataset)
    record.path.mkdir(exist_ok=True)
    handler: logging.Handler | None = None
    if log_to_record:
        handler = logging.FileHandler(record.log_path(), encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
    if log.level == logging.NOTSET or log.level > logging.INFO:
        log.setLevel(logging.INFO)
    # pay the SciPy import for phash while the browser starts, not on the first download
    warm_up = threading.Thread(target=_phash, args=(Image.new("RGB", (32, 32)),), daemon=True)
    warm_up.start()
    try:
        crawler = _Crawler(spec, record, should_stop or (lambda: False), on_progress)
        log.info("crawl start: engine %s, %d classes, dataset %s", spec.engine, len(spec.classes), dataset)
        crawler.load_known()
        crawler.run(driver)
        log.info("crawl %s: %d saved in this run", "stopped" if crawler.stopped else "finished", crawler.saved_now)
        return CrawlResult(crawler.stopped, crawler.classes, crawler.saved_now)
    finally:
        warm_up.join()
        if handler is not None:
            log.removeHandler(handler)
            handler.close()
