"""Pure builders behind the Compare page: curve figures, EMA smoothing, runs table, metrics CSV; evaluation figures."""

import io

import numpy as np
import pandas as pd
import pytest

from carviz.views import compare
from carviz.views.plots.curves import (
    PALETTE,
    chance_level,
    config_hover,
    curves_figure,
    ema,
    freeze_position,
    run_colour,
)
from carviz.views.plots.evaluation import confusion_figure, per_class_accuracy_figure, topk_figure


def rows(n: int, start: float = 1.0, val_offset: float = 0.1) -> list[dict]:
    return [
        {"epoch": e, "loss": start / e, "accuracy": 1 - 0.5 / e, "val_loss": start / e + val_offset,
         "val_accuracy": 1 - 0.6 / e, "learning_rate": 1e-3, "seconds": 2.0}
        for e in range(1, n + 1)
    ]


CONFIG_A = {"name": "mobilenet <fast>", "backbone": "mobilenet", "learning_rate": 0.001, "freeze": 47}
CONFIG_B = {"name": "densenet", "backbone": "densenet121", "learning_rate": 0.0001, "freeze": "all"}
RUNS = [("run A", CONFIG_A, rows(5)), ("run B", CONFIG_B, rows(3, start=2.0))]


def test_curves_without_smoothing_have_train_dashed_and_validation_solid_per_run():
    fig = curves_figure(RUNS, "loss")
    assert len(fig.data) == 4
    dashes = [(t.meta["run"], t.meta["split"], t.line.dash) for t in fig.data]
    assert dashes == [(0, "train", "dash"), (0, "validation", "solid"), (1, "train", "dash"), (1, "validation", "solid")]
    assert list(fig.data[0].y) == [r["loss"] for r in rows(5)]
    assert list(fig.data[1].y) == [r["val_loss"] for r in rows(5)]
    assert list(fig.data[2].x) == [1, 2, 3]
    assert fig.layout.yaxis.title.text == "loss"


def test_each_run_has_its_own_colour_shared_by_its_train_and_validation_traces():
    fig = curves_figure(RUNS, "accuracy")
    colours = {t.meta["run"]: set() for t in fig.data}
    for trace in fig.data:
        colours[trace.meta["run"]].add(trace.line.color)
    assert colours == {0: {PALETTE[0]}, 1: {PALETTE[1]}}
    assert run_colour(len(PALETTE)) == PALETTE[0]  # cycles rather than failing
    given = curves_figure(RUNS, "accuracy", colours=["#111111", "#222222"])  # e.g. compare.run_colours
    assert {t.meta["run"]: t.line.color for t in given.data} == {0: "#111111", 1: "#222222"}


def test_accuracy_charts_draw_chance_and_show_percent():
    fig = curves_figure(RUNS, "accuracy", chance=0.25)
    assert [(shape.y0, shape.line.dash) for shape in fig.layout.shapes] == [(0.25, "dash")]
    assert fig.layout.annotations[0].text == "chance 25.0 %"
    assert fig.layout.yaxis.tickformat == ".0%"
    assert list(fig.data[1].customdata[4]) == [5, "88.0 %"]  # the hover: epoch and the value as tables show it
    assert not curves_figure(RUNS, "accuracy").layout.shapes  # chance unknown: no line
    assert not curves_figure(RUNS, "loss", chance=0.25).layout.shapes  # a loss has no chance level


def test_runs_of_different_length_align_by_fraction_or_zoom_to_some_epochs():
    fig = curves_figure(RUNS, "loss", x_axis="fraction")  # RUNS: 5 of no planned epochs, 3
    assert list(fig.data[0].x) == [0.2, 0.4, 0.6, 0.8, 1.0] and list(fig.data[2].x)[-1] == 1.0
    planned = curves_figure([("half", {"epochs": 10}, rows(5))], "loss", x_axis="fraction")
    assert list(planned.data[0].x)[-1] == 0.5  # a run stopped halfway ends halfway
    assert list(planned.data[0].customdata[-1])[0] == 5  # the hover still names the epoch
    zoomed = curves_figure(RUNS, "loss", smoothing=0.5, epoch_range=(2, 3))
    assert all(list(t.x) == [2, 3] for t in zoomed.data)
    full = curves_figure(RUNS, "loss", smoothing=0.5)
    assert list(zoomed.data[1].y) == list(full.data[1].y)[1:3]  # the EMA runs over the whole run, then is cut
    with pytest.raises(ValueError):
        curves_figure(RUNS, "loss", x_axis="time")


def test_hover_shows_the_run_config_escaped():
    fig = curves_figure(RUNS, "loss")
    text = fig.data[0].text
    assert "backbone: mobilenet" in text and "learning_rate: 0.001" in text and "freeze: 47" in text
    assert "mobilenet &lt;fast&gt;" in text and "<fast>" not in text  # user text is escaped
    assert "%{text}" in fig.data[0].hovertemplate
    assert "freeze: all" in fig.data[3].text
    assert config_hover({"name": "", "backbone": None}) == ""


def test_smoothing_keeps_the_raw_points_as_faint_markers_under_the_smoothed_line():
    noisy = [dict(r, val_loss=r["val_loss"] + (0.3 if r["epoch"] % 2 else -0.3)) for r in rows(8)]
    fig = curves_figure([("noisy", CONFIG_A, noisy)], "loss", smoothing=0.6)
    assert len(fig.data) == 4
    raw = [t for t in fig.data if t.meta["raw"]]
    lines = [t for t in fig.data if not t.meta["raw"]]
    assert [t.mode for t in raw] == ["markers", "markers"] and all(t.marker.opacity < 1 for t in raw)
    assert [t.mode for t in lines] == ["lines", "lines"]
    raw_val = next(t for t in raw if t.meta["split"] == "validation")
    line_val = next(t for t in lines if t.meta["split"] == "validation")
    assert list(raw_val.y) == [r["val_loss"] for r in noisy]  # raw values untouched
    assert np.std(np.diff(line_val.y)) < np.std(np.diff(raw_val.y))  # the line is smoother
    assert line_val.line.dash == "solid" and raw_val.marker.color == line_val.line.color


def test_ema_is_debiased_skips_gaps_and_is_identity_at_zero():
    assert ema([1.0, 2.0, 3.0], 0.0) == [1.0, 2.0, 3.0]
    smoothed = ema([5.0, None, 5.0, 5.0], 0.9)
    assert smoothed[1] is None
    assert smoothed[0] == pytest.approx(5.0) and smoothed[3] == pytest.approx(5.0)  # constant stays constant
    with pytest.raises(ValueError):
        ema([1.0], 1.0)


def test_missing_values_and_empty_runs_do_not_break_the_figure():
    partial = [{"epoch": 1, "loss": 1.0, "accuracy": 0.5, "val_loss": None, "val_accuracy": None},
               {"epoch": 2, "loss": float("nan"), "accuracy": 0.6, "val_loss": 0.9, "val_accuracy": 0.55}]
    fig = curves_figure([("partial", {}, partial), ("empty", {}, [])], "loss", smoothing=0.5)
    assert len(fig.data) == 8
    assert list(fig.data[0].y) == [1.0, None]
    assert len(curves_figure([], "accuracy").data) == 0
    with pytest.raises(ValueError):
        curves_figure(RUNS, "val_loss")


def summary(run_id: str, status: str, backbone: str = "mobilenet", name: str = "", best: float | None = None) -> dict:
    return {"id": run_id, "name": name, "backbone": backbone, "learning_rate": 1e-3, "freeze": 47, "status": status,
            "epochs_done": 3, "epochs": 5, "best_val_accuracy": best, "best_epoch": 2, "seconds": 12.5,
            "dataset": "demo", "weights": "none", "head": "recommended", "created_at": None}


SUMMARIES = [  # newest first, as list_runs returns them
    summary("20260105-000000-aaaaaa", "running", name="live one"),
    summary("20260104-000000-bbbbbb", "succeeded", name="Best MobileNet", best=0.9),
    summary("20260103-000000-cccccc", "failed", backbone="densenet121"),
    summary("20260102-000000-dddddd", "succeeded", backbone="densenet121", name="dense", best=0.8),
    summary("20260101-000000-eeeeee", "succeeded", name="old", best=0.7),
    summary("20260100-000000-ffffff", "succeeded", name="older", best=0.6),
]


def test_runs_table_filters_and_default_selection():
    table = compare.runs_table(SUMMARIES)
    assert list(table.columns) == list(compare.TABLE_COLUMNS)
    assert table["freeze"].tolist() == ["47"] * 6
    assert compare.default_selection(table) == ["20260104-000000-bbbbbb", "20260102-000000-dddddd",
                                                "20260101-000000-eeeeee"]
    assert compare.default_selection(compare.filter_table(table, statuses=["failed"])) == ["20260103-000000-cccccc"]
    assert compare.filter_table(table, backbones=["densenet121"])["id"].tolist() == [
        "20260103-000000-cccccc", "20260102-000000-dddddd"]
    found = compare.filter_table(table, statuses=["succeeded"], text="mobilenet")
    assert found["id"].tolist() == ["20260104-000000-bbbbbb"] and list(found.index) == [0]
    assert compare.filter_table(table, text="ffffff")["name"].tolist() == ["older"]
    assert compare.any_active(SUMMARIES) and not compare.any_active(SUMMARIES[1:])
    assert compare.runs_table([]).empty


def test_best_final_table_and_long_metrics_csv():
    history = {"a": rows(4), "b": []}
    history["a"][2]["val_accuracy"] = 0.99  # best at epoch 3, not the last
    table = compare.best_final_table([{"id": "a", "name": "A", "status": "succeeded"},
                                      {"id": "b", "name": "B", "status": "queued"}], history)
    first = table.iloc[0]
    assert first["best_val_accuracy"] == 0.99 and first["best_val_accuracy_epoch"] == 3
    assert first["final_val_loss"] == history["a"][-1]["val_loss"] and first["seconds"] == 8.0
    assert first["best_val_loss_epoch"] == 4
    assert table.iloc[1]["epochs"] == 0
    text = compare.metrics_csv([("a", "A", history["a"]), ("b", "B", [])])
    long = pd.read_csv(io.StringIO(text))
    assert list(long.columns[:3]) == ["run_id", "name", "epoch"] and len(long) == 4
    assert set(compare.METRIC_FIELDS) <= set(long.columns)
    assert compare.run_label({"id": "20260104-000000-bbbbbb", "name": "x"}) == "x (bbbbbb)"
    assert compare.run_label({"id": "r1", "name": ""}) == "r1"


def test_freeze_positions_and_chance():
    assert freeze_position(47) == 47 and freeze_position("12") == 12
    assert freeze_position("all", 86) == 87 and freeze_position("all") is None and freeze_position(None, 3) is None
    assert chance_level([{"num_classes": 4}, {"num_classes": None}]) == 0.25 and chance_level([]) is None


def test_the_runs_table_says_which_model_its_number_is():
    row = dict(summary("20260104-000000-bbbbbb", "succeeded", best=0.9), kept_epoch=7, kept_rule="best val",
               kept_val_accuracy=0.9, test_accuracy=0.85)
    table = compare.runs_table([row])
    assert table.loc[0, "kept"] == "epoch 7 (best val)" and table.loc[0, "kept_val_accuracy"] == 0.9
    assert table.loc[0, "test_accuracy"] == 0.85 and table.loc[0, "kept_epoch"] == 7
    best_final = compare.best_final_table([row], {row["id"]: rows(8)})
    assert best_final.loc[0, "kept"] == "kept: epoch 7 (best val)" and best_final.loc[0, "test_accuracy"] == 0.85


def test_evaluation_figures():
    matrix = np.array([[3, 1, 0], [0, 2, 0], [1, 0, 0]])
    fig = confusion_figure(matrix, ["a", "b", "<c>"])
    assert list(fig.data[0].x) == ["a", "b", "&lt;c&gt;"] and fig.data[0].z.tolist() == matrix.tolist()
    normalized = confusion_figure(matrix, ["a", "b", "c"], normalize=True)
    assert normalized.data[0].z[0].tolist() == pytest.approx([0.75, 0.25, 0.0])
    with pytest.raises(ValueError):
        confusion_figure(matrix, ["a", "b"])
    bars = per_class_accuracy_figure(["a", "b", "c"], [0.75, 1.0, float("nan")], [4, 2, 0])
    assert list(bars.data[0].x) == [0.75, 1.0, None] and bars.data[0].text[0] == "75.0 % of 4"
    assert bars.layout.shapes[0].x0 == pytest.approx(1 / 3) and bars.layout.annotations[0].text == "chance 33.3 %"
    top = topk_figure([("bus", 0.7), ("suv", 0.2)], title="x.jpg")
    assert list(top.data[0].y) == ["bus", "suv"] and top.layout.yaxis.autorange == "reversed"
