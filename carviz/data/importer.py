"""Bring images into a dataset safely (zip upload, folder) and review them (trash and restore)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
import unicodedata
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from PIL import Image, ImageOps

from carviz.core import settings
from carviz.data.datasets import IMAGE_EXTENSIONS, ImageLoadError, ImageTooLarge, open_image
from carviz.data.import_log import ContentIndex, record_import

# Kept byte for byte, with the suffix the dataset scanner lists (MPO: phone JPEGs); anything else
# that decodes (GIF, TIFF, ...) is converted to JPEG.
KEPT_FORMATS = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "BMP": ".bmp", "WEBP": ".webp"}
IMAGE_SUFFIXES = tuple(IMAGE_EXTENSIONS)
# Import caps (zip upload, folder, `python -m carviz import`). The dashboard's upload cap, server.maxUploadSize in
# .streamlit/config.toml, is MAX_TOTAL_BYTES in MiB: a zip past it would be past the total cap anyway.
MAX_FILES = 10_000
MAX_FILE_BYTES = 50 << 20  # per image, measured while decompressing
MAX_TOTAL_BYTES = 2 << 30  # all images of one import together
TRASH_DIR = ".trash"
JUNK_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}
_CHUNK = 1 << 20


class ImportFailed(ValueError):
    """An import could not start (not a zip, source missing, source is the dataset itself)."""


def safe_class_name(name: str) -> str:
    """Validate a class (or file) name as one safe path component; return it NFC-normalized.

    Any Unicode is fine (e.g. Korean); refused: empty, ".", "..", a leading dot (hidden),
    "/" or "\\", NUL and other control characters, more than 255 bytes in UTF-8 (settings.safe_name,
    the same rule as dataset names).
    """
    return settings.safe_name(name)


def dataset_path(dataset: str | Path, create: bool = False) -> Path:
    """A dataset folder: a str is a dataset name (one folder under settings.data_dir(), never a path), a Path
    (from code, not from a user) is used as is."""
    if isinstance(dataset, Path):
        path = dataset.expanduser().resolve()
    else:
        path = settings.safe_join(settings.data_dir(), settings.dataset_name(dataset))
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def is_image_file(path: Path) -> bool:
    """A visible file with an image suffix (what the dataset counts as an image)."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def decode_image(source: bytes | str | Path, max_pixels: int | None = None) -> Image.Image:
    """Fully decode an image (datasets.open_image: the scanner's own loader and pixel limit, MAX_PIXELS unless
    given) or raise ValueError saying why; EXIF orientation applied, format kept."""
    try:
        image = open_image(source, max_pixels)
    except ImageTooLarge:
        raise
    except ImageLoadError as exc:
        raise ImageLoadError(f"not an image ({exc})", exc.kind) from None
    fmt = image.format
    image = ImageOps.exif_transpose(image) or image
    image.format = fmt  # exif_transpose returns a copy without it
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB copy of an image; transparency composited onto white."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def place_no_clobber(tmp: Path, dest_dir: Path, name: str) -> Path:
    """Move `tmp` to dest_dir/name, never overwriting: adds -1, -2... before the suffix on a clash."""
    stem, suffix = os.path.splitext(name)
    for n in range(10_000):
        candidate = settings.safe_join(dest_dir, name if n == 0 else f"{stem}-{n}{suffix}")
        try:
            os.link(tmp, candidate)  # atomic and refuses an existing target, unlike os.replace
        except FileExistsError:
            continue
        except OSError:
            if candidate.exists() or candidate.is_symlink():
                continue
            os.replace(tmp, candidate)  # filesystem without hard links
            return candidate
        os.unlink(tmp)
        return candidate
    raise FileExistsError(f"no free name for {name!r} in {dest_dir}")


# ---------------------------------------------------------------- import


@dataclass
class ImportReport:
    """What an import added, skipped (its content already in the dataset: member, "already present as class/file")
    and dropped (member, reason); notes for renamed/converted files; import_id names its record (undo_import) when it
    added anything."""

    added: list[Path] = field(default_factory=list)
    dropped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    import_id: str = ""

    def by_class(self) -> dict[str, int]:
        """Images added per class."""
        counts: dict[str, int] = {}
        for path in self.added:
            counts[path.parent.name] = counts.get(path.parent.name, 0) + 1
        return counts


@dataclass
class _Entry:
    member: str  # as shown in the report
    parts: tuple[str, ...]
    open: Callable[[], IO[bytes]]
    declared_size: int | None


class _Caps:
    def __init__(self, max_files: int, max_total_bytes: int, max_file_bytes: int, max_pixels: int | None) -> None:
        self.max_files, self.max_total_bytes = max_files, max_total_bytes
        self.max_file_bytes, self.max_pixels = max_file_bytes, max_pixels
        self.files = 0
        self.total = 0


class _TooBig(Exception):
    pass


def _split_member(name: str) -> list[str]:
    # Windows tools sometimes write backslashes; treat them as separators so ..\ is caught too
    return name.replace("\\", "/").split("/")


def _unsafe_reason(name: str) -> str | None:
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    parts = _split_member(name)
    if any(p == ".." for p in parts):
        return "path leaves the dataset (..)"
    if "\x00" in name:
        return "NUL in name"
    return None


def _is_junk(parts: Iterable[str]) -> bool:
    parts = list(parts)
    return parts[0] == "__MACOSX" or parts[-1] in JUNK_NAMES or parts[-1].startswith("._")


def _strip_wrapper(entries: list[_Entry]) -> list[_Entry]:
    """Drop a single top-level folder that wraps the class folders (zip of a folder)."""
    if not entries:
        return entries
    tops = {e.parts[0] for e in entries}
    if len(tops) == 1 and all(len(e.parts) >= 2 for e in entries) and any(len(e.parts) >= 3 for e in entries):
        return [_Entry(e.member, e.parts[1:], e.open, e.declared_size) for e in entries]
    return entries


def _import_entries(entries: list[_Entry], dataset_dir: Path, caps: _Caps, report: ImportReport,
                    source: str) -> ImportReport:
    dataset_dir.mkdir(parents=True, exist_ok=True)
    index = ContentIndex(dataset_dir)  # what is there already: the same content is never added twice
    staging = Path(tempfile.mkdtemp(prefix=".import-", dir=dataset_dir))  # hidden, same filesystem
    aborted: str | None = None
    try:
        for number, entry in enumerate(_strip_wrapper(entries)):
            if aborted:
                report.dropped.append((entry.member, aborted))
                continue
            if len(entry.parts) < 2:
                report.dropped.append((entry.member, "not inside a class folder"))
                continue
            if len(entry.parts) > 2:
                report.dropped.append((entry.member, "too deep (expected class/file)"))
                continue
            try:
                class_name = safe_class_name(entry.parts[0])
                file_name = safe_class_name(entry.parts[1])
            except ValueError as exc:
                report.dropped.append((entry.member, f"bad name: {exc}"))
                continue
            if caps.files >= caps.max_files:
                report.dropped.append((entry.member, f"file count cap ({caps.max_files}) reached"))
                continue
            if entry.declared_size is not None and entry.declared_size > caps.max_file_bytes:
                report.dropped.append((entry.member, f"larger than {caps.max_file_bytes} bytes (declared {entry.declared_size})"))
                continue
            tmp = staging / f"{number}.part"
            try:
                _copy_capped(entry.open, tmp, caps)
            except _TooBig as exc:
                tmp.unlink(missing_ok=True)
                report.dropped.append((entry.member, str(exc)))
                if caps.total > caps.max_total_bytes:
                    aborted = f"archive total size cap ({caps.max_total_bytes} bytes) reached; import stopped"
                continue
            except (OSError, zipfile.BadZipFile, EOFError, RuntimeError) as exc:  # corrupt member, bad CRC, encrypted
                tmp.unlink(missing_ok=True)
                report.dropped.append((entry.member, f"unreadable: {exc}"))
                continue
            added = _finish_file(tmp, dataset_dir, class_name, file_name, entry.member, caps, report, index)
            if added is not None:
                caps.files += 1
                report.added.append(added)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if index.added:  # recorded even when interrupted, so whatever was added can be undone
            try:
                report.import_id = record_import(dataset_dir, source, index, len(report.skipped),
                                                 len(report.dropped)).id
            except OSError as exc:  # e.g. a full disk: the images stay, the import cannot be undone
                report.notes.append(("(import record)", f"not written, so this import cannot be undone: {exc}"))
    return report


def _copy_capped(opener: Callable[[], IO[bytes]], dest: Path, caps: _Caps) -> None:
    """Stream into dest, counting real bytes (headers can lie); raise _TooBig past either cap."""
    written = 0
    with opener() as src, open(dest, "xb") as out:
        while True:
            chunk = src.read(_CHUNK)
            if not chunk:
                break
            written += len(chunk)
            if written > caps.max_file_bytes:
                raise _TooBig(f"larger than {caps.max_file_bytes} bytes when decompressed (zip bomb?)")
            if caps.total + written > caps.max_total_bytes:
                caps.total += written
                raise _TooBig(f"archive total size cap ({caps.max_total_bytes} bytes) reached")
            out.write(chunk)
    caps.total += written


def _finish_file(
    tmp: Path, dataset_dir: Path, class_name: str, file_name: str, member: str, caps: _Caps, report: ImportReport,
    index: ContentIndex,
) -> Path | None:
    try:
        image = decode_image(tmp, caps.max_pixels)
    except ValueError as exc:
        tmp.unlink(missing_ok=True)
        report.dropped.append((member, str(exc)))
        return None
    fmt = image.format or ""
    stem, suffix = os.path.splitext(file_name)
    if fmt in KEPT_FORMATS:
        if suffix.lower() not in IMAGE_SUFFIXES or KEPT_FORMATS[fmt] != _canonical(suffix):
            new_name = stem + KEPT_FORMATS[fmt]
            report.notes.append((member, f"renamed to {new_name} ({fmt} data)"))
            file_name = new_name
    else:
        converted = tmp.with_suffix(".jpg")
        to_rgb(image).save(converted, "JPEG", quality=92)
        tmp.unlink()
        tmp = converted
        file_name = stem + ".jpg"
        report.notes.append((member, f"converted from {fmt or 'unknown format'} to JPEG"))
    sha1, present = index.match(tmp)  # the bytes as they would be stored (after any conversion)
    if present is not None:
        tmp.unlink(missing_ok=True)
        report.skipped.append((member, f"already present as {present}"))
        return None
    class_dir = settings.safe_join(dataset_dir, class_name)
    class_dir.mkdir(exist_ok=True)
    final = place_no_clobber(tmp, class_dir, file_name)
    index.add(final, sha1)
    if final.name != file_name:
        report.notes.append((member, f"saved as {final.name} (name taken)"))
    return final


def _canonical(suffix: str) -> str:
    suffix = suffix.lower()
    return ".jpg" if suffix == ".jpeg" else suffix


def _zip_name(info: zipfile.ZipInfo) -> str:
    """The member name, repairing UTF-8 or Korean (cp949) names written without the UTF-8 flag."""
    name = info.filename
    if info.flag_bits & 0x800:
        return name
    try:
        raw = name.encode("cp437")
    except UnicodeEncodeError:
        return name
    for encoding in ("utf-8", "cp949"):
        try:
            decoded = raw.decode(encoding)
        except UnicodeDecodeError:
            continue
        if encoding == "utf-8" or any("\uac00" <= ch <= "\ud7a3" for ch in decoded):
            return decoded
    return name


def import_zip(
    zip_file: str | Path | IO[bytes],
    dataset_dir: str | Path,
    max_files: int = MAX_FILES,
    max_total_bytes: int = MAX_TOTAL_BYTES,
    max_file_bytes: int = MAX_FILE_BYTES,
    max_pixels: int | None = None,  # None: datasets.MAX_PIXELS, the scanner's limit
    source: str = "",  # how the import's record names what was imported (default: the zip's file name)
) -> ImportReport:
    """Import a zip of class folders (class/file.ext, optionally wrapped in one top folder) into a dataset.

    Dropped, with the reason in the report: absolute paths, '..', links and other non-regular
    entries, files outside a class folder or deeper than one level, bad names, entries past the
    size caps (measured while decompressing), files that do not decode as images. Skipped, and listed: files whose
    content the dataset already holds (so importing twice adds nothing). Never overwrites; records what it added.
    """
    dataset = dataset_path(dataset_dir) if isinstance(dataset_dir, str) else Path(dataset_dir).resolve()
    report = ImportReport()
    try:
        archive = zipfile.ZipFile(zip_file)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ImportFailed(f"not a readable zip file: {exc}") from None
    with archive:
        entries: list[_Entry] = []
        for info in archive.infolist():
            name = unicodedata.normalize("NFC", _zip_name(info))
            if info.is_dir():
                reason = _unsafe_reason(name)
                if reason:
                    report.dropped.append((name, reason))
                continue
            reason = _unsafe_reason(name)
            if reason:
                report.dropped.append((name, reason))
                continue
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                report.dropped.append((name, "symbolic link"))
                continue
            if stat.S_IFMT(mode) not in (0, stat.S_IFREG):
                report.dropped.append((name, "not a regular file"))
                continue
            parts = tuple(p for p in _split_member(name) if p not in ("", "."))
            if not parts:
                report.dropped.append((name, "empty name"))
                continue
            if _is_junk(parts):
                report.dropped.append((name, "system file (macOS/Windows metadata)"))
                continue
            if any(p.startswith(".") for p in parts):
                report.dropped.append((name, "hidden file or folder"))
                continue
            entries.append(_Entry(name, parts, lambda info=info: archive.open(info), info.file_size))
        caps = _Caps(max_files, max_total_bytes, max_file_bytes, max_pixels)
        name = source or (Path(zip_file).name if isinstance(zip_file, (str, Path)) else "zip")
        return _import_entries(entries, dataset, caps, report, name)


def import_folder(
    src_dir: str | Path,
    dataset_dir: str | Path,
    max_files: int = MAX_FILES,
    max_total_bytes: int = MAX_TOTAL_BYTES,
    max_file_bytes: int = MAX_FILE_BYTES,
    max_pixels: int | None = None,  # None: datasets.MAX_PIXELS, the scanner's limit
    source: str = "",  # how the import's record names it (default: the folder's path)
) -> ImportReport:
    """Copy a folder of class folders into a dataset under the same rules as import_zip (links never followed)."""
    src = Path(src_dir).resolve()
    dataset = dataset_path(dataset_dir) if isinstance(dataset_dir, str) else Path(dataset_dir).resolve()
    if not src.is_dir():
        raise ImportFailed(f"{src} is not a folder")
    if src == dataset or dataset in src.parents or src in dataset.parents:
        raise ImportFailed("source folder and dataset overlap")
    report = ImportReport()
    entries: list[_Entry] = []
    for rel, kind in _walk_no_links(src):
        name = rel.as_posix()
        if kind == "link":
            report.dropped.append((name, "symbolic link"))
        elif kind == "other":
            report.dropped.append((name, "not a regular file"))
        elif kind == "hidden":
            report.dropped.append((name + "/", "hidden file or folder"))
        elif _is_junk(rel.parts):
            report.dropped.append((name, "system file (macOS/Windows metadata)"))
        elif any(p.startswith(".") for p in rel.parts):
            report.dropped.append((name, "hidden file or folder"))
        else:
            path = src / rel
            entries.append(_Entry(name, rel.parts, lambda path=path: _open_no_follow(path), None))
    caps = _Caps(max_files, max_total_bytes, max_file_bytes, max_pixels)
    return _import_entries(entries, dataset, caps, report, source or str(src))


def _walk_no_links(root: Path) -> Iterator[tuple[Path, str]]:
    stack = [root]
    while stack:
        folder = stack.pop()
        with os.scandir(folder) as it:
            for item in sorted(it, key=lambda e: e.name):
                rel = Path(item.path).relative_to(root)
                if item.is_symlink():
                    yield rel, "link"
                elif item.is_dir(follow_symlinks=False):
                    if item.name.startswith("."):
                        yield rel, "hidden"
                    else:
                        stack.append(Path(item.path))
                elif item.is_file(follow_symlinks=False):
                    yield rel, "file"
                else:
                    yield rel, "other"


def _open_no_follow(path: Path) -> IO[bytes]:
    # O_NOFOLLOW: a file swapped for a link after the walk is refused, not followed
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    return os.fdopen(fd, "rb")


# ---------------------------------------------------------------- review (trash / restore)


@dataclass(frozen=True)
class TrashEntry:
    """One image in the trash: where it is now and where it came from (both relative to the dataset)."""

    class_name: str
    file_name: str  # name inside .trash/<class>/
    original: str  # "<class>/<file>" it came from
    trashed_at: str
    path: Path


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _append_index(dataset: Path, record: dict[str, Any]) -> None:
    index = settings.safe_join(dataset, TRASH_DIR, "index.jsonl")
    index.parent.mkdir(parents=True, exist_ok=True)
    with open(index, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def trash_images(dataset_dir: str | Path, class_name: str, file_names: Iterable[str]) -> list[Path]:
    """Move images of a class into <dataset>/.trash/<class>/ (names kept, suffixed on a clash); all or nothing on bad names."""
    dataset = dataset_path(dataset_dir) if isinstance(dataset_dir, str) else Path(dataset_dir).resolve()
    class_name = safe_class_name(class_name)
    sources = []
    for name in dict.fromkeys(file_names):
        src = settings.safe_join(dataset, class_name, safe_class_name(name))
        if src.is_symlink() or not src.is_file():
            raise FileNotFoundError(f"{class_name}/{name} is not an image file in {dataset}")
        sources.append(src)
    trash_dir = settings.safe_join(dataset, TRASH_DIR, class_name)
    trash_dir.mkdir(parents=True, exist_ok=True)
    moved = []
    for src in sources:
        dest = place_no_clobber(src, trash_dir, src.name)
        _append_index(dataset, {"trash": f"{class_name}/{dest.name}", "original": f"{class_name}/{src.name}", "time": _now()})
        moved.append(dest)
    return moved


def move_image(dataset_dir: str | Path, relative: str, to_class: str) -> Path:
    """Move one image ("<class>/<file>") into another class folder of the dataset (made if missing), keeping its
    name (suffixed on a clash); the file is never overwritten or lost. Returns its new path."""
    dataset = dataset_path(dataset_dir) if isinstance(dataset_dir, str) else Path(dataset_dir).resolve()
    class_name, _, file_name = relative.partition("/")
    src = settings.safe_join(dataset, safe_class_name(class_name), safe_class_name(file_name))
    if src.is_symlink() or not src.is_file():
        raise FileNotFoundError(f"{relative} is not an image file in {dataset}")
    if safe_class_name(to_class) == safe_class_name(class_name):
        raise ValueError(f"{relative} is in class {class_name} already")
    dest_dir = settings.safe_join(dataset, safe_class_name(to_class))
    dest_dir.mkdir(exist_ok=True)
    return place_no_clobber(src, dest_dir, src.name)


def list_trash(dataset_dir: str | Path) -> list[TrashEntry]:
    """Images now in the dataset's trash, with their original location (newest index line wins)."""
    dataset = dataset_path(dataset_dir) if isinstance(dataset_dir, str) else Path(dataset_dir).resolve()
    trash_root = dataset / TRASH_DIR
    if not trash_root.is_dir():
        return []
    origin: dict[str, tuple[str, str]] = {}
    index = trash_root / "index.jsonl"
    if index.is_file():
        for line in index.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
                origin[record["trash"]] = (record["original"], record.get("time", ""))
            except (ValueError, KeyError, TypeError):
                continue  # truncated last line
    entries = []
    for class_dir in sorted(p for p in trash_root.iterdir() if p.is_dir() and not p.is_symlink()):
        for path in sorted(class_dir.iterdir()):
            if path.is_symlink() or not path.is_file() or path.name.startswith("."):
                continue
            key = f"{class_dir.name}/{path.name}"
            original, when = origin.get(key, (key, ""))
            entries.append(TrashEntry(class_dir.name, path.name, original, when, path))
    return entries


def restore_images(dataset_dir: str | Path, entries: Iterable[TrashEntry | str]) -> list[Path]:
    """Move trashed images (TrashEntry or "class/file" in the trash) back where they came from; never overwrites."""
    dataset = dataset_path(dataset_dir) if isinstance(dataset_dir, str) else Path(dataset_dir).resolve()
    known = {f"{e.class_name}/{e.file_name}": e for e in list_trash(dataset)}
    chosen = []
    for item in entries:
        key = f"{item.class_name}/{item.file_name}" if isinstance(item, TrashEntry) else str(item)
        if key not in known:
            raise FileNotFoundError(f"{key} is not in the trash of {dataset}")
        chosen.append(known[key])
    restored = []
    for entry in chosen:
        original_class, _, original_name = entry.original.partition("/")
        src = settings.safe_join(dataset, TRASH_DIR, safe_class_name(entry.class_name), safe_class_name(entry.file_name))
        dest_dir = settings.safe_join(dataset, safe_class_name(original_class))
        dest_dir.mkdir(exist_ok=True)
        dest = place_no_clobber(src, dest_dir, safe_class_name(original_name))
        _append_index(dataset, {"restored": f"{entry.class_name}/{entry.file_name}", "to": f"{dest_dir.name}/{dest.name}", "time": _now()})
        restored.append(dest)
    return restored
