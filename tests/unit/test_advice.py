"""A frozen random backbone (weights 'none', layers frozen) is warned about: the rule, sweeps, and the CLI's stderr."""

from __future__ import annotations

from pathlib import Path

import pytest

from carviz.cli import main
from carviz.core.advice import freezes_random_layers, frozen_random_backbone_warning, sweep_frozen_random_warning
from carviz.core.config import PRESETS, SweepConfig, TrainConfig
from carviz.views.layer_select import carried_config, carry_note


def test_the_rule_weights_none_with_frozen_layers() -> None:
    scratch = TrainConfig(backbone="mobilenet", weights="none")
    assert not freezes_random_layers(scratch.replace(freeze=1))  # trains everything
    assert not freezes_random_layers(scratch.replace(freeze=2))  # only the InputLayer: nothing to learn there
    assert freezes_random_layers(scratch.replace(freeze=3))
    assert freezes_random_layers(scratch.replace(freeze="all"))
    assert freezes_random_layers(scratch.replace(weights=" None ", freeze=5))
    for weights in ("imagenet", "/models/mine.weights.h5"):  # pretrained weights frozen: the point of transfer
        assert frozen_random_backbone_warning(scratch.replace(weights=weights, freeze=47)) is None

    text = frozen_random_backbone_warning(scratch.replace(freeze=47))
    assert text and "layers 1…46 of mobilenet" in text and "ImageNet weights" in text
    text = frozen_random_backbone_warning(PRESETS["demo quick"].replace(freeze="all"))
    assert text and "the whole backbone of small_cnn" in text and "freeze 1" in text
    assert frozen_random_backbone_warning(PRESETS["demo quick"]) is None  # the default run is fine


def test_a_sweep_names_its_affected_grid_points() -> None:
    sweep = SweepConfig(name="s", base=PRESETS["demo quick"], backbones=("small_cnn",), learning_rates=(1e-3,),
                        freeze_points=(1, 3, "all"), seeds=(1, 2))
    text = sweep_frozen_random_warning(sweep)
    assert text and "4 of 6 runs" in text and "small_cnn freeze 3, small_cnn freeze all" in text
    assert "freeze 1," not in text
    only_scratch = SweepConfig(name="s", base=PRESETS["demo quick"], backbones=("small_cnn",),
                               learning_rates=(1e-3,), freeze_points=(1,))
    assert sweep_frozen_random_warning(only_scratch) is None
    imagenet = SweepConfig(name="s", base=PRESETS["recommended"], backbones=("mobilenet",), learning_rates=(1e-4,),
                           freeze_points=(47, "all"))
    assert sweep_frozen_random_warning(imagenet) is None


def test_the_layers_carry_is_a_transfer_run() -> None:
    carried = carried_config("mobilenet", 0.25, 96, 10, dataset="cars")
    assert (carried.weights, carried.head, carried.freeze, carried.dataset) == ("imagenet", "recommended", 10, "cars")
    assert (carried.backbone, carried.alpha, carried.image_size) == ("mobilenet", 0.25, 96)
    assert carried.name == "mobilenet freeze 10" and frozen_random_backbone_warning(carried) is None
    note = carry_note(carried)
    assert "ImageNet weights" in note and "recommended head" in note and "`cars` kept" in note
    scratch = carried_config("small_cnn", 1.0, 64, "all", dataset="")  # no ImageNet weights to carry
    assert scratch.weights == "none" and scratch.dataset == "demo" and frozen_random_backbone_warning(scratch)


def test_cli_train_and_sweep_print_the_warning_and_go_on(carviz_home: Path, capsys: pytest.CaptureFixture) -> None:
    # "missing" is no dataset: each command warns, then stops at the dataset check, before launching anything
    code = main(["train", "--preset", "demo quick", "--freeze", "3", "--dataset", "missing"])
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert code == 2 and lines[0].startswith("warning: Frozen random backbone") and "not found" in lines[1]
    code = main(["sweep", "--name", "grid", "--preset", "demo quick", "--freeze", "1,3", "--dataset", "missing"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("warning: Frozen random backbone in 1 of 2 runs (small_cnn freeze 3)")
    code = main(["train", "--preset", "recommended", "--freeze", "47", "--dataset", "missing"])
    err = capsys.readouterr().err
    assert code == 2 and "warning:" not in err and "not found" in err
    assert list((carviz_home / "runs").iterdir()) == []  # nothing launched
