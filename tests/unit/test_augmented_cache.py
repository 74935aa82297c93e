"""Augmentation with the feature cache: K cached augmented views per training image, one per epoch in turn."""

from __future__ import annotations

import argparse
import threading
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from carviz.cli.common import add_config_flags, config_from_args
from carviz.core import settings
from carviz.core import store as runs
from carviz.core import sweeps as sweep
from carviz.core.config import Augmentation, ConfigError, TrainConfig
from carviz.data import datasets
from carviz.ml import augmented_views, features, train
from carviz.core import feature_cache
from carviz.ml.model import build_model
from carviz.views.cache_report import config_note, run_line

pytestmark = pytest.mark.slow  # trains real models: scheduled first (tests/conftest.py)

COLOURS = ("red", "green", "blue")
# small_cnn cut after its first block (freeze 4: input, conv, pool frozen); the recommended (pooled) head.
AUGMENTED = TrainConfig(dataset="colours", backbone="small_cnn", weights="none", head="recommended", image_size=32,
                        epochs=2, batch_size=8, learning_rate=3e-3, freeze=4, precision="float32", seed=1,
                        augmentation=Augmentation(enabled=True), augment_views=3)


def _colour_dataset(root: Path, per_class: int, signal: int = 110) -> None:
    """Class c: noisy images whose channel c is brighter by about `signal` (rotation, shifts, zoom and flips keep
    the colour, so augmentation leaves the task learnable)."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(COLOURS):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = rng.integers(0, 256 - signal, (32, 32, 3))
            image[..., c] += signal
            Image.fromarray(image.astype("uint8")).save(root / name / f"{name}_{i:03d}.png")


@pytest.fixture
def colours(carviz_home: Path) -> Path:
    _colour_dataset(carviz_home / "data" / "colours", per_class=10)
    return carviz_home


@pytest.fixture(autouse=True)
def float32_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


def _train(config: TrainConfig, stop_after_epoch: int | None = None) -> runs.Run:
    run = runs.create_run(config)
    stop_flag = threading.Event()

    class StopAfter(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if epoch + 1 == stop_after_epoch:
                stop_flag.set()

    status = train.train(run, stop_flag, extra_callbacks=[StopAfter()])
    assert status == (runs.Status.STOPPED if stop_after_epoch else runs.Status.SUCCEEDED), run.log_tail()
    return run


def _prepare(config: TrainConfig, initial_epoch: int = 0) -> tuple[features.CachedTraining, object]:
    """prepare_augmented_training on the pieces train_body gives it."""
    root = settings.resolve_dataset(config.dataset)
    scan = datasets.scan_dataset(root)
    split = datasets.split_files(scan, config.validation_split, config.split_seed, config.test_fraction)
    keras.utils.set_random_seed(config.seed)  # as train_body does: the seed decides weights="none" weights
    model, _ = build_model(config, len(split.classes))
    all_paths, all_labels = scan.labelled_files()
    n = len(model.get_layer("backbone").layers)
    cached = augmented_views.prepare_augmented_training(features.CacheRequest(
        model, config, config.freeze_index(n), "float32", root, all_paths, all_labels, scan.fingerprint, split,
        feature_cache.default_cache(), initial_epoch=initial_epoch))
    return cached, split


def _arrays(info: dict) -> tuple[np.ndarray, list[np.ndarray]]:
    cache = feature_cache.default_cache()
    return np.array(cache.get(info["key"])[0]), [np.array(cache.get(key)[0]) for key in info["view_keys"]]


def _epochs_fed(data, steps: int, epochs: int, views: list[np.ndarray]) -> list[tuple[set[int], list[int]]]:
    """For each epoch of an endless view pipeline: the views its samples came from, and the rows in fed order
    (each sample found by exact equality among every row of every view)."""
    flat = np.stack([view.reshape(len(view), -1) for view in views])  # (K, rows, features)
    fed = []
    batches = iter(data)
    for _ in range(epochs):
        used, rows = set(), []
        for _ in range(steps):
            x, _ = next(batches)
            for sample in np.asarray(x).reshape(len(x), -1):
                [[view], [row]] = np.nonzero(np.all(flat == sample, axis=-1))  # exactly one match
                used.add(int(view))
                rows.append(int(row))
        fed.append((used, rows))
    return fed


def test_each_epoch_feeds_the_next_view_and_cycles_after_k(colours: Path) -> None:
    cached, split = _prepare(AUGMENTED)
    info = cached.info
    assert info["augmented_views"] == 3 and info["source"] == "computed from the images"
    assert info["views_source"] == "computed from the images"
    plain, views = _arrays(info)
    n_train = len(split.train_paths)
    assert all(view.shape == (n_train, *plain.shape[1:]) for view in views)
    assert not any(np.allclose(views[a], views[b]) for a, b in ((0, 1), (0, 2), (1, 2)))  # three distinct views
    steps = cached.steps_per_epoch
    assert steps == -(-n_train // AUGMENTED.batch_size)

    fed = _epochs_fed(cached.train_data, steps, 5, views)
    assert [used for used, _ in fed] == [{0}, {1}, {2}, {0}, {1}]  # epoch e (from 1) feeds view (e-1) mod K
    assert all(sorted(rows) == list(range(n_train)) for _, rows in fed)  # every training image once per epoch
    assert fed[0][1] != fed[1][1]  # reshuffled each epoch, as on images

    # Validation reads the plain (unaugmented) features of the validation images, in order.
    relative = [p.relative_to(settings.resolve_dataset("colours")).as_posix() for p in split.val_paths]
    rows = [feature_cache.default_cache().paths(info["key"]).index(path) for path in relative]
    fed_val = np.concatenate([np.asarray(x) for x, _ in cached.val_data])
    assert np.array_equal(fed_val, plain[rows])

    # A run resumed after epoch 2 starts on view 2, then wraps to view 0; everything is a cache hit.
    resumed, _ = _prepare(AUGMENTED, initial_epoch=2)
    assert resumed.info["source"] == "cache hit" and resumed.info["views_source"] == "cache hit"
    assert [used for used, _ in _epochs_fed(resumed.train_data, steps, 2, views)] == [{2}, {0}]


def test_a_view_follows_from_its_key_not_from_the_batch_size(colours: Path) -> None:
    first, _ = _prepare(AUGMENTED.replace(augment_views=2))
    _, views = _arrays(first.info)
    feature_cache.default_cache().evict(0)
    again, _ = _prepare(AUGMENTED.replace(augment_views=2, batch_size=5, learning_rate=1e-2))
    assert again.info["view_keys"] == first.info["view_keys"]
    assert again.info["views_source"] == "computed from the images"
    for recomputed, before in zip(_arrays(again.info)[1], views):
        assert np.allclose(recomputed, before, atol=1e-5)


def test_cache_keys_separate_augmentations_and_views_but_share_the_plain_features() -> None:
    spec = feature_cache.FeatureSpec("small_cnn", "none", 1.0, 32, "recommended", "abc")
    rows = ["red/a.png", "green/b.png"]
    base = Augmentation(enabled=True)
    key = lambda aug, view, paths=rows: spec.key("block1_pool",  # noqa: E731
                                                 augmented_views.view_ingredients(aug, view, paths))
    keys = {key(base, 0), key(base, 1), key(Augmentation(enabled=True, zoom=0.1), 0),
            key(Augmentation(enabled=True, horizontal_flip=False), 0), key(base, 0, rows[::-1]),
            spec.key("block1_pool")}
    assert len(keys) == 6
    assert spec.key("block1_pool", None) == spec.key("block1_pool")  # plain keys are what they were
    assert augmented_views.view_for_epoch(0, 4) == 0 and augmented_views.view_for_epoch(5, 4) == 1


def test_runs_record_their_views_and_share_what_they_can(colours: Path) -> None:
    run = _train(AUGMENTED.replace(augment_views=2))
    info = run.info()["feature_cache"]
    assert info["used"] and info["augmented_views"] == 2 and info["layer"] == "block1_pool"
    assert info["view_rule"] == augmented_views.VIEW_RULE and len(info["view_keys"]) == 2
    assert [row["epoch"] for row in run.metrics()] == [1, 2]
    assert "with 2 augmented views, one per epoch in turn" in run_line(run.run_info())
    entries = feature_cache.default_cache().entries()
    assert sorted((e.meta["layer"], e.meta.get("view", -1)) for e in entries) == [
        ("block1_pool", -1), ("block1_pool", 0), ("block1_pool", 1)]  # plain and both views, in one pass

    plain_run = _train(AUGMENTED.replace(augmentation=Augmentation(enabled=False), epochs=1))
    assert plain_run.info()["feature_cache"]["source"] == "cache hit"  # unaugmented features are shared
    assert "augmented_views" not in plain_run.info()["feature_cache"]

    more = _train(AUGMENTED.replace(augment_views=3, epochs=1))
    assert more.info()["feature_cache"]["views_source"] == "1 of 3 computed from the images"  # views 0, 1 reused
    zoomed = _train(AUGMENTED.replace(augmentation=Augmentation(enabled=True, zoom=0.05), augment_views=2, epochs=1))
    zoomed_info = zoomed.info()["feature_cache"]
    assert zoomed_info["source"] == "cache hit" and zoomed_info["views_source"] == "computed from the images"
    assert not set(zoomed_info["view_keys"]) & set(info["view_keys"])

    on_images = _train(AUGMENTED.replace(augment_views=0, epochs=1))
    assert on_images.info()["feature_cache"] == {
        "used": False, "reason": feature_cache.unavailable_reason(AUGMENTED.replace(augment_views=0))}


def test_a_resumed_run_continues_with_the_view_of_its_epoch(colours: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pipelines: list[tuple[object, int, int]] = []
    real = augmented_views.view_pipeline

    def recording(views, *args, **kwargs):  # the real pipeline, kept to replay what the run was fed
        data, steps = real(views, *args, **kwargs)
        pipelines.append((data, steps, kwargs["initial_epoch"]))
        return data, steps

    monkeypatch.setattr(augmented_views, "view_pipeline", recording)
    config = AUGMENTED.replace(epochs=4)
    run = _train(config, stop_after_epoch=2)
    assert train.train(run) == runs.Status.SUCCEEDED, run.log_tail()
    assert [row["epoch"] for row in run.metrics()] == [1, 2, 3, 4]
    assert [initial for _, _, initial in pipelines] == [0, 2]
    _, views = _arrays(run.info()["feature_cache"])
    (first, steps, _), (second, _, _) = pipelines
    assert [used for used, _ in _epochs_fed(first, steps, 2, views)] == [{0}, {1}]
    assert [used for used, _ in _epochs_fed(second, steps, 2, views)] == [{2}, {0}]  # epochs 3 and 4
    assert run.info()["feature_cache"]["views_source"] == "cache hit"


def test_cached_views_learn_like_augmented_images(carviz_home: Path) -> None:
    _colour_dataset(carviz_home / "data" / "colours", per_class=24, signal=80)
    config = AUGMENTED.replace(epochs=4, augment_views=4, learning_rate=3e-3, seed=1)
    cached = _train(config)
    on_images = _train(config.replace(feature_cache=False))
    assert cached.info()["feature_cache"]["augmented_views"] == 4
    assert not on_images.info()["feature_cache"]["used"]
    final = [run.metrics()[-1]["val_accuracy"] for run in (cached, on_images)]
    assert min(final) >= 0.75, final  # chance is 1/3
    assert abs(final[0] - final[1]) <= 0.2, final


def test_a_sweep_run_stores_every_cut_and_view_its_sweep_needs_in_one_pass(colours: Path) -> None:
    config = sweep.SweepConfig(name="views", base=AUGMENTED.replace(epochs=1, augment_views=2),
                               backbones=("small_cnn",), learning_rates=(3e-3,), freeze_points=("all", 6, 4))
    record = sweep.create_sweep(config)
    deepest, *others = record.runs()
    assert train.train(deepest) == runs.Status.SUCCEEDED, deepest.log_tail()
    stored = sorted((e.meta["layer"], e.meta.get("view", -1)) for e in feature_cache.default_cache().entries())
    assert stored == sorted((layer, view) for layer in ("block1_pool", "block2_pool", "head_pool")
                            for view in (-1, 0, 1))  # -1: the plain features
    for run in others:
        assert train.train(run) == runs.Status.SUCCEEDED, run.log_tail()
        info = run.info()["feature_cache"]
        assert (info["source"], info["views_source"]) == ("cache hit", "cache hit")


def test_the_setting_is_checked_carried_and_explained() -> None:
    with pytest.raises(ConfigError, match="augment_views"):
        TrainConfig(augment_views=17)
    with pytest.raises(ConfigError, match="augment_views"):
        TrainConfig(augment_views=-1)
    assert TrainConfig().augment_views == 4
    assert TrainConfig.from_json(AUGMENTED.to_json()) == AUGMENTED
    old = AUGMENTED.to_dict()
    del old["augment_views"]  # a config.json written before cached views: its augmented run trained on images
    assert TrainConfig.from_dict(old).augment_views == 0
    assert "augmentation is on with 0 cached views" in feature_cache.unavailable_reason(TrainConfig.from_dict(old))
    assert feature_cache.unavailable_reason(AUGMENTED) is None
    assert config_note(AUGMENTED).startswith("Feature cache on with 3 augmented views")

    parser = argparse.ArgumentParser()
    add_config_flags(parser)
    args = parser.parse_args(["--preset", "recommended", "--augment", "--augment-views", "6"])
    assert config_from_args(args).augment_views == 6 and config_from_args(args).augmentation.enabled

    from carviz.views.config_form import config_to_form, form_to_config

    assert form_to_config(config_to_form(AUGMENTED.replace(augment_views=7))).augment_views == 7
