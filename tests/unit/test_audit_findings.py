"""The audit's findings from embeddings (data/audit.py), on synthetic clusters where the truth is known: flipped
labels rank first, planted copies pair up (and say when they cross the split), a far-off point is an outlier, and a
small class's effect is named."""

from __future__ import annotations

import numpy as np
import pytest

from carviz.data import audit

CLASSES = ["bus", "sedan", "suv", "van"]


def clusters(per_class: int = 40, dim: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(CLASSES), dim)) * 2.0
    y = np.repeat(np.arange(len(CLASSES)), per_class)
    x = centres[y] + rng.normal(size=(len(y), dim))
    paths = [f"{CLASSES[label]}/{i:03d}.jpg" for i, label in enumerate(y)]
    return x, y, paths


def test_flipped_labels_are_ranked_first_and_name_the_class_they_look_like() -> None:
    x, y, paths = clusters()
    rng = np.random.default_rng(1)
    flipped = rng.choice(len(y), size=8, replace=False)
    given = y.copy()
    given[flipped] = (y[flipped] + rng.integers(1, len(CLASSES), size=8)) % len(CLASSES)
    result = audit.audit(x, given, paths, CLASSES, duplicate_threshold=0.999)
    top = {issue.path for issue in result.label_issues[:len(y) // 10]}  # the top 10 % of the ranking
    assert sum(paths[i] in top for i in flipped) >= 7
    flagged = {issue.path: issue for issue in result.flagged}
    found = [i for i in flipped if paths[i] in flagged]
    assert len(found) >= 7 and all(flagged[paths[i]].looks_like == CLASSES[y[i]] for i in found)
    assert len(flagged) <= 10, "few correct labels are flagged"
    assert result.accuracy > 0.85


def test_the_ranking_puts_the_lowest_given_label_probability_first_and_breaks_ties_by_margin() -> None:
    probabilities = np.array([[0.30, 0.70, 0.00],   # given 0.30, margin -0.40
                              [0.20, 0.40, 0.40],   # given 0.20, margin -0.20: lower self-confidence, ranked first
                              [0.20, 0.80, 0.00],   # given 0.20, margin -0.60: ties with the row above, lower margin
                              [0.90, 0.05, 0.05]])
    paths = [f"bus/{i}.jpg" for i in range(4)]
    issues = audit.rank_label_issues(probabilities, np.zeros(4, dtype=int), paths, ["bus", "sedan", "suv"])
    assert [issue.path for issue in issues] == ["bus/2.jpg", "bus/1.jpg", "bus/0.jpg", "bus/3.jpg"]


def test_copies_pair_up_above_the_measured_threshold_and_leakage_is_named() -> None:
    x, y, paths = clusters()
    rng = np.random.default_rng(2)
    originals = [3, 50, 90, 130]
    copies = x[originals] + rng.normal(scale=0.02, size=(4, x.shape[1]))  # a copy moves its embedding a little
    threshold = audit.copy_threshold(x[originals], copies)
    assert 0.9 < threshold < 1.0
    x2 = np.vstack([x, copies])
    y2 = np.concatenate([y, (y[originals] + 1) % len(CLASSES)])  # copied into another class's folder
    paths2 = paths + [f"{CLASSES[label]}/copy-{i}.jpg" for i, label in enumerate(y2[len(y):])]
    side = {path: "train" for path in paths2}
    side[paths2[-1]] = "test"
    result = audit.audit(x2, y2, paths2, CLASSES, threshold, side_of=side)
    found = {(pair.first, pair.second) for pair in result.duplicates}
    assert {(paths[o], paths2[len(y) + i]) for i, o in enumerate(originals)} <= found
    assert len(found) == len(originals), "distinct images of a class are not copies"
    (leak,) = result.leaks
    assert leak.second == paths2[-1] and leak.leakage == "train / test"


def test_a_far_point_is_an_outlier_and_a_small_class_is_reported_with_its_accuracy() -> None:
    x, y, paths = clusters()
    keep = np.flatnonzero((y != 3) | (np.arange(len(y)) % 4 == 0))  # van: 10 images, the others 40
    x, y, paths = x[keep], y[keep], [paths[i] for i in keep]
    x = np.vstack([x, -50 * np.abs(x).mean(axis=0)])
    y = np.append(y, 0)
    paths.append("bus/logo.png")
    result = audit.audit(x, y, paths, CLASSES, duplicate_threshold=0.999)
    assert [item.path for item in result.outliers] == ["bus/logo.png"]
    assert "10 to 41 images" in result.imbalance and "van (10 images" in result.imbalance
    health = {row.name: row for row in result.class_health}
    assert health["van"].images == 10 and 0 <= health["van"].out_of_fold_accuracy <= 1


def test_a_result_survives_its_json_round_trip() -> None:
    x, y, paths = clusters(per_class=10)
    result = audit.audit(x, y, paths, CLASSES, duplicate_threshold=0.99)
    data = result.to_dict(limit=None)
    again = audit.AuditResult.from_dict(data)
    assert again == result and data["counts"]["suspected_label_errors"] == len(result.flagged)


def test_the_classifier_is_a_proper_softmax_regression() -> None:
    x, y, _ = clusters(per_class=20, dim=8)
    w, b = audit.fit_softmax((x - x.mean(0)) / x.std(0), y, len(CLASSES))
    probabilities = audit._softmax(((x - x.mean(0)) / x.std(0)) @ w + b)
    assert probabilities.sum(axis=1) == pytest.approx(np.ones(len(y)))
    assert (probabilities.argmax(axis=1) == y).mean() > 0.95
