"""Benchmark: does starting from a carviz run beat ImageNet alone on classes the parent never saw?

The study's protocol in small: a parent MobileNet (ImageNet weights, alpha 0.25, 224 px) fine-tuned from the seed's
freeze 47 on 16 of ../shared's cars20 classes, then children on the 4 other classes: a new classifier on the frozen
backbone (freeze all) and a fine-tune from freeze 47, each started from the parent's run and from ImageNet alone,
over several seeds on one split (the seeds vary the initialisation only). Prints kept val and test accuracy.

    .venv/bin/python bench/transfer_from_run.py [--seeds 1,2,3] [--parent-epochs 40] [--child-epochs 8]
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
SHARED = Path(os.environ.get("CARVIZ_SHARED") or REPO_ROOT.parent / "shared")
CHILD_CLASSES = ("Audi S4 Sedan 2007", "Ford GT Coupe 2006", "Mercedes-Benz 300-Class Convertible 1993",
                 "Volvo 240 Sedan 1993")
IMAGENET = ("--backbone", "mobilenet", "--alpha", "0.25", "--weights", "imagenet", "--image-size", "224",
            "--head", "recommended")
COMMON = ("--batch-size", "16", "--precision", "float32", "--freeze-all-bn", "--split-seed", "123",
          "--test-fraction", "0.2")


def train(home: Path, keras_home: Path, dataset: Path, name: str, *flags: str) -> str:
    """One run as `python -m carviz train --foreground`; its id."""
    from carviz.core.store import list_runs

    env = dict(os.environ, CARVIZ_HOME=str(home), KERAS_HOME=str(keras_home), TF_CPP_MIN_LOG_LEVEL="2")
    before = {run.id for run in list_runs(home / "runs")}
    result = subprocess.run([sys.executable, "-m", "carviz", "train", "--foreground", "--dataset-path", str(dataset),
                             "--name", name, *COMMON, *flags], cwd=REPO_ROOT, env=env, capture_output=True,
                            text=True, timeout=3600)
    if result.returncode != 0:
        sys.exit(f"{name} failed:\n{result.stderr[-3000:]}")
    (run_id,) = [run.id for run in list_runs(home / "runs") if run.id not in before]
    return run_id


def mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values) * 100:5.1f} ± {spread * 100:4.1f} %"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--parent-epochs", type=int, default=40)  # 8 left it at 35 % val: too weak to carry
    parser.add_argument("--child-epochs", type=int, default=8)
    args = parser.parse_args()
    seeds = [s.strip() for s in args.seeds.split(",") if s.strip()]
    cars20, weights = SHARED / "data" / "cars20", SHARED / "keras_home" / "models"
    if not cars20.is_dir() or not (weights / "mobilenet_2_5_224_tf_no_top.h5").is_file():
        print(f"skipped: needs {cars20} and the MobileNet 0.25 ImageNet weights in {weights}")
        return
    from carviz.core.store import Store, summarize

    root = Path(tempfile.mkdtemp(prefix="carviz-transfer-bench-"))
    try:
        keras_home = Path(shutil.copytree(SHARED / "keras_home", root / "keras_home"))
        for path in [keras_home, *keras_home.rglob("*")]:
            path.chmod(path.stat().st_mode | stat.S_IWUSR)
        parent_set, child_set = root / "parent16", root / "child4"
        for name in sorted(p.name for p in cars20.iterdir() if p.is_dir()):
            shutil.copytree(cars20 / name, (child_set if name in CHILD_CLASSES else parent_set) / name)
        home = root / "home"
        (home / "runs").mkdir(parents=True)
        started = time.perf_counter()
        parent = train(home, keras_home, parent_set, "parent16", *IMAGENET, "--freeze", "47", "--lr", "3e-4",
                       "--epochs", str(args.parent_epochs), "--seed", "1")
        parent_seconds = time.perf_counter() - started
        store = Store(home / "runs")
        parent_row = summarize(store.get_run(parent))
        print(f"parent: 16 cars20 classes, fine-tuned from freeze 47, {args.parent_epochs} epochs in "
              f"{parent_seconds:.0f} s: kept val {parent_row['kept_val_accuracy'] * 100:.1f} %, test "
              f"{(parent_row['test_accuracy'] or 0) * 100:.1f} %", flush=True)
        children = {"classifier only (freeze all, lr 1e-2)": ("--freeze", "all", "--lr", "1e-2"),
                    "fine-tune (freeze 47, lr 3e-4)": ("--freeze", "47", "--lr", "3e-4")}
        print(f"children: {len(CHILD_CLASSES)} other cars20 classes, {args.child_epochs} epochs, seeds "
              f"{', '.join(seeds)}; kept val / test accuracy, mean ± std over seeds")
        print(f"{'child training':<38} {'start':<14} {'val':>15} {'test':>15}")
        for label, flags in children.items():
            for start, origin in (("from the run", ("--from-run", parent)), ("ImageNet alone", IMAGENET)):
                rows = [summarize(store.get_run(train(home, keras_home, child_set, f"{label} {start} {seed}",
                                                      *origin, *flags, "--epochs", str(args.child_epochs),
                                                      "--seed", seed))) for seed in seeds]
                val = [row["kept_val_accuracy"] for row in rows]
                test = [row["test_accuracy"] for row in rows]
                print(f"{label:<38} {start:<14} {mean_std(val):>15} {mean_std(test):>15}", flush=True)
        child_images = sum(1 for _ in child_set.rglob("*.jpg"))
        print(f"(child set: {child_images} images; test 20 %, validation 20 % of them, the same for every child)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
