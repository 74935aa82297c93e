"""The Predict page under AppTest: no usable run, hand-made runs of every status, and a real tiny trained run."""

import io
import os
import re
from pathlib import Path

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from carviz.core import store as runs
from carviz.core.config import TrainConfig
from carviz.ml.predict import load_model, predict_files
from carviz.core.jobs.record import HEARTBEAT_FILE
from carviz.core.jobs.status import process_create_time
from carviz.core.store import Status, create_run, now_iso
from carviz.views.formatting import format_accuracy

pytestmark = pytest.mark.slow  # uses the tiny model trained once per session (tests/conftest.py)

PAGE = str(Path(__file__).resolve().parents[2] / "app_pages" / "predict.py")


@pytest.fixture(scope="module")
def trained_home(tiny_trained: tuple[Path, Path]):
    """The session's tiny trained run's CARVIZ_HOME, plus hand-made runs of the other statuses."""
    home, run_path = tiny_trained
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CARVIZ_HOME", str(home))
        patch.delenv("CARVIZ_RUNS", raising=False)
        patch.delenv("CARVIZ_DATA", raising=False)
        if not (home / "hand-made").exists():
            make_other_runs()
            (home / "hand-made").touch()
        yield home, runs.Run(run_path)


def make_other_runs() -> None:
    config = TrainConfig(name="hand made", backbone="small_cnn", weights="none")
    create_run(config).write_status(Status.FAILED, error="ValueError: boom")
    create_run(config).write_status(Status.RUNNING, pid=999_999_999, pid_create_time=1.0)  # lost
    live = create_run(config)
    live.write_status(Status.RUNNING, pid=os.getpid(), pid_create_time=process_create_time(os.getpid()))
    live.file(HEARTBEAT_FILE).write_text(now_iso() + "\n")
    create_run(config).write_status(Status.SUCCEEDED)  # says succeeded but has no model: not offered


def test_without_a_finished_run_the_page_explains(carviz_home):
    at = AppTest.from_file(PAGE, default_timeout=30).run()
    assert not at.exception and "No finished run" in at.info[0].value
    make_other_runs()
    at = AppTest.from_file(PAGE, default_timeout=30).run()
    assert not at.exception and "No finished run" in at.info[0].value


def test_page_offers_only_the_trained_run_and_predicts_a_validation_image(trained_home):
    _, run = trained_home
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception
    assert at.selectbox(key="predict_run").options == [f"tiny ({run.id[-6:]}) · small_cnn · val acc "
                                                       f"{format_accuracy(run.evaluation()['accuracy'])} "
                                                       "(kept: epoch 1 (best val))"]
    assert not at.get("plotly_chart")  # nothing to classify yet
    sample = at.selectbox(key="predict_sample")
    assert len(sample.options) == run.info()["val_images"]
    sample.select_index(0).run()
    assert not at.exception and not at.error
    assert len(at.get("plotly_chart")) == 1  # the top-k bars of that image


def test_page_evaluates_the_run(trained_home):
    _, run = trained_home
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    at.button(key="predict_evaluate").click().run()
    assert not at.exception and not at.error
    assert at.metric[0].value == format_accuracy(run.evaluation()["accuracy"])
    assert re.fullmatch(r"\d{1,3}\.\d %", at.metric[0].value)  # "41.7 %": one way to show an accuracy
    assert len(at.get("plotly_chart")) >= 2  # confusion matrix + per-class accuracy
    assert any("Misclassified images" in header.value for header in at.subheader)
    at.toggle(key="predict_normalize").set_value(True).run()
    assert not at.exception


def test_a_confusion_matrix_cell_shows_its_images_and_the_page_analyses_errors(trained_home):
    from carviz.ml.evaluate import evaluate_run

    _, run = trained_home
    evaluation = evaluate_run(run)
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    at.button(key="predict_evaluate").click().run()
    cell = at.selectbox(key="predict_cell")
    mistakes = [(i, j) for i in range(4) for j in range(4) if i != j and evaluation.confusion[i, j]]
    assert len(cell.options) == int((evaluation.confusion > 0).sum())  # every non-empty cell
    assert tuple(cell.value) in mistakes if mistakes else cell.value[0] == cell.value[1]  # mistakes first
    # as a click on the matrix would: a cell of right answers (its images are in no other gallery of the page)
    right = max(range(4), key=lambda i: evaluation.confusion[i, i])
    cell.set_value((right, right)).run()
    assert not at.exception
    shown = [caption for image in at.image for caption in image.captions if caption.startswith("true ")]
    name = evaluation.classes[right]
    assert sum(c.startswith(f"true {name} → {name} (") for c in shown) == min(12, len(evaluation.cell(right, right)))
    table = next(frame.value for frame in at.dataframe if "precision" in frame.value.columns)
    assert list(table.columns[:5]) == ["class", "images", "correct", "precision", "recall"]
    assert at.get("download_button")  # the per-class CSV
    assert any("Calibration" in header.value for header in at.subheader)
    assert any("No other finished run with the same classes" in caption.value for caption in at.caption)


def test_the_pages_prediction_path_on_uploads(trained_home):
    """AppTest cannot upload files: feed predict_files what st.file_uploader returns (named file objects)."""
    home, run = trained_home
    image = next((home / "data" / "demo" / "bus").glob("*.jpg"))
    good = io.BytesIO()
    Image.open(image).save(good, "PNG")
    good.name = "bus.png"
    bad = io.BytesIO(b"<html>not an image</html>")
    bad.name = "page.jpg"
    results = predict_files(load_model(run), [good, bad], top_k=5)
    assert results[0].error is None and len(results[0].top) == 4
    assert results[1].top is None and results[1].error.startswith("page.jpg: not a usable image")


@pytest.fixture
def run_with_test_split(tiny_trained: tuple[Path, Path], carviz_home: Path) -> runs.Run:
    """A copy of the session's tiny run in a fresh home whose recorded split holds its last 4 validation images out
    as a test split (the model never trained on them either way), and another dataset with the same classes."""
    import json
    import shutil

    from carviz.data.datasets import generate_demo_dataset

    home, run_path = tiny_trained
    shutil.copytree(home / "data" / "demo", carviz_home / "data" / "demo")
    shutil.copytree(run_path, carviz_home / "runs" / run_path.name)
    run = runs.Run(carviz_home / "runs" / run_path.name)
    split = json.loads(run.file("split.json").read_text())
    split["test_paths"], split["val_paths"] = split["val_paths"][-4:], split["val_paths"][:-4]
    split["test_labels"], split["val_labels"] = split["val_labels"][-4:], split["val_labels"][:-4]
    run.write_split(split)
    run.update_info(dataset_path=str(carviz_home / "data" / "demo"))
    generate_demo_dataset(carviz_home / "data" / "other", per_class=3, image_size=48, seed=99)
    return run


def test_page_evaluates_on_the_test_split_and_on_another_dataset(run_with_test_split):
    from carviz.ml.evaluate import evaluate_run

    run = run_with_test_split
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    target = at.radio(key="predict_eval_target")
    assert target.options == ["Validation split", "Test split (held out)", "Another dataset"]
    target.set_value("test").run()
    at.button(key="predict_evaluate").click().run()
    assert not at.exception and not at.error
    assert at.metric[0].label == "Test accuracy"
    assert at.metric[0].value == format_accuracy(evaluate_run(run, split="test").accuracy)

    at.radio(key="predict_eval_target").set_value("dataset").run()
    assert at.selectbox(key="predict_eval_dataset").options == ["other"]  # never the run's own dataset
    assert not at.metric and "Choose a dataset" in at.info[0].value
    at.selectbox(key="predict_eval_dataset").select("other").run()
    assert not at.exception and not at.error
    assert at.metric[0].label == "Accuracy on other"
    assert at.metric[0].value == format_accuracy(evaluate_run(run, dataset="other").accuracy)


def test_page_explains_a_dataset_whose_classes_do_not_match(run_with_test_split, carviz_home: Path):
    import shutil

    shutil.copytree(carviz_home / "data" / "other" / "suv", carviz_home / "data" / "other" / "tractor")
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    at.radio(key="predict_eval_target").set_value("dataset").run()
    at.selectbox(key="predict_eval_dataset").select("other").run()
    at.button(key="predict_evaluate").click().run()
    assert not at.exception and "not classes of the run: tractor" in at.error[0].value
    at.checkbox(key="predict_eval_skip_extra").check().run()
    assert not at.exception and not at.error and at.metric[0].label == "Accuracy on other"
    assert any("Left out (not classes of the run): tractor" in caption.value for caption in at.caption)
