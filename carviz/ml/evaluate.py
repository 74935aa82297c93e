"""Evaluate a run on its validation split: confusion matrix, per-class accuracy, misclassified images."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from carviz.core import settings
from carviz.core.store import Run

MAX_LISTED_MISSING = 10


@dataclass(frozen=True)
class Misclassified:
    """A validation image the model got wrong."""

    path: Path
    true: str
    predicted: str
    confidence: float  # probability of the predicted class
    true_probability: float


@dataclass(frozen=True)
class Evaluation:
    """A run's model on its validation split. confusion: rows = true class, columns = predicted."""

    run_id: str
    classes: list[str]
    confusion: np.ndarray
    accuracy: float
    per_class_accuracy: np.ndarray  # NaN for a class without validation images
    class_counts: np.ndarray
    misclassified: list[Misclassified] = field(default_factory=list)
    images: int = 0

    def per_class_rows(self) -> list[dict[str, Any]]:
        """A table of per-class results: images, correct, accuracy, most frequent wrong prediction."""
        rows = []
        for index, name in enumerate(self.classes):
            wrong = self.confusion[index].copy()
            wrong[index] = 0
            confused = self.classes[int(wrong.argmax())] if wrong.sum() else ""
            accuracy = self.per_class_accuracy[index]
            rows.append({
                "class": name,
                "images": int(self.class_counts[index]),
                "correct": int(self.confusion[index, index]),
                "accuracy": None if np.isnan(accuracy) else float(accuracy),
                "most_confused_with": confused,
            })
        return rows


def validation_files(run: Run) -> tuple[Path, list[str], list[Path], list[int]]:
    """(dataset root, classes, validation paths, labels) as the trainer recorded them in split.json."""
    from carviz.data.datasets import Split

    raw = run.split()
    if raw is None:
        raise FileNotFoundError(f"run {run.id} has no recorded split (it never got as far as splitting its data)")
    recorded = run.info().get("dataset_path")
    root = Path(recorded) if recorded else settings.resolve_dataset(str(run.config_dict().get("dataset", "")))
    if not root.is_dir():
        raise FileNotFoundError(f"run {run.id}: its dataset folder {root} is gone")
    split = Split.from_json_dict(raw, root)
    classes = run.classes() or split.classes
    return root, list(classes), split.val_paths, split.val_labels


def check_files(paths: list[Path]) -> None:
    """FileNotFoundError listing the files that are missing (the dataset changed since training)."""
    missing = [p for p in paths if not p.is_file()]
    if missing:
        listed = "\n".join(f"  {p}" for p in missing[:MAX_LISTED_MISSING])
        more = f"\n  … and {len(missing) - MAX_LISTED_MISSING} more" if len(missing) > MAX_LISTED_MISSING else ""
        raise FileNotFoundError(
            f"{len(missing)} of {len(paths)} validation images are missing (moved or deleted since training):\n"
            f"{listed}{more}"
        )


def confusion_matrix(true: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts, rows = true class, columns = predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(true, dtype=np.int64), np.asarray(predicted, dtype=np.int64)), 1)
    return matrix


def summarize_predictions(run_id: str, classes: list[str], paths: list[Path], labels: list[int],
                          probabilities: np.ndarray) -> Evaluation:
    """The Evaluation of given probabilities (N, classes) against the true labels."""
    labels_array = np.asarray(labels, dtype=np.int64)
    predicted = probabilities.argmax(axis=1) if len(probabilities) else np.zeros(0, dtype=np.int64)
    matrix = confusion_matrix(labels_array, predicted, len(classes))
    counts = matrix.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(counts > 0, np.diag(matrix) / np.maximum(counts, 1), np.nan)
    total = int(matrix.sum())
    wrong = [
        Misclassified(
            path=paths[i], true=classes[labels_array[i]], predicted=classes[predicted[i]],
            confidence=float(probabilities[i, predicted[i]]), true_probability=float(probabilities[i, labels_array[i]]),
        )
        for i in np.flatnonzero(predicted != labels_array)
    ]
    wrong.sort(key=lambda item: -item.confidence)  # the most confident mistakes first
    return Evaluation(
        run_id=run_id, classes=list(classes), confusion=matrix,
        accuracy=float(np.trace(matrix) / total) if total else float("nan"),
        per_class_accuracy=per_class, class_counts=counts, misclassified=wrong, images=total,
    )


def evaluate_run(run: Run, batch_size: int = 64, predictor: Any | None = None) -> Evaluation:
    """Run the model over the run's validation split through the training input pipeline.

    predictor: a carviz.ml.predict.Predictor already loaded for this run (else one is loaded here).
    Raises FileNotFoundError (listing them) when validation images are gone.
    """
    from carviz.data.datasets import make_pipeline
    from carviz.ml.predict import load_model

    _, classes, paths, labels = validation_files(run)
    if not paths:
        raise ValueError(f"run {run.id} has an empty validation split")
    check_files(paths)
    predictor = predictor or load_model(run)
    if list(predictor.classes) != list(classes):
        raise ValueError(f"run {run.id}: the model's classes {predictor.classes} differ from split.json's {classes}")
    # the same tf.data pipeline as training's validation data, so the images are decoded and resized identically
    dataset = make_pipeline(paths, labels, len(classes), predictor.image_size, batch_size, training=False, cache=False)
    try:
        outputs = [predictor.predict_batch(np.asarray(images), batch_size) for images, _ in dataset]
    except Exception as exc:  # tf.errors.InvalidArgumentError etc.: a file changed into something undecodable
        raise ValueError(f"run {run.id}: a validation image could not be decoded: {exc}") from exc
    probabilities = np.concatenate(outputs) if outputs else np.zeros((0, len(classes)), dtype=np.float32)
    return summarize_predictions(run.id, list(classes), list(paths), list(labels), probabilities)
