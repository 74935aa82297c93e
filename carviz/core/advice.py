"""Warnings about configs that launch but cannot learn: a frozen backbone left at random weights."""

from __future__ import annotations

from carviz.core.config import FREEZE_ALL, SweepConfig, TrainConfig, expand

# "freeze N" freezes layers 1…N-1 and layer 1 is the InputLayer (nothing to learn): from N = 3 on, a layer with
# weights is frozen.
FIRST_FREEZE_WITH_WEIGHTS = 3


def freezes_random_layers(config: TrainConfig) -> bool:
    """True when the run starts from random weights (weights 'none') and keeps some of them frozen: those layers never
    train, so they only scramble the image. A weights file, ImageNet weights or a parent run's weights are fine."""
    if str(config.weights).strip().lower() != "none" or config.init_from_run:
        return False
    if config.freeze == FREEZE_ALL:
        return True
    return isinstance(config.freeze, int) and config.freeze >= FIRST_FREEZE_WITH_WEIGHTS


def _fix(backbone: str) -> str:
    if backbone == "small_cnn":  # it has no ImageNet weights: the only fix is to train all of it
        return "Use freeze 1 to train every layer (small_cnn has no ImageNet weights) or a weights file."
    return "Use ImageNet weights (or a weights file), or freeze 1 to train every layer from scratch."


def frozen_random_backbone_warning(config: TrainConfig) -> str | None:
    """One sentence saying a run freezes a random backbone and what to do instead; None when it does not."""
    if not freezes_random_layers(config):
        return None
    frozen = "the whole backbone" if config.freeze == FREEZE_ALL else f"layers 1…{int(config.freeze) - 1}"
    return (f"Frozen random backbone: with weights 'none' and freeze {config.freeze}, {frozen} of {config.backbone} "
            f"keep their random initial values and never train, so the run is likely to end near chance. "
            + _fix(config.backbone))


def sweep_frozen_random_warning(sweep: SweepConfig) -> str | None:
    """The same warning for a sweep: how many of its runs freeze a random backbone, and which grid points."""
    runs = expand(sweep)
    affected = [config for config in runs if freezes_random_layers(config)]
    if not affected:
        return None
    points = list(dict.fromkeys(f"{config.backbone} freeze {config.freeze}" for config in affected))
    backbones = {config.backbone for config in affected}
    fix = _fix("small_cnn") if backbones == {"small_cnn"} else _fix("")
    return (f"Frozen random backbone in {len(affected)} of {len(runs)} runs ({', '.join(points)}): with weights "
            f"'none' their frozen layers keep random values and never train, so those runs are likely to end near "
            f"chance. " + fix)
