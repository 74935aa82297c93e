"""The model a run keeps: its best-validation epoch (the best so far when it resumes; its weights restored after
fit()), evaluated on validation and, once, on the test split, and calibrated (a temperature fitted on validation)."""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from carviz.core.config import TrainConfig
from carviz.core.run_info import Kept
from carviz.core.store import Run
from carviz.ml import checkpoints, pipelines

log = logging.getLogger("carviz.ml.train")


def best_so_far(run: Run, model: Any, initial_epoch: int) -> tuple[int, float] | None:
    """The best epoch up to the checkpoint this run resumes from, as (epoch, val_accuracy); None for a first start.
    Best-weights files of epochs after the checkpoint (an attempt that stopped before its next checkpoint) go: those
    epochs are trained again. A checkpoint that recorded no best (made before carviz kept the best epoch) offers its
    own epoch, the only earlier weights there are."""
    run.discard_best(after=initial_epoch)
    if initial_epoch == 0:
        return None
    found = run.checkpoint_best()
    if found is not None and found[1] <= initial_epoch:
        return found[1], found[2]
    value = next((row.get("val_accuracy") for row in run.metrics() if row.get("epoch") == initial_epoch), None)
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    weights = model.get_weights()
    run.save_best(lambda path: checkpoints.write(path, weights), initial_epoch)
    return initial_epoch, float(value)


def restore_kept(run: Run, keep_best: Any) -> dict[str, Any]:
    """Restore the kept epoch's weights into the whole model and say which epoch that is and why: the fields for
    evaluation.json, also recorded in run.json under "kept"."""
    last = max((row["epoch"] for row in run.metrics() if isinstance(row.get("epoch"), int)), default=None)
    epoch = keep_best.restore()
    if epoch is not None:
        kept = Kept(epoch, "best val", last,
                    f"epoch {epoch} had the highest val_accuracy ({keep_best.best_value:.4f}; the first of equals) "
                    f"of epochs 1-{last}; its weights were restored before this evaluation and saved as model.keras")
    else:
        kept = Kept(last, "last", last, "no epoch recorded a val_accuracy: the last epoch's weights are kept")
    run.update_info(kept=kept)
    log.info("kept epoch %s (%s) of %s", kept.epoch, kept.rule, last)
    return {"kept_epoch": kept.epoch, "kept": kept.rule, "last_epoch": kept.last_epoch, "kept_reason": kept.reason}


def _loss_and_accuracy(probabilities: np.ndarray, labels: list[int]) -> tuple[float, float]:
    """Categorical cross-entropy (clipped as Keras clips it) and accuracy of probabilities against labels."""
    true = probabilities[np.arange(len(labels)), np.asarray(labels, dtype=np.int64)]
    return float(-np.mean(np.log(np.clip(true, 1e-7, 1.0)))), float(np.mean(probabilities.argmax(axis=1) == labels))


def evaluate_kept(run: Run, config: TrainConfig, split: Any, model: Any, fit_model: Any, val_data: Any,
                  cached_test: Any, kept: dict[str, Any]) -> dict[str, Any]:
    """The kept model's evaluation (validation, and the test split when there is one: looked at once, never used to
    choose anything), and its calibration: a temperature fitted on validation (calibration.json, with the expected
    calibration error before and after on both splits). A cached run evaluates on the frozen part's cached output
    of the images, which is exact, so the test split costs no second pass over its images."""
    from carviz.core.calibration import calibrate

    val_loss, val_accuracy = fit_model.evaluate(val_data, verbose=0)
    val_probabilities = np.asarray(fit_model.predict(val_data, verbose=0), dtype=np.float64)
    evaluation: dict[str, Any] = {"split": "validation", "images": len(split.val_paths), "loss": float(val_loss),
                                  "accuracy": float(val_accuracy), **kept}
    test_probabilities = None
    if split.test_paths:
        if cached_test is not None:
            test_probabilities = fit_model.predict(cached_test, verbose=0)
            computed_on = "cached features"
        else:
            images = pipelines.make_pipeline(split.test_paths, split.test_labels, len(split.classes),
                                             config.image_size, config.batch_size, training=False, cache=False)
            test_probabilities = model.predict(images, verbose=0)  # the whole model on the images
            computed_on = "images"
        test_probabilities = np.asarray(test_probabilities, dtype=np.float64)
        test_loss, test_accuracy = _loss_and_accuracy(test_probabilities, split.test_labels)
        evaluation["test"] = {"split": "test", "images": len(split.test_paths), "loss": test_loss,
                              "accuracy": test_accuracy, "computed_on": computed_on}
        evaluation["test_accuracy"] = test_accuracy
        log.info("test split: accuracy %.4f on %d images", test_accuracy, len(split.test_paths))
    calibration = calibrate(val_probabilities, np.asarray(split.val_labels), test_probabilities,
                            np.asarray(split.test_labels) if split.test_paths else None)
    run.write_calibration(calibration.to_dict())
    log.info("calibration: temperature %.3f, validation ECE %.4f -> %.4f", calibration.temperature,
             calibration.ece_validation, calibration.ece_validation_scaled)
    return evaluation
