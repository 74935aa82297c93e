"""Calibration: how far a model's confidence is from its accuracy (reliability bins, expected calibration error),
and temperature scaling (Guo et al., 2017), fitted on the validation split: probabilities p become softmax(log p / T),
which keeps every top-1 prediction and only makes the model more (T < 1) or less (T > 1) confident.

Numbers in, numbers out (no TensorFlow). The store keeps a run's calibration (run_files.CALIBRATION_FILE);
predict.py, evaluate.py and export.py apply it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

BINS = 15
T_RANGE = (0.05, 20.0)  # temperatures searched (log-uniform golden section)


@dataclass(frozen=True)
class Reliability:
    """Confidence bins: each bin's mean confidence, accuracy and image count; and the expected calibration error
    (the count-weighted mean gap between confidence and accuracy)."""

    edges: list[float]
    confidence: list[float | None]
    accuracy: list[float | None]
    counts: list[int]
    ece: float


def scale(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T) row-wise: the same ranking of classes in every row, sharper (T < 1) or softer (T > 1)."""
    p = np.asarray(probabilities, dtype=np.float64)
    if temperature == 1.0:
        return p
    logits = np.log(np.clip(p, 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def reliability(probabilities: np.ndarray, labels: np.ndarray, bins: int = BINS) -> Reliability:
    p = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    confidence = p.max(axis=1) if len(p) else np.zeros(0)
    correct = (p.argmax(axis=1) == labels) if len(p) else np.zeros(0, dtype=bool)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    mean_conf, mean_acc, counts, gap = [], [], [], 0.0
    for b in range(bins):
        members = which == b
        n = int(members.sum())
        counts.append(n)
        if n:
            c, a = float(confidence[members].mean()), float(correct[members].mean())
            mean_conf.append(c)
            mean_acc.append(a)
            gap += n * abs(c - a)
        else:
            mean_conf.append(None)
            mean_acc.append(None)
    return Reliability([float(e) for e in edges], mean_conf, mean_acc, counts, gap / max(1, len(p)))


def nll(probabilities: np.ndarray, labels: np.ndarray) -> float:
    p = np.asarray(probabilities, dtype=np.float64)
    return float(-np.mean(np.log(np.clip(p[np.arange(len(p)), np.asarray(labels, dtype=np.int64)], 1e-12, 1.0))))


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The T that minimizes the negative log-likelihood of `labels` (golden-section search over log T: the NLL of
    temperature scaling is unimodal in it)."""
    low, high = np.log(T_RANGE[0]), np.log(T_RANGE[1])
    golden = (np.sqrt(5.0) - 1.0) / 2.0
    f = lambda log_t: nll(scale(probabilities, float(np.exp(log_t))), labels)  # noqa: E731
    a, b = high - golden * (high - low), low + golden * (high - low)
    fa, fb = f(a), f(b)
    for _ in range(60):
        if fa < fb:
            high, b, fb = b, a, fa
            a = high - golden * (high - low)
            fa = f(a)
        else:
            low, a, fa = a, b, fb
            b = low + golden * (high - low)
            fb = f(b)
    return float(np.exp((low + high) / 2.0))


@dataclass(frozen=True)
class Calibration:
    """What a run stores: its temperature, fitted on `fitted_on` images of the validation split, and the expected
    calibration error before and after, on validation and (where the run has one) on its test split."""

    temperature: float
    fitted_on: int
    ece_validation: float
    ece_validation_scaled: float
    ece_test: float | None = None
    ece_test_scaled: float | None = None
    test_images: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Calibration":
        fields = {key: data[key] for key in cls.__dataclass_fields__ if key in data}
        calibration = cls(**fields)
        if not (isinstance(calibration.temperature, (int, float)) and calibration.temperature > 0):
            raise ValueError(f"a calibration's temperature must be a positive number, got {calibration.temperature!r}")
        return calibration


def calibrate(val_probabilities: np.ndarray, val_labels: np.ndarray, test_probabilities: np.ndarray | None = None,
              test_labels: np.ndarray | None = None) -> Calibration:
    """Fit T on validation; the ECE before and after there and, when given, on the test split (never fitted on)."""
    temperature = fit_temperature(val_probabilities, val_labels)
    test = {}
    if test_probabilities is not None and test_labels is not None and len(test_labels):
        test = {"ece_test": reliability(test_probabilities, test_labels).ece,
                "ece_test_scaled": reliability(scale(test_probabilities, temperature), test_labels).ece,
                "test_images": int(len(test_labels))}
    return Calibration(temperature=temperature, fitted_on=int(len(val_labels)),
                       ece_validation=reliability(val_probabilities, val_labels).ece,
                       ece_validation_scaled=reliability(scale(val_probabilities, temperature), val_labels).ece,
                       **test)
