"""run.json's schema (core/run_info.py): versioned writes, older and damaged records read forgivingly."""

from __future__ import annotations

from pathlib import Path

import pytest

from carviz.core import store as runs
from carviz.core.config import TrainConfig
from carviz.core.run_info import VERSION, Attempt, Kept, ModelSummary, RunInfo


def test_a_record_written_before_versions_reads_as_version_1_with_its_fields() -> None:
    old = {"device": {"kind": "cpu"}, "dataset_fingerprint": "abc", "classes": ["a", "b"], "train_images": 10,
           "attempts": [{"started_at": "2026-01-01T00:00:00+00:00", "initial_epoch": 0, "backend": "local"}],
           "model": {"backbone_layers": 86, "freeze_index": 73, "first_trainable": "conv_pw_11_relu"},
           "kept": {"epoch": 3, "rule": "best val", "last_epoch": 5, "reason": "…"},
           "parent": {"run_id": "r1", "model_sha256": "f00"}}
    info = RunInfo.read(old)
    assert info.version == 1 and info.classes == ["a", "b"] and info.train_images == 10
    assert info.fingerprint_at_launch == "abc"  # no launch_fingerprint yet: the last one stands for it
    assert info.attempts == [Attempt("2026-01-01T00:00:00+00:00", 0, "local")]
    assert info.model == ModelSummary(86, 73, "conv_pw_11_relu") and info.kept == Kept(3, "best val", 5, "…")
    assert info.parent_model == "f00"


def test_wrong_types_read_as_defaults_never_as_errors() -> None:
    info = RunInfo.read({"classes": "a,b", "train_images": True, "attempts": [1, {"initial_epoch": "2"}],
                         "model": ["x"], "kept": None, "resumes": {"gone": 1}, "device": [], "version": "2"})
    assert info == RunInfo(attempts=[Attempt()])
    assert RunInfo.read("not an object") == RunInfo()  # type: ignore[arg-type]


def test_the_job_writes_versioned_fields_of_the_schema_only(carviz_home: Path) -> None:
    run = runs.create_run(TrainConfig(dataset="demo", backbone="small_cnn", weights="none"))
    run.update_info(kept=Kept(2, "best val", 4, "why"), attempts=[Attempt(initial_epoch=1)])
    assert run.info()["version"] == VERSION and run.info()["kept"]["epoch"] == 2
    assert run.run_info().attempts[0].initial_epoch == 1
    with pytest.raises(ValueError, match="no field colour"):
        run.update_info(colour="blue")
