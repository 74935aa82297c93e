"""Card words agree with the run's state: progress lines and live values."""

from __future__ import annotations

from carviz.views.run_notes import live_value, progress_line


def test_a_stopped_or_finished_run_says_so_not_its_last_phase() -> None:
    last = {"phase": "training", "epoch": 11, "epochs": 90, "step": 3, "steps_per_epoch": 12}
    assert progress_line("stopped", last, 10, 90) == "stopped · 10/90 epochs"
    assert progress_line("succeeded", {"phase": "done"}, 90, 90) == "succeeded · 90/90 epochs"
    assert progress_line("lost", last, 10, 90) == "lost · 10/90 epochs"


def test_a_running_run_shows_its_step_only_mid_epoch() -> None:
    assert progress_line("running", {"phase": "training", "epoch": 3, "step": 4, "steps_per_epoch": 8}, 2, 5) \
        == "training · epoch 3/5 · step 4/8"
    assert progress_line("running", {"phase": "training", "epoch": 3, "step": 0, "steps_per_epoch": 8}, 2, 5) \
        == "training · epoch 3/5"  # a fast epoch shows no 'step 0/8' all along
    assert progress_line("running", {"phase": "computing features", "step": 2, "steps_per_epoch": 9}, 0, 5) \
        == "computing features · batch 2/9"
    assert progress_line("queued", {}, 0, 5) == "waiting for a slot"


def test_live_values_fall_back_to_the_last_epoch() -> None:
    last = {"loss": 0.5, "accuracy": 0.8}
    assert live_value({"loss": None}, last, "loss") == 0.5  # the epoch-start write has no running loss yet
    assert live_value({"loss": 0.4}, last, "loss") == 0.4
    assert live_value({"accuracy": "x"}, last, "accuracy") == 0.8
