"""Run.problems and summarize on damaged records: every reader checks types and decoding, nothing raises."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from carviz.core.config import TrainConfig
from carviz.core.store import (
    BROKEN,
    METRIC_COLUMNS,
    Run,
    Status,
    atomic_write_json,
    create_run,
    display_status,
    metrics_problems,
    read_metrics,
    summarize,
)

HEADER = ",".join(METRIC_COLUMNS) + "\n"


def rows(n: int) -> str:
    return "".join(f"{e},1.0,0.5,1.0,0.{e},0.001,2\n" for e in range(1, n + 1))


def succeeded(run: Run, epochs_done: int) -> Run:
    run.file("metrics.csv").write_text(HEADER + rows(epochs_done))
    run.write_status(Status.SUCCEEDED)
    return run


def set_config(run: Run, **changes) -> None:
    data = json.loads(run.file("config.json").read_text())
    data.update(changes)
    atomic_write_json(run.file("config.json"), data)


def test_a_new_and_a_finished_run_have_no_problems(carviz_home: Path) -> None:
    run = create_run(TrainConfig(name="new", epochs=3))
    assert run.problems() == []
    succeeded(run, 3)
    row = summarize(run)
    assert run.problems() == [] and row["problems"] == [] and not row["broken"]
    assert display_status(row) == "succeeded"


@pytest.mark.parametrize("content, reason", [
    (b'"garbage"', 'status.json is not a JSON object (it holds a string: "garbage")'),
    (b"42", "status.json is not a JSON object (it holds a number: 42)"),
    (b"[1, 2]", "status.json is not a JSON object (it holds an array: [1, 2])"),
    (b'{"state": "running", "pid": "abc"}', 'status.json: pid is "abc", not a positive integer'),
    (b'{"state": "running", "pid": -5}', "status.json: pid is -5, not a positive integer"),
    (b'{"state": "running", "pid": true}', "status.json: pid is true, not a positive integer"),
    (b'{"state": "done"}', 'status.json: state is "done", not a job state'),
    (b'{"pid": 12}', "status.json has no state"),
    (b"{not json", "status.json is not valid JSON"),
    (b"\xff\xfe{}", "status.json has undecodable bytes"),
    (b"", "status.json is not valid JSON"),
])
def test_a_damaged_status_is_named_and_summarize_still_reads(carviz_home: Path, content: bytes, reason: str) -> None:
    good = create_run(TrainConfig(name="good"))
    bad = create_run(TrainConfig(name="bad"))
    bad.file("status.json").write_bytes(content)
    rows_ = {row["id"]: row for row in map(summarize, [good, bad])}
    assert any(reason in problem for problem in rows_[bad.id]["problems"]), rows_[bad.id]["problems"]
    assert display_status(rows_[bad.id]) == BROKEN and rows_[bad.id]["status"] in ("lost", "running")
    assert rows_[good.id]["problems"] == [] and display_status(rows_[good.id]) == "queued"


def test_a_missing_status_is_named(carviz_home: Path) -> None:
    run = create_run(TrainConfig())
    run.file("status.json").unlink()
    assert run.problems() == ["status.json is missing"]


def test_undecodable_metrics_still_read_and_are_named(carviz_home: Path) -> None:
    run = create_run(TrainConfig(epochs=3))
    run.write_status(Status.SUCCEEDED)
    run.file("metrics.csv").write_bytes((HEADER + rows(3)).encode().replace(b"2,1.0", b"2,1\xff0", 1))
    assert [row["epoch"] for row in read_metrics(run.file("metrics.csv"))] == [1, 2, 3]
    assert read_metrics(run.file("metrics.csv"))[1]["loss"] is None
    [problem] = run.problems()
    assert problem.startswith("metrics.csv has undecodable bytes")


def test_malformed_metrics_lines_are_named_but_a_line_being_written_is_not(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text(HEADER + rows(2) + "3,1.0,0.5\n" + "4,1.0,0.5,1.0,0.4,0.001,2\n" + "5,1.0")
    assert [row["epoch"] for row in read_metrics(path)] == [1, 2, 4]
    assert metrics_problems(path) == ["metrics.csv has 1 malformed line (line 4)"]
    path.write_text("loss,accuracy\n1.0,0.5\n")
    assert metrics_problems(path)[0].startswith("metrics.csv has no epoch column")
    path.write_text(HEADER + '1,"1.0\n2,1.0,0.5\n')  # an unterminated quote swallows the rest
    assert read_metrics(path) == [] and metrics_problems(path)


def test_metrics_short_of_a_succeeded_run_are_flagged_unless_explained(carviz_home: Path) -> None:
    torn = succeeded(create_run(TrainConfig(name="torn", epochs=5)), 2)
    assert torn.problems() == ["metrics.csv has 2 epochs but status.json says succeeded after 5"]
    assert display_status(summarize(torn)) == BROKEN and summarize(torn)["status"] == "succeeded"
    one = succeeded(create_run(TrainConfig(epochs=5)), 1)
    assert one.problems() == ["metrics.csv has 1 epoch but status.json says succeeded after 5"]
    empty = create_run(TrainConfig(epochs=5))
    empty.write_status(Status.SUCCEEDED)
    assert empty.problems() == ["metrics.csv has 0 epochs but status.json says succeeded after 5"]
    # early stopping or pruning explains a short history; a run that has not finished is short by nature
    assert succeeded(create_run(TrainConfig(epochs=5, early_stopping_patience=2)), 3).problems() == []
    pruned = succeeded(create_run(TrainConfig(epochs=5)), 2)
    pruned.write_status(Status.SUCCEEDED, pruned_at_epoch=2)
    assert pruned.problems() == []
    stopped = create_run(TrainConfig(epochs=5))
    stopped.file("metrics.csv").write_text(HEADER + rows(2))
    stopped.write_status(Status.STOPPED)
    assert stopped.problems() == []


def test_wrong_typed_config_values_read_as_missing_and_are_named(carviz_home: Path) -> None:
    run = create_run(TrainConfig(name="typed"))
    set_config(run, name=42, epochs="ten", learning_rate=None, freeze=[1], backbone=["x"])
    row = summarize(run)
    assert (row["name"], row["epochs"], row["learning_rate"], row["freeze"], row["backbone"]) == \
        ("", None, None, None, None)
    assert set(row["problems"]) == {
        "config.json: name is 42, not text", 'config.json: epochs is "ten", not an integer',
        "config.json: learning_rate is null, not a number", "config.json: freeze is [1], not a layer number or 'all'",
        'config.json: backbone is ["x"], not text'}
    json.dumps(row)  # what `runs --json` prints


def test_config_values_the_config_rejects_are_named(carviz_home: Path) -> None:
    run = create_run(TrainConfig(name="range"))
    set_config(run, learning_rate=20.0, freeze="47")
    assert run.problems() == ["config.json: learning_rate must be in (0, 10], got 20.0"]
    assert summarize(run)["freeze"] == 47
    run.file("config.json").write_text("[]")
    assert run.problems() == ["config.json is not a JSON object (it holds an array: [])"]
    assert summarize(run)["name"] == ""


@pytest.mark.parametrize("name, content, reason", [
    ("run.json", "[]", "run.json is not a JSON object"),
    ("run.json", '{"device": "gpu"}', 'run.json: device is "gpu", not an object'),
    ("evaluation.json", '{"accuracy": "high", "loss": 0.5, "images": 10}',
     'evaluation.json: accuracy is "high", not a number'),
    ("evaluation.json", '{"accuracy": 0.5}', "evaluation.json has no loss"),
    ("classes.json", '{"a": 1}', "classes.json is not a JSON array"),
    ("classes.json", '["bus", 3]', "classes.json: 3 is not a class name"),
    ("progress.json", '{"epoch": "x"}', 'progress.json: epoch is "x", not a whole number'),
    ("progress.json", '{"images_per_second": "fast"}', 'progress.json: images_per_second is "fast", not a number'),
    ("launch.json", '{"backend": "local", "pid": "abc"}', 'launch.json: pid is "abc", not a positive integer'),
    ("split.json", '{"classes": ["a"], "val_paths": "x"}', "split.json: val_paths is not a list of paths"),
    ("sweep_context.json", "7", "sweep_context.json is not a JSON object"),
])
def test_other_record_files_are_checked(carviz_home: Path, name: str, content: str, reason: str) -> None:
    run = create_run(TrainConfig())
    run.file(name).write_text(content)
    problems = summarize(run)["problems"]
    assert any(reason in problem for problem in problems), problems


def test_a_repaired_file_is_no_longer_a_problem(carviz_home: Path) -> None:
    run = create_run(TrainConfig())
    run.file("status.json").write_text('"garbage"')
    assert run.problems()
    run.write_status(Status.QUEUED)  # an atomic rewrite, as every writer does
    assert run.problems() == []
