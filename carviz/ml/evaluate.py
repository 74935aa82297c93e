"""Evaluate a run on its validation or test split, or on another dataset folder with the same class names:
confusion matrix, per-class accuracy, misclassified images."""

from __future__ import annotations

import dataclasses
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from carviz.core import settings
from carviz.core.store import Run

MAX_LISTED_MISSING = 10
SPLITS = ("validation", "test")


@dataclass(frozen=True)
class Misclassified:
    """An evaluated image the model got wrong."""

    path: Path
    true: str
    predicted: str
    confidence: float  # probability of the predicted class
    true_probability: float


@dataclass(frozen=True)
class Evaluation:
    """A run's model on a set of images (its validation or test split, or another dataset folder).
    confusion: rows = true class, columns = predicted."""

    run_id: str
    classes: list[str]
    confusion: np.ndarray
    accuracy: float
    per_class_accuracy: np.ndarray  # NaN for a class without validation images
    class_counts: np.ndarray
    misclassified: list[Misclassified] = field(default_factory=list)
    images: int = 0
    split: str = "validation"  # "validation", "test", or "dataset" (another folder)
    dataset: str = ""  # the folder the images came from
    absent_classes: list[str] = field(default_factory=list)  # the run's classes the folder has no images of
    skipped_classes: list[str] = field(default_factory=list)  # the folder's classes the run does not know (skipped)
    # every image, in order: its path, true label, the model's probabilities (scaled by the run's temperature, as
    # predictions are) and the model's own (unscaled: what calibration is measured and fitted on)
    paths: list[Path] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    probabilities: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    raw_probabilities: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    temperature: float = 1.0

    @property
    def predicted(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1) if len(self.probabilities) else np.zeros(0, dtype=np.int64)

    def cell(self, true: int, predicted: int) -> list[int]:
        """Indices of the images of class `true` the model predicted as `predicted` (one confusion-matrix cell)."""
        labels = np.asarray(self.labels, dtype=np.int64)
        return [int(i) for i in np.flatnonzero((labels == true) & (self.predicted == predicted))]

    def reliability(self, calibrated: bool = False) -> Any:
        """Confidence against accuracy (core/calibration.Reliability) of the model's own probabilities, or of the
        temperature-scaled ones."""
        from carviz.core.calibration import reliability

        return reliability(self.probabilities if calibrated else self.raw_probabilities, np.asarray(self.labels))

    def to_json_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (what `carviz evaluate --json` prints)."""
        return {
            "run": self.run_id, "split": self.split, "dataset": self.dataset, "images": self.images,
            "accuracy": None if np.isnan(self.accuracy) else self.accuracy, "classes": list(self.classes),
            "confusion": self.confusion.tolist(), "per_class": self.per_class_rows(),
            "absent_classes": list(self.absent_classes), "skipped_classes": list(self.skipped_classes),
            "misclassified": [{"path": str(m.path), "true": m.true, "predicted": m.predicted,
                               "confidence": m.confidence, "true_probability": m.true_probability}
                              for m in self.misclassified],
            "calibration": self.calibration_summary(),
            "predictions": [{"path": str(path), "true": self.classes[label],
                             "predicted": self.classes[int(row.argmax())], "confidence": float(row.max())}
                            for path, label, row in zip(self.paths, self.labels, self.probabilities)],
        }

    def calibration_summary(self) -> dict[str, Any]:
        """The run's temperature and the expected calibration error without and with it, on these images."""
        if not len(self.labels):
            return {"temperature": self.temperature}
        return {"temperature": self.temperature, "ece": self.reliability().ece,
                "ece_scaled": self.reliability(calibrated=True).ece}

    def per_class_rows(self) -> list[dict[str, Any]]:
        """A table of per-class results: images, correct, accuracy (= recall), precision (of the images predicted
        as the class, the share that are), F1, most frequent wrong prediction. None where undefined (no images of
        the class, or none predicted as it)."""
        rows = []
        predicted_as = self.confusion.sum(axis=0)
        for index, name in enumerate(self.classes):
            wrong = self.confusion[index].copy()
            wrong[index] = 0
            confused = self.classes[int(wrong.argmax())] if wrong.sum() else ""
            accuracy = self.per_class_accuracy[index]
            recall = None if np.isnan(accuracy) else float(accuracy)
            precision = float(self.confusion[index, index] / predicted_as[index]) if predicted_as[index] else None
            f1 = 2 * precision * recall / (precision + recall) if precision and recall else \
                (0.0 if precision is not None and recall is not None else None)
            rows.append({
                "class": name,
                "images": int(self.class_counts[index]),
                "correct": int(self.confusion[index, index]),
                "accuracy": recall,
                "precision": precision,
                "recall": recall,
                "f1": f1,
                "most_confused_with": confused,
            })
        return rows


def validation_files(run: Run) -> tuple[Path, list[str], list[Path], list[int]]:
    """(dataset root, classes, validation paths, labels) as the trainer recorded them in split.json."""
    return split_files_of(run, "validation")


def has_test_split(run: Run) -> bool:
    """Whether the run recorded a non-empty test split."""
    raw = run.split() or {}
    return isinstance(raw.get("test_paths"), list) and bool(raw["test_paths"])


def split_files_of(run: Run, split_name: str = "validation") -> tuple[Path, list[str], list[Path], list[int]]:
    """(dataset root, classes, paths, labels) of the run's "validation" or "test" split, as recorded in split.json."""
    from carviz.data.datasets import Split

    if split_name not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split_name!r}")
    raw = run.split()
    if raw is None:
        raise FileNotFoundError(f"run {run.id} has no recorded split (it never got as far as splitting its data)")
    recorded = run.run_info().dataset_path
    root = Path(recorded) if recorded else settings.resolve_dataset(str(run.config_dict().get("dataset", "")))
    if not root.is_dir():
        raise FileNotFoundError(f"run {run.id}: its dataset folder {root} is gone")
    split = Split.from_json_dict(raw, root)
    classes = run.classes() or split.classes
    if split_name == "test":
        if not split.test_paths:
            raise ValueError(f"run {run.id} has no test split (it was trained with test_fraction 0, or before test "
                             "splits existed)")
        return root, list(classes), split.test_paths, split.test_labels
    return root, list(classes), split.val_paths, split.val_labels


def dataset_files(run: Run, dataset: str | Path, skip_extra: bool = False) -> tuple[Path, list[str], list[Path],
                                                                                  list[int], list[str], list[str]]:
    """(folder, the run's classes, paths, labels, absent classes, skipped classes) of another dataset folder, its
    class folders matched to the run's classes by name (labels index the run's classes). Broken, tiny and duplicate
    images are left out, as training leaves them out.

    dataset: a name under data/ or an absolute path. A class folder the run does not know is refused (ValueError
    listing them and the classes the folder lacks) unless skip_extra; classes the folder lacks are allowed (their
    per-class accuracy is empty). The run's own dataset folder is refused: it holds the run's training images."""
    from carviz.data.datasets import scan_dataset

    folder = settings.resolve_dataset(str(dataset))
    classes = run.classes()
    if not classes:
        raise FileNotFoundError(f"run {run.id} has no classes.json (it never got as far as splitting its data)")
    own = run.run_info().dataset_path
    if isinstance(own, str) and own and Path(own).resolve() == folder.resolve():
        raise ValueError(f"{folder} is run {run.id}'s own dataset, which holds its training images: evaluate its "
                         "validation or test split instead")
    scan = scan_dataset(folder)
    launch_fingerprint = run.run_info().fingerprint_at_launch
    if scan.fingerprint and scan.fingerprint == launch_fingerprint:
        raise ValueError(f"{folder} holds the very images run {run.id} was trained on (same content fingerprint): "
                         "evaluate its validation or test split instead")
    index_of = {unicodedata.normalize("NFC", name): index for index, name in enumerate(classes)}  # macOS copies: NFD
    matched: dict[int, list[Path]] = {}
    extra = []
    for name in scan.classes:
        index = index_of.get(unicodedata.normalize("NFC", name))
        if index is None:
            extra.append(name)
        else:
            matched.setdefault(index, []).extend(scan.files.get(name, []))
    absent = [name for index, name in enumerate(classes) if not matched.get(index)]
    if (extra and not skip_extra) or len(absent) == len(classes):
        parts = ([f"not classes of the run: {', '.join(extra)}"] if extra else []) + \
                ([f"missing from the folder: {', '.join(absent)}"] if absent else [])
        hint = " Skipping the classes the run does not know (--skip-extra-classes) evaluates the rest." \
            if extra and len(absent) < len(classes) else ""
        raise ValueError(f"the class folders of {folder} do not match run {run.id}'s classes by name: "
                         f"{'; '.join(parts)}. The run knows {', '.join(classes)}; the folder has "
                         f"{', '.join(scan.classes) or 'no class folders with images'}.{hint}")
    paths: list[Path] = []
    labels: list[int] = []
    for index in range(len(classes)):
        files = matched.get(index, [])
        paths.extend(files)
        labels.extend([index] * len(files))
    return folder, list(classes), paths, labels, absent, extra


def check_files(paths: list[Path], what: str = "validation") -> None:
    """FileNotFoundError listing the files that are missing (the dataset changed since training)."""
    missing = [p for p in paths if not p.is_file()]
    if missing:
        listed = "\n".join(f"  {p}" for p in missing[:MAX_LISTED_MISSING])
        more = f"\n  … and {len(missing) - MAX_LISTED_MISSING} more" if len(missing) > MAX_LISTED_MISSING else ""
        raise FileNotFoundError(
            f"{len(missing)} of {len(paths)} {what} images are missing (moved or deleted since training):\n"
            f"{listed}{more}"
        )


def confusion_matrix(true: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts, rows = true class, columns = predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(true, dtype=np.int64), np.asarray(predicted, dtype=np.int64)), 1)
    return matrix


def summarize_predictions(run_id: str, classes: list[str], paths: list[Path], labels: list[int],
                          probabilities: np.ndarray, temperature: float = 1.0) -> Evaluation:
    """The Evaluation of the model's own probabilities (N, classes) against the true labels; what it shows of each
    image (confidence, misclassified) is scaled by the run's temperature, as predictions are."""
    from carviz.core.calibration import scale

    raw = np.asarray(probabilities)
    probabilities = scale(raw, temperature) if len(raw) else raw
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
        paths=list(paths), labels=[int(label) for label in labels_array], probabilities=probabilities,
        raw_probabilities=raw, temperature=temperature,
    )


def evaluate_run(run: Run, batch_size: int = 64, predictor: Any | None = None, split: str = "validation",
                 dataset: str | Path | None = None, skip_extra: bool = False) -> Evaluation:
    """Run the model over the run's validation or test split (split), or over every usable image of another dataset
    folder with the same class names (dataset: a name under data/ or an absolute path; see dataset_files), through
    the training input pipeline.

    predictor: a carviz.ml.predict.Predictor already loaded for this run (else one is loaded here).
    Raises FileNotFoundError (listing them) when recorded images are gone, ValueError for a run without a test split
    or a folder whose classes do not match.
    """
    absent: list[str] = []
    skipped: list[str] = []
    if dataset is not None:
        root, classes, paths, labels, absent, skipped = dataset_files(run, dataset, skip_extra)
        what = "dataset"
        if not paths:
            raise ValueError(f"{root} has no usable images of run {run.id}'s classes")
    else:
        root, classes, paths, labels = split_files_of(run, split)
        what = split
        if not paths:
            raise ValueError(f"run {run.id} has an empty {split} split")
        check_files(paths, split)
    evaluation = evaluate_images(run, list(paths), list(labels), classes, predictor, batch_size, what)
    return dataclasses.replace(evaluation, split=what, dataset=str(root), absent_classes=absent,
                               skipped_classes=skipped)


def evaluate_images(run: Run, paths: list[Path], labels: list[int], classes: list[str],
                    predictor: Any | None = None, batch_size: int = 64, what: str = "images") -> Evaluation:
    """The run's model on given images (labels index `classes`, which must be the model's), through the training
    input pipeline: another run's split, to compare two runs on the same images."""
    from carviz.ml.pipelines import make_pipeline
    from carviz.ml.predict import load_model

    predictor = predictor or load_model(run)
    if list(predictor.classes) != list(classes):
        raise ValueError(f"run {run.id}: the model's classes {predictor.classes} differ from the recorded {classes}")
    # the same tf.data pipeline as training's validation data, so the images are decoded and resized identically
    dataset = make_pipeline(paths, labels, len(classes), predictor.image_size, batch_size, training=False, cache=False)
    try:
        outputs = [predictor.predict_batch(np.asarray(images), batch_size, calibrated=False) for images, _ in dataset]
    except Exception as exc:  # tf.errors.InvalidArgumentError etc.: a file changed into something undecodable
        raise ValueError(f"run {run.id}: a {what} image could not be decoded: {exc}") from exc
    probabilities = np.concatenate(outputs) if outputs else np.zeros((0, len(classes)), dtype=np.float32)
    return summarize_predictions(run.id, list(classes), list(paths), list(labels), probabilities,
                                 predictor.temperature)


def trained_on(run: Run, paths: list[Path]) -> int:
    """How many of `paths` are in the run's training split (a comparison on them would flatter it)."""
    from carviz.data.datasets import Split

    raw = run.split()
    if raw is None:
        return 0
    root = Path(run.run_info().dataset_path or ".")
    try:
        train = {p.resolve() for p in Split.from_json_dict(raw, root).train_paths}
    except (KeyError, TypeError, ValueError):
        return 0
    return sum(1 for path in paths if Path(path).resolve() in train)


def compare_predictions(first: Evaluation, second: Evaluation) -> dict[str, list[int]]:
    """Two runs on the same images (in the same order): indices of the images both get right, only the first gets
    right, only the second, and neither."""
    if [str(p) for p in first.paths] != [str(p) for p in second.paths] or first.labels != second.labels:
        raise ValueError("the two evaluations are not of the same images")
    labels = np.asarray(first.labels)
    right_a, right_b = first.predicted == labels, second.predicted == labels
    pick = lambda mask: [int(i) for i in np.flatnonzero(mask)]  # noqa: E731
    return {"both": pick(right_a & right_b), "only_first": pick(right_a & ~right_b),
            "only_second": pick(~right_a & right_b), "neither": pick(~right_a & ~right_b)}
