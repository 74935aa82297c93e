"""Benchmark: single-image prediction latency of carviz's prediction path against model.predict and an eager model(x),
with TFLite float32 and dynamic-range quantised exports (latency and agreement), all measured in one run.

MobileNet 1.0 at 224 px with the recommended head and 20 classes, built by carviz.ml.model.build_model as a run builds
it, saved as a run's model.keras and loaded by carviz.ml.predict.load_model (the compiled inference function, warmed
at load). ImageNet weights come from $KERAS_HOME, or from ../shared/keras_home (copied to a temporary folder) when
present; otherwise weights none (the output says which). With ../shared/data/cars20 present, the classifier is fitted
on pooled features of some of its images (a linear probe, so the probabilities are those of a trained head) and
agreement is measured on other images; without it, the classifier gets seeded random weights and synthetic images.

Latency: one preprocessed image (1, 224, 224, 3) per call, `--calls` calls per method after `--warmup`, the methods
called in turn within each round (so a load change on a shared machine hits them alike); p50 and p95 in ms.
"carviz incl. resize" is Predictor.probabilities on the raw decoded image (resize and all).

    .venv/bin/python bench/predict_latency.py [--calls 200] [--warmup 20] [--images 100]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import carviz.ml  # noqa: E402,F401  (TensorFlow's CPU kernels switched as in carviz's jobs, plain-Keras baselines too)
SHARED = ROOT.parent / "shared"
WEIGHTS_FILE = "mobilenet_1_0_224_tf_no_top.h5"
CLASSES = 20
SIZE = 224


def keras_home(scratch: Path) -> str:
    """'imagenet' when the MobileNet weights file is where Keras looks (KERAS_HOME set here to a writable copy of
    ../shared/keras_home when that has it), else 'none'."""
    current = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    if (current / "models" / WEIGHTS_FILE).is_file():
        return "imagenet"
    shared = SHARED / "keras_home"
    if (shared / "models" / WEIGHTS_FILE).is_file():
        shutil.copytree(shared, scratch / "keras_home")
        os.environ["KERAS_HOME"] = str(scratch / "keras_home")
        return "imagenet"
    return "none"


def load_images(count: int, per_class_probe: int) -> tuple[list, list, list, str]:
    """(probe images, probe labels, held-out images): raw RGB arrays; and where they came from."""
    import numpy as np

    from carviz.ml.predict import decode_like_training

    root = SHARED / "data" / "cars20"
    if root.is_dir():
        classes = sorted(p.name for p in root.iterdir() if p.is_dir())[:CLASSES]
        probe, labels, held = [], [], []
        per_class_held = max(1, count // len(classes))
        for label, name in enumerate(classes):
            files = sorted((root / name).glob("*.jpg"))
            for index, path in enumerate(files[:per_class_probe + per_class_held]):
                pixels = decode_like_training(path.read_bytes())
                if pixels is None:
                    continue
                if index < per_class_probe:
                    probe.append(pixels)
                    labels.append(label)
                else:
                    held.append(pixels)
        return probe, labels, held, f"cars20 ({len(classes)} classes)"
    rng = np.random.default_rng(0)
    held = [rng.integers(0, 256, size=(240, 320, 3), dtype=np.uint8) for _ in range(count)]
    return [], [], held, "synthetic noise images (../shared/data/cars20 not found)"


def fit_classifier(model, probe: list, labels: list) -> str:
    """Give the model's zero classifier weights: a softmax probe on pooled features, or seeded random ones."""
    import keras
    import numpy as np

    from carviz.ml.predict import preprocess

    dense = model.get_layer("predictions")
    if not probe:
        rng = np.random.default_rng(0)
        dense.kernel.assign(rng.normal(0, 0.05, size=dense.kernel.shape).astype("float32"))
        return "seeded random classifier"
    pooled = keras.Model(model.input, model.get_layer("head_pool").output).predict(
        preprocess(probe, SIZE), batch_size=32, verbose=0)
    keras.utils.set_random_seed(0)
    probe_model = keras.Sequential([keras.Input((pooled.shape[1],)), keras.layers.Dense(CLASSES, activation="softmax")])
    probe_model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy", metrics=["accuracy"])
    history = probe_model.fit(pooled, np.asarray(labels), epochs=60, batch_size=64, verbose=0)
    kernel, bias = probe_model.layers[-1].get_weights()
    dense.kernel.assign(kernel)
    dense.bias.assign(bias)
    return (f"classifier fitted on pooled features of {len(probe)} images "
            f"(train accuracy {history.history['accuracy'][-1]:.2f})")


def percentiles(seconds: list[float]) -> tuple[float, float]:
    import numpy as np

    ms = np.asarray(seconds) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--images", type=int, default=100, help="held-out images for the agreement figures")
    parser.add_argument("--probe-per-class", type=int, default=20, help="cars20 images per class to fit the head on")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="carviz-bench-predict-"))
    os.environ["CARVIZ_HOME"] = str(scratch / "home")
    weights = keras_home(scratch)
    import numpy as np

    from carviz.core import exports
    from carviz.core.config import TrainConfig
    from carviz.core.store import Status, create_run
    from carviz.ml.devices import library_versions
    from carviz.ml.export import compare, tflite_runner, write_artifact
    from carviz.ml.model import build_model
    from carviz.ml.predict import load_model, preprocess

    try:
        config = TrainConfig(name="bench predict", dataset="bench", backbone="mobilenet", weights=weights,
                             image_size=SIZE, head="recommended", precision="float32")
        model, _ = build_model(config, CLASSES)
        probe, labels, held, source = load_images(args.images, args.probe_per_class)
        head = fit_classifier(model, probe, labels)
        run = create_run(config)
        run.write_classes([f"class_{i:02d}" for i in range(CLASSES)])
        run.save_model(model)
        run.write_status(Status.SUCCEEDED)
        started = time.perf_counter()
        predictor = load_model(run)  # what the Predict page and CLI do: load, build the compiled function, warm it
        load_seconds = time.perf_counter() - started
        keras_model = predictor.model

        folders = {}
        convert_seconds = {}
        for fmt in ("tflite", "tflite-dynamic"):
            started = time.perf_counter()
            folders[fmt] = write_artifact(keras_model, fmt, scratch / "exports" / fmt)
            convert_seconds[fmt] = time.perf_counter() - started
        sizes = {fmt: path.stat().st_size / 2**20 for fmt, path in folders.items()}
        runners = {fmt: tflite_runner(path) for fmt, path in folders.items()}

        raw = held[0]
        image = preprocess([raw], SIZE)
        methods = {
            "carviz (compiled, warmed)": lambda: predictor.predict_batch(image),
            "carviz incl. resize": lambda: predictor.probabilities([raw]),
            "model.predict": lambda: keras_model.predict(image, verbose=0),
            "eager model(x)": lambda: keras_model(image, training=False).numpy(),
            "TFLite float32": lambda: runners["tflite"](image),
            "TFLite dynamic-range": lambda: runners["tflite-dynamic"](image),
        }
        for _ in range(args.warmup):
            for call in methods.values():
                call()
        times: dict[str, list[float]] = {name: [] for name in methods}
        for _ in range(args.calls):
            for name, call in methods.items():
                started = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - started)

        batch = preprocess(held, SIZE)
        reference = predictor.predict_batch(batch)
        agreement = {}
        for fmt, runner in runners.items():
            exported = np.concatenate([runner(batch[i:i + 1]) for i in range(len(batch))])
            agreement[fmt] = compare(reference, exported)
        tracing = predictor.infer.experimental_get_tracing_count()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    versions = library_versions()
    print(f"CPU only, {os.cpu_count()} CPUs visible (shared with other work: figures vary between runs); "
          f"TensorFlow {versions.get('tensorflow')}, Keras {versions.get('keras')}")
    print(f"model: MobileNet 1.0, {SIZE} px, recommended head, {CLASSES} classes; weights {weights}"
          + ("" if weights == "imagenet" else " (ImageNet weights file not found: random backbone)"))
    print(f"head: {head}; agreement images: {len(held)} held-out {source}")
    print(f"load_model (load + build + warm the compiled function): {load_seconds:.2f} s; traced "
          f"{tracing} time(s) over all calls")
    print(f"TFLite export: float32 {convert_seconds['tflite']:.1f} s, {sizes['tflite']:.1f} MiB; dynamic-range "
          f"{convert_seconds['tflite-dynamic']:.1f} s, {sizes['tflite-dynamic']:.1f} MiB")
    print()
    carviz_p50 = percentiles(times["carviz (compiled, warmed)"])[0]
    print(f"one image per call, {args.calls} calls each after {args.warmup} warm-up rounds, methods interleaved:")
    print(f"{'method':<28} {'p50 ms':>8} {'p95 ms':>8} {'p50 / carviz':>13}")
    for name, seconds in times.items():
        p50, p95 = percentiles(seconds)
        print(f"{name:<28} {p50:>8.2f} {p95:>8.2f} {p50 / carviz_p50:>12.2f}x")
    print()
    for fmt, (agree, diff) in agreement.items():
        tolerance = exports.TOLERANCES[fmt]
        verdict = "passes" if tolerance.passes(agree, diff) else "FAILS"
        print(f"{exports.LABELS[fmt]} vs Keras on {len(held)} images: top-1 agreement {agree * 100:.1f} %, largest "
              f"probability difference {diff:.2g} ({verdict} carviz's check: >= {tolerance.min_top1_agreement:.0%}, "
              f"<= {tolerance.max_prob_diff:g})")
    predict_p50 = percentiles(times["model.predict"])[0]
    print()
    print(f"target carviz p50 <= 25 ms: {carviz_p50:.2f} ms -> {'met' if carviz_p50 <= 25 else 'NOT met'}")
    print(f"target >= 3x faster than model.predict: {predict_p50 / carviz_p50:.1f}x -> "
          f"{'met' if predict_p50 / carviz_p50 >= 3 else 'NOT met'}")


if __name__ == "__main__":
    main()
