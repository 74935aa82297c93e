"""Every TrainConfig field reaches the command line and the Train form, through its one spec (core/field_spec.py)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from carviz.cli.common import CONFIG_FLAGS, add_config_flags, config_from_args
from carviz.core.config import Augmentation, ConfigError, TrainConfig
from carviz.core.field_spec import FieldSpec, check_value, specs
from carviz.views.config_form import FORM_FIELDS, config_to_form, form_to_config

INTERNAL = {"sweep": "set by the sweep that launches the run; never typed"}


def leaf_fields(cls: type = TrainConfig, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], FieldSpec]]:
    found = []
    for field in dataclasses.fields(cls):
        spec = dict(specs(cls)).get(field.name)
        assert spec is not None, f"{cls.__name__}.{field.name} has no spec: declare it with setting(...)"
        if spec.nested is not None:
            found += leaf_fields(spec.nested, prefix + (field.name,))
        else:
            found.append((prefix + (field.name,), spec))
    return found


def other_value(path: tuple[str, ...], spec: FieldSpec) -> Any:
    """A valid value of the field that is not its default (what a user would set)."""
    default = TrainConfig()
    for name in path:
        default = getattr(default, name)
    if spec.choices:
        return next(choice for choice in spec.choices if choice != default)
    if isinstance(default, bool):
        return not default
    special = {"name": "my run", "weights": "none", "freeze": "all", "dataset": "cars", "init_from_run": "parent"}
    if path[-1] in special:
        return special[path[-1]]
    if spec.integer:
        return default + 1 if spec.high is None or default + 1 <= spec.high else default - 1
    return (default + spec.high) / 2 if spec.high is not None else default * 2 + 1


def with_value(config: TrainConfig, path: tuple[str, ...], value: Any) -> TrainConfig:
    if len(path) == 1:
        return config.replace(**{path[0]: value})
    return config.replace(**{path[0]: dataclasses.replace(getattr(config, path[0]), **{path[1]: value})})


def value_at(config: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        config = getattr(config, name)
    return config


def train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_config_flags(parser)
    return parser


@pytest.mark.parametrize("path, spec", leaf_fields(), ids=lambda v: ".".join(v) if isinstance(v, tuple) else "")
def test_every_field_has_a_valid_default_and_a_form_range_inside_its_valid_range(path, spec):
    default = value_at(TrainConfig(), path)
    assert check_value(path[-1], default, spec) is None
    assert spec.help or spec.label
    for bound in (spec.form_min, spec.form_max):
        if bound is not None:
            assert check_value(path[-1], type(default)(bound), spec) is None, f"{path}: the form offers {bound}"
    assert (spec.widget == "checkbox") == isinstance(default, bool)


@pytest.mark.parametrize("path, spec", leaf_fields(), ids=lambda v: ".".join(v) if isinstance(v, tuple) else "")
def test_every_field_reaches_the_command_line(path, spec, tmp_path: Path):
    if path[-1] in INTERNAL:
        assert spec.flag is None
        return
    value = other_value(path, spec)
    option = next((o for o in CONFIG_FLAGS if o.field.path == path), None)
    if option is None:  # set by a flag of its own, named in the spec
        assert spec.cli, f"{path} has no flag and does not say which flag sets it"
        assert spec.cli.split()[0] in train_parser()._option_string_actions
        if path == ("dataset",):
            (tmp_path / "cars").mkdir()
            config = config_from_args(train_parser().parse_args(["--dataset-path", str(tmp_path / "cars")]))
            assert config.dataset == str((tmp_path / "cars").resolve())
        return  # --from-run needs a finished run: tests/unit/test_transfer_run.py
    argv = [option.flag] if spec.const is not None else [option.flag, str(value)]
    config = config_from_args(train_parser().parse_args(argv))
    assert value_at(config, path) == value, f"{' '.join(argv)} did not set {path}"


@pytest.mark.parametrize("path, spec", leaf_fields(), ids=lambda v: ".".join(v) if isinstance(v, tuple) else "")
def test_every_field_reaches_the_form_and_back(path, spec):
    if path[-1] in INTERNAL:
        assert spec.widget == "none" and spec.form
        return
    assert path in {f.path for f in FORM_FIELDS}
    config = with_value(TrainConfig(), path, other_value(path, spec))
    assert form_to_config(config_to_form(config)) == config


def test_bad_flag_values_are_refused_with_the_fields_rule(capsys):
    with pytest.raises(SystemExit):
        train_parser().parse_args(["--freeze", "half"])
    assert "freeze must be a layer number" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"augmentation zoom must be in \[0, 1\)"):
        config_from_args(train_parser().parse_args(["--augment", "--aug-zoom", "1.5"]))


def test_train_frozen_bn_keeps_its_meaning_and_augment_keeps_the_base_augmentation(tmp_path: Path):
    parsed = train_parser().parse_args(["--preset", "recommended", "--train-frozen-bn"])
    config = config_from_args(parsed)  # the recommended preset freezes every BatchNorm; this flag trains them all
    assert (config.freeze_batchnorm, config.train_batchnorm) == (False, True)
    base = tmp_path / "config.json"
    base.write_text(TrainConfig(augmentation=Augmentation(rotation=45.0)).to_json())
    config = config_from_args(train_parser().parse_args(["--config", str(base), "--augment", "--lr", "0.01"]))
    assert config.augmentation == Augmentation(enabled=True, rotation=45.0) and config.learning_rate == 0.01


def test_form_weights_file_must_exist(tmp_path: Path):
    values = config_to_form(TrainConfig())
    values.update(tf_weights="file", tf_weights_path=str(tmp_path / "missing.h5"))
    with pytest.raises(ConfigError, match="does not exist"):
        form_to_config(values)
    (tmp_path / "w.weights.h5").write_bytes(b"x")
    values["tf_weights_path"] = str(tmp_path / "w.weights.h5")
    assert form_to_config(values).weights == str(tmp_path / "w.weights.h5")
