"""The Train form's values <-> TrainConfig, derived from the config's field specs (core/field_spec.py).

Every field with a widget has one form value under its key (tf_<name> unless the spec names another); nested
fields (augmentation) have one per part. weights is the one field shown as two widgets: a choice (imagenet, none,
file) and the file's path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from carviz.core.config import ConfigError, TrainConfig
from carviz.core.field_spec import Leaf, leaves, replace_paths

FORM_PREFIX = "tf_"
WEIGHTS_FILE = "file"  # the weights choice that reads the path box
WEIGHTS_PATH_KEY = "tf_weights_path"


FormField = Leaf  # one widget of the Train form: the config field it sets and its spec


def form_key(field: Leaf) -> str:
    return field.spec.form_key or FORM_PREFIX + field.name


FORM_FIELDS: tuple[FormField, ...] = tuple(leaf for leaf in leaves(TrainConfig) if leaf.spec.widget != "none")
FIELD_BY_KEY: dict[str, FormField] = {form_key(f): f for f in FORM_FIELDS}


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
    for key, field in FIELD_BY_KEY.items():
        value = _value_at(config, field.path)
        if field.path == ("weights",):
            choice = value if value in ("imagenet", "none") else WEIGHTS_FILE
            values[key] = choice
            values[WEIGHTS_PATH_KEY] = value if choice == WEIGHTS_FILE else ""
        else:
            values[key] = _to_widget(value, field)
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
    changes = {field.path: _weights(values, key) if field.path == ("weights",) else _from_widget(values[key], field)
               for key, field in FIELD_BY_KEY.items() if key in values}
    return replace_paths(base or TrainConfig(), changes)
