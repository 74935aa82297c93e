"""Training on cached frozen features: same results as on images, reuse across runs, fallbacks, resume."""

from __future__ import annotations

import threading
from pathlib import Path

import keras
import numpy as np
import pytest

from carviz.data import datasets
from carviz.ml import checkpoints, features
from carviz.core import feature_cache
from carviz.core import store as runs
from carviz.ml import train
from carviz.core.config import Augmentation, TrainConfig
from carviz.ml.model import build_model

pytestmark = pytest.mark.slow  # trains real models: scheduled first (tests/conftest.py)

TINY = TrainConfig(dataset="demo", backbone="mobilenet", alpha=0.25, weights="none", image_size=32, epochs=2,
                   batch_size=8, learning_rate=1e-3, freeze=71, precision="float32")


@pytest.fixture
def demo_home(carviz_home: Path) -> Path:
    datasets.generate_demo_dataset(carviz_home / "data" / "demo", per_class=8, image_size=32)
    return carviz_home


def _train(config: TrainConfig, stop_after_epoch: int | None = None) -> runs.Run:
    run = runs.create_run(config)
    callbacks = []
    stop_flag = threading.Event()
    if stop_after_epoch is not None:
        class StopAfter(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                if epoch + 1 == stop_after_epoch:
                    stop_flag.set()  # the recorder raises StopRequested at the next epoch's start
        callbacks.append(StopAfter())
    status = train.train(run, stop_flag, extra_callbacks=callbacks)
    expected = runs.Status.STOPPED if stop_after_epoch is not None else runs.Status.SUCCEEDED
    assert status == expected, run.log_tail()
    return run


def _cache_info(run: runs.Run) -> dict:
    return run.info()["feature_cache"]


def _losses(run: runs.Run) -> np.ndarray:
    return np.array([[row["loss"], row["val_loss"], row["val_accuracy"]] for row in run.metrics()])


# Where the trainable part's BatchNorm layers train on batch statistics, small batches of this random-weights
# backbone's features (about 1e-7) turn last-bit differences into visible ones within a few steps: a CPU whose
# convolutions round differently with the batch size (AMD EPYC without AVX-512: features from the feature pass and
# from the frozen layers inside fit differ at 1e-14) moved the second epoch's loss by 0.5 %. With inference-mode
# BatchNorm the two paths agreed to 1e-4 there over two and three epochs; with training BatchNorm one epoch is compared.
# (Measured with the cut at conv_dw_7; the cut is now conv_dw_11, with fewer trainable layers after it.)
BATCHNORM_CASES = [pytest.param(True, 1, id="training BatchNorm, 1 epoch"),
                   pytest.param(False, 2, id="inference BatchNorm, 2 epochs")]


@pytest.mark.parametrize(("train_batchnorm", "epochs"), BATCHNORM_CASES)
def test_cached_and_uncached_runs_of_one_config_give_the_same_curves(demo_home: Path, train_batchnorm: bool,
                                                                     epochs: int) -> None:
    cached = _train(TINY.replace(train_batchnorm=train_batchnorm, epochs=epochs))
    uncached = _train(TINY.replace(feature_cache=False, train_batchnorm=train_batchnorm, epochs=epochs))
    info = _cache_info(cached)
    assert info["used"] and info["layer"] == "conv_dw_11_relu" and info["source"] == "computed from the images"
    assert _cache_info(uncached) == {"used": False, "reason": "the feature cache is off for this run"}
    assert np.allclose(_losses(cached), _losses(uncached), rtol=1e-4, atol=1e-5)
    # What is saved is the whole model (images in), equal to the uncached run's.
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    whole_cached = keras.saving.load_model(cached.file("model.keras"))
    whole_uncached = keras.saving.load_model(uncached.file("model.keras"))
    assert whole_cached.inputs[0].shape[1:] == (32, 32, 3)
    assert np.allclose(whole_cached.predict(x, verbose=0), whole_uncached.predict(x, verbose=0), atol=1e-5)


def test_later_runs_reuse_the_cache_and_deeper_cuts_start_from_shallower_ones(demo_home: Path) -> None:
    one_epoch = TINY.replace(epochs=1)
    first = _train(one_epoch)
    deeper = _train(one_epoch.replace(freeze=84, split_seed=7))  # another split: the same per-image features
    pooled = _train(one_epoch.replace(freeze="all"))
    again = _train(one_epoch.replace(learning_rate=3e-4))
    assert _cache_info(first)["source"] == "computed from the images"
    assert _cache_info(deeper)["layer"] == "conv_dw_13_relu"
    assert _cache_info(deeper)["source"] == "computed from the cached conv_dw_11_relu features"
    assert _cache_info(pooled)["layer"] == "head_pool" and _cache_info(pooled)["shape"] == [256]
    assert _cache_info(pooled)["source"] == "computed from the cached conv_dw_13_relu features"
    assert _cache_info(again)["source"] == "cache hit"
    cache = feature_cache.default_cache()
    layers = sorted(entry.meta["layer"] for entry in cache.entries())
    assert layers == ["conv_dw_11_relu", "conv_dw_13_relu", "head_pool"]

    # Features derived from the shallower cut equal those computed from the images.
    derived = next(e for e in cache.entries() if e.meta["layer"] == "conv_dw_13_relu")
    derived_values = np.array(cache.get(derived.key)[0])
    cache.evict(0)
    direct = _train(one_epoch.replace(freeze=84))
    assert _cache_info(direct)["source"] == "computed from the images"
    assert np.allclose(np.array(cache.get(derived.key)[0]), derived_values, atol=1e-4)

    # weights "none": the run seed drew the frozen layers' random weights, so another seed has other features
    reseeded = _train(one_epoch.replace(freeze=84, seed=7))
    assert _cache_info(reseeded)["source"] == "computed from the images"


@pytest.mark.parametrize("change, reason", [
    ({"augmentation": Augmentation(enabled=True), "augment_views": 0}, "augmentation is on with 0 cached views"),
    ({"freeze_batchnorm": False}, "BatchNormalization"),
    ({"freeze": 1}, "nothing before the first trainable layer"),
])
def test_runs_that_cannot_use_the_cache_say_why(change: dict, reason: str) -> None:
    assert reason in (feature_cache.unavailable_reason(TINY.replace(**change)) or "")
    assert feature_cache.unavailable_reason(TINY) is None


def test_a_cache_too_small_for_the_features_falls_back_to_images(demo_home: Path) -> None:
    feature_cache.save_settings(feature_cache.CacheSettings(max_gb=0.00001))  # ~10 KiB; the features need ~64 KiB
    run = _train(TINY.replace(epochs=1))
    info = _cache_info(run)
    assert not info["used"] and "above the cache limit" in info["reason"]
    assert feature_cache.default_cache().entries() == []
    assert len(run.metrics()) == 1


def test_an_unusable_cache_folder_falls_back_to_images(demo_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = demo_home / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("CARVIZ_CACHE", str(blocker))
    run = _train(TINY.replace(epochs=1))
    info = _cache_info(run)
    assert not info["used"] and "Error" in info["reason"], info
    assert len(run.metrics()) == 1 and blocker.read_text().startswith("a file")


def test_a_stopped_cached_run_resumes_like_an_uncached_one(demo_home: Path) -> None:
    config = TINY.replace(epochs=3, train_batchnorm=False)  # agrees to 1e-4 over 3 epochs (see BATCHNORM_CASES)
    resumed = {}
    for use_cache in (True, False):
        run = _train(config.replace(feature_cache=use_cache), stop_after_epoch=1)
        assert [row["epoch"] for row in run.metrics()] == [1]
        whole, _ = build_model(config, num_classes=4)  # the checkpoint fits the whole model, not the remainder
        checkpoints.restore(whole, run.checkpoint()[0])
        assert whole.optimizer.iterations.numpy() > 0
        assert train.train(run) == runs.Status.SUCCEEDED, run.log_tail()
        assert [row["epoch"] for row in run.metrics()] == [1, 2, 3]
        resumed[use_cache] = run
    assert _cache_info(resumed[True])["source"] == "cache hit"
    # The optimizer state saved with the whole model comes back in both paths, so epochs 2-3 agree too.
    assert np.allclose(_losses(resumed[True]), _losses(resumed[False]), rtol=1e-4, atol=1e-5)


def test_submodels_compose_to_the_whole_model() -> None:
    model, _ = build_model(TINY.replace(freeze="all"), num_classes=3)
    x = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    whole = np.array(model(x, training=False))
    n = len(model.get_layer("backbone").layers)
    for cuts in ([0, 46, None], [0, 20, 58, n + 1, None], [0, n + 1, None], [0, n, None]):
        value = x
        for start, end in zip(cuts, cuts[1:]):
            value = features.submodel(model, start, end)(value, training=False)
        assert np.allclose(np.array(value), whole, atol=1e-5), cuts
    with pytest.raises(ValueError):
        features.submodel(model, 58, 20)


def test_feature_keys_depend_on_precision_and_storage() -> None:
    spec = feature_cache.FeatureSpec("mobilenet", "imagenet", 1.0, 224, "recommended", "abc")
    assert spec.key("conv_dw_7_relu") != feature_cache.FeatureSpec(**{**spec.__dict__, "precision": "mixed_float16"}).key(
        "conv_dw_7_relu")
    assert spec.family() == feature_cache.FeatureSpec(**spec.__dict__).family()
    assert spec.key("conv_dw_7_relu") != spec.key("conv_dw_9_relu")


def test_a_sweep_run_stores_the_cuts_its_sweep_needs_in_one_pass(demo_home: Path) -> None:
    from carviz.core import sweeps as sweep

    config = sweep.SweepConfig(name="cuts", base=TINY.replace(epochs=1), backbones=("mobilenet",),
                               learning_rates=(1e-3,), freeze_points=("all", 84, 71))
    record = sweep.create_sweep(config)
    deepest, middle, shallowest = record.runs()
    assert train.train(deepest) == runs.Status.SUCCEEDED, deepest.log_tail()
    assert _cache_info(deepest)["source"] == ("computed from the images "
                                              "(with conv_dw_11_relu, conv_dw_13_relu on the way)")
    assert sorted(e.meta["layer"] for e in feature_cache.default_cache().entries()) == [
        "conv_dw_11_relu", "conv_dw_13_relu", "head_pool"]
    for run in (middle, shallowest):
        assert train.train(run) == runs.Status.SUCCEEDED, run.log_tail()
        assert _cache_info(run)["source"] == "cache hit"
    # The features stored on the way equal those a lone run computes from the images.
    on_the_way = np.array(feature_cache.default_cache().get(_cache_info(middle)["key"])[0])
    feature_cache.default_cache().evict(0)
    lone = _train(TINY.replace(epochs=1, freeze=84))
    assert _cache_info(lone)["source"] == "computed from the images"
    assert np.allclose(np.array(feature_cache.default_cache().get(_cache_info(lone)["key"])[0]), on_the_way, atol=1e-4)


def test_float16_storage_halves_the_cache_and_trains_to_nearly_the_same_curves(demo_home: Path) -> None:
    one_epoch = TINY.replace(epochs=1)
    full = _train(one_epoch)
    feature_cache.save_settings(feature_cache.CacheSettings(dtype="float16"))
    half = _train(one_epoch)
    assert _cache_info(half)["dtype"] == "float16" and _cache_info(half)["key"] != _cache_info(full)["key"]
    assert _cache_info(half)["bytes"] * 2 == _cache_info(full)["bytes"]
    assert np.allclose(_losses(half), _losses(full), rtol=1e-2, atol=1e-3)
