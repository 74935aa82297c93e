"""One pixel limit and one image loader: what import and the crawler keep, the scanner keeps; what they refuse, the
scanner sets aside. Big images here are 1-bit PNGs of one colour: 64 MP is 8 MB decoded and a few KB on disk."""

from __future__ import annotations

import io
import math
import shutil
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from carviz.data import collect, datasets, importer
from carviz.data.datasets import MAX_PIXELS, ImageTooLarge, open_image, scan_dataset


def _png(size: tuple[int, int], mode: str = "1", colour: int = 1) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, colour).save(out, "PNG")
    return out.getvalue()


def _sizes(limit: int) -> dict[str, tuple[int, int]]:
    side = math.isqrt(limit)
    at = (side, limit // side)  # at most the limit
    over = (side, limit // side + 1)  # just over it
    assert at[0] * at[1] <= limit < over[0] * over[1]
    return {"at.png": at, "over.png": over}


def _verdicts(tmp_path: Path, files: dict[str, bytes]) -> dict[str, dict[str, bool]]:
    """For each image: kept by import_folder, by import_zip, by the crawler's decoder, and by the scanner (scanning a
    folder where the image was put by hand)."""
    src = tmp_path / "src" / "cars"
    src.mkdir(parents=True)
    for name, data in files.items():
        (src / name).write_bytes(data)
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(f"cars/{name}", data)
    by_folder = importer.import_folder(tmp_path / "src", tmp_path / "from_folder")
    by_zip = importer.import_zip(archive, tmp_path / "from_zip")
    by_hand = tmp_path / "by_hand"
    shutil.copytree(tmp_path / "src", by_hand)
    scan = scan_dataset(by_hand, min_side=1)
    scanned_ok = {p.name for p in scan.files.get("cars", [])}

    verdicts = {}
    for name, data in files.items():
        try:
            importer.decode_image(data)  # what the crawler calls on each download
            crawled = True
        except ValueError:
            crawled = False
        verdicts[name] = {
            "import folder": any(p.name == name for p in by_folder.added),
            "import zip": any(p.name == name for p in by_zip.added),
            "crawler": crawled,
            "scanner": name in scanned_ok,
        }
    # and what import kept, the scanner keeps too
    for dataset in (tmp_path / "from_folder", tmp_path / "from_zip"):
        rescanned = scan_dataset(dataset, min_side=1)
        assert rescanned.problems == [], rescanned.problems
    return verdicts


def test_the_limit_is_one_constant_that_keeps_a_50_megapixel_photo() -> None:
    assert MAX_PIXELS >= 50_000_000
    assert not hasattr(importer, "DEFAULT_MAX_PIXELS")  # no second limit to drift apart


def test_just_under_and_just_over_the_real_limit_are_judged_alike(tmp_path: Path) -> None:
    files = {name: _png(size) for name, size in _sizes(MAX_PIXELS).items()}
    assert all(len(data) < 200_000 for data in files.values())
    verdicts = _verdicts(tmp_path, files)
    assert verdicts["at.png"] == dict.fromkeys(verdicts["at.png"], True), verdicts
    assert verdicts["over.png"] == dict.fromkeys(verdicts["over.png"], False), verdicts
    with pytest.raises(ImageTooLarge, match="over the 64,000,000 px limit"):
        open_image(files["over.png"])


def test_every_loader_follows_the_one_constant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Defaults are read when called, not frozen at import: lowering MAX_PIXELS moves scan, import and crawl at once."""
    monkeypatch.setattr(datasets, "MAX_PIXELS", 10_000)
    files = {name: _png(size, "L", 90 + n) for n, (name, size) in enumerate(_sizes(10_000).items())}
    verdicts = _verdicts(tmp_path, files)
    assert verdicts["at.png"] == dict.fromkeys(verdicts["at.png"], True), verdicts
    assert verdicts["over.png"] == dict.fromkeys(verdicts["over.png"], False), verdicts
    with pytest.raises(ImageTooLarge):
        datasets.load_image_rgb(io.BytesIO(files["over.png"]))  # previews and predictions
    assert datasets.load_image_rgb(io.BytesIO(files["at.png"])).size == _sizes(10_000)["at.png"]
    (tmp_path / "t").mkdir()
    for name, data in files.items():
        (tmp_path / "t" / name).write_bytes(data)
    assert collect.thumbnail(tmp_path / "t" / "at.png") is not None
    assert collect.thumbnail(tmp_path / "t" / "over.png") is None  # review grids do not decode it either


def test_one_loader_one_verdict_on_a_corrupt_png(tmp_path: Path) -> None:
    """A PNG whose image data fails its checksum: Pillow's load() alone accepts it; import and the scanner both refuse."""
    data = bytearray(_png((40, 40), "RGB", (200, 30, 30)))
    at = data.index(b"IDAT")
    length = int.from_bytes(data[at - 4:at], "big")
    data[at + 4 + length] ^= 0xFF  # first byte of the IDAT checksum
    verdicts = _verdicts(tmp_path, {"crc.png": bytes(data), "ok.png": _png((40, 40), "RGB", (10, 120, 200))})
    assert verdicts["crc.png"] == dict.fromkeys(verdicts["crc.png"], False), verdicts
    assert verdicts["ok.png"] == dict.fromkeys(verdicts["ok.png"], True), verdicts


def test_a_file_object_is_left_open_and_read_from_its_start() -> None:
    upload = io.BytesIO(_png((40, 30), "RGB", (1, 2, 3)))
    upload.seek(10)
    image = open_image(upload)
    assert image.size == (40, 30) and image.format == "PNG" and not upload.closed
    assert datasets.load_image_rgb(upload).size == (40, 30)  # a second read of the same upload works
