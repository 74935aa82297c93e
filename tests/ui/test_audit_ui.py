"""The Data page's 'Check this dataset' tab under AppTest: it starts an audit, shows a recorded one's findings, and
moves an image to the class it looks like and back (recorded with the audit, the file never lost)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from streamlit.testing.v1 import AppTest
from test_train_page import APP, tiny_demo  # tests/ui is on sys.path (pytest's rootdir-less import)

from carviz.core.jobs import Status
from carviz.data import audit, audit_record
from carviz.data.datasets import scan_dataset


def recorded_audit(root: Path) -> tuple[audit_record.AuditRecord, str, str]:
    """An audit of the dataset whose findings are made from hand-made embeddings (the analysis is real; no
    network is needed): one image's embedding sits in another class's cluster. (its path, the class it looks like)"""
    scan = scan_dataset(root)
    paths, labels = scan.labelled_files()
    relative = [Path(p).relative_to(root).as_posix() for p in paths]
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(len(scan.classes), 16)) * 3
    shown = list(labels)
    shown[0] = (labels[0] + 1) % len(scan.classes)  # image 0 looks like the next class
    embeddings = centres[shown] + rng.normal(size=(len(labels), 16)) * 0.3
    result = audit.audit(embeddings, labels, relative, scan.classes, duplicate_threshold=0.999)
    result.settings = {"backbone": "mobilenet", "seconds": 1.0}
    record = audit_record.create_audit(root, "mobilenet")
    record.write_result(result.to_dict())
    record.write_status(Status.SUCCEEDED)
    return record, relative[0], scan.classes[shown[0]]


def open_check(at: AppTest) -> AppTest:
    at.session_state["aug_show"] = False
    return at.switch_page("app_pages/data.py").run()


def test_a_recorded_audit_shows_its_findings_and_a_move_is_recorded_and_undone(carviz_home: Path) -> None:
    root = tiny_demo(carviz_home, per_class=6)
    record, image, looks_like = recorded_audit(root)
    at = open_check(AppTest.from_file(APP, default_timeout=60))
    assert not at.exception
    assert any("suspected label errors" in md.value for md in at.markdown)
    move = at.button(key=f"audit_issue_{image}_move")
    assert move.label == f"Move to {looks_like}"
    move.click().run()
    assert not at.exception
    name = Path(image).name
    assert (root / looks_like / name).is_file() and not (root / image).exists()
    assert [row["action"] for row in record.actions()] == ["move"]
    assert any(f"Moved {image}" in s.value for s in at.success)

    at.button(key=f"audit_issue_{image}_back").click().run()
    assert not at.exception and (root / image).is_file()
    assert [row["action"] for row in record.actions()] == ["move", "move"]
    at.button(key=f"audit_issue_{image}_trash").click().run()
    assert not (root / image).exists() and any((root / ".trash").rglob(name))
    at.button(key=f"audit_issue_{image}_restore").click().run()
    assert (root / image).is_file() and [row["action"] for row in record.actions()][-1] == "restore"


def test_check_this_dataset_starts_an_audit_job(carviz_home: Path, monkeypatch) -> None:
    root = tiny_demo(carviz_home, per_class=3)
    started = []
    monkeypatch.setattr(audit_record, "launch_audit", lambda dataset, backbone: started.append((dataset, backbone)))
    at = open_check(AppTest.from_file(APP, default_timeout=60))
    assert not at.exception and "No dataset" not in "".join(i.value for i in at.info)
    at.selectbox(key="audit_backbone").select("mobilenetv2")
    at.button(key="audit_start").click().run()
    assert started == [(root, "mobilenetv2")]
