"""Compiled prediction and exports (SavedModel, TFLite) of a real tiny trained run, their checks, CLI and page."""

from __future__ import annotations

import io
import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from carviz.core import exports
from carviz.core import store as runs

pytestmark = pytest.mark.slow  # uses the tiny model trained once per session (tests/conftest.py)

PAGE = str(Path(__file__).resolve().parents[2] / "app_pages" / "predict.py")


@pytest.fixture(scope="module")
def run(tiny_trained: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> runs.Run:
    """A copy of the session's tiny run in a home of its own (exports write into the run folder), its classifier
    given seeded random weights: after one epoch from a zero classifier its probabilities are all near 1/4, and an
    agreement check on near-ties would prove little."""
    import keras

    from carviz.ml.export import validation_images
    from carviz.ml.predict import load_model

    source_home, source_run = tiny_trained
    home = tmp_path_factory.mktemp("carviz-export")
    shutil.copytree(source_home / "data" / "demo", home / "data" / "demo")
    shutil.copytree(source_run, home / "runs" / source_run.name)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CARVIZ_HOME", str(home))
        for name in ("CARVIZ_RUNS", "CARVIZ_DATA", "CARVIZ_CACHE"):
            patch.delenv(name, raising=False)
        copy = runs.Run(home / "runs" / source_run.name)
        copy.update_info(dataset_path=str(home / "data" / "demo"))
        model = load_model(copy).model
        pooled = np.asarray(keras.Model(model.input, model.get_layer("head_pool").output)(
            validation_images(copy, 32, len(copy.classes()))))
        spread = pooled - pooled.mean(axis=0)  # what tells the images apart, as a random projection to logits
        kernel = np.random.default_rng(7).normal(size=(pooled.shape[1], len(copy.classes())))
        kernel *= 6 / max(float((spread @ kernel).std()), 1e-12)
        dense = model.get_layer("predictions")
        dense.kernel.assign(kernel.astype("float32"))
        dense.bias.assign((-pooled.mean(axis=0) @ kernel).astype("float32"))
        copy.save_model(model)
        yield copy


@pytest.fixture(scope="module")
def images(run: runs.Run) -> np.ndarray:
    from carviz.ml.export import validation_images

    return validation_images(run, 32, len(run.classes()))


def test_compiled_prediction_agrees_with_eager_and_is_traced_once(run, images):
    from carviz.ml.predict import load_model

    predictor = load_model(run)
    assert predictor.infer.experimental_get_tracing_count() == 1  # traced at load, on one dummy image
    for batch, batch_size in ((images[:1], 32), (images[:3], 32), (images, 2), (images, 32), (images[:1], 1)):
        compiled = predictor.predict_batch(batch, batch_size, calibrated=False)  # the model's own outputs
        eager = np.asarray(predictor.model(batch, training=False))
        assert compiled.dtype == np.float32 and compiled.shape == eager.shape
        np.testing.assert_allclose(compiled, eager, rtol=0, atol=1e-5)
    assert predictor.infer.experimental_get_tracing_count() == 1  # batch sizes 1, 2, 3 and 9: one graph
    probabilities = predictor.predict_batch(images, calibrated=False)
    # far from uniform (1/4) and not one class for all: the agreement checks below mean something
    assert probabilities.max(axis=1).mean() > 0.5 and len(set(probabilities.argmax(axis=1))) >= 2


def test_mixed_precision_model_predicts_float32(run):
    import keras

    from carviz.core.config import TrainConfig
    from carviz.ml.model import build_model
    from carviz.ml.predict import Predictor

    try:
        model, _ = build_model(TrainConfig(backbone="small_cnn", weights="none", image_size=32,
                                           precision="mixed_bfloat16"), 3)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    predictor = Predictor(model=model, classes=["a", "b", "c"], image_size=32)
    batch = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    out = predictor.predict_batch(batch)
    assert out.dtype == np.float32 and np.allclose(out.sum(axis=1), 1, atol=1e-3)
    np.testing.assert_allclose(out, np.asarray(model(batch, training=False), dtype=np.float32), atol=1e-2)


def test_exports_load_back_and_agree_with_the_keras_model(run, images):
    from carviz.ml.export import export_run, load_runner
    from carviz.ml.predict import load_model

    predictor = load_model(run)
    reference = predictor.predict_batch(images)
    for fmt in exports.FORMATS:
        check = export_run(run, fmt, predictor)
        path = exports.artifact_path(run, fmt)
        assert path.exists() and json.loads(exports.check_path(run, fmt).read_text()) == check
        assert check["images"] == len(images) == run.info()["val_images"]
        assert check["tolerance"] == exports.TOLERANCES[fmt].to_json_dict()
        exported = load_runner(fmt, path)(images)  # loaded back by TensorFlow's own loader / interpreter
        same = exported.argmax(axis=1) == reference.argmax(axis=1)
        diff = np.abs(exported - reference).max()
        assert check["top1_agreement"] == pytest.approx(same.mean()) and check["max_prob_diff"] == pytest.approx(diff)
        if fmt == "tflite-dynamic":
            # int8 weights move probabilities a little; a top-1 they change can only be a near-tie, and when one of
            # these 9 images flips the check fails (8/9 < 90 %), as it must
            assert diff <= exports.TOLERANCES[fmt].max_prob_diff
            ordered = np.sort(reference, axis=1)
            assert np.all((ordered[:, -1] - ordered[:, -2])[~same] <= 2 * diff)
            assert check["passed"] is exports.TOLERANCES[fmt].passes(float(same.mean()), float(diff))
        else:
            assert same.all() and diff <= 1e-4 and check["passed"] is True  # identical top-1
    listed = exports.list_exports(run)
    assert [record.format for record in listed] == list(exports.FORMATS)
    for record in listed:
        assert record.passed is record.check["passed"] and record.verdict() == ("passed" if record.passed else
                                                                                "FAILED its check")
    assert record.format == "tflite-dynamic"
    assert record.path.stat().st_size < exports.artifact_path(run, "tflite").stat().st_size  # int8 weights
    names = zipfile.ZipFile(io.BytesIO(exports.zip_folder(exports.artifact_path(run, "savedmodel")))).namelist()
    assert "saved_model/saved_model.pb" in names


def test_a_corrupted_export_fails_its_check(run):
    from carviz.ml.export import check_export, export_run
    from carviz.ml.predict import load_model

    predictor = load_model(run)
    assert export_run(run, "tflite", predictor)["passed"]
    path = exports.artifact_path(run, "tflite")
    data = bytearray(path.read_bytes())
    kernel = predictor.model.get_layer("predictions").kernel.numpy()
    at = bytes(data).find(kernel.T.astype("<f4").tobytes())  # TFLite keeps a dense kernel as (outputs, inputs)
    assert at > 0
    size = kernel.size * 4
    data[at:at + size] = (-kernel.T).astype("<f4").tobytes()  # the classifier's weights negated
    path.write_bytes(bytes(data))
    check = check_export(run, "tflite", predictor)
    assert check["passed"] is False and check["error"] is None
    assert check["top1_agreement"] < 1 and check["max_prob_diff"] > 0.01
    assert json.loads(exports.check_path(run, "tflite").read_text())["passed"] is False
    record = {r.format: r for r in exports.list_exports(run)}["tflite"]
    assert not record.passed and record.verdict() == "FAILED its check"
    assert "FAILED its check" in exports.describe_check(check)

    path.write_bytes(b"not a flatbuffer" * 64)  # not even loadable
    check = check_export(run, "tflite", predictor)
    assert check["passed"] is False and "could not be loaded" in check["error"]
    assert check["top1_agreement"] is None and "FAILED its check" in exports.describe_check(check)

    assert export_run(run, "tflite", predictor)["passed"]  # exporting again replaces it
    model = run.model_path()
    stamp = model.stat().st_mtime_ns
    os.utime(model, ns=(stamp, stamp + 10**9))  # the model changed since: the check no longer vouches for it
    try:
        record = {r.format: r for r in exports.list_exports(run)}["tflite"]
        assert record.stale and not record.passed and record.verdict().startswith("stale")
    finally:
        os.utime(model, ns=(stamp, stamp))


def test_cli_export_prints_the_check(run, capsys, monkeypatch):
    from carviz.cli import main

    assert main(["export", run.id, "--format", "tflite"]) == 0
    out = capsys.readouterr().out
    assert f"TFLite float32: {exports.artifact_path(run, 'tflite')}" in out
    assert "check: top-1 agreement 100.0 % (needs >= 100.0 %), largest probability difference" in out
    assert f"on {run.info()['val_images']} validation images: passed" in out

    impossible = exports.Tolerance(min_top1_agreement=1.0, max_prob_diff=-1.0)  # no export can meet it
    monkeypatch.setitem(exports.TOLERANCES, "tflite-dynamic", impossible)
    assert main(["export", run.id, "--format", "tflite-dynamic", "--json"]) == 1
    printed = json.loads(capsys.readouterr().out)
    assert printed["tflite-dynamic"]["passed"] is False and printed["tflite-dynamic"]["images"] > 0
    assert main(["export", run.id, "--format", "tflite-dynamic"]) == 1
    out = capsys.readouterr().out
    assert ": FAILED its check" in out and "not fit to use (failed the check): tflite-dynamic" in out


def test_predict_page_offers_the_model_and_lists_exports_with_their_checks(run):
    from streamlit.testing.v1 import AppTest

    from carviz.ml.export import check_export

    shutil.rmtree(exports.exports_root(run), ignore_errors=True)
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    assert not at.exception
    assert at.download_button(key="predict_download_keras").label == "Download model (.keras)"
    at.button(key="predict_export_tflite").click().run()
    assert not at.exception and not at.error
    assert any("TFLite float32: top-1 agreement 100.0 %" in s.value for s in at.success)
    text = " ".join(m.value for m in at.markdown)
    assert "**TFLite float32**" in text and ":green[passed]" in text
    assert at.download_button(key="predict_export_download_tflite").label == "Download"

    path = exports.artifact_path(run, "tflite")
    path.write_bytes(b"not a flatbuffer" * 64)
    check_export(run, "tflite")
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    assert not at.exception
    text = " ".join(m.value for m in at.markdown)
    assert ":red[**FAILED its check**]" in text and "could not be loaded" in text
    assert "predict_export_download_tflite" not in [button.key for button in at.download_button]  # not offered


def test_a_mixed_precision_model_exports_as_float32_with_its_weights(tmp_path: Path) -> None:
    import keras

    from carviz.core.config import TrainConfig
    from carviz.ml.export import in_float32, tflite_runner, write_artifact
    from carviz.ml.model import build_model

    config = TrainConfig(backbone="mobilenet", alpha=0.25, weights="none", image_size=32, freeze=47,
                         precision="mixed_bfloat16")
    model, _ = build_model(config, 4)
    keras.mixed_precision.set_global_policy("float32")
    copy = in_float32(model)
    assert copy is not model and {layer.compute_dtype for layer in copy._flatten_layers()} == {"float32"}
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), copy.get_weights()))
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    assert np.allclose(np.asarray(model(x)), np.asarray(copy(x)), atol=0.02)  # bfloat16 rounding only
    path = write_artifact(model, "tflite", tmp_path)  # TFLite cannot convert bfloat16 convolutions: the copy goes
    assert np.allclose(tflite_runner(path)(x), np.asarray(copy(x)), atol=1e-4)
    assert in_float32(copy) is copy
