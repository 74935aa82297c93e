"""The crawler against a fake image-search site on 127.0.0.1, driven by real headless Chromium."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import imagehash
import psutil
import pytest
from PIL import Image

from carviz.data.crawl import crawler
from carviz.data.crawl.crawler import CrawlSpec, CrawlStatus
from carviz.data.crawl.engines import BingImages, Candidate, DuckDuckGoImages, GenericEngine, make_engine

try:
    from . import fake_image_search as fake
except ImportError:  # tests/ is not a package
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import fake_image_search as fake

MIN_SIDE = 64
TARGET = 6
# Chromium resolves its update, sign-in and search hosts on its own: no DNS at all, only 127.0.0.1
LOCAL_ONLY = '--host-resolver-rules="MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"'


def _browser_or_skip() -> None:
    try:
        crawler.find_browser()
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
    return crawler.read_jsonl(dataset / ".crawl" / "manifest.jsonl")


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
    with crawler.open_browser() as driver:
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
    errors = crawler.read_jsonl(dataset / ".crawl" / "errors.jsonl")
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

    state = crawler.read_crawl(dataset)
    assert state.status is None and state.manifest_count == 12  # crawled in-process: no job status
    assert "saved alpha/" in (dataset / ".crawl" / "crawl.log").read_text(encoding="utf-8")

    # a second run has nothing to do and starts no browser
    again = crawler.crawl(spec, dataset, driver=object())
    assert again.saved_now == 0 and len(_manifest(dataset)) == 12


@pytest.fixture
def job_dataset(tmp_path):
    dataset = tmp_path / "job"
    yield dataset
    if crawler.read_crawl(dataset).active:  # a failed test must not leave a crawler running
        crawler.stop_crawl(dataset, timeout=5)


def test_job_stop_then_resume_without_refetching(site, job_dataset):
    _browser_or_skip()
    spec = _spec(site, [
        {"name": "gamma", "queries": ["gamma"], "target": TARGET},
        {"name": "delta", "queries": ["delta"], "target": TARGET},
    ], delay=0.4)
    before = len(site.crawler_gets())

    assert crawler.launch_crawl(job_dataset, spec) == job_dataset.resolve()
    launched = json.loads((job_dataset / ".crawl" / "launch.json").read_text())
    assert os.getsid(launched["pid"]) == launched["pid"]  # own session: survives the launcher
    with pytest.raises(crawler.CrawlBusy):
        crawler.launch_crawl(job_dataset, spec)
    state = _wait(job_dataset, lambda s: s.saved >= 2 or not s.active, timeout=30) or crawler.read_crawl(job_dataset)
    assert state.status == CrawlStatus.RUNNING, state.info
    assert state.info["pid"] == launched["pid"] and state.current

    stopped = crawler.stop_crawl(job_dataset, timeout=10)
    assert stopped.status == CrawlStatus.STOPPED, stopped.info
    assert "killed" not in (stopped.error or "")  # it stopped by itself on the stop request
    kept = _images(job_dataset / "gamma") + (_images(job_dataset / "delta") if (job_dataset / "delta").exists() else [])
    assert 2 <= len(kept) < 2 * TARGET
    assert len(_manifest(job_dataset)) == len(kept)  # files kept, manifest in step
    assert _wait(job_dataset, lambda s: not crawler._process_alive(launched["pid"], launched["create_time"]), 10)

    crawler.launch_crawl(job_dataset, spec)  # resume
    assert not (job_dataset / ".crawl" / "stop_request").exists()
    final = crawler.wait_crawl(job_dataset, timeout=45, poll=0.2)
    assert final.status == CrawlStatus.SUCCEEDED, (final.info, (job_dataset / ".crawl" / "crawl.log").read_text())
    assert {n: p.saved for n, p in final.classes.items()} == {"gamma": TARGET, "delta": TARGET}
    rows = _manifest(job_dataset)
    assert len(rows) == 2 * TARGET and len({r["url"] for r in rows}) == 2 * TARGET
    gets = site.crawler_gets()[before:]
    assert len(gets) == len(set(gets)) == 2 * TARGET, "a URL was downloaded twice across stop and resume"
    lines = crawler.progress_lines(final)
    assert lines[0].startswith("gamma") and "6/6" in lines[0] and lines[-1] == "status: succeeded"


def _wait(dataset: Path, done, timeout: float) -> crawler.CrawlState | None:
    """Poll read_crawl until done(state); the state, or None on timeout."""
    end = time.monotonic() + timeout
    while True:
        state = crawler.read_crawl(dataset)
        if done(state):
            return state
        if time.monotonic() > end:
            return None
        time.sleep(0.1)


# ---------------------------------------------------------------- no browser needed


def _write_status(dataset: Path, **status) -> None:
    (dataset / ".crawl").mkdir(parents=True, exist_ok=True)
    (dataset / ".crawl" / "status.json").write_text(json.dumps(status))


def test_read_crawl_derives_lost_for_dead_or_reused_pid(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _write_status(tmp_path, state="running", pid=dead.pid, create_time=time.time() - 5)
    assert crawler.read_crawl(tmp_path).status == CrawlStatus.LOST

    me = psutil.Process()
    _write_status(tmp_path, state="running", pid=me.pid, create_time=me.create_time())
    assert crawler.read_crawl(tmp_path).status == CrawlStatus.RUNNING
    _write_status(tmp_path, state="running", pid=me.pid, create_time=me.create_time() - 1000)  # pid reused
    assert crawler.read_crawl(tmp_path).status == CrawlStatus.LOST

    zombie = subprocess.Popen([sys.executable, "-c", "pass"])  # exits, not reaped yet: a zombie
    time.sleep(0.5)
    _write_status(tmp_path, state="running", pid=zombie.pid, create_time=psutil.Process(zombie.pid).create_time())
    assert crawler.read_crawl(tmp_path).status == CrawlStatus.LOST
    zombie.wait()

    _write_status(tmp_path, state="succeeded", pid=dead.pid)
    state = crawler.read_crawl(tmp_path)
    assert state.status == CrawlStatus.SUCCEEDED and state.status.is_terminal() and not state.active
    assert crawler.read_crawl(tmp_path / "nothing").status is None


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
    with pytest.raises(crawler.FetchError) as info:
        crawler.fetch("file:///etc/passwd")
    assert info.value.reason == "unsupported_scheme"
    assert crawler.fetch("data:text/plain;base64," + base64.b64encode(b"hello").decode()) == b"hello"
    with pytest.raises(crawler.FetchError, match="too_large"):
        crawler.fetch("data:text/plain;base64," + base64.b64encode(b"x" * 100).decode(), max_bytes=10)
    assert crawler.url_key("data:image/png;base64,AAAA").startswith("data:image/png;sha256=")


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


def test_stop_crawl_escalates_when_the_job_ignores_the_request(tmp_path):
    # a stand-in job that never reads stop_request: stop_crawl must end it with signals
    stubborn = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        proc = psutil.Process(stubborn.pid)
        _write_status(tmp_path, state="running", pid=stubborn.pid, create_time=proc.create_time())
        assert crawler.read_crawl(tmp_path).active
        started = time.monotonic()
        state = crawler.stop_crawl(tmp_path, timeout=0.5)
        assert time.monotonic() - started < 5
        assert (tmp_path / ".crawl" / "stop_request").exists()
        assert state.status == CrawlStatus.STOPPED and "killed" in state.error
        assert stubborn.wait(timeout=5) == -15  # SIGTERM was enough
    finally:
        if stubborn.poll() is None:
            stubborn.kill()
