"""The Compare page under AppTest: empty store, and finished, running, failed and lost runs made by hand."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from carviz.core.config import PRESETS, TrainConfig
from carviz.core.jobs.record import HEARTBEAT_FILE
from carviz.core.jobs.status import process_create_time
from carviz.core.store import METRIC_COLUMNS, Run, Status, atomic_write_json, create_run, now_iso
from carviz.core.sweeps import SweepConfig, create_sweep

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


def figures(at: AppTest) -> dict[str, dict]:
    """The page's Plotly figures by their chart key."""
    return {chart.proto.id.rsplit("-", 1)[-1]: json.loads(chart.proto.spec) for chart in at.get("plotly_chart")}


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
    # loss and accuracy only: the two differ in freeze but are no sweep, so no freeze chart joins them
    assert set(figures(at)) == {"compare_loss", "compare_accuracy"}
    best_final = at.dataframe[1].value
    assert set(best_final["id"]) == {mixed_runs["finished"].id, mixed_runs["finished_b"].id}
    assert set(best_final["kept"]) == {"epoch 5 (best val)"}  # which model each number is about
    # one way to show an accuracy (format_accuracy), and which one it is: the kept model's, the best, the final
    assert set(best_final["kept_val_accuracy"]) == {"88.0 %"}
    assert set(best_final["best_val_accuracy"]) == {"88.0 % (5)"}
    assert set(best_final["final_val_accuracy"]) == {"88.0 %"}
    table = at.dataframe[0].value.set_index("id")
    assert table.loc[mixed_runs["finished"].id, "kept"] == "epoch 5 (best val)"
    # the runs table holds percent numbers (sortable), shown as "88.0 %" by its column format
    assert table.loc[mixed_runs["finished"].id, "kept_val_accuracy"] == pytest.approx(100 * (1 - 0.6 / 5))
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


def colours_by_run(figure: dict) -> dict[str, set[str]]:
    """Run label -> the colours of its traces (train and validation)."""
    found: dict[str, set[str]] = {}
    for trace in figure["data"]:
        found.setdefault(trace["name"].split(" · ")[0], set()).add(trace["line"]["color"])
    return found


def open_with(selected: list[str], **state) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=30)
    at.session_state["compare_selected_ids"] = selected
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


def test_a_run_keeps_its_colour_when_another_is_selected(mixed_runs):
    a, b, failed = mixed_runs["finished"], mixed_runs["finished_b"], mixed_runs["failed"]
    label_a, label_b = f"finished a ({a.id[-6:]})", f"finished b ({b.id[-6:]})"
    first = open_with([a.id, b.id])
    assert not first.exception
    before = colours_by_run(figures(first)["compare_accuracy"])
    assert len(before[label_a]) == 1 and len(before[label_b]) == 1 and before[label_a] != before[label_b]
    for other in ([failed.id, a.id], [a.id]):  # another run beside it, then it alone (first in the table)
        at = open_with(other)
        assert not at.exception
        for key in ("compare_accuracy", "compare_loss"):
            assert colours_by_run(figures(at)[key])[label_a] == before[label_a], (other, key)


def test_search_finds_name_tag_and_note_and_archived_runs_hide(mixed_runs):
    a, b, failed = mixed_runs["finished"], mixed_runs["finished_b"], mixed_runs["failed"]
    if not hasattr(a, "annotate"):
        pytest.skip("this store has no run annotations (tags, note, archived) yet")
    a.annotate(tags=["baseline"], note="Lower LR helped")
    b.annotate(tags=["cars20"])
    failed.annotate(archived=True)
    at = AppTest.from_file(PAGE, default_timeout=30).run()
    assert not at.exception
    ids = set(at.dataframe[0].value["id"])
    assert failed.id not in ids and a.id in ids  # archived: hidden unless asked for
    assert at.checkbox(key="compare_archived").help.startswith("1 archived run")
    for text, expected in (("BASELINE", {a.id}), ("lr help", {a.id}), ("cars2", {b.id}), ("finished b", {b.id})):
        at.text_input(key="compare_text").input(text).run()
        assert not at.exception
        assert set(at.dataframe[0].value["id"]) == expected, text
    at.text_input(key="compare_text").input("").run()
    at.checkbox(key="compare_archived").check().run()
    assert not at.exception and failed.id in set(at.dataframe[0].value["id"])
    table = at.dataframe[0].value.set_index("id")
    assert table.loc[a.id, "tags"] == "baseline" and table.loc[a.id, "note"] == "Lower LR helped"


def test_the_runs_query_parameter_preselects_runs(mixed_runs):
    a, failed = mixed_runs["finished"], mixed_runs["failed"]
    at = AppTest.from_file(PAGE, default_timeout=30)
    at.query_params["runs"] = f"{failed.id},{a.id[:-2]},no-such-run"  # an id, a unique prefix, an unknown name
    at.run()
    assert not at.exception
    assert set(at.session_state["compare_selected_ids"]) == {failed.id, a.id}
    assert set(at.query_params["runs"].split(",")) == {failed.id, a.id}  # the address says what is shown
    b = mixed_runs["finished_b"]
    at.query_params["runs"] = b.id  # another link to the page, open in the same session
    at.run()
    assert not at.exception and at.session_state["compare_selected_ids"] == [b.id]
    assert set(at.dataframe[1].value["id"]) == {b.id}  # the metrics follow the selection
    nothing = AppTest.from_file(PAGE, default_timeout=30)
    nothing.query_params["runs"] = "no-such-run"
    nothing.run()
    assert not nothing.exception and any("names no run" in w.value for w in nothing.warning)


def test_config_diff_shows_the_fields_that_differ(mixed_runs):
    a, b = mixed_runs["finished"], mixed_runs["finished_b"]
    at = open_with([a.id, b.id])
    assert not at.exception
    diff = next(frame.value for frame in at.dataframe if "field" in frame.value.columns)
    assert set(diff["field"]) == {"name", "backbone", "freeze"}
    row = diff.set_index("field").loc["backbone"]
    assert row[f"finished a ({a.id[-6:]})"] == "mobilenet" and row[f"finished b ({b.id[-6:]})"] == "densenet121"
    at.toggle(key="compare_diff_identical").set_value(True).run()
    assert not at.exception
    diff = next(frame.value for frame in at.dataframe if "field" in frame.value.columns)
    assert {"name", "backbone", "freeze", "learning_rate", "epochs"} <= set(diff["field"])
    assert diff.set_index("field").loc["learning_rate", "differs"] == False  # noqa: E712 - a numpy bool
    single = open_with([a.id])
    assert not single.exception and not any("field" in frame.value.columns for frame in single.dataframe)


def test_x_axis_by_fraction_of_the_run_or_a_range_of_epochs(mixed_runs):
    a, b = mixed_runs["finished"], mixed_runs["failed"]  # 5 of 5 epochs, and 2 of 5
    at = open_with([a.id, b.id])
    epochs = [x for trace in figures(at)["compare_loss"]["data"] for x in trace["x"]]
    assert max(epochs) == 5
    at.slider(key="compare_epochs_5").set_value((2, 3)).run()
    assert not at.exception
    assert {x for trace in figures(at)["compare_loss"]["data"] for x in trace["x"]} == {2, 3}
    at.radio(key="compare_x_axis").set_value("fraction").run()
    assert not at.exception
    figure = figures(at)["compare_accuracy"]
    assert max(x for trace in figure["data"] for x in trace["x"]) == 1.0  # the finished run ends at 100 %
    assert "fraction" in figure["layout"]["xaxis"]["title"]["text"]


def finish_sweep_run(run: Run, accuracy: float) -> None:
    lines = [",".join(METRIC_COLUMNS)] + [f"{e},{1 / e},0.5,{1 / e},{accuracy * e / 5},0.001,1.5" for e in range(1, 6)]
    run.file("metrics.csv").write_text("\n".join(lines) + "\n")  # the last epoch is the best: kept = accuracy
    atomic_write_json(run.file("run.json"), {"classes": ["a", "b", "c", "d"], "model": {"backbone_layers": 10}})
    run.write_status(Status.SUCCEEDED, ended_at=now_iso())


def test_the_freeze_chart_shows_only_for_runs_of_one_sweep_as_the_sweeps_page_draws_it(mixed_runs):
    config = SweepConfig(name="freeze study", base=PRESETS["demo quick"].replace(epochs=5), backbones=("small_cnn",),
                         learning_rates=(1e-3,), freeze_points=(1, "all"), seeds=(1, 2))
    record = create_sweep(config)
    runs = record.runs()
    for run, accuracy in zip(runs, (0.9, 0.5, 0.95, 0.55)):  # seed 1 of each point, then seed 2
        finish_sweep_run(run, accuracy)
    at = open_with([run.id for run in runs])
    assert not at.exception
    figure = figures(at)["compare_sweep"]
    means = [trace for trace in figure["data"] if trace.get("meta", {}).get("kind") == "mean"]
    assert len(means) == 1 and means[0]["x"] == [1, 11]  # 'all' included, at the layer count + 1
    assert means[0]["y"] == pytest.approx([0.925, 0.525]) and means[0]["text"] == ["n=2", "n=2"]
    assert "all (11)" in figure["layout"]["xaxis"]["ticktext"]
    assert figure["layout"]["annotations"][0]["text"] == "chance 25.0 %"
    # a sweep's runs with an unrelated one: no freeze chart (the points would mix two experiments)
    mixed = open_with([runs[0].id, runs[2].id, mixed_runs["finished"].id])
    assert not mixed.exception and "compare_sweep" not in figures(mixed)


def test_accuracy_curves_draw_chance(mixed_runs):
    a, b = mixed_runs["finished"], mixed_runs["finished_b"]
    for run in (a, b):
        atomic_write_json(run.file("run.json"), {"classes": ["a", "b", "c", "d"]})
    at = open_with([a.id, b.id])
    assert not at.exception
    layout = figures(at)["compare_accuracy"]["layout"]
    assert [shape["y0"] for shape in layout["shapes"]] == [0.25] and layout["shapes"][0]["line"]["dash"] == "dash"
    assert layout["annotations"][0]["text"] == "chance 25.0 %"
    assert not figures(at)["compare_loss"]["layout"].get("shapes")
