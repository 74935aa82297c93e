"""Compare's pure builders: config diff, stable run colours, search and archive filter, ?runs= preselection, the
metrics table as shown, and which runs form one sweep."""

from __future__ import annotations

from pathlib import Path

from carviz.core.config import PRESETS, TrainConfig
from carviz.core.store import create_run
from carviz.core.sweeps import SweepConfig, create_sweep
from carviz.views import compare
from carviz.views.config_diff import DIFFERS, FIELD, MISSING, config_diff, flatten
from carviz.views.plots.curves import PALETTE


def row(run_id: str, name: str = "", **fields) -> dict:
    return {"id": run_id, "name": name, "backbone": "mobilenet", "learning_rate": 1e-3, "freeze": 47,
            "status": "succeeded", "epochs_done": 5, "epochs": 5, "kept_val_accuracy": 0.4167, "problems": [],
            **fields}


def test_config_diff_lists_the_fields_that_differ_one_column_per_run():
    a = {"name": "a", "backbone": "mobilenet", "learning_rate": 0.001, "freeze": 47,
         "augmentation": {"enabled": True, "rotation": 0.1}}
    b = {"name": "b", "backbone": "mobilenet", "learning_rate": 0.0001, "freeze": "all",
         "augmentation": {"enabled": False, "rotation": 0.1}, "test_fraction": 0.1}
    diff = config_diff([("run a", a), ("run b", b)])
    assert list(diff.columns) == [FIELD, "run a", "run b", DIFFERS]
    assert diff[FIELD].tolist() == ["name", "learning_rate", "freeze", "augmentation.enabled", "test_fraction"]
    by_field = diff.set_index(FIELD)
    assert by_field.loc["learning_rate"].tolist() == ["0.001", "0.0001", True]
    assert by_field.loc["freeze"].tolist() == ["47", "all", True]
    assert by_field.loc["augmentation.enabled"].tolist() == ["true", "false", True]
    assert by_field.loc["test_fraction", "run a"] == MISSING  # an older config without the field
    every = config_diff([("run a", a), ("run b", b)], show_identical=True).set_index(FIELD)
    assert every.loc["backbone"].tolist() == ["mobilenet", "mobilenet", False]
    assert every.loc["augmentation.rotation", DIFFERS] == False  # noqa: E712 - a numpy bool
    assert config_diff([("x", a), ("x", dict(a))]).empty  # identical configs: nothing differs
    assert list(config_diff([("x", a), ("x", b)]).columns[1:3]) == ["x", "x (2)"]  # equal labels stay apart
    assert flatten({"a": {"b": {"c": 1}}, "d": []}) == {"a.b.c": 1, "d": []}


def test_run_colours_follow_creation_order_not_the_selection():
    ids = ["20260103-000000-cccccc", "20260101-000000-aaaaaa", "20260102-000000-bbbbbb"]  # newest first
    colours = compare.run_colours(ids)
    assert [colours[i] for i in sorted(ids)] == list(PALETTE[:3])
    grown = compare.run_colours(ids + ["20260104-000000-dddddd"])  # a new run leaves the older ones as they were
    assert all(grown[i] == colours[i] for i in ids)


def test_search_matches_name_id_tags_and_note_and_hides_archived_runs():
    table = compare.runs_table([
        row("20260101-000000-aaaaaa", "Baseline", tags=["cars20", "seed"], note="Lower LR helped"),
        row("20260102-000000-bbbbbb", "", display_name="Renamed run"),
        row("20260103-000000-cccccc", "old", archived=True),
        row("20260104-000000-dddddd", "before annotations"),  # a row without tags, note or archived
    ])
    assert table.loc[0, "tags"] == "cars20, seed" and table.loc[1, "name"] == "Renamed run"

    def found(**kwargs) -> list[str]:
        return [run_id[-6:] for run_id in compare.filter_table(table, **kwargs)["id"]]

    assert found() == ["aaaaaa", "bbbbbb", "dddddd"]  # archived: hidden
    assert found(show_archived=True) == ["aaaaaa", "bbbbbb", "cccccc", "dddddd"]
    assert found(text="CARS20") == ["aaaaaa"] and found(text="lr help") == ["aaaaaa"]
    assert found(text="renamed") == ["bbbbbb"] and found(text="dddd") == ["dddddd"]
    assert found(text="old") == [] and found(text="old", show_archived=True) == ["cccccc"]


def test_runs_query_value_names_runs_by_id_or_unique_prefix():
    ids = ["20260101-000000-aaaaaa", "20260101-000000-aaaabb", "20260102-000000-bbbbbb"]
    assert compare.preselected("20260102-000000-bbbbbb, 20260101-000000-aaaaaa", ids) == [ids[2], ids[0]]
    assert compare.preselected("20260102,20260101-000000-aaaa,nope,20260102-000000-bbbbbb", ids) == [ids[2]]
    assert compare.preselected(["20260101-000000-aaaabb", ""], ids) == [ids[1]] and compare.preselected(None, ids) == []
    assert compare.compare_query(ids[:2]) == {"runs": f"{ids[0]},{ids[1]}"}


def test_metrics_table_says_which_number_in_one_format():
    history = [{"epoch": e, "loss": 1 / e, "accuracy": 0.5, "val_loss": 1 / e, "val_accuracy": v, "seconds": 2.0}
               for e, v in ((1, 0.3), (2, 0.4167), (3, 0.35))]
    shown = compare.metrics_view([row("20260101-000000-aaaaaa", "A", kept_epoch=2, kept_rule="best val")],
                                 {"20260101-000000-aaaaaa": history})
    first = shown.iloc[0]
    assert list(shown.columns) == ["id", *compare.METRICS_TABLE_HEADERS]
    assert first["run"] == "A (aaaaaa)" and first["kept"] == "epoch 2 (best val)"
    assert first["kept_val_accuracy"] == "41.7 %" and first["best_val_accuracy"] == "41.7 % (2)"
    assert first["final_val_accuracy"] == "35.0 %" and first["test_accuracy"] == "–"
    assert first["best_val_loss"] == "0.3333 (3)" and first["seconds"] == 6
    percent = compare.percent_table(compare.runs_table([row("20260101-000000-aaaaaa")]))
    assert percent.loc[0, "kept_val_accuracy"] == 41.67  # shown as "41.7 %" by the column's "%.1f %%"
    # to fit the page, a column no run has a value in is left out: here test acc, tags, note, problems
    assert "test_accuracy" not in compare.visible_columns(shown, compare.METRICS_TABLE_HEADERS)
    shown_columns = compare.visible_columns(percent, compare.RUNS_TABLE_HEADERS)
    assert shown_columns == [c for c in compare.RUNS_TABLE_HEADERS if c not in compare.OPTIONAL_COLUMNS]
    tagged = compare.runs_table([row("20260101-000000-aaaaaa", tags=["x"], test_accuracy=0.5)])
    assert {"tags", "test_accuracy"} <= set(compare.visible_columns(tagged, compare.RUNS_TABLE_HEADERS))


def test_only_runs_of_one_sweep_form_a_sweep(carviz_home: Path):
    config = SweepConfig(name="s", base=PRESETS["demo quick"], backbones=("small_cnn",), learning_rates=(1e-3,),
                         freeze_points=(1, "all"), seeds=(1,))
    runs = create_sweep(config).runs()
    other = create_sweep(config).runs()
    lone = create_run(TrainConfig(name="lone", backbone="small_cnn", weights="none"))
    assert compare.common_sweep(runs) == runs[0].sweep_context()["sweep_id"]
    assert compare.common_sweep(runs[:1]) is None  # one run is no comparison
    assert compare.common_sweep([runs[0], other[0]]) is None and compare.common_sweep([runs[0], lone]) is None
