"""Sweeps: grid expansion, validation, freeze rules, the record's JSON, sweep points, pruning decisions, PRUNED."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from carviz.core import jobs, launch
from carviz.core import sweeps as sweep
from carviz.core.config import PRESETS, ConfigError, TrainConfig
from carviz.views.plots.sweeps import (
    freeze_figure,
    params_figure,
    selected_run_ids,
    sweep_points,
    time_figure,
    verdict,
)
from carviz.core.jobs.record import LAUNCH_FILE
from carviz.core.store import METRICS_FILE, Run, Status, atomic_write_json, list_runs, now_iso
from carviz.core.sweeps import PruneConfig, SweepConfig
from carviz.ml.callbacks import Pruned, SweepPruning, rung_values, should_prune

BASE = PRESETS["demo quick"].replace(epochs=3)


def grid(**changes) -> SweepConfig:
    values = dict(name="study", base=BASE, backbones=("small_cnn",), learning_rates=(1e-3, 1e-4),
                  freeze_points=(1, 4, "all"), seeds=(1, 2))
    values.update(changes)
    return SweepConfig(**values)


def test_expansion_counts_order_and_names() -> None:
    configs = sweep.expand(grid(), "SWEEP-ID")
    assert len(configs) == 2 * 3 * 2 == grid().size()
    assert configs[0].name == "study · small_cnn lr 1e-3 freeze 1 seed 1"
    assert configs[1].name == "study · small_cnn lr 1e-3 freeze 4 seed 1"
    assert configs[-1].name == "study · small_cnn lr 1e-4 freeze all seed 2"
    assert {c.sweep for c in configs} == {"SWEEP-ID"}
    # seed first: every configuration gets its first run before any gets its second
    assert [(c.learning_rate, c.freeze, c.seed) for c in configs[:7]] == [
        (1e-3, 1, 1), (1e-3, 4, 1), (1e-3, "all", 1), (1e-4, 1, 1), (1e-4, 4, 1), (1e-4, "all", 1), (1e-3, 1, 2)]
    assert all(c.epochs == 3 and c.weights == "none" for c in configs)  # the rest comes from the base
    assert len({c.name for c in configs}) == len(configs)


def test_per_backbone_freeze_points() -> None:
    config = grid(backbones=("small_cnn", "mobilenet"), base=BASE.replace(weights="none"), seeds=(1,),
                  learning_rates=(1e-4,), backbone_freeze_points={"mobilenet": (47, 82)})
    names = [c.name for c in sweep.expand(config)]
    assert names == ["study · small_cnn lr 1e-4 freeze 1 seed 1", "study · small_cnn lr 1e-4 freeze 4 seed 1",
                     "study · small_cnn lr 1e-4 freeze all seed 1", "study · mobilenet lr 1e-4 freeze 47 seed 1",
                     "study · mobilenet lr 1e-4 freeze 82 seed 1"]


@pytest.mark.parametrize("changes, message", [
    ({"name": " "}, "name is empty"),
    ({"backbones": ()}, "backbones"),
    ({"backbones": ("vgg",)}, "backbone must be one of"),
    ({"backbones": ("small_cnn", "small_cnn")}, "once"),
    ({"learning_rates": (0.0,)}, "learning rates"),
    ({"learning_rates": ()}, "learning rates"),
    ({"freeze_points": (0,)}, "freeze points"),
    ({"freeze_points": ("half",)}, "freeze points"),
    ({"freeze_points": (4, 4)}, "once"),
    ({"seeds": (-1,)}, "seeds"),
    ({"backbones": ("mobilenet",), "base": BASE.replace(backbone="mobilenet", weights="imagenet")}, None),  # valid
    ({"base": PRESETS["demo quick"].replace(weights="imagenet", backbone="mobilenet")}, "small_cnn has no ImageNet"),
    ({"prune": PruneConfig(rungs=(3,))}, "before the last epoch"),
    ({"backbone_freeze_points": {"resnet50": (5,)}}, "not in the sweep"),
    ({"seeds": tuple(range(200))}, "at most"),
])
def test_validation(changes, message) -> None:
    if message is None:
        grid(**changes)
        return
    with pytest.raises(ConfigError, match=message):
        grid(**changes)


@pytest.mark.parametrize("kwargs, message", [
    ({"rungs": ()}, "at least one"), ({"rungs": (2, 1)}, "increasing"), ({"rungs": (0,)}, "increasing"),
    ({"keep_fraction": 1.0}, "keep_fraction"), ({"keep_fraction": 0}, "keep_fraction"), ({"min_runs": 1}, "min_runs"),
])
def test_prune_config_validation(kwargs, message) -> None:
    with pytest.raises(ConfigError, match=message):
        PruneConfig(**kwargs)


def test_json_round_trip() -> None:
    config = grid(prune=PruneConfig(rungs=(1, 2), keep_fraction=0.25, min_runs=4),
                  backbones=("small_cnn", "mobilenet"), base=BASE.replace(weights="none"),
                  backbone_freeze_points={"mobilenet": (47, "all")})
    again = SweepConfig.from_json(config.to_json())
    assert again == config
    assert again.prune == PruneConfig(rungs=(1, 2), keep_fraction=0.25, min_runs=4)
    assert SweepConfig.from_json(grid().to_json()).prune is None
    with pytest.raises(ConfigError, match="unknown sweep keys"):
        SweepConfig.from_dict({**grid().to_dict(), "colour": "red"})
    # the run's TrainConfig keeps its sweep id through JSON, and old configs without the field still load
    tagged = BASE.replace(sweep="20260101-000000.000-abcdef")
    assert TrainConfig.from_json(tagged.to_json()).sweep == tagged.sweep
    legacy = BASE.to_dict()
    legacy.pop("sweep")
    assert TrainConfig.from_dict(legacy).sweep == ""


def test_format_lr() -> None:
    assert [sweep.format_lr(v) for v in (1e-4, 3e-4, 2.5e-3, 0.1, 1.0)] == ["1e-4", "3e-4", "2.5e-3", "1e-1", "1e0"]


def test_freeze_rules_small_cnn() -> None:
    # input_layer 1, block1_conv 2, block1_pool 3, block2_conv 4, block2_pool 5, block3_conv 6, block3_pool 7
    assert sweep.freeze_points("small_cnn", "every convolution", 32) == [2, 4, 6]
    assert sweep.freeze_points("small_cnn", "every block boundary", 32) == [1, 2, 4, 6]
    assert sweep.freeze_points("small_cnn", "every k-th cut point", 32, k=1) == [1, 2, 3, 4, 5, 6, 7]
    assert sweep.freeze_points("small_cnn", "cut", 32, k=3) == [3, 6]
    with pytest.raises(ValueError, match="freeze rule"):
        sweep.freeze_points("small_cnn", "every pooling", 32)
    with pytest.raises(ValueError, match="k must be"):
        sweep.freeze_points("small_cnn", "cut", 32, k=0)


def test_freeze_rules_mobilenet() -> None:
    conv = sweep.freeze_points("mobilenet", "conv", 128)
    assert len(conv) == 27 and conv[0] == 2 and 47 in conv  # the seed's best point, conv_pw_7, is a convolution
    blocks = sweep.freeze_points("mobilenet", "block", 128)
    assert blocks[:3] == [1, 5, 11] and len(blocks) == 14  # stem, then block_1 … block_13
    assert sweep.freeze_points("mobilenet", "cut", 128, k=4) == list(range(4, 85, 4))


# ---------------------------------------------------------------- record, state


def test_create_read_list_sweep(carviz_home: Path) -> None:
    record = sweep.create_sweep(grid(seeds=(1,)))
    assert record.path == carviz_home / "runs" / ".sweeps" / record.id
    assert (record.path / "sweep.json").is_file()
    assert len(record.run_ids) == 6
    runs = list_runs()
    assert sorted(r.id for r in runs) == sorted(record.run_ids)  # .sweeps is not a run
    assert [Run(carviz_home / "runs" / i).config().sweep for i in record.run_ids] == [record.id] * 6
    again = sweep.read_record(record.id)
    assert again.config == record.config and again.run_ids == record.run_ids
    assert [r.id for r in sweep.list_sweeps()] == [record.id]
    assert sweep.find_sweep("study").id == record.id and sweep.find_sweep(record.id[:10]).id == record.id
    state = sweep.read_sweep(record.id, slots=1)
    # Created but not launched (no feeder): nothing will start its runs until it is resumed.
    assert state.n_total == 6 and state.n_done == 0 and state.status == "stopped"
    assert state.progress_text == "0 of 6 done" and state.eta_seconds is None and state.best is None
    with pytest.raises(LookupError):
        sweep.read_record("../etc")


def finish(run: Run, accuracies: list[float], status: Status = Status.SUCCEEDED, seconds: float = 2.0,
           params: int | None = None, layer: str | None = None) -> None:
    lines = ["epoch,loss,accuracy,val_loss,val_accuracy,learning_rate,seconds"]
    lines += [f"{e},1.0,0.5,1.0,{a},0.001,{seconds}" for e, a in enumerate(accuracies, start=1)]
    run.file(METRICS_FILE).write_text("\n".join(lines) + "\n")
    run.write_status(status, started_at="2026-01-01T00:00:00+00:00", ended_at="2026-01-01T00:00:10+00:00")
    if params is not None:
        atomic_write_json(run.file("run.json"), {"model": {"trainable_params": params, "first_trainable": layer}})


def test_state_counts_eta_best_stop_and_resume(carviz_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    record = sweep.create_sweep(grid(freeze_points=(1, 4), seeds=(1,)))  # 4 runs
    runs = record.runs()
    finish(runs[0], [0.5, 0.7, 0.6])
    finish(runs[1], [0.5, 0.9, 0.8], status=Status.PRUNED)
    runs[2].write_status(Status.STOPPED, ended_at=now_iso())
    runs[3].file(LAUNCH_FILE).write_text(json.dumps({"pid": os.getpid()}))  # launched, waiting for a slot
    state = sweep.read_sweep(record.id, slots=2)
    assert state.n_done == 2 and state.progress_text == "2 of 4 done"
    assert state.counts == {"succeeded": 1, "pruned": 1, "stopped": 1, "queued": 1}
    assert state.status == "queued"
    # One queued run left: 3 epochs at the finished runs' 2 s, plus a run's fixed cost (10 s wall - 3 x 2 s epochs).
    assert state.eta_seconds == pytest.approx(3 * 2.0 + 4.0)
    assert state.best["id"] == runs[0].id and state.best["kept_val_accuracy"] == 0.7  # a pruned run is no best

    runs[3].file(LAUNCH_FILE).unlink()  # never launched, and no feeder alive to launch it: reads as stopped
    assert sweep.read_sweep(record.id).counts == {"succeeded": 1, "pruned": 1, "stopped": 2}

    feeders: list[str] = []
    monkeypatch.setattr(sweep, "start_feeder", lambda rec: feeders.append(rec.id) or 1)
    assert sweep.stop_sweep(record.id) == [runs[3].id]
    assert runs[3].stop_requested() and not runs[0].stop_requested()
    assert runs[3].status() == Status.STOPPED  # it had no process: marked stopped at once
    assert sweep.resume_sweep(record.id) == [runs[2].id, runs[3].id]
    assert runs[2].status() == Status.QUEUED and runs[3].status() == Status.QUEUED
    assert not runs[3].stop_requested() and feeders == [record.id]


def test_the_feeder_launches_in_order_and_keeps_few_runs_waiting(carviz_home: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 wait_for) -> None:
    record = sweep.create_sweep(grid(freeze_points=(1, 4), seeds=(1,)))  # 4 runs
    runs = record.runs()
    launched: list[str] = []
    passes: list[int] = []  # one entry per pass of the feeder's loop

    def launch(run: Run, backend: str | None = None) -> None:  # a launched job that waits as long as the test says
        launched.append(run.id)
        run.file(LAUNCH_FILE).write_text('{"backend": "local"}')

    def should_stop() -> bool:
        passes.append(len(launched))
        return record.stop_requested()

    def passes_with(count: int, more: int = 3) -> bool:  # the feeder looked `more` times with `count` launched
        return passes.count(count) >= more

    monkeypatch.setattr(sweep, "launch_run", launch)
    feeder = threading.Thread(target=sweep.feed, args=(record,),
                              kwargs={"max_waiting": 1, "poll": 0.02, "should_stop": should_stop})
    feeder.start()
    wait_for(lambda: passes_with(1), 10, "the feeder to look again with one run waiting")
    assert launched == [runs[0].id]  # one waits; nothing more is launched
    finish(runs[0], [0.5])  # it ran and ended: the next one is launched
    wait_for(lambda: passes_with(2), 10, "the feeder to launch the next run and look again")
    assert launched == [runs[0].id, runs[1].id]
    record.request_stop()  # a stopped sweep's feeder ends
    feeder.join(timeout=5)
    assert not feeder.is_alive() and launched == [runs[0].id, runs[1].id]
    record.clear_stop_request()
    assert sweep.feed(record, max_waiting=5, poll=0.02) == 2 and launched == [r.id for r in runs]


def test_sweep_status_word() -> None:
    assert sweep.sweep_status(["succeeded", "running"]) == "running"
    assert sweep.sweep_status(["succeeded", "pruned"]) == "done"
    assert sweep.sweep_status(["succeeded", "lost"]) == "stopped"
    assert sweep.sweep_status(["succeeded", "failed"]) == "failed"


# ---------------------------------------------------------------- sweep points and figures


def hand_rows() -> list[dict]:
    def row(i, lr, freeze, acc, seconds=10.0, params=1000, layer=None):
        return {"id": f"r{i}", "name": f"run {i}", "backbone": "mobilenet", "learning_rate": lr, "freeze": freeze,
                "kept_val_accuracy": acc, "seconds": seconds, "wall_seconds": None, "trainable_params": params,
                "layer": layer, "status": "succeeded"}
    return [
        row(1, 1e-4, 47, 0.80, layer="conv_pw_7"), row(2, 1e-4, 47, 0.90, layer="conv_pw_7"),
        row(3, 1e-4, 47, 0.85),
        row(4, 1e-4, 1, 0.60, seconds=30.0, params=3000), row(5, 1e-4, 1, 0.70, seconds=50.0, params=3000),
        row(6, 1e-3, "all", 0.50), row(7, 1e-3, 47, None),
    ]


def test_sweep_points_mean_std_n() -> None:
    points = sweep_points(hand_rows())
    assert list(zip(points["learning_rate"], points["freeze"])) == [(1e-4, 1), (1e-4, 47), (1e-3, 47), (1e-3, "all")]
    by = {(r.learning_rate, r.freeze): r for r in points.itertuples()}
    p47 = by[(1e-4, 47)]
    assert p47.mean == pytest.approx(0.85) and p47.std == pytest.approx(0.05) and p47.n == 3
    assert p47.run_ids == ["r1", "r2", "r3"] and p47.layer == "conv_pw_7"
    p1 = by[(1e-4, 1)]
    assert p1.mean == pytest.approx(0.65) and p1.std == pytest.approx(math.sqrt(0.005))
    assert p1.seconds == pytest.approx(40.0) and p1.trainable_params == pytest.approx(3000)
    single = by[(1e-3, "all")]
    assert single.std == 0.0 and single.n == 1
    assert single.freeze_index == 48  # "all" without a layer count: one past the largest index of the backbone
    assert by[(1e-3, 47)].n == 0 and math.isnan(by[(1e-3, 47)].mean)  # no accuracy yet: a gap, not a point
    counted = sweep_points(hand_rows(), layer_counts={"mobilenet": 86})
    assert dict(zip(counted["freeze"].astype(str), counted["freeze_index"]))["all"] == 87


def test_freeze_figure_lines_bands_and_hover() -> None:
    points = sweep_points(hand_rows())
    fig = freeze_figure(points)
    lines = [t for t in fig.data if t.meta["kind"] == "mean"]
    bands = [t for t in fig.data if t.meta["band"]]
    assert sorted(t.name for t in lines) == ["mobilenet · lr 1e-03", "mobilenet · lr 1e-04"]
    lr4 = next(t for t in lines if t.name.endswith("1e-04"))
    assert list(lr4.x) == [1, 47] and list(lr4.y) == pytest.approx([0.65, 0.85])
    assert lr4.customdata[1][0] == "r1,r2,r3" and lr4.customdata[1][1] == "conv_pw_7"
    assert list(lr4.text) == ["n=2", "n=3"] and "text" in lr4.mode  # every point says n
    assert len(bands) == 1  # the 1e-3 line has no spread
    named = freeze_figure(points, layer_names={"mobilenet": [f"layer{i}" for i in range(1, 87)]})
    lr4 = next(t for t in named.data if t.name == "mobilenet · lr 1e-04")
    assert lr4.customdata[0][1] == "layer1" and "layer47" in lr4.hovertext[1]
    assert len(freeze_figure(sweep_points([])).data) == 0


def test_time_and_params_figures_and_selection() -> None:
    rows = hand_rows()
    time_fig, params_fig = time_figure(rows), params_figure(rows)  # the kept model's val accuracy, per run
    assert sum(len(t.x) for t in time_fig.data) == 6  # the run without accuracy is left out
    assert params_fig.layout.xaxis.type == "log"
    event = {"selection": {"points": [{"customdata": ["r1,r2", "x"]}, {"customdata": ["r2"]}, {"x": 1}]}}
    assert selected_run_ids(event) == ["r1", "r2"]
    assert selected_run_ids(None) == [] and selected_run_ids({"selection": {"points": []}}) == []


def test_pruned_and_unfinished_runs_are_marked_and_left_out_of_the_mean() -> None:
    rows = hand_rows()[:3]  # freeze 47: 0.80, 0.90, 0.85, all finished
    rows += [{**rows[0], "id": "p1", "status": "pruned", "kept_val_accuracy": 0.30, "pruned_at_epoch": 2},
             {**rows[0], "id": "u1", "status": "running", "kept_val_accuracy": 0.99},
             {**rows[0], "id": "b1", "status": "succeeded", "problems": ["metrics.csv is torn"],
              "kept_val_accuracy": 0.10}]
    (point,) = sweep_points(rows).to_dict("records")
    assert point["mean"] == pytest.approx(0.85) and point["std"] == pytest.approx(0.05) and point["n"] == 3
    assert (point["n_pruned"], point["n_unfinished"]) == (1, 2)
    assert {e["id"]: e["kind"] for e in point["excluded"]} == {"p1": "pruned", "u1": "unfinished",
                                                               "b1": "unfinished"}
    fig = freeze_figure(sweep_points(rows))
    kinds = {t.meta["kind"]: t for t in fig.data}
    assert list(kinds["pruned"].y) == [0.30] and kinds["pruned"].marker.symbol == "x-thin-open"
    assert sorted(kinds["unfinished"].y) == [0.10, 0.99] and "not in the mean" in kinds["unfinished"].name
    assert "pruned at epoch 2" in kinds["pruned"].hovertext[0]
    assert list(kinds["mean"].y) == pytest.approx([0.85])
    assert "1 pruned, 2 unfinished" in kinds["mean"].hovertext[0]
    # A point whose runs were all pruned has no mean: only its markers.
    only_pruned = sweep_points([{**rows[3], "freeze": 1}])
    assert only_pruned["n"].tolist() == [0] and only_pruned["mean"].isna().all()
    assert [t.meta["kind"] for t in freeze_figure(only_pruned).data] == ["pruned"]


def test_all_sits_at_the_layer_count_plus_one_with_a_readable_axis_and_chance_drawn() -> None:
    rows = [{**row, "backbone_layers": 86, "num_classes": 4} for row in hand_rows()]
    points = sweep_points(rows)  # the layer count from the runs' own records
    assert dict(zip(points["freeze"].astype(str), points["freeze_index"]))["all"] == 87
    fig = freeze_figure(points, chance=0.25)
    assert list(fig.layout.xaxis.tickvals) == [1, 47, 87]
    assert list(fig.layout.xaxis.ticktext) == ["1", "47", "all (87)"]
    (line,) = fig.layout.shapes
    assert line.y0 == line.y1 == 0.25 and line.line.dash == "dot"
    assert fig.layout.annotations[0].text == "chance 25.0 %"
    assert fig.layout.yaxis.title.text == "val accuracy (kept: best epoch)"
    # many freeze points: thinned ticks, "all" always named
    many = sweep_points([{**rows[0], "id": f"m{i}", "freeze": i} for i in range(1, 61)] + [rows[5]])
    axis = freeze_figure(many).layout.xaxis
    assert len(axis.tickvals) <= 17 and axis.ticktext[-1] == "all (87)"


@pytest.mark.parametrize("values, clear, text", [
    ({47: [0.80, 0.90, 0.85], 1: [0.60, 0.70]}, True, "winner: mobilenet · lr 1e-04 · freeze 47 85.0 ± 5.0 % (n=3)"
                                                      ", ahead of mobilenet · lr 1e-04 · freeze 1 65.0 ± 7.1 % (n=2)"
                                                      " by 20.0 points, more than the spread 7.1 points"),
    ({47: [0.80, 0.90, 0.85], 1: [0.75, 0.85]}, False, "no clear winner: mobilenet · lr 1e-04 · freeze 47 85.0 ± "
                                                       "5.0 % (n=3) and mobilenet · lr 1e-04 · freeze 1 80.0 ± 7.1 % "
                                                       "(n=2) are 5.0 points apart, within the spread 7.1 points"),
    ({47: [0.90], 1: [0.50]}, False, "spread is unknown"),
    ({47: [0.90, 0.91]}, False, "one configuration so far: mobilenet · lr 1e-04 · freeze 47 90.5 ± 0.7 % (n=2)"),
    ({}, False, "no finished runs yet"),
])
def test_the_winner_is_named_only_when_ahead_by_more_than_the_spread(values: dict, clear: bool, text: str) -> None:
    rows = [{"id": f"{freeze}-{i}", "backbone": "mobilenet", "learning_rate": 1e-4, "freeze": freeze,
             "kept_val_accuracy": value, "status": "succeeded"}
            for freeze, accuracies in values.items() for i, value in enumerate(accuracies)]
    rows.append({"id": "pruned", "backbone": "mobilenet", "learning_rate": 1e-4, "freeze": 4,
                 "kept_val_accuracy": 0.99, "status": "pruned"})  # never a winner, whatever its value
    result = verdict(sweep_points(rows))
    assert result["clear"] is clear and text in result["text"], result["text"]
    assert (result["winner"] is not None) is clear


def test_cli_sweep_show_says_what_the_page_says(carviz_home: Path, capsys) -> None:
    from carviz import cli
    from carviz.views.plots.curves import chance_level

    record = sweep.create_sweep(grid(backbones=("small_cnn",), learning_rates=(1e-3,), freeze_points=(2, "all"),
                                     seeds=(1, 2, 3)))
    runs = record.runs()  # seed 1: freeze 2, all; seed 2: freeze 2, all; seed 3: freeze 2, all
    for run, accuracies in zip(runs, ([0.5, 0.9, 0.8], [0.3, 0.4, 0.35], [0.6, 0.8, 0.7],
                                      [0.3, 0.35, 0.3], [0.7, 0.85, 0.8], [0.2])):
        finish(run, accuracies, status=Status.PRUNED if accuracies == [0.2] else Status.SUCCEEDED)
        atomic_write_json(run.file("run.json"), {"model": {"backbone_layers": 9, "first_trainable": "x"},
                                                 "classes": ["a", "b", "c", "d"]})
    state = sweep.read_sweep(record.id)
    points = sweep_points(state.rows)
    assert points["freeze_index"].tolist() == [2, 10] and points["n"].tolist() == [3, 2]
    assert chance_level(state.rows) == 0.25
    expected = verdict(points)["text"]
    assert expected.startswith("winner: small_cnn · lr 1e-03 · freeze 2 85.0 ± 5.0 % (n=3)")
    assert cli.main(["sweep-show", record.id]) == 0
    out = capsys.readouterr().out
    assert expected in out and "chance: 25.0 % (4 classes)" in out
    assert "small_cnn         0.001    all    10  37.5 %     3.5   2      1          0" in out
    assert cli.main(["sweep-show", record.id, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["verdict"]["text"] == expected and shown["chance"] == 0.25
    assert [p["n_pruned"] for p in shown["points"]] == [0, 1]
    assert cli.main(["sweeps"]) == 0
    assert expected in capsys.readouterr().out


# ---------------------------------------------------------------- pruning


@pytest.mark.parametrize("mine, others, keep, min_runs, pruned", [
    (0.5, [0.9], 0.5, 3, False),  # only 2 runs at the rung: too few to judge
    (0.5, [0.9, 0.8], 0.5, 3, True),  # 3 runs: keep 1, two are better
    (0.85, [0.9, 0.8], 0.5, 3, True),  # second of 3, keep 1
    (0.95, [0.9, 0.8], 0.5, 3, False),  # the best
    (0.9, [0.9, 0.8], 0.5, 3, False),  # a tie goes to this run
    (0.7, [0.9, 0.8, 0.6], 0.5, 3, True),  # 4 runs keep 2: this one is third
    (0.85, [0.9, 0.8, 0.6], 0.5, 3, False),  # second of 4
    (None, [0.9, 0.8], 0.5, 3, False),  # no metric: never pruned
    (0.1, [0.9], 0.5, 2, True),
])
def test_should_prune(mine, others, keep, min_runs, pruned) -> None:
    assert should_prune(mine, others, keep, min_runs) is pruned


def test_should_prune_quarter() -> None:
    others = [0.1 * i for i in range(1, 8)]  # 7 others + me = 8 runs, keep 2
    assert not should_prune(0.65, others, 0.25, 3)  # second best (0.7 only is better)
    assert should_prune(0.55, others, 0.25, 3)  # 0.6 and 0.7 are better


def test_rung_values(carviz_home: Path) -> None:
    record = sweep.create_sweep(grid(freeze_points=(1,), seeds=(1,), prune=PruneConfig(rungs=(1,), min_runs=2)))
    first, second = record.runs()
    finish(first, [0.4, 0.6])
    assert rung_values([first, second], 1) == [0.4] and rung_values([second], 2) == []
    assert rung_values([first, second], 3) == []
    context = second.sweep_context()  # what the run reads for pruning: its own record, not the sweep's
    assert context["sweep_id"] == record.id and context["peer_run_ids"] == [first.id]
    assert context["prune"] == {"rungs": [1], "keep_fraction": 0.5, "min_runs": 2}


def test_pruning_judges_a_configuration_by_its_mean_over_seeds(carviz_home: Path) -> None:
    prune = PruneConfig(rungs=(1,), keep_fraction=0.5, min_runs=3)
    record = sweep.create_sweep(grid(freeze_points=(1, 4), seeds=(1, 2), prune=prune))
    runs = record.runs()  # seed 1: A (1e-3, 1), B (1e-3, 4), C (1e-4, 1), D (1e-4, 4); then seed 2 of each
    for run, value in zip(runs[:4], (0.9, 0.8, 0.5, 0.4)):
        finish(run, [value, value])
    second_of_a = runs[4]
    peers = [Run(second_of_a.path.parent / peer) for peer in second_of_a.sweep_context()["peer_run_ids"]]
    judge = SweepPruning(second_of_a, prune.to_dict(), peers)
    # 0.1 alone would trail three runs; A's mean (0.9 + 0.1) / 2 = 0.5 trails only B (C's tie counts for A)
    judge.on_epoch_end(0, {"val_accuracy": 0.1})
    with pytest.raises(Pruned) as pruned:  # (0.9 + 0.0) / 2 = 0.45 trails B and C: 2 of 4 configurations go on
        judge.on_epoch_end(0, {"val_accuracy": 0.0})
    assert pruned.value.epoch == 1 and "trailed" in pruned.value.reason
    judge.on_epoch_end(1, {"val_accuracy": 0.0})  # epoch 2 is no rung


def test_a_pruned_configuration_trains_no_more_seeds(carviz_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prune = PruneConfig(rungs=(1,), keep_fraction=0.5, min_runs=3)
    record = sweep.create_sweep(grid(freeze_points=(1, 4), seeds=(1, 2), prune=prune))
    runs = record.runs()
    finish(runs[1], [0.2, 0.2], status=Status.PRUNED)  # B (1e-3, freeze 4) was dropped at its rung by seed 1
    for run in runs[:4]:
        if run is not runs[1]:
            finish(run, [0.8, 0.8])
    launched: list[str] = []
    monkeypatch.setattr(sweep, "launch_run", lambda run, backend: launched.append(run.id)
                        or run.write_launch({"pid": os.getpid()}))
    assert sweep.feed(record, max_waiting=100) == 3
    skipped = runs[5]  # B's seed 2: never launched, pruned with its configuration
    assert launched == [runs[4].id, runs[6].id, runs[7].id] and skipped.status() == Status.PRUNED
    status = skipped.raw_status()
    assert status["pruned_at_epoch"] == 0 and runs[1].id in status["pruned_reason"]
    assert skipped.problems() == [] and sweep.run_summary(skipped)["pruned_at_epoch"] == 0
    # a seed launched before the decision stops as soon as it starts training
    waiting = SweepPruning(runs[5], prune.to_dict(), [runs[1]])
    waiting.resumed_after_pruning = False
    with pytest.raises(Pruned) as pruned:
        waiting.on_train_begin()
    assert pruned.value.epoch == 0 and runs[1].id in pruned.value.reason


def test_pruned_status_is_terminal_and_resumable(carviz_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert Status("pruned") is Status.PRUNED and Status.PRUNED.is_terminal()
    record = sweep.create_sweep(grid(freeze_points=(1,), learning_rates=(1e-3,), seeds=(1,)))
    run = record.runs()[0]
    run.write_status(Status.PRUNED, ended_at=now_iso(), pruned_at_epoch=1)
    assert run.status() == Status.PRUNED
    summary = sweep.run_summary(run)
    assert summary["status"] == "pruned" and summary["pruned_at_epoch"] == 1
    monkeypatch.setattr(jobs, "launch", lambda *args, **kwargs: None)
    assert sweep.resume_sweep(record.id) == []  # resuming a sweep leaves its pruned runs alone
    launch.resume(run)  # but a pruned run may be resumed by hand
    assert run.status() == Status.QUEUED


def test_sweep_module_imports_no_tensorflow_or_streamlit() -> None:
    code = ("import sys, carviz.core.sweeps, carviz.views.plots.sweeps; "
            "bad = [m for m in ('tensorflow', 'keras', 'streamlit') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


def test_cli_sweep_commands(carviz_home: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from carviz import cli
    from carviz.data.datasets import generate_demo_dataset

    generate_demo_dataset(carviz_home / "data" / "demo", per_class=4, image_size=48)
    feeders: list[str] = []
    monkeypatch.setattr(sweep, "start_feeder", lambda record: feeders.append(record.id) or 1)
    assert cli.main(["sweep", "--name", "cli grid", "--lrs", "1e-3,1e-4", "--freeze-rule", "conv", "--seeds", "1,2",
                     "--epochs", "3", "--image-size", "32", "--prune", "--rungs", "1,2"]) == 0
    out = capsys.readouterr().out
    record = sweep.find_sweep("cli grid")
    assert "12 runs launched" in out and feeders == [record.id]  # small_cnn: 3 convolutions × 2 lrs × 2 seeds
    assert record.config.points_for("small_cnn") == (2, 4, 6) and record.config.prune.rungs == (1, 2)
    finish(record.runs()[0], [0.4, 0.75, 0.7], params=100, layer="block1_conv")  # all 3 epochs: not broken
    finish(record.runs()[6], [0.2, 0.25, 0.1], params=100, layer="block1_conv")  # the same point's seed 2
    assert cli.main(["sweeps"]) == 0
    assert "2 of 12 done" in capsys.readouterr().out
    assert cli.main(["sweep-show", record.id[:12]]) == 0
    out = capsys.readouterr().out
    assert "50.0 %    35.4   2      0          0  block1_conv" in out  # mean/std of 0.75 and 0.25
    assert "one configuration so far: small_cnn · lr 1e-03 · freeze 2" in out  # the others have no finished run
    assert cli.main(["sweep-stop", "cli grid"]) == 0
    assert "stop requested for 10 run(s)" in capsys.readouterr().out
    assert cli.main(["sweep", "--name", "bad", "--freeze", "0"]) == 2
    assert "freeze points" in capsys.readouterr().err
