"""The Train form's values <-> TrainConfig, derived from the config's field specs (core/field_spec.py).

Every field with a widget has one form value under its key (tf_<name> unless the spec names another); nested
fields (augmentation) have one per part. weights is the one field shown as two widgets: a choice (imagenet, none,
file) and the file's path.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from carviz.core.config import ConfigError, TrainConfig
from carviz.core.field_spec import FieldSpec, specs

FORM_PREFIX = "tf_"
WEIGHTS_FILE = "file"  # the weights choice that reads the path box
WEIGHTS_PATH_KEY = "tf_weights_path"


@dataclass(frozen=True)
class FormField:
    """One widget of the Train form: the config field it sets (a path into nested dataclasses) and its spec."""

    path: tuple[str, ...]
    key: str
    spec: FieldSpec
    default: Any


def _fields(cls: type, prefix: tuple[str, ...] = ()) -> list[FormField]:
    defaults = cls()
    found = []
    for name, spec in specs(cls):
        if spec.nested is not None:
            found += _fields(spec.nested, prefix + (name,))
        elif spec.widget != "none":
            found.append(FormField(prefix + (name,), spec.form_key or FORM_PREFIX + name, spec,
                                   getattr(defaults, name)))
    return found


FORM_FIELDS: tuple[FormField, ...] = tuple(_fields(TrainConfig))
FIELD_BY_KEY: dict[str, FormField] = {f.key: f for f in FORM_FIELDS}


def _value_at(config: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        config = getattr(config, name)
    return config


def _to_widget(value: Any, field: FormField) -> Any:
    if field.spec.widget == "text":
        return str(value)
    if isinstance(field.default, bool):
        return bool(value)
    if isinstance(field.default, int) and field.spec.parse is None:
        return int(value)
    if isinstance(field.default, float):
        return float(value)
    return value


def _from_widget(raw: Any, field: FormField) -> Any:
    if field.spec.parse is not None:
        return field.spec.parse(raw)
    if isinstance(field.default, bool):
        return bool(raw)
    if isinstance(field.default, int):
        return int(raw)
    if isinstance(field.default, float):
        return float(raw)
    return str(raw or "").strip()


def config_to_form(config: TrainConfig) -> dict[str, Any]:
    """The Train form's widget values (keys tf_*) for a config."""
    values: dict[str, Any] = {}
    for field in FORM_FIELDS:
        value = _value_at(config, field.path)
        if field.path == ("weights",):
            choice = value if value in ("imagenet", "none") else WEIGHTS_FILE
            values[field.key] = choice
            values[WEIGHTS_PATH_KEY] = value if choice == WEIGHTS_FILE else ""
        else:
            values[field.key] = _to_widget(value, field)
    return values


def _weights(values: dict[str, Any], key: str) -> str:
    weights = values[key]
    if weights != WEIGHTS_FILE:
        return str(weights)
    path = str(values.get(WEIGHTS_PATH_KEY) or "").strip()
    if not path:
        raise ConfigError("weights: give the path of a weights file, or choose imagenet / none")
    if not Path(path).expanduser().is_file():
        raise ConfigError(f"weights file {path!r} does not exist")
    return path


def form_to_config(values: dict[str, Any], base: TrainConfig | None = None) -> TrainConfig:
    """A TrainConfig from the form's values (a key left out keeps the base's value); ConfigError with a clear
    message when one is wrong."""
    base = base or TrainConfig()
    changes: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for field in FORM_FIELDS:
        if field.key not in values:
            continue
        value = _weights(values, field.key) if field.path == ("weights",) else _from_widget(values[field.key], field)
        if len(field.path) == 1:
            changes[field.path[0]] = value
        else:
            nested.setdefault(field.path[0], {})[field.path[1]] = value
    for name, parts in nested.items():
        changes[name] = dataclasses.replace(getattr(base, name), **parts)
    return base.replace(**changes)
