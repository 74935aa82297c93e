"""The crawler against a fake image-search site on 127.0.0.1, driven by real headless Chromium."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import imagehash
import psutil
import pytest
from PIL import Image

from carviz.core.jobs import Status
from carviz.core.jobs.status import ProcessCheck, check_process
from carviz.data.crawl import crawler, fetch, job
from carviz.data.crawl.engines import BingImages, Candidate, DuckDuckGoImages, GenericEngine, make_engine
from carviz.data.crawl.record import CrawlRecord, read_jsonl
from carviz.data.crawl.spec import CrawlSpec
from carviz.views import crawl_text

try:
    from . import fake_image_search as fake
except ImportError:  # tests/ is not a package
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import fake_image_search as fake

ROOT = Path(__file__).resolve().parents[2]  # the project checkout
MIN_SIDE = 64
TARGET = 6
# Chromium resolves its update, sign-in and search hosts on its own: no DNS at all, only 127.0.0.1
LOCAL_ONLY = '--host-resolver-rules="MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"'


def _browser_or_skip() -> None:
    try:
        fetch.find_browser()
    except FileNotFoundError as exc:
        pytest.skip(f"needs Chromium and chromedriver: {exc}")


@pytest.fixture(scope="module")
def site():
    """The fake engine's catalogue; `site.pictures` maps names (A0, B3...) to the original pictures."""
    pictures = {}
    for prefix, seed in (("A", 1), ("B", 2), ("G", 3), ("D", 4)):
        avoid = [imagehash.phash(p) for p in pictures.values()]
        for i, picture in enumerate(fake.distinct_pictures(10, seed, avoid=avoid)):
            pictures[f"{prefix}{i}"] = picture
    res: dict[str, fake.Resource] = {}
    for name, picture in pictures.items():
        res[f"/img/{name}.jpg"] = fake.Resource(fake.jpeg(picture))
        res[f"/thumb/{name}.jpg"] = fake.Resource(fake.jpeg(fake.thumbnail(picture, 48)))  # 48x36: too small
    res["/bigthumb/A4.jpg"] = fake.Resource(fake.jpeg(fake.thumbnail(pictures["A4"], 128)))  # 128x96
    res["/img/html.jpg"] = fake.Resource(b"<html>an error page, not an image</html>", "text/html")
    res["/img/slow.jpg"] = fake.Resource(fake.jpeg(pictures["A9"]), delay=4.0)  # past the 1.5 s timeout
    res["/img/tiny.jpg"] = fake.Resource(fake.jpeg(pictures["A8"].resize((24, 24))))
    res["/img/copy-of-A0.jpg"] = res["/img/A0.jpg"]  # same bytes, other URL
    res["/img/copy-of-A2.jpg"] = res["/img/A2.jpg"]
    res["/img/near-A1.jpg"] = fake.Resource(fake.near_duplicate(pictures["A1"]))
    res["/img/near-A3.jpg"] = fake.Resource(fake.near_duplicate(pictures["A3"]))
    res["/img/huge.jpg"] = fake.Resource(fake.png(Image.effect_noise((600, 600), 80)), "image/png")  # > max_bytes
    # markup shaped like the real engines' result grids (all URLs local: nothing may leave 127.0.0.1)
    res["/bing-like"] = fake.Resource(
        b'<html><body><a class="iusc" m=\'{"murl":"/img/A0.jpg","turl":"/thumb/A0.jpg"}\'><img class="mimg"></a>'
        b'<a class="iusc" m="not json"></a><a class="iusc" m=\'{"turl":"/thumb/A1.jpg"}\'></a></body></html>', "text/html")
    res["/ddg-like"] = fake.Resource(
        b'<html><body><div class="tile--img"><img class="tile--img__img" data-src="/iu/?u=x&amp;f=1"></div>'
        b'<div class="tile--img"><img class="tile--img__img"></div></body></html>', "text/html")
    data_thumb = "data:image/png;base64," + base64.b64encode(fake.png(fake.thumbnail(pictures["A5"], 112))).decode()

    def full(name: str) -> fake.Result:
        return fake.Result(f"/img/{name}.jpg", f"/thumb/{name}.jpg")

    results = {
        # pages of 4; page 1 comes by scrolling, page 2 by the "more results" button, page 3 by scrolling...
        "alpha cars": [
            full("A0"), fake.Result("/img/missing.jpg", "/thumb/A7.jpg"), full("tiny"), full("A1"),
            full("html"), full("copy-of-A0"), full("A2"), full("slow"),
            full("near-A1"), full("A3"), fake.Result(None, "/bigthumb/A4.jpg"), full("huge"),
            fake.Result(None, data_thumb, lazy=False), full("A6"), full("A7"), full("A8"),
        ],
        # runs out after four results: the crawler goes on with the class's second query
        "beta one": [full("B0"), full("copy-of-A2"), full("B1"), full("near-A3")],
        "beta two": [full("A0"), full("B2"), full("B3"), full("B4"), full("B5"), full("B6"), full("B7")],
        "gamma": [full(f"G{i}") for i in range(10)],
        "delta": [full(f"D{i}") for i in range(10)],
    }
    server = fake.FakeImageSearch(results, res, page_size=4, auto_pages=1)
    server.pictures = pictures
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CARVIZ_CHROMIUM_ARGS", LOCAL_ONLY)  # inherited by the detached job too
        env.setenv("SE_OFFLINE", "true")
        yield server
    server.close()


def _spec(site, classes, **overrides) -> CrawlSpec:
    options = {
        "search_url_template": site.base_url + "/search?q={query}",
        "thumb_selector": "img.thumb",
        "full_link_selector": "a.full",
        "more_button_selector": "#more",
    }
    settings = dict(min_side=MIN_SIDE, max_bytes=200_000, delay=0.05, timeout=1.5, scroll_pause=1.0,
                    stall_rounds=2, max_rounds=20, page_timeout=15)
    settings.update(overrides)
    return CrawlSpec(classes=tuple(classes), engine="generic", engine_options=options, **settings)


def _manifest(dataset: Path) -> list[dict]:
    return read_jsonl(dataset / ".crawl" / "manifest.jsonl")


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix == ".jpg" and not p.name.startswith("."))


def test_crawl_counts_dedupe_filters_manifest_and_errors(site, tmp_path):
    _browser_or_skip()
    dataset = tmp_path / "cars"
    spec = _spec(site, [
        {"name": "alpha", "queries": ["alpha cars"], "target": TARGET},
        {"name": "베타", "queries": ["beta one", "beta two"], "target": TARGET},  # a Korean class name
    ])
    updates = []
    with fetch.open_browser() as driver:
        result = crawler.crawl(spec, dataset, on_progress=lambda c: updates.append(c["alpha"].saved), driver=driver)
        # the same browser reads the real engines' markup (served locally)
        driver.get(site.url("/bing-like"))
        assert BingImages().candidates(driver) == [
            Candidate(site.url("/img/A0.jpg"), site.url("/thumb/A0.jpg")), Candidate(None, site.url("/thumb/A1.jpg"))]
        driver.get(site.url("/ddg-like"))
        assert DuckDuckGoImages().candidates(driver) == [Candidate(None, site.url("/iu/?u=x&f=1"))]

    assert not result.stopped
    assert {n: (p.saved, p.state) for n, p in result.classes.items()} == {"alpha": (6, "done"), "베타": (6, "done")}
    alpha, beta = _images(dataset / "alpha"), _images(dataset / "베타")
    assert len(alpha) == TARGET and len(beta) == TARGET
    assert updates and updates[-1] == TARGET

    # manifest: one line per file, nothing else
    rows = _manifest(dataset)
    assert sorted(r["file"] for r in rows) == sorted(f"{p.parent.name}/{p.name}" for p in alpha + beta)
    for row in rows:
        path = dataset / row["file"]
        assert path.name == row["sha256"][:16] + ".jpg"
        assert row["engine"] == "generic" and row["time"] and row["class"] == path.parent.name
        with Image.open(path) as im:
            assert im.format == "JPEG" and min(im.size) >= MIN_SIDE
    urls = {r["class"]: set() for r in rows}
    for r in rows:
        urls[r["class"]].add(r["url"].removeprefix(site.base_url))
    assert urls["alpha"] == {"/img/A0.jpg", "/img/A1.jpg", "/img/A2.jpg", "/img/A3.jpg", "/bigthumb/A4.jpg",
                             next(u for u in urls["alpha"] if u.startswith("data:image/png;sha256="))}
    assert urls["베타"] == {"/img/B0.jpg", "/img/B1.jpg", "/img/B2.jpg", "/img/B3.jpg", "/img/B4.jpg", "/img/B5.jpg"}
    assert {r["query"] for r in rows if r["class"] == "베타"} == {"beta one", "beta two"}

    # no two saved images are the same picture, across classes too
    hashes = [imagehash.phash(Image.open(p)) for p in alpha + beta]
    assert min(a - b for i, a in enumerate(hashes) for b in hashes[i + 1:]) > spec.near_threshold

    # every broken link and every rejected image is reported, none was fatal
    errors = read_jsonl(dataset / ".crawl" / "errors.jsonl")
    why = {(e["url"].removeprefix(site.base_url), e["reason"]) for e in errors}
    assert {
        ("/img/missing.jpg", "http_error"), ("/img/html.jpg", "not_image"), ("/img/slow.jpg", "timeout"),
        ("/img/huge.jpg", "too_large"), ("/img/tiny.jpg", "too_small"), ("/thumb/A7.jpg", "too_small"),
        ("/img/copy-of-A0.jpg", "duplicate"), ("/img/near-A1.jpg", "near_duplicate"),
        ("/img/copy-of-A2.jpg", "duplicate"), ("/img/near-A3.jpg", "near_duplicate"),
    } <= why
    kinds = {e["url"].removeprefix(site.base_url): (e["kind"], e["class"]) for e in errors}
    assert kinds["/img/missing.jpg"] == ("broken", "alpha")
    assert kinds["/img/copy-of-A2.jpg"] == ("rejected", "베타")  # cross-class exact duplicate
    assert kinds["/img/near-A3.jpg"] == ("rejected", "베타")  # cross-class near duplicate
    assert "/img/missing.jpg" in json.dumps([e for e in errors if e["kind"] == "broken"])

    # the browser really scrolled and pressed the button; the crawler fetched each URL once
    assert any("via=scroll" in p for p in site.paths()) and any("via=button" in p for p in site.paths())
    gets = Counter(site.crawler_gets())
    assert gets["/img/A0.jpg"] == 1, "a URL tried for one class is not fetched again for another"
    assert all(n == 1 for n in gets.values()), gets

    state = job.read_crawl(dataset)
    assert state.status is None and state.manifest_count == 12  # crawled in-process: no job status
    assert not (dataset / ".crawl" / "status.json").exists()
    assert {n: p.saved for n, p in state.classes.items()} == {"alpha": 6, "베타": 6}  # from progress.json
    assert "saved alpha/" in (dataset / ".crawl" / "job.log").read_text(encoding="utf-8")

    # a second run has nothing to do and starts no browser
    again = crawler.crawl(spec, dataset, driver=object())
    assert again.saved_now == 0 and len(_manifest(dataset)) == 12


@pytest.fixture
def job_dataset(tmp_path):
    dataset = tmp_path / "job"
    yield dataset
    state = job.read_crawl(dataset)
    if state.active or state.process_alive:  # a failed test must not leave a crawler running
        job.stop_crawl(dataset, timeout=5)


def _wait(dataset: Path, done, timeout: float) -> job.CrawlState | None:
    """Poll read_crawl until done(state); the state, or None on timeout."""
    end = time.monotonic() + timeout
    while True:
        state = job.read_crawl(dataset)
        if done(state):
            return state
        if time.monotonic() > end:
            return None
        time.sleep(0.1)


def _kept(dataset: Path) -> list[Path]:
    return [p for name in ("gamma", "delta") if (dataset / name).exists() for p in _images(dataset / name)]


def test_job_stop_resume_kill_and_resume_without_refetching(site, job_dataset):
    _browser_or_skip()
    spec = _spec(site, [
        {"name": "gamma", "queries": ["gamma"], "target": TARGET},
        {"name": "delta", "queries": ["delta"], "target": TARGET},
    ], delay=0.4)
    record = CrawlRecord.for_dataset(job_dataset)
    before = len(site.crawler_gets())

    # launched on the shared runtime: a detached local job in its own session (survives the launcher)
    assert job.launch_crawl(job_dataset, spec) == job_dataset.resolve()
    launched = record.launch_info()
    assert launched["backend"] == "local" and launched["module"] == "carviz.data.crawl.job"
    assert os.getsid(launched["pid"]) == launched["pid"]
    with pytest.raises(job.CrawlBusy):
        job.launch_crawl(job_dataset, spec)
    state = _wait(job_dataset, lambda s: s.saved >= 2 or not s.active, timeout=30) or job.read_crawl(job_dataset)
    assert state.status == Status.RUNNING, (state.info, record.log_tail())
    assert state.info["pid"] == launched["pid"] and state.current["class"] == "gamma"
    assert state.classes["gamma"].saved >= 2 and state.classes["gamma"].state == "crawling"  # live progress
    assert record.heartbeat_age() is not None and record.heartbeat_age() < 30

    # a graceful stop: the job notices the request between downloads and records "stopped" itself
    stopped = job.stop_crawl(job_dataset, timeout=10)
    assert stopped.status == Status.STOPPED, (stopped.info, record.log_tail())
    assert stopped.job.recorded == Status.STOPPED  # written by the job itself, not by the stopper
    assert "killed" not in stopped.message and stopped.info["saved_now"] >= 2
    kept = _kept(job_dataset)
    assert 2 <= len(kept) < 2 * TARGET
    assert len(_manifest(job_dataset)) == len(kept)  # files kept, manifest in step
    assert _wait(job_dataset, lambda s: check_process(launched["pid"], launched["pid_create_time"])
                 != ProcessCheck.ALIVE, 10)

    # resume, then kill the whole job mid-crawl (the job, chromedriver and Chromium share its process group)
    job.launch_crawl(job_dataset, spec)
    assert not record.stop_requested()
    resumed = record.launch_info()
    assert resumed["pid"] != launched["pid"]
    state = _wait(job_dataset, lambda s: s.saved >= len(kept) + 2 or not s.active, timeout=30)
    assert state is not None and state.status == Status.RUNNING, (state and state.info, record.log_tail())
    browser = psutil.Process(resumed["pid"]).children(recursive=True)
    assert any("chromedriver" in p.name() for p in browser), [p.name() for p in browser]
    os.killpg(resumed["pid"], signal.SIGKILL)
    lost = _wait(job_dataset, lambda s: s.status != Status.RUNNING, timeout=10)
    assert lost is not None and lost.status == Status.LOST, lost and lost.info
    assert lost.job.recorded == Status.RUNNING and "gone" in lost.reason  # derived on read, never written
    assert not lost.active and not lost.process_alive
    _, alive = psutil.wait_procs(browser, timeout=10)
    assert not alive, "the browser outlived its killed job"
    assert record.file(crawler.BROWSER_PROFILE).is_dir()  # left in the record by the kill, not in /tmp

    # resume again: it finishes without fetching anything twice, save the one download in flight when killed
    job.launch_crawl(job_dataset, spec)
    final = job.wait_crawl(job_dataset, timeout=60, poll=0.2)
    assert final.status == Status.SUCCEEDED, (final.info, record.log_tail())
    assert {n: p.saved for n, p in final.classes.items()} == {"gamma": TARGET, "delta": TARGET}
    rows = _manifest(job_dataset)
    assert len(rows) == 2 * TARGET and len({r["url"] for r in rows}) == 2 * TARGET
    gets = site.crawler_gets()[before:]
    assert len(gets) - len(set(gets)) <= 1, "a URL was downloaded twice across stop, kill and resume"
    assert len(set(gets)) == 2 * TARGET
    lines = crawl_text.progress_lines(final)
    assert lines[0].startswith("gamma") and "6/6" in lines[0] and lines[-1] == "status: succeeded"
    assert "crawl finished" in record.log_path().read_text(encoding="utf-8")
    assert not record.file(crawler.BROWSER_PROFILE).exists()  # the next run cleared it, and removed its own


# ---------------------------------------------------------------- no browser needed


def _write_status(dataset: Path, **status) -> None:
    (dataset / ".crawl").mkdir(parents=True, exist_ok=True)
    (dataset / ".crawl" / "status.json").write_text(json.dumps(status))


def _until(check, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def test_read_crawl_derives_lost_for_dead_reused_zombie_or_hung_jobs(tmp_path):
    record = CrawlRecord.for_dataset(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _write_status(tmp_path, state="running", pid=dead.pid, pid_create_time=time.time() - 5)
    state = job.read_crawl(tmp_path)
    assert state.status == Status.LOST and "gone" in state.reason and not state.active
    assert crawl_text.progress_lines(state)[-1] == f"status: lost - process {dead.pid} is gone"
    record.request_stop()  # asked to stop, then gone: that is a stop
    assert job.read_crawl(tmp_path).status == Status.STOPPED
    record.clear_stop_request()

    me = psutil.Process()
    _write_status(tmp_path, state="running", pid=me.pid, pid_create_time=me.create_time())
    assert job.read_crawl(tmp_path).status == Status.RUNNING
    _write_status(tmp_path, state="running", pid=me.pid, pid_create_time=me.create_time() - 1000)  # pid reused
    assert job.read_crawl(tmp_path).status == Status.LOST

    # alive but silent for minutes: hung, so lost, yet its process still counts (it must be stopped first)
    _write_status(tmp_path, state="running", pid=me.pid, pid_create_time=me.create_time())
    record.touch_heartbeat()
    os.utime(record.file("heartbeat"), (time.time() - 600, time.time() - 600))
    hung = job.read_crawl(tmp_path)
    assert hung.status == Status.LOST and "no heartbeat" in hung.reason and hung.process_alive
    record.file("heartbeat").unlink()

    zombie = subprocess.Popen([sys.executable, "-c", "pass"])  # exits, not reaped yet: a zombie
    _until(lambda: psutil.Process(zombie.pid).status() == psutil.STATUS_ZOMBIE)
    _write_status(tmp_path, state="running", pid=zombie.pid, pid_create_time=psutil.Process(zombie.pid).create_time())
    assert job.read_crawl(tmp_path).status == Status.LOST
    zombie.wait()

    # queued by a launcher that died before it started the process: lost after a while, not busy forever
    _write_status(tmp_path, state="queued")
    assert job.read_crawl(tmp_path).status == Status.QUEUED
    old = time.time() - job.NEVER_STARTED_SECONDS - 5
    os.utime(record.file("status.json"), (old, old))
    assert job.read_crawl(tmp_path).status == Status.LOST

    _write_status(tmp_path, state="succeeded", pid=dead.pid)
    state = job.read_crawl(tmp_path)
    assert state.status == Status.SUCCEEDED and state.status.is_terminal() and not state.active
    assert job.read_crawl(tmp_path / "nothing").status is None


def test_job_entry_point_takes_the_dataset_folder_and_records_a_bad_spec(tmp_path):
    dataset = tmp_path / "bad"
    (dataset / ".crawl").mkdir(parents=True)
    (dataset / ".crawl" / "spec.json").write_text(json.dumps({"classes": []}))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "carviz.data.crawl.job", str(dataset)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    state = job.read_crawl(dataset)
    assert state.status == Status.FAILED and "at least one class" in state.error
    assert state.job.recorded == Status.FAILED and state.info["ended_at"]
    assert "at least one class" in CrawlRecord.for_dataset(dataset).log_tail()
    missing = subprocess.run([sys.executable, "-m", "carviz.data.crawl.job", str(tmp_path / "none")], cwd=ROOT,
                             env=env, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 3 and "spec.json" in missing.stderr


def test_spec_validation_and_round_trip():
    spec = CrawlSpec.from_dict({"classes": [{"name": "현대 아반떼", "queries": "avante", "target": 3}],
                                "engine": "duckduckgo"})
    assert spec.classes[0].queries == ("avante",)
    assert CrawlSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    for bad in ("../x", ".hidden", "a/b", "", "a\x00b"):
        with pytest.raises(ValueError):
            CrawlSpec.from_dict({"classes": [{"name": bad, "queries": ["q"], "target": 3}]})
    with pytest.raises(ValueError, match="target"):
        CrawlSpec.from_dict({"classes": [{"name": "a", "queries": ["q"], "target": 0}]})
    with pytest.raises(ValueError, match="unknown search engine"):
        CrawlSpec.from_dict({"classes": [{"name": "a", "queries": ["q"], "target": 1}], "engine": "altavista"})
    with pytest.raises(ValueError, match="query"):
        CrawlSpec.from_dict({"classes": [{"name": "a", "queries": [], "target": 1}], "engine": "generic",
                             "engine_options": {"search_url_template": "http://127.0.0.1/?q={query}", "thumb_selector": "img"}})
    with pytest.raises(ValueError, match="unique"):
        CrawlSpec.from_dict({"classes": [{"name": "a", "queries": ["q"], "target": 1}] * 2})


def test_fetch_refuses_other_schemes_and_reads_data_urls():
    with pytest.raises(fetch.FetchError) as info:
        fetch.fetch("file:///etc/passwd")
    assert info.value.reason == "unsupported_scheme"
    assert fetch.fetch("data:text/plain;base64," + base64.b64encode(b"hello").decode()) == b"hello"
    with pytest.raises(fetch.FetchError, match="too_large"):
        fetch.fetch("data:text/plain;base64," + base64.b64encode(b"x" * 100).decode(), max_bytes=10)
    assert fetch.url_key("data:image/png;base64,AAAA").startswith("data:image/png;sha256=")


def test_engine_adapters_build_search_urls_and_validate():
    assert make_engine("bing").search_url("현대 아반떼") == (
        "https://www.bing.com/images/search?q=%ED%98%84%EB%8C%80+%EC%95%84%EB%B0%98%EB%96%BC&form=HDRSC2&first=1")
    assert make_engine("duckduckgo").search_url("a&b").startswith("https://duckduckgo.com/?q=a%26b&")
    generic = make_engine("generic", {"search_url_template": "http://127.0.0.1:1/s?q={query}", "thumb_selector": "img"})
    assert isinstance(generic, GenericEngine) and generic.search_url("x y") == "http://127.0.0.1:1/s?q=x+y"
    with pytest.raises(ValueError, match="query"):
        GenericEngine("http://127.0.0.1/s", "img")
    with pytest.raises(ValueError, match="http"):
        GenericEngine("file:///{query}", "img")
    with pytest.raises(ValueError, match="takes no options"):
        make_engine("bing", {"thumb_selector": "img"})


def _stubborn() -> subprocess.Popen:
    """A stand-in job in its own session that never reads the stop request."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)


def test_stop_crawl_kills_a_job_that_ignores_the_request(tmp_path):
    stubborn = _stubborn()
    try:
        proc = psutil.Process(stubborn.pid)
        _write_status(tmp_path, state="running", pid=stubborn.pid, pid_create_time=proc.create_time())
        assert job.read_crawl(tmp_path).active
        started = time.monotonic()
        state = job.stop_crawl(tmp_path, timeout=0.5)
        assert time.monotonic() - started < 5
        assert (tmp_path / ".crawl" / "stop_request").exists()
        assert state.status == Status.STOPPED and state.job.recorded == Status.STOPPED
        assert "killed" in state.message and not state.error
        assert stubborn.wait(timeout=5) == -signal.SIGKILL  # its process group, verified to be the job
    finally:
        if stubborn.poll() is None:
            stubborn.kill()


def test_a_hung_job_blocks_a_relaunch_and_is_killed_at_once(tmp_path):
    stubborn = _stubborn()
    try:
        record = CrawlRecord.for_dataset(tmp_path)
        _write_status(tmp_path, state="running", pid=stubborn.pid,
                      pid_create_time=psutil.Process(stubborn.pid).create_time())
        record.touch_heartbeat()
        os.utime(record.file("heartbeat"), (time.time() - 600, time.time() - 600))
        spec = CrawlSpec(classes=({"name": "a", "queries": ["q"], "target": 1},), engine="generic", engine_options={
            "search_url_template": "http://127.0.0.1:9/?q={query}", "thumb_selector": "img"})
        with pytest.raises(job.CrawlBusy, match="still has a process"):
            job.launch_crawl(tmp_path, spec)
        assert not record.launch_info()  # nothing was started
        started = time.monotonic()
        state = job.stop_crawl(tmp_path, timeout=30)
        assert time.monotonic() - started < 10  # no heartbeat: no point waiting for it to notice the request
        assert state.status == Status.STOPPED and "killed" in state.message
        assert stubborn.wait(timeout=5) == -signal.SIGKILL
    finally:
        if stubborn.poll() is None:
            stubborn.kill()
