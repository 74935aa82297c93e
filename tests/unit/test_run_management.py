"""Run management: rename, tags and notes (annotations), archive, delete to the trash, restore and empty; CLI too."""

from __future__ import annotations

import json

import pytest

from carviz.cli import main
from carviz.core import trash
from carviz.core.annotations import filter_rows
from carviz.core.config import SweepConfig, TrainConfig
from carviz.core.jobs.status import Status
from carviz.core.store import Store, summarize


def finished_run(store: Store, name: str, size: int = 0):
    run = store.create_run(TrainConfig(name=name, dataset="demo", backbone="small_cnn", weights="none"))
    run.write_status(Status.SUCCEEDED)
    if size:
        run.model_path().write_bytes(b"\0" * size)
    return run


def test_rename_tags_note_and_archive_show_in_the_row_and_find_the_run(carviz_home):
    store = Store()
    run = finished_run(store, "baseline")
    run.annotate(name="  MobileNet   freeze 73 ", tags=["Best", "best", " cars20 "], note="keeps the best epoch")
    row = summarize(run)
    assert row["name"] == "MobileNet freeze 73" and row["config_name"] == "baseline"
    assert row["tags"] == ["best", "cars20"] and row["note"] == "keeps the best epoch"
    assert store.find_run("MobileNet freeze 73") == run and store.find_run("baseline") == run
    assert run.config().name == "baseline"  # the config stays what trained
    run.annotate(name="")
    assert summarize(run)["name"] == "baseline"
    with pytest.raises(ValueError):
        run.annotate(tags=["x" * 41])
    with pytest.raises(ValueError):
        run.annotate(colour="red")


def test_a_hand_damaged_annotations_file_loses_only_the_bad_field(carviz_home):
    run = finished_run(Store(), "r")
    run.file("annotations.json").write_text(json.dumps({"name": 5, "tags": ["ok"], "archived": "yes"}))
    assert run.annotations() == {"tags": ["ok"]}
    run.file("annotations.json").write_text("{not json")
    assert summarize(run)["tags"] == [] and summarize(run)["name"] == "r"


def test_filter_rows_by_text_tag_status_and_archived(carviz_home):
    store = Store()
    a, b, c = finished_run(store, "alpha"), finished_run(store, "beta"), finished_run(store, "gamma")
    a.annotate(tags=["keep"], note="Lower LR helped")
    b.annotate(tags=["keep", "seed"])
    c.annotate(archived=True)
    rows = [summarize(run) for run in store.list_runs()]
    assert {r["id"] for r in filter_rows(rows)} == {a.id, b.id}
    assert {r["id"] for r in filter_rows(rows, include_archived=True)} == {a.id, b.id, c.id}
    assert [r["id"] for r in filter_rows(rows, text="lower lr")] == [a.id]
    assert [r["id"] for r in filter_rows(rows, tags=["keep", "seed"])] == [b.id]
    assert filter_rows(rows, status="running") == []


def test_delete_moves_to_the_trash_and_restore_brings_back_everything(carviz_home):
    store = Store()
    run = finished_run(store, "to delete", size=5000)
    run.annotate(tags=["x"])
    item = trash.trash_run(store, run)
    assert item.size_bytes >= 5000 and item.name == "to delete"
    assert [r.id for r in store.list_runs()] == [] and [t.id for t in trash.list_trash(store)] == [run.id]
    with pytest.raises(LookupError):
        store.find_run(run.id)
    restored = trash.restore_run(store, run.id)
    assert restored.model_path().stat().st_size == 5000 and restored.annotations()["tags"] == ["x"]
    assert trash.list_trash(store) == []
    assert not restored.file("trashed.json").exists()


def test_a_running_or_queued_run_cannot_be_deleted(carviz_home):
    store = Store()
    queued = store.create_run(TrainConfig(name="waiting"))
    with pytest.raises(ValueError, match="stop it"):
        trash.trash_run(store, queued)
    assert queued.path.is_dir()


def test_empty_trash_frees_the_space_it_reported(carviz_home):
    store = Store()
    kept, gone = finished_run(store, "kept", size=100), finished_run(store, "gone", size=20000)
    trash.trash_run(store, gone)
    trash.trash_run(store, kept)
    freed = trash.empty_trash(store, [gone.id])
    assert freed >= 20000
    assert [t.id for t in trash.list_trash(store)] == [kept.id]
    assert trash.empty_trash(store) >= 100 and trash.list_trash(store) == []
    assert not (store.root / ".trash" / gone.id).exists()


def test_a_sweep_reads_on_when_one_of_its_runs_is_deleted(carviz_home):
    from carviz.core.sweeps import read_sweep

    store = Store()
    sweep = store.create_sweep(SweepConfig(name="s", base=TrainConfig(dataset="demo", backbone="small_cnn",
                                                                       weights="none"),
                                           backbones=("small_cnn",), learning_rates=(1e-3, 1e-4), freeze_points=(1,)))
    first = sweep.runs()[0]
    for run in sweep.runs():
        run.write_status(Status.SUCCEEDED)
    trash.trash_run(store, first)
    state = read_sweep(sweep.id)
    assert first.id not in [row["id"] for row in state.rows]


def test_cli_manages_runs(carviz_home, capsys):
    store = Store()
    run = finished_run(store, "cli run", size=3000)
    assert main(["rename", run.id, "renamed"]) == 0
    assert main(["tag", "renamed", "good", "small"]) == 0
    assert main(["tag", run.id, "small", "--remove"]) == 0
    assert main(["note", run.id, "try 1e-4 next"]) == 0
    capsys.readouterr()
    assert main(["runs", "--tag", "good", "--search", "1E-4"]) == 0
    listing = capsys.readouterr().out
    assert run.id in listing and "renamed" in listing
    assert main(["archive", run.id]) == 0
    capsys.readouterr()
    main(["runs"])
    assert run.id not in capsys.readouterr().out
    main(["runs", "--archived"])
    assert run.id in capsys.readouterr().out
    assert main(["delete", run.id]) == 0
    assert "moved to the trash" in capsys.readouterr().out
    assert main(["deleted"]) == 0
    assert run.id in capsys.readouterr().out
    assert main(["deleted", "--restore", run.id]) == 0
    assert store.get_run(run.id).annotations() == {"name": "renamed", "tags": ["good"], "note": "try 1e-4 next",
                                                   "archived": True}
    main(["delete", run.id])
    capsys.readouterr()
    assert main(["deleted", "--empty"]) == 0
    assert "freed" in capsys.readouterr().out and trash.list_trash(store) == []
    assert main(["delete", "no-such-run"]) == 2


def test_cli_diff_lists_only_the_fields_that_differ(carviz_home, capsys):
    store = Store()
    a = store.create_run(TrainConfig(name="a", learning_rate=1e-3, freeze=47))
    b = store.create_run(TrainConfig(name="b", learning_rate=1e-4, freeze=47))
    capsys.readouterr()
    assert main(["diff", a.id, b.id]) == 0
    lines = capsys.readouterr().out.splitlines()
    fields = [line.split()[0] for line in lines[1:]]
    assert "learning_rate" in fields and "name" in fields and "freeze" not in fields
    assert main(["diff", a.id, b.id, "--all"]) == 0
    assert "freeze" in capsys.readouterr().out
    assert main(["diff", a.id]) == 2
