"""Imports are idempotent by content, recorded, and undone file by file (only what the import added, unchanged)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from carviz.data import importer
from carviz.data.collect import report_summary
from carviz.data.datasets import scan_dataset
from carviz.data.import_log import IMPORTS_DIR, list_imports, read_import, undo_import


def jpeg(colour: tuple[int, int, int], size: tuple[int, int] = (48, 40)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "JPEG")
    return out.getvalue()


RED, GREEN, BLUE, GREY = jpeg((200, 0, 0)), jpeg((0, 200, 0)), jpeg((0, 0, 200)), jpeg((90, 90, 90))


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def images(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.glob("*/*"))
            if p.is_file() and not p.parent.name.startswith(".")}


def test_importing_the_same_zip_twice_adds_nothing(tmp_path: Path) -> None:
    dataset = tmp_path / "pets"
    archive = make_zip(tmp_path / "pets.zip", {"cats/a.jpg": RED, "cats/b.jpg": GREEN, "dogs/c.jpg": BLUE})
    first = importer.import_zip(archive, dataset)
    assert len(first.added) == 3 and first.skipped == [] and first.import_id
    record = read_import(dataset, first.import_id)
    assert record.source == "pets.zip" and set(record.files) == {"cats/a.jpg", "cats/b.jpg", "dogs/c.jpg"}
    before = images(dataset)

    second = importer.import_zip(archive, dataset)  # the second click
    assert second.added == [] and second.dropped == [] and second.import_id == ""  # nothing added, nothing recorded
    assert dict(second.skipped) == {"cats/a.jpg": "already present as cats/a.jpg",
                                    "cats/b.jpg": "already present as cats/b.jpg",
                                    "dogs/c.jpg": "already present as dogs/c.jpg"}
    assert report_summary(second) == "Added 0 images; 3 already present, skipped; dropped 0."
    assert images(dataset) == before and scan_dataset(dataset).problems == []  # no -1 copies, no duplicates
    assert [r.id for r in list_imports(dataset)] == [first.import_id]

    src = tmp_path / "src"  # the same content from a folder, under other names: still skipped
    (src / "cats").mkdir(parents=True)
    (src / "cats" / "renamed.jpg").write_bytes(RED)
    (src / "cats" / "new.jpg").write_bytes(GREY)
    third = importer.import_folder(src, dataset)
    assert [p.name for p in third.added] == ["new.jpg"]
    assert third.skipped == [("cats/renamed.jpg", "already present as cats/a.jpg")]


def test_the_same_content_twice_in_one_import_and_across_classes(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "twice.zip", {"cats/a.jpg": RED, "cats/copy.jpg": RED, "dogs/also.jpg": RED})
    report = importer.import_zip(archive, tmp_path / "ds")
    assert [p.name for p in report.added] == ["a.jpg"]  # the scanner would set the others aside as duplicates
    assert dict(report.skipped) == {"cats/copy.jpg": "already present as cats/a.jpg",
                                    "dogs/also.jpg": "already present as cats/a.jpg"}


def test_a_name_collision_with_different_content_gets_a_copy(tmp_path: Path) -> None:
    dataset = tmp_path / "ds"
    (dataset / "cats").mkdir(parents=True)
    (dataset / "cats" / "a.jpg").write_bytes(GREEN)
    archive = make_zip(tmp_path / "a.zip", {"cats/a.jpg": RED})
    report = importer.import_zip(archive, dataset)
    assert [p.name for p in report.added] == ["a-1.jpg"] and report.skipped == []
    assert (dataset / "cats" / "a.jpg").read_bytes() == GREEN and (dataset / "cats" / "a-1.jpg").read_bytes() == RED
    again = importer.import_zip(archive, dataset)
    assert again.added == [] and again.skipped == [("cats/a.jpg", "already present as cats/a-1.jpg")]


def test_undo_removes_exactly_what_the_import_added(tmp_path: Path) -> None:
    dataset = tmp_path / "ds"
    (dataset / "cats").mkdir(parents=True)
    (dataset / "cats" / "old.jpg").write_bytes(GREY)  # there before: never touched
    archive = make_zip(tmp_path / "more.zip", {"cats/a.jpg": RED, "cats/b.jpg": GREEN, "cats/old.jpg": GREY,
                                               "birds/d.jpg": BLUE, "birds/e.jpg": jpeg((1, 2, 3))})
    report = importer.import_zip(archive, dataset)
    assert len(report.added) == 4 and len(report.skipped) == 1
    record = read_import(dataset, report.import_id)
    assert record.created_classes == ("birds",) and record.skipped == 1
    (dataset / "cats" / "b.jpg").write_bytes(b"edited since")  # changed: kept
    importer.trash_images(dataset, "birds", ["e.jpg"])  # moved to the trash: left there

    undone = undo_import(dataset, report.import_id)
    assert sorted(undone.removed) == ["birds/d.jpg", "cats/a.jpg"]
    assert dict(undone.kept) == {"cats/b.jpg": "changed since the import",
                                 "birds/e.jpg": "not there any more (moved to the trash, renamed or deleted)"}
    assert "removed 2 images; kept 2" in undone.summary() and "more.zip" in undone.summary()
    assert images(dataset) == {"cats/b.jpg": b"edited since", "cats/old.jpg": GREY}
    assert not (dataset / "birds").exists()  # created by the import and left empty
    assert (dataset / ".trash" / "birds" / "e.jpg").is_file()
    assert read_import(dataset, report.import_id).undone_at
    with pytest.raises(ValueError, match="undone already"):
        undo_import(dataset, report.import_id)  # a second click does nothing
    assert images(dataset) == {"cats/b.jpg": b"edited since", "cats/old.jpg": GREY}

    redo = importer.import_zip(archive, dataset)  # importing again after an undo adds the images back
    assert sorted(p.relative_to(dataset).as_posix() for p in redo.added) == [
        "birds/d.jpg", "birds/e.jpg", "cats/a.jpg", "cats/b-1.jpg"]


def test_undo_by_dataset_name_and_bad_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARVIZ_DATA", str(tmp_path / "data"))
    report = importer.import_zip(make_zip(tmp_path / "one.zip", {"cats/a.jpg": RED}), "mine")
    root = tmp_path / "data" / "mine"
    [entry] = json.loads((root / IMPORTS_DIR / f"{report.import_id}.json").read_text(encoding="utf-8"))["files"]
    assert entry["path"] == "cats/a.jpg" and len(entry["sha1"]) == 40  # hidden beside .trash: never a class
    assert scan_dataset(root).classes == ["cats"]
    with pytest.raises(LookupError):
        undo_import("mine", "20260101-000000.000-abcdef")
    for bad in ("../x", ".hidden", ""):
        with pytest.raises(ValueError):
            undo_import("mine", bad)
    assert undo_import("mine", report.import_id).removed == ["cats/a.jpg"]
    assert not (root / "cats").exists() and list_imports("mine")[0].undone_at


def test_cli_import_twice_then_undo(carviz_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from carviz.cli import main

    archive = make_zip(tmp_path / "pets.zip", {"cats/a.jpg": RED, "dogs/c.jpg": BLUE})
    assert main(["import", "pets", str(archive)]) == 0
    out = capsys.readouterr().out
    assert "Added 2 images (cats 1, dogs 1); dropped 0." in out
    [import_id] = [r.id for r in list_imports("pets")]
    assert f"undo it with: python -m carviz undo-import pets {import_id}" in out
    assert main(["import", "pets", str(archive)]) == 0
    out = capsys.readouterr().out
    assert "Added 0 images; 2 already present, skipped; dropped 0." in out
    assert "skipped cats/a.jpg: already present as cats/a.jpg" in out and "undo-import" not in out

    assert main(["undo-import", "pets"]) == 0  # lists
    out = capsys.readouterr().out
    assert import_id in out and "2 image(s) from pets.zip" in out and "1 import(s) into pets" in out
    assert main(["undo-import", "pets", import_id]) == 0
    out = capsys.readouterr().out
    assert "removed cats/a.jpg" in out and "removed 2 images." in out
    assert images(carviz_home / "data" / "pets") == {}
    assert main(["undo-import", "pets", import_id]) == 2
    assert "undone already" in capsys.readouterr().err
