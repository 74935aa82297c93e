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


def test_augmentation_preview_settings_reach_the_train_form(carviz_home: Path) -> None:
    tiny_demo(carviz_home, per_class=3)
    at = AppTest.from_file(APP, default_timeout=120)
    at.switch_page("app_pages/train.py").run()  # the Train form seen once: it reloads its values from then on
    assert at.checkbox(key="tf_aug_enabled").value is False  # demo quick trains without augmentation
    name = at.text_input(key="tf_name").value
    at = open_data(at, preview=True)
    assert not at.exception
    assert any("only preview" in c.value for c in at.caption)  # the sliders say they are not training settings
    at.slider(key="aug_rotation").set_value(45)
    at.slider(key="aug_zoom").set_value(0.35)
    at.checkbox(key="aug_flip").uncheck()
    at.button(key="aug_use_in_train").click().run()
    assert not at.exception
    assert any("Copied to the Train form" in s.value for s in at.success)
    at.switch_page("app_pages/train.py").run()
    assert not at.exception
    assert at.checkbox(key="tf_aug_enabled").value is True
    assert at.slider(key="tf_aug_rotation").value == 45.0 and at.slider(key="tf_aug_zoom").value == 0.35
    assert at.slider(key="tf_aug_width_shift").value == 0.2 and at.checkbox(key="tf_aug_flip").value is False
    assert at.text_input(key="tf_name").value == name  # the rest of the form is as it was


def test_the_preview_is_off_on_a_first_visit_and_stays_on_once_asked_for(carviz_home: Path) -> None:
    tiny_demo(carviz_home, per_class=3)
    at = AppTest.from_file(APP, default_timeout=120).run()  # a first visit: nothing set beforehand
    assert not at.exception
    assert at.toggle(key="aug_show").value is False  # the preview (Keras) waits to be asked for
    assert [c for image in at.image for c in image.captions] == [f"{k}_00{i}.jpg" for k in
                                                                 ("bus", "sedan", "sports car", "suv") for i in range(3)]
    assert len(at.get("vega_lite_chart")) == 1  # the class chart (Vega-Lite), drawn with the first screen
    at.toggle(key="aug_show").set_value(True).run()
    assert not at.exception and "#8" in [c for image in at.image for c in image.captions]
    at.switch_page("app_pages/train.py").run()
    at.switch_page("app_pages/data.py").run()
    assert at.toggle(key="aug_show").value is True  # remembered across pages
