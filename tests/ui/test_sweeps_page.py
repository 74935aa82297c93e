"""The Sweeps page under AppTest: no sweeps, a finished hand-made sweep, and launching (the feeder stubbed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from carviz.core import sweeps as sweep
from carviz.core.config import PRESETS
from carviz.data.datasets import generate_demo_dataset
from carviz.core.store import METRIC_COLUMNS, Run, Status, atomic_write_json
from carviz.core.jobs.record import HEARTBEAT_FILE, now_iso
from carviz.core.jobs.status import process_create_time
from carviz.core.sweeps import PruneConfig, SweepConfig
from carviz.views.formatting import format_time

PAGE = str(Path(__file__).resolve().parents[2] / "app_pages" / "sweeps.py")


def finish(run: Run, accuracies: list[float], status: Status = Status.SUCCEEDED) -> None:
    lines = [",".join(METRIC_COLUMNS)]
    lines += [f"{e},1.0,0.5,1.0,{a},0.001,2.0" for e, a in enumerate(accuracies, start=1)]
    run.file("metrics.csv").write_text("\n".join(lines) + "\n")
    run.write_status(status, started_at="2026-01-01T00:00:00+00:00", ended_at="2026-01-01T00:00:08+00:00",
                     **({"pruned_at_epoch": len(accuracies)} if status == Status.PRUNED else {}))
    atomic_write_json(run.file("run.json"), {"model": {"trainable_params": 1000 * run.config().freeze
                                                       if isinstance(run.config().freeze, int) else 10,
                                                       "first_trainable": f"layer{run.config().freeze}"}})


@pytest.fixture
def demo(carviz_home: Path) -> Path:
    generate_demo_dataset(carviz_home / "data" / "demo", per_class=4, image_size=48)
    return carviz_home


def test_renders_with_no_sweeps(demo: Path) -> None:
    at = AppTest.from_file(PAGE, default_timeout=30).run()
    assert not at.exception
    assert any("No sweeps yet" in info.value for info in at.info)
    assert at.multiselect(key="sw_backbones").value == ["small_cnn"]


def test_a_finished_sweep_is_listed_and_charted(demo: Path) -> None:
    config = SweepConfig(name="hand made", base=PRESETS["demo quick"].replace(epochs=3), backbones=("small_cnn",),
                         learning_rates=(1e-3,), freeze_points=(1, 4), seeds=(1, 2),
                         prune=PruneConfig(rungs=(1,), min_runs=2))
    record = sweep.create_sweep(config)
    runs = record.runs()  # seed 1: freeze 1, freeze 4; seed 2: freeze 1, freeze 4
    finish(runs[0], [0.5, 0.6, 0.7])
    finish(runs[2], [0.5, 0.8, 0.9])
    finish(runs[1], [0.3], status=Status.PRUNED)
    finish(runs[3], [0.4, 0.5, 0.6])
    at = AppTest.from_file(PAGE, default_timeout=30).run()
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table["id"]) == [record.id] and list(table["progress"]) == ["4 of 4 done"]
    assert list(table["status"]) == ["done"]
    text = " ".join(m.value for m in at.markdown)
    assert "4 of 4 done" in text and "pruned" in text
    # freeze 1: seeds 1 and 2 finished (0.7, 0.9); freeze 4: seed 1 pruned (left out), seed 2 finished (0.6)
    verdict = ("no clear winner: small_cnn · lr 1e-03 · freeze 1 80.0 ± 14.1 % (n=2) and small_cnn · lr 1e-03 · "
               "freeze 4 60.0 ± 0.0 % (n=1) are 20.0 points apart, and with one finished run the spread is unknown")
    assert list(table["verdict"]) == [verdict]  # the sweeps table says what sweep-show says
    assert any(verdict.replace("_", "\\_") == c.value for c in at.caption)
    assert any(c.value.startswith("Best run: ") and "90.0 %" in c.value and "kept: epoch 3 (best val)" in c.value
               for c in at.caption)
    assert not any("so far" in c.value for c in at.caption)  # the sweep is done: its best is no longer "so far"
    assert at.button(key="sw_stop").disabled and at.button(key="sw_resume").disabled
    charts = at.get("plotly_chart")
    assert len(charts) == 3  # freeze chart, time, parameters
    points = at.dataframe[1].value  # the points table under the chart
    assert points["n"].tolist() == [2, 1] and points["pruned"].tolist() == [0, 1]


def test_launch_creates_the_record(demo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    feeders: list[str] = []
    monkeypatch.setattr(sweep, "start_feeder", lambda record: feeders.append(record.id) or 1)
    at = AppTest.from_file(PAGE, default_timeout=30).run()
    at.text_input(key="sw_name").set_value("ui sweep")
    at.text_input(key="sw_lrs").set_value("1e-3, 3e-4")
    at.text_input(key="sw_freeze_text").set_value("1, 4, all")
    at.checkbox(key="sw_prune").check()
    at.run()
    at.text_input(key="sw_rungs").set_value("1")
    at.button(key="sw_launch").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    records = sweep.list_sweeps()
    assert len(records) == 1 and records[0].config.name == "ui sweep"
    assert records[0].config.prune == PruneConfig(rungs=(1,), keep_fraction=0.5, min_runs=3)
    assert len(records[0].run_ids) == 6 and feeders == [records[0].id]
    assert any("6 runs" in s.value for s in at.success)
    assert list(at.dataframe[0].value["progress"]) == ["0 of 6 done"]


def test_bad_input_is_a_message(demo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sweep, "start_feeder", lambda record: pytest.fail("must not launch"))
    at = AppTest.from_file(PAGE, default_timeout=30).run()
    at.text_input(key="sw_lrs").set_value("fast")
    at.button(key="sw_launch").click().run()
    assert not at.exception
    assert any("comma list" in e.value for e in at.error)
    assert sweep.list_sweeps() == []


def test_freeze_rule_and_layers_prefill(demo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sweep, "start_feeder", lambda record: 1)
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state["train_prefill"] = {"backbone": "small_cnn", "alpha": 1.0, "image_size": 32, "freeze": 4}
    at.run()
    assert "from the Layers page" in at.radio(key="sw_freeze_mode").options
    at.radio(key="sw_freeze_mode").set_value("from the Layers page").run()
    at.button(key="sw_launch").click().run()
    assert not at.exception and not at.error
    assert sweep.list_sweeps()[0].config.freeze_points == (4,)
    at.radio(key="sw_freeze_mode").set_value("generated by rule").run()
    at.selectbox(key="sw_rule").set_value("every convolution").run()
    at.text_input(key="sw_name").set_value("by rule")
    at.button(key="sw_launch").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    newest = sweep.list_sweeps()[0]
    assert newest.config.name == "by rule" and newest.config.points_for("small_cnn") == (2, 4, 6)


def test_grid_points_that_freeze_a_random_backbone_are_warned_about(demo: Path) -> None:
    at = AppTest.from_file(PAGE, default_timeout=30).run()
    assert not at.exception
    # the defaults (demo quick: small_cnn from scratch, so freeze 1 only: train every layer) warn of nothing
    assert not [w for w in at.warning if "Frozen random backbone" in w.value]
    at.text_input(key="sw_freeze_text").set_value("1, all").run()
    frozen = [w.value for w in at.warning if "Frozen random backbone" in w.value]
    assert len(frozen) == 1 and "2 of 4 runs (small_cnn freeze all)" in frozen[0]
    at.text_input(key="sw_freeze_text").set_value("1, 3, 5").run()
    [text] = [w.value for w in at.warning if "Frozen random backbone" in w.value]
    assert "4 of 6 runs (small_cnn freeze 3, small_cnn freeze 5)" in text
    at.text_input(key="sw_freeze_text").set_value("1").run()  # trains every layer: nothing to warn about
    assert not [w for w in at.warning if "Frozen random backbone" in w.value]
    at.multiselect(key="sw_backbones").set_value(["mobilenet"])
    at.selectbox(key="sw_weights").set_value("imagenet")
    at.text_input(key="sw_freeze_text").set_value("47, all").run()
    assert not at.exception and not [w for w in at.warning if "Frozen random backbone" in w.value]


def test_a_learning_rate_from_the_lr_range_test_fills_the_grid(demo: Path) -> None:
    at = AppTest.from_file(PAGE, default_timeout=30)
    at.session_state["sweep_lr_prefill"] = 3e-4  # what "Use this learning rate" on the Train page leaves
    at.run()
    assert not at.exception
    assert at.text_input(key="sw_lrs").value == "0.0003, 3e-05"


def test_the_form_says_how_many_runs_before_launch(demo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sweep, "start_feeder", lambda record: pytest.fail("must not launch"))
    at = AppTest.from_file(PAGE, default_timeout=30).run()
    assert not at.exception

    def planned() -> list[str]:
        return [m.value for m in at.markdown if " runs: " in m.value or "Not launchable" in m.value]

    assert planned() == ["2 runs: 2 learning rates × 1 freeze point × 1 seed"]  # the defaults
    at.text_input(key="sw_freeze_text").set_value("1, 3, all")
    at.text_input(key="sw_seeds").set_value("1, 2").run()
    assert planned() == ["12 runs: 2 learning rates × 3 freeze points × 2 seeds"]  # live, before any launch
    at.text_input(key="sw_lrs").set_value("fast").run()
    assert len(planned()) == 1 and planned()[0].startswith("Not launchable yet:") and "comma list" in planned()[0]
    assert sweep.list_sweeps() == []


def test_tables_show_local_times_and_a_running_sweep_its_best_so_far(demo: Path) -> None:
    config = SweepConfig(name="half way", base=PRESETS["demo quick"].replace(epochs=3), backbones=("small_cnn",),
                         learning_rates=(1e-3,), freeze_points=(1, 4), seeds=(1,))
    record = sweep.create_sweep(config)
    first, second = record.runs()
    finish(first, [0.5, 0.6, 0.7])
    second.write_status(Status.RUNNING, pid=os.getpid(), pid_create_time=process_create_time(os.getpid()),
                        started_at=now_iso())  # this process plays the running job
    second.file(HEARTBEAT_FILE).write_text(now_iso())
    assert sweep.read_sweep(record.id).status == "running"
    at = AppTest.from_file(PAGE, default_timeout=30).run()
    assert not at.exception
    table = at.dataframe[0].value
    created = str(table["created"][0])
    assert created == format_time(record.created_at) and "T" not in created and "+00:00" not in created
    assert any(c.value.startswith("Best so far: ") and "70.0 %" in c.value for c in at.caption)
