"""Data page, Collect / Import / Review tabs: crawl status and its buttons, a real crawl started from the page
(fake image site on 127.0.0.1), zip and folder import with the report, trash and restore through the grid."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import psutil
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest
from test_train_page import APP, tiny_demo  # tests/ui is on sys.path (pytest's rootdir-less import)

from carviz.core.jobs import Status
from carviz.data.crawl import job as crawl
from carviz.data.crawl.record import CrawlRecord
from carviz.data.crawl.spec import CrawlSpec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from test_crawl import _browser_or_skip, site  # noqa: E402,F401 - the fake image-search site fixture

pytestmark = pytest.mark.slow  # real crawls and stand-in jobs: scheduled first (tests/conftest.py)


def open_data(at: AppTest, dataset: str | None = None) -> AppTest:
    at.session_state["aug_show"] = False  # the augmentation preview loads Keras: not the point here
    if dataset:
        at.session_state["data_dataset"] = dataset
    return at.switch_page("app_pages/data.py").run()


def texts(at: AppTest) -> str:
    parts = [e.value for kind in ("markdown", "caption", "success", "warning", "error", "info") for e in at.get(kind)]
    return "\n".join(str(p) for p in parts)


def progress_bars(at: AppTest) -> list[tuple[float, str]]:
    return [(bar.proto.value, bar.proto.text) for bar in at.get("progress")]


def jpeg(colour: str, size: tuple[int, int] = (64, 48)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "JPEG")
    return out.getvalue()


# ---------------------------------------------------------------- collect


def test_collect_tab_without_crawl_and_form_errors(carviz_home: Path) -> None:
    tiny_demo(carviz_home)
    at = open_data(AppTest.from_file(APP, default_timeout=30))
    assert not at.exception
    assert [tab.label for tab in at.tabs] == ["Browse", "Check this dataset", "Collect images", "Import", "Review"]
    assert "No crawl for `demo` yet." in texts(at)
    assert not progress_bars(at)

    at.button(key="cr_start").click().run()  # no dataset name, no classes
    assert not at.exception
    assert any("Cannot start" in e.value and "name" in e.value for e in at.error)

    at.text_input(key="cr_new_name").input("cars")
    at.text_area(key="cr_classes").input("sedan: sedan car\nsedan: again")
    at.button(key="cr_start").click().run()
    assert any("line 2" in e.value and "already given" in e.value for e in at.error)

    at.radio(key="cr_engine").set_value("generic").run()
    assert at.text_input(key="cr_opt_full_link_attribute").value == "href"
    at.text_area(key="cr_classes").input("sedan: sedan car")
    at.button(key="cr_start").click().run()
    assert any("needs search_url_template" in e.value for e in at.error)
    assert not (carviz_home / "data" / "cars").exists()  # nothing launched, nothing created


def _hand_made_crawl(dataset: Path, pid: int) -> None:
    """The .crawl files as the crawl job writes them (shared job record), for a job 'running' as process pid."""
    spec = CrawlSpec(
        classes=({"name": "sedan", "queries": ["sedan car"], "target": 4},
                 {"name": "bus", "queries": ["city bus", "coach"], "target": 2}),
        engine="generic",
        engine_options={"search_url_template": "http://127.0.0.1:9/search?q={query}", "thumb_selector": "img"},
    )
    state = dataset / ".crawl"
    state.mkdir(parents=True)
    (dataset / "sedan").mkdir()
    for i in range(2):
        (dataset / "sedan" / f"s{i}.jpg").write_bytes(jpeg("red" if i else "blue"))
    (state / "spec.json").write_text(json.dumps(spec.to_dict()))
    (state / "status.json").write_text(json.dumps({
        "state": "running", "pid": pid, "pid_create_time": psutil.Process(pid).create_time(),
        "host": socket.gethostname(), "backend": "local", "started_at": "2026-01-01T00:00:00.000+00:00"}))
    (state / "job.log").write_text("2026-01-01 00:00:00,000 INFO class sedan: query 'sedan car' (2/4 saved)\n")
    (state / "progress.json").write_text(json.dumps({"current": {"class": "sedan", "query": "sedan car"}, "classes": {
        "sedan": {"target": 4, "saved": 2, "candidates": 9, "failed": 1, "rejected": 3, "state": "crawling"},
        "bus": {"target": 2, "saved": 0, "candidates": 0, "failed": 0, "rejected": 0, "state": "pending"}}}))


def test_crawl_state_progress_stop_force_stop_and_resume_button(carviz_home: Path) -> None:
    tiny_demo(carviz_home)
    dataset = carviz_home / "data" / "cars"
    # a stand-in job in its own session that ignores the stop request: Force stop must end it
    job = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        _hand_made_crawl(dataset, job.pid)
        assert crawl.read_crawl(dataset).status == Status.RUNNING
        at = open_data(AppTest.from_file(APP, default_timeout=30), dataset="cars")
        assert not at.exception
        bars = progress_bars(at)
        assert [round(value) for value, _ in bars] == [50, 0]  # st.progress sends percent
        assert "2/4 saved" in bars[0][1] and "1 broken" in bars[0][1] and "3 rejected" in bars[0][1]
        assert "0/2 saved" in bars[1][1]
        assert "running" in texts(at) and "sedan car" in texts(at)
        assert "query 'sedan car' (2/4 saved)" in "\n".join(c.value for c in at.code)  # the job log
        with pytest.raises(KeyError):
            at.button(key="cr_resume")

        at.button(key="cr_stop").click().run()
        assert not at.exception
        assert (dataset / ".crawl" / "stop_request").exists()
        assert at.button(key="cr_stopping").disabled

        at.button(key="cr_force").click().run()  # waits 2 s, then kills its process group
        assert not at.exception
        state = crawl.read_crawl(dataset)
        assert state.status == Status.STOPPED and "killed" in state.message
        assert job.wait(timeout=10) is not None
        at.run()
        assert "killed" in texts(at)
        assert at.button(key="cr_resume") and at.button(key="cr_load")
        with pytest.raises(KeyError):
            at.button(key="cr_stop")

        at.button(key="cr_load").click().run()  # the saved request fills the form
        assert at.radio(key="cr_engine").value == "generic"
        assert at.text_area(key="cr_classes").value == "sedan: sedan car\nbus: city bus; coach"
        assert at.text_input(key="cr_opt_search_url_template").value.startswith("http://127.0.0.1:9/")
        assert at.selectbox(key="cr_target").value == "cars"

        # a job that dies without a word (its process gone, status still "running") reads lost, with Resume
        status = json.loads((dataset / ".crawl" / "status.json").read_text())
        (dataset / ".crawl" / "status.json").write_text(json.dumps({**status, "state": "running", "message": None}))
        (dataset / ".crawl" / "stop_request").unlink()
        at.run()
        assert not at.exception
        assert f"process {job.pid} is gone" in texts(at) and at.button(key="cr_resume")
    finally:
        job.kill()
        job.wait()


def test_start_a_real_crawl_from_the_page(site, carviz_home: Path) -> None:
    _browser_or_skip()
    tiny_demo(carviz_home)
    at = open_data(AppTest.from_file(APP, default_timeout=30))
    at.text_input(key="cr_new_name").input("fake cars")
    at.radio(key="cr_engine").set_value("generic").run()
    at.text_input(key="cr_opt_search_url_template").input(site.base_url + "/search?q={query}")
    at.text_input(key="cr_opt_thumb_selector").input("img.thumb")
    at.text_input(key="cr_opt_full_link_selector").input("a.full")
    at.text_input(key="cr_opt_more_button_selector").input("#more")
    at.text_area(key="cr_classes").input("delta: delta")
    at.number_input(key="cr_per_class").set_value(2)
    at.number_input(key="cr_min_side").set_value(64)
    at.number_input(key="cr_delay").set_value(0.0)
    at.button(key="cr_start").click().run()
    assert not at.exception
    assert any("started in the background" in s.value for s in at.success)
    assert at.selectbox(key="data_dataset").value == "fake cars"  # the page follows the new dataset
    dataset = carviz_home / "data" / "fake cars"
    at.button(key="cr_start").click().run()  # a second start while it runs
    state = crawl.read_crawl(dataset)
    if state.active:
        assert any("already running" in w.value for w in at.warning)

    final = crawl.wait_crawl(dataset, timeout=40, poll=0.2)
    assert final.status == Status.SUCCEEDED, (final.info, CrawlRecord.for_dataset(dataset).log_tail())
    at.run()
    assert not at.exception
    [(value, text)] = progress_bars(at)
    assert value == 100 and "2/2 saved" in text
    assert "succeeded" in texts(at)
    metrics = {metric.label: metric.value for metric in at.metric}
    assert metrics["Usable images"] == "2"


# ---------------------------------------------------------------- import


def _zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def test_import_zip_and_folder_through_the_page(carviz_home: Path, tmp_path: Path) -> None:
    tiny_demo(carviz_home)
    at = open_data(AppTest.from_file(APP, default_timeout=30))
    assert at.button(key="imp_zip_go").disabled  # nothing uploaded yet

    at.file_uploader(key="imp_zip").set_value(("broken.zip", b"not a zip", "application/zip")).run()
    at.text_input(key="imp_new_name").input("pets")
    at.button(key="imp_zip_go").click().run()
    assert not at.exception
    assert any("Import failed" in e.value and "zip" in e.value for e in at.error)

    data = _zip({
        "pets/cats/a.jpg": jpeg("red"), "pets/cats/b.jpg": jpeg("green"), "pets/dogs/c.jpg": jpeg("blue"),
        "pets/dogs/notes.txt": b"hello", "../evil.jpg": jpeg("black"), "pets/loose.jpg": jpeg("white"),
    })
    at.file_uploader(key="imp_zip").set_value(("pets.zip", data, "application/zip")).run()
    at.button(key="imp_zip_go").click().run()
    assert not at.exception
    assert any("Added 3 images (cats 2, dogs 1)" in s.value for s in at.success)
    pets = carviz_home / "data" / "pets"
    assert sorted(p.name for p in (pets / "cats").iterdir()) == ["a.jpg", "b.jpg"]
    assert [p.name for p in (pets / "dogs").iterdir()] == ["c.jpg"]
    assert not (carviz_home / "data" / "evil.jpg").exists()
    [table] = [t.value for t in at.dataframe if list(t.value.columns) == ["member", "reason"]]
    dropped = dict(zip(table["member"], table["reason"]))
    assert set(dropped) == {"pets/dogs/notes.txt", "../evil.jpg", "pets/loose.jpg"}
    assert at.selectbox(key="data_dataset").value == "pets"
    metrics = {metric.label: metric.value for metric in at.metric}
    assert metrics["Classes"] == "2" and metrics["Usable images"] == "3"

    folder = tmp_path / "more"
    (folder / "cats").mkdir(parents=True)
    (folder / "cats" / "d.png").write_bytes(jpeg("yellow"))  # JPEG data under .png: renamed
    at.selectbox(key="imp_target").set_value("pets")
    at.text_input(key="imp_folder").input(str(folder))
    at.button(key="imp_folder_go").click().run()
    assert not at.exception
    assert any("Added 1 image (cats 1)" in s.value for s in at.success)
    assert (pets / "cats" / "d.jpg").is_file()
    assert {metric.label: metric.value for metric in at.metric}["Usable images"] == "4"

    at.text_input(key="imp_folder").input(str(tmp_path / "missing"))
    at.button(key="imp_folder_go").click().run()
    assert not at.exception and any("Import failed" in e.value for e in at.error)


# ---------------------------------------------------------------- review


def test_review_marks_trash_and_restore(carviz_home: Path) -> None:
    root = tiny_demo(carviz_home, per_class=4)
    at = open_data(AppTest.from_file(APP, default_timeout=30))
    assert not at.exception
    assert "The trash is empty." in texts(at)
    usable = {metric.label: metric.value for metric in at.metric}["Usable images"]
    assert usable == "16"

    at.selectbox(key="rv_class::demo").set_value("bus").run()
    captions = [c for image in at.image for c in image.captions]
    assert {"bus_000.jpg", "bus_003.jpg"} <= set(captions)
    assert at.button(key="rv_trash").disabled
    at.checkbox(key="rv_mark::demo::bus::bus_001.jpg").check().run()
    at.checkbox(key="rv_mark::demo::bus::bus_002.jpg").check().run()
    at.checkbox(key="rv_mark::demo::bus::bus_002.jpg").uncheck().run()
    assert at.button(key="rv_trash").label == "Move 1 marked to trash"
    at.button(key="rv_trash").click().run()
    assert not at.exception
    assert not (root / "bus" / "bus_001.jpg").exists()
    assert (root / ".trash" / "bus" / "bus_001.jpg").is_file()
    assert {metric.label: metric.value for metric in at.metric}["Usable images"] == "15"  # scan refreshed
    assert "bus_001.jpg" not in [c for image in at.image for c in image.captions]

    restore_key = "rv_restore::demo::bus/bus_001.jpg"
    assert at.checkbox(key=restore_key).label.startswith("bus/bus_001.jpg")
    at.checkbox(key=restore_key).check().run()
    at.button(key="rv_restore").click().run()
    assert not at.exception
    assert (root / "bus" / "bus_001.jpg").is_file() and not (root / ".trash" / "bus" / "bus_001.jpg").exists()
    assert {metric.label: metric.value for metric in at.metric}["Usable images"] == "16"
    assert "The trash is empty." in texts(at)


def test_review_paginates_and_shows_broken_images(carviz_home: Path) -> None:
    root = carviz_home / "data" / "many"
    (root / "cars").mkdir(parents=True)
    for i in range(30):
        (root / "cars" / f"c{i:02d}.jpg").write_bytes(jpeg("gray"))
    (root / "cars" / "zz_broken.jpg").write_bytes(b"not an image")
    at = open_data(AppTest.from_file(APP, default_timeout=30), dataset="many")
    at.selectbox(key="rv_class::many").set_value("cars").run()
    assert not at.exception
    review = at.tabs[4]
    assert len([c for image in review.image for c in image.captions]) == 24
    at.number_input(key="rv_page::many::cars").set_value(2).run()
    captions = [c for image in at.tabs[4].image for c in image.captions]
    assert len(captions) == 6 and "c29.jpg" in captions
    assert "zz_broken.jpg (does not decode)" in texts(at)
    at.checkbox(key="rv_mark::many::cars::zz_broken.jpg").check().run()
    at.button(key="rv_trash").click().run()
    assert not (root / "cars" / "zz_broken.jpg").exists()
    assert at.number_input(key="rv_page::many::cars").value == 2  # 30 left: still two pages
