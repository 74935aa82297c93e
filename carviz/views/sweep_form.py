"""The Sweeps page's form as data, and the SweepConfig it describes (built once per rerun, no Streamlit here)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from carviz.core import sweeps
from carviz.core.config import ConfigError, SweepConfig, TrainConfig
from carviz.views.layer_select import parse_freeze


@dataclass(frozen=True)
class SweepForm:
    """What the form's widgets hold. freeze_text: the typed (or Layers-page) freeze points; rule/every: a freeze
    rule instead (rule None: use freeze_text); alpha: the Layers page's width multiplier, when it set the points."""

    base: TrainConfig  # the chosen preset
    name: str
    dataset: str
    backbones: tuple[str, ...]
    lrs_text: str
    seeds_text: str
    weights: str
    epochs: int
    batch_size: int
    head: str
    image_size: int
    freeze_text: str = ""
    rule: str | None = None
    every: int = 1
    prune: bool = False
    rungs_text: str = ""
    keep_fraction: float = 0.5
    min_runs: int = 3
    augment: bool = False
    feature_cache: bool = True
    alpha: float | None = None


def numbers(text: str, kind: Callable[[str], Any], what: str) -> list[Any]:
    """A comma list of numbers; ValueError naming the field and the entry that is not a number."""
    values = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            values.append(kind(part))
        except ValueError:
            number = "whole number" if kind is int else "number"
            raise ValueError(f"{what}: {part!r} is not a {number} (write a comma list, e.g. "
                             f"{'1, 2, 3' if kind is int else '1e-3, 3e-4'})") from None
    return values


def base_config(form: SweepForm) -> TrainConfig:
    """The config every run of the sweep starts from (its backbone is the first chosen one)."""
    if not form.backbones:
        raise ConfigError("choose at least one backbone")
    return form.base.replace(dataset=form.dataset, backbone=form.backbones[0], weights=form.weights,
                             epochs=int(form.epochs), batch_size=int(form.batch_size), head=form.head,
                             image_size=int(form.image_size),
                             alpha=form.alpha if form.alpha is not None else form.base.alpha,
                             augmentation=dataclasses.replace(form.base.augmentation, enabled=form.augment),
                             feature_cache=form.feature_cache)


def typed_freeze_points(form: SweepForm) -> list[Any]:
    """The typed freeze points that parse (building the sweep reports the others)."""
    points = []
    for text in form.freeze_text.split(","):
        try:
            points.append(parse_freeze(text))
        except ConfigError:
            pass
    return points


def sweep_config(form: SweepForm, layers_of: Callable[[str, int, float], Any]) -> SweepConfig:
    """The SweepConfig the form describes; ConfigError/ValueError with a readable message when it is wrong.
    layers_of(backbone, image size, alpha) lists a backbone's layers (for a freeze rule)."""
    base = base_config(form)
    per_backbone: dict[str, tuple] = {}
    if form.rule:
        per_backbone = {b: tuple(sweeps.freeze_points_from_layers(layers_of(b, int(form.image_size), base.alpha),
                                                                  form.rule, form.every)) for b in form.backbones}
        if not all(per_backbone.values()):
            raise ConfigError(f"the rule {form.rule!r} finds no freeze point for some backbone")
        points: tuple = per_backbone[form.backbones[0]]
    else:
        points = tuple(p.strip() for p in form.freeze_text.split(",") if p.strip())
    prune = sweeps.PruneConfig(tuple(numbers(form.rungs_text, int, "rungs")), float(form.keep_fraction),
                               int(form.min_runs)) if form.prune else None
    return SweepConfig(name=form.name, base=base, backbones=tuple(form.backbones),
                       learning_rates=tuple(numbers(form.lrs_text, float, "learning rates")), freeze_points=points,
                       seeds=tuple(numbers(form.seeds_text, int, "seeds")), prune=prune, backbone_freeze_points=per_backbone)
