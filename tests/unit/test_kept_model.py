"""The model a run keeps is its best-validation epoch: restored before the final evaluation and saved, across a stop
and resume, and on cached features too; summaries, labels and the CLI say which epoch that is."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import keras
import numpy as np
import pytest

from carviz.core import store as runs
from carviz.core.config import TrainConfig
from carviz.data import datasets
from carviz.ml import pipelines, train
from carviz.ml.callbacks import KeepBest, WholeModelCheckpoint

pytestmark = pytest.mark.slow  # trains real models: scheduled first (tests/conftest.py)

SMALL = TrainConfig(dataset="demo", backbone="small_cnn", weights="none", image_size=32, epochs=3, batch_size=8,
                    learning_rate=1e-3, head="recommended", precision="float32", train_batchnorm=False)
CACHED = SMALL.replace(backbone="mobilenet", alpha=0.25, freeze=71)  # trains the remainder on cached features


@pytest.fixture
def demo_home(carviz_home: Path) -> Path:
    datasets.generate_demo_dataset(carviz_home / "data" / "demo", per_class=8, image_size=48)
    return carviz_home


class FlatterAfterFirst(keras.callbacks.Callback):
    """From the second epoch on: learning rate 0, and the output layer's logits halved at each epoch's start. Every
    epoch then predicts the same classes (equal val accuracy, so the first epoch is the best: the first of equals)
    with a different val loss, which only the first epoch's weights give."""

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if epoch >= 1:
            self.model.optimizer.learning_rate.assign(0.0)
            output = self.model.get_layer("predictions")
            output.set_weights([w * 0.5 for w in output.get_weights()])


def _train(config: TrainConfig, stop_after_epoch: int | None = None) -> runs.Run:
    run = runs.create_run(config)
    stop_flag = threading.Event()
    callbacks: list = [FlatterAfterFirst()]
    if stop_after_epoch is not None:
        class StopAfter(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                if epoch + 1 == stop_after_epoch:
                    stop_flag.set()  # StopRequested at the next epoch's start
        callbacks.append(StopAfter())
    status = train.train(run, stop_flag, extra_callbacks=callbacks)
    assert status == (runs.Status.STOPPED if stop_after_epoch else runs.Status.SUCCEEDED), run.log_tail()
    return run


def _evaluate_saved_model(run: runs.Run) -> tuple[float, float]:
    """(loss, accuracy) of model.keras on the run's recorded validation split, on the images."""
    split = datasets.Split.from_json_dict(run.split(), Path(run.info()["dataset_path"]))
    config = run.config()
    data = pipelines.make_pipeline(split.val_paths, split.val_labels, len(split.classes), config.image_size,
                                  config.batch_size, training=False)
    loss, accuracy = keras.saving.load_model(run.model_path()).evaluate(data, verbose=0)
    return float(loss), float(accuracy)


def _check_kept_first_epoch(run: runs.Run) -> None:
    metrics = run.metrics()
    accuracies = [row["val_accuracy"] for row in metrics]
    losses = [row["val_loss"] for row in metrics]
    assert [row["epoch"] for row in metrics] == [1, 2, 3]
    assert len(set(accuracies)) == 1 and len({round(v, 6) for v in losses}) == 3  # the set-up did what it says
    kept = int(np.argmax(accuracies)) + 1  # the first of equals
    evaluation = run.evaluation()
    assert evaluation["kept_epoch"] == kept == 1 and evaluation["kept"] == "best val"
    assert evaluation["last_epoch"] == 3 and "highest val_accuracy" in evaluation["kept_reason"]
    assert run.info()["kept"]["epoch"] == 1 and run.info()["kept"]["rule"] == "best val"
    assert evaluation["accuracy"] == pytest.approx(accuracies[kept - 1], abs=1e-6)
    assert evaluation["loss"] == pytest.approx(losses[kept - 1], abs=1e-5)
    loss, accuracy = _evaluate_saved_model(run)  # the saved model is the kept epoch's, not the last one
    assert accuracy == pytest.approx(accuracies[kept - 1], abs=1e-6)
    assert loss == pytest.approx(losses[kept - 1], abs=1e-5) and abs(loss - losses[-1]) > 1e-4
    row = runs.summarize(run)
    assert (row["kept_epoch"], row["kept_rule"]) == (1, "best val")
    assert row["kept_val_accuracy"] == pytest.approx(accuracies[0], abs=1e-6)
    assert runs.kept_label(row) == "kept: epoch 1 (best val)"
    assert [p.name for p in (run.path / "checkpoint").glob("best-*")] == ["best-0001.weights.npz"]


@pytest.mark.parametrize("config", [SMALL, CACHED], ids=["images", "feature cache"])
def test_the_saved_model_is_the_best_validation_epoch(demo_home: Path, config: TrainConfig) -> None:
    run = _train(config)
    assert run.info()["feature_cache"]["used"] is (config is CACHED)
    _check_kept_first_epoch(run)


@pytest.mark.parametrize("config", [SMALL, CACHED], ids=["images", "feature cache"])
def test_a_resumed_run_still_keeps_its_best_epoch_from_before_the_stop(demo_home: Path, config: TrainConfig) -> None:
    run = _train(config, stop_after_epoch=2)
    state = json.loads((run.path / "checkpoint" / "state.json").read_text())
    assert (state["epochs_done"], state["best_epoch"]) == (2, 1)
    assert runs.kept_label(runs.summarize(run)) == "best val: epoch 1 (stopped: no model saved)"
    assert train.train(run, extra_callbacks=[FlatterAfterFirst()]) == runs.Status.SUCCEEDED, run.log_tail()
    _check_kept_first_epoch(run)


def test_keep_best_keeps_the_first_of_the_highest_and_the_checkpoint_records_it(carviz_home: Path) -> None:
    run = runs.create_run(SMALL)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="categorical_crossentropy", metrics=["accuracy"])
    scripted = [0.5, 0.9, 0.7, 0.9]
    seen: list[list[np.ndarray]] = []

    class Script(keras.callbacks.Callback):  # before KeepBest: it judges the scripted value
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logs["val_accuracy"] = scripted[epoch]
            seen.append([np.array(w) for w in self.model.get_weights()])

    keep = KeepBest(run)
    x = np.random.default_rng(0).normal(size=(16, 3)).astype("float32")
    y = keras.utils.to_categorical(np.arange(16) % 2, 2)
    model.fit(x, y, validation_data=(x, y), epochs=4, verbose=0,
              callbacks=[Script(), keep, WholeModelCheckpoint(run, 1, 4, keep_best=keep)])
    assert keep.best == (2, 0.9)
    assert not all(np.allclose(a, b) for a, b in zip(model.get_weights(), seen[1]))
    assert keep.restore() == 2
    assert all(np.allclose(a, b) for a, b in zip(model.get_weights(), seen[1]))
    path, epoch, value = run.checkpoint_best()
    assert (path.name, epoch, value) == ("best-0002.weights.npz", 2, 0.9)
    assert [p.name for p in (run.path / "checkpoint").glob("best-*")] == ["best-0002.weights.npz"]
    # A resumed run that starts from this checkpoint keeps judging against its best so far, and restores it from
    # the file while no later epoch beat it.
    again = KeepBest(run, model, best=(2, 0.9))
    again.on_epoch_end(4, {"val_accuracy": 0.9})
    assert again.best == (2, 0.9)
    model.set_weights([np.zeros_like(w) for w in model.get_weights()])
    assert again.restore() == 2 and all(np.allclose(a, b) for a, b in zip(model.get_weights(), seen[1]))
    again.on_epoch_end(4, {"val_accuracy": 0.95})
    assert again.best == (5, 0.95) and not run.best_weights_path(5).is_file()  # in memory until a checkpoint
    again.save()
    assert run.best_weights_path(5).is_file()
    run.discard_best(after=2)  # what a resume from the epoch-2 checkpoint does first
    assert not run.best_weights_path(5).is_file() and run.best_weights_path(2).is_file()


# ---------------------------------------------------------------- summaries of hand-made records


def _record(run: runs.Run, accuracies: list[float], status: runs.Status, evaluation: dict | None = None) -> None:
    lines = [",".join(runs.METRIC_COLUMNS)]
    lines += [f"{e},1.0,0.5,{1 + e / 10},{a},0.001,2.0" for e, a in enumerate(accuracies, start=1)]
    run.file("metrics.csv").write_text("\n".join(lines) + "\n")
    run.write_status(status)
    runs.atomic_write_json(run.file("run.json"), {"model": {"backbone_layers": 9}, "classes": ["a", "b", "c", "d"]})
    if evaluation is not None:
        runs.atomic_write_json(run.file("evaluation.json"), evaluation)


def test_summaries_say_which_model_and_its_test_accuracy(carviz_home: Path) -> None:
    kept = runs.create_run(SMALL.replace(name="kept"))
    _record(kept, [0.5, 0.75, 0.6], runs.Status.SUCCEEDED,
            {"split": "validation", "images": 8, "loss": 0.9, "accuracy": 0.75, "kept_epoch": 2, "kept": "best val",
             "test": {"split": "test", "images": 10, "loss": 1.0, "accuracy": 0.7}})
    legacy = runs.create_run(SMALL.replace(name="legacy"))  # saved its last epoch, before the best was kept
    _record(legacy, [0.5, 0.75, 0.6], runs.Status.SUCCEEDED,
            {"split": "validation", "images": 8, "loss": 1.1, "accuracy": 0.6})
    running = runs.create_run(SMALL.replace(name="running"))
    _record(running, [0.5, 0.75], runs.Status.RUNNING)
    pruned = runs.create_run(SMALL.replace(name="pruned"))
    _record(pruned, [0.25], runs.Status.PRUNED)

    row = runs.summarize(kept)
    assert (row["kept_epoch"], row["kept_val_accuracy"], row["kept_rule"], row["test_accuracy"]) == (
        2, 0.75, "best val", 0.7)
    assert (row["backbone_layers"], row["num_classes"]) == (9, 4)
    assert runs.kept_label(row) == "kept: epoch 2 (best val)"
    row = runs.summarize(legacy)
    assert (row["kept_epoch"], row["kept_val_accuracy"], row["kept_rule"], row["test_accuracy"]) == (
        3, 0.6, "last", None)
    assert runs.kept_label(row) == "kept: epoch 3 (last)" and row["best_val_accuracy"] == 0.75
    row = {**runs.summarize(running), "status": "running"}  # no live process: the record alone says running
    assert runs.kept_label(row) == "kept: epoch 2 (best val so far)"
    assert runs.kept_label(runs.summarize(pruned)) == "best val: epoch 1 (pruned: no model saved)"
    assert runs.kept_label({"kept_epoch": None}) == ""


def test_cli_runs_and_show_say_the_kept_number(carviz_home: Path, capsys: pytest.CaptureFixture) -> None:
    from carviz import cli

    run = runs.create_run(SMALL.replace(name="kept"))
    _record(run, [0.5, 0.75, 0.6], runs.Status.SUCCEEDED,
            {"split": "validation", "images": 8, "loss": 0.9, "accuracy": 0.75, "kept_epoch": 2, "kept": "best val",
             "test": {"split": "test", "images": 10, "loss": 1.0, "accuracy": 0.7}})
    assert cli.main(["runs"]) == 0
    out = capsys.readouterr().out
    assert "val acc" in out.splitlines()[0] and "test" in out.splitlines()[0]
    assert "75.0 %" in out and "70.0 %" in out and "kept: epoch 2 (best val)" in out
    assert cli.main(["show", run.id]) == 0
    out = capsys.readouterr().out
    assert "kept: epoch 2 (best val) of 3" in out and "val accuracy 75.0 % on 8 images" in out
    assert "test accuracy 70.0 % on 10 images" in out
    assert cli.main(["runs", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["kept_epoch"] == 2
