"""Time left, estimated from what a job has shown so far: a count-to-total task at its rate (a feature pass, LR range
test steps, a crawl), and a sweep from its runs' epochs, their fixed cost per run, pruning and the workers it has.

A sweep's estimate: each unfinished run's expected epochs left (a run before the pruning rung reaches it, and goes
on past it with the chance its configuration survives: 1 when another seed of it already passed the rung, 0 when
it was pruned, else the keep fraction), times its configuration's seconds per epoch (its own runs', else the
sweep's median); plus the fixed cost of a run (start-up, the first epoch's tracing, evaluation and saving:
measured on the finished runs) for each run not started yet, and its wind-down for the running ones; then laid out
on the sweep's concurrent workers in launch order. None until an epoch has been measured.
"""

from __future__ import annotations

import heapq
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


class Rate:
    """Seconds left of a task counted done of total, at its rate since the first report (whose own work, done
    before the clock started, is not counted in the rate)."""

    def __init__(self) -> None:
        self.started: float | None = None
        self.first_done: float = 0.0

    def eta(self, done: int | float, total: int | float) -> float | None:
        """None at the first report (it starts the clock) and until work is seen after it; 0 when all is done."""
        if done >= total:
            return 0.0
        now = time.monotonic()
        if self.started is None:
            self.started, self.first_done = now, done
            return None
        elapsed, progressed = now - self.started, done - self.first_done
        if progressed <= 0 or elapsed <= 0:
            return None
        return (total - done) * elapsed / progressed


@dataclass(frozen=True)
class RunTiming:
    """What the estimate needs of one run of a sweep."""

    status: str  # queued, running, succeeded, pruned, failed, stopped, lost
    point: Any  # its configuration (grid_point): runs of one point differ only in their seed
    epochs: int
    epoch_seconds: Sequence[float] = ()  # its finished epochs', in order
    wall_seconds: float | None = None  # started -> ended, for a finished run
    started: bool = False  # has reached its first training step


@dataclass(frozen=True)
class PruneRule:
    rung: int
    keep_fraction: float


@dataclass
class _Speeds:
    """Seconds per epoch by configuration (epochs after the first: the first includes tracing), and the fixed cost
    of a run (its wall time less its epochs at the steady rate)."""

    by_point: dict[Any, float] = field(default_factory=dict)
    overall: float | None = None
    fixed: float = 0.0

    @classmethod
    def measure(cls, runs: Sequence[RunTiming]) -> "_Speeds":
        samples: dict[Any, list[float]] = {}
        for run in runs:
            steady = list(run.epoch_seconds[1:]) or list(run.epoch_seconds)
            samples.setdefault(run.point, []).extend(steady)
        speeds = cls({point: statistics.median(values) for point, values in samples.items() if values})
        everything = [value for values in samples.values() for value in values]
        speeds.overall = statistics.median(everything) if everything else None
        fixed = [run.wall_seconds - len(run.epoch_seconds) * speeds.per_epoch(run.point)
                 for run in runs if run.status == "succeeded" and run.wall_seconds and run.epoch_seconds]
        speeds.fixed = max(0.0, statistics.median(fixed)) if fixed else 0.0
        return speeds

    def per_epoch(self, point: Any) -> float:
        return self.by_point.get(point, self.overall or 0.0)


def _survival(run: RunTiming, runs: Sequence[RunTiming], rule: PruneRule) -> float:
    siblings = [other for other in runs if other is not run and other.point == run.point]
    if any(other.status == "pruned" for other in siblings):
        return 0.0
    if any(len(other.epoch_seconds) > rule.rung for other in siblings):
        return 1.0
    return rule.keep_fraction


def expected_epochs_left(run: RunTiming, runs: Sequence[RunTiming], rule: PruneRule | None) -> float:
    """Epochs this unfinished run is expected to train still, pruning considered."""
    done = len(run.epoch_seconds)
    if rule is None or done >= rule.rung:
        return float(max(0, run.epochs - done))
    survival = _survival(run, runs, rule)
    if survival == 0.0 and run.status == "queued":
        return 0.0  # its configuration is pruned: it will be passed over
    return (rule.rung - done) + survival * max(0, run.epochs - rule.rung)


def sweep_eta(runs: Sequence[RunTiming], rule: PruneRule | None, workers: int) -> float | None:
    """Seconds until every run of the sweep has ended, or None before any epoch was measured."""
    speeds = _Speeds.measure(runs)
    if speeds.overall is None:
        return None
    lanes: list[float] = []
    queued: list[float] = []
    for run in runs:
        if run.status not in ("queued", "running"):
            continue
        epochs = expected_epochs_left(run, runs, rule)
        if run.status == "queued" and epochs == 0.0:
            continue
        seconds = epochs * speeds.per_epoch(run.point) + (speeds.fixed / 2 if run.started else speeds.fixed)
        (lanes if run.status == "running" else queued).append(seconds)
    if not lanes and not queued:
        return 0.0
    lanes = sorted(lanes)[:max(1, workers)]
    lanes += [0.0] * max(0, workers - len(lanes))
    heapq.heapify(lanes)
    for seconds in queued:  # each next run goes to the first worker free
        heapq.heappush(lanes, heapq.heappop(lanes) + seconds)
    return max(lanes)
