"""The Runs page under AppTest: paging and filters over all runs, rename/tags/note, archive, delete and restore."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from carviz.core import trash
from carviz.core.config import TrainConfig
from carviz.core.jobs.status import Status
from carviz.core.store import Store
from carviz.views.formatting import format_size

APP = str(Path(__file__).resolve().parents[2] / "dashboard.py")  # page links need the app's navigation


def finished(store: Store, name: str, model_bytes: int = 0):
    run = store.create_run(TrainConfig(name=name, dataset="demo", backbone="small_cnn", weights="none"))
    run.write_status(Status.SUCCEEDED)
    if model_bytes:
        run.model_path().write_bytes(b"\0" * model_bytes)
    return run


def open_page(selected: list[str] | None = None) -> AppTest:
    from carviz.core import settings
    from carviz.data.datasets import generate_demo_dataset

    generate_demo_dataset(settings.data_dir() / "demo", per_class=4, image_size=32)  # the dashboard's first start
    at = AppTest.from_file(APP, default_timeout=30)
    at.session_state["aug_show"] = False
    if selected is not None:
        at.session_state["runs_selected_ids"] = selected
    at.switch_page("app_pages/runs.py")
    return at.run()


def table_ids(at: AppTest) -> list[str]:
    return list(at.dataframe[0].value["id"])


def test_every_run_is_listed_in_pages_and_filtered(carviz_home):
    store = Store()
    runs = [finished(store, f"run {i}") for i in range(30)]
    runs[3].annotate(tags=["mine"], note="the one with a lower LR")
    at = open_page()
    assert not at.exception
    assert len(table_ids(at)) == 25 and "of 30 shown" in at.caption[0].value
    at.number_input(key="runs_page").set_value(2).run()
    assert len(table_ids(at)) == 5
    at.text_input(key="runs_search").set_value("LOWER lr").run()
    assert table_ids(at) == [runs[3].id]
    at.text_input(key="runs_search").set_value("").run()
    at.multiselect(key="runs_tags").set_value(["mine"]).run()
    assert table_ids(at) == [runs[3].id]


def test_rename_tags_and_note_are_saved_for_the_selected_run(carviz_home):
    store = Store()
    run = finished(store, "first try")
    at = open_page([run.id])
    form_name = [t for t in at.text_input if t.label == "Name"][0]
    form_name.set_value("MobileNet baseline")
    [m for m in at.multiselect if m.label == "Tags" and m.key != "runs_tags"][0].set_value(["baseline"])
    at.text_area[0].set_value("compare with freeze 73")
    at.button[[b.label for b in at.button].index("Save")].click().run()
    assert not at.exception
    assert run.annotations() == {"name": "MobileNet baseline", "tags": ["baseline"], "note": "compare with freeze 73"}
    assert "Saved MobileNet baseline" in at.success[0].value
    assert at.dataframe[0].value["name"][0] == "MobileNet baseline"


def test_archive_hides_a_run_until_archived_runs_are_shown(carviz_home):
    store = Store()
    kept, archived = finished(store, "kept"), finished(store, "old")
    at = open_page([archived.id])
    at.button(key="runs_archive").click().run()
    assert store.get_run(archived.id).annotations()["archived"] is True
    assert table_ids(at) == [kept.id]
    at.checkbox(key="runs_archived").check().run()
    assert set(table_ids(at)) == {kept.id, archived.id}


def test_delete_asks_first_then_moves_to_the_trash_and_restore_brings_it_back(carviz_home):
    store = Store()
    run = finished(store, "to delete", model_bytes=4096)
    at = open_page([run.id])
    at.button(key="runs_delete").click().run()
    assert store.get_run(run.id)  # only asked so far
    assert "Move 1 run(s) to the trash?" in at.warning[0].value
    at.button(key="runs_delete_confirm").click().run()
    assert not at.exception
    assert [t.id for t in trash.list_trash(store)] == [run.id]
    assert "No runs yet" in at.info[0].value
    # the model's 4 KiB plus the record's own small files, as the trash measures them
    assert at.expander[0].label == f"Trash: 1 run, {format_size(trash.list_trash(store)[0].size_bytes)}"
    assert trash.list_trash(store)[0].size_bytes >= 4096
    at.button(key=f"runs_restore_{run.id}").click().run()
    assert store.get_run(run.id).model_path().stat().st_size == 4096
    assert trash.list_trash(store) == []


def test_empty_trash_needs_a_tick_and_says_what_it_freed(carviz_home):
    store = Store()
    trash.trash_run(store, finished(store, "gone", model_bytes=2 * 1024 * 1024))
    at = open_page()
    assert at.button(key="runs_empty_trash").disabled
    at.checkbox(key="runs_empty_sure").check().run()
    at.button(key="runs_empty_trash").click().run()
    assert trash.list_trash(store) == []
    assert "2 MiB freed" in at.success[0].value


def test_a_running_run_cannot_be_deleted_from_the_page(carviz_home):
    store = Store()
    run = store.create_run(TrainConfig(name="queued"))
    at = open_page([run.id])
    assert at.button(key="runs_delete").disabled
