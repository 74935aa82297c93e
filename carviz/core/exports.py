"""A run's exports (SavedModel, TFLite float32, TFLite dynamic-range): where they live, tolerances, checks."""

from __future__ import annotations

import io
import math
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from carviz.core.jobs.record import atomic_write_json, read_json_object
from carviz.core.run_files import EXPORT_CHECK_FILE, EXPORTS_DIR
from carviz.core.store import Run

FORMATS = ("savedmodel", "tflite", "tflite-dynamic")
LABELS = {"savedmodel": "SavedModel", "tflite": "TFLite float32", "tflite-dynamic": "TFLite dynamic-range quantised"}
ARTIFACTS = {"savedmodel": "saved_model", "tflite": "model.tflite", "tflite-dynamic": "model.tflite"}  # in its folder


@dataclass(frozen=True)
class Tolerance:
    """What an export must meet against the Keras model on the run's validation images."""

    min_top1_agreement: float  # share of images whose top-1 class is the Keras model's
    max_prob_diff: float  # the largest absolute difference of any class probability of any image

    def passes(self, agreement: float | None, diff: float | None) -> bool:
        """Both met; a missing or non-finite figure (NaN outputs, an export that did not run) never passes."""
        if agreement is None or diff is None or not (math.isfinite(agreement) and math.isfinite(diff)):
            return False
        return bool(agreement >= self.min_top1_agreement and diff <= self.max_prob_diff)

    def to_json_dict(self) -> dict[str, float]:
        return {"min_top1_agreement": self.min_top1_agreement, "max_prob_diff": self.max_prob_diff}


# Float32 exports compute what the Keras model computes, only with other kernels: every top-1 the same and
# probabilities within 1e-4 (float32 rounding: ~1e-5 measured on MobileNet). Dynamic-range quantisation stores
# weights as int8 (activations stay float) and really moves outputs: MobileNet 1.0 with a fitted cars20 head kept
# 94-97 % of top-1s with largest differences 0.18-0.32 on 100-500 images (bench/predict_latency.py), so 90 % and 0.5
# are allowed; a broken export (wrong or garbled weights) agrees on far fewer and moves probabilities by ~1.
TOLERANCES = {
    "savedmodel": Tolerance(min_top1_agreement=1.0, max_prob_diff=1e-4),
    "tflite": Tolerance(min_top1_agreement=1.0, max_prob_diff=1e-4),
    "tflite-dynamic": Tolerance(min_top1_agreement=0.90, max_prob_diff=0.5),
}


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"export format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    return fmt


def exports_root(run: Run) -> Path:
    return run.file(EXPORTS_DIR)


def export_dir(run: Run, fmt: str) -> Path:
    """The folder of one export: its artifact and check.json."""
    return exports_root(run) / check_format(fmt)


def artifact_path(run: Run, fmt: str) -> Path:
    """The exported file (TFLite) or folder (SavedModel)."""
    return export_dir(run, fmt) / ARTIFACTS[fmt]


def check_path(run: Run, fmt: str) -> Path:
    return export_dir(run, fmt) / EXPORT_CHECK_FILE


def write_check(folder: Path, check: dict[str, Any]) -> None:
    atomic_write_json(folder / EXPORT_CHECK_FILE, check)


def model_stamp(run: Run) -> int | None:
    """The model file's mtime in ns: a check made on another version of model.keras is stale."""
    try:
        return run.model_path().stat().st_mtime_ns
    except OSError:
        return None


def size_bytes(path: Path) -> int:
    if path.is_dir():
        return sum(entry.stat().st_size for entry in path.rglob("*") if entry.is_file())
    return path.stat().st_size if path.is_file() else 0


@dataclass(frozen=True)
class ExportRecord:
    """One existing export of a run with its stored check (empty when the check is missing or torn)."""

    format: str
    path: Path
    check: dict[str, Any]
    stale: bool  # checked against a model file, or a calibration, that has changed since

    @property
    def passed(self) -> bool:
        return self.check.get("passed") is True and not self.stale

    def verdict(self) -> str:
        """'passed', 'FAILED its check', 'not checked' or 'stale' (the run's model changed since)."""
        if not self.check:
            return "not checked"
        if self.stale:
            return "stale: the run's model or its calibration changed since this export"
        return "passed" if self.passed else "FAILED its check"


def run_temperature(run: Run) -> float:
    """The temperature the run's predictions are scaled by (calibration.json), 1.0 when it has none."""
    calibration = run.calibration()
    return float(calibration["temperature"]) if calibration else 1.0


def list_exports(run: Run) -> list[ExportRecord]:
    """The run's exports whose artifact exists, in FORMATS order."""
    records = []
    stamp = model_stamp(run)
    temperature = run_temperature(run)
    for fmt in FORMATS:
        path = artifact_path(run, fmt)
        if not path.exists():
            continue
        check = read_json_object(check_path(run, fmt))
        stale = bool(check) and (check.get("model_mtime_ns") != stamp
                                 or check.get("temperature", 1.0) != temperature)
        records.append(ExportRecord(format=fmt, path=path, check=check, stale=stale))
    return records


def _percent(value: Any) -> str:
    return f"{value * 100:.1f} %" if isinstance(value, (int, float)) and math.isfinite(value) else "-"


def _diff(value: Any) -> str:
    return f"{value:.2g}" if isinstance(value, (int, float)) and math.isfinite(value) else "-"


def describe_check(check: dict[str, Any]) -> str:
    """One line: the figures against the tolerance, and the verdict."""
    if not check:
        return "not checked"
    tolerance = check.get("tolerance") or {}
    verdict = "passed" if check.get("passed") is True else "FAILED its check"
    if check.get("error"):
        return f"{verdict}: {check['error']}"
    return (f"top-1 agreement {_percent(check.get('top1_agreement'))} (needs >= "
            f"{_percent(tolerance.get('min_top1_agreement'))}), largest probability difference "
            f"{_diff(check.get('max_prob_diff'))} (allowed <= {_diff(tolerance.get('max_prob_diff'))}) on "
            f"{check.get('images', 0)} validation images: {verdict}")


def zip_folder(folder: Path) -> bytes:
    """A zip of the folder (a SavedModel), its entries under the folder's name."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for entry in sorted(folder.rglob("*")):
            if entry.is_file():
                archive.write(entry, Path(folder.name) / entry.relative_to(folder))
    return buffer.getvalue()


def remove_export(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
