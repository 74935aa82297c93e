"""Zip and folder import against hostile input, class-name validation, and the review trash."""

from __future__ import annotations

import io
import os
import stat
import unicodedata
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from carviz.data import importer
from carviz.data.importer import ImportFailed, import_folder, import_zip, safe_class_name
from carviz.data.import_log import IMPORTS_DIR


def _image(fmt: str = "JPEG", size: tuple[int, int] = (40, 30), colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, fmt)
    return out.getvalue()


JPG, PNG = _image(), _image("PNG", colour=(10, 120, 200))


def _zip(path: Path, members: list[tuple[str | zipfile.ZipInfo, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return path


def _all_files(root: Path) -> set[str]:
    """Every file under root but the import records (.imports/<id>.json)."""
    return {p.relative_to(root).as_posix() for p in root.rglob("*")
            if (p.is_file() or p.is_symlink()) and IMPORTS_DIR not in p.relative_to(root).parts}


def _reasons(report: importer.ImportReport) -> dict[str, str]:
    return dict(report.dropped)


# ---------------------------------------------------------------- names


def test_safe_class_name_accepts_unicode_and_refuses_paths():
    assert safe_class_name("현대 아반떼") == "현대 아반떼"
    assert safe_class_name(unicodedata.normalize("NFD", "기아 K5")) == "기아 K5"  # macOS NFD becomes NFC
    for bad in ("", " ", ".", "..", "a/b", "a\\b", "a\x00b", ".hidden", "tab\there", " padded ", "x" * 256):
        with pytest.raises(ValueError):
            safe_class_name(bad)


# ---------------------------------------------------------------- zip


def test_zip_keeps_class_images_and_drops_hostile_entries(tmp_path):
    outside = tmp_path / "outside"
    link = zipfile.ZipInfo("cars/link.jpg")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    fifo = zipfile.ZipInfo("cars/pipe.jpg")
    fifo.external_attr = (stat.S_IFIFO | 0o644) << 16
    archive = _zip(tmp_path / "hostile.zip", [
        ("cars/a.jpg", JPG),
        ("cars/b.png", PNG),
        ("현대/c.jpg", _image(colour=(1, 2, 3))),
        ("../evil.jpg", JPG),
        ("cars/../../evil2.jpg", JPG),
        (f"{outside}/evil3.jpg", JPG),  # absolute
        ("C:/evil4.jpg", JPG),
        ("cars\\..\\..\\evil5.jpg", JPG),
        (link, b"/etc/passwd"),
        (fifo, b""),
        ("cars/readme.txt", b"just text"),
        ("cars/fake.jpg", os.urandom(2000)),
        ("cars/truncated.jpg", JPG[: len(JPG) // 2]),
        ("loose.jpg", JPG),
        ("__MACOSX/cars/._a.jpg", b"\x00\x05\x16\x07"),
        ("cars/.DS_Store", b"junk"),
        ("cars/deeper/d.jpg", JPG),
        ("bad\x07name/e.jpg", JPG),
    ])
    dataset = tmp_path / "data" / "ds"
    report = import_zip(archive, dataset)

    assert sorted(p.relative_to(dataset).as_posix() for p in report.added) == ["cars/a.jpg", "cars/b.png", "현대/c.jpg"]
    assert _all_files(dataset) == {"cars/a.jpg", "cars/b.png", "현대/c.jpg"}  # no temp files left either
    assert (dataset / "cars" / "a.jpg").read_bytes() == JPG  # kept byte for byte
    assert _all_files(tmp_path) == {"hostile.zip", "data/ds/cars/a.jpg", "data/ds/cars/b.png", "data/ds/현대/c.jpg"}
    assert not outside.exists()
    why = _reasons(report)
    assert why["../evil.jpg"] == "path leaves the dataset (..)"
    assert why["cars/../../evil2.jpg"] == "path leaves the dataset (..)"
    assert why[f"{outside}/evil3.jpg"] == "absolute path"
    assert why["C:/evil4.jpg"] == "absolute path"
    assert why["cars\\..\\..\\evil5.jpg"] == "path leaves the dataset (..)"
    assert why["cars/link.jpg"] == "symbolic link"
    assert why["cars/pipe.jpg"] == "not a regular file"
    for name in ("cars/readme.txt", "cars/fake.jpg", "cars/truncated.jpg"):
        assert why[name].startswith("not an image"), (name, why[name])
    assert why["loose.jpg"] == "not inside a class folder"
    assert why["__MACOSX/cars/._a.jpg"].startswith("system file")
    assert why["cars/.DS_Store"].startswith("system file")
    assert why["cars/deeper/d.jpg"].startswith("too deep")
    assert why["bad\x07name/e.jpg"].startswith("bad name")
    assert len(report.dropped) == 15


@pytest.fixture(scope="module")
def bomb_bytes(tmp_path_factory) -> bytes:
    """A zip whose one member inflates to 200 MB of zeros (about 200 KB on disk)."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("cars/bomb.jpg", "w") as member:
            block = bytes(1 << 20)
            for _ in range(200):
                member.write(block)
        zf.writestr("cars/ok.jpg", JPG)
    return path.read_bytes()


def test_zip_bomb_is_dropped_without_inflating(tmp_path, bomb_bytes):
    assert len(bomb_bytes) < 1 << 20
    dataset = tmp_path / "ds"
    report = import_zip(io.BytesIO(bomb_bytes), dataset, max_file_bytes=1 << 20)
    assert [p.name for p in report.added] == ["ok.jpg"]
    assert "zip bomb" in _reasons(report)["cars/bomb.jpg"] or "larger than" in _reasons(report)["cars/bomb.jpg"]
    assert _all_files(dataset) == {"cars/ok.jpg"}


def test_zip_bomb_with_a_lying_header_is_measured_while_inflating(tmp_path, bomb_bytes):
    # claim 1000 bytes in the local and central headers: the header is never trusted to let it through
    real = (200 << 20).to_bytes(4, "little")
    assert bomb_bytes.count(real) == 2
    lying = bomb_bytes.replace(real, (1000).to_bytes(4, "little"))
    dataset = tmp_path / "ds"
    report = import_zip(io.BytesIO(lying), dataset, max_file_bytes=1 << 20)
    assert "cars/bomb.jpg" in _reasons(report)
    assert _all_files(dataset) == {"cars/ok.jpg"}


def test_total_size_cap_aborts_the_rest(tmp_path):
    big = [(f"cars/{i}.png", _image("PNG", (300, 300), (i * 40, 0, 0))) for i in range(4)]
    archive = _zip(tmp_path / "many.zip", big)
    report = import_zip(archive, tmp_path / "ds", max_total_bytes=len(big[0][1]) + len(big[1][1]))
    assert len(report.added) == 2
    why = _reasons(report)
    assert "total size cap" in why["cars/2.png"] and "import stopped" in why["cars/3.png"]


def test_file_count_and_pixel_caps(tmp_path):
    archive = _zip(tmp_path / "n.zip", [(f"cars/{i}.jpg", _image(colour=(i, i, i))) for i in range(3)])
    report = import_zip(archive, tmp_path / "ds", max_files=2)
    assert len(report.added) == 2 and "count cap" in _reasons(report)["cars/2.jpg"]
    archive = _zip(tmp_path / "px.zip", [("cars/big.png", _image("PNG", (200, 200)))])
    report = import_zip(archive, tmp_path / "ds2", max_pixels=10_000)
    assert report.added == [] and "too large" in _reasons(report)["cars/big.png"]


def test_zip_wrapper_folder_korean_names_and_name_clash(tmp_path):
    dataset = tmp_path / "ds"
    (dataset / "기아").mkdir(parents=True)
    (dataset / "기아" / "a.jpg").write_bytes(b"existing")
    archive = _zip(tmp_path / "wrapped.zip", [
        ("export/기아/a.jpg", JPG),  # its name clashes with the file already there, its content does not
        (unicodedata.normalize("NFD", "export/기아/b.jpg"), _image(colour=(1, 2, 3))),  # decomposed Hangul
        ("export/현대/c.webp", _image("WEBP")),
        ("export/현대/f.gif", _image("GIF")),  # the dataset scanner lists no .gif: converted
        ("export/현대/g.tif", _image("TIFF", colour=(7, 8, 9))),
        ("export/현대/d.jpeg", _image(colour=(4, 5, 6))),
        ("export/현대/e.dat", PNG),  # PNG data, wrong suffix: renamed
    ])
    report = import_zip(archive, dataset)
    assert report.dropped == []
    assert _all_files(dataset) == {
        "기아/a.jpg", "기아/a-1.jpg", "기아/b.jpg", "현대/c.webp", "현대/d.jpeg", "현대/e.png", "현대/f.jpg", "현대/g.jpg"}
    assert (dataset / "기아" / "a.jpg").read_bytes() == b"existing"  # never overwritten
    assert (dataset / "기아" / "a-1.jpg").read_bytes() == JPG
    notes = dict(report.notes)
    assert "converted from GIF" in notes["export/현대/f.gif"] and "converted from TIFF" in notes["export/현대/g.tif"]
    assert "renamed" in notes["export/현대/e.dat"] and "export/현대/c.webp" not in notes
    assert report.by_class() == {"기아": 2, "현대": 5}


def test_zip_with_cp949_names_from_windows(tmp_path):
    placeholder = "XXXX"
    archive = _zip(tmp_path / "win.zip", [(f"{placeholder}/a.jpg", JPG)])
    raw = "기아".encode("cp949")
    assert len(raw) == len(placeholder)
    archive.write_bytes(archive.read_bytes().replace(placeholder.encode(), raw))  # no UTF-8 flag, like Windows' zip
    report = import_zip(archive, tmp_path / "ds")
    assert [p.relative_to(tmp_path / "ds").as_posix() for p in report.added] == ["기아/a.jpg"]


def test_not_a_zip_and_dataset_by_name(tmp_path, monkeypatch):
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip at all")
    with pytest.raises(ImportFailed):
        import_zip(bad, tmp_path / "ds")
    monkeypatch.setenv("CARVIZ_DATA", str(tmp_path / "data"))
    archive = _zip(tmp_path / "ok.zip", [("cars/a.jpg", JPG)])
    report = import_zip(archive, "mine")
    assert report.added == [tmp_path / "data" / "mine" / "cars" / "a.jpg"]
    with pytest.raises(ValueError):
        import_zip(archive, "../escape")


# ---------------------------------------------------------------- folder


def test_import_folder_never_follows_links(tmp_path):
    src = tmp_path / "src"
    (src / "cars").mkdir(parents=True)
    (src / "cars" / "a.jpg").write_bytes(JPG)
    (src / "cars" / "notes.txt").write_text("hello")
    (src / "cars" / ".hidden.jpg").write_bytes(JPG)
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(PNG)
    (src / "cars" / "link.jpg").symlink_to(secret)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "x.jpg").write_bytes(JPG)
    (src / "linked_class").symlink_to(elsewhere, target_is_directory=True)
    (src / "trucks").mkdir()
    (src / "trucks" / "b.png").write_bytes(PNG)
    (src / "trucks" / "huge.jpg").write_bytes(JPG + bytes(300_000))  # no header to look at: measured while copying

    dataset = tmp_path / "ds"
    report = import_folder(src, dataset, max_file_bytes=200_000)
    assert _all_files(dataset) == {"cars/a.jpg", "trucks/b.png"}
    why = _reasons(report)
    assert why["cars/link.jpg"] == "symbolic link" and why["linked_class"] == "symbolic link"
    assert why["cars/notes.txt"].startswith("not an image")
    assert why["cars/.hidden.jpg"].startswith("hidden")
    assert why["trucks/huge.jpg"].startswith("larger than 200000 bytes")
    with pytest.raises(ImportFailed):
        import_folder(dataset, dataset / "cars")


# ---------------------------------------------------------------- review


def test_trash_and_restore(tmp_path):
    dataset = tmp_path / "ds"
    (dataset / "cars").mkdir(parents=True)
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        (dataset / "cars" / name).write_bytes(JPG + name.encode())

    moved = importer.trash_images(dataset, "cars", ["a.jpg", "b.jpg"])
    assert [p.relative_to(dataset).as_posix() for p in moved] == [".trash/cars/a.jpg", ".trash/cars/b.jpg"]
    assert sorted(p.name for p in (dataset / "cars").iterdir()) == ["c.jpg"]
    entries = importer.list_trash(dataset)
    assert [(e.class_name, e.file_name, e.original) for e in entries] == [("cars", "a.jpg", "cars/a.jpg"), ("cars", "b.jpg", "cars/b.jpg")]
    assert all(e.trashed_at for e in entries)

    # a new a.jpg trashed too: the first one in the trash is kept
    (dataset / "cars" / "a.jpg").write_bytes(b"second a")
    again = importer.trash_images(dataset, "cars", ["a.jpg"])
    assert again[0].name == "a-1.jpg" and (dataset / ".trash" / "cars" / "a.jpg").read_bytes() == JPG + b"a.jpg"

    # all or nothing: one bad name moves nothing
    for bad in (["c.jpg", "../c.jpg"], ["c.jpg", "missing.jpg"], ["c.jpg", ".crawl"]):
        with pytest.raises((ValueError, FileNotFoundError)):
            importer.trash_images(dataset, "cars", bad)
    with pytest.raises(ValueError):
        importer.trash_images(dataset, "../cars", ["c.jpg"])
    assert (dataset / "cars" / "c.jpg").exists()

    restored = importer.restore_images(dataset, [e for e in importer.list_trash(dataset) if e.file_name != "a-1.jpg"])
    assert sorted(p.name for p in restored) == ["a.jpg", "b.jpg"]
    assert (dataset / "cars" / "a.jpg").read_bytes() == JPG + b"a.jpg"
    # a-1.jpg came from cars/a.jpg, which is taken again: restored beside it, nothing overwritten
    (restored_second,) = importer.restore_images(dataset, ["cars/a-1.jpg"])
    assert restored_second.name == "a-1.jpg" and restored_second.read_bytes() == b"second a"
    assert importer.list_trash(dataset) == []
    with pytest.raises(FileNotFoundError):
        importer.restore_images(dataset, ["cars/a.jpg"])
    with pytest.raises(FileNotFoundError):
        importer.restore_images(dataset, ["../../etc/passwd"])
    assert _all_files(dataset) - {".trash/index.jsonl"} == {"cars/a.jpg", "cars/a-1.jpg", "cars/b.jpg", "cars/c.jpg"}
