"""An audit's record and acting on its findings: move to another class and back, trash and restore, every action
recorded and nothing lost; class weights and the imbalance note."""

from __future__ import annotations

from pathlib import Path

import pytest

from carviz.data import audit_record
from carviz.data.audit import imbalance_note
from carviz.data.datasets import generate_demo_dataset
from carviz.ml.train_data import class_weights
from carviz.views.audit_view import actions_by_image, described, headline


@pytest.fixture
def dataset(carviz_home: Path) -> Path:
    return generate_demo_dataset(carviz_home / "data" / "demo", per_class=3, image_size=32)


def test_a_finding_moves_to_its_class_and_back_and_every_action_is_recorded(dataset: Path) -> None:
    record = audit_record.create_audit(dataset, "mobilenet")
    assert audit_record.latest_audit("demo") == record and record.request()["backbone"] == "mobilenet"
    image = sorted((dataset / "bus").iterdir())[0].relative_to(dataset).as_posix()
    content = (dataset / image).read_bytes()

    moved = audit_record.move_finding(record, image, "suv", finding="label error")
    assert moved == f"suv/{Path(image).name}" and (dataset / moved).read_bytes() == content
    assert not (dataset / image).exists()
    done = actions_by_image(record.actions())[image]
    assert (done.action, done.now, done.undo) == ("move", moved, "move back")
    assert described(done) == f"moved to {moved}"

    back = audit_record.move_finding(record, moved, "bus", finding="undo")
    assert back == image and actions_by_image(record.actions())[image].undo == ""  # where it was audited

    trashed = audit_record.trash_finding(record, image, finding="outlier")
    assert trashed.startswith(".trash/bus/") and not (dataset / image).exists()
    assert actions_by_image(record.actions())[image].undo == "restore"
    assert audit_record.restore_finding(record, trashed) == image and (dataset / image).read_bytes() == content
    assert [row["action"] for row in record.actions()] == ["move", "move", "trash", "restore"]

    with pytest.raises(ValueError, match="already"):
        audit_record.move_finding(record, image, "bus", finding="label error")
    with pytest.raises(FileNotFoundError):
        audit_record.move_finding(record, "bus/missing.jpg", "suv", finding="label error")
    with pytest.raises(ValueError):
        audit_record.move_finding(record, image, "../outside", finding="label error")  # never leaves the dataset


def test_the_headline_counts_and_names_leakage() -> None:
    result = {"images": 946, "counts": {"suspected_label_errors": 31, "near_duplicate_pairs": 4, "leaking_pairs": 2,
                                        "outliers": 3}}
    assert headline(result) == ("946 images: 31 suspected label errors · 4 near-duplicate pairs (2 across the split: "
                                "leakage) · 3 outliers")


def test_class_weights_balance_the_classes_and_health_says_when_they_matter() -> None:
    weights = class_weights("balanced", [0, 0, 0, 1], 3)
    assert weights == {0: pytest.approx(4 / 9), 1: pytest.approx(4 / 3), 2: 1.0}  # class 2: no training images
    assert class_weights("none", [0, 1], 2) is None
    assert imbalance_note({"a": 40, "b": 35}) == ""
    note = imbalance_note({"a": 40, "b": 10, "c": 0})
    assert "a has 40 images, b 10 (4.0x)" in note and "--class-weight balanced" in note


@pytest.mark.parametrize("stopped", [False, True])
def test_a_finished_crawl_starts_an_audit_when_asked(dataset: Path, monkeypatch: pytest.MonkeyPatch,
                                                     stopped: bool) -> None:
    import threading
    from types import SimpleNamespace

    from carviz.core.jobs import JobContext
    from carviz.data.crawl import job
    from carviz.data.crawl.crawler import CrawlResult
    from carviz.data.crawl.record import ClassProgress, CrawlRecord
    from carviz.data.crawl.spec import CrawlSpec

    record = CrawlRecord.for_dataset(dataset)
    record.path.mkdir()
    record.write_spec(CrawlSpec(classes=({"name": "bus", "queries": ["bus"], "target": 1},), audit_when_done=True))
    monkeypatch.setattr(job, "crawl", lambda *args, **kwargs: CrawlResult(stopped, {"bus": ClassProgress(1, 1)}, 1))
    started: list[Path] = []
    monkeypatch.setattr(audit_record, "launch_audit",
                        lambda folder, *args, **kwargs: started.append(folder) or SimpleNamespace(id="a1"))
    outcome = job.crawl_body(JobContext(record, threading.Event()))
    assert started == ([] if stopped else [record.dataset_dir])  # a stopped crawl is not audited
    assert outcome.fields.get("audit") == (None if stopped else "a1")
