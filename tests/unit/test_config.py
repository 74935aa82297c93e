"""TrainConfig validation, JSON round trip, presets and the freeze index."""

import json

import pytest

from carviz.core.config import DEMO_QUICK, PRESETS, SEED_STUDY, Augmentation, ConfigError, TrainConfig


def test_round_trip_keeps_every_field():
    config = TrainConfig(name="현대 그랜저 sweep", freeze="all", augmentation=Augmentation(enabled=True, zoom=0.1))
    again = TrainConfig.from_json(config.to_json())
    assert again == config
    assert json.loads(config.to_json())["name"] == "현대 그랜저 sweep"


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"backbone": "vgg99"}, "backbone"),
        ({"learning_rate": 0}, "learning_rate"),
        ({"learning_rate": float("nan")}, "learning_rate"),
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 2.5}, "batch_size"),
        ({"freeze": 0}, "freeze"),
        ({"freeze": "half"}, "freeze"),
        ({"validation_split": 1.0}, "validation_split"),
        ({"image_size": 8}, "image_size"),
        ({"backbone": "small_cnn", "weights": "imagenet"}, "small_cnn"),
        ({"freeze_batchnorm": False, "train_batchnorm": False}, "contradicts"),
    ],
)
def test_bad_values_are_rejected_with_a_clear_message(changes, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**changes)


def test_unknown_keys_are_rejected():
    with pytest.raises(ConfigError, match="unknown config keys: colour"):
        TrainConfig.from_dict({"colour": "red"})


def test_freeze_index_follows_the_seed_rule():
    assert TrainConfig(freeze=47).freeze_index(87) == 47
    assert TrainConfig(freeze="all").freeze_index(87) == 88
    assert TrainConfig(freeze=500).freeze_index(87) == 88


def test_seed_preset_is_the_study_protocol():
    assert PRESETS["seed study"] is SEED_STUDY
    assert (SEED_STUDY.validation_split, SEED_STUDY.seed, SEED_STUDY.image_size, SEED_STUDY.batch_size) == (0.2, 123, 224, 64)
    assert (SEED_STUDY.optimizer, SEED_STUDY.learning_rate, SEED_STUDY.epochs, SEED_STUDY.head) == ("adam", 1e-4, 20, "seed")
    assert DEMO_QUICK.weights == "none"  # the demo must train offline
    assert SEED_STUDY.train_batchnorm and not PRESETS["recommended"].train_batchnorm


def test_augmentation_ranges_are_checked():
    with pytest.raises(ConfigError, match="zoom"):
        Augmentation(zoom=1.5)
