"""Train page, "Find a learning rate": the expander, launching in the background, a finished test's figure and its
suggestion sent to the form."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from carviz.ml import lr_range
from carviz.core.config import PRESETS
from carviz.data.datasets import generate_demo_dataset
from carviz.ml.lr_range import LRRangeResult, ema_smooth, exponential_schedule, suggest_lr
from carviz.core.store import Run, Status, atomic_write_json, now_iso

APP = str(Path(__file__).resolve().parents[2] / "dashboard.py")


def open_train() -> AppTest:
    return AppTest.from_file(APP, default_timeout=30).switch_page("app_pages/train.py").run()


def finished_test() -> tuple[Path, float]:
    """A hand-made, finished test folder with a U-shaped curve."""
    path = lr_range.create_lr_range(PRESETS["demo quick"], min_lr=1e-5, max_lr=1.0, steps=40)
    lrs = exponential_schedule(1e-5, 1.0, 40)
    losses = [1.4 - 0.8 * min(1.0, max(0.0, (x + 4) / 2)) + max(0.0, x + 1.5) ** 2
              for x in (math.log10(lr) for lr in lrs)]
    smoothed = ema_smooth(losses)
    result = LRRangeResult(lrs=lrs, losses=losses, smoothed_losses=smoothed, suggested_lr=suggest_lr(lrs, smoothed))
    atomic_write_json(path / lr_range.RESULT_FILE, result.to_dict())
    atomic_write_json(path / "progress.json", {"step": 40, "steps": 40, "updated_at": now_iso()})
    Run(path).write_status(Status.SUCCEEDED, ended_at=now_iso())
    assert result.suggested_lr is not None
    return path, result.suggested_lr


def test_expander_renders_with_no_test(carviz_home: Path) -> None:
    generate_demo_dataset(carviz_home / "data" / "demo", per_class=4, image_size=48)
    at = open_train()
    assert not at.exception
    assert any(expander.label == "Find a learning rate" for expander in at.expander)
    assert at.button(key="lr_range_start")
    assert any("No LR range test yet" in caption.value for caption in at.caption)
    assert not at.get("plotly_chart")


def test_launch_uses_the_form_config_and_never_blocks(carviz_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    generate_demo_dataset(carviz_home / "data" / "demo", per_class=4, image_size=48)
    launched: list = []

    def fake_launch(config, min_lr, max_lr, steps, runs_root=None):  # the real launch is in test_lr_range.py
        path = lr_range.create_lr_range(config, min_lr, max_lr, steps, runs_root)
        launched.append((config, min_lr, max_lr, steps))
        return path

    monkeypatch.setattr(lr_range, "launch_lr_range", fake_launch)
    at = open_train()
    at.number_input(key="lr_range_steps").set_value(30)
    at.button(key="lr_range_start").click().run()
    assert not at.exception
    [(config, min_lr, max_lr, steps)] = launched
    assert config.backbone == PRESETS["demo quick"].backbone and config.image_size == PRESETS["demo quick"].image_size
    assert (min_lr, max_lr, steps) == (1e-6, 1.0, 30)
    assert at.button(key="lr_range_start").disabled  # one test at a time: it is queued (no process: lost soon)


def test_finished_test_shows_the_figure_and_sets_the_form_lr(carviz_home: Path) -> None:
    generate_demo_dataset(carviz_home / "data" / "demo", per_class=4, image_size=48)
    _, suggested = finished_test()
    at = open_train()
    assert not at.exception
    assert at.get("plotly_chart")
    assert any("Suggested learning rate" in markdown.value for markdown in at.markdown)
    assert at.number_input(key="tf_learning_rate").value == PRESETS["demo quick"].learning_rate

    at.button(key="lr_range_use").click().run()
    assert not at.exception
    assert at.number_input(key="tf_learning_rate").value == pytest.approx(float(f"{suggested:.2g}"))
    assert at.session_state["train_form_values"]["tf_learning_rate"] == pytest.approx(float(f"{suggested:.2g}"))
    assert at.session_state["sweep_lr_prefill"] == pytest.approx(float(f"{suggested:.2g}"))  # for the Sweeps page
