"""build_model: both heads, freeze accounting, precision policy, optimizers and the .keras round trip."""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np
import pytest

from carviz.core.config import TrainConfig
from carviz.ml.model import ModelSummary, build_model, choose_precision, make_optimizer, resolve_precision

TINY = TrainConfig(backbone="mobilenet", alpha=0.25, weights="none", image_size=64, precision="float32")
SMALL_CNN = TrainConfig(backbone="small_cnn", weights="none", image_size=32, head="seed", precision="float32")


@pytest.fixture(autouse=True)
def float32_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


def _images(size: int, n: int = 4) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (n, size, size, 3)).astype("float32")


def _labels(n: int = 4, classes: int = 3) -> np.ndarray:
    return keras.utils.to_categorical(np.arange(n) % classes, classes)


def _predict(model: keras.Model, x: np.ndarray) -> np.ndarray:
    return np.array(model(x, training=False))  # eager: no tf.function tracing, fast for tiny batches


def _size(weights) -> int:
    return sum(math.prod(w.shape) for w in weights)


# ---------------------------------------------------------------- precision and optimizers


def test_resolve_precision() -> None:
    assert resolve_precision("auto", on_gpu=True) == "mixed_float16"
    assert resolve_precision("auto", on_gpu=False) == "float32"
    assert resolve_precision("auto", on_gpu=False, cpu_has_bf16=True) == "float32"  # bf16 only when chosen
    for explicit in ("float32", "mixed_float16", "mixed_bfloat16"):
        assert resolve_precision(explicit, on_gpu=False) == explicit
        assert resolve_precision(explicit, on_gpu=True) == explicit
    with pytest.raises(ValueError):
        resolve_precision("float16", on_gpu=True)


def test_auto_precision_says_what_it_chose_and_why(monkeypatch: pytest.MonkeyPatch) -> None:
    from carviz.ml import model as model_module

    assert model_module.cpu_has_native_bf16("flags\t\t: fpu avx512f avx512_bf16 fma\n")
    assert not model_module.cpu_has_native_bf16("flags\t\t: fpu avx2 fma\n")
    assert choose_precision("auto", on_gpu=True) == ("mixed_float16", "auto: float16 mixed precision on a GPU")
    assert choose_precision("auto", False, "resnet50", cpu_bf16=False)[0] == "float32"
    monkeypatch.setattr(model_module, "CPU_BF16_BACKBONES", frozenset({"resnet50"}))
    used, reason = choose_precision("auto", False, "resnet50", cpu_bf16=True)
    assert used == "mixed_bfloat16" and "natively" in reason
    used, reason = choose_precision("auto", False, "mobilenet", cpu_bf16=True)
    assert used == "float32" and "no faster for mobilenet" in reason
    assert choose_precision("float32", False, "resnet50", cpu_bf16=True) == ("float32", "set in the run's config")


def test_make_optimizer() -> None:
    adam = make_optimizer("adam", 1e-4)
    assert isinstance(adam, keras.optimizers.Adam)
    assert float(adam.learning_rate) == pytest.approx(1e-4)
    sgd = make_optimizer("sgd", 0.01)
    assert isinstance(sgd, keras.optimizers.SGD) and sgd.momentum == pytest.approx(0.9)
    assert isinstance(make_optimizer("rmsprop", 1e-3), keras.optimizers.RMSprop)
    with pytest.raises(ValueError):
        make_optimizer("adagrad", 1e-3)


# ---------------------------------------------------------------- the two heads


def test_recommended_head_graph_and_freeze_accounting() -> None:
    model, summary = build_model(TINY.replace(freeze=20), num_classes=3)
    assert [layer.name for layer in model.layers[:3]] == ["image", "preprocess", "backbone"]
    assert type(model.layers[1]).__name__ == "Preprocess" and model.layers[1].mode == "tf"
    backbone = model.get_layer("backbone")
    assert isinstance(backbone, keras.Model)
    assert summary == ModelSummary(
        backbone_layers=len(backbone.layers),
        freeze_index=20,
        first_trainable=backbone.layers[19].name,
        trainable_params=summary.trainable_params,
        non_trainable_params=summary.non_trainable_params,
        precision="float32",
    )
    assert not any(layer.trainable for layer in backbone.layers[:19])
    assert all(layer.trainable for layer in backbone.layers[19:])
    # Independent count: variables of layers 20.. that are trainable by nature (not BN moving stats) + the head.
    head = 3 * backbone.output.shape[-1] + 3
    expected = sum(_size([w for w in layer.weights if w.trainable]) for layer in backbone.layers[19:]) + head
    assert summary.trainable_params == expected
    assert summary.trainable_params + summary.non_trainable_params == model.count_params()

    probs = _predict(model, _images(64))
    assert probs.shape == (4, 3) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_freeze_all_trains_only_the_head() -> None:
    model, summary = build_model(TINY.replace(image_size=32, freeze="all"), num_classes=4)
    assert summary.freeze_index == summary.backbone_layers + 1 and summary.first_trainable is None
    assert summary.trainable_params == 4 * model.get_layer("backbone").output.shape[-1] + 4
    whole, everything = build_model(TINY.replace(image_size=32, freeze=1), num_classes=4)
    assert everything.first_trainable == whole.get_layer("backbone").layers[0].name
    assert everything.trainable_params > summary.trainable_params


def test_freeze_batchnorm_false_counts_frozen_bn_as_trainable() -> None:
    _, frozen_bn = build_model(TINY.replace(image_size=32, freeze="all"), num_classes=3)
    model, free_bn = build_model(TINY.replace(image_size=32, freeze="all", freeze_batchnorm=False), num_classes=3)
    bn_gamma_beta = sum(
        _size(layer.trainable_weights)
        for layer in model.get_layer("backbone").layers
        if isinstance(layer, keras.layers.BatchNormalization)
    )
    assert bn_gamma_beta > 0
    assert free_bn.trainable_params == frozen_bn.trainable_params + bn_gamma_beta


@pytest.mark.parametrize("size", [32, 64])
def test_seed_head(size: int) -> None:
    model, summary = build_model(SMALL_CNN.replace(image_size=size, freeze=4), num_classes=3)
    names = [layer.name for layer in model.layers]
    assert names[:3] == ["image", "rescale", "backbone"] and "preprocess" not in names
    assert model.get_layer("rescale").scale == pytest.approx(1 / 255)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [layer.filters for layer in convs] == [16, 32, 64]
    assert all(layer.rate == pytest.approx(0.2) for layer in model.layers if isinstance(layer, keras.layers.Dropout))
    assert model.get_layer("head_dense").units == 128
    assert summary.first_trainable == "block2_conv"
    probs = _predict(model, _images(size))
    assert probs.shape == (4, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_seed_head_on_a_1x1_feature_map() -> None:
    model, _ = build_model(TINY.replace(image_size=32, head="seed", freeze=47), num_classes=3)
    assert model.get_layer("backbone").output.shape[1:3] == (1, 1)
    assert _predict(model, _images(32, 2)).shape == (2, 3)


# ---------------------------------------------------------------- save / load


def _assert_round_trip(model: keras.Model, x: np.ndarray, path: Path) -> keras.Model:
    model.save(path)
    loaded = keras.saving.load_model(path)  # no custom_objects: carviz layers are registered
    np.testing.assert_allclose(_predict(loaded, x), _predict(model, x), rtol=1e-6, atol=1e-6)
    original, restored = model.get_layer("backbone"), loaded.get_layer("backbone")
    weighted = [(a, b) for a, b in zip(original.layers, restored.layers) if a.weights]
    assert [a.trainable for a, _ in weighted] == [b.trainable for _, b in weighted]
    assert _size(loaded.trainable_weights) == _size(model.trainable_weights)
    return loaded


def test_keras_round_trip_after_training(tmp_path: Path) -> None:
    model, _ = build_model(SMALL_CNN.replace(freeze=4), num_classes=3)
    x = _images(32)
    model.train_on_batch(x, _labels())  # the optimizer's state is saved and restored too
    loaded = _assert_round_trip(model, x, tmp_path / "model.keras")
    loaded.train_on_batch(x, _labels())  # still trainable after loading


@pytest.mark.parametrize("backbone", ["mobilenet", "small_cnn"])
def test_keras_round_trip_with_preprocessing(backbone: str, tmp_path: Path) -> None:
    model, _ = build_model(TINY.replace(backbone=backbone, image_size=32, freeze=30), num_classes=3)
    model.optimizer.build(model.trainable_variables)  # as after training, without paying for a train step
    loaded = _assert_round_trip(model, _images(32, 2), tmp_path / "model.keras")
    assert type(loaded.get_layer("preprocess")).__name__ == "Preprocess"


# ---------------------------------------------------------------- mixed precision and compile options


def test_mixed_bfloat16_outputs_float32() -> None:
    model, summary = build_model(TINY.replace(image_size=32, precision="mixed_bfloat16"), num_classes=3)
    assert summary.precision == "mixed_bfloat16"
    assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    assert model.get_layer("backbone").get_layer("conv1").compute_dtype == "bfloat16"
    assert model.get_layer("preprocess").compute_dtype == "float32"
    assert model.output.dtype == "float32"
    probs = _predict(model, _images(32, 2))
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-3)


def test_float32_resets_the_policy_and_auto_picks_mixed_float16_on_gpu() -> None:
    _, gpu_summary = build_model(TINY.replace(image_size=32, precision="auto"), num_classes=3, on_gpu=True)
    assert gpu_summary.precision == "mixed_float16"
    assert keras.mixed_precision.global_policy().name == "mixed_float16"
    model, summary = build_model(TINY.replace(image_size=32, precision="float32", jit_compile=True), num_classes=3)
    assert summary.precision == "float32"
    assert keras.mixed_precision.global_policy().name == "float32"
    assert model.get_layer("backbone").get_layer("conv1").compute_dtype == "float32"
    assert model.jit_compile is True
    _, cpu_summary = build_model(TINY.replace(image_size=32, precision="auto"), num_classes=3)
    assert cpu_summary.precision == choose_precision("auto", False, TINY.backbone)[0]  # this CPU's choice
    keras.mixed_precision.set_global_policy("float32")


def test_rejects_fewer_than_two_classes() -> None:
    with pytest.raises(ValueError):
        build_model(TINY, num_classes=1)
