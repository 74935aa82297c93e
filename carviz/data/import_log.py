"""Import records (what each import added, by content hash), the content index behind idempotent imports, undo."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from carviz.core import settings
from carviz.data.datasets import IMAGE_EXTENSIONS

IMPORTS_DIR = ".imports"  # <dataset>/.imports/<id>.json, hidden like .trash and .crawl: never a class
_CHUNK = 1 << 20


def sha1_of(path: Path) -> str:
    """The file's SHA-1 (the dataset scanner's duplicate test)."""
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _dataset_root(dataset: str | Path) -> Path:
    """As importer.dataset_path: a str is a dataset name (one folder under the data folder), a Path is used as is."""
    if isinstance(dataset, Path):
        return dataset.expanduser().resolve()
    return settings.safe_join(settings.data_dir(), settings.dataset_name(dataset))


class ContentIndex:
    """The contents of a dataset's images (every visible class folder), to find a file already present.

    Files are listed by size once; a file is hashed only when an incoming file has its size, and once.
    """

    def __init__(self, dataset: Path) -> None:
        self.root = Path(dataset)
        self.classes_before: set[str] = set()
        self._by_size: dict[int, list[Path]] = {}
        self._sha: dict[Path, str] = {}
        self.added: dict[Path, str] = {}  # files placed by this import and their SHA-1
        suffixes = tuple(IMAGE_EXTENSIONS)
        if not self.root.is_dir():
            return
        for class_dir in self.root.iterdir():
            if class_dir.name.startswith(".") or class_dir.is_symlink() or not class_dir.is_dir():
                continue
            self.classes_before.add(class_dir.name)
            for path in class_dir.iterdir():
                if path.suffix.lower() in suffixes and not path.name.startswith(".") and not path.is_symlink():
                    try:
                        self._by_size.setdefault(path.stat().st_size, []).append(path)
                    except OSError:
                        continue  # gone meanwhile

    def match(self, path: Path) -> tuple[str, str | None]:
        """(the file's SHA-1, "class/file" of an image of the dataset with the same content, or None)."""
        sha1 = sha1_of(path)
        for candidate in self._by_size.get(path.stat().st_size, []):
            if candidate not in self._sha:
                try:
                    self._sha[candidate] = sha1_of(candidate)
                except OSError:
                    self._sha[candidate] = ""
            if self._sha[candidate] == sha1:
                return sha1, candidate.relative_to(self.root).as_posix()
        return sha1, None

    def add(self, path: Path, sha1: str) -> None:
        """A file this import placed: later files with its content are skipped too."""
        self._by_size.setdefault(path.stat().st_size, []).append(path)
        self._sha[path] = sha1
        self.added[path] = sha1


# ---------------------------------------------------------------- the record of an import


@dataclass(frozen=True)
class ImportRecord:
    """One import into a dataset: the files it added ("class/file" -> SHA-1) and whether it was undone."""

    id: str
    source: str
    created_at: str
    files: dict[str, str]
    created_classes: tuple[str, ...] = ()
    skipped: int = 0
    dropped: int = 0
    undone_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "source": self.source, "created_at": self.created_at,
                "files": [{"path": p, "sha1": s} for p, s in self.files.items()],
                "created_classes": list(self.created_classes), "skipped": self.skipped, "dropped": self.dropped,
                "undone_at": self.undone_at}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ImportRecord":
        return cls(id=str(data["id"]), source=str(data.get("source", "")), created_at=str(data.get("created_at", "")),
                   files={str(f["path"]): str(f["sha1"]) for f in data.get("files", [])},
                   created_classes=tuple(str(c) for c in data.get("created_classes", [])),
                   skipped=int(data.get("skipped", 0)), dropped=int(data.get("dropped", 0)),
                   undone_at=str(data.get("undone_at") or ""))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _new_id() -> str:
    """Sortable by time (to the millisecond) and unique: 20261128-001502.123-3fa9c1."""
    millis = time.time_ns() // 1_000_000
    seconds, rest = divmod(millis, 1000)
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime(seconds)) + f".{rest:03d}-" + secrets.token_hex(3)


def _record_path(dataset: Path, import_id: str) -> Path:
    if not import_id or "/" in import_id or "\\" in import_id or import_id.startswith("."):
        raise ValueError(f"not an import id: {import_id!r}")
    return settings.safe_join(dataset, IMPORTS_DIR, f"{import_id}.json")


def _write(dataset: Path, record: ImportRecord) -> None:
    path = _record_path(dataset, record.id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    with open(tmp, "x", encoding="utf-8") as f:
        json.dump(record.to_dict(), f, indent=2, ensure_ascii=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def record_import(dataset: Path, source: str, index: ContentIndex, skipped: int, dropped: int) -> ImportRecord:
    """Write the record of an import that added index.added; returns it (its id names the import)."""
    files = {path.relative_to(dataset).as_posix(): sha1 for path, sha1 in index.added.items()}
    created = tuple(sorted({rel.split("/")[0] for rel in files} - index.classes_before))
    record = ImportRecord(id=_new_id(), source=source, created_at=_now(), files=files, created_classes=created,
                          skipped=skipped, dropped=dropped)
    _write(dataset, record)
    return record


def read_import(dataset: str | Path, import_id: str) -> ImportRecord:
    """One import's record; LookupError when there is none."""
    root = _dataset_root(dataset)
    path = _record_path(root, import_id)
    try:
        return ImportRecord.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise LookupError(f"no import {import_id!r} in {root}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise LookupError(f"the record of import {import_id!r} is damaged: {exc}") from None


def list_imports(dataset: str | Path) -> list[ImportRecord]:
    """The dataset's imports, newest first (damaged records left out)."""
    root = _dataset_root(dataset)
    folder = root / IMPORTS_DIR
    if not folder.is_dir() or folder.is_symlink():
        return []
    records = []
    for path in folder.glob("*.json"):
        if path.name.startswith("."):
            continue
        try:
            records.append(ImportRecord.from_dict(json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return sorted(records, key=lambda r: r.id, reverse=True)


# ---------------------------------------------------------------- undo


@dataclass
class UndoReport:
    """What undoing an import removed, and what it left (file, why)."""

    record: ImportRecord
    removed: list[str] = field(default_factory=list)
    kept: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        """`Undid the import of pets.zip: removed 3 images; kept 1 (cats/a.jpg: changed since the import).`"""
        n = len(self.removed)
        text = f"Undid the import of {self.record.source or self.record.id}: removed {n} image{'s' if n != 1 else ''}"
        if self.kept:
            text += f"; kept {len(self.kept)} (" + "; ".join(f"{p}: {why}" for p, why in self.kept[:5])
            text += ", …)" if len(self.kept) > 5 else ")"
        return text + "."


def undo_import(dataset: str | Path, import_id: str) -> UndoReport:
    """Remove exactly the files an import added, where they still hold the content it added (a file changed since,
    or moved away, e.g. to the trash, is left and listed); class folders it created are removed when left empty.
    ValueError when the import was undone already."""
    root = _dataset_root(dataset)
    record = read_import(root, import_id)
    if record.undone_at:
        raise ValueError(f"the import of {record.source or record.id} was undone already ({record.undone_at})")
    report = UndoReport(record)
    for rel, sha1 in record.files.items():
        class_name, _, file_name = rel.partition("/")
        try:
            path = settings.safe_join(root, settings.safe_name(class_name), settings.safe_name(file_name))
        except ValueError as exc:
            report.kept.append((rel, f"not a file of this dataset ({exc})"))
            continue
        if path.is_symlink() or not path.is_file():
            report.kept.append((rel, "not there any more (moved to the trash, renamed or deleted)"))
            continue
        if sha1_of(path) != sha1:
            report.kept.append((rel, "changed since the import"))
            continue
        path.unlink()
        report.removed.append(rel)
    for class_name in record.created_classes:
        try:
            settings.safe_join(root, settings.safe_name(class_name)).rmdir()  # only when empty
        except (OSError, ValueError):
            pass
    _write(root, ImportRecord(**{**record.__dict__, "undone_at": _now()}))
    return report
