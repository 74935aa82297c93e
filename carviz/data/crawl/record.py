"""A dataset's crawl folder <dataset>/.crawl: the shared job record plus the spec, manifest and error list."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from carviz.core import settings
from carviz.core.jobs.record import STATUS_FILE, JobRecord, atomic_write_json, now_iso, read_json
from carviz.data.crawl.spec import CrawlSpec
from carviz.data.importer import is_image_file

STATE_DIR = ".crawl"
SPEC_FILE = "spec.json"  # the request; also the job's marker file
MANIFEST_FILE = "manifest.jsonl"  # one row per saved image: file, url, query, hashes
ERRORS_FILE = "errors.jsonl"  # one row per broken link, failed page or rejected image


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file; a truncated or garbled line (a crash mid-write) is skipped."""
    rows = []
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict):
                    rows.append(row)
    except FileNotFoundError:
        pass
    return rows


def append_jsonl(path: Path, row: dict[str, Any], fsync: bool) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        handle.flush()
        if fsync:
            os.fsync(handle.fileno())


def count_images(folder: Path) -> int:
    try:
        return sum(1 for p in folder.iterdir() if is_image_file(p) and p.is_file())
    except (FileNotFoundError, NotADirectoryError):
        return 0


@dataclass
class ClassProgress:
    """Per-class counters: target, images saved (in the folder), candidates seen, broken links, rejected images."""

    target: int
    saved: int = 0
    candidates: int = 0
    failed: int = 0
    rejected: int = 0
    state: str = "pending"  # pending, crawling, done, exhausted (results ran out), stopped

    @property
    def fraction(self) -> float:
        return min(1.0, self.saved / self.target) if self.target else 1.0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClassProgress:
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**fields)


class CrawlRecord(JobRecord):
    """The crawl folder of one dataset. Besides the shared job files (status, launch, progress, heartbeat,
    stop_request, job.log) it holds the spec, the manifest of saved images and the list of errors."""

    @classmethod
    def for_dataset(cls, dataset_dir: str | Path) -> CrawlRecord:
        return cls(settings.safe_join(Path(dataset_dir), STATE_DIR))

    @property
    def dataset_dir(self) -> Path:
        return self.path.parent

    # --- the request ---------------------------------------------------------------
    def raw_spec(self) -> Any:
        return read_json(self.file(SPEC_FILE))

    def spec(self) -> CrawlSpec:
        """The saved request; ValueError when it is missing or invalid."""
        raw = self.raw_spec()
        if raw is None:
            raise ValueError(f"{self.file(SPEC_FILE)} is missing or not JSON")
        try:
            return CrawlSpec.from_dict(raw)
        except TypeError as exc:
            raise ValueError(f"bad {SPEC_FILE}: {exc}") from None

    def spec_or_none(self) -> CrawlSpec | None:
        try:
            return self.spec()
        except ValueError:
            return None

    def write_spec(self, spec: CrawlSpec) -> None:
        atomic_write_json(self.file(SPEC_FILE), spec.to_dict())

    # --- what the crawl found ------------------------------------------------------
    def manifest_rows(self) -> list[dict[str, Any]]:
        return read_jsonl(self.file(MANIFEST_FILE))

    def error_rows(self) -> list[dict[str, Any]]:
        return read_jsonl(self.file(ERRORS_FILE))

    def reset_status(self, state: Any, **fields: Any) -> None:
        """A fresh status.json (nothing kept from an earlier run): only the launcher calls this, before a job
        process exists."""
        now = now_iso()
        atomic_write_json(self.file(STATUS_FILE), {**fields, "state": getattr(state, "value", state),
                                                     "created_at": now, "updated_at": now})
