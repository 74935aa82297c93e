"""What a warm worker keeps between the runs it hosts (see ml/worker.py): dataset scans and cached features in
process memory. Off in a process that runs one job (enable() turns it on), where every call below is the plain one.

A scan is reused while every image file of the dataset has the same name, size, modification time and inode (a
stat of each file, not a decode); a cut's features while its cache file is unchanged (cache entries are written
once, then only read). Features are held within the memory budget of feature_rows.hold: before a new cut is copied
in, the least recently used cuts are let go until it fits.
"""

from __future__ import annotations

import gc
import os
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from carviz.ml import feature_rows

if TYPE_CHECKING:
    from carviz.data.datasets import DatasetScan

_enabled = False
_scans: dict[Path, tuple[tuple[Any, ...], "DatasetScan"]] = {}
_held: "OrderedDict[tuple[Any, ...], np.ndarray]" = OrderedDict()


def enable() -> None:
    """Keep scans and features between the jobs of this process."""
    global _enabled
    _enabled = True


def forget() -> None:
    """Let go of everything kept (tests; a worker never needs to)."""
    global _enabled
    _enabled = False
    _scans.clear()
    _held.clear()


def _stat_signature(root: Path) -> tuple[Any, ...]:
    """(relative path, size, mtime, inode) of every file under the dataset's class folders, in a stable order."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            try:
                info = os.stat(path)
            except OSError:
                continue
            found.append((os.path.relpath(path, root), info.st_size, info.st_mtime_ns, info.st_ino))
    return tuple(found)


def scan_dataset(root: Path) -> "DatasetScan":
    """datasets.scan_dataset(root) (every image decoded and hashed), reused while no file changed."""
    from carviz.data import datasets

    if not _enabled:
        return datasets.scan_dataset(root)
    root = Path(root).resolve()
    signature = _stat_signature(root)
    kept = _scans.get(root)
    if kept is not None and kept[0] == signature:
        return kept[1]
    scan = datasets.scan_dataset(root)
    _scans[root] = (signature, scan)
    return scan


def _file_key(features: np.ndarray) -> tuple[Any, ...] | None:
    """What identifies a memory-mapped cut: its file (path, size, mtime, inode), offset, shape and dtype."""
    if not isinstance(features, np.memmap) or not getattr(features, "filename", None):
        return None
    try:
        info = os.stat(features.filename)
    except OSError:
        return None
    return (features.filename, info.st_size, info.st_mtime_ns, info.st_ino, features.offset, features.shape,
            str(features.dtype))


def hold(features: np.ndarray, budget: int | None = None) -> tuple[np.ndarray, bool]:
    """feature_rows.hold (the rows in process memory when they fit the budget); in a worker, a cut held for an
    earlier run is returned as it is, and one copied in now is kept for the next runs."""
    key = _file_key(features) if _enabled else None
    if key is None:
        return feature_rows.hold(features, budget)
    if key in _held:
        _held.move_to_end(key)
        return _held[key], True
    held, in_memory = feature_rows.hold(features, budget)
    while not in_memory and _held:  # the cuts kept for earlier runs count against the budget: let the oldest go
        _held.popitem(last=False)
        gc.collect()
        held, in_memory = feature_rows.hold(features, budget)
    if in_memory:
        held.flags.writeable = False  # shared by the runs of this worker: none may change it
        _held[key] = held
    return held, in_memory
