"""Export a run's model (SavedModel, TFLite float32 or dynamic-range quantised) and check it against the Keras model."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from carviz.core import exports
from carviz.core.jobs.record import now_iso
from carviz.core.store import Run, Status
from carviz.ml.predict import Predictor, load_model

CHECK_BATCH = 32

Runner = Callable[[np.ndarray], np.ndarray]  # float32 (N, S, S, 3) pixels -> float32 (N, classes) probabilities


def _float32_config(value: Any) -> Any:
    """A layer config with every dtype policy set to float32 (mixed policies only change where layers compute)."""
    if isinstance(value, dict):
        if value.get("class_name") == "DTypePolicy" or value.get("class_name") == "DTypePolicyMap":
            return "float32"
        return {key: ("float32" if key == "dtype" and isinstance(item, (str, dict)) else _float32_config(item))
                for key, item in value.items()}
    if isinstance(value, list):
        return [_float32_config(item) for item in value]
    return value


def in_float32(model: Any) -> Any:
    """The model itself when it computes in float32, else a float32 copy with the same weights: a mixed-precision
    model (mixed_bfloat16 on CPUs, mixed_float16 on GPUs) keeps float32 variables, and TFLite cannot convert its
    bfloat16 convolutions."""
    from carviz.ml.keras_graph import all_layers

    if all(getattr(layer, "compute_dtype", "float32") == "float32" for layer in all_layers(model)):
        return model
    copy = model.__class__.from_config(_float32_config(model.get_config()))
    copy.set_weights(model.get_weights())
    return copy


def with_temperature(model: Any, temperature: float) -> Any:
    """The model with the run's calibration applied to its output, softmax(log p / T), so an export gives the
    probabilities carviz's own predictions give; the model itself when T is 1."""
    if temperature == 1.0:
        return model
    import keras

    inputs = keras.Input(model.input_shape[1:], dtype="float32", name="images")
    probabilities = keras.ops.cast(model(inputs), "float32")
    logits = keras.ops.log(keras.ops.clip(probabilities, 1e-12, 1.0)) / float(temperature)
    return keras.Model(inputs, keras.ops.softmax(logits, axis=-1), name=f"{model.name}_calibrated")


def write_artifact(model: Any, fmt: str, folder: Path, temperature: float = 1.0) -> Path:
    """Write the model in `fmt` into folder (created); the artifact's path.

    savedmodel: Keras' model.export(format="tf_saved_model") (a `serve` endpoint, (None, S, S, 3) float32 pixels
    in, probabilities out). tflite / tflite-dynamic: that SavedModel (in a temporary folder) through
    tf.lite.TFLiteConverter.from_saved_model, with optimizations=[tf.lite.Optimize.DEFAULT] and no representative
    data for dynamic-range quantisation (int8 weights, float activations).
    """
    exports.check_format(fmt)
    folder.mkdir(parents=True, exist_ok=True)
    destination = folder / exports.ARTIFACTS[fmt]
    model = with_temperature(in_float32(model), temperature)
    if fmt == "savedmodel":
        model.export(str(destination), format="tf_saved_model", verbose=False)
        return destination
    import tensorflow as tf

    with tempfile.TemporaryDirectory(dir=folder, prefix=".saved-model-") as saved:
        model.export(saved, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        if fmt == "tflite-dynamic":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        destination.write_bytes(converter.convert())
    return destination


def tflite_runner(path: Path, num_threads: int | None = None) -> Runner:
    """A callable running the .tflite file on a batch (the input is resized to each batch's size)."""
    import tensorflow as tf

    with warnings.catch_warnings():  # tf.lite.Interpreter warns that LiteRT's package will replace it
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_path=str(path), num_threads=num_threads or os.cpu_count() or 1)
    source = interpreter.get_input_details()[0]["index"]
    output = interpreter.get_output_details()[0]["index"]
    shape: list[tuple[int, ...]] = [()]

    def run(batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if shape[0] != batch.shape:
            interpreter.resize_tensor_input(source, batch.shape)
            interpreter.allocate_tensors()
            shape[0] = batch.shape
        interpreter.set_tensor(source, batch)
        interpreter.invoke()
        return np.array(interpreter.get_tensor(output), dtype=np.float32)

    return run


def savedmodel_runner(path: Path) -> Runner:
    """A callable running the SavedModel's `serve` endpoint on a batch."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))

    def run(batch: np.ndarray) -> np.ndarray:
        return np.asarray(loaded.serve(tf.constant(batch, dtype=tf.float32)), dtype=np.float32)

    return run


def load_runner(fmt: str, path: Path) -> Runner:
    """The export at path, loaded back with TensorFlow's own loader (SavedModel) or interpreter (TFLite)."""
    return savedmodel_runner(path) if exports.check_format(fmt) == "savedmodel" else tflite_runner(path)


def validation_images(run: Run, image_size: int, classes: int) -> np.ndarray:
    """The run's validation images as prediction and evaluation see them: float32 (N, S, S, 3) pixels, decoded and
    resized by the training input pipeline."""
    from carviz.ml.pipelines import make_pipeline
    from carviz.ml.evaluate import check_files, split_files_of

    _, _, paths, labels = split_files_of(run, "validation")
    if not paths:
        raise ValueError(f"run {run.id} has an empty validation split: nothing to check an export on")
    check_files(paths, "validation")
    pipeline = make_pipeline(paths, labels, classes, image_size, CHECK_BATCH, training=False, cache=False)
    return np.concatenate([np.asarray(images, dtype=np.float32) for images, _ in pipeline])


def compare(reference: np.ndarray, exported: np.ndarray) -> tuple[float, float]:
    """(top-1 agreement, largest absolute probability difference); NaN outputs give a NaN difference."""
    if exported.shape != reference.shape:
        raise ValueError(f"the export gives outputs of shape {exported.shape}, the Keras model {reference.shape}")
    agreement = float(np.mean(exported.argmax(axis=1) == reference.argmax(axis=1)))
    diff = np.abs(exported.astype(np.float64) - reference.astype(np.float64))
    return agreement, float(np.nan if np.isnan(diff).any() else diff.max())


def _finite(value: float | None) -> float | None:
    return value if value is not None and np.isfinite(value) else None


def run_check(run: Run, fmt: str, path: Path, predictor: Predictor, images: np.ndarray | None = None) -> dict[str, Any]:
    """The export at path against the Keras model on the run's validation images: the check record (not written).

    An export that cannot be loaded or run fails its check with the error instead of raising.
    """
    tolerance = exports.TOLERANCES[exports.check_format(fmt)]
    images = validation_images(run, predictor.image_size, len(predictor.classes)) if images is None else images
    reference = predictor.predict_batch(images, CHECK_BATCH)
    agreement = diff = None
    error = None
    try:
        runner = load_runner(fmt, path)
        exported = np.concatenate([runner(images[start:start + CHECK_BATCH])
                                   for start in range(0, len(images), CHECK_BATCH)])
        agreement, diff = compare(reference, exported)
    except Exception as exc:  # noqa: BLE001 - a damaged export fails its check, with the reason, never crashes it
        error = f"the export could not be loaded or run: {type(exc).__name__}: {str(exc).strip()[:300]}"
    return {
        "format": fmt, "file": str(Path(path).relative_to(run.path)), "checked_at": now_iso(),
        "images": int(len(images)), "top1_agreement": _finite(agreement), "max_prob_diff": _finite(diff),
        "tolerance": tolerance.to_json_dict(), "passed": error is None and tolerance.passes(agreement, diff),
        "error": error, "model_mtime_ns": exports.model_stamp(run), "size_bytes": exports.size_bytes(Path(path)),
        "temperature": predictor.temperature,  # the export applies it (export.with_temperature) and is checked so
    }


def check_export(run: Run, fmt: str, predictor: Predictor | None = None) -> dict[str, Any]:
    """Check the run's existing export again and store the result beside it (check.json); the check."""
    path = exports.artifact_path(run, fmt)
    if not path.exists():
        raise FileNotFoundError(f"run {run.id} has no {exports.LABELS[fmt]} export (looked for {path})")
    check = run_check(run, fmt, path, predictor or load_model(run))
    exports.write_check(path.parent, check)
    return check


def export_run(run: Run, fmt: str, predictor: Predictor | None = None) -> dict[str, Any]:
    """Export a finished run's model in fmt under its exports/<fmt>/ (replacing an earlier one), check it on the
    validation images and store the check beside it; the check (its `passed` says whether it met the tolerance).

    predictor: the run's model already loaded (carviz.ml.predict.load_model), else it is loaded here.
    """
    exports.check_format(fmt)
    if run.status() != Status.SUCCEEDED or not run.has_model():
        raise ValueError(f"run {run.id} is {run.status().value}{'' if run.has_model() else ' without a model'}: "
                         "only a finished run's model can be exported")
    predictor = predictor or load_model(run)
    root = exports.exports_root(run)
    root.mkdir(exist_ok=True)
    started = time.perf_counter()
    staging = Path(tempfile.mkdtemp(dir=root, prefix=f".tmp-{fmt}-"))
    try:
        artifact = write_artifact(predictor.model, fmt, staging, predictor.temperature)
        seconds = time.perf_counter() - started
        check = run_check(run, fmt, artifact, predictor)
        check["file"] = str(exports.artifact_path(run, fmt).relative_to(run.path))  # where it is moved next
        check["export_seconds"] = round(seconds, 2)
        exports.write_check(staging, check)
        target = exports.export_dir(run, fmt)
        exports.remove_export(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return check
