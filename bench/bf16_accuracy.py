"""Benchmark: does mixed_bfloat16 train ResNet50 and DenseNet121 as well as float32? (No ImageNet weights offline.)

bench/scale.py measured both 1.6-2x faster in bfloat16 on CPUs with native bfloat16, and checked accuracy on MobileNet
with ImageNet weights only. Here both train from scratch (weights none, nothing frozen: every layer computes in
bfloat16), as carviz runs them, on a generated image folder (drawn like the demo set, so nothing is downloaded),
seeds 1-3 per precision, each run in a fresh process: validation and held-out test accuracy mean +- std and the
median epoch time. From scratch on generated images is a stricter test of bfloat16's rounding than fine-tuning.

    .venv/bin/python bench/bf16_accuracy.py [--classes 6] [--per-class 40] [--image-size 64] [--epochs 10]
                                            [--seeds 1,2,3] [--backbones resnet50,densenet121] [--json PATH]

--quick: 3 classes x 12 images, 2 epochs, one seed, ResNet50 only: a check that it runs, not figures to quote.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
PRECISIONS = ("float32", "mixed_bfloat16")


def work_run(dataset: str, backbone: str, precision: str, image_size: int, epochs: int, seed: int) -> dict[str, Any]:
    """One carviz run from scratch, in this process, as a job runs it."""
    from carviz.core.config import RECOMMENDED
    from carviz.core.store import create_run
    from carviz.ml import train

    config = RECOMMENDED.replace(name=f"{backbone} {precision} seed {seed}", dataset=dataset, backbone=backbone,
                                 weights="none", image_size=image_size, freeze=1, epochs=epochs, batch_size=16,
                                 learning_rate=1e-3, precision=precision, seed=seed, test_fraction=0.2,
                                 early_stopping_patience=0, checkpoint_every=epochs)
    run = create_run(config)
    status = train.train(run)
    if status.value != "succeeded":
        raise RuntimeError(f"run ended {status.value}: {run.log_tail()[-800:]}")
    evaluation = run.evaluation() or {}
    return {"val": evaluation.get("accuracy"), "test": evaluation.get("test_accuracy"),
            "epoch_seconds": [row["seconds"] for row in run.metrics()],
            "precision": run.info().get("model", {}).get("precision")}


def in_worker(**arguments: Any) -> dict[str, Any]:
    done = subprocess.run([sys.executable, __file__, "--worker", json.dumps(arguments)], capture_output=True,
                          text=True, env=os.environ.copy())
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"worker failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{100 * values[0]:.1f} %"
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f} %"


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        print("RESULT " + json.dumps(work_run(**json.loads(sys.argv[2]))), flush=True)
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, default=6)
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--backbones", default="resnet50,densenet121")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.quick:
        args.classes, args.per_class, args.epochs, args.seeds, args.backbones = 3, 12, 2, "1", "resnet50"
    root = Path(tempfile.mkdtemp(prefix="carviz-bf16-bench-"))
    figures: dict[str, Any] = {}
    try:
        from carviz.data.demo import generate_demo_dataset

        dataset = generate_demo_dataset(root / "data" / "shapes", per_class=args.per_class,
                                        image_size=args.image_size, classes=args.classes)
        (root / "runs").mkdir()
        os.environ.update(CARVIZ_HOME=str(root), CARVIZ_SLOTS="1", TF_CPP_MIN_LOG_LEVEL="2")
        for backbone in args.backbones.split(","):
            for precision in PRECISIONS:
                runs = [in_worker(dataset=str(dataset), backbone=backbone, precision=precision,
                                  image_size=args.image_size, epochs=args.epochs, seed=int(seed))
                        for seed in args.seeds.split(",")]
                figures[f"{backbone} {precision}"] = runs
                print(f"  {backbone} {precision}: test {[r['test'] for r in runs]}", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\n{args.classes} generated classes x {args.per_class} images at {args.image_size} px, 20 % test, weights "
          f"none, nothing frozen, batch 16, lr 1e-3, {args.epochs} epochs, seeds {args.seeds}; {os.cpu_count()} CPUs")
    for name, runs in figures.items():
        epochs = [s for r in runs for s in r["epoch_seconds"][1:]] or [s for r in runs for s in r["epoch_seconds"]]
        print(f"{name:>28}: val {mean_std([r['val'] for r in runs])}, test {mean_std([r['test'] for r in runs])}, "
              f"median epoch {statistics.median(epochs):.1f} s")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
