"""One malformed record file never takes down a listing (issue 10, item 3).

Real damaged files, each in its own run beside a sound one: the CLI (runs, show) and every page that lists runs
(Train, Compare, Predict, Sweeps) show the damaged run as broken with what is wrong, and still list the sound one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from carviz.cli import main
from carviz.core import sweeps
from carviz.core.config import PRESETS, SweepConfig, TrainConfig
from carviz.core.jobs.record import HEARTBEAT_FILE
from carviz.core.jobs.status import process_create_time
from carviz.core.store import METRIC_COLUMNS, Run, Status, atomic_write_json, create_run, now_iso

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "dashboard.py")
PAGES = ROOT / "app_pages"
EPOCHS = 3


def write_metrics(run: Run, epochs: int, best: float = 0.6) -> None:
    lines = [",".join(METRIC_COLUMNS)]
    lines += [f"{e},{1.0 / e},{0.5},{1.1 / e},{best * e / epochs},0.001,2.0" for e in range(1, epochs + 1)]
    run.file("metrics.csv").write_text("\n".join(lines) + "\n")


def make_sound(run: Run, best: float = 0.6) -> Run:
    """A finished run as training leaves it: metrics for every epoch, status, evaluation, classes, a model file."""
    write_metrics(run, EPOCHS, best)
    run.write_status(Status.SUCCEEDED, started_at=now_iso(), ended_at=now_iso())
    atomic_write_json(run.file("evaluation.json"), {"split": "validation", "images": 10, "loss": 0.5,
                                                    "accuracy": best, "kept_epoch": EPOCHS, "kept": "best val"})
    atomic_write_json(run.file("classes.json"), ["bus", "sedan"])
    atomic_write_json(run.file("run.json"), {"device": {"kind": "cpu"}, "val_images": 10,
                                             "model": {"trainable_params": 1000, "first_trainable": "conv"}})
    run.file("model.keras").write_bytes(b"a model file (never loaded here)")
    return run


def _raw(name: str, content: str | bytes) -> Callable[[Run], None]:
    def damage(run: Run) -> None:
        path = run.file(name)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return damage


def _config(**changes) -> Callable[[Run], None]:
    def damage(run: Run) -> None:
        data = json.loads(run.file("config.json").read_text())
        data.update(changes)
        run.file("config.json").write_text(json.dumps(data))
    return damage


def _undecodable_metrics(run: Run) -> None:
    data = run.file("metrics.csv").read_bytes()
    assert b"\n2,0.5," in data
    run.file("metrics.csv").write_bytes(data.replace(b"\n2,0.5,", b"\n2,0.5\xff,", 1))  # in a value, not the epoch


def _live_with_bad_progress(run: Run) -> None:
    """A job that runs now (this process, a fresh heartbeat) whose progress.json has a wrong-typed epoch."""
    run.write_status(Status.RUNNING, pid=os.getpid(), pid_create_time=process_create_time(os.getpid()),
                     ended_at=None)
    run.file(HEARTBEAT_FILE).write_text(now_iso() + "\n")
    run.file("progress.json").write_text('{"phase": "training", "epoch": "x", "steps_per_epoch": 8, "step": [2]}')


def _torn_metrics(run: Run) -> None:
    write_metrics(run, 2)  # status.json says succeeded after 3 epochs


# key -> (how the file is damaged, what the run must be shown with); every reason is distinct
CORRUPTIONS: dict[str, tuple[Callable[[Run], None], str]] = {
    # two live runs: the Train page shows every live job but only the 10 newest finished ones
    "pid-text": (_raw("status.json", '{"state": "running", "pid": "abc"}'),
                 'status.json: pid is "abc", not a positive integer'),
    "status-string": (_raw("status.json", '"garbage"'),
                      'status.json is not a JSON object (it holds a string: "garbage")'),
    "status-number": (_raw("status.json", "42"), "status.json is not a JSON object (it holds a number: 42)"),
    "status-array": (_raw("status.json", "[1, 2]"), "status.json is not a JSON object (it holds an array: [1, 2])"),
    "pid-negative": (_raw("status.json", '{"state": "succeeded", "pid": -5}'),
                     "status.json: pid is -5, not a positive integer"),
    "metrics-bytes": (_undecodable_metrics, "metrics.csv has undecodable bytes"),
    "metrics-torn": (_torn_metrics, "metrics.csv has 2 epochs but status.json says succeeded after 3"),
    "config-not-json": (_raw("config.json", '{"name": "cut sh'), "config.json is not valid JSON"),
    "config-types": (_config(epochs="ten", learning_rate=None, freeze=[1]),
                     'config.json: epochs is "ten", not an integer'),
    "progress-types": (_live_with_bad_progress, 'progress.json: epoch is "x", not a whole number'),
    "evaluation-types": (_raw("evaluation.json", '{"accuracy": "high", "loss": 0.5, "images": 10}'),
                         'evaluation.json: accuracy is "high", not a number'),
}


def corrupt_all(runs: list[Run]) -> dict[str, Run]:
    """Damage runs[i] with the i-th corruption (each run was made sound first)."""
    made = {}
    for run, (key, (damage, _)) in zip(runs, CORRUPTIONS.items()):
        damage(run)
        made[key] = run
    return made


@pytest.fixture
def store(carviz_home: Path) -> tuple[dict[str, Run], Run]:
    """(damaged runs by corruption, the sound run): the sound run is the newest, so every page shows it first."""
    config = PRESETS["demo quick"].replace(epochs=EPOCHS)
    damaged = corrupt_all([make_sound(create_run(config.replace(name=key))) for key in CORRUPTIONS])
    sound = make_sound(create_run(config.replace(name="sound one")), best=0.9)
    return damaged, sound


def page_text(at: AppTest) -> str:
    parts = []
    for kind in ("markdown", "caption", "warning", "error", "info", "success"):
        parts += [str(element.value) for element in at.get(kind)]
    return "\n".join(parts)


# ---------------------------------------------------------------- the store


def test_each_corruption_is_named_and_a_sound_run_has_none(store) -> None:
    damaged, sound = store
    assert sound.problems() == []
    for key, run in damaged.items():
        problems = run.problems()
        assert any(CORRUPTIONS[key][1] in problem for problem in problems), (key, problems)


# ---------------------------------------------------------------- the CLI


def test_cli_runs_lists_every_run_and_says_what_is_broken(store, capsys) -> None:
    damaged, sound = store
    assert main(["runs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    [sound_line] = [line for line in lines if line.startswith(sound.id)]
    assert sound_line.split()[1] == "succeeded" and "sound one" in sound_line
    for key, run in damaged.items():
        [index] = [i for i, line in enumerate(lines) if line.startswith(run.id)]
        assert lines[index].split()[1] == "broken", (key, lines[index])
        assert CORRUPTIONS[key][1] in lines[index + 1], (key, lines[index + 1])

    assert main(["runs", "--json"]) == 0
    rows = {row["id"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows[sound.id]["problems"] == [] and rows[sound.id]["status"] == "succeeded"
    for key, run in damaged.items():
        assert rows[run.id]["broken"] and any(CORRUPTIONS[key][1] in p for p in rows[run.id]["problems"])
    typed = rows[damaged["config-types"].id]
    assert (typed["epochs"], typed["learning_rate"], typed["freeze"]) == (None, None, None)


def test_cli_show_says_broken_with_the_reason(store, capsys) -> None:
    damaged, sound = store
    assert main(["show", sound.id]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].endswith("succeeded") and "problem:" not in out
    assert "kept: epoch 3 (best val) of 3: val accuracy 90.0 % on 10 images" in out
    for key, run in damaged.items():
        assert main(["show", run.id]) == 0, key
        out = capsys.readouterr().out
        assert "  broken (job " in out.splitlines()[0], (key, out)
        assert f"problem: {CORRUPTIONS[key][1]}" in out, (key, out)
        assert main(["show", run.id, "--json"]) == 0
        detail = json.loads(capsys.readouterr().out)
        assert detail["broken"] and any(CORRUPTIONS[key][1] in p for p in detail["problems"])


# ---------------------------------------------------------------- the pages


def test_train_page_shows_broken_cards_and_the_sound_one(store) -> None:
    damaged, sound = store
    at = AppTest.from_file(APP, default_timeout=30).switch_page("app_pages/train.py").run()
    assert not at.exception
    if any(button.key == "train_more" for button in at.button):  # the 10 newest finished jobs show at first
        at.button(key="train_more").click().run()
        assert not at.exception
    warnings = [w.value for w in at.warning]
    for key, run in damaged.items():
        assert any(CORRUPTIONS[key][1] in w for w in warnings), (key, warnings)
    captions = [c.value for c in at.caption]
    assert sum("broken (job " in c for c in captions) == len(damaged)
    markdown = " ".join(m.value for m in at.markdown)
    assert "sound one" in markdown and sound.id in markdown
    assert any("succeeded" in c and "broken" not in c for c in captions)  # the sound run's card


def test_compare_page_marks_broken_rows_and_lists_the_sound_one(store) -> None:
    damaged, sound = store
    at = AppTest.from_file(str(PAGES / "compare.py"), default_timeout=30).run()
    assert not at.exception
    table = at.dataframe[0].value.set_index("id")
    assert table.loc[sound.id, "status"] == "succeeded" and table.loc[sound.id, "problems"] == ""
    for key, run in damaged.items():
        assert table.loc[run.id, "status"] == "broken", key
        assert CORRUPTIONS[key][1] in table.loc[run.id, "problems"], key
    note = " ".join(w.value for w in at.warning)
    assert all(CORRUPTIONS[key][1] in note for key in damaged)
    assert at.session_state["compare_selected_ids"] == [sound.id]  # a broken run is never picked by default
    # every run selected at once (damaged ones included) still draws
    at = AppTest.from_file(str(PAGES / "compare.py"), default_timeout=30)
    at.session_state["compare_selected_ids"] = list(table.index)
    at.run()
    assert not at.exception
    assert set(at.dataframe[1].value["id"]) == set(table.index)


def test_predict_page_offers_only_the_sound_run_and_says_why_not_the_others(store) -> None:
    damaged, sound = store
    at = AppTest.from_file(str(PAGES / "predict.py"), default_timeout=30).run()
    assert not at.exception
    assert at.selectbox(key="predict_run").options == [f"sound one ({sound.id[-6:]}) · small_cnn · val acc 90.0 % "
                                                       "(kept: epoch 3 (best val))"]
    note = " ".join(w.value for w in at.warning)
    assert "not offered for prediction" in note
    for key in damaged:
        assert CORRUPTIONS[key][1] in note, key


def test_predict_page_with_only_broken_runs_explains(carviz_home: Path) -> None:
    run = make_sound(create_run(TrainConfig(name="torn", backbone="small_cnn", weights="none", epochs=EPOCHS)))
    _torn_metrics(run)
    at = AppTest.from_file(str(PAGES / "predict.py"), default_timeout=30).run()
    assert not at.exception
    assert "No finished run" in at.info[0].value
    assert "metrics.csv has 2 epochs but status.json says succeeded after 3" in at.warning[0].value


def test_sweeps_page_shows_broken_runs_of_a_sweep(carviz_home: Path) -> None:
    config = SweepConfig(name="damaged", base=PRESETS["demo quick"].replace(epochs=EPOCHS), backbones=("small_cnn",),
                         learning_rates=(1e-3,), freeze_points=(1,), seeds=tuple(range(1, len(CORRUPTIONS) + 2)))
    record = sweeps.create_sweep(config)
    runs = record.runs()
    for index, run in enumerate(runs):
        make_sound(run, best=0.95 if index == len(runs) - 1 else 0.5)
    damaged = corrupt_all(runs[:-1])
    at = AppTest.from_file(str(PAGES / "sweeps.py"), default_timeout=30).run()
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table["id"]) == [record.id] and list(table["broken runs"]) == [len(damaged)]
    text = page_text(at)
    assert f"broken {len(damaged)}" in text
    for key in damaged:
        assert CORRUPTIONS[key][1] in text, key
    # the sound run (the damaged ones leave the sweep reading unfinished: its best is "so far")
    assert any(c.value.startswith(("Best run: ", "Best so far: ")) and "95.0 %" in c.value for c in at.caption)
    assert at.get("plotly_chart")
