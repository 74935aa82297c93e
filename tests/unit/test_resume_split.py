"""A resumed run trains and validates on exactly the split and classes it recorded at launch."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from carviz.core.config import TrainConfig
from carviz.core.store import Run, Status, create_run
from carviz.data.datasets import generate_demo_dataset
from carviz.ml import train
from carviz.ml.train_data import DatasetChanged
from carviz.views.run_notes import resume_line

TINY = TrainConfig(name="tiny", dataset="demo", backbone="small_cnn", weights="none", image_size=32, epochs=3,
                   batch_size=16, learning_rate=1e-3, precision="float32", feature_cache=False)


class StopAfterFirstEpoch(keras.callbacks.Callback):
    def __init__(self, run: Run) -> None:
        super().__init__()
        self.run = run

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.run.request_stop()  # noticed at the next epoch's start


@pytest.fixture
def stopped_run(carviz_home: Path) -> Run:
    generate_demo_dataset(carviz_home / "data" / "demo", per_class=10, image_size=48)
    run = create_run(TINY)
    assert train.train(run, extra_callbacks=[StopAfterFirstEpoch(run)]) == Status.STOPPED
    assert [row["epoch"] for row in run.metrics()] == [1]
    run.clear_stop_request()
    return run


def resume_in_process(run: Run, accept: bool = False) -> Status:
    run.request_resume(accept_dataset_changes=accept)
    try:
        return train.train(run)
    except DatasetChanged:
        return run.status()


def test_an_unchanged_dataset_resumes_on_the_same_split(stopped_run: Run) -> None:
    split, classes = stopped_run.split(), stopped_run.classes()
    assert resume_in_process(stopped_run) == Status.SUCCEEDED
    assert stopped_run.split() == split and stopped_run.classes() == classes
    assert [row["epoch"] for row in stopped_run.metrics()] == [1, 2, 3]
    assert resume_line(stopped_run.run_info()) is None


def test_a_removed_image_is_refused_then_skipped_when_accepted(stopped_run: Run, carviz_home: Path) -> None:
    split = stopped_run.split()
    removed = split["train_paths"][0]
    (carviz_home / "data" / "demo" / removed).unlink()
    assert resume_in_process(stopped_run) == Status.FAILED
    state = stopped_run.state()
    assert state.error.startswith("DatasetChanged") and "1 image(s) gone" in state.error and removed in state.error
    assert "Resume refused" in resume_line(stopped_run.run_info())

    assert resume_in_process(stopped_run, accept=True) == Status.SUCCEEDED
    assert stopped_run.split() == split  # the record is what was recorded at launch, never rewritten
    info = stopped_run.info()
    assert info["train_images"] == len(split["train_paths"]) - 1 and info["val_images"] == len(split["val_paths"])
    assert info["resumes"][-1]["gone"] == 1 and info["resumes"][-1]["accepted"] is True
    assert "1 image gone (skipped)" in resume_line(stopped_run.run_info())
    assert [row["epoch"] for row in stopped_run.metrics()] == [1, 2, 3]


def test_new_images_are_not_added_and_a_renamed_class_is_refused(stopped_run: Run, carviz_home: Path) -> None:
    demo = carviz_home / "data" / "demo"
    split, classes = stopped_run.split(), stopped_run.classes()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(
        demo / "bus" / "brand-new.jpg")
    (demo / "bus").rename(demo / "coach")  # every label index would shift if the run re-split
    assert resume_in_process(stopped_run) == Status.FAILED
    assert "classes" in stopped_run.state().error
    assert resume_in_process(stopped_run, accept=True) == Status.SUCCEEDED
    assert stopped_run.classes() == classes and stopped_run.split() == split
    last = stopped_run.info()["resumes"][-1]
    assert last["classes_changed"] and last["new_ignored"] == sum(1 for _ in (demo / "coach").iterdir())
    bus_images = sum(1 for path in split["train_paths"] + split["val_paths"] if path.startswith("bus/"))
    assert last["gone"] == bus_images
