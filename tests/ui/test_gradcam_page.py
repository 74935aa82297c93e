"""The Predict page's Grad-CAM under AppTest: heatmap controls over a classified image and over the misclassified
gallery, with the session's tiny trained run."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from carviz.core import store as runs

pytestmark = pytest.mark.slow  # uses the tiny model trained once per session (tests/conftest.py)

PAGE = str(Path(__file__).resolve().parents[2] / "app_pages" / "predict.py")


@pytest.fixture
def trained_home(tiny_trained: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> tuple[Path, runs.Run]:
    home, run_path = tiny_trained
    monkeypatch.setenv("CARVIZ_HOME", str(home))
    for name in ("CARVIZ_RUNS", "CARVIZ_DATA", "CARVIZ_CACHE"):
        monkeypatch.delenv(name, raising=False)
    return home, runs.Run(run_path)


def test_a_classified_image_shows_its_heatmap_with_class_and_opacity_controls(trained_home) -> None:
    _, run = trained_home
    at = AppTest.from_file(PAGE, default_timeout=90).run()
    assert not at.exception
    assert not [toggle for toggle in at.toggle if toggle.key == "predict_gradcam_on"]  # nothing classified yet
    at.selectbox(key="predict_sample").select_index(0).run()  # AppTest cannot upload: a validation image instead
    assert not at.exception and not at.error
    assert at.toggle(key="predict_gradcam_on").value is True
    assert at.slider(key="predict_gradcam_opacity").value == 0.5
    explain = at.selectbox(key="predict_gradcam_class_0")
    classes = run.classes()
    assert [option.split(" · ")[0].removesuffix(" (top)") for option in explain.options] == classes
    assert explain.value is not None and "(top)" in explain.options[explain.index]
    assert any("layer `block3_conv` (8×8 map)" in caption.value for caption in at.caption)
    captions = [c for image in at.image for c in image.captions]
    assert len(captions) == 2 and captions[1].startswith("Grad-CAM: ") and "(block3_conv)" in captions[1]
    other = next(i for i in range(len(classes)) if i != explain.index)
    explain.select_index(other).run()
    assert not at.exception and not at.error
    assert [c for image in at.image for c in image.captions][1].startswith(f"Grad-CAM: {classes[other]} ")
    at.slider(key="predict_gradcam_opacity").set_value(0.9).run()
    assert not at.exception and len(at.image) == 2
    at.toggle(key="predict_gradcam_on").set_value(False).run()
    assert not at.exception and len(at.image) == 1  # the image alone again
    assert at.slider(key="predict_gradcam_opacity").disabled


def test_the_misclassified_gallery_shows_heatmaps(trained_home) -> None:
    _, run = trained_home
    if run.evaluation()["accuracy"] == 1.0:
        pytest.skip("the tiny run classified every validation image correctly: no gallery to show")
    at = AppTest.from_file(PAGE, default_timeout=90).run()
    at.button(key="predict_evaluate").click().run()
    assert not at.exception and not at.error
    assert at.radio(key="predict_gallery_heatmap").value == "predicted"
    captions = [c for image in at.image for c in image.captions]
    assert captions and all(c.endswith("· Grad-CAM: predicted class") for c in captions)
    at.radio(key="predict_gallery_heatmap").set_value("true").run()
    assert not at.exception and all(c.endswith("· Grad-CAM: true class")
                                    for image in at.image for c in image.captions)
    at.radio(key="predict_gallery_heatmap").set_value("off").run()
    assert not at.exception and not any("Grad-CAM" in c for image in at.image for c in image.captions)
