"""Train page: the form, presets, prefill from Layers, ConfigError as a message, launching, and the live jobs area."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from carviz.core import jobs, launch
from carviz.core import store as runs
from carviz.core.jobs import record
from carviz.core.jobs.status import ProcessCheck, check_process, process_create_time
from carviz.core.config import PRESETS
from carviz.views.config_form import FIELD_BY_KEY
from carviz.data.datasets import generate_demo_dataset
from carviz.core.store import Run, Status, create_run, list_runs

APP = str(Path(__file__).resolve().parents[2] / "dashboard.py")


def tiny_demo(home: Path, per_class: int = 4) -> Path:
    return generate_demo_dataset(home / "data" / "demo", per_class=per_class, image_size=48)


def write_metrics(run: Run, epochs: int) -> None:
    lines = ["epoch,loss,accuracy,val_loss,val_accuracy,learning_rate,seconds"]
    for epoch in range(1, epochs + 1):
        lines.append(f"{epoch},{1.5 / epoch:.3f},{0.3 + 0.1 * epoch:.2f},{1.6 / epoch:.3f},{0.25 + 0.1 * epoch:.2f},"
                     "0.001,2.5")
    run.file(runs.METRICS_FILE).write_text("\n".join(lines) + "\n")


def dead_pid() -> tuple[int, float | None]:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    create_time = process_create_time(process.pid)
    process.wait()
    return process.pid, create_time


def make_runs() -> dict[str, Run]:
    """One run in each state the jobs area must show: succeeded, running (this process), failed, lost."""
    base = PRESETS["demo quick"]
    made: dict[str, Run] = {}

    done = create_run(base.replace(name="finished one"))
    write_metrics(done, 5)
    done.write_status(Status.SUCCEEDED, started_at=runs.now_iso(), ended_at=runs.now_iso())
    made["succeeded"] = done

    live = create_run(base.replace(name="live one"))
    write_metrics(live, 2)
    live.write_status(Status.RUNNING, pid=os.getpid(), pid_create_time=process_create_time(os.getpid()),
                      started_at=runs.now_iso())
    live.file(record.HEARTBEAT_FILE).write_text(runs.now_iso())
    runs.atomic_write_json(live.file(record.PROGRESS_FILE), {
        "phase": "training", "epoch": 3, "epochs": 5, "step": 4, "steps_per_epoch": 8,
        "images_per_second": 123.4, "eta_seconds": 42.0, "loss": 0.8, "accuracy": 0.7, "updated_at": runs.now_iso(),
    })
    live.file(record.LOG_FILE).write_text("Epoch 3/5\nstep 4/8\n")
    made["running"] = live

    failed = create_run(base.replace(name="failed one"))
    failed.write_status(Status.FAILED, ended_at=runs.now_iso(), error="ValueError: boom in the data pipeline")
    made["failed"] = failed

    lost = create_run(base.replace(name="lost one"))
    write_metrics(lost, 1)
    pid, create_time = dead_pid()
    lost.write_status(Status.RUNNING, pid=pid, pid_create_time=create_time, started_at=runs.now_iso())
    made["lost"] = lost
    for name, run in made.items():
        assert run.status().value == name, (name, run.state())
    return made


def open_train(at: AppTest) -> AppTest:
    # No url_path is customised, so the page can be chosen before the first run (skips the Data page).
    return at.switch_page("app_pages/train.py").run()


def cards_text(at: AppTest) -> str:
    return " ".join(c.value for c in at.caption) + " " + " ".join(m.value for m in at.markdown)


def test_renders_with_no_runs_and_defaults_to_demo_quick(carviz_home: Path) -> None:
    tiny_demo(carviz_home)
    at = open_train(AppTest.from_file(APP, default_timeout=30))
    assert not at.exception
    assert at.selectbox(key="train_preset").value == "demo quick"
    demo = PRESETS["demo quick"]
    assert at.selectbox(key="tf_backbone").value == demo.backbone
    assert at.number_input(key="tf_image_size").value == demo.image_size
    assert at.selectbox(key="tf_weights").value == "none"
    assert any("No jobs yet" in info.value for info in at.info)
    drawn = {widget.key for kind in ("text_input", "selectbox", "number_input", "slider", "checkbox", "radio")
             for widget in at.get(kind)}
    assert set(FIELD_BY_KEY) <= drawn, f"config fields without a widget: {sorted(set(FIELD_BY_KEY) - drawn)}"


def test_every_job_state_is_shown(carviz_home: Path) -> None:
    tiny_demo(carviz_home)
    made = make_runs()
    at = open_train(AppTest.from_file(APP, default_timeout=30))
    assert not at.exception
    text = cards_text(at)
    for status in ("succeeded", "running", "failed", "lost"):
        assert status in text
    assert "123 img/s" in text  # the live job's progress
    assert "kept: epoch 5 (best val)" in text and "kept: epoch 2 (best val so far)" in text  # which model, said
    assert any("boom in the data pipeline" in error.value for error in at.error)
    charts = at.get("plotly_chart")  # the live job's card charts its finished epochs; finished cards do not
    assert len(charts) == 2
    assert at.button(key=f"stop_{made['running'].id}")
    assert at.button(key=f"resume_{made['lost'].id}") and at.button(key=f"resume_{made['failed'].id}")
    with pytest.raises(KeyError):
        at.button(key=f"stop_{made['succeeded'].id}")

    running = made["running"].id
    at.button(key=f"stop_{running}").click().run()  # Stop asks first (a double click on Resume lands here)
    assert not at.exception and not made["running"].stop_requested()
    assert at.button(key=f"stop_{running}").disabled
    at.button(key=f"stop_no_{running}").click().run()
    assert not made["running"].stop_requested() and not at.button(key=f"stop_{running}").disabled
    at.button(key=f"stop_{running}").click().run()
    at.button(key=f"stop_yes_{running}").click().run()
    assert not at.exception
    assert made["running"].stop_requested()  # the UI only writes the request; the job stops itself
    assert at.button(key=f"stop_{running}").label == "Stopping…"


def test_preset_switch_and_prefill_from_layers(carviz_home: Path) -> None:
    tiny_demo(carviz_home)
    at = AppTest.from_file(APP, default_timeout=30)
    at.session_state["train_prefill"] = {"backbone": "mobilenetv2", "alpha": 0.5, "image_size": 128, "freeze": 30}
    open_train(at)
    assert not at.exception
    assert at.selectbox(key="tf_backbone").value == "mobilenetv2"
    assert at.selectbox(key="tf_alpha").value == 0.5
    assert at.number_input(key="tf_image_size").value == 128
    assert at.text_input(key="tf_freeze").value == "30"
    # a transfer run on the recommended preset, not merged into the demo quick form (weights none, seed head)
    assert at.selectbox(key="tf_weights").value == "imagenet"
    assert at.selectbox(key="tf_head").value == "recommended"
    assert at.text_input(key="tf_name").value == "mobilenetv2 freeze 30"
    assert at.selectbox(key="train_preset").value == "recommended"
    assert any("From Layers: mobilenetv2" in info.value and "ImageNet weights" in info.value for info in at.info)
    assert not at.warning  # nothing frozen at random

    at.selectbox(key="train_preset").set_value("seed study").run()
    assert at.number_input(key="tf_image_size").value == 224
    assert at.text_input(key="tf_freeze").value == "47"
    assert at.selectbox(key="tf_head").value == "seed"


def frozen_random_warnings(at: AppTest) -> list[str]:
    return [w.value for w in at.warning if "Frozen random backbone" in w.value]


def test_a_frozen_random_backbone_is_warned_about_before_launch(
        carviz_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tiny_demo(carviz_home)
    submitted: list[Run] = []

    def fake_submit(config, runs_root=None, backend=None):  # the real launch is covered by test_real_launch_...
        run = create_run(config, runs_root)
        submitted.append(run)
        return run

    monkeypatch.setattr(launch, "submit", fake_submit)
    at = open_train(AppTest.from_file(APP, default_timeout=30))
    assert frozen_random_warnings(at) == []  # demo quick: weights none, but nothing frozen
    at.selectbox(key="tf_backbone").set_value("mobilenet")
    at.text_input(key="tf_freeze").input("47")
    at.button(key="FormSubmitter:train_form-Launch").click().run()  # changed and launched in one click
    assert not at.exception
    assert submitted == []  # held back once: the warning comes first
    [shown, held] = frozen_random_warnings(at)
    assert "layers 1…46 of mobilenet" in shown and held.startswith("Not launched yet.") and "Launch again" in held

    at.button(key="FormSubmitter:train_form-Launch").click().run()  # seen: launches as it is
    assert not at.exception
    assert len(submitted) == 1 and submitted[0].config().freeze == 47 and submitted[0].config().weights == "none"

    at.selectbox(key="tf_weights").set_value("imagenet")  # form values change when the form is submitted
    at.text_input(key="tf_name").input("imagenet 47")
    at.button(key="FormSubmitter:train_form-Launch").click().run()
    assert not at.exception
    assert frozen_random_warnings(at) == []  # pretrained frozen layers are the point of transfer learning
    assert len(submitted) == 2 and submitted[1].config().weights == "imagenet"  # launched at once


def test_config_error_is_a_message_not_a_traceback(carviz_home: Path) -> None:
    tiny_demo(carviz_home)
    at = open_train(AppTest.from_file(APP, default_timeout=30))
    at.text_input(key="tf_freeze").input("halfway")
    at.button(key="FormSubmitter:train_form-Launch").click().run()
    assert not at.exception
    assert any("freeze must be" in error.value for error in at.error)
    assert list_runs() == []


def test_launch_submits_once_per_click(carviz_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tiny_demo(carviz_home)
    submitted: list[Run] = []

    def fake_submit(config, runs_root=None, backend=None):  # the real launch is covered by test_real_launch_...
        run = create_run(config, runs_root)
        submitted.append(run)
        return run

    monkeypatch.setattr(launch, "submit", fake_submit)
    at = open_train(AppTest.from_file(APP, default_timeout=30))
    at.text_input(key="tf_name").input("from the test")
    at.button(key="FormSubmitter:train_form-Launch").click().run()
    assert not at.exception
    assert len(submitted) == 1 and submitted[0].config().name == "from the test"
    assert any(submitted[0].id in success.value for success in at.success)
    assert submitted[0].id in cards_text(at)  # the jobs area shows it at once

    at.button(key="FormSubmitter:train_form-Launch").click().run()  # a double click
    assert len(submitted) == 1
    assert any("Already launched" in warning.value for warning in at.warning)


def test_real_launch_starts_a_job_process(carviz_home: Path) -> None:
    tiny_demo(carviz_home)
    at = open_train(AppTest.from_file(APP, default_timeout=30))
    at.text_input(key="tf_name").input("real launch")
    at.button(key="FormSubmitter:train_form-Launch").click().run()
    assert not at.exception
    [run] = list_runs()
    try:
        assert run.config().name == "real launch"
        launch = runs.read_json(run.file(record.LAUNCH_FILE))
        assert launch and launch["pid"]
        assert check_process(launch["pid"], launch["pid_create_time"]) == ProcessCheck.ALIVE or run.status().is_terminal()
        assert run.status() in (Status.QUEUED, Status.RUNNING, Status.SUCCEEDED)
    finally:
        final = jobs.stop(run, timeout=5)  # kills the job's process group when it does not stop in time
    assert final.is_terminal()


def test_a_stopped_run_whose_process_still_exits_offers_no_resume_yet(carviz_home: Path) -> None:
    tiny_demo(carviz_home)
    exiting = create_run(PRESETS["demo quick"].replace(name="exiting"))
    write_metrics(exiting, 2)
    exiting.write_status(Status.STOPPED, pid=os.getpid(), pid_create_time=process_create_time(os.getpid()),
                         ended_at=runs.now_iso())  # its status is written; this "process" has not exited
    at = open_train(AppTest.from_file(APP, default_timeout=30))
    assert not at.exception
    assert at.button(key=f"ending_{exiting.id}").disabled
    with pytest.raises(KeyError):
        at.button(key=f"resume_{exiting.id}")
    pid, create_time = dead_pid()
    exiting.write_status(Status.STOPPED, pid=pid, pid_create_time=create_time, ended_at=runs.now_iso())
    at.run()
    assert at.button(key=f"resume_{exiting.id}")  # the process is gone: Resume is offered


def test_the_form_warns_when_the_cut_will_not_fit_the_cache_or_memory(carviz_home: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from carviz.core.feature_cache import CacheSettings, cache_root, save_settings
    from carviz.ml.feature_rows import RAM_ENV

    tiny_demo(carviz_home)
    monkeypatch.setenv(RAM_ENV, "100000")  # a machine with 0.1 MB to spare
    at = open_train(AppTest.from_file(APP, default_timeout=30))
    assert not [w for w in at.warning if "cached output" in w.value]  # demo quick: nothing is cached
    at.selectbox(key="tf_backbone").set_value("mobilenet")
    at.text_input(key="tf_freeze").input("47")
    at.text_input(key="tf_name").input("big cut")
    at.button(key="FormSubmitter:train_form-Launch").click().run()
    assert not at.exception
    [memory] = [w.value for w in at.warning if "cached output" in w.value]
    assert "for 16 images" in memory and "free memory" in memory and "shuffled blocks" in memory
    save_settings(CacheSettings(max_gb=0.00001), cache_root())
    at.run()
    [limit] = [w.value for w in at.warning if "cached output" in w.value]
    assert "more than the cache limit" in limit and "train on images" in limit
