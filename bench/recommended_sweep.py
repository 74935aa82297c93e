"""Benchmark: the one-click recommended sweep against a hand grid, and augmentation with and without the cache.

Both parts on one dataset (default ../shared/data/cars20), MobileNet 1.0 with ImageNet weights (an offline copy of
../shared/keras_home) at 224 px, the recommended preset, one job at a time (CARVIZ_SLOTS=1), each sweep in its own
CARVIZ_HOME and feature cache (nothing computed by one is reused by another), all in one run:

  (A) the recommended sweep (`carviz sweep --recommended`: the LR range test, then the grid it picks: block-start
      freeze points and "all", three times the suggested rate and the rate itself, seeds 1-3, pruning, the cache) against a hand
      grid (learning rates 1e-3 and 1e-4 x freeze all, 73, 59, 47, the same seeds, pruning rule and epochs). Both
      use the plan's split_seed and test_fraction, so their test splits are the same images. Per sweep: wall time
      (the LR test included), the verdict (views.plots.sweeps.verdict: is the winner clear?) and the recommended
      run's kept validation and test accuracy (recommend.recommended_run: chosen by validation, never by test);
  (B) augmentation on, freeze 73, 3 seeds: runs on cached augmented views (augment_views, default 4) against runs
      that augment the images every epoch (no cache): epoch time (training + validation, median of epochs 2..N)
      and its ratio, the feature pass, the sweep wall time, and the final test accuracy mean ± std over the seeds.

    .venv/bin/python bench/recommended_sweep.py [--dataset PATH] [--keras-home PATH] [--epochs 5] [--seeds 1,2,3]
                                                [--quick] [--json PATH]

--quick: ../shared/data/cars-mini, 2 epochs, seeds 1,2, a 10-step LR test: a check that it all runs (about 6
minutes on 2 CPUs, mostly the jobs' start-up), not figures to quote.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import stat
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("CARVIZ_SHARED") or REPO.parent / "shared")
HAND_LRS = (1e-3, 1e-4)
HAND_FREEZE = ("all", 73, 59, 47)
AUGMENTED_FREEZE = 73


def use_home(root: Path, label: str) -> Path:
    """A fresh CARVIZ_HOME (and feature cache) for one sweep; later calls read settings from the environment."""
    home = root / label
    (home / "runs").mkdir(parents=True)
    os.environ.update(CARVIZ_HOME=str(home), CARVIZ_CACHE=str(home / "cache"))
    return home


def wait_for(sweep_id: str, runs_root: Path) -> Any:
    """Poll the sweep until no run is queued or running; its final SweepState."""
    from carviz.core.sweeps import read_sweep

    while True:
        state = read_sweep(sweep_id, runs_root, slots=1)
        if state.status not in ("running", "queued"):
            return state
        time.sleep(1.0)


def check_done(label: str, state: Any) -> None:
    if state.status != "done":
        sys.exit(f"sweep {label} ended {state.status}: " + "; ".join(
            f"{run.id}: {run.log_tail()[-500:]}" for run in state.record.runs()))


def judged(state: Any) -> dict[str, Any]:
    """The sweep's verdict and the run it recommends, as the Sweeps page and sweep-show give them."""
    from carviz.core.recommend import recommended_run
    from carviz.views.plots.sweeps import sweep_points, verdict

    result = verdict(sweep_points(state.rows))
    pick = recommended_run(state.rows, result) or {}
    row = pick.get("row") or {}
    counts = ", ".join(f"{n} {status}" for status, n in sorted(state.counts.items()))
    skipped = sum(1 for row in state.rows if row.get("pruned_at_epoch") == 0)
    if skipped:
        counts += f" ({skipped} of them never trained: their configuration was pruned)"
    return {"clear": result["clear"], "verdict": result["text"], "runs": counts,
            "winner_val": row.get("kept_val_accuracy"), "winner_test": row.get("test_accuracy"),
            "winner": f"lr {row.get('learning_rate')} freeze {row.get('freeze')} seed {row.get('seed')}"
            if row else None}


def recommended(root: Path, dataset: Path, epochs: int, seeds: tuple[int, ...], lr_steps: int | None) -> dict:
    """The one-click path as `sweep --recommended` takes it: plan, LR range test in this process (it launches the
    sweep when it ends), then wait for the sweep."""
    from carviz.core import recommend
    from carviz.ml.backbones import list_layers
    from carviz.ml.lr_range import run_lr_range_job

    home = use_home(root, "recommended")
    plan = recommend.recommended_sweep(str(dataset.resolve()), "mobilenet", list_layers("mobilenet", 224),
                                       epochs=epochs)
    plan = dataclasses.replace(plan, seeds=seeds)
    started = time.perf_counter()
    test = recommend.create_recommended(plan, home / "runs", steps=lr_steps)
    result = run_lr_range_job(test.path)
    lr_seconds = time.perf_counter() - started
    sweep_id = recommend.planned_sweep_id(test)
    if sweep_id is None:
        sys.exit(f"the LR range test ended {test.state().status.value} without launching the sweep")
    state = wait_for(sweep_id, home / "runs")
    wall = time.perf_counter() - started
    check_done("recommended", state)
    config = state.record.config
    return {"plan": plan, "wall_seconds": wall, "lr_test_seconds": lr_seconds, "suggested_lr": result.suggested_lr,
            "learning_rates": list(config.learning_rates), "freeze_points": [str(p) for p in config.freeze_points],
            "runs_total": len(state.rows), **judged(state)}


def grid(root: Path, label: str, config: Any) -> tuple[float, Any]:
    from carviz.core.sweeps import launch_sweep

    home = use_home(root, label)
    started = time.perf_counter()
    record = launch_sweep(config, home / "runs")
    state = wait_for(record.id, home / "runs")
    wall = time.perf_counter() - started
    check_done(label, state)
    return wall, state


def hand_grid(root: Path, plan: Any) -> dict:
    """The hand grid on the plan's base config: same dataset, split, test split, epochs, seeds and pruning rule."""
    from carviz.core.config import SweepConfig

    config = SweepConfig(name="hand grid", base=plan.base, backbones=("mobilenet",), learning_rates=HAND_LRS,
                         freeze_points=HAND_FREEZE, seeds=plan.seeds, prune=plan.prune)
    wall, state = grid(root, "hand", config)
    return {"wall_seconds": wall, "learning_rates": list(HAND_LRS), "freeze_points": [str(p) for p in HAND_FREEZE],
            "runs_total": len(state.rows), **judged(state)}


def augmented(root: Path, plan: Any, cached: bool) -> dict:
    """Augmentation on at freeze 73, the plan's seeds, one learning rate (the preset's), no pruning."""
    from carviz.core.config import Augmentation, SweepConfig

    base = plan.base.replace(augmentation=Augmentation(enabled=True), feature_cache=cached)
    config = SweepConfig(name=f"augmented {'cached' if cached else 'uncached'}", base=base,
                         backbones=("mobilenet",), learning_rates=(base.learning_rate,),
                         freeze_points=(AUGMENTED_FREEZE,), seeds=plan.seeds, prune=None)
    wall, state = grid(root, "aug-cached" if cached else "aug-uncached", config)
    runs = state.record.runs()
    epoch_times, passes, tests, used = [], [], [], []
    for run in runs:
        rows = run.metrics()
        epoch_times.append(statistics.median(r["seconds"] for r in (rows[1:] or rows)))
        info = run.info().get("feature_cache") or {}
        used.append(info.get("augmented_views") if info.get("used") else 0)
        passes.append(info.get("seconds") or 0.0)
        tests.append((run.evaluation() or {}).get("test_accuracy"))
    return {"wall_seconds": wall, "epoch_seconds": statistics.median(epoch_times), "epoch_times": epoch_times,
            "feature_pass_seconds": passes, "views": used, "test_accuracies": tests,
            "augment_views": base.augment_views}


def mean_std(values: list[float | None]) -> str:
    numbers = [v for v in values if isinstance(v, (int, float))]
    if not numbers:
        return "-"
    std = statistics.stdev(numbers) if len(numbers) > 1 else 0.0
    return f"{100 * statistics.mean(numbers):.1f} ± {100 * std:.1f} % (n={len(numbers)})"


def percent(value: Any) -> str:
    return f"{100 * value:.1f} %" if isinstance(value, (int, float)) else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=None, help="default ../shared/data/cars20 (--quick: cars-mini)")
    parser.add_argument("--keras-home", type=Path, default=SHARED / "keras_home")
    parser.add_argument("--epochs", type=int, default=None, help="default 5 (--quick: 2)")
    parser.add_argument("--seeds", default=None, help="comma list, default 1,2,3 (--quick: 1,2)")
    parser.add_argument("--lr-steps", type=int, default=None, help="LR range test steps (default 60; --quick: 10)")
    parser.add_argument("--quick", action="store_true", help="cars-mini, 2 epochs, seeds 1,2: a run-through check")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--part", choices=("all", "sweeps", "augmented"), default="all",
                        help="sweeps: only (A); augmented: only (B), on the recommended plan's base and seeds (no LR "
                             "test, no sweeps)")
    args = parser.parse_args()

    dataset = args.dataset or SHARED / "data" / ("cars-mini" if args.quick else "cars20")
    epochs = args.epochs or (2 if args.quick else 5)
    seeds = tuple(int(s) for s in (args.seeds or ("1,2" if args.quick else "1,2,3")).split(",") if s.strip())
    lr_steps = args.lr_steps or (10 if args.quick else None)
    if not dataset.is_dir():
        print(f"skipped: no dataset at {dataset} (give one with --dataset)")
        return
    if not (args.keras_home / "models").is_dir():
        print(f"skipped: no ImageNet weights under {args.keras_home}/models (give them with --keras-home)")
        return

    root = Path(tempfile.mkdtemp(prefix="carviz-recommended-bench-"))
    keras_home = root / "keras_home"
    shutil.copytree(args.keras_home, keras_home)  # Keras writes keras.json there: it must be writable
    for path in [keras_home, *keras_home.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)
    os.environ.update(KERAS_HOME=str(keras_home), CARVIZ_SLOTS="1", TF_CPP_MIN_LOG_LEVEL="2")
    classes = sorted(p.name for p in dataset.iterdir() if p.is_dir())
    print(f"MobileNet 1.0 ImageNet 224 px on {dataset} ({len(classes)} classes), {epochs} epochs, seeds "
          f"{', '.join(map(str, seeds))}; {os.cpu_count()} CPUs, one job at a time", flush=True)

    if args.part == "augmented":
        try:
            aug = augmented_only(root, dataset, epochs, seeds)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        print_augmented(aug)
        if args.json:
            args.json.write_text(json.dumps({"augmented": {str(k): v for k, v in aug.items()}}, indent=2,
                                            default=str))
        return
    try:
        rec = recommended(root, dataset, epochs, seeds, lr_steps)
        print(f"  recommended sweep: {rec['wall_seconds']:.0f} s", flush=True)
        hand = hand_grid(root, rec["plan"])
        print(f"  hand grid: {hand['wall_seconds']:.0f} s", flush=True)
        aug = {}
        if args.part == "all":
            aug = {cached: augmented(root, rec["plan"], cached) for cached in (True, False)}
            print(f"  augmented sweeps: {aug[True]['wall_seconds']:.0f} s cached, {aug[False]['wall_seconds']:.0f} "
                  "s uncached", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    plan = rec.pop("plan")
    print(f"\n(A) one click against a hand grid (same test split: split_seed {plan.base.split_seed}, test_fraction "
          f"{plan.base.test_fraction}; pruning rungs {plan.prune.rungs if plan.prune else 'none'})")
    suggested = f"{rec['suggested_lr']:.3g}" if rec["suggested_lr"] else "none (default pair)"
    print(f"  recommended: LR test {rec['lr_test_seconds']:.0f} s, suggested {suggested}; learning rates "
          f"{', '.join(f'{lr:g}' for lr in rec['learning_rates'])} x freeze {', '.join(rec['freeze_points'])}")
    print(f"  hand grid:   learning rates {', '.join(f'{lr:g}' for lr in hand['learning_rates'])} x freeze "
          f"{', '.join(hand['freeze_points'])}")
    print(f"{'sweep':>12} {'runs':>5} {'wall s':>7} {'÷ hand':>6} {'clear':>6} {'val':>7} {'test':>7}  "
          "recommended run")
    for label, result in (("recommended", rec), ("hand grid", hand)):
        print(f"{label:>12} {result['runs_total']:>5} {result['wall_seconds']:>7.0f} "
              f"{result['wall_seconds'] / hand['wall_seconds']:>5.2f}x {str(result['clear']):>6} "
              f"{percent(result['winner_val']):>7} {percent(result['winner_test']):>7}  {result['winner']}")
    for label, result in (("recommended", rec), ("hand grid", hand)):
        print(f"  {label} ({result['runs']}): {result['verdict']}")

    if aug:
        print_augmented(aug)
    if args.json:
        figures = {"recommended": rec, "hand": hand}
        if aug:
            figures.update(augmented_cached=aug[True], augmented_uncached=aug[False])
        args.json.write_text(json.dumps(figures, indent=2, default=str))


def augmented_only(root: Path, dataset: Path, epochs: int, seeds: tuple[int, ...]) -> dict[bool, dict]:
    """(B) alone: the recommended plan's base and seeds (its learning rates do not matter here: (B) uses the base's)."""
    from carviz.core import recommend
    from carviz.ml.backbones import list_layers

    plan = recommend.recommended_sweep(str(dataset.resolve()), "mobilenet", list_layers("mobilenet", 224),
                                       epochs=epochs)
    plan = dataclasses.replace(plan, seeds=seeds)
    return {cached: augmented(root, plan, cached) for cached in (True, False)}


def print_augmented(aug: dict[bool, dict]) -> None:
    cached, uncached = aug[True], aug[False]
    print(f"\n(B) augmentation at freeze {AUGMENTED_FREEZE}: {cached['augment_views']} cached views against "
          "augmenting the images every epoch")
    print(f"{'runs':>9} {'epoch s':>8} {'speed':>6} {'sweep s':>8} {'speed':>6} {'feature pass s':>15}  "
          "test accuracy")
    for label, result in (("cached", cached), ("uncached", uncached)):
        passes = "/".join(f"{s:.0f}" for s in result["feature_pass_seconds"]) if label == "cached" else "-"
        print(f"{label:>9} {result['epoch_seconds']:>8.2f} "
              f"{uncached['epoch_seconds'] / result['epoch_seconds']:>5.1f}x {result['wall_seconds']:>8.0f} "
              f"{uncached['wall_seconds'] / result['wall_seconds']:>5.2f}x {passes:>15}  "
              f"{mean_std(result['test_accuracies'])}")
    print(f"  cached runs trained on {cached['views']} augmented views (0: on images); the first run's pass "
          "computes the views, later seeds reuse them")


if __name__ == "__main__":
    main()
