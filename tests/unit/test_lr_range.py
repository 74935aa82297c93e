"""LR range test: schedule, smoothing and suggestion on synthetic curves; a real tiny run; the job record; the figure."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from carviz.ml import lr_range
from carviz.core import store as runs
from carviz.core.jobs import record
from carviz.core.jobs.status import process_create_time
from carviz.core.config import TrainConfig
from carviz.data.datasets import generate_demo_dataset
from carviz.ml.lr_range import LRRangeResult, ema_smooth, exponential_schedule, suggest_lr, suggestion_parts
from carviz.views.plots.lr_range import lr_range_figure
from carviz.core.store import Status

TINY = TrainConfig(name="lr tiny", dataset="demo", backbone="small_cnn", weights="none", image_size=32, head="seed",
                   batch_size=8, precision="float32")


def test_schedule_is_geometric_from_min_to_max() -> None:
    lrs = exponential_schedule(1e-6, 1.0, 7)
    assert len(lrs) == 7
    assert lrs[0] == pytest.approx(1e-6) and lrs[-1] == 1.0
    ratios = [b / a for a, b in zip(lrs, lrs[1:])]
    assert all(r == pytest.approx(10.0) for r in ratios)
    with pytest.raises(ValueError):
        exponential_schedule(1e-3, 1e-4, 10)
    with pytest.raises(ValueError):
        exponential_schedule(1e-6, 1.0, 1)


def test_ema_is_bias_corrected() -> None:
    assert ema_smooth([3.0, 3.0, 3.0], beta=0.9) == pytest.approx([3.0, 3.0, 3.0])  # no pull towards 0
    smoothed = ema_smooth([1.0, 0.0], beta=0.5)
    assert smoothed == pytest.approx([1.0, (0.5 * 0.5) / (1 - 0.25)])
    assert ema_smooth([1.0, 2.0], beta=0.0) == [1.0, 2.0]
    assert math.isnan(ema_smooth([1.0, float("nan"), 1.0])[-1])


def _curve(lrs: list[float]) -> list[float]:
    """A typical range-test curve: flat, a drop centred at 1e-4, a minimum near 1e-2, then a blow-up."""
    out = []
    for lr in lrs:
        x = math.log10(lr)
        out.append(2.0 - 1.5 / (1 + math.exp(-3 * (x + 4))) + math.exp(3 * (x + 1.5)))
    return out


def test_suggestion_on_a_typical_curve_is_the_steep_part() -> None:
    lrs = exponential_schedule(1e-6, 1.0, 121)
    loss = _curve(lrs)
    min_loss_lr, steepest = suggestion_parts(lrs, loss)
    assert 1e-3 < min_loss_lr < 1e-1
    assert steepest == pytest.approx(1e-4, rel=0.15)
    suggested = suggest_lr(lrs, loss)
    assert suggested == min(steepest, min_loss_lr / 10)
    assert suggested < min_loss_lr


def test_suggestion_on_a_u_shape_is_left_of_the_minimum() -> None:
    lrs = exponential_schedule(1e-5, 1.0, 50)
    loss = [(math.log10(lr) + 2) ** 2 + 0.5 for lr in lrs]  # minimum at 1e-2
    min_loss_lr, _ = suggestion_parts(lrs, loss)
    assert min_loss_lr == pytest.approx(1e-2, rel=0.3)
    suggested = suggest_lr(lrs, loss)
    assert lrs[0] <= suggested < min_loss_lr


def test_suggestion_edge_cases() -> None:
    lrs = exponential_schedule(1e-4, 1.0, 20)
    rising = [1.0 + i for i in range(20)]
    assert suggest_lr(lrs, rising) == lrs[0]  # minimum at the start: min/10 is clamped into the range
    assert suggest_lr(lrs[:2], rising[:2]) is None
    diverged = _curve(lrs)[:10] + [float("nan")] * 10  # a NaN tail is ignored
    assert lrs[0] <= suggest_lr(lrs, diverged) <= lrs[9]


def test_result_round_trips_through_json_with_nan() -> None:
    result = LRRangeResult(lrs=[1e-3, 1e-2], losses=[1.0, float("nan")], smoothed_losses=[1.0, float("nan")],
                           suggested_lr=None, stopped_early_reason="loss is not finite")
    data = result.to_dict()
    assert data["losses"] == [1.0, None]
    back = LRRangeResult.from_dict(data)
    assert back.lrs == result.lrs and math.isnan(back.losses[1]) and back.stopped_early_reason


def test_figure_is_log_x_with_a_marker() -> None:
    lrs = exponential_schedule(1e-6, 1.0, 30)
    loss = _curve(lrs)
    result = LRRangeResult(lrs=lrs, losses=loss, smoothed_losses=ema_smooth(loss), suggested_lr=1e-4)
    fig = lr_range_figure(result)
    assert fig.layout.xaxis.type == "log"
    assert [trace.name for trace in fig.data] == ["loss", "smoothed loss"]
    assert fig.data[0].opacity < 1
    [line] = fig.layout.shapes
    assert line.x0 == line.x1 == 1e-4  # shapes take data values on a log axis
    assert fig.layout.annotations[0].x == pytest.approx(-4)  # annotations take log10
    empty = lr_range_figure(LRRangeResult(lrs=[], losses=[], smoothed_losses=[], suggested_lr=None))
    assert not empty.layout.shapes


def test_real_tiny_run_as_a_recorded_job(carviz_home: Path) -> None:
    generate_demo_dataset(carviz_home / "data" / "demo", per_class=8, image_size=40)
    path = lr_range.create_lr_range(TINY, min_lr=1e-5, max_lr=1.0, steps=20)
    assert path.parent == carviz_home / "runs" / ".lr_range"
    assert lr_range.read_lr_range(path).status == Status.QUEUED
    assert runs.list_runs() == []  # tests never show up as training runs

    result = lr_range.run_lr_range_job(path)

    assert 3 <= len(result.lrs) <= 20
    assert len(result.losses) == len(result.smoothed_losses) == len(result.lrs)
    if len(result.lrs) < 20:
        assert result.stopped_early_reason
    assert all(b > a for a, b in zip(result.lrs, result.lrs[1:]))
    assert all(math.isfinite(v) for v in result.losses[:-1])  # only a diverged last step may be NaN
    assert result.suggested_lr is not None and 1e-5 <= result.suggested_lr <= 1.0
    state = lr_range.read_lr_range(path)
    assert state.status == Status.SUCCEEDED and state.result is not None
    assert state.result.suggested_lr == pytest.approx(result.suggested_lr)
    assert state.progress["step"] == len(result.lrs) and state.progress["steps"] == 20
    assert state.config["backbone"] == "small_cnn" and state.params["steps"] == 20
    assert lr_range.list_lr_ranges() == [path]


def test_dead_process_reads_as_lost(carviz_home: Path) -> None:
    path = lr_range.create_lr_range(TINY, steps=10)
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    create_time = process_create_time(process.pid)
    process.wait()
    runs.Run(path).write_status(Status.RUNNING, pid=process.pid, pid_create_time=create_time)
    state = lr_range.read_lr_range(path)
    assert state.status == Status.LOST and "gone" in state.reason


def test_bad_range_is_refused_before_any_folder(carviz_home: Path) -> None:
    with pytest.raises(ValueError):
        lr_range.create_lr_range(TINY, min_lr=1.0, max_lr=1e-3)
    assert lr_range.list_lr_ranges() == []


def test_cli_lr_find_prints_a_table_and_the_suggestion(carviz_home: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from carviz import cli

    generate_demo_dataset(carviz_home / "data" / "demo", per_class=4, image_size=40)
    seen: dict = {}

    def fake_test(config, min_lr, max_lr, steps, on_step=None, should_stop=None, **_cache_options):
        seen.update(config=config, min_lr=min_lr, max_lr=max_lr, steps=steps)
        lrs = exponential_schedule(min_lr, max_lr, steps)
        loss = _curve(lrs)
        smoothed = ema_smooth(loss)
        for i, (lr, value) in enumerate(zip(lrs, loss), start=1):
            on_step(i, lr, value)
        return LRRangeResult(lrs=lrs, losses=loss, smoothed_losses=smoothed, suggested_lr=suggest_lr(lrs, smoothed))

    monkeypatch.setattr(lr_range, "lr_range_test", fake_test)
    code = cli.main(["lr-find", "--preset", "demo quick", "--image-size", "48", "--lr", "0.5", "--steps", "30",
                     "--min-lr", "1e-6", "--max-lr", "1"])
    out = capsys.readouterr().out
    assert code == 0
    assert seen["config"].image_size == 48 and seen["config"].backbone == "small_cnn"
    assert (seen["min_lr"], seen["max_lr"], seen["steps"]) == (1e-6, 1.0, 30)
    assert "suggested learning rate" in out and "smoothed" in out
    [path] = lr_range.list_lr_ranges()
    assert lr_range.read_lr_range(path).status == Status.SUCCEEDED


def test_launch_is_detached_and_a_failure_is_recorded(carviz_home: Path) -> None:
    import time

    path = lr_range.launch_lr_range(TINY.replace(dataset="no such dataset"), steps=10)
    launch = runs.read_json(path / record.LAUNCH_FILE)
    assert launch and launch["pid"]
    deadline = time.monotonic() + 30
    while not lr_range.read_lr_range(path).status.is_terminal() and time.monotonic() < deadline:
        time.sleep(0.2)
    state = lr_range.read_lr_range(path)
    assert state.status == Status.FAILED and "not found" in (state.error or "")
    assert "not found" in (path / record.LOG_FILE).read_text()
