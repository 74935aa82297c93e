"""Calibration (core/calibration.py): the expected calibration error, and temperature scaling that makes an
over-confident model honest without changing any top-1 prediction; a trained run stores its temperature and its
predictions and exports apply it."""

from __future__ import annotations


import numpy as np
import pytest

from carviz.core import calibration as cal


def overconfident(n: int = 2000, classes: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A model whose top class is right 60 % of the time but that says so with ~95 % confidence."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=n)
    top = np.where(rng.random(n) < 0.6, labels, (labels + rng.integers(1, classes, size=n)) % classes)
    logits = rng.normal(scale=0.5, size=(n, classes))
    logits[np.arange(n), top] += 4.0
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return probabilities, labels


def test_temperature_scaling_lowers_the_error_on_held_out_data_and_keeps_every_top1() -> None:
    probabilities, labels = overconfident()
    fit, held = slice(0, 1000), slice(1000, None)
    result = cal.calibrate(probabilities[fit], labels[fit], probabilities[held], labels[held])
    assert result.temperature > 1.5  # over-confident: softened
    assert result.ece_test > 0.25 and result.ece_test_scaled < 0.06  # on images it was not fitted on
    assert result.ece_validation_scaled < result.ece_validation
    scaled = cal.scale(probabilities, result.temperature)
    assert (scaled.argmax(axis=1) == probabilities.argmax(axis=1)).all()
    assert np.allclose(scaled.sum(axis=1), 1.0)
    assert cal.Calibration.from_dict(result.to_dict()) == result


def test_reliability_bins_and_a_perfectly_calibrated_model() -> None:
    rel = cal.reliability(np.array([[0.95, 0.05], [0.95, 0.05], [0.55, 0.45], [0.55, 0.45]]), np.array([0, 0, 0, 1]))
    assert sum(rel.counts) == 4 and rel.ece == pytest.approx((2 * 0.05 + 2 * 0.05) / 4)
    assert cal.scale(np.array([[0.7, 0.3]]), 1.0).tolist() == [[0.7, 0.3]]
    with pytest.raises(ValueError, match="positive"):
        cal.Calibration.from_dict({"temperature": -1, "fitted_on": 3, "ece_validation": 0.1,
                                   "ece_validation_scaled": 0.1})


@pytest.mark.slow
def test_a_trained_run_stores_its_temperature_and_predictions_and_exports_apply_it(tiny_trained) -> None:
    from carviz.core.store import Run
    from carviz.ml.evaluate import evaluate_run
    from carviz.ml.export import export_run
    from carviz.ml.predict import load_model

    home, run_path = tiny_trained
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CARVIZ_HOME", str(home))
        run = Run(run_path)
        stored = run.calibration()
        assert stored is not None and stored["fitted_on"] == run.info()["val_images"]
        predictor = load_model(run)
        assert predictor.temperature == pytest.approx(stored["temperature"])
        evaluation = evaluate_run(run, predictor=predictor)
        assert (evaluation.predicted == evaluation.raw_probabilities.argmax(axis=1)).all()
        check = export_run(run, "savedmodel", predictor)
        assert check["passed"] and check["temperature"] == predictor.temperature
        from carviz.core import exports
        assert not exports.list_exports(run)[0].stale
        run.write_calibration({**stored, "temperature": stored["temperature"] * 2})
        assert exports.list_exports(run)[0].stale  # its probabilities are no longer the run's
        run.write_calibration(stored)
        exports.remove_export(exports.export_dir(run, "savedmodel"))
        from carviz import cli

        assert cli.main(["calibrate", run.id]) == 0  # fitted again, the same way, from the saved model
        assert run.calibration()["temperature"] == pytest.approx(stored["temperature"], rel=1e-3)
