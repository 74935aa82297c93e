"""metrics.csv both ways: forgiving parsing (cached by file version, problems noted) and the per-epoch writer."""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any

from carviz.core.jobs.record import atomic_write_text

METRIC_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds")



def _to_number(text: str) -> float | int | None:
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    return str(value)


_metrics_cache: dict[Path, tuple[tuple[int, int, int], list[dict[str, Any]], list[str]]] = {}


def _parse_metrics(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """(rows, what is wrong with the file) of metrics.csv, cached by (inode, mtime, size). The rows are shared:
    callers copy them."""
    try:
        stat = path.stat()
    except OSError:
        return [], []
    key = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
    cached = _metrics_cache.get(path)
    if cached and cached[0] == key:
        return cached[1], cached[2]
    try:
        data = path.read_bytes()
    except OSError as error:
        return [], [f"metrics.csv unreadable ({error.strerror or type(error).__name__})"]
    issues: list[str] = []
    try:
        raw = data.decode("utf-8")
    except UnicodeDecodeError as error:
        issues.append(f"metrics.csv has undecodable bytes (not UTF-8 at byte {error.start})")
        raw = data.decode("utf-8", errors="replace")
    if not raw.endswith("\n"):
        raw = raw[: raw.rfind("\n") + 1]  # the last line is still being written
    by_epoch: dict[int, dict[str, Any]] = {}
    malformed: list[int] = []
    reader = csv.reader(io.StringIO(raw))
    try:
        header = next(reader, None) or []
        if raw and "epoch" not in header:
            issues.append(f"metrics.csv has no epoch column (header {','.join(header)[:60]!r})")
        for values in reader:
            if len(values) != len(header):
                malformed.append(reader.line_num)
                continue
            row = {key_: _to_number(value) for key_, value in zip(header, values)}
            epoch = row.get("epoch")
            if isinstance(epoch, int):
                by_epoch[epoch] = row
            elif "epoch" in header:
                malformed.append(reader.line_num)
    except csv.Error as error:  # e.g. an unterminated quote swallowing the rest of the file
        issues.append(f"metrics.csv is not valid CSV after line {reader.line_num} ({error})")
    if malformed:
        issues.append(f"metrics.csv has {len(malformed)} malformed line{'s' if len(malformed) > 1 else ''} "
                      f"(line {', '.join(map(str, malformed[:3]))}{', …' if len(malformed) > 3 else ''})")
    rows = [by_epoch[epoch] for epoch in sorted(by_epoch)]
    if len(_metrics_cache) > 5000:
        _metrics_cache.clear()
    _metrics_cache[path] = (key, rows, issues)
    return rows, issues


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Rows of metrics.csv, one per epoch. A truncated last line, a malformed line or an undecodable byte is
    skipped (metrics_problems says so); a repeated epoch keeps the last row. Parsed rows are cached by
    (inode, mtime, size): a polling dashboard re-reads only changes."""
    return [dict(row) for row in _parse_metrics(path)[0]]


def metrics_problems(path: Path) -> list[str]:
    """What is wrong with a metrics.csv (undecodable bytes, malformed lines, no epoch column); [] when nothing."""
    return list(_parse_metrics(path)[1])


class MetricsWriter:
    """Appends one row per finished epoch to metrics.csv, fsynced, so a kill loses at most the running epoch.

    On creation it rewrites what a resumed run keeps (epochs up to keep_through_epoch), so every epoch appears
    exactly once."""

    def __init__(self, path: Path, keep_through_epoch: int) -> None:
        self.path = path
        kept = [row for row in read_metrics(path) if row["epoch"] <= keep_through_epoch]
        lines = [",".join(METRIC_COLUMNS)]
        lines += [",".join(_csv_value(row.get(col)) for col in METRIC_COLUMNS) for row in kept]
        atomic_write_text(path, "\n".join(lines) + "\n")

    def append(self, row: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8", newline="") as handle:
            csv.writer(handle, lineterminator="\n").writerow([_csv_value(row.get(col)) for col in METRIC_COLUMNS])
            handle.flush()
            os.fsync(handle.fileno())
