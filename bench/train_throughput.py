"""Benchmark: images/s of a carviz training job against a plain Keras model.fit of the same model and data.

MobileNet at 224 px, freeze 1 (all trainable), 47 (the seed's conv_pw_7) and all (whole backbone frozen),
on a synthetic image folder. Each measurement runs in a fresh worker process; throughput counts the
wall time from the start of epoch 2 to the end of training (epoch 1 includes graph tracing), so the run
record's metrics, progress, heartbeat, TensorBoard and per-epoch checkpoints are all inside it.

    .venv/bin/python bench/train_throughput.py [--epochs 5] [--per-class 64] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import carviz.ml  # noqa: E402,F401  (TensorFlow's CPU kernels switched as in carviz's jobs, plain-Keras baselines too)

FREEZE_POINTS = (1, 47, "all")


def make_synthetic_dataset(root: Path, per_class: int, size: int = 224) -> None:
    """Four classes of noisy coloured images (content does not matter for speed)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in range(4):
        folder = root / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            base = rng.integers(0, 255, size=3)
            pixels = np.clip(rng.normal(base, 40, size=(size, size, 3)), 0, 255).astype("uint8")
            Image.fromarray(pixels).save(folder / f"{index:03d}.jpg", quality=90)


class EpochTimer:
    """Wall time from the start of epoch 2 to the end of training: a keras callback built lazily."""

    def __new__(cls):
        import keras

        class _Timer(keras.callbacks.Callback):
            def __init__(self) -> None:
                super().__init__()
                self.begins: list[float] = []
                self.end = 0.0

            def on_epoch_begin(self, epoch, logs=None):
                self.begins.append(time.perf_counter())

            def on_train_end(self, logs=None):
                self.end = time.perf_counter()

        return _Timer()


def config_for(dataset: str, freeze, epochs: int, batch_size: int):
    from carviz.core.config import TrainConfig

    return TrainConfig(name=f"bench freeze {freeze}", dataset=dataset, backbone="mobilenet", weights="none",
                       image_size=224, head="recommended", epochs=epochs, batch_size=batch_size, freeze=freeze,
                       learning_rate=1e-4, precision="float32")


def worker(kind: str, dataset: str, freeze, epochs: int, batch_size: int) -> dict:
    """One measurement in this process: 'carviz' (the job code, run record and all) or 'plain' (model.fit)."""
    from carviz.data import datasets
    from carviz.ml import pipelines
    from carviz.core import settings
    from carviz.core.store import create_run

    config = config_for(dataset, freeze, epochs, batch_size)
    timer = EpochTimer()
    if kind == "carviz":
        from carviz.ml.train import train

        run = create_run(config)
        status = train(run, extra_callbacks=[timer])
        assert status.value == "succeeded", run.log_tail()
        train_images = run.info()["train_images"]
    else:
        from carviz.ml.model import build_model

        scan = datasets.scan_dataset(settings.resolve_dataset(dataset))
        split = datasets.split_files(scan, config.validation_split, config.split_seed, config.test_fraction)
        train_data = pipelines.make_pipeline(split.train_paths, split.train_labels, len(split.classes),
                                            config.image_size, config.batch_size, training=True)
        val_data = pipelines.make_pipeline(split.val_paths, split.val_labels, len(split.classes),
                                          config.image_size, config.batch_size, training=False)
        model, _ = build_model(config, len(split.classes))
        model.fit(train_data, validation_data=val_data, epochs=epochs, callbacks=[timer], verbose=0)
        train_images = len(split.train_paths)
    seconds = timer.end - timer.begins[1]
    return {"kind": kind, "freeze": freeze, "images_per_second": train_images * (epochs - 1) / seconds,
            "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--per-class", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2, help="pairs per freeze point; medians are reported")
    parser.add_argument("--freeze", nargs="+", default=[str(f) for f in FREEZE_POINTS], help="freeze points to measure")
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "FREEZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        kind, freeze = args.worker
        freeze_value = freeze if freeze == "all" else int(freeze)
        print(json.dumps(worker(kind, "bench", freeze_value, args.epochs, args.batch_size)))
        return

    home = Path(tempfile.mkdtemp(prefix="carviz-bench-"))
    make_synthetic_dataset(home / "data" / "bench", args.per_class)
    env = dict(os.environ, CARVIZ_HOME=str(home), CARVIZ_SLOTS="1", TF_CPP_MIN_LOG_LEVEL="2")
    print(f"MobileNet 224 px, {4 * args.per_class} synthetic images (80 % train), batch {args.batch_size}, "
          f"{args.epochs} epochs, images/s over epochs 2..{args.epochs}; {os.cpu_count()} CPUs")
    print(f"{'freeze':>6} {'plain fit':>10} {'carviz job':>11} {'ratio':>6}   (range over {args.repeats} runs each)")
    for freeze in args.freeze:
        samples: dict[str, list[float]] = {"plain": [], "carviz": []}
        for repeat in range(args.repeats):
            # Alternate the order so warm caches or drift do not favour one side.
            for kind in (("plain", "carviz") if repeat % 2 == 0 else ("carviz", "plain")):
                out = subprocess.run([sys.executable, __file__, "--worker", kind, str(freeze), "--epochs",
                                      str(args.epochs), "--batch-size", str(args.batch_size)],
                                     env=env, capture_output=True, text=True, check=False)
                if out.returncode != 0:
                    sys.exit(f"{kind} worker failed:\n{out.stderr[-3000:]}")
                samples[kind].append(json.loads(out.stdout.strip().splitlines()[-1])["images_per_second"])
        plain, ours = statistics.median(samples["plain"]), statistics.median(samples["carviz"])
        spread = " ".join(f"{kind} {min(v):.1f}-{max(v):.1f}" for kind, v in samples.items())
        print(f"{freeze!s:>6} {plain:>10.1f} {ours:>11.1f} {ours / plain:>6.3f}   ({spread})", flush=True)


if __name__ == "__main__":
    main()
