"""Side-by-side config diff of runs: one row per config field (nested ones dotted), one column per run."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

FIELD = "field"
DIFFERS = "differs"
MISSING = "(not set)"  # the field is absent from that run's config (e.g. a config written before it existed)


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys ({"augmentation": {"flip": True}} -> {"augmentation.flip": True}), in the
    config's own order; lists and other values stay as they are."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def show_value(value: Any) -> str:
    """A config value as text: strings as they are, everything else as JSON (true, null, [1, 2], 0.001)."""
    return value if isinstance(value, str) else _canonical(value)


def unique_labels(labels: Sequence[str]) -> list[str]:
    """The labels, a repeated one numbered ("x", "x (2)"), so each can name a column."""
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} ({seen[label]})")
    return out


def config_diff(configs: Sequence[tuple[str, Mapping[str, Any]]], show_identical: bool = False) -> pd.DataFrame:
    """One row per config field that differs between the runs (every field with show_identical), one column per
    run (its label) holding the value as text, MISSING where a run's config lacks the field; DIFFERS says whether
    the row differs. Fields in the order they first appear (the config's own order). (label, config) per run."""
    labels = unique_labels([FIELD, DIFFERS, *(label for label, _ in configs)])[2:]  # never the other columns' names
    flats = [flatten(config) for _, config in configs]
    fields: list[str] = []
    for flat in flats:
        fields.extend(key for key in flat if key not in fields)
    records = []
    for field in fields:
        keys = {_canonical(flat[field]) if field in flat else None for flat in flats}  # None: absent
        differs = len(keys) > 1
        if differs or show_identical:
            cells = [show_value(flat[field]) if field in flat else MISSING for flat in flats]
            records.append({FIELD: field, **dict(zip(labels, cells)), DIFFERS: differs})
    return pd.DataFrame.from_records(records, columns=[FIELD, *labels, DIFFERS])
