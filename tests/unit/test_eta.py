"""Time-left estimates (core/eta.py): pruning, configurations' own speeds, the fixed cost per run, workers."""

from __future__ import annotations

import pytest

from carviz.core.eta import PruneRule, Rate, RunTiming, expected_epochs_left, sweep_eta

RULE = PruneRule(rung=10, keep_fraction=0.5)


def run(status: str, point: str, epochs_done: int = 0, seconds: float = 1.0, epochs: int = 20,
        wall: float | None = None) -> RunTiming:
    return RunTiming(status=status, point=point, epochs=epochs, epoch_seconds=[seconds] * epochs_done,
                     wall_seconds=wall, started=epochs_done > 0)


def test_epochs_left_count_the_chance_of_passing_the_rung() -> None:
    fresh = run("queued", "a")
    assert expected_epochs_left(fresh, [fresh], RULE) == 10 + 0.5 * 10
    assert expected_epochs_left(fresh, [fresh], None) == 20
    past = run("running", "a", epochs_done=12)
    assert expected_epochs_left(past, [past], RULE) == 8  # past the rung: it will finish
    survivor = run("succeeded", "b", epochs_done=20)
    sibling = run("queued", "b")
    assert expected_epochs_left(sibling, [survivor, sibling], RULE) == 20  # its configuration passed the rung
    pruned = run("pruned", "c", epochs_done=10)
    skipped = run("queued", "c")
    assert expected_epochs_left(skipped, [pruned, skipped], RULE) == 0  # passed over when its turn comes


def test_a_sweep_estimate_uses_each_configurations_speed_the_fixed_cost_and_the_workers() -> None:
    runs = [run("succeeded", "slow", epochs_done=20, seconds=2.0, wall=45.0),  # fixed cost 5 s
            run("succeeded", "fast", epochs_done=20, seconds=0.5, wall=15.0),  # fixed cost 5 s
            run("queued", "slow"), run("queued", "fast"), run("queued", "fast"), run("queued", "fast")]
    # Both configurations passed the rung, so their seeds train all 20 epochs: 45 s and 3 x 15 s of work.
    assert sweep_eta(runs, RULE, workers=1) == pytest.approx(45 + 3 * 15)
    assert sweep_eta(runs, RULE, workers=2) == pytest.approx(45)  # the slow one on one worker, the rest beside it
    assert sweep_eta(runs, RULE, workers=4) == pytest.approx(45)


def test_running_runs_are_placed_first_and_an_unmeasured_sweep_has_no_estimate() -> None:
    assert sweep_eta([run("queued", "a"), run("queued", "b")], RULE, workers=2) is None
    runs = [run("running", "a", epochs_done=15, seconds=1.0), run("queued", "a")]
    # The running run: 5 epochs and half the fixed cost (none measured: 0); the queued seed passes the rung too.
    assert sweep_eta(runs, RULE, workers=1) == pytest.approx(5 + 20)
    assert sweep_eta([run("succeeded", "a", epochs_done=20, wall=20.0)], RULE, workers=2) == 0.0


def test_a_rate_says_nothing_until_it_has_seen_work() -> None:
    rate = Rate()
    assert rate.eta(10, 100) is None  # the first report starts the clock; its 10 were done before it
    rate.started -= 10.0  # ten seconds ago
    assert rate.eta(10, 100) is None
    assert rate.eta(30, 100) == pytest.approx(70 * 10.0 / 20, rel=0.05)  # 20 done in 10 s: 70 left at 2 per s
    assert rate.eta(100, 100) == 0.0
