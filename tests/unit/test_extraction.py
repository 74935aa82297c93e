"""The feature pass's engines: when TFLite (XNNPACK) is planned, that it computes what Keras computes, its fallback,
and that runs record it and share float32 features across precisions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from carviz.core import store as runs
from carviz.core.config import TrainConfig
from carviz.core.run_info import RunInfo
from carviz.data import datasets
from carviz.ml import extraction, features, train
from carviz.core import feature_cache
from carviz.ml.model import build_model
from carviz.views.cache_report import run_line

pytestmark = pytest.mark.slow  # trains real models: scheduled first (tests/conftest.py)

TINY = TrainConfig(dataset="demo", backbone="mobilenet", alpha=0.25, weights="none", image_size=32, epochs=1,
                   batch_size=8, learning_rate=1e-3, freeze=71, precision="float32")


def test_the_plan_picks_tflite_only_for_large_passes_of_backbones_measured_faster_on_a_cpu(
        monkeypatch: pytest.MonkeyPatch) -> None:
    many = extraction.MIN_TFLITE_PIXELS // 224**2
    assert extraction.plan("mobilenet", many, 224, "auto", on_gpu=False).engine == "tflite"
    assert extraction.plan("mobilenetv2", many, 224, "auto", on_gpu=False).engine == "tflite"
    assert "too few" in extraction.plan("mobilenet", many - 1, 224, "auto", on_gpu=False).reason
    assert extraction.plan("mobilenet", 4 * many, 112, "auto", on_gpu=False).engine == "tflite"  # pixels count
    assert extraction.plan("resnet50", 10 * many, 224, "auto", on_gpu=False).engine == "keras"
    assert extraction.plan("mobilenet", 10 * many, 224, "auto", on_gpu=True).engine == "keras"
    assert extraction.plan("mobilenet", 10 * many, 224, "keras", on_gpu=False).engine == "keras"
    assert extraction.plan("resnet50", 1, 32, "tflite", on_gpu=False).engine == "tflite"
    assert extraction.plan("resnet50", 1, 32, "tflite", on_gpu=True).engine == "keras"
    tflite, keras_plan = extraction.Plan("tflite", ""), extraction.Plan("keras", "")
    assert extraction.features_precision(tflite, "mixed_bfloat16") == "float32"
    assert extraction.features_precision(keras_plan, "mixed_bfloat16") == "mixed_bfloat16"
    monkeypatch.setenv(extraction.ENGINE_ENV, "fast")
    with pytest.raises(ValueError, match="must be one of"):
        extraction.engine_setting()


def _part(precision: str = "float32"):  # noqa: ANN202 - a keras.Model
    model, _ = build_model(TINY.replace(precision=precision), 3)
    position = features.cache_position(model, 47)
    return features.submodel(model, features.IMAGE, position, also=[position - 6, position - 3])


def test_the_tflite_engine_gives_the_keras_outputs_in_order() -> None:
    part = _part()
    x = np.random.default_rng(1).uniform(0, 255, (5, 32, 32, 3)).astype("float32")
    tflite = extraction.extractor(part, extraction.Plan("tflite", ""), "float32")
    keras_engine = extraction.extractor(part, extraction.Plan("keras", ""), "float32")
    assert tflite.engine == "tflite" and "XNNPACK" in tflite.note and keras_engine.note == "Keras"
    got, want = tflite(x), keras_engine(x)
    assert [a.shape for a in got] == [a.shape for a in want] == [(5, *o.shape[1:]) for o in part.outputs]
    for a, b in zip(got, want):
        assert np.abs(a - b).max() <= 1e-4 * np.abs(b).max()
    assert [a.shape for a in tflite(x[:2])] == [(2, *a.shape[1:]) for a in want]  # another batch size


def test_a_mixed_precision_part_is_extracted_in_float32_by_either_engine() -> None:
    from carviz.ml.export import in_float32

    bf16 = _part("mixed_bfloat16")
    x = np.random.default_rng(2).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    want = [np.asarray(v) for v in in_float32(bf16)(x, training=False)]  # the float32 twin, same weights
    for engine in ("tflite", "keras"):
        got = extraction.extractor(bf16, extraction.Plan(engine, ""), "float32")(x)
        assert all(a.dtype == np.float32 for a in got)
        for a, b in zip(got, want):
            assert np.abs(a - b).max() <= 1e-4 * np.abs(b).max()
    kept = extraction.extractor(bf16, extraction.Plan("keras", ""), "mixed_bfloat16")(x)  # bfloat16 rounding
    assert any(np.abs(a - b).max() > 1e-4 * np.abs(b).max() for a, b in zip(kept, want))


def test_a_copy_that_cannot_be_converted_falls_back_to_keras_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    import tensorflow as tf

    def refuse(folder: str) -> None:
        raise RuntimeError("converter refused")

    monkeypatch.setattr(tf.lite.TFLiteConverter, "from_saved_model", refuse)
    part = _part()
    x = np.random.default_rng(3).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    used = extraction.extractor(part, extraction.Plan("tflite", ""), "float32")
    assert used.engine == "keras" and "converter refused" in used.note
    for a, b in zip(used(x), part(x, training=False)):
        assert np.allclose(a, np.asarray(b), atol=1e-6)


@pytest.fixture
def demo_home(carviz_home: Path) -> Path:
    datasets.generate_demo_dataset(carviz_home / "data" / "demo", per_class=6, image_size=32)
    return carviz_home


def _train(config: TrainConfig) -> dict:
    run = runs.create_run(config)
    assert train.train(run) == runs.Status.SUCCEEDED, run.log_tail()
    return run.info()["feature_cache"]


def test_runs_record_the_engine_and_share_tflite_features_across_precisions(
        demo_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(extraction.ENGINE_ENV, "tflite")
    first = _train(TINY)
    assert first["source"] == "computed from the images" and "TFLite" in first["engine"]
    assert first["computed_in"] == "float32"
    assert "features (computed from the images, by TFLite (XNNPACK, float32" in run_line(RunInfo.read({"feature_cache": first}))
    bf16 = _train(TINY.replace(precision="mixed_bfloat16"))
    assert bf16["source"] == "cache hit" and bf16["key"] == first["key"] and "engine" not in bf16
    monkeypatch.setenv(extraction.ENGINE_ENV, "keras")
    own = _train(TINY.replace(precision="mixed_bfloat16"))  # Keras computes bfloat16 features: another entry
    assert own["key"] != first["key"] and own["computed_in"] == "mixed_bfloat16" and own["engine"] == "Keras"
    # The TFLite features equal those Keras computes in float32 (in a cache of their own).
    tflite_stored = _stored(first["key"])
    monkeypatch.setenv("CARVIZ_CACHE", str(demo_home / "keras-cache"))
    keras_first = _train(TINY)
    assert keras_first["key"] == first["key"] and keras_first["engine"] == "Keras"
    keras_stored = _stored(first["key"])
    assert tflite_stored.shape == keras_stored.shape and len(tflite_stored) == 4 * 6  # demo: 4 classes x 6
    assert np.abs(tflite_stored - keras_stored).max() <= 1e-4 * np.abs(keras_stored).max()


def _stored(key: str) -> np.ndarray:
    cache = feature_cache.FeatureCache(feature_cache.cache_root(), feature_cache.load_settings().max_bytes)
    found = cache.get(key)
    assert found is not None
    return np.array(found[0])
