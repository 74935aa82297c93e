"""Benchmark: the one-click recommended sweep with a process per run (before warm workers) against warm workers,
one at a time and with the default concurrency, all in one run on one dataset.

Each variant is `sweep --recommended` as a user runs it (MobileNet 1.0, ImageNet weights from an offline copy of
../shared/keras_home, the recommended preset's defaults: 20 epochs, seeds 1-3, a 60-step LR range test, pruning, the
feature cache, a 15 % test split), in its own CARVIZ_HOME and feature cache, so each pays its own feature pass:

  process     every run its own process, one at a time (CARVIZ_WARM_WORKERS=0, CARVIZ_SLOTS=1): the way before;
  warm x1     runs in one warm worker (CARVIZ_SLOTS=1);
  warm xN     runs in N warm workers at once (CARVIZ_SLOTS unset: the machine's default; 2 on a 2-core machine).

Per variant: the wall time from the click (LR test included) to the sweep's end; where it goes (the LR test, the
runs' epochs, their start-up: started -> first training step, their wind-down: fit() ended -> recorded ended,
and the gaps between one run's end and the next run's start on a slot); and the recommended run's kept validation
and test accuracy (chosen by validation; must agree across variants within the seed spread).

    .venv/bin/python bench/sweep_workers.py [--dataset PATH] [--classes N [--skip-classes K]] [--epochs 20]
                                            [--variants process,warm1,warm] [--generate CLASSESxIMAGES] [--json PATH]
                                            [--keep]

--classes N keeps the dataset's first N classes (a copy), e.g. 10 of cars20 for a ~450-image set; --skip-classes K
takes the N after the first K instead (another set of the same size). --keep leaves the runs (their metrics.csv,
status and timing) and the data in the printed folder.
--generate 196x40: instead, a generated set at the seed study's size (drawn like the demo set, 224 px; bench/scale.py's
data), e.g. with --variants warm: where the time of the recommended sweep goes at that size.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
from recommended_sweep import SHARED, check_done, judged, percent, use_home, wait_for  # noqa: E402

VARIANTS = {
    "process": ("process per run, 1 at a time", {"CARVIZ_WARM_WORKERS": "0", "CARVIZ_SLOTS": "1"}),
    "warm1": ("warm workers, 1 at a time", {"CARVIZ_WARM_WORKERS": "1", "CARVIZ_SLOTS": "1"}),
    "warm": ("warm workers, default concurrency", {"CARVIZ_WARM_WORKERS": "1", "CARVIZ_SLOTS": None}),
}


def seconds(start: Any, end: Any) -> float | None:
    from carviz.core.jobs.record import parse_iso

    a, b = parse_iso(start), parse_iso(end)
    return (b - a).total_seconds() if a and b else None


def run_times(runs: list[Any]) -> dict[str, Any]:
    """Per run: start-up (started -> first step), wind-down (fit ended -> ended), epochs' seconds; per slot: the gaps
    between one run's end and the next one's start."""
    starts, ends, epochs, gaps = [], [], [], []
    by_slot: dict[Any, list[tuple[str, str]]] = {}
    for run in runs:
        status = run.raw_status()
        attempts = run.info().get("attempts") or [{}]
        attempt = attempts[-1]
        rows = run.metrics()
        epochs.append(sum(row.get("seconds") or 0.0 for row in rows))
        if not rows:  # pruned before training (its configuration was pruned): never started
            continue
        start = seconds(status.get("started_at"), attempt.get("first_step_at"))
        end = seconds(attempt.get("fit_ended_at"), status.get("ended_at"))
        if start is not None:
            starts.append(start)
        if end is not None:
            ends.append(end)
        by_slot.setdefault(status.get("slot"), []).append((status.get("started_at"), status.get("ended_at")))
    for spans in by_slot.values():
        spans.sort()
        gaps += [g for (_, end), (start, _) in zip(spans, spans[1:]) if (g := seconds(end, start)) is not None]
    return {"start": starts, "end": ends, "epochs": epochs, "gaps": gaps}


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def variant(root: Path, label: str, env: dict[str, str | None], dataset: Path, epochs: int) -> dict[str, Any]:
    from carviz.core import recommend
    from carviz.core.sweeps import read_record
    from carviz.ml.backbones import list_layers
    from carviz.ml.lr_range import run_lr_range_job

    for key, value in env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    from carviz.core import jobs

    concurrency = jobs.capacity("local")
    home = use_home(root, label)
    plan = recommend.recommended_sweep(str(dataset.resolve()), "mobilenet", list_layers("mobilenet", 224),
                                       epochs=epochs)
    started = time.perf_counter()
    test = recommend.create_recommended(plan, home / "runs")
    result = run_lr_range_job(test.path)
    lr_seconds = time.perf_counter() - started
    sweep_id = recommend.planned_sweep_id(test)
    if sweep_id is None:
        sys.exit(f"{label}: the LR range test ended {test.state().status.value} without launching the sweep")
    state = wait_for(sweep_id, home / "runs")
    wall = time.perf_counter() - started
    check_done(label, state)
    runs = read_record(sweep_id, home / "runs").runs()
    times = run_times(runs)
    feature_pass = (test.result() or {}).get("feature_pass_seconds")
    verdict = judged(state)
    verdict["runs_text"] = verdict.pop("runs")
    return {"label": label, "concurrency": concurrency, "wall": wall, "lr_test": lr_seconds,
            "feature_pass": feature_pass, "suggested_lr": result.suggested_lr, "runs": len(runs),
            "trained": len(times["start"]), **times, **verdict}


def report(results: list[dict[str, Any]]) -> None:
    base = results[0]
    print(f"\n{'variant':>34} {'at once':>7} {'wall s':>7} {'÷ first':>7} {'LR test (pass) s':>16} {'epochs s':>8} "
          f"{'start s':>13} {'end s':>13} {'gap s':>11} {'val':>6} {'test':>6}")
    for r in results:
        print(f"{r['label']:>34} {r['concurrency']:>7} {r['wall']:>7.0f} {r['wall'] / base['wall']:>6.2f}x "
              f"{r['lr_test']:>9.0f} ({r['feature_pass'] or 0:>4.0f}) {sum(r['epochs']):>8.0f} "
              f"{median(r['start']):>5.2f} (Σ{sum(r['start']):>4.0f}) {median(r['end']):>5.2f} (Σ{sum(r['end']):>4.0f}) "
              f"{median(r['gaps']):>4.2f} (Σ{sum(r['gaps']):>3.0f}) {percent(r['winner_val']):>6} "
              f"{percent(r['winner_test']):>6}")
    print("  start: a run's status 'running' -> its first training step; end: fit() ended -> status ended (medians, "
          "Σ: sums over the runs that trained); gap: one run's end -> the next run's start on the same slot")
    for r in results:
        print(f"  {r['label']}: {r['trained']} of {r['runs']} runs trained ({r['runs_text']}); winner {r['winner']}; "
              f"{r['verdict']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=SHARED / "data" / "cars20")
    parser.add_argument("--classes", type=int, default=None, help="keep the first N classes")
    parser.add_argument("--skip-classes", type=int, default=0,
                        help="with --classes: skip this many classes first (e.g. 10: classes 11-20, a set nobody "
                             "tuned on)")
    parser.add_argument("--keep", action="store_true", help="keep the runs and data folder (printed) at the end")
    parser.add_argument("--keras-home", type=Path, default=SHARED / "keras_home")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--variants", default="process,warm1,warm")
    parser.add_argument("--generate", default=None, metavar="CLASSESxIMAGES")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if (not args.generate and not args.dataset.is_dir()) or not (args.keras_home / "models").is_dir():
        print(f"skipped: needs a dataset ({args.dataset}) and ImageNet weights ({args.keras_home}/models)")
        return
    root = Path(tempfile.mkdtemp(prefix="carviz-workers-bench-"))
    keras_home = root / "keras_home"
    shutil.copytree(args.keras_home, keras_home)
    for path in [keras_home, *keras_home.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o200)  # Keras writes keras.json there
    os.environ.update(KERAS_HOME=str(keras_home), TF_CPP_MIN_LOG_LEVEL="2")
    dataset = args.dataset
    if args.generate:
        from carviz.data.demo import generate_demo_dataset

        classes, per_class = (int(n) for n in args.generate.lower().split("x"))
        started = time.perf_counter()
        dataset = generate_demo_dataset(root / f"generated-{classes}x{per_class}", per_class=per_class,
                                        image_size=224, classes=classes)
        print(f"generated {classes} x {per_class} images in {time.perf_counter() - started:.0f} s", flush=True)
    elif args.classes:
        dataset = root / f"{args.dataset.name}-{args.classes}"
        for folder in sorted(p for p in args.dataset.iterdir()
                             if p.is_dir())[args.skip_classes:args.skip_classes + args.classes]:
            shutil.copytree(folder, dataset / folder.name)
    images = sum(1 for p in dataset.rglob("*") if p.is_file())
    print(f"recommended sweep, MobileNet 1.0 224 px, {args.epochs} epochs, on {dataset.name} "
          f"({sum(1 for p in dataset.iterdir() if p.is_dir())} classes, {images} images); {os.cpu_count()} CPUs",
          flush=True)
    results = []
    try:
        for name in args.variants.split(","):
            label, env = VARIANTS[name]
            results.append(variant(root, label, env, dataset, args.epochs))
            print(f"  {label}: {results[-1]['wall']:.0f} s", flush=True)
    finally:
        if args.keep:
            print(f"kept: {root}", flush=True)
        else:
            shutil.rmtree(root, ignore_errors=True)
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
