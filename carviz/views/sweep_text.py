"""Sweeps in words: how many runs a grid launches (before launching) and wording that follows a sweep's state."""

from __future__ import annotations

from carviz.core.config import SweepConfig

ACTIVE = ("queued", "running")  # sweep states that still change; "so far" belongs to these only


def _count(n: int, singular: str, plural: str) -> str:
    return f"{n} {singular if n == 1 else plural}"


def grid_size_text(config: SweepConfig) -> str:
    """How many runs the grid launches and why, e.g. "12 runs: 2 learning rates × 3 freeze points × 2 seeds";
    backbones with freeze points of their own are summed: "16 runs: (5 freeze points for mobilenet + 3 for
    resnet50) × 2 learning rates × 1 seed"."""
    points = {backbone: len(config.points_for(backbone)) for backbone in config.backbones}
    learning_rates = _count(len(config.learning_rates), "learning rate", "learning rates")
    seeds = _count(len(config.seeds), "seed", "seeds")
    if len(set(points.values())) > 1:  # each backbone its own freeze points: their sum times the rest
        parts = [f"{_count(n, 'freeze point', 'freeze points') if i == 0 else n} for {backbone}"
                 for i, (backbone, n) in enumerate(points.items())]
        factors = ["(" + " + ".join(parts) + ")", learning_rates, seeds]
    else:
        factors = [learning_rates, _count(next(iter(points.values()), 0), "freeze point", "freeze points"), seeds]
        if len(config.backbones) > 1:
            factors.insert(0, _count(len(config.backbones), "backbone", "backbones"))
    return f"{_count(config.size(), 'run', 'runs')}: " + " × ".join(factors)


def best_label(status: str) -> str:
    """The best run's label: "Best so far" while the sweep runs, "Best run" once it has ended."""
    return "Best so far" if status in ACTIVE else "Best run"


def settled_verdict(text: str, status: str) -> str:
    """The verdict's words for the sweep's state: an ended sweep's verdict does not say "so far" or "yet"."""
    if status in ACTIVE:
        return text
    return text.replace("one configuration so far:", "one configuration:").replace(
        "no finished runs yet:", "no finished runs:")
