"""How the feature pass runs a model's frozen part: Keras' traced call, or on CPUs a float32 TFLite (XNNPACK) copy.

Why TFLite: on CPUs, XNNPACK runs MobileNet's depthwise convolutions about 1.4-1.7x faster than TensorFlow's
kernels (bench/scale.py), for the same float32 result (within 1e-4). For ResNet50 and DenseNet121 it was no faster
(1.0-1.1x), so they stay on Keras. Converting costs a few seconds, so small data sets stay on Keras too.

Features computed by the TFLite copy are float32 whatever the run's precision, and are keyed as float32 in the
cache (features_precision): float32 and mixed_bfloat16 runs of the same model then share one entry. A copy that
fails to convert, or whose output differs from the Keras model's, is not used: the pass then runs the float32
Keras model, so the entry's key stays true.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import keras

ENGINES = ("auto", "keras", "tflite")
ENGINE_ENV = "CARVIZ_EXTRACTION_ENGINE"  # auto (default), keras or tflite: tests and benchmarks force one
TFLITE_FASTER: frozenset[str] = frozenset({"mobilenet", "mobilenetv2"})  # measured faster under XNNPACK
MIN_TFLITE_PIXELS = 1500 * 224 * 224  # below, the conversion (3-5 s) costs more than XNNPACK saves
CHECK_IMAGES = 2  # images the TFLite copy is checked on against the Keras model before it is used
TOLERANCE = 1e-3  # largest |difference| allowed, relative to the largest |value| (float32 differs by ~1e-5)


@dataclass(frozen=True)
class Plan:
    """Which engine the feature pass uses, and why."""

    engine: str  # "keras" or "tflite"
    reason: str


def engine_setting() -> str:
    setting = os.environ.get(ENGINE_ENV, "auto").strip().lower() or "auto"
    if setting not in ENGINES:
        raise ValueError(f"{ENGINE_ENV}={setting!r}: must be one of {', '.join(ENGINES)}")
    return setting


def _on_gpu() -> bool:
    import keras

    if keras.backend.backend() != "tensorflow":
        return True  # TFLite needs TensorFlow's backend; other backends keep their own path (GPU machines)
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))


def plan(backbone: str, images: int, image_size: int, setting: str | None = None, on_gpu: bool | None = None) -> Plan:
    """The engine for a pass over `images` images of a backbone: the same answer for every run on one data set,
    so their cache keys agree."""
    setting = engine_setting() if setting is None else setting
    if setting == "keras":
        return Plan("keras", f"{ENGINE_ENV}=keras")
    if (_on_gpu() if on_gpu is None else on_gpu):
        return Plan("keras", "on a GPU (or a backend other than TensorFlow): Keras")
    if setting == "tflite":
        return Plan("tflite", f"{ENGINE_ENV}=tflite")
    if backbone not in TFLITE_FASTER:
        return Plan("keras", f"{backbone} is not faster under XNNPACK")
    if images * image_size**2 < MIN_TFLITE_PIXELS:
        return Plan("keras", f"{images} images: too few to pay for the conversion")
    return Plan("tflite", f"{backbone} on a CPU: XNNPACK's depthwise convolutions are faster")


def features_precision(the_plan: Plan, precision: str) -> str:
    """The precision the pass computes features in (part of their cache key)."""
    return "float32" if the_plan.engine == "tflite" else precision


def spec_precision(backbone: str, images: int, image_size: int, precision: str) -> str:
    """features_precision of the pass planned for a run's data set: what its feature_spec is keyed with."""
    return features_precision(plan(backbone, images, image_size), precision)


def cpu_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass
class Extractor:
    """Runs the frozen part on a batch: the list of its outputs (in the part's output order) as numpy arrays."""

    run: Callable[[Any], list[np.ndarray]]
    engine: str
    note: str  # for the run's record: which engine, and why when it is not the planned one

    def __call__(self, x: Any) -> list[np.ndarray]:
        return self.run(x)


def extractor(part: "keras.Model", the_plan: Plan, precision: str) -> Extractor:
    """The pass's engine for `part`, computing in `precision` (features_precision): the planned one, or Keras when
    the TFLite copy cannot be made or does not match."""
    from carviz.ml.export import in_float32

    if precision == "float32":
        part = in_float32(part)  # a mixed-precision model's float32 twin (the same weights)
    if the_plan.engine == "tflite":
        try:
            return _tflite_extractor(part)
        except Exception as error:  # noqa: BLE001 - any failure means: use Keras, and say why
            return _keras_extractor(part, f"Keras (the TFLite copy was not used: {str(error)[:200]})")
    return _keras_extractor(part, "Keras")


def _keras_extractor(part: "keras.Model", note: str) -> Extractor:
    """part(x, training=False) as one traced function (much faster than eager calls batch after batch)."""
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def infer(x: Any) -> Any:
        return part(x, training=False)

    def run(x: Any) -> list[np.ndarray]:
        values = infer(x)
        return [np.asarray(v) for v in values] if isinstance(values, (list, tuple)) else [np.asarray(values)]

    return Extractor(run, "keras", note)


def _tflite_extractor(part: "keras.Model") -> Extractor:
    """The float32 part converted to TFLite (through a SavedModel, as exports are) and run by its interpreter with
    XNNPACK on this process's CPUs; checked on CHECK_IMAGES random images against the Keras part first."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="carviz-extract-") as folder:
        part.export(folder, format="tf_saved_model", verbose=False)
        blob = tf.lite.TFLiteConverter.from_saved_model(folder).convert()
    threads = cpu_threads()
    with warnings.catch_warnings():  # tf.lite.Interpreter warns that LiteRT's package will replace it
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_content=blob, num_threads=threads)
    signature = interpreter.get_signature_runner()
    (input_name,) = interpreter.get_signature_list()["serving_default"]["inputs"]
    count = len(part.outputs)
    names = [f"output_{i}" for i in range(count)]  # Keras' export names outputs in the model's order

    def run(x: Any) -> list[np.ndarray]:
        out = signature(**{input_name: np.ascontiguousarray(np.asarray(x), dtype=np.float32)})
        return [np.array(out[name]) for name in names]  # copies: the interpreter reuses its buffers

    shape = tuple(int(d) for d in part.inputs[0].shape[1:])
    sample = np.random.default_rng(0).uniform(0, 255, (CHECK_IMAGES, *shape)).astype("float32")
    expected = part(sample, training=False)
    expected = [np.asarray(v) for v in (expected if isinstance(expected, (list, tuple)) else [expected])]
    for got, want in zip(run(sample), expected, strict=True):
        scale = max(1e-12, float(np.abs(want).max()))
        if got.shape != want.shape or not float(np.abs(got - want).max()) <= TOLERANCE * scale:
            raise ValueError(f"its output differs from the Keras model's (shape {got.shape} vs {want.shape})")
    return Extractor(run, "tflite", f"TFLite (XNNPACK, float32, {threads} threads)")
