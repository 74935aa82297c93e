"""Data page: counts, samples, the health report naming bad files, the augmentation preview, empty folders."""

from __future__ import annotations

import shutil
from pathlib import Path

from PIL import Image
from streamlit.testing.v1 import AppTest
from test_train_page import APP, make_runs, tiny_demo  # tests/ui is on sys.path (pytest's rootdir-less import)


def open_data(at: AppTest, preview: bool = False) -> AppTest:
    at.session_state["aug_rotation"] = 10
    at.session_state["aug_show"] = preview  # the preview loads Keras: only where it is the point
    return at.switch_page("app_pages/data.py").run()


def test_demo_dataset_counts_samples_and_preview(carviz_home: Path) -> None:
    tiny_demo(carviz_home, per_class=5)
    at = open_data(AppTest.from_file(APP, default_timeout=60), preview=True)
    assert not at.exception
    assert at.selectbox(key="data_dataset").value == "demo"
    metrics = {metric.label: metric.value for metric in at.metric}
    assert metrics["Classes"] == "4" and metrics["Usable images"] == "20" and metrics["Set aside"] == "0"
    assert any("Every image decodes" in success.value for success in at.success)
    captions = [caption for image in at.image for caption in image.captions]
    assert len(captions) == 4 * 5 + 1 + 8  # 4 classes' samples, the original and 8 augmented copies
    assert "sedan_000.jpg" in captions and "#8" in captions


def test_health_report_names_broken_tiny_and_duplicate_files(carviz_home: Path) -> None:
    root = tiny_demo(carviz_home, per_class=4)
    (root / "bus" / "broken.jpg").write_bytes(b"not a jpeg at all")
    Image.new("RGB", (8, 8), "red").save(root / "suv" / "tiny.png")
    shutil.copy(root / "sedan" / "sedan_000.jpg", root / "sedan" / "copy_of_sedan.jpg")
    at = open_data(AppTest.from_file(APP, default_timeout=60))
    assert not at.exception
    [problems] = at.dataframe  # the health report is the page's only table
    table = problems.value
    files = dict(zip(table["file"], table["problem"]))
    assert files["bus/broken.jpg"] == "unreadable"
    assert files["suv/tiny.png"] == "tiny"
    assert any(name.startswith("sedan/") and kind == "duplicate" for name, kind in files.items())


def test_with_runs_of_every_state(carviz_home: Path) -> None:
    tiny_demo(carviz_home)
    make_runs()
    at = open_data(AppTest.from_file(APP, default_timeout=60))
    assert not at.exception


def test_empty_and_classless_data_folders_say_so(carviz_home: Path, monkeypatch) -> None:
    # CARVIZ_DATA outside home, and no dashboard run first: nothing draws the demo set here.
    data = carviz_home.parent / "elsewhere"
    monkeypatch.setenv("CARVIZ_DATA", str(data))
    page = str(Path(APP).parent / "app_pages" / "data.py")

    def run_page_alone() -> AppTest:
        at = AppTest.from_file(page, default_timeout=30)
        return at.run()

    at = run_page_alone()
    assert not at.exception
    assert any("No datasets yet" in info.value for info in at.info)

    (data / "mine").mkdir(parents=True)
    at = run_page_alone()
    assert not at.exception
    assert any("no class folders" in warning.value for warning in at.warning)

    (data / "mine" / "cats").mkdir()
    (data / "mine" / "cats" / "broken.jpg").write_bytes(b"truncated")
    at = run_page_alone()
    assert not at.exception
    assert any("No usable images" in warning.value for warning in at.warning)
