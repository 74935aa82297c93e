"""Frozen-feature cache: cut points, model split equals the whole model, cache keys, the on-disk LRU cache."""

from __future__ import annotations

import os
from pathlib import Path

import keras
import numpy as np
import pytest

from carviz.ml import backbones
from carviz.core.config import TrainConfig
from carviz.core.feature_cache import FeatureCache, cache_key
from carviz.ml.features import (
    cut_point_for,
    frozen_extractor,
    trainable_remainder,
)
from carviz.ml.model import build_model

MOBILENET = TrainConfig(backbone="mobilenet", alpha=0.25, weights="none", image_size=64, precision="float32")
SMALL_CNN = TrainConfig(backbone="small_cnn", weights="none", image_size=32, head="seed", precision="float32")
FREEZES = (1, 20, 47, "all")


@pytest.fixture(autouse=True)
def float32_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


def _images(size: int, n: int = 4) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (n, size, size, 3)).astype("float32")


def _split(config: TrainConfig) -> tuple[keras.Model, keras.Model, keras.Model, int]:
    model, summary = build_model(config, num_classes=3)
    layers = backbones.layers_of(model.get_layer("backbone"))
    cut = cut_point_for(layers, summary.freeze_index)
    return model, frozen_extractor(model, cut), trainable_remainder(model, cut), cut


@pytest.mark.parametrize(
    "config", [MOBILENET, SMALL_CNN, MOBILENET.replace(head="seed")], ids=["mobilenet", "small_cnn", "mobilenet-seed"]
)
def test_split_model_equals_whole_model(config: TrainConfig) -> None:
    x = _images(config.image_size)
    for freeze in FREEZES:
        model, extractor, remainder, cut = _split(config.replace(freeze=freeze))
        whole = np.array(model(x, training=False))
        split = np.array(remainder(extractor(x, training=False), training=False))
        assert np.allclose(split, whole, atol=1e-5), (config.backbone, freeze, cut)


def test_training_the_remainder_trains_the_original_layers_only() -> None:
    model, extractor, remainder, cut = _split(MOBILENET.replace(freeze=20, head="seed"))
    backbone = model.get_layer("backbone")
    assert cut == 19
    frozen = [w for layer in backbone.layers[:19] for w in layer.weights]  # freeze 20: layers 1..19 frozen
    frozen_before = [np.array(w) for w in frozen]
    trainable_before = [np.array(w) for w in model.trainable_weights]
    assert len(remainder.trainable_weights) == len(model.trainable_weights)
    assert {id(w) for w in remainder.trainable_weights} == {id(w) for w in model.trainable_weights}

    features = np.array(extractor(_images(64), training=False))
    labels = keras.utils.to_categorical(np.arange(4) % 3, 3)
    remainder.compile(optimizer=keras.optimizers.SGD(0.1), loss="categorical_crossentropy")
    remainder.train_on_batch(features, labels)

    assert all(np.array_equal(b, np.array(w)) for b, w in zip(frozen_before, frozen))
    changed = [not np.array_equal(b, np.array(w)) for b, w in zip(trainable_before, model.trainable_weights)]
    assert all(changed)
    assert not any(layer.trainable_weights for layer in backbone.layers[:cut])


def test_extractor_refuses_trainable_layers_before_the_cut() -> None:
    model, _ = build_model(MOBILENET.replace(freeze=20, freeze_batchnorm=False), num_classes=3)
    with pytest.raises(ValueError, match="trainable"):
        frozen_extractor(model, 19)


def test_cut_point_for_mobilenet_is_the_layer_before_the_freeze_index() -> None:
    layers = backbones.list_layers("mobilenet", 64, 0.25)
    assert all(info.is_cut_point for info in layers)
    for freeze in (2, 20, 47, len(layers) + 1):
        assert cut_point_for(layers, freeze) == freeze - 1
    assert cut_point_for(layers, 1) == 1


def test_cut_point_for_resnet_lands_on_a_block_boundary() -> None:
    layers = backbones.list_layers("resnet50", 64)
    for freeze in (10, 50, 100, 150, len(layers) + 1):
        cut = cut_point_for(layers, freeze)
        assert cut <= freeze - 1
        assert layers[cut - 1].is_cut_point
        assert not any(info.is_cut_point for info in layers[cut : freeze - 1])
    # Inside a residual block the nearest cut is the block's output (its "_out" activation).
    assert layers[cut_point_for(layers, 50) - 1].name.endswith("_out")


def test_cache_key_changes_with_every_ingredient(tmp_path: Path) -> None:
    weights = tmp_path / "w.weights.h5"
    weights.write_bytes(b"one")
    base = dict(backbone="mobilenet", weights="imagenet", alpha=1.0, image_size=224, head="recommended",
                cut_layer_name="conv_pw_7_relu", dataset_fingerprint="abc", dtype="float32")
    key = cache_key(**base)
    assert key == cache_key(**base) and len(key) == 64
    variants = [
        {"weights": "none"}, {"weights": str(weights)}, {"alpha": 0.5}, {"image_size": 160}, {"head": "seed"},
        {"cut_layer_name": "conv_pw_6_relu"}, {"dataset_fingerprint": "abd"}, {"dtype": "float16"},
        {"backbone": "mobilenetv2"},
    ]
    keys = {cache_key(**{**base, **change}) for change in variants}
    assert key not in keys and len(keys) == len(variants)
    before = cache_key(**{**base, "weights": str(weights)})
    weights.write_bytes(b"two")  # same size, new content
    assert cache_key(**{**base, "weights": str(weights)}) != before
    with pytest.raises(ValueError):
        cache_key(**{**base, "dtype": "int8"})


def test_feature_cache_round_trip_and_float16(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path / "cache", max_bytes=10_000_000)
    features = np.random.default_rng(1).normal(size=(10, 4, 4, 8)).astype("float32")
    labels = np.arange(10) % 3
    assert cache.get("a" * 64) is None
    assert cache.put("a" * 64, features, labels, {"backbone": "mobilenet"})
    got_features, got_labels = cache.get("a" * 64)
    assert np.array_equal(got_features, features) and np.array_equal(got_labels, labels)
    assert cache.entries()[0].meta["backbone"] == "mobilenet"

    cache.put("b" * 64, features, labels, {}, dtype="float16")
    half = next(e for e in cache.entries() if e.key == "b" * 64)
    full = next(e for e in cache.entries() if e.key == "a" * 64)
    assert cache.get("b" * 64)[0].dtype == np.float16
    assert np.allclose(cache.get("b" * 64)[0], features, atol=1e-2)
    feature_bytes = lambda key: (cache.path_for(key) / "features.npy").stat().st_size - 128  # noqa: E731 (npy header)
    assert feature_bytes("b" * 64) * 2 == feature_bytes("a" * 64)
    assert half.bytes < full.bytes
    assert cache.size_bytes() == half.bytes + full.bytes
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]  # no temp folders left
    with pytest.raises(ValueError):
        cache.path_for("../escape")


def test_feature_cache_evicts_least_recently_used_first(tmp_path: Path) -> None:
    features = np.zeros((100, 10), dtype="float32")  # 4,000 bytes of data
    labels = np.zeros(100, dtype="int64")
    one = features.nbytes + labels.nbytes + 2_000  # an entry with headers and meta.json, generously
    cache = FeatureCache(tmp_path, max_bytes=3 * one)
    keys = [c * 64 for c in "abc"]
    for i, key in enumerate(keys):
        cache.put(key, features, labels, {})
        os.utime(cache.path_for(key) / "meta.json", (1000 + i, 1000 + i))  # deterministic ages
    assert cache.get(keys[0]) is not None  # a is used again: b is now the oldest
    cache.put("d" * 64, features, labels, {})
    remaining = {e.key for e in cache.entries()}
    assert keys[1] not in remaining and {keys[0], keys[2], "d" * 64} <= remaining
    assert cache.size_bytes() <= cache.max_bytes
    assert cache.evict(0) and cache.size_bytes() == 0
    assert not cache.put("e" * 64, np.zeros((10_000, 10), dtype="float32"), np.zeros(10_000), {})  # too big


def test_split_of_a_branchy_backbone_equals_whole_model() -> None:
    config = TrainConfig(backbone="resnet50", weights="none", image_size=32, freeze=50, precision="float32")
    model, extractor, remainder, cut = _split(config)
    assert cut < 49  # inside a residual block: the cut falls back to the previous block's output
    x = _images(32, n=2)
    whole = np.array(model(x, training=False))
    assert np.allclose(np.array(remainder(extractor(x, training=False), training=False)), whole, atol=1e-5)
    with pytest.raises(ValueError, match="not a cut point"):
        trainable_remainder(model, 49)
