"""Image folders: scan/validate, fingerprint, Keras-identical splits (no TensorFlow: the tf.data pipelines that
feed these files to Keras, and augmentation, are ml/pipelines.py)."""

from __future__ import annotations

import hashlib
import io
import os
import unicodedata

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from carviz.data.demo import DEMO_CLASSES, generate_demo_dataset  # noqa: F401 - importable from here too

from carviz.core.settings import safe_join


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")  # matched case-insensitively
# Formats tf.io.decode_image reads; anything else Pillow opens (TIFF, ICO, ...) would crash training.
TF_DECODABLE_FORMATS = frozenset({"JPEG", "MPO", "PNG", "BMP", "GIF", "WEBP"})
# The one decompression-bomb limit (width x height) for every image carviz decodes: the dataset scanner, import,
# the crawler, previews and predictions all load through open_image. 64 MP keeps a 50 MP phone photo.
MAX_PIXELS = 64_000_000


@dataclass(frozen=True)
class ImageProblem:
    """An image left out of training, and why."""

    path: Path
    kind: str  # "unreadable" | "truncated" | "tiny" | "duplicate"
    detail: str


@dataclass(frozen=True)
class DatasetScan:
    """What is in a dataset folder: classes, usable files per class, problems, content fingerprint."""

    root: Path
    classes: list[str]
    files: dict[str, list[Path]]
    problems: list[ImageProblem]
    fingerprint: str

    def counts(self) -> dict[str, int]:
        return {c: len(self.files.get(c, [])) for c in self.classes}

    def total(self) -> int:
        return sum(self.counts().values())

    def labelled_files(self) -> tuple[list[Path], list[int]]:
        paths: list[Path] = []
        labels: list[int] = []
        for index, name in enumerate(self.classes):
            class_files = self.files.get(name, [])
            paths.extend(class_files)
            labels.extend([index] * len(class_files))
        return paths, labels


@dataclass(frozen=True)
class Split:
    """Training, validation and (optional) test files with integer labels (index into classes).

    The test part is held out of everything that trains or chooses (fit, early stopping, pruning, the LR range
    test, the feature cache's training/validation rows); only the final evaluation and `carviz evaluate` read it.
    """

    classes: list[str]
    train_paths: list[Path]
    train_labels: list[int]
    val_paths: list[Path]
    val_labels: list[int]
    test_paths: list[Path] = field(default_factory=list)
    test_labels: list[int] = field(default_factory=list)

    def to_json_dict(self, root: Path) -> dict[str, Any]:
        root = Path(root).resolve()

        def rel(paths: list[Path]) -> list[str]:
            return [Path(p).resolve().relative_to(root).as_posix() for p in paths]

        return {
            "classes": list(self.classes),
            "train_paths": rel(self.train_paths),
            "train_labels": [int(x) for x in self.train_labels],
            "val_paths": rel(self.val_paths),
            "val_labels": [int(x) for x in self.val_labels],
            "test_paths": rel(self.test_paths),
            "test_labels": [int(x) for x in self.test_labels],
        }

    @classmethod
    def from_json_dict(cls, data: dict[str, Any], root: Path) -> "Split":
        """Inverse of to_json_dict: relative paths are joined to root (and may not escape it). A split.json written
        before test parts existed has none."""
        root = Path(root).resolve()
        return cls(
            classes=list(data["classes"]),
            train_paths=[safe_join(root, p) for p in data["train_paths"]],
            train_labels=[int(x) for x in data["train_labels"]],
            val_paths=[safe_join(root, p) for p in data["val_paths"]],
            val_labels=[int(x) for x in data["val_labels"]],
            test_paths=[safe_join(root, p) for p in data.get("test_paths") or []],
            test_labels=[int(x) for x in data.get("test_labels") or []],
        )


class ImageLoadError(ValueError):
    """An image that cannot be used; kind is "unreadable" or "truncated"."""

    def __init__(self, message: str, kind: str = "unreadable") -> None:
        super().__init__(message)
        self.kind = kind


class ImageTooLarge(ImageLoadError):
    """An image over the pixel limit (MAX_PIXELS): refused before it is decoded."""


# ---------------------------------------------------------------- listing, checking, fingerprint


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _inside(path: Path, root: Path) -> bool:
    resolved = path.resolve()
    return resolved == root or root in resolved.parents


def _list_class_files(root: Path) -> dict[str, list[Path]]:
    """Image-extension files directly inside root/<class>/, classes and files in Python (Keras) sort order."""
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    listing: dict[str, list[Path]] = {}
    for class_name in sorted(os.listdir(root)):
        class_dir = root / class_name
        if class_name.startswith(".") or not class_dir.is_dir() or not _inside(class_dir, root):
            continue
        files = [
            class_dir / name
            for name in sorted(os.listdir(class_dir))
            if _is_image_name(name) and (class_dir / name).is_file() and _inside(class_dir / name, root)
        ]
        if files:
            listing[class_name] = files
    return listing


def _sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fingerprint(root: Path, entries: list[tuple[Path, int, str]]) -> str:
    lines = []
    for path, size, sha1 in entries:
        # NFC so a folder copied from macOS (NFD names) fingerprints the same
        rel = unicodedata.normalize("NFC", path.relative_to(root).as_posix())
        lines.append(f"{rel}\t{size}\t{sha1}\n")
    digest = hashlib.sha256()
    for line in sorted(lines):
        digest.update(line.encode("utf-8"))
    return digest.hexdigest()


def _open(source: str | Path | BinaryIO) -> Image.Image:
    try:
        return Image.open(source)
    except UnidentifiedImageError:
        raise ImageLoadError("cannot identify image file (not an image, or an unsupported format)") from None
    except Image.DecompressionBombError as exc:  # Pillow's own guard, far above MAX_PIXELS
        raise ImageTooLarge(f"image too large: decompression bomb refused ({exc})") from None
    except Exception as exc:  # OSError; Pillow raises SyntaxError, ValueError, struct.error ... on garbage headers
        raise _load_error(exc) from None


def _load_error(exc: BaseException) -> ImageLoadError:
    if isinstance(exc, ImageLoadError):
        return exc
    if isinstance(exc, OSError):
        kind = "truncated" if "truncat" in str(exc).lower() else "unreadable"
        return ImageLoadError(str(exc) or type(exc).__name__, kind)
    return ImageLoadError(f"{type(exc).__name__}: {exc}")


class _KeepOpen:
    """A caller's file object as Pillow reads it, minus close (Image.open seeks it back to 0 itself)."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw

    def read(self, *args: Any) -> bytes:
        return self._raw.read(*args)

    def seek(self, *args: Any) -> int:
        return self._raw.seek(*args)

    def tell(self) -> int:
        return self._raw.tell()

    def close(self) -> None:
        pass


def open_image(source: bytes | str | Path | BinaryIO, max_pixels: int | None = None) -> Image.Image:
    """The one image loader (scanner, import, crawler, previews, predictions): open, refuse more than max_pixels
    (default MAX_PIXELS) before decoding anything, verify the file's structure (PNG checksums ...), decode fully.

    Returns the loaded image with its format; every failure is an ImageLoadError (a ValueError) with a clear
    message, ImageTooLarge for the pixel limit. A file object is read from its start and left open.
    """
    limit = MAX_PIXELS if max_pixels is None else max_pixels
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(source)
    if not isinstance(source, (str, Path)):
        source = _KeepOpen(source)  # PNG's verify closes the file it read, and the image must be reopened
    probe = _open(source)
    try:
        width, height = probe.size
        if width * height > limit:
            raise ImageTooLarge(f"image too large: {width}x{height} px is over the {limit:,} px limit "
                                "(decompression bomb refused)")
        probe.verify()  # structure check; the image must be reopened afterwards
    except Exception as exc:
        raise _load_error(exc) from None
    finally:
        probe.close()
    image = _open(source)
    try:
        image.load()
    except Exception as exc:
        image.close()
        raise _load_error(exc) from None
    return image


def _inspect(path: Path, check: bool, min_side: int) -> tuple[int, str, tuple[str, str] | None]:
    """(size, sha1, problem or None) for one file; problem is (kind, detail) and never 'duplicate'."""
    try:
        size = path.stat().st_size
        sha1 = _sha1(path)
    except OSError as exc:  # vanished or unreadable between listing and reading
        return 0, "", ("unreadable", f"cannot read file: {exc.strerror or exc}")
    if not check:
        return size, sha1, None
    try:
        image = open_image(path)
    except ImageLoadError as exc:
        return size, sha1, (exc.kind, str(exc))
    with image:
        fmt = image.format or "unknown"
        width, height = image.size
    if fmt not in TF_DECODABLE_FORMATS:
        return size, sha1, ("unreadable", f"{fmt} format cannot be decoded for training")
    if min(width, height) < min_side:
        return size, sha1, ("tiny", f"{width}x{height} px < {min_side} px")
    return size, sha1, None


def scan_dataset(
    root: str | Path, min_side: int = 32, check_images: bool = True, with_fingerprint: bool = True
) -> DatasetScan:
    """List root/<class>/<image>; with check_images, decode every image and set aside broken, tiny and duplicate ones.

    check_images=False only lists (no problems reported); with_fingerprint=False skips reading file contents
    (fingerprint is then "").
    """
    root = Path(root).resolve()
    listing = _list_class_files(root)
    ordered = [(name, path) for name, paths in listing.items() for path in paths]

    if check_images or with_fingerprint:
        workers = min(16, (os.cpu_count() or 1) + 4)
        with ThreadPoolExecutor(max_workers=workers) as pool:  # hashing and Pillow decoding release the GIL
            results = list(pool.map(lambda item: _inspect(item[1], check_images, min_side), ordered))
    else:
        results = [(0, "", None)] * len(ordered)

    files: dict[str, list[Path]] = {name: [] for name in listing}
    problems: list[ImageProblem] = []
    first_seen: dict[str, Path] = {}
    for (name, path), (_, sha1, problem) in zip(ordered, results):
        if problem is not None:
            problems.append(ImageProblem(path, *problem))
        elif check_images and sha1 in first_seen:
            original = first_seen[sha1].relative_to(root).as_posix()
            problems.append(ImageProblem(path, "duplicate", f"same content as {original}"))
        else:
            first_seen.setdefault(sha1, path)
            files[name].append(path)

    fingerprint = ""
    if with_fingerprint:
        fingerprint = _fingerprint(root, [(p, size, sha1) for (_, p), (size, sha1, _) in zip(ordered, results)])
    return DatasetScan(root=root, classes=list(listing), files=files, problems=problems, fingerprint=fingerprint)


def dataset_fingerprint(root: str | Path) -> str:
    """sha256 over (relative path, size, sha1) of every image file: changes when any content, name or class changes."""
    return scan_dataset(root, check_images=False, with_fingerprint=True).fingerprint


def load_image_rgb(path: str | Path | BinaryIO, max_pixels: int | None = None) -> Image.Image:
    """Decoded RGB image with EXIF orientation applied; ValueError (ImageLoadError) on broken or oversized images
    (open_image: the pixel limit is MAX_PIXELS unless given)."""
    name = getattr(path, "name", path)
    try:
        image = open_image(path, max_pixels)
    except ImageLoadError as exc:
        raise type(exc)(f"{name}: {exc}", exc.kind) from None
    with image:
        oriented = ImageOps.exif_transpose(image)
        return oriented.convert("RGB")


# ---------------------------------------------------------------- split


def split_files(
    scan: DatasetScan, validation_split: float = 0.2, seed: int = 123, test_fraction: float = 0.0
) -> Split:
    """Train/validation(/test) split. Without a test part it is identical to
    image_dataset_from_directory(validation_split, seed, shuffle=True): same files, same order.

    With test_fraction > 0 the test images are carved out first (pick_test_files: per class, chosen by a hash of
    the seed and the file's name), then the rest is split as Keras splits it, with validation_split x all images
    (both fractions are of the whole dataset: 0.2 and 0.1 leave 70 % for training).
    """
    if not 0 <= validation_split < 1:
        raise ValueError(f"validation_split must be in [0, 1), got {validation_split}")
    if not 0 <= test_fraction < 1 or validation_split + test_fraction >= 1:
        raise ValueError(f"test_fraction must be in [0, 1) with validation_split + test_fraction < 1, got "
                         f"{test_fraction} (validation_split {validation_split})")
    paths, labels = scan.labelled_files()
    total = len(paths)
    test: set[Path] = set(pick_test_files(scan, test_fraction, seed)) if test_fraction > 0 else set()
    if test:
        kept = [i for i, path in enumerate(paths) if path not in test]
        test_paths = [paths[i] for i in range(total) if paths[i] in test]  # in Keras' (class, name) order
        test_labels = [labels[i] for i in range(total) if paths[i] in test]
        paths, labels = [paths[i] for i in kept], [labels[i] for i in kept]
    else:
        test_paths, test_labels = [], []
    # Keras shuffles paths and labels with two RandomState(seed) instances: one permutation of both
    order = np.arange(len(paths))
    np.random.RandomState(seed).shuffle(order)
    shuffled_paths = [paths[i] for i in order]
    shuffled_labels = [labels[i] for i in order]
    num_val = min(int(validation_split * total), len(paths))  # == Keras' int(split * n) without a test part
    num_train = len(paths) - num_val
    return Split(
        classes=list(scan.classes),
        train_paths=shuffled_paths[:num_train],
        train_labels=shuffled_labels[:num_train],
        val_paths=shuffled_paths[num_train:],
        val_labels=shuffled_labels[num_train:],
        test_paths=test_paths,
        test_labels=test_labels,
    )


def _test_rank(seed: int, class_name: str, file_name: str) -> str:
    # NFC, as the fingerprint: a copy of the folder made on macOS (NFD names) holds out the same images
    key = unicodedata.normalize("NFC", f"{int(seed)}\0{class_name}\0{file_name}")
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def pick_test_files(scan: DatasetScan, test_fraction: float, seed: int = 123) -> list[Path]:
    """The held-out test images: test_fraction of every class (stratified: largest remainders round the per-class
    counts to int(test_fraction x all images), and a class always keeps one image for training), each class's
    images with the lowest sha256(seed, class, file name). An image's rank depends only on the seed, its class and
    its name (not on the listing or the other images), so a class that grows keeps most of its test images: a new
    image enters the test part only by outranking one."""
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    counts = scan.counts()
    total = sum(counts.values())
    if test_fraction <= 0 or total == 0:
        return []
    exact = {name: test_fraction * n for name, n in counts.items()}
    take = {name: int(value) for name, value in exact.items()}
    by_remainder = sorted(counts, key=lambda name: (-(exact[name] - take[name]), scan.classes.index(name)))
    for name in by_remainder[:max(0, int(test_fraction * total) - sum(take.values()))]:
        take[name] += 1
    chosen: list[Path] = []
    for name in scan.classes:
        files = scan.files.get(name, [])
        count = min(take.get(name, 0), max(0, len(files) - 1))
        ranked = sorted(files, key=lambda path: _test_rank(seed, name, path.name))
        chosen.extend(sorted(ranked[:count]))
    return chosen


# ---------------------------------------------------------------- tf.data and augmentation (TensorFlow loaded lazily)


__all__ = [
    "DEMO_CLASSES",
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS",
    "DatasetScan",
    "ImageLoadError",
    "ImageProblem",
    "ImageTooLarge",
    "Split",
    "dataset_fingerprint",
    "generate_demo_dataset",
    "load_image_rgb",
    "open_image",
    "scan_dataset",
    "pick_test_files",
    "split_files",
]
