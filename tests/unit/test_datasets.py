"""Dataset scanning, fingerprints, Keras-identical splits, tf.data pipelines, augmentation and the demo generator."""

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from carviz.data import datasets
from carviz.core.config import Augmentation
from carviz.data.datasets import (
    DatasetScan,
    Split,
    dataset_fingerprint,
    generate_demo_dataset,
    load_image_rgb,
    scan_dataset,
    split_files,
)
from carviz.ml.pipelines import augment_preview, augmentation_model, make_pipeline

PROJECT_ROOT = Path(__file__).resolve().parents[2]
GRANDEUR, K5 = "현대 그랜저", "기아 K5"


def _image(path: Path, size: tuple[int, int] = (40, 32), seed: int = 0, fmt: str | None = None) -> Path:
    """A noise image (distinct content per seed) saved in the format the suffix (or fmt) says."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, fmt)
    return path


def _jpeg_bytes(seed: int = 99) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture
def messy(tmp_path: Path) -> Path:
    """Two Korean-named classes with every kind of problem, plus things a scan must ignore."""
    root = tmp_path / "cars"
    _image(root / GRANDEUR / "b.jpg", seed=1)
    _image(root / GRANDEUR / "a.PNG", seed=2)  # upper-case extension counts
    _image(root / GRANDEUR / "c.jpeg", seed=3)
    _image(root / K5 / "k1.jpg", seed=4)
    shutil.copy(root / K5 / "k1.jpg", root / GRANDEUR / "d_copy.jpg")  # duplicate across classes (K5 sorts first)
    (root / K5 / "notes.jpg").write_text("this is not an image")  # unreadable
    (root / K5 / "half.jpg").write_bytes(_jpeg_bytes()[:800])  # truncated
    _image(root / K5 / "tiny.png", size=(12, 9), seed=5)
    (root / K5 / "readme.txt").write_text("ignored")
    _image(root / K5 / "anim.gif", seed=6)  # not an accepted extension
    _image(root / K5 / ".hidden.jpg", seed=7)
    _image(root / K5 / "nested" / "deep.jpg", seed=8)  # only files directly in the class folder
    _image(root / ".thumbnails" / "x.jpg", seed=9)  # hidden folder
    _image(root / "stray.jpg", seed=10)  # a file in the root is no class
    (root / "empty class").mkdir()  # no image files: not a class
    (root / "only bad").mkdir()
    (root / "only bad" / "bad.jpg").write_bytes(b"\xff\xd8garbage")  # listed, with count 0
    return root


def test_scan_reports_each_problem_and_keeps_the_rest(messy: Path) -> None:
    scan = scan_dataset(messy)

    assert scan.root == messy.resolve()
    assert scan.classes == ["only bad", K5, GRANDEUR]  # Python (Keras) sort order
    assert scan.counts() == {K5: 1, "only bad": 0, GRANDEUR: 3}
    assert scan.total() == 4
    assert [p.name for p in scan.files[GRANDEUR]] == ["a.PNG", "b.jpg", "c.jpeg"]
    assert [p.name for p in scan.files[K5]] == ["k1.jpg"]

    problems = {(p.path.name, p.kind) for p in scan.problems}
    assert problems == {
        ("d_copy.jpg", "duplicate"),
        ("notes.jpg", "unreadable"),
        ("half.jpg", "truncated"),
        ("tiny.png", "tiny"),
        ("bad.jpg", "unreadable"),
    }
    detail = {p.path.name: p.detail for p in scan.problems}
    assert detail["d_copy.jpg"] == f"same content as {K5}/k1.jpg"
    assert detail["tiny.png"] == "12x9 px < 32 px"
    assert "cannot identify image file" in detail["notes.jpg"]
    assert "truncated" in detail["half.jpg"]
    assert all(p.path.is_absolute() for p in scan.problems)


def test_scan_min_side_and_labelled_files(messy: Path) -> None:
    scan = scan_dataset(messy, min_side=9)
    assert "tiny.png" not in {p.path.name for p in scan.problems}
    paths, labels = scan.labelled_files()
    assert [p.name for p in paths] == ["k1.jpg", "tiny.png", "a.PNG", "b.jpg", "c.jpeg"]  # classes in sorted order
    assert labels == [1, 1, 2, 2, 2]
    assert scan.classes[2] == GRANDEUR


def test_scan_without_checks_only_lists(messy: Path) -> None:
    scan = scan_dataset(messy, check_images=False)
    assert scan.problems == []
    assert scan.counts() == {K5: 4, "only bad": 1, GRANDEUR: 4}
    assert scan.fingerprint == dataset_fingerprint(messy) == scan_dataset(messy).fingerprint
    assert scan_dataset(messy, check_images=False, with_fingerprint=False).fingerprint == ""


def test_scan_flags_formats_training_cannot_decode_and_decompression_bombs(tmp_path: Path, monkeypatch) -> None:
    _image(tmp_path / "a" / "tiff_in_disguise.png", fmt="TIFF")
    _image(tmp_path / "a" / "big.png", size=(200, 100), seed=1)
    _image(tmp_path / "a" / "ok.png", seed=2)
    monkeypatch.setattr(datasets, "MAX_PIXELS", 10_000)
    scan = scan_dataset(tmp_path)
    detail = {p.path.name: (p.kind, p.detail) for p in scan.problems}
    assert detail["tiff_in_disguise.png"] == ("unreadable", "TIFF format cannot be decoded for training")
    assert detail["big.png"][0] == "unreadable" and "decompression bomb" in detail["big.png"][1]
    assert [p.name for p in scan.files["a"]] == ["ok.png"]


def test_scan_of_missing_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        scan_dataset(tmp_path / "nope")


def test_fingerprint_follows_content_names_and_classes(tmp_path: Path) -> None:
    a = _image(tmp_path / "x" / "1.jpg", seed=1)
    _image(tmp_path / "y" / "2.jpg", seed=2)
    (tmp_path / "x" / "notes.txt").write_text("not part of the data")
    first = dataset_fingerprint(tmp_path)
    assert len(first) == 64 and first == dataset_fingerprint(tmp_path)

    (tmp_path / "x" / "notes.txt").write_text("edited")
    os.utime(a)
    assert dataset_fingerprint(tmp_path) == first  # non-image files and mtimes do not count

    _image(a, seed=3)
    changed = dataset_fingerprint(tmp_path)
    assert changed != first

    a.rename(a.with_name("renamed.jpg"))
    renamed = dataset_fingerprint(tmp_path)
    assert renamed not in (first, changed)

    (tmp_path / "x" / "renamed.jpg").rename(tmp_path / "y" / "renamed.jpg")
    assert dataset_fingerprint(tmp_path) not in (first, changed, renamed)


def test_load_image_rgb_applies_exif_orientation_and_refuses_bad_files(tmp_path: Path) -> None:
    path = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    Image.new("L", (40, 20), 128).save(path, exif=exif)
    image = load_image_rgb(path)
    assert image.mode == "RGB" and image.size == (20, 40)

    with pytest.raises(ValueError, match="decompression bomb"):
        load_image_rgb(path, max_pixels=100)
    (tmp_path / "text.jpg").write_text("hello")
    with pytest.raises(ValueError, match="cannot identify image file"):
        load_image_rgb(tmp_path / "text.jpg")
    (tmp_path / "half.jpg").write_bytes(_jpeg_bytes()[:800])
    with pytest.raises(ValueError, match="truncated"):
        load_image_rgb(tmp_path / "half.jpg")
    assert load_image_rgb(io.BytesIO(path.read_bytes())).size == (20, 40)  # uploads are file objects


def _small_dataset(root: Path, counts: dict[str, int], size: int = 32) -> Path:
    seed = 0
    for name, count in counts.items():
        for i in range(count):
            seed += 1
            _image(root / name / f"img_{i:02d}.{'png' if i % 3 == 0 else 'jpg'}", size=(size, size), seed=seed)
    return root


@pytest.mark.parametrize(("validation_split", "seed"), [(0.2, 123), (0.35, 7)])
def test_split_matches_keras_image_dataset_from_directory(tmp_path: Path, validation_split: float, seed: int) -> None:
    import keras

    root = _small_dataset(tmp_path / "data", {"버스": 7, "sedan": 5, "Suv": 9})
    split = split_files(scan_dataset(root), validation_split=validation_split, seed=seed)
    train_ds, val_ds = keras.utils.image_dataset_from_directory(
        root, validation_split=validation_split, subset="both", seed=seed, image_size=(32, 32), batch_size=4,
        label_mode="int", verbose=False,
    )

    def rel(paths: list) -> list[str]:
        return [Path(p).relative_to(root).as_posix() for p in paths]

    assert split.classes == train_ds.class_names
    assert rel(split.train_paths) == rel(train_ds.file_paths)
    assert rel(split.val_paths) == rel(val_ds.file_paths)
    keras_val_labels = [int(y) for _, batch in val_ds for y in batch.numpy()]
    assert split.val_labels == keras_val_labels
    assert all(split.classes[label] == p.parent.name for p, label in zip(split.train_paths, split.train_labels))


def test_split_json_round_trip_and_validation(tmp_path: Path) -> None:
    root = _small_dataset(tmp_path / "data", {"a": 4, "b": 6})
    scan = scan_dataset(root)
    split = split_files(scan, 0.2, 123)
    assert (len(split.train_paths), len(split.val_paths)) == (8, 2)

    data = split.to_json_dict(root)
    assert set(data) == {"classes", "train_paths", "train_labels", "val_paths", "val_labels", "test_paths",
                         "test_labels"}
    assert data["test_paths"] == data["test_labels"] == []
    assert all(not Path(p).is_absolute() and "/" in p for p in data["val_paths"])
    assert Split.from_json_dict(data, root) == split
    with pytest.raises(ValueError):
        Split.from_json_dict({**data, "val_paths": ["../../etc/passwd"]}, root)

    assert split_files(scan, 0.0).val_paths == []
    with pytest.raises(ValueError):
        split_files(scan, 1.0)
    empty = DatasetScan(root=root, classes=[], files={}, problems=[], fingerprint="")
    assert split_files(empty).train_paths == []


def test_pipeline_batches_images_and_one_hot_labels(tmp_path: Path) -> None:
    root = _small_dataset(tmp_path / "data", {"a": 5, "b": 4, "c": 3}, size=40)
    split = split_files(scan_dataset(root), 0.25, 123)

    val = make_pipeline(split.val_paths, split.val_labels, 3, image_size=32, batch_size=2, training=False)
    images, labels = next(iter(val))
    assert images.shape == (2, 32, 32, 3) and images.dtype.name == "float32"
    assert labels.shape == (2, 3) and labels.dtype.name == "float32"
    got = [(x.numpy(), y.numpy()) for x, y in val]
    all_labels = np.concatenate([y for _, y in got])
    assert np.array_equal(all_labels.argmax(1), split.val_labels)  # validation keeps its order
    assert np.allclose(all_labels.sum(1), 1.0)
    pixels = np.concatenate([x for x, _ in got])
    assert pixels.min() >= 0 and pixels.max() <= 255 and pixels.max() > 1  # 0..255, not rescaled

    train = make_pipeline(split.train_paths, split.train_labels, 3, image_size=32, batch_size=4, training=True, seed=1)
    epochs = [np.concatenate([y.numpy().argmax(1) for _, y in train]) for _ in range(3)]
    assert all(sorted(e) == sorted(split.train_labels) for e in epochs)
    sums = [np.concatenate([x.numpy().reshape(len(x), -1).sum(1) for x, _ in train]) for _ in range(3)]
    assert not (np.array_equal(sums[0], sums[1]) and np.array_equal(sums[1], sums[2]))  # reshuffled each epoch


def test_pipeline_applies_augmentation_to_training_only(tmp_path: Path) -> None:
    root = _small_dataset(tmp_path / "data", {"a": 3, "b": 3}, size=32)
    paths, labels = scan_dataset(root).labelled_files()
    aug = Augmentation(enabled=True)
    plain = make_pipeline(paths, labels, 2, 32, 6, training=False, augmentation=aug)
    augmented = make_pipeline(paths, labels, 2, 32, 6, training=True, augmentation=aug, cache=False)
    x_plain = next(iter(plain))[0].numpy()
    x_aug, y_aug = next(iter(augmented))
    assert x_aug.shape == (6, 32, 32, 3) and x_aug.dtype.name == "float32" and y_aug.shape == (6, 2)
    sums_plain = sorted(x_plain.reshape(6, -1).sum(1))
    assert not np.allclose(sorted(x_aug.numpy().reshape(6, -1).sum(1)), sums_plain)


def test_augmentation_model_changes_images_but_keeps_shape() -> None:
    batch = np.random.default_rng(0).uniform(0, 255, (4, 48, 40, 3)).astype("float32")
    out = np.asarray(augmentation_model(Augmentation(enabled=True), seed=1)(batch, training=True))
    assert out.shape == batch.shape
    assert not np.allclose(out, batch)
    assert out.min() >= -1e-3 and out.max() <= 255 + 1e-3  # nearest fill never invents values out of range

    still = Augmentation(rotation=0, width_shift=0, height_shift=0, zoom=0, horizontal_flip=False)
    assert np.allclose(np.asarray(augmentation_model(still)(batch, training=True)), batch)
    names = [layer.__class__.__name__ for layer in augmentation_model(Augmentation(rotation=0, zoom=0)).layers]
    assert names == ["RandomTranslation", "RandomFlip"]


def test_augment_preview_gives_count_uint8_variants_deterministically() -> None:
    image = np.zeros((40, 48, 3), dtype=np.uint8)
    image[5:20, 5:30] = (250, 10, 10)
    previews = augment_preview(image, Augmentation(), count=5, seed=3)
    assert len(previews) == 5
    assert all(p.shape == image.shape and p.dtype == np.uint8 for p in previews)
    assert any(not np.array_equal(p, image) for p in previews)
    assert len({p.tobytes() for p in previews}) > 1
    again = augment_preview(image, Augmentation(), count=5, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(previews, again))


def test_demo_dataset_at_benchmark_size_repeats_the_kinds_under_new_names(tmp_path: Path) -> None:
    root = generate_demo_dataset(tmp_path / "big", per_class=1, image_size=32, classes=9)
    counts = scan_dataset(root).counts()
    assert len(counts) == 9 and set(counts.values()) == {1}
    assert {"sedan", "sports car", "sedan 2", "sports car 2", "sedan 3"} <= set(counts)
    small = generate_demo_dataset(tmp_path / "small", per_class=1, image_size=32)
    assert (small / "sedan" / "sedan_000.jpg").read_bytes() == (root / "sedan" / "sedan_000.jpg").read_bytes()


def test_demo_dataset_is_complete_readable_deterministic_and_idempotent(tmp_path: Path) -> None:
    root = generate_demo_dataset(tmp_path / "demo", per_class=3, image_size=48, seed=5)
    scan = scan_dataset(root)
    assert scan.classes == sorted(datasets.DEMO_CLASSES)
    assert scan.counts() == {name: 3 for name in datasets.DEMO_CLASSES}
    assert scan.problems == []
    assert (root / "sports car" / "sports car_002.jpg").is_file()
    with Image.open(root / "bus" / "bus_000.jpg") as image:
        assert image.size == (48, 48) and image.format == "JPEG"

    victim = root / "suv" / "suv_001.jpg"
    original = victim.read_bytes()
    keep = root / "sedan" / "sedan_000.jpg"
    keep.write_bytes(_jpeg_bytes())  # someone's edit: must be left alone
    victim.unlink()
    generate_demo_dataset(root, per_class=4, image_size=48, seed=5)
    assert victim.read_bytes() == original  # the missing file comes back identical
    assert keep.read_bytes() == _jpeg_bytes()
    assert scan_dataset(root, check_images=False).counts() == {name: 4 for name in datasets.DEMO_CLASSES}
    assert not [p for p in root.rglob("*") if p.name.startswith(".")]  # no temp files left

    other = generate_demo_dataset(tmp_path / "again", per_class=3, image_size=48, seed=5)
    assert (other / "bus" / "bus_002.jpg").read_bytes() == (root / "bus" / "bus_002.jpg").read_bytes()
