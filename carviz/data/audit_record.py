"""A dataset's audits: <dataset>/.audit/<id>/ holds one audit job's record (its request, status, progress, log),
what it found (result.json) and what was done about it (actions.jsonl: trash, restore, move to another class).

Nothing an audit finds is deleted: images go to the dataset's trash (restorable) or move to another class folder
(and back), and every action is recorded with the audit it came from. A launcher may start the audit as a job
(launch_audit) or run it in its own process (the CLI).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from carviz.core import jobs, settings
from carviz.core.jobs import JobKind, Status
from carviz.core.jobs.record import JobRecord, atomic_write_json, make_record_dir, now_iso, read_json_object
from carviz.data.crawl.record import append_jsonl, read_jsonl
from carviz.data.importer import dataset_path, move_image, restore_images, trash_images

AUDITS_DIR = ".audit"  # hidden like .trash and .crawl: never a class
REQUEST_FILE = "request.json"  # what to audit with; the job's marker file
RESULT_FILE = "result.json"
ACTIONS_FILE = "actions.jsonl"
AUDIT_JOB = JobKind("dataset audit", "carviz.ml.audit", needs_accelerator=True)


class AuditRecord(JobRecord):
    """One audit of one dataset."""

    MARKER = REQUEST_FILE

    @property
    def dataset_dir(self) -> Path:
        return self.path.parent.parent

    def request(self) -> dict[str, Any]:
        return read_json_object(self.file(REQUEST_FILE))

    def result(self) -> dict[str, Any] | None:
        return read_json_object(self.file(RESULT_FILE)) or None

    def write_result(self, result: dict[str, Any]) -> None:
        atomic_write_json(self.file(RESULT_FILE), {**result, "audited_at": now_iso()})

    def actions(self) -> list[dict[str, Any]]:
        return read_jsonl(self.file(ACTIONS_FILE))

    def record_action(self, **fields: Any) -> None:
        append_jsonl(self.file(ACTIONS_FILE), {**fields, "at": now_iso()}, fsync=True)


def create_audit(dataset: str | Path, backbone: str = "mobilenet", **settings_: Any) -> AuditRecord:
    """A new queued audit of `dataset` (a name under data/ or a folder), not started."""
    root = dataset_path(dataset) if isinstance(dataset, str) else Path(dataset).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"no dataset folder {root}")
    path = make_record_dir(settings.safe_join(root, AUDITS_DIR))
    record = AuditRecord(path)
    atomic_write_json(record.file(REQUEST_FILE), {"dataset": str(root), "backbone": backbone, **settings_,
                                                  "requested_at": now_iso()})
    record.write_status(Status.QUEUED, created_at=now_iso())
    return record


def launch_audit(dataset: str | Path, backbone: str = "mobilenet", **settings_: Any) -> AuditRecord:
    """Create an audit and start it as a background job on this machine (it takes a slot, as training does)."""
    record = create_audit(dataset, backbone, **settings_)
    jobs.launch_or_fail(record, AUDIT_JOB, "local")
    return record


def list_audits(dataset: str | Path) -> list[AuditRecord]:
    """The dataset's audits, newest first."""
    root = dataset_path(dataset) if isinstance(dataset, str) else Path(dataset).resolve()
    folder = root / AUDITS_DIR
    if not folder.is_dir():
        return []
    return [AuditRecord(entry) for entry in sorted(folder.iterdir(), reverse=True)
            if entry.is_dir() and (entry / REQUEST_FILE).is_file()]


def latest_audit(dataset: str | Path) -> AuditRecord | None:
    audits = list_audits(dataset)
    return audits[0] if audits else None


# ---------------------------------------------------------------- acting on findings


def trash_finding(record: AuditRecord, relative: str, finding: str) -> str:
    """Move one audited image ("<class>/<file>") to the dataset's trash; returns where it is now."""
    class_name, _, file_name = relative.partition("/")
    moved = trash_images(record.dataset_dir, class_name, [file_name])[0]
    where = moved.relative_to(record.dataset_dir).as_posix()
    record.record_action(action="trash", image=relative, now=where, finding=finding)
    return where


def restore_finding(record: AuditRecord, trashed: str) -> str:
    """Move an image the audit's actions trashed (its place in the trash, "class/file") back; where it is now."""
    in_trash = trashed.split("/", 1)[1] if trashed.startswith(".trash/") else trashed
    restored = restore_images(record.dataset_dir, [in_trash])[0]
    where = restored.relative_to(record.dataset_dir).as_posix()
    record.record_action(action="restore", image=trashed, now=where)
    return where


def move_finding(record: AuditRecord, relative: str, to_class: str, finding: str) -> str:
    """Move one audited image to another class folder (its label was wrong); returns where it is now."""
    moved = move_image(record.dataset_dir, relative, to_class)
    where = moved.relative_to(record.dataset_dir).as_posix()
    record.record_action(action="move", image=relative, now=where, to_class=to_class, finding=finding)
    return where
