"""Benchmark: a freeze-point sweep with and without the frozen-feature cache (and pruning), against plain Keras.

MobileNet 1.0 with ImageNet weights at 224 px on ../shared/data/cars20, augmentation off, 5 epochs, freeze points
87 (whole backbone), 73, 59 and 47, one job at a time (CARVIZ_SLOTS=1), each sweep from an empty cache:

  (a) per freeze point: epoch time (training + validation, median of epochs 2..N) of the uncached and the cached
      run, the speed-up and the FLOP bound (frozen + 3 x trainable) / (3 x trainable), and plain Keras's epoch
      time for the same model and data (model.fit, no carviz code; median of epochs 2-3) measured in the same run;
  (b) each sweep end to end (launch to last run done): uncached, cached, cached + pruning; best validation
      accuracy per point and the winning point;
  (c) peak memory (largest VmHWM of a job process) and the cache's size on disk.

    .venv/bin/python bench/sweep_speed.py [--dataset PATH] [--keras-home PATH] [--epochs 5] [--skip-plain]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
import carviz.ml  # noqa: E402,F401  (TensorFlow's CPU kernels switched as in carviz's jobs, plain-Keras baselines too)
SHARED = Path(os.environ.get("CARVIZ_SHARED") or REPO.parent / "shared")
FREEZE_POINTS = ("all", "73", "59", "47")  # cheapest first: early finishers set the bar pruning compares against


# ---------------------------------------------------------------- FLOPs


def layer_flops(layer) -> int:
    """Forward FLOPs (2 per multiply-add) of convolutions and dense layers; elementwise layers count 0."""
    import keras

    if isinstance(layer, keras.layers.DepthwiseConv2D):
        _, h, w, c = layer.output.shape
        kh, kw = layer.kernel_size
        return 2 * h * w * kh * kw * c
    if isinstance(layer, keras.layers.Conv2D):
        _, h, w, c_out = layer.output.shape
        kh, kw = layer.kernel_size
        return 2 * h * w * kh * kw * layer.input.shape[-1] * c_out // layer.groups
    if isinstance(layer, keras.layers.Dense):
        return 2 * layer.input.shape[-1] * layer.units
    return 0


def flop_bounds(num_classes: int) -> dict[str, dict[str, float]]:
    """Per freeze point: frozen and trainable forward FLOPs per image at the cache's cut, and the bound."""
    from carviz.ml import backbones
    from carviz.ml import features

    backbone = backbones.build_backbone("mobilenet", 224, "none", 1.0)
    per_layer = [layer_flops(layer) for layer in backbone.layers]
    layers = backbones.layers_of(backbone)
    head = 2 * backbone.output.shape[-1] * num_classes  # the classifier
    out = {}
    for freeze in FREEZE_POINTS:
        index = len(layers) + 1 if freeze == "all" else int(freeze)
        cut = len(layers) if freeze == "all" else features.cut_point_for(layers, index)
        frozen = sum(per_layer[:cut])
        trainable = sum(per_layer[cut:]) + head
        out[freeze] = {"cut": cut, "frozen": frozen, "trainable": trainable,
                       "bound": (frozen + 3 * trainable) / (3 * trainable)}
    return out


# ---------------------------------------------------------------- plain Keras


def plain_worker(dataset: str, freeze: str, epochs: int, batch_size: int) -> dict:
    """The seed protocol in plain Keras: image_dataset_from_directory (split 0.2, seed 123), MobileNet ImageNet,
    layers[:N-1] and every BatchNorm frozen, pooled head with a zero-initialised classifier, Adam 1e-4."""
    import keras
    import tensorflow as tf

    common = dict(validation_split=0.2, seed=123, image_size=(224, 224), batch_size=batch_size,
                  label_mode="categorical")
    train = keras.utils.image_dataset_from_directory(dataset, subset="training", **common)
    val = keras.utils.image_dataset_from_directory(dataset, subset="validation", **common)
    num_classes = len(train.class_names)
    train, val = train.cache().prefetch(tf.data.AUTOTUNE), val.cache().prefetch(tf.data.AUTOTUNE)
    base = keras.applications.MobileNet(input_shape=(224, 224, 3), include_top=False, weights="imagenet")
    n_frozen = len(base.layers) if freeze == "all" else int(freeze) - 1
    for i, layer in enumerate(base.layers):  # as the recommended preset: every BatchNorm frozen too
        if i < n_frozen or isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    inputs = keras.Input((224, 224, 3))
    x = base(keras.applications.mobilenet.preprocess_input(inputs))
    x = keras.layers.Dropout(0.2)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax", kernel_initializer="zeros")(x))
    model.compile(keras.optimizers.Adam(1e-4), "categorical_crossentropy", metrics=["accuracy"])
    times: list[float] = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)

    model.fit(train, validation_data=val, epochs=epochs, callbacks=[Timer()], verbose=0)
    return {"epoch_seconds": statistics.median(times[1:]) if len(times) > 1 else times[0], "epoch_times": times}


# ---------------------------------------------------------------- carviz sweeps


def peak_rss_mib(pid: int | None) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, TypeError):
        pass
    return 0.0


def run_sweep(label: str, root: Path, dataset: Path, epochs: int, batch_size: int, use_cache: bool,
              prune: bool) -> dict:
    """Launch one sweep in its own runs folder and cache, wait for it, collect timings, accuracies, memory."""
    from carviz.core import feature_cache
    from carviz.core.config import RECOMMENDED
    from carviz.core.store import read_json
    from carviz.core.sweeps import PruneConfig, SweepConfig, launch_sweep, read_sweep

    home = root / label
    (home / "runs").mkdir(parents=True)
    os.environ.update(CARVIZ_HOME=str(home), CARVIZ_CACHE=str(home / "cache"))
    base = RECOMMENDED.replace(dataset=str(dataset.resolve()), epochs=epochs, batch_size=batch_size,
                               precision="float32", feature_cache=use_cache)  # a path is recorded absolute
    sweep = SweepConfig(name=f"bench {label}", base=base, backbones=("mobilenet",), learning_rates=(1e-4,),
                        freeze_points=FREEZE_POINTS, prune=PruneConfig() if prune else None)
    started = time.perf_counter()
    record = launch_sweep(sweep, home / "runs")
    peak = 0.0
    while True:
        state = read_sweep(record.id, home / "runs", slots=1)
        for run in record.runs():
            status = read_json(run.file("status.json")) or {}
            peak = max(peak, peak_rss_mib(status.get("pid")))
        if state.status not in ("running", "queued"):
            break
        time.sleep(0.5)
    wall = time.perf_counter() - started
    if state.status != "done":
        sys.exit(f"sweep {label} ended {state.status}: " + "; ".join(
            f"{r.id}: {r.log_tail()[-500:]}" for r in record.runs()))
    points = {}
    for run, freeze in zip(record.runs(), FREEZE_POINTS):
        rows = run.metrics()
        cache_info = run.info().get("feature_cache") or {}
        points[freeze] = {
            "status": run.status().value,
            "epochs_done": len(rows),
            "epoch_seconds": statistics.median(r["seconds"] for r in rows[1:]) if len(rows) > 1 else None,
            "epoch_times": [r["seconds"] for r in rows],
            "best_val_accuracy": max(r["val_accuracy"] for r in rows),
            "cache": cache_info.get("source") if cache_info.get("used") else None,
            "feature_seconds": cache_info.get("seconds"),
        }
    cache = feature_cache.FeatureCache(home / "cache" / "features", 1 << 62)
    return {"wall_seconds": wall, "points": points, "peak_rss_mib": peak, "cache_bytes": cache.size_bytes()}


def winner(points: dict) -> str:
    return max(points, key=lambda f: points[f]["best_val_accuracy"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=SHARED / "data" / "cars20")
    parser.add_argument("--keras-home", type=Path, default=SHARED / "keras_home")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--skip-plain", action="store_true", help="do not measure the plain-Keras epoch times")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--plain-worker", metavar="FREEZE", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.plain_worker:
        print(json.dumps(plain_worker(str(args.dataset), args.plain_worker, 3, args.batch_size)))
        return
    if not args.dataset.is_dir() or not (args.keras_home / "models").is_dir():
        sys.exit(f"needs the car photos at {args.dataset} and ImageNet weights under {args.keras_home}/models")

    root = Path(tempfile.mkdtemp(prefix="carviz-sweep-bench-"))
    keras_home = root / "keras_home"
    shutil.copytree(args.keras_home, keras_home)
    for path in [keras_home, *keras_home.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)
    os.environ.update(KERAS_HOME=str(keras_home), CARVIZ_SLOTS="1", TF_CPP_MIN_LOG_LEVEL="2")
    classes = sorted(p.name for p in args.dataset.iterdir() if p.is_dir())
    print(f"MobileNet 1.0 ImageNet 224 px on {args.dataset} ({len(classes)} classes), augmentation off, "
          f"{args.epochs} epochs, batch {args.batch_size}, freeze points {', '.join(FREEZE_POINTS)}; "
          f"{os.cpu_count()} CPUs, one job at a time", flush=True)

    bounds = flop_bounds(len(classes))
    plain: dict[str, float] = {}
    if not args.skip_plain:
        for freeze in FREEZE_POINTS:
            out = subprocess.run([sys.executable, __file__, "--plain-worker", freeze, "--dataset", str(args.dataset),
                                  "--batch-size", str(args.batch_size)], capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"plain worker failed:\n{out.stderr[-3000:]}")
            plain[freeze] = json.loads(out.stdout.strip().splitlines()[-1])["epoch_seconds"]
            print(f"  plain Keras, freeze {freeze}: {plain[freeze]:.1f} s/epoch", flush=True)

    results = {}
    for label, use_cache, prune in (("uncached", False, False), ("cached", True, False),
                                    ("cached+pruning", True, True)):
        results[label] = run_sweep(label, root, args.dataset, args.epochs, args.batch_size, use_cache, prune)
        print(f"  sweep {label}: {results[label]['wall_seconds']:.0f} s", flush=True)

    print("\n(a) epoch time per freeze point (training + validation, median of epochs 2..N)")
    print(f"{'freeze':>6} {'cut':>4} {'plain':>7} {'uncached':>9} {'cached':>7} {'speed-up':>9} {'bound':>6} "
          f"{'of bound':>9} {'features':>9}")
    for freeze in FREEZE_POINTS:
        u = results["uncached"]["points"][freeze]["epoch_seconds"]
        c = results["cached"]["points"][freeze]["epoch_seconds"]
        b = bounds[freeze]["bound"]
        p = f"{plain[freeze]:.1f}" if freeze in plain else "-"
        # With the pooling head a fully frozen backbone leaves only the classifier to train: the FLOP bound is
        # then in the thousands and fixed per-step costs decide, so "of bound" is not meaningful there.
        bound_text, share = (f"{b:>5.1f}x", f"{100 * (u / c) / b:>8.0f}%") if b < 1000 else (">1000x", "     n/a")
        print(f"{freeze:>6} {bounds[freeze]['cut']:>4} {p:>7} {u:>9.2f} {c:>7.2f} {u / c:>8.1f}x {bound_text:>6} "
              f"{share:>9} {results['cached']['points'][freeze]['feature_seconds']:>8.1f}s")

    print("\n(b) the sweep end to end")
    base_wall = results["uncached"]["wall_seconds"]
    print(f"{'sweep':>15} {'wall s':>7} {'ratio':>6}  best val accuracy per point (epochs done)        winner")
    for label, result in results.items():
        accs = "  ".join(f"{f}:{p['best_val_accuracy']:.3f}({p['epochs_done']})" for f, p in result["points"].items())
        print(f"{label:>15} {result['wall_seconds']:>7.0f} {base_wall / result['wall_seconds']:>5.2f}x  {accs}  "
              f"{winner(result['points'])}")
    for label in ("cached", "cached+pruning"):
        diffs = [abs(results[label]["points"][f]["best_val_accuracy"] - results["uncached"]["points"][f]
                     ["best_val_accuracy"]) for f in FREEZE_POINTS if results[label]["points"][f]["status"]
                 == "succeeded"]
        print(f"  {label}: largest accuracy difference to uncached over finished points "
              f"{100 * max(diffs):.1f} points; same winner: "
              f"{winner(results[label]['points']) == winner(results['uncached']['points'])}")

    print("\n(c) memory and cache")
    for label, result in results.items():
        print(f"{label:>15}: peak job RSS {result['peak_rss_mib']:.0f} MiB, cache on disk "
              f"{result['cache_bytes'] / 2**20:.0f} MiB")
    if args.json:
        args.json.write_text(json.dumps({"bounds": bounds, "plain": plain, "results": results}, indent=2))
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
