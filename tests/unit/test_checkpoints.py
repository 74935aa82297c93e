"""Checkpoints as arrays (ml/checkpoints.py): the whole state comes back, a wrong model is refused, and a run
checkpointed in the older whole-model form (.keras, .weights.h5 best weights) still resumes."""

from __future__ import annotations

import threading
from pathlib import Path

import keras
import numpy as np
import pytest

from carviz.core import store as runs
from carviz.core.config import TrainConfig
from carviz.data import datasets
from carviz.ml import checkpoints, train
from carviz.ml.model import build_model

TINY = TrainConfig(name="tiny", dataset="demo", backbone="small_cnn", weights="none", image_size=32, epochs=3,
                   batch_size=8, learning_rate=1e-3, precision="float32")


def _trained(optimizer: keras.optimizers.Optimizer) -> keras.Model:
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.BatchNormalization(),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer=optimizer, loss="categorical_crossentropy")
    x = np.random.default_rng(0).normal(size=(16, 3)).astype("float32")
    model.fit(x, keras.utils.to_categorical(np.arange(16) % 2, 2), epochs=2, verbose=0)
    return model


@pytest.mark.parametrize("make_optimizer", [lambda: keras.optimizers.Adam(1e-2),
                                            lambda: keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(1e-2))],
                         ids=["adam", "loss-scale"])
def test_weights_and_optimizer_state_come_back(tmp_path: Path, make_optimizer) -> None:
    model = _trained(make_optimizer())
    checkpoints.save(tmp_path / "last.npz", model)
    fresh = keras.models.clone_model(model)
    fresh.compile(optimizer=make_optimizer(), loss="categorical_crossentropy")
    checkpoints.restore(fresh, tmp_path / "last.npz")
    for saved, restored in zip(model.weights + model.optimizer.variables, fresh.weights + fresh.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(saved), np.asarray(restored))
    assert int(fresh.optimizer.iterations.numpy()) == 2


def test_a_checkpoint_of_another_model_is_refused(tmp_path: Path) -> None:
    checkpoints.save(tmp_path / "last.npz", _trained(keras.optimizers.Adam()))
    other = keras.Sequential([keras.Input((3,)), keras.layers.Dense(5)])
    other.compile(optimizer="adam", loss="mse")
    with pytest.raises(ValueError, match="does not fit this model"):
        checkpoints.restore(other, tmp_path / "last.npz")
    (tmp_path / "torn.npz").write_bytes(b"PK\x03\x04 not a whole file")
    with pytest.raises(ValueError, match="unreadable"):
        checkpoints.restore(other, tmp_path / "torn.npz")


def test_a_run_checkpointed_as_a_whole_keras_model_resumes(carviz_home: Path) -> None:
    datasets.generate_demo_dataset(carviz_home / "data" / "demo", per_class=8, image_size=32)
    run = runs.create_run(TINY)
    stop = threading.Event()

    class StopAfterFirst(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            stop.set()

    assert train.train(run, stop_flag=stop, extra_callbacks=[StopAfterFirst()]) == runs.Status.STOPPED
    # Rewrite its checkpoint as carviz wrote them before: the whole model in last.keras, best weights as .h5.
    folder = run.file("checkpoint")
    model, _ = build_model(TINY, num_classes=4)
    checkpoints.restore(model, folder / "last.npz")
    model.save(folder / "last.keras")
    best = next(folder.glob("best-*.weights.npz"))
    checkpoints.load_weights(model, best)
    model.save_weights(folder / best.name.replace(".npz", ".h5"))
    for path in (folder / "last.npz", best):
        path.unlink()
    state = runs.read_json_object(folder / "state.json")
    state.pop("file")
    runs.atomic_write_json(folder / "state.json", state)
    assert run.checkpoint()[0].name == "last.keras" and run.checkpoint_best()[0].suffix == ".h5"

    assert train.train(run) == runs.Status.SUCCEEDED, run.log_tail()
    assert [row["epoch"] for row in run.metrics()] == [1, 2, 3]
    assert run.checkpoint()[0].name == "last.npz" and not (folder / "last.keras").exists()
    assert run.info()["attempts"][1]["initial_epoch"] == 1
