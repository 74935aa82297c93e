"""Classify images with a trained run: load its model once, preprocess as training does, top-k classes."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
from PIL import Image

from carviz.core.calibration import scale
from carviz.data.datasets import load_image_rgb
from carviz.core.store import Run

if TYPE_CHECKING:
    import keras

TopK = list[tuple[str, float]]


def model_path(run: Run) -> Path:
    return run.model_path()


def model_version(run: Run) -> float:
    """The model file's mtime: part of any cache key, so a retrained/resumed run is reloaded."""
    return model_path(run).stat().st_mtime


def preprocess(images: Sequence[Image.Image | np.ndarray] | np.ndarray, image_size: int) -> np.ndarray:
    """A float32 (N, S, S, 3) batch in 0..255, resized exactly as pipelines.make_pipeline does for training:
    bilinear tf.image.resize of the RGB pixels, rounded and clipped to uint8, then cast to float32.

    images: PIL images, HxWx3 arrays (any sizes), or one (N, H, W, 3) / (H, W, 3) array.
    """
    import tensorflow as tf

    if isinstance(images, np.ndarray):
        arrays = [images] if images.ndim == 3 else list(images)
    else:
        arrays = [
            np.asarray(image.convert("RGB") if image.mode != "RGB" else image) if isinstance(image, Image.Image)
            else np.asarray(image)
            for image in images
        ]
    out = np.empty((len(arrays), image_size, image_size, 3), dtype=np.float32)
    for index, array in enumerate(arrays):
        if array.ndim != 3 or array.shape[-1] != 3:
            raise ValueError(f"image {index}: expected HxWx3 RGB, got shape {array.shape}")
        resized = tf.image.resize(array, (image_size, image_size), method="bilinear")
        out[index] = tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8).numpy()
    return out


def decode_like_training(data: bytes) -> np.ndarray | None:
    """RGB uint8 pixels decoded by tf.io.decode_image, as the training pipeline decodes its files (Pillow's
    JPEG decoding differs by a few levels); None when TensorFlow cannot decode the bytes.

    Like training, this ignores EXIF orientation.
    """
    import tensorflow as tf

    try:
        return tf.io.decode_image(data, channels=3, expand_animations=False).numpy()
    except (tf.errors.InvalidArgumentError, ValueError):
        return None


def top_k(probabilities: np.ndarray, classes: Sequence[str], k: int = 5) -> list[TopK]:
    """Per row of probabilities, the k most likely (class, probability), most likely first."""
    k = max(1, min(k, len(classes)))
    result = []
    for row in np.asarray(probabilities, dtype=np.float64):
        order = np.argsort(-row, kind="stable")[:k]
        result.append([(classes[i], float(row[i])) for i in order])
    return result


def compiled_inference(model: "keras.Model", image_size: int) -> Any:
    """The model's forward pass as one tf.function with a fixed input signature, (None, S, S, 3) float32 pixels:
    traced once (on its first call), then reused for every batch size; softmax outputs as float32 (a mixed
    precision model computes in its own policy)."""
    import tensorflow as tf

    spec = tf.TensorSpec((None, image_size, image_size, 3), tf.float32, name="images")

    @tf.function(input_signature=[spec], reduce_retracing=True)
    def infer(images: Any) -> Any:
        return tf.cast(model(images, training=False), tf.float32)

    return infer


@dataclass
class Predictor:
    """A run's model with what is needed to use it: class names (label order) and input size. Prediction runs
    through `infer`, the model's compiled inference function (compiled_inference), built with the predictor."""

    model: "keras.Model"
    classes: list[str]
    image_size: int
    run_id: str = ""
    infer: Any = None  # built in __post_init__ unless given
    temperature: float = 1.0  # the run's calibration (core/calibration.py): applied to every probability given out

    def __post_init__(self) -> None:
        if self.infer is None:
            self.infer = compiled_inference(self.model, self.image_size)

    def warm_up(self) -> None:
        """Trace the compiled function once now (one dummy image), so the first real prediction is fast."""
        self.infer(np.zeros((1, self.image_size, self.image_size, 3), dtype=np.float32))

    def probabilities(self, images: Sequence[Image.Image | np.ndarray] | np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Softmax outputs, (N, classes), for raw RGB images of any size."""
        batch = preprocess(images, self.image_size)
        if len(batch) == 0:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        return np.asarray(self.predict_batch(batch, batch_size))

    def predict_batch(self, batch: np.ndarray, batch_size: int = 32, calibrated: bool = True) -> np.ndarray:
        """Softmax outputs for an already preprocessed float32 (N, S, S, 3) batch, scaled by the run's temperature
        unless calibrated=False (the model's own outputs: what a temperature is fitted on)."""
        outputs = []
        batch = np.asarray(batch, dtype=np.float32)
        for start in range(0, len(batch), batch_size):
            # the compiled function rather than model.predict (tf.data and callback overhead per call) or an eager
            # model(x) (op-by-op dispatch): one graph call per chunk, whatever its size
            outputs.append(self.infer(batch[start:start + batch_size]).numpy())
        if not outputs:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        probabilities = np.concatenate(outputs)
        if calibrated and self.temperature != 1.0:
            probabilities = scale(probabilities, self.temperature).astype(np.float32)
        return probabilities

    def predict(self, images: Sequence[Image.Image | np.ndarray] | np.ndarray, top_k: int = 5) -> list[TopK]:
        """Per image the top_k (class, probability) pairs, most likely first."""
        return _top_k(self.probabilities(images), self.classes, top_k)


_top_k = top_k  # Predictor.predict's parameter shadows the function name


def load_model(run: Run) -> Predictor:
    """The run's trained model with its classes and input size; FileNotFoundError when it has none (yet)."""
    path = model_path(run)
    if not path.is_file():
        raise FileNotFoundError(f"run {run.id} has no trained model (no model file; status {run.status().value})")
    classes = run.classes() or run.run_info().classes
    if not classes:
        raise FileNotFoundError(f"run {run.id} has no class list (no classes.json)")
    image_size = int(run.config_dict().get("image_size") or 0)
    if image_size <= 0:
        raise ValueError(f"run {run.id}: config.json has no image_size")
    import keras

    from carviz.ml.backbones import register_serializables

    register_serializables()  # the model may hold carviz's own preprocessing layer
    model = keras.saving.load_model(path, compile=False)
    outputs = model.output_shape[-1]
    if outputs != len(classes):
        raise ValueError(f"run {run.id}: the model has {outputs} outputs but {len(classes)} classes are recorded")
    calibration = run.calibration()
    predictor = Predictor(model=model, classes=list(classes), image_size=image_size, run_id=run.id,
                          temperature=float(calibration["temperature"]) if calibration else 1.0)
    predictor.warm_up()  # built once per loaded model and traced here, not on the user's first image
    return predictor


@dataclass(frozen=True)
class FilePrediction:
    """One file's result: its top-k, or the error that kept it from being classified."""

    name: str
    top: TopK | None
    error: str | None = None
    image: Image.Image | None = None  # the decoded image (for display), None on error


def _read_source(source: str | Path | BinaryIO | bytes | tuple[str, bytes]) -> tuple[str, str, bytes]:
    """(display name, name used in error messages, content)."""
    if isinstance(source, tuple):
        return source[0], source[0], bytes(source[1])
    if isinstance(source, bytes):
        return "image", "image", source
    if isinstance(source, (str, Path)):
        return Path(source).name, str(source), Path(source).read_bytes()
    name = str(getattr(source, "name", "upload"))
    if hasattr(source, "seek"):
        source.seek(0)
    return name, name, source.read()


def predict_files(predictor: Predictor, sources: Sequence[str | Path | BinaryIO | bytes | tuple[str, bytes]],
                  top_k: int = 5, keep_images: bool = False) -> list[FilePrediction]:
    """Classify files (paths, file objects such as Streamlit uploads, bytes or (name, bytes)) in one batch.

    Each file is checked with Pillow (clear errors; the displayed image) and, when TensorFlow can decode it,
    fed to the model as training decodes its files. A file that is not a readable image gets an error message
    instead; the others are still classified.
    """
    names: list[str] = []
    shown: list[Image.Image | None] = []
    pixels: list[np.ndarray | None] = []
    errors: list[str | None] = []
    for source in sources:
        try:
            name, error_name, data = _read_source(source)
        except OSError as exc:
            name = Path(str(getattr(source, "name", source))).name
            names.append(name)
            shown.append(None)
            pixels.append(None)
            errors.append(f"{name}: cannot be read ({exc})")
            continue
        names.append(name)
        handle = io.BytesIO(data)
        handle.name = error_name  # load_image_rgb names the file in its errors
        try:
            image = load_image_rgb(handle)
        except (ValueError, OSError) as exc:
            shown.append(None)
            pixels.append(None)
            errors.append(f"{name}: not a usable image ({_strip_name(str(exc), error_name)})")
            continue
        decoded = decode_like_training(data)
        shown.append(image)
        pixels.append(decoded if decoded is not None else np.asarray(image))
        errors.append(None)
    good = [array for array in pixels if array is not None]
    tops = iter(predictor.predict(good, top_k=top_k) if good else [])
    results = []
    for name, image, array, error in zip(names, shown, pixels, errors):
        if array is None:
            results.append(FilePrediction(name=name, top=None, error=error))
        else:
            results.append(FilePrediction(name=name, top=next(tops), image=image if keep_images else None))
    return results


def _strip_name(message: str, name: Any) -> str:
    prefix = f"{name}: "
    return message[len(prefix):] if message.startswith(prefix) else message
