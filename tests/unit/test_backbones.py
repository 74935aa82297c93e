"""Backbone registry, layer listing (cut points, blocks), the seed's freeze rule and offline weights."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

from carviz.ml import backbones
from carviz.core import config
from carviz.ml.backbones import (
    BACKBONES,
    WeightsUnavailableError,
    apply_freeze,
    build_backbone,
    expected_weights_file,
    first_trainable_layer,
    layers_of,
    list_layers,
    preprocessing_layer,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("CARVIZ_SHARED") or REPO_ROOT.parent / "shared")
SHARED_KERAS_HOME = SHARED / "keras_home"
needs_keras_home = pytest.mark.skipif(
    not (SHARED_KERAS_HOME / "models").is_dir(),
    reason="needs ../shared/keras_home (real ImageNet MobileNet weights), absent here",
)


@pytest.fixture(scope="module")
def mobilenet() -> keras.Model:
    return build_backbone("mobilenet", 224, "none")


@pytest.fixture(scope="module")
def densenet() -> keras.Model:
    return build_backbone("densenet121", 224, "none")


@pytest.fixture(scope="module")
def tiny_mobilenet() -> keras.Model:
    return build_backbone("mobilenet", 32, "none", alpha=0.25)


def _trainable_flags(model: keras.Model) -> list[bool]:
    return [layer.trainable for layer in model.layers]


_OFFLINE_SCRIPT = """
import h5py, numpy as np
from carviz.ml.backbones import WeightsUnavailableError, build_backbone, expected_weights_file
for alpha, size in ((1.0, 224), (0.25, 96)):
    path = expected_weights_file("mobilenet", size, alpha)
    if path.exists():
        model = build_backbone("mobilenet", size, "imagenet", alpha=alpha)
        with h5py.File(path, "r") as f:
            group = f["conv1"]
            kernel = group[group.attrs["weight_names"][0]][()]
        same = np.array_equal(np.array(model.get_layer("conv1").kernel), kernel)
        print("MOBILENET", alpha, path, same)
try:
    build_backbone("resnet50", 64, "imagenet")
except WeightsUnavailableError as exc:
    print("RESNET50", str(exc).replace(chr(10), " "))
else:
    print("RESNET50 no error")
"""


@pytest.fixture(scope="module", autouse=True)
def offline_process(tmp_path_factory: pytest.TempPathFactory):
    """A fresh process (Keras reads KERAS_HOME at import), started first so it runs beside the other tests.

    KERAS_HOME is a writable copy of shared/keras_home (or empty when ../shared is absent): the ImageNet
    MobileNets load from it and ResNet50's file is missing. Downloads go to a closed local port, so they
    fail at once and never wait on (or use) the network.
    """
    keras_home = tmp_path_factory.mktemp("offline") / "keras_home"
    if (SHARED_KERAS_HOME / "models").is_dir():
        shutil.copytree(SHARED_KERAS_HOME, keras_home)
        for path in (keras_home, *keras_home.rglob("*")):
            path.chmod(0o755 if path.is_dir() else 0o644)
    else:
        keras_home.mkdir()
    env = {**os.environ, "KERAS_HOME": str(keras_home), "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        env[var] = "http://127.0.0.1:9"
    for var in ("no_proxy", "NO_PROXY"):
        env.pop(var, None)
    process = subprocess.Popen(
        [sys.executable, "-c", _OFFLINE_SCRIPT], env=env, cwd=REPO_ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    yield keras_home, process
    if process.poll() is None:
        process.kill()
        process.communicate()


@pytest.fixture(scope="module")
def offline_run(offline_process) -> tuple[Path, dict[str, list[str]], str]:
    keras_home, process = offline_process
    try:
        stdout, stderr = process.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("the offline weights check did not finish in 240 s")
    assert process.returncode == 0, stderr[-3000:]
    lines: dict[str, list[str]] = {}
    for line in stdout.splitlines():
        key, _, rest = line.partition(" ")
        lines.setdefault(key, []).append(rest)
    return keras_home, lines, stdout


# ---------------------------------------------------------------- registry


def test_registry_matches_config_and_seed_points() -> None:
    assert tuple(BACKBONES) == config.BACKBONES
    assert BACKBONES["mobilenet"].seed_freeze_points == {47: "conv_pw_7"}
    assert BACKBONES["densenet121"].seed_freeze_points == {144: "conv4_block1_1_conv"}
    assert not BACKBONES["small_cnn"].has_imagenet
    assert all(spec.has_imagenet for name, spec in BACKBONES.items() if name != "small_cnn")


# ---------------------------------------------------------------- freeze rule


def test_mobilenet_freeze_47_is_conv_pw_7(mobilenet: keras.Model) -> None:
    layers = mobilenet.layers
    assert layers[46].name == "conv_pw_7" and type(layers[46]).__name__ == "Conv2D"
    apply_freeze(mobilenet, 47)
    assert first_trainable_layer(mobilenet, 47) == "conv_pw_7"
    assert not any(layer.trainable for layer in layers[:46])
    assert all(layer.trainable for layer in layers[46:])
    assert mobilenet.trainable


def test_densenet_freeze_144_is_conv4_block1_1_conv(densenet: keras.Model) -> None:
    layers = densenet.layers
    assert len(layers) == 427
    # Keras 3 names the seed's "conv4_block1_1" layer conv4_block1_1_conv (the block's 1x1 Conv2D).
    assert layers[143].name == "conv4_block1_1_conv" and type(layers[143]).__name__ == "Conv2D"
    apply_freeze(densenet, 144)
    name = first_trainable_layer(densenet, 144)
    assert name == "conv4_block1_1_conv" and name.startswith("conv4_block1_1")
    assert not any(layer.trainable for layer in layers[:143])
    assert all(layer.trainable for layer in layers[143:])


def test_freeze_extremes(mobilenet: keras.Model) -> None:
    n = len(mobilenet.layers)
    apply_freeze(mobilenet, 1)
    assert all(_trainable_flags(mobilenet))
    assert first_trainable_layer(mobilenet, 1) == mobilenet.layers[0].name
    for index in (n + 1, n + 50):
        apply_freeze(mobilenet, index)
        assert not any(_trainable_flags(mobilenet))
        assert mobilenet.trainable_weights == []
        assert first_trainable_layer(mobilenet, index) is None
    apply_freeze(mobilenet, n)  # only the last layer trains
    assert _trainable_flags(mobilenet) == [False] * (n - 1) + [True]
    for bad in (0, -3):
        with pytest.raises(ValueError):
            apply_freeze(mobilenet, bad)


def test_freeze_batchnorm_false_keeps_frozen_bn_trainable(mobilenet: keras.Model) -> None:
    apply_freeze(mobilenet, 47, freeze_batchnorm=False)
    for layer in mobilenet.layers[:46]:
        is_bn = isinstance(layer, keras.layers.BatchNormalization)
        assert layer.trainable == is_bn, layer.name
    assert all(layer.trainable for layer in mobilenet.layers[46:])
    assert len(mobilenet.get_layer("conv1_bn").trainable_weights) == 2  # gamma and beta learn
    assert not mobilenet.get_layer("conv1").trainable_weights


def test_train_batchnorm_false_freezes_the_trainable_parts_batchnorm_too(mobilenet: keras.Model) -> None:
    apply_freeze(mobilenet, 47, train_batchnorm=False)
    assert not any(layer.trainable for layer in mobilenet.layers[:46])
    for layer in mobilenet.layers[46:]:
        assert layer.trainable != isinstance(layer, keras.layers.BatchNormalization), layer.name
    assert not mobilenet.get_layer("conv_pw_7_bn").trainable_weights
    assert mobilenet.get_layer("conv_pw_7").trainable_weights


@pytest.mark.parametrize("freeze_batchnorm", [True, False])
def test_frozen_batchnorm_statistics(tiny_mobilenet: keras.Model, freeze_batchnorm: bool) -> None:
    """Frozen BN runs in inference mode (moving stats untouched); unfrozen BN updates them in training."""
    apply_freeze(tiny_mobilenet, len(tiny_mobilenet.layers) + 1, freeze_batchnorm=freeze_batchnorm)
    bn = tiny_mobilenet.get_layer("conv1_bn")
    before = np.array(bn.moving_mean)
    x = np.random.default_rng(0).uniform(-1, 1, (4, 32, 32, 3)).astype("float32")
    tiny_mobilenet(x, training=True)
    changed = not np.allclose(before, np.array(bn.moving_mean))
    assert changed == (not freeze_batchnorm)


# ---------------------------------------------------------------- layer listing


def test_list_layers_mobilenet(mobilenet: keras.Model) -> None:
    infos = list_layers("mobilenet", 224)
    assert len(infos) == len(mobilenet.layers) == 86
    assert [info.index for info in infos] == list(range(1, 87))
    assert infos[0].type == "InputLayer" and infos[0].output_shape == "(None, 224, 224, 3)"
    assert infos[46].name == "conv_pw_7"
    assert all(info.is_cut_point for info in infos)  # plain sequential network
    by_name = {info.name: info for info in infos}
    assert by_name["conv1"].is_conv and by_name["conv1"].output_shape == "(None, 112, 112, 32)"
    assert by_name["conv_dw_1"].is_conv and by_name["conv_dw_1"].type == "DepthwiseConv2D"
    assert not by_name["conv1_bn"].is_conv and by_name["conv1_bn"].type == "BatchNormalization"
    assert by_name["conv1"].params == 3 * 3 * 3 * 32
    assert sum(info.params for info in infos) == mobilenet.count_params()
    assert by_name["conv1"].block == "stem"
    assert by_name["conv_dw_7"].block == by_name["conv_pw_7_relu"].block == "block_7"
    assert by_name["conv_dw_7"].block_start and by_name["conv_pw_7_relu"].block_end
    assert by_name["conv_pad_2"].block_start and by_name["conv_pad_2"].block == "block_2"
    _check_block_boundaries(infos)


def _check_block_boundaries(infos: list[backbones.LayerInfo]) -> None:
    """Each block is one contiguous run: starts exactly where the block changes, ends before the next start."""
    for i, info in enumerate(infos):
        assert info.block_start == (i == 0 or infos[i - 1].block != info.block)
        assert info.block_end == (i == len(infos) - 1 or infos[i + 1].block != info.block)
    starts = [info.block for info in infos if info.block_start]
    assert len(starts) == len(set(starts)), "a block appears in two separate runs"


def test_list_layers_is_memoised_and_copies() -> None:
    first = list_layers("mobilenet", 224)
    first.clear()
    started = time.perf_counter()
    again = list_layers("mobilenet", 224)
    assert time.perf_counter() - started < 0.05
    assert len(again) == 86
    assert list_layers("mobilenet") == again  # default_size is 224


def test_resnet50_cut_points_and_blocks() -> None:
    infos = list_layers("resnet50", 64)
    by_name = {info.name: info for info in infos}
    assert infos[0].type == "InputLayer" and infos[0].is_cut_point
    assert not by_name["conv2_block1_1_conv"].is_cut_point  # the shortcut jumps over it
    assert not by_name["conv2_block1_0_conv"].is_cut_point
    assert by_name["conv2_block1_add"].is_cut_point and by_name["conv2_block1_out"].is_cut_point
    assert by_name["pool1_pool"].is_cut_point and by_name["conv5_block3_out"].is_cut_point
    assert by_name["conv2_block1_1_conv"].block == "conv2_block1"
    assert by_name["conv2_block1_1_conv"].block_start and by_name["conv2_block1_out"].block_end
    assert by_name["conv1_conv"].block == "stem"
    cut_names = [info.name for info in infos if info.is_cut_point and info.block != "stem"]
    assert cut_names == [f"conv{s}_block{b}_{kind}" for s, n in ((2, 3), (3, 4), (4, 6), (5, 3))
                         for b in range(1, n + 1) for kind in ("add", "out")]
    _check_block_boundaries(infos)


def test_densenet_cut_points_fast(densenet: keras.Model) -> None:
    started = time.perf_counter()
    infos = layers_of(densenet)
    assert time.perf_counter() - started < 1.0
    by_name = {info.name: info for info in infos}
    assert infos[143].name == "conv4_block1_1_conv" and not infos[143].is_cut_point
    assert by_name["conv4_block1_concat"].is_cut_point and by_name["pool3_pool"].is_cut_point
    assert not by_name["conv4_block1_0_bn"].is_cut_point
    assert by_name["pool3_conv"].block == "pool3" and by_name["bn"].block == "top"
    assert by_name["conv4_block1_1_conv"].block == "conv4_block1"
    _check_block_boundaries(infos)


@pytest.mark.parametrize("name", ["mobilenetv2", "efficientnetb0", "small_cnn"])
def test_list_layers_other_backbones(name: str) -> None:
    infos = list_layers(name, 32, 0.35 if name == "mobilenetv2" else 1.0)
    assert infos[0].index == 1 and infos[0].type == "InputLayer"
    assert infos[0].block == "stem" and infos[-1].is_cut_point
    assert any(info.is_conv for info in infos)
    _check_block_boundaries(infos)
    if name == "small_cnn":
        assert [info.type for info in infos] == ["InputLayer"] + ["Conv2D", "MaxPooling2D"] * 3
        assert all(info.is_cut_point for info in infos)
        assert infos[-1].output_shape == "(None, 4, 4, 128)"
    if name == "mobilenetv2":
        by_name = {info.name: info for info in infos}
        assert not by_name["block_2_project"].is_cut_point and by_name["block_2_add"].is_cut_point
        assert by_name["block_2_add"].block == "block_2" and by_name["out_relu"].block == "top"


# ---------------------------------------------------------------- preprocessing


@pytest.mark.parametrize(
    "name, reference",
    [
        ("mobilenet", keras.applications.mobilenet.preprocess_input),
        ("mobilenetv2", keras.applications.mobilenet_v2.preprocess_input),
        ("resnet50", keras.applications.resnet50.preprocess_input),
        ("densenet121", keras.applications.densenet.preprocess_input),
        ("efficientnetb0", keras.applications.efficientnet.preprocess_input),
        ("small_cnn", lambda x: x / 255.0),
    ],
)
def test_preprocessing_layer_matches_keras(name: str, reference) -> None:
    x = np.random.default_rng(1).uniform(0, 255, (2, 5, 5, 3)).astype("float32")
    layer = preprocessing_layer(name)
    expected = reference(x.copy())
    np.testing.assert_allclose(np.array(layer(x)), expected, rtol=1e-5, atol=1e-4)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    np.testing.assert_allclose(np.array(restored(x)), expected, rtol=1e-5, atol=1e-4)


# ---------------------------------------------------------------- weights


def test_expected_weights_file_names() -> None:
    from keras.src.backend import config as keras_config

    models = Path(os.path.expanduser(keras_config.keras_home())) / "models"
    cases = {
        ("mobilenet", 224, 1.0): "mobilenet_1_0_224_tf_no_top.h5",
        ("mobilenet", 224, 0.25): "mobilenet_2_5_224_tf_no_top.h5",
        ("mobilenet", 96, 0.25): "mobilenet_2_5_224_tf_no_top.h5",  # Keras falls back to 224
        ("mobilenet", 160, 0.5): "mobilenet_5_0_160_tf_no_top.h5",
        ("mobilenetv2", 224, 1.0): "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
        ("mobilenetv2", 96, 0.35): "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5",
        ("mobilenetv2", 64, 1.0): "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
        ("resnet50", 64, 1.0): "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        ("densenet121", 224, 1.0): "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
        ("efficientnetb0", 224, 1.0): "efficientnetb0_notop.h5",
    }
    for (name, size, alpha), file_name in cases.items():
        path = expected_weights_file(name, size, alpha)
        assert path.name == file_name
        if os.access(models.parent, os.W_OK):
            assert path.parent == models
    with pytest.raises(ValueError):
        expected_weights_file("mobilenet", 224, 0.3)
    with pytest.raises(ValueError):
        expected_weights_file("small_cnn", 224)


def test_build_backbone_rejects_bad_requests(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no ImageNet"):
        build_backbone("small_cnn", 32, "imagenet")
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("vgg16", 32, "none")
    with pytest.raises(FileNotFoundError):
        build_backbone("small_cnn", 32, str(tmp_path / "missing.weights.h5"))


@pytest.mark.filterwarnings("ignore:Skipping nested container")  # from the deliberately wrong file
def test_weights_from_files_round_trip(tmp_path: Path) -> None:
    from keras.src.legacy.saving import legacy_h5_format

    source = build_backbone("mobilenet", 32, "none", alpha=0.25)
    new_path = tmp_path / "backbone.weights.h5"
    source.save_weights(new_path)
    legacy_path = tmp_path / "backbone.h5"
    with h5py.File(legacy_path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, source)
    for path in (new_path, legacy_path):
        loaded = build_backbone("mobilenet", 32, str(path), alpha=0.25)
        for a, b in zip(source.weights, loaded.weights):
            np.testing.assert_array_equal(np.array(a), np.array(b))
    small = build_backbone("small_cnn", 32, "none")
    wrong = tmp_path / "small.weights.h5"
    small.save_weights(wrong)
    with pytest.raises(ValueError, match="does not fit"):
        build_backbone("mobilenet", 32, str(wrong), alpha=0.25)
    with pytest.raises(ValueError, match="does not fit"):
        build_backbone("small_cnn", 32, str(legacy_path))


@needs_keras_home
def test_real_mobilenet_h5_loads_from_a_path() -> None:
    path = SHARED_KERAS_HOME / "models" / "mobilenet_2_5_224_tf_no_top.h5"
    model = build_backbone("mobilenet", 64, str(path), alpha=0.25)
    with h5py.File(path, "r") as f:
        group = f["conv1"]
        kernel = group[group.attrs["weight_names"][0]][()]
    np.testing.assert_array_equal(np.array(model.get_layer("conv1").kernel), kernel)


@needs_keras_home
def test_offline_imagenet_mobilenet_weights_from_keras_home(offline_run) -> None:
    keras_home, lines, _ = offline_run
    models = keras_home / "models"
    assert lines["MOBILENET"] == [
        f"1.0 {models / 'mobilenet_1_0_224_tf_no_top.h5'} True",
        f"0.25 {models / 'mobilenet_2_5_224_tf_no_top.h5'} True",  # 96 px falls back to the 224 file
    ]


def test_offline_imagenet_missing_file_raises_clear_error(offline_run) -> None:
    keras_home, lines, stdout = offline_run
    assert len(lines.get("RESNET50", [])) == 1, stdout
    message = lines["RESNET50"][0]
    assert "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5" in message
    assert str(keras_home / "models") in message
    assert "internet" in message
    assert not any((keras_home / "models").glob("resnet50*"))
    assert issubclass(WeightsUnavailableError, RuntimeError)
