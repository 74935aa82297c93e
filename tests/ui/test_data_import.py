"""Data page imports: idempotent, the form resets, Undo, a wrong upload type named; trash thumbnails."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from PIL import Image
from streamlit.testing.v1 import AppTest
from test_train_page import APP, tiny_demo  # tests/ui is on sys.path (pytest's rootdir-less import)

from carviz.data.import_log import list_imports
from carviz.data.importer import trash_images


def jpeg(colour: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(out, "JPEG")
    return out.getvalue()


def zip_of(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def open_data(at: AppTest, dataset: str | None = None) -> AppTest:
    at.session_state["aug_show"] = False  # the augmentation preview loads Keras: not the point here
    if dataset:
        at.session_state["data_dataset"] = dataset
    return at.switch_page("app_pages/data.py").run()


def files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.glob("*/*") if not p.parent.name.startswith("."))


def messages(at: AppTest, kind: str) -> list[str]:
    return [e.value for e in at.get(kind)]


PETS = {"cats/a.jpg": jpeg("red"), "cats/b.jpg": jpeg("green"), "dogs/c.jpg": jpeg("blue")}


def test_a_second_import_adds_nothing_and_the_form_resets(carviz_home: Path) -> None:
    tiny_demo(carviz_home)
    at = open_data(AppTest.from_file(APP, default_timeout=30))
    at.file_uploader(key="imp_zip").set_value(("pets.zip", zip_of(PETS), "application/zip")).run()
    at.text_input(key="imp_new_name").input("pets")
    at.button(key="imp_zip_go").click().run()
    assert not at.exception
    assert any("Added 3 images (cats 2, dogs 1)" in s for s in messages(at, "success"))
    pets = carviz_home / "data" / "pets"
    assert files(pets) == ["cats/a.jpg", "cats/b.jpg", "dogs/c.jpg"]
    # the form reset: an empty uploader (a new one), so the button is off and a second click imports nothing
    assert at.file_uploader(key="imp_zip_1").value is None
    assert at.button(key="imp_zip_go").disabled
    assert at.text_input(key="imp_folder").value == ""

    # the same zip chosen and imported again: every file is reported as present and skipped, nothing copied
    at.file_uploader(key="imp_zip_1").set_value(("pets.zip", zip_of(PETS), "application/zip")).run()
    at.selectbox(key="imp_target").set_value("pets")
    at.button(key="imp_zip_go").click().run()
    assert not at.exception
    assert any("Added 0 images; 3 already present, skipped" in i for i in messages(at, "info"))
    assert files(pets) == ["cats/a.jpg", "cats/b.jpg", "dogs/c.jpg"]  # no -1 copies
    [skipped] = [t.value for t in at.dataframe if "already present as" in t.value.columns]
    assert dict(zip(skipped["member"], skipped["already present as"]))["cats/a.jpg"] == "cats/a.jpg"
    metrics = {metric.label: metric.value for metric in at.metric}
    assert metrics["Usable images"] == "3" and metrics["Set aside"] == "0"  # no originals set aside as duplicates
    assert len(list_imports(pets)) == 1  # nothing added, nothing to undo
    assert at.file_uploader(key="imp_zip_2").value is None


def test_an_import_can_be_undone_from_the_page(carviz_home: Path, tmp_path: Path) -> None:
    tiny_demo(carviz_home)
    at = open_data(AppTest.from_file(APP, default_timeout=30))
    at.file_uploader(key="imp_zip").set_value(("pets.zip", zip_of(PETS), "application/zip")).run()
    at.text_input(key="imp_new_name").input("pets")
    at.button(key="imp_zip_go").click().run()
    pets = carviz_home / "data" / "pets"
    folder = tmp_path / "more"
    (folder / "birds").mkdir(parents=True)
    (folder / "birds" / "d.jpg").write_bytes(jpeg("yellow"))
    (folder / "cats").mkdir()
    (folder / "cats" / "a.jpg").write_bytes(PETS["cats/a.jpg"])  # already there
    at.selectbox(key="imp_target").set_value("pets")
    at.text_input(key="imp_folder").input(str(folder))
    at.button(key="imp_folder_go").click().run()
    assert not at.exception
    assert any("Added 1 image (birds 1); 1 already present, skipped" in s for s in messages(at, "success"))
    assert files(pets) == ["birds/d.jpg", "cats/a.jpg", "cats/b.jpg", "dogs/c.jpg"]

    at.button(key="imp_undo").click().run()  # "Undo this import": the folder's one image
    assert not at.exception
    assert any("Undid the import of" in s and "removed 1 image." in s for s in messages(at, "success"))
    assert files(pets) == ["cats/a.jpg", "cats/b.jpg", "dogs/c.jpg"] and not (pets / "birds").exists()
    assert {metric.label: metric.value for metric in at.metric}["Usable images"] == "3"
    assert not [b for b in at.button if b.key == "imp_undo"]  # its report is gone with it

    [zip_import] = [r for r in list_imports(pets) if not r.undone_at]  # the latest imports, each with Undo
    at.button(key=f"imp_undo::pets::{zip_import.id}").click().run()
    assert not at.exception
    assert any("pets.zip" in s and "removed 3 images." in s for s in messages(at, "success"))
    assert files(pets) == []
    assert not [b for b in at.button if b.key.startswith("imp_undo::pets::")]  # both undone: no Undo left


def test_a_rejected_upload_type_is_named(carviz_home: Path) -> None:
    tiny_demo(carviz_home)
    at = open_data(AppTest.from_file(APP, default_timeout=30))
    at.file_uploader(key="imp_zip").set_value(("photo.jpg", jpeg("red"), "image/jpeg")).run()
    assert not at.exception
    [error] = [e for e in messages(at, "error") if "photo.jpg" in e]
    assert "cannot be imported" in error and ".zip" in error
    assert at.button(key="imp_zip_go").disabled


def test_the_trash_shows_thumbnails(carviz_home: Path) -> None:
    root = tiny_demo(carviz_home, per_class=4)
    trash_images(root, "bus", ["bus_001.jpg", "bus_002.jpg"])
    (root / ".trash" / "bus" / "bus_002.jpg").write_bytes(b"no longer an image")
    at = open_data(AppTest.from_file(APP, default_timeout=30))
    assert not at.exception
    review = at.tabs[4]
    assert len(review.image) == 1  # no class chosen: the only image is the trash's decodable one
    assert "does not decode" in " ".join(c.value for c in review.caption)
    assert at.checkbox(key="rv_restore::demo::bus/bus_001.jpg").label.startswith("bus/bus_001.jpg · ")
