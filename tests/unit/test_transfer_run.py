"""Transfer from a run: parent weights but a new classifier, the parent checked and recorded, cache keys, resume."""

from __future__ import annotations

import argparse
import shutil
import threading
from pathlib import Path

import keras
import numpy as np
import pytest

from carviz.cli.common import add_config_flags, config_from_args
from carviz.core import launch, lineage
from carviz.core import store as runs
from carviz.core.advice import frozen_random_backbone_warning
from carviz.core.config import ConfigError, TrainConfig
from carviz.data import datasets
from carviz.ml import train, transfer
from carviz.core.feature_cache import feature_spec
from carviz.ml.model import build_model


@pytest.fixture(autouse=True)
def float32_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.fixture
def family(tiny_trained: tuple[Path, Path], carviz_home: Path, tmp_path: Path) -> tuple[runs.Run, Path]:
    """(the parent: a copy of tiny_trained's finished small_cnn on the demo's 4 classes, in this test's home; a
    second dataset of 3 other classes)."""
    _, parent_path = tiny_trained
    shutil.copytree(parent_path, carviz_home / "runs" / parent_path.name)
    other = tmp_path / "vehicles"
    datasets.generate_demo_dataset(other, per_class=8, image_size=48, seed=1)
    for old, new in (("sedan", "limousine"), ("suv", "jeep"), ("bus", "coach")):
        (other / old).rename(other / new)
    shutil.rmtree(other / "sports car")
    return runs.Run(carviz_home / "runs" / parent_path.name), other


def _child(parent: runs.Run, dataset: Path, **changes: object) -> TrainConfig:
    base = TrainConfig(name="child", dataset=str(dataset), epochs=1, batch_size=8, learning_rate=1e-3,
                       precision="float32", seed=7)
    return lineage.from_parent(base, parent).replace(**changes)


def _weights(model: keras.Model) -> dict[str, list[np.ndarray]]:
    return {name: [np.array(w) for w in layer.get_weights()] for name, layer in transfer.weighted_layers(model).items()}


class CaptureAtStart(keras.callbacks.Callback):
    """The fit model's weights before its first step."""

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.weights = _weights(self.model)


def test_child_starts_from_the_parents_weights_with_a_new_classifier_and_records_its_parent(family) -> None:
    parent, other = family
    config = _child(parent, other, freeze=1)  # trains every layer: the fit model is the whole model
    assert (config.init_from_run, config.backbone, config.image_size, config.head, config.weights) == \
        (parent.id, "small_cnn", 32, "recommended", "none")
    assert frozen_random_backbone_warning(config.replace(freeze=3)) is None  # the parent's weights are not random
    capture = CaptureAtStart()
    child = runs.create_run(config)
    assert train.train(child, extra_callbacks=[capture]) == runs.Status.SUCCEEDED, child.log_tail()

    parent_weights = _weights(transfer.load_parent_model(parent.model_path()))
    at_start = capture.weights
    assert set(at_start) == set(parent_weights)
    for name, values in parent_weights.items():
        if name == transfer.CLASSIFIER:
            continue
        for mine, theirs in zip(at_start[name], values, strict=True):
            np.testing.assert_array_equal(mine, theirs, err_msg=name)
    kernel, bias = at_start[transfer.CLASSIFIER]
    assert kernel.shape == (parent_weights[transfer.CLASSIFIER][0].shape[0], 3)  # 3 new classes, not the 4 of demo
    assert not kernel.any() and not bias.any()  # the recommended head's fresh (zero) classifier, not the parent's
    saved = keras.saving.load_model(child.model_path(), compile=False)
    assert saved.output_shape == (None, 3)

    record = child.info()["parent"]
    assert record["run_id"] == parent.id and record["name"] == "tiny"
    assert record["dataset"] == "demo" and record["classes"] == ["bus", "sedan", "sports car", "suv"]
    assert record["kept_epoch"] == 1 and record["model_sha256"] == lineage.model_sha256(parent)
    assert record["layers_copied"] == 3  # small_cnn's three convolutions
    assert child.classes() == ["coach", "jeep", "limousine"]
    row = runs.summarize(child)
    assert row["init_from_run"] == parent.id and row["parent"]["run_id"] == parent.id and not row["problems"]
    assert lineage.lineage_line(record) == (f"From run tiny ({parent.id}) on demo, 4 classes, kept epoch 1: its "
                                            "weights, a new classifier for these classes.")


def test_transfer_run_caches_its_own_features_and_resumes_without_the_parent(family, monkeypatch) -> None:
    parent, other = family
    config = _child(parent, other, freeze=3, epochs=2)  # block1_conv frozen: trains on cached features
    child = runs.create_run(config)
    stop_flag = threading.Event()

    class StopAfterFirst(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            stop_flag.set()

    assert train.train(child, stop_flag, extra_callbacks=[StopAfterFirst()]) == runs.Status.STOPPED, child.log_tail()
    first = child.info()["feature_cache"]
    assert first["used"] and first["source"] == "computed from the images"
    scan = datasets.scan_dataset(other)
    sha = lineage.model_sha256(parent)
    assert first["key"] == feature_spec(config, scan.fingerprint, "float32", "float32", sha).key(first["layer"])
    # the same frozen layers at their own (random, seed-drawn) weights would have another key
    assert first["key"] != feature_spec(config.replace(init_from_run=""), scan.fingerprint, "float32",
                                        "float32").key(first["layer"])

    def no_parent(*args: object, **kwargs: object) -> None:
        raise AssertionError("a resume must not load the parent again")

    monkeypatch.setattr(transfer, "init_from_parent", no_parent)
    child.request_resume()  # what Resume records; the job then runs in this process
    assert train.train(child) == runs.Status.SUCCEEDED, child.log_tail()
    second = child.info()["feature_cache"]
    assert second["key"] == first["key"] and second["source"] == "cache hit"
    assert len(child.metrics()) == 2 and child.info()["parent"]["model_sha256"] == sha


def test_cache_keys_of_transfer_runs() -> None:
    imagenet = TrainConfig(backbone="mobilenet", alpha=0.25, image_size=64, freeze=47)
    child = imagenet.replace(init_from_run="20260101-000000.000-abcdef")

    def key(config: TrainConfig, sha: str = "") -> str:
        return feature_spec(config, "fp", "float32", "float32", sha).key("conv_pw_6_relu")

    assert key(child, "a" * 64) != key(imagenet)  # never the ImageNet features
    assert key(child, "a" * 64) != key(child, "b" * 64)  # another parent model, other features
    assert key(child, "a" * 64) == key(child.replace(seed=5), "a" * 64)  # the seed draws none of the frozen weights
    assert key(imagenet, "a" * 64) == key(imagenet)  # a hash is only used for transfer runs
    with pytest.raises(ValueError, match="model hash is not recorded"):
        key(child)


SMALL = TrainConfig(backbone="small_cnn", weights="none", image_size=32, precision="float32")
MOBILENET = TrainConfig(backbone="mobilenet", alpha=0.25, weights="none", precision="float32")


@pytest.mark.parametrize("head", ["recommended", "seed"])
@pytest.mark.parametrize("base", [SMALL, MOBILENET.replace(image_size=32), MOBILENET.replace(image_size=96)],
                         ids=["small_cnn-32", "mobilenet-32", "mobilenet-96"])
def test_copy_weights_replaces_only_the_classifier_and_keeps_the_freeze(base: TrainConfig, head: str,
                                                                        tmp_path: Path) -> None:
    keras.utils.set_random_seed(1)
    parent, _ = build_model(base.replace(head=head), 4)
    path = tmp_path / "model.keras"
    parent.save(path)
    keras.utils.set_random_seed(2)  # other initial weights: equality below comes from the copy
    child_config = base.replace(head=head, freeze=5, init_from_run="p")
    child, summary = build_model(child_config, 6)
    copied = transfer.copy_weights(transfer.load_parent_model(path), child)
    theirs, mine = _weights(parent), _weights(child)
    assert copied == len(mine) - 1 and set(mine) == set(theirs)
    for name in mine:
        same = all(np.array_equal(a, b) for a, b in zip(mine[name], theirs[name], strict=True))
        assert same == (name != transfer.CLASSIFIER), name
    assert child.output_shape == (None, 6)
    backbone = child.get_layer("backbone")  # freeze 5: layers 1-4 frozen, as build_model set them
    assert [layer.trainable for layer in backbone.layers[:5]] == [False] * 4 + [True]
    assert summary.freeze_index == 5


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["mobilenetv2", "resnet50", "densenet121", "efficientnetb0"])
def test_copy_weights_fits_every_backbone_and_both_heads(backbone: str) -> None:
    for head in ("recommended", "seed"):
        config = TrainConfig(backbone=backbone, weights="none", image_size=32, head=head, precision="float32",
                             alpha=0.35 if backbone == "mobilenetv2" else 1.0, freeze=10)
        parent, _ = build_model(config, 4)
        child, _ = build_model(config.replace(init_from_run="p"), 3)  # unnamed layers get new "_N" suffixes
        copied = transfer.copy_weights(parent, child)
        mine, theirs = list(_weights(child).items()), list(_weights(parent).items())
        assert copied == len(mine) - 1 and mine[-1][0] == theirs[-1][0] == transfer.CLASSIFIER
        for (name, values), (_, parent_values) in zip(mine[:-1], theirs[:-1], strict=True):  # in model order
            for a, b in zip(values, parent_values, strict=True):
                np.testing.assert_array_equal(a, b, err_msg=name)
        assert child.output_shape == (None, 3)


def test_copy_weights_refuses_another_architecture() -> None:
    parent, _ = build_model(MOBILENET.replace(image_size=32), 4)
    child, _ = build_model(MOBILENET.replace(image_size=32, alpha=0.5), 4)
    with pytest.raises(ValueError, match=r"does not fit.*conv1 has weights \[\(3, 3, 3, 16\)\], the parent's "
                                         r"\[\(3, 3, 3, 8\)\]"):
        transfer.copy_weights(parent, child)
    seed_head, _ = build_model(MOBILENET.replace(image_size=32, head="seed"), 4)
    with pytest.raises(ValueError, match="58 layers with weights besides the classifier, the parent 54"):
        transfer.copy_weights(parent, seed_head)


def test_a_mismatched_missing_or_unfinished_parent_is_refused(family) -> None:
    parent, other = family
    with pytest.raises(ConfigError, match=rf"backbone mobilenet \(parent small_cnn\), image_size 64 \(parent 32\) "
                                          rf"differ from run {parent.id}'s"):
        lineage.parent_of(_child(parent, other).replace(backbone="mobilenet", image_size=64))
    with pytest.raises(ConfigError, match=r"head seed \(parent recommended\)"):
        launch.submit(_child(parent, other, head="seed"))
    with pytest.raises(ConfigError, match="no run 'nope'"):
        launch.submit(_child(parent, other, init_from_run="nope"))
    queued = runs.create_run(TrainConfig(dataset="demo", backbone="small_cnn", weights="none", image_size=32))
    with pytest.raises(ConfigError, match=f"run {queued.id} is queued without a saved model"):
        lineage.parent_of(_child(parent, other, init_from_run=queued.id))
    assert {run.id for run in runs.list_runs()} == {parent.id, queued.id}  # nothing was launched


def test_cli_from_run_takes_the_parents_architecture_and_refuses_another(family) -> None:
    parent, other = family
    parser = argparse.ArgumentParser()
    add_config_flags(parser)
    config = config_from_args(parser.parse_args(["--preset", "recommended", "--dataset-path", str(other),
                                                 "--from-run", parent.id[:15], "--freeze", "2"]))
    assert (config.init_from_run, config.backbone, config.image_size, config.head, config.freeze) == \
        (parent.id, "small_cnn", 32, "recommended", 2)
    assert config_from_args(parser.parse_args(["--from-run", "tiny", "--image-size", "32"])).init_from_run == parent.id
    with pytest.raises(ConfigError, match=r"--image-size 64 \(the run's 32\).*leave those flags out"):
        config_from_args(parser.parse_args(["--from-run", "tiny", "--image-size", "64"]))
    with pytest.raises(LookupError, match="no run matches 'missing'"):
        config_from_args(parser.parse_args(["--from-run", "missing"]))


def test_config_field_round_trips_and_old_configs_load() -> None:
    config = TrainConfig(init_from_run="20260101-000000.000-abcdef")
    assert TrainConfig.from_json(config.to_json()) == config
    old = config.to_dict()
    del old["init_from_run"]
    assert TrainConfig.from_dict(old).init_from_run == ""
    for bad in ("../x", ".hidden", "a/b", 5):
        with pytest.raises(ConfigError, match="init_from_run must be a run id"):
            TrainConfig(init_from_run=bad)  # type: ignore[arg-type]
    assert lineage.lineage_line(None, "") is None
    assert lineage.lineage_line({}, "abc") == "From run abc: its weights, a new classifier for these classes."


def test_lr_range_test_starts_from_the_parent_as_training_does(family, monkeypatch) -> None:
    from carviz.ml import lr_range

    parent, other = family
    loaded: list[dict] = []
    real = transfer.init_from_parent

    def recorded(model: keras.Model, config: TrainConfig, store: object = None) -> dict:
        loaded.append(real(model, config, store))
        assert model.output_shape == (None, 3)
        return loaded[-1]

    monkeypatch.setattr(transfer, "init_from_parent", recorded)
    result = lr_range.lr_range_test(_child(parent, other, freeze=1), min_lr=1e-5, max_lr=1e-2, steps=4)
    assert len(result.lrs) == 4 and [record["run_id"] for record in loaded] == [parent.id]
