"""The Compare page under AppTest: empty store, and finished, running, failed and lost runs made by hand."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from carviz.core.config import TrainConfig
from carviz.core.jobs.record import HEARTBEAT_FILE
from carviz.core.jobs.status import process_create_time
from carviz.core.store import METRIC_COLUMNS, Run, Status, create_run, now_iso

PAGE = str(Path(__file__).resolve().parents[2] / "app_pages" / "compare.py")


def write_metrics(run: Run, epochs: int, scale: float = 1.0) -> None:
    lines = [",".join(METRIC_COLUMNS)]
    for e in range(1, epochs + 1):
        lines.append(f"{e},{scale / e},{1 - 0.5 / e},{scale / e + 0.1},{1 - 0.6 / e},0.001,1.5")
    run.file("metrics.csv").write_text("\n".join(lines) + "\n")


def make_run(name: str, status: Status, epochs: int = 0, backbone: str = "mobilenet", freeze: int = 47, **fields) -> Run:
    run = create_run(TrainConfig(name=name, backbone=backbone, weights="none", freeze=freeze, epochs=5))
    run.write_status(status, **fields)
    if epochs:
        write_metrics(run, epochs, scale=1 + len(name) / 10)
    return run


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.fixture
def mixed_runs(carviz_home) -> dict[str, Run]:
    made = {
        "finished": make_run("finished a", Status.SUCCEEDED, 5, ended_at=now_iso()),
        # every epoch of its config: a succeeded run with fewer rows reads as broken (a torn metrics.csv)
        "finished_b": make_run("finished b", Status.SUCCEEDED, 5, backbone="densenet121", freeze=144),
        "failed": make_run("failed", Status.FAILED, 2, error="ValueError: boom"),
        "lost": make_run("lost", Status.RUNNING, 1, pid=dead_pid(), pid_create_time=1.0),
        "running": make_run("running", Status.RUNNING, 3, pid=os.getpid(),
                            pid_create_time=process_create_time(os.getpid())),
        "queued": make_run("queued", Status.QUEUED),
    }
    made["running"].file(HEARTBEAT_FILE).write_text(now_iso() + "\n")
    assert made["lost"].status() == Status.LOST and made["running"].status() == Status.RUNNING
    return made


def test_empty_store_says_how_to_get_runs(carviz_home):
    at = AppTest.from_file(PAGE, default_timeout=30).run()
    assert not at.exception
    assert "No runs yet" in at.info[0].value


def test_default_selection_shows_the_latest_finished_runs(mixed_runs):
    at = AppTest.from_file(PAGE, default_timeout=30).run()
    assert not at.exception
    assert len(at.dataframe) >= 2  # runs table + best/final table
    # ids made within one second do not sort by creation, so compare as sets
    assert set(at.session_state["compare_selected_ids"]) == {mixed_runs["finished_b"].id, mixed_runs["finished"].id}
    charts = at.get("plotly_chart")
    assert len(charts) >= 2  # loss, accuracy (+ the freeze sweep: the two differ in freeze)
    best_final = at.dataframe[1].value
    assert set(best_final["id"]) == {mixed_runs["finished"].id, mixed_runs["finished_b"].id}
    assert set(best_final["kept"]) == {"kept: epoch 5 (best val)"}  # which model each number is about
    table = at.dataframe[0].value.set_index("id")
    assert table.loc[mixed_runs["finished"].id, "kept"] == "kept: epoch 5 (best val)"
    assert table.loc[mixed_runs["finished"].id, "kept_val_accuracy"] == pytest.approx(1 - 0.6 / 5)
    assert at.get("download_button")


def test_every_status_selected_with_smoothing_and_filters(mixed_runs):
    at = AppTest.from_file(PAGE, default_timeout=30)
    at.session_state["compare_selected_ids"] = [run.id for run in mixed_runs.values()]
    at.run()
    assert not at.exception
    assert any("Live" in caption.value for caption in at.caption)  # a running run is selected: live refresh
    statuses = set(at.dataframe[0].value["status"])
    assert statuses == {"succeeded", "failed", "lost", "running", "queued"}
    at.slider(key="compare_smoothing").set_value(0.6).run()
    assert not at.exception
    at.multiselect(key="compare_status").select("failed").run()
    assert not at.exception
    assert at.dataframe[0].value["status"].tolist() == ["failed"]
    # runs hidden by the filter stay selected
    assert set(at.session_state["compare_selected_ids"]) == {run.id for run in mixed_runs.values()}
    at.text_input(key="compare_text").input("no such run").run()
    assert not at.exception and at.dataframe[0].value.empty


def test_nothing_selected_asks_for_a_selection(mixed_runs):
    at = AppTest.from_file(PAGE, default_timeout=30)
    at.session_state["compare_selected_ids"] = []
    at.run()
    assert not at.exception
    assert any("Select one or more runs" in info.value for info in at.info)
