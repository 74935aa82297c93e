"""What is wrong in a dataset, found from one embedding per image (no TensorFlow here: ml/audit.py computes them):
suspected label errors, near-duplicates (and those that cross the split: leakage), outliers, class imbalance.

Label errors are found confident-learning style (Northcutt et al., 2021): out-of-fold probabilities of a softmax
regression on the embeddings (each image predicted by a model that never saw it); images are ranked by self-confidence
(the probability of their given label), lowest first, and as many are flagged as the confident joint counts label
errors (see rank_label_issues).

Near-duplicates: pairs whose embeddings' cosine similarity reaches a threshold measured on the dataset itself:
the lowest similarity between an image and a resized, re-encoded copy of it (ml/audit.py makes the copies), so no
threshold is tuned by hand for a backbone or a kind of photo.

Outliers: images far from every class: their similarity to the nearest class centre (the mean of that class's
normalized embeddings) is a robust z-score below OUTLIER_Z of the dataset's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

FOLDS = 10  # 90 % of the images train each out-of-fold model (chosen with the ranking: see rank_label_issues)
L2_CHOICES = (1e-3, 1e-2, 1e-1, 1.0)  # weight decays tried; the one with the lowest out-of-fold log loss is kept
STEPS = 300
OUTLIER_Z = -3.5  # robust z-score (median / MAD) of the similarity to the nearest class centre
MAX_LISTED = 200  # ranked images kept in the record besides the flagged ones
IMBALANCE_RATIO = 1.5  # largest class over smallest from which imbalance is reported as such


@dataclass(frozen=True)
class LabelIssue:
    path: str  # relative to the dataset: "<class>/<file>"
    given: str
    looks_like: str  # the class the out-of-fold model finds most likely, other than the given one
    given_probability: float
    looks_like_probability: float
    margin: float  # given_probability - looks_like_probability (ranks images of equal given_probability)
    flagged: bool  # the confident-learning rule holds (else only ranked)


@dataclass(frozen=True)
class DuplicatePair:
    first: str
    second: str
    similarity: float
    leakage: str = ""  # "train / validation" etc. when the two fall on different sides of the split


@dataclass(frozen=True)
class Outlier:
    path: str
    nearest_class: str
    similarity: float  # to the nearest class centre
    z: float


@dataclass(frozen=True)
class ClassHealth:
    name: str
    images: int
    out_of_fold_accuracy: float | None


@dataclass
class AuditResult:
    """Everything the audit found; JSON round trip for the record."""

    classes: list[str]
    images: int
    accuracy: float  # out of fold, over all images
    label_issues: list[LabelIssue]  # every image ranked, most suspect first (the record keeps MAX_LISTED)
    duplicates: list[DuplicatePair]
    duplicate_threshold: float
    outliers: list[Outlier]
    class_health: list[ClassHealth]
    imbalance: str  # a sentence, "" when the classes are balanced enough
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def flagged(self) -> list[LabelIssue]:
        return [issue for issue in self.label_issues if issue.flagged]

    @property
    def leaks(self) -> list[DuplicatePair]:
        return [pair for pair in self.duplicates if pair.leakage]

    def to_dict(self, limit: int | None = MAX_LISTED) -> dict[str, Any]:
        """JSON-ready; of the ranked images, every flagged one and the `limit` most suspect (None: all)."""
        data = asdict(self)
        data["label_issues"] = [row for rank, (row, issue) in enumerate(zip(data["label_issues"], self.label_issues))
                                if limit is None or rank < limit or issue.flagged]
        data["counts"] = {"suspected_label_errors": len(self.flagged), "near_duplicate_pairs": len(self.duplicates),
                          "leaking_pairs": len(self.leaks), "outliers": len(self.outliers)}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AuditResult":
        return cls(classes=list(data["classes"]), images=int(data["images"]), accuracy=float(data["accuracy"]),
                   label_issues=[LabelIssue(**row) for row in data["label_issues"]],
                   duplicates=[DuplicatePair(**row) for row in data["duplicates"]],
                   duplicate_threshold=float(data["duplicate_threshold"]),
                   outliers=[Outlier(**row) for row in data["outliers"]],
                   class_health=[ClassHealth(**row) for row in data["class_health"]],
                   imbalance=str(data.get("imbalance", "")), settings=dict(data.get("settings") or {}))


# ---------------------------------------------------------------- the classifier


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def fit_softmax(x: np.ndarray, y: np.ndarray, num_classes: int, l2: float = 1e-2, steps: int = STEPS
                ) -> tuple[np.ndarray, np.ndarray]:
    """Weights and bias of an L2-regularized softmax regression, by full-batch gradient descent with Nesterov
    momentum (the loss is convex: no learning rate schedule or early stopping to tune)."""
    n, d = x.shape
    onehot = np.eye(num_classes, dtype=np.float64)[y]
    w = np.zeros((d, num_classes))
    b = np.zeros(num_classes)
    vw, vb = np.zeros_like(w), np.zeros_like(b)
    # a step of 1/L for the smooth part: the Hessian of the mean cross-entropy is at most ||x||^2 / 2n
    lipschitz = 0.5 * np.linalg.norm(x, 2) ** 2 / n + l2
    rate, momentum = 1.0 / lipschitz, 0.9
    for _ in range(steps):
        lw, lb = w + momentum * vw, b + momentum * vb
        grad = (_softmax(x @ lw + lb) - onehot) / n
        gw = x.T @ grad + l2 * lw
        gb = grad.sum(axis=0)
        vw, vb = momentum * vw - rate * gw, momentum * vb - rate * gb
        w, b = w + vw, b + vb
    return w, b


def out_of_fold_probabilities(x: np.ndarray, y: np.ndarray, num_classes: int, folds: int = FOLDS,
                              seed: int = 0) -> tuple[np.ndarray, float]:
    """(n, classes) probabilities, each row from a model fitted on the other folds (stratified by class), with the
    weight decay of L2_CHOICES whose out-of-fold log loss is lowest (chosen on this dataset alone, as
    cross-validated regularization is); and that weight decay."""
    best: tuple[float, np.ndarray, float] | None = None
    for l2 in L2_CHOICES:
        probabilities = _out_of_fold(x, y, num_classes, folds, seed, l2)
        loss = float(-np.mean(np.log(np.clip(probabilities[np.arange(len(y)), np.asarray(y)], 1e-12, 1.0))))
        if best is None or loss < best[0]:
            best = (loss, probabilities, l2)
    return best[1], best[2]  # type: ignore[index]


def _out_of_fold(x: np.ndarray, y: np.ndarray, num_classes: int, folds: int, seed: int, l2: float) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    rng = np.random.default_rng(seed)
    fold_of = np.zeros(len(y), dtype=np.int64)
    for label in range(num_classes):
        members = np.flatnonzero(y == label)
        fold_of[rng.permutation(members)] = np.arange(len(members)) % folds
    probabilities = np.zeros((len(y), num_classes))
    for fold in range(folds):
        held = fold_of == fold
        if not held.any() or held.all():
            continue
        mean, std = x[~held].mean(axis=0), x[~held].std(axis=0) + 1e-6
        w, b = fit_softmax((x[~held] - mean) / std, y[~held], num_classes, l2)
        probabilities[held] = _softmax(((x[held] - mean) / std) @ w + b)
    return probabilities


# ---------------------------------------------------------------- findings


def rank_label_issues(probabilities: np.ndarray, y: np.ndarray, paths: Sequence[str], classes: Sequence[str]
                      ) -> list[LabelIssue]:
    """Every image, most suspect first: lowest self-confidence (the out-of-fold probability of its given label),
    ties by margin. How many are flagged is confident learning's estimate of the label errors: the images whose most
    likely class among those they reach the average probability of (the class's own images' mean) is not their
    given one (the off-diagonal of the confident joint); the flagged ones are that many of the most suspect images
    whose top class is not the given one ("prune by noise rate").

    Self-confidence, not the margin, and 10 folds, not 5, because they ranked flipped labels higher: chosen on
    cars20's first 10 classes with 5 % of labels flipped (8 seeds: 77 % of them in the top 10 % by margin with 5
    folds, 86 % by self-confidence, 90 % with 10 folds too), before the measure on all 20 classes was taken.
    Self-confidence is also cleanlab's default ranking."""
    n, k = probabilities.shape
    y = np.asarray(y, dtype=np.int64)
    thresholds = np.array([probabilities[y == j, j].mean() if (y == j).any() else 1.0 for j in range(k)])
    given = probabilities[np.arange(n), y]
    others = probabilities.copy()
    others[np.arange(n), y] = -1.0
    best_other = others.argmax(axis=1)
    best_other_p = others[np.arange(n), best_other]
    confident = np.where(probabilities >= thresholds, probabilities, -1.0)
    reached = confident.max(axis=1) >= 0
    estimated = int(np.sum(reached & (confident.argmax(axis=1) != y)))  # the confident joint's off-diagonal
    margin = given - best_other_p
    order = np.lexsort((margin, given))  # by given, then margin
    disagrees = [i for i in order if probabilities[i].argmax() != y[i]]
    flagged = np.zeros(n, dtype=bool)
    flagged[disagrees[:estimated]] = True
    return [LabelIssue(path=paths[i], given=classes[y[i]], looks_like=classes[best_other[i]],
                       given_probability=round(float(given[i]), 4),
                       looks_like_probability=round(float(best_other_p[i]), 4), margin=round(float(margin[i]), 4),
                       flagged=bool(flagged[i])) for i in order]


def normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-12)


def near_duplicates(unit: np.ndarray, paths: Sequence[str], threshold: float, side_of: dict[str, str] | None = None,
                    block: int = 2048) -> list[DuplicatePair]:
    """Pairs with cosine similarity >= threshold (unit: normalized embeddings), most similar first; a pair whose
    images lie on different sides of the split (side_of: path -> train / validation / test) is leakage."""
    pairs = []
    for start in range(0, len(unit), block):
        similarity = unit[start:start + block] @ unit.T
        rows, cols = np.nonzero(similarity >= threshold)
        for row, col in zip(rows, cols):
            i = start + row
            if col > i:
                pairs.append((float(similarity[row, col]), i, int(col)))
    pairs.sort(reverse=True)
    found = []
    for similarity, i, j in pairs:
        sides = (side_of or {}).get(paths[i], ""), (side_of or {}).get(paths[j], "")
        leakage = f"{sides[0]} / {sides[1]}" if all(sides) and sides[0] != sides[1] else ""
        found.append(DuplicatePair(paths[i], paths[j], round(similarity, 4), leakage))
    return found


def copy_threshold(original: np.ndarray, copies: np.ndarray, slack: float = 0.01) -> float:
    """The similarity from which two images count as copies: the lowest similarity between an image and its
    resized, re-encoded copy (rows of `original` and `copies` match), less `slack`."""
    similarity = np.sum(normalize(original) * normalize(copies), axis=1)
    return float(similarity.min() - slack)


def outliers(unit: np.ndarray, y: np.ndarray, paths: Sequence[str], classes: Sequence[str],
             z_limit: float = OUTLIER_Z) -> list[Outlier]:
    """Images whose similarity to the nearest class centre is an outlier (robust z below z_limit), lowest first."""
    y = np.asarray(y, dtype=np.int64)
    centres = normalize(np.stack([unit[y == j].mean(axis=0) if (y == j).any() else np.zeros(unit.shape[1])
                                  for j in range(len(classes))]))
    similarity = unit @ centres.T
    nearest = similarity.argmax(axis=1)
    best = similarity[np.arange(len(unit)), nearest]
    median = float(np.median(best))
    mad = float(np.median(np.abs(best - median))) * 1.4826 + 1e-9
    z = (best - median) / mad
    order = np.argsort(z)
    return [Outlier(paths[i], classes[nearest[i]], round(float(best[i]), 4), round(float(z[i]), 2))
            for i in order if z[i] < z_limit]


def class_health(probabilities: np.ndarray, y: np.ndarray, classes: Sequence[str]) -> tuple[list[ClassHealth], str]:
    """Per class: images and out-of-fold accuracy; and a sentence on imbalance and its effect ("" if balanced)."""
    y = np.asarray(y, dtype=np.int64)
    predicted = probabilities.argmax(axis=1)
    rows = []
    for j, name in enumerate(classes):
        members = y == j
        accuracy = float((predicted[members] == j).mean()) if members.any() else None
        rows.append(ClassHealth(name, int(members.sum()), None if accuracy is None else round(accuracy, 4)))
    counts = np.array([row.images for row in rows if row.images])
    if len(counts) < 2 or counts.max() < IMBALANCE_RATIO * counts.min():
        return rows, ""
    median = float(np.median(counts))
    small = [row for row in rows if 0 < row.images < median / IMBALANCE_RATIO]
    overall = float((predicted == y).mean())
    text = f"classes range from {counts.min()} to {counts.max()} images (median {median:.0f})"
    if small:
        described = ", ".join(f"{row.name} ({row.images} images, {_pct(row.out_of_fold_accuracy)})"
                              for row in sorted(small, key=lambda row: row.images)[:5])
        text += f"; the small ones, with their out-of-fold accuracy against {_pct(overall)} overall: {described}"
    return rows, text + ". A class-weighted loss (train --class-weight balanced) gives each class equal weight."


def imbalance_note(counts: dict[str, int]) -> str:
    """When the classes' sizes differ by IMBALANCE_RATIO or more, a sentence saying so and what to do; else ""."""
    sizes = {name: n for name, n in counts.items() if n > 0}
    if len(sizes) < 2:
        return ""
    largest, smallest = max(sizes, key=sizes.get), min(sizes, key=sizes.get)
    ratio = sizes[largest] / sizes[smallest]
    if ratio < IMBALANCE_RATIO:
        return ""
    return (f"the classes are imbalanced: {largest} has {sizes[largest]} images, {smallest} {sizes[smallest]} "
            f"({ratio:.1f}x). A class-weighted loss (train --class-weight balanced; the Train form's 'Class weights') "
            "makes every class count alike.")


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f} %"


def audit(embeddings: np.ndarray, y: Sequence[int], paths: Sequence[str], classes: Sequence[str],
          duplicate_threshold: float, side_of: dict[str, str] | None = None, seed: int = 0) -> AuditResult:
    """Every finding from one embedding per image (rows of `embeddings` match `y` and `paths`)."""
    y = np.asarray(y, dtype=np.int64)
    probabilities, l2 = out_of_fold_probabilities(embeddings, y, len(classes), seed=seed)
    unit = normalize(embeddings)
    health, imbalance = class_health(probabilities, y, classes)
    return AuditResult(
        classes=list(classes), images=len(y), accuracy=round(float((probabilities.argmax(axis=1) == y).mean()), 4),
        label_issues=rank_label_issues(probabilities, y, paths, classes),
        duplicates=near_duplicates(unit, paths, duplicate_threshold, side_of),
        duplicate_threshold=round(duplicate_threshold, 4), outliers=outliers(unit, y, paths, classes),
        class_health=health, imbalance=imbalance, settings={"weight_decay": l2})
