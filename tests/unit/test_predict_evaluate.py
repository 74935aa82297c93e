"""Predict and evaluate on a real tiny trained run (small_cnn, 32 px, 1 epoch on generated demo images)."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from carviz.data import datasets
from carviz.ml import pipelines
from carviz.core import store as runs
from carviz.core.config import TrainConfig
from carviz.ml.evaluate import Evaluation, check_files, evaluate_run, summarize_predictions
from carviz.ml.predict import Predictor, decode_like_training, load_model, predict_files, preprocess, top_k


pytestmark = pytest.mark.slow  # uses the tiny model trained once per session (tests/conftest.py)


@pytest.fixture(scope="module")
def trained(tiny_trained: tuple[Path, Path]):
    """(home, run) of the session's tiny finished run; CARVIZ_HOME points at home for the whole module."""
    home, run_path = tiny_trained
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CARVIZ_HOME", str(home))
        patch.delenv("CARVIZ_RUNS", raising=False)
        patch.delenv("CARVIZ_DATA", raising=False)
        yield home, runs.Run(run_path)


@pytest.fixture(scope="module")
def predictor(trained) -> Predictor:
    return load_model(trained[1])


def validation(run: runs.Run) -> tuple[Path, list[Path], list[int]]:
    split = json.loads(run.file("split.json").read_text())
    root = Path(run.info()["dataset_path"])
    return root, [root / p for p in split["val_paths"]], split["val_labels"]


def test_top_k_is_sorted_sums_at_most_one_and_names_classes(trained, predictor):
    _, paths, _ = validation(trained[1])
    images = [datasets.load_image_rgb(p) for p in paths[:3]]
    results = predictor.predict(images, top_k=3)
    assert len(results) == 3
    for top in results:
        probs = [p for _, p in top]
        assert len(top) == 3 and probs == sorted(probs, reverse=True)
        assert sum(probs) <= 1 + 1e-5 and all(0 <= p <= 1 for p in probs)
        assert {name for name, _ in top} <= set(predictor.classes)
    full = predictor.predict(images[:1], top_k=99)[0]  # k is capped at the number of classes
    assert len(full) == len(predictor.classes) and sum(p for _, p in full) == pytest.approx(1, abs=1e-5)
    assert predictor.classes == trained[1].classes() and predictor.image_size == 32


def test_predictions_agree_with_model_predict_on_the_training_pipeline(trained, predictor):
    _, paths, labels = validation(trained[1])
    pipeline = pipelines.make_pipeline(paths, labels, len(predictor.classes), 32, 64, training=False)
    batch = np.concatenate([np.asarray(x) for x, _ in pipeline])
    from carviz.core.calibration import scale

    # what carviz gives is the model's output scaled by the run's temperature (fitted on validation at the end of
    # training): the same ranking of classes, honester probabilities
    expected = scale(predictor.model.predict(batch, verbose=0), predictor.temperature)
    assert predictor.temperature == pytest.approx(trained[1].calibration()["temperature"])
    # files are decoded as training decodes them: the very same pixels reach the model
    decoded = [decode_like_training(p.read_bytes()) for p in paths]
    assert np.array_equal(preprocess(decoded, 32), batch)
    results = predict_files(predictor, paths, top_k=len(predictor.classes))
    for result, row in zip(results, expected):
        assert [name for name, _ in result.top] == [predictor.classes[i] for i in np.argsort(-row, kind="stable")]
        np.testing.assert_allclose([p for _, p in result.top], np.sort(row)[::-1], atol=1e-5)
    # PIL images (camera, arrays): Pillow's JPEG decoding differs by a few levels, the outputs barely
    ours = predictor.probabilities([datasets.load_image_rgb(p) for p in paths])
    np.testing.assert_allclose(ours, expected, atol=0.05)
    from_array = predictor.probabilities(np.stack([np.asarray(datasets.load_image_rgb(p)) for p in paths[:2]]))
    np.testing.assert_allclose(from_array, ours[:2], atol=1e-6)


def test_predict_files_reports_a_broken_upload_and_classifies_the_rest(trained, predictor, tmp_path):
    _, paths, _ = validation(trained[1])
    png = io.BytesIO()
    Image.open(paths[0]).convert("L").save(png, "PNG")  # greyscale PNG: converted to RGB
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(paths[1].read_bytes()[:200])  # a truncated JPEG
    upload = io.BytesIO(b"this is not an image")
    upload.name = "notes.webp"  # what st.file_uploader's UploadedFile looks like
    results = predict_files(predictor, [paths[0], ("grey.png", png.getvalue()), upload, broken], top_k=5,
                            keep_images=True)
    assert [r.name for r in results] == [paths[0].name, "grey.png", "notes.webp", "broken.jpg"]
    assert results[0].top and results[1].top and results[0].image.size == (64, 64)
    assert results[2].top is None and results[2].error.startswith("notes.webp: not a usable image")
    assert "cannot identify image file" in results[2].error
    assert results[3].top is None and "broken.jpg" in results[3].error
    assert len(results[0].top) == 4  # 4 demo classes, top_k capped


def test_a_broken_image_raises_a_clear_value_error(predictor):
    with pytest.raises(ValueError, match="cannot identify image file"):
        datasets.load_image_rgb(io.BytesIO(b"\x89PNG garbage"))
    with pytest.raises(ValueError, match="expected HxWx3"):
        predictor.predict(np.zeros((2, 8, 8), dtype=np.uint8))


def test_evaluation_matches_the_trainers_accuracy_and_the_confusion_matrix(trained, predictor):
    run = trained[1]
    evaluation = evaluate_run(run, batch_size=4, predictor=predictor)
    _, paths, labels = validation(run)
    assert isinstance(evaluation, Evaluation) and evaluation.classes == run.classes()
    assert evaluation.confusion.sum() == len(paths) == evaluation.images
    assert np.trace(evaluation.confusion) / evaluation.confusion.sum() == pytest.approx(evaluation.accuracy)
    assert evaluation.accuracy == pytest.approx(run.evaluation()["accuracy"], abs=1e-6)
    assert evaluation.class_counts.tolist() == np.bincount(labels, minlength=len(evaluation.classes)).tolist()
    assert len(evaluation.misclassified) == len(paths) - np.trace(evaluation.confusion)
    for item in evaluation.misclassified:
        assert item.true != item.predicted and item.path in paths and 0 < item.confidence <= 1
    rows = evaluation.per_class_rows()
    assert sum(row["images"] for row in rows) == len(paths)
    assert evaluate_run(run).confusion.tolist() == evaluation.confusion.tolist()  # loads its own model too


def test_evaluation_lists_missing_validation_images(trained, tmp_path):
    run = trained[1]
    _, paths, _ = validation(run)
    with pytest.raises(FileNotFoundError, match=r"2 of 3 validation images are missing"):
        check_files([paths[0], tmp_path / "gone1.jpg", tmp_path / "gone2.jpg"])
    moved = paths[0].with_name(".moved")
    paths[0].rename(moved)
    try:
        with pytest.raises(FileNotFoundError, match=paths[0].name):
            evaluate_run(run)
    finally:
        moved.rename(paths[0])


def test_summarize_predictions_and_top_k_by_hand():
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.5, 0.1, 0.4], [0.2, 0.2, 0.6]])
    evaluation = summarize_predictions("r", ["a", "b", "c"], [Path(f"{i}.jpg") for i in range(4)], [0, 1, 2, 2],
                                       probabilities)
    assert evaluation.confusion.tolist() == [[1, 0, 0], [0, 1, 0], [1, 0, 1]]
    assert evaluation.accuracy == 0.75
    assert evaluation.per_class_accuracy.tolist() == [1.0, 1.0, 0.5]
    assert [(m.true, m.predicted, m.confidence) for m in evaluation.misclassified] == [("c", "a", 0.5)]
    assert top_k(probabilities[:1], ["a", "b", "c"], k=2) == [[("a", 0.7), ("b", 0.2)]]
    rows = {row["class"]: row for row in evaluation.per_class_rows()}
    # "a": 1 of 1 right (recall 1) but 2 predicted as a (precision 0.5); "c": 1 of 2 right, its one prediction right
    assert (rows["a"]["recall"], rows["a"]["precision"], rows["a"]["f1"]) == (1.0, 0.5, pytest.approx(2 / 3))
    assert (rows["c"]["recall"], rows["c"]["precision"], rows["c"]["f1"]) == (0.5, 1.0, pytest.approx(2 / 3))
    assert evaluation.cell(2, 0) == [2] and evaluation.cell(2, 2) == [3] and evaluation.cell(0, 1) == []
    data = evaluation.to_json_dict()
    assert data["per_class"][0]["precision"] == 0.5 and data["predictions"][2] == {
        "path": "2.jpg", "true": "c", "predicted": "a", "confidence": 0.5}
    assert data["calibration"]["temperature"] == 1.0 and 0 <= data["calibration"]["ece"] <= 1


def test_two_runs_are_compared_image_by_image_and_a_temperature_never_changes_a_prediction():
    from carviz.ml.evaluate import compare_predictions

    paths = [Path(f"{i}.jpg") for i in range(4)]
    first = summarize_predictions("a", ["x", "y"], paths, [0, 1, 1, 0], np.array([[.9, .1], [.2, .8], [.6, .4],
                                                                                   [.3, .7]]))
    second = summarize_predictions("b", ["x", "y"], paths, [0, 1, 1, 0], np.array([[.4, .6], [.1, .9], [.3, .7],
                                                                                    [.2, .8]]), temperature=2.5)
    assert compare_predictions(first, second) == {"both": [1], "only_first": [0], "only_second": [2],
                                                  "neither": [3]}
    assert second.predicted.tolist() == second.raw_probabilities.argmax(axis=1).tolist()  # scaled, same classes
    assert second.probabilities[1, 1] < 0.9  # softened by T > 1
    with pytest.raises(ValueError, match="not of the same images"):
        compare_predictions(first, summarize_predictions("c", ["x", "y"], paths[:3], [0, 1, 1],
                                                         np.full((3, 2), 0.5)))


def test_load_model_refuses_a_run_without_a_model(carviz_home):
    run = runs.create_run(TrainConfig(dataset="demo", backbone="small_cnn", weights="none"))
    with pytest.raises(FileNotFoundError, match="no trained model"):
        load_model(run)
