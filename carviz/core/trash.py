"""Deleting runs safely: a deleted run moves to runs/.trash, from where it can be restored until the trash is emptied."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from carviz.core.jobs.record import atomic_write_json, now_iso, read_json_object
from carviz.core.jobs.status import Status
from carviz.core.run_files import CONFIG_FILE, TRASH_DIR, TRASH_INFO_FILE
from carviz.core.store import Run, Store


@dataclass(frozen=True)
class TrashedRun:
    """A run in the trash: its id, the name it had, when it was deleted, and the disk space it holds."""

    id: str
    name: str
    trashed_at: str
    size_bytes: int
    path: Path


def folder_size(path: Path) -> int:
    """Bytes of the files under path (links not followed; unreadable entries count as 0)."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                continue
    return total


def trash_dir(store: Store) -> Path:
    return store.root / TRASH_DIR


def trash_run(store: Store, run: Run) -> TrashedRun:
    """Move a finished run to the trash. ValueError while it is queued or running (stop it first), or when a
    trashed run with its id is already there."""
    state = run.state().status
    if state in (Status.QUEUED, Status.RUNNING):
        raise ValueError(f"run {run.id} is {state.value}: stop it before deleting it")
    destination = trash_dir(store) / run.id
    if destination.exists():
        raise ValueError(f"the trash already holds a run {run.id}; empty it or restore that one first")
    name = run.display_name()
    destination.parent.mkdir(parents=True, exist_ok=True)
    os.rename(run.path, destination)  # one rename: the run is either in runs/ or in the trash, never half
    atomic_write_json(destination / TRASH_INFO_FILE, {"trashed_at": now_iso(), "name": name})
    return _trashed(destination)


def _trashed(path: Path) -> TrashedRun:
    info = read_json_object(path / TRASH_INFO_FILE)
    name, when = info.get("name"), info.get("trashed_at")
    return TrashedRun(path.name, name if isinstance(name, str) else "", when if isinstance(when, str) else "",
                      folder_size(path), path)


def list_trash(store: Store) -> list[TrashedRun]:
    """The runs in the trash, most recently deleted first."""
    folder = trash_dir(store)
    if not folder.is_dir():
        return []
    found = [_trashed(entry) for entry in folder.iterdir() if entry.is_dir() and (entry / CONFIG_FILE).is_file()]
    return sorted(found, key=lambda item: (item.trashed_at, item.id), reverse=True)


def restore_run(store: Store, run_id: str) -> Run:
    """Move a trashed run back to runs/; LookupError when it is not in the trash, ValueError when a run with its
    id exists again."""
    source = trash_dir(store) / run_id
    if "/" in run_id or run_id.startswith(".") or not (source / CONFIG_FILE).is_file():
        raise LookupError(f"no run {run_id!r} in the trash")
    destination = store.root / run_id
    if destination.exists():
        raise ValueError(f"a run {run_id} already exists in {store.root}")
    (source / TRASH_INFO_FILE).unlink(missing_ok=True)
    os.rename(source, destination)
    return store.get_run(run_id)


def empty_trash(store: Store, run_ids: list[str] | None = None) -> int:
    """Delete trashed runs for good (all, or those ids); the bytes freed."""
    freed = 0
    for item in list_trash(store):
        if run_ids is None or item.id in run_ids:
            freed += item.size_bytes
            shutil.rmtree(item.path, ignore_errors=True)
    return freed
