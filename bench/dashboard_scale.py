"""Dashboard scale benchmark: runs table over 500 run records, Compare figures for 20 runs (target <= 1 s each).

Usage: python bench/dashboard_scale.py [--runs 500] [--epochs 50] [--compare 20] [--repeats 5] [--profile]
Makes synthetic run records (create_run + write_status + metrics.csv) in a temporary CARVIZ_HOME, then times
(a) list_runs + summarize for every run and (b) reading 20 runs' metrics + curves_figure for loss and accuracy.
With --profile (or when a figure misses the target) prints where the time goes, and for the listing what a
read_metrics cache keyed on the file's stat would save. Always exits 0.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TARGET_SECONDS = 1.0


def make_records(count: int, epochs: int) -> None:
    from carviz.core.config import BACKBONES, TrainConfig
    from carviz.core.store import METRIC_COLUMNS, Status, create_run, now_iso

    rng = random.Random(0)
    dead_pid = 999_999_999  # no such process: those runs read as lost, exercising the pid check
    for index in range(count):
        backbone = rng.choice(BACKBONES)
        config = TrainConfig(name=f"bench {index}", backbone=backbone,
                             weights="none" if backbone == "small_cnn" else "imagenet",
                             learning_rate=rng.choice([1e-3, 1e-4]), freeze=rng.choice([1, 47, 80, "all"]),
                             epochs=epochs)
        run = create_run(config)
        roll = rng.random()
        if roll < 0.85:
            run.write_status(Status.SUCCEEDED, created_at=now_iso(), ended_at=now_iso())
        elif roll < 0.95:
            run.write_status(Status.FAILED, error="RuntimeError: synthetic failure")
        else:
            run.write_status(Status.RUNNING, pid=dead_pid, pid_create_time=1.0)
        lines = [",".join(METRIC_COLUMNS)]
        loss = 2.0
        for epoch in range(1, epochs + 1):
            loss *= rng.uniform(0.9, 1.0)
            lines.append(",".join(repr(v) for v in (
                epoch, loss, 1 - loss / 2.2, loss * 1.1, 1 - loss / 2.0, 1e-4, rng.uniform(20, 40))))
        run.file("metrics.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def list_table() -> int:
    from carviz.views import compare
    from carviz.core.store import list_runs

    rows = compare.summaries(list_runs())
    compare.runs_table(rows)
    return len(rows)


def compare_figures(count: int) -> int:
    from carviz.views.compare import run_label
    from carviz.views.plots.curves import curves_figure
    from carviz.core.store import list_runs

    selected = list_runs()[:count]
    curve_runs = [(run_label({"id": run.id, "name": run.config_dict().get("name")}), run.config_dict(), run.metrics())
                  for run in selected]
    figures = [curves_figure(curve_runs, "loss", smoothing=0.6), curves_figure(curve_runs, "accuracy", smoothing=0.6)]
    return sum(len(fig.data) for fig in figures)


def timed(fn, repeats: int) -> tuple[float, list[float], float]:
    """(median wall seconds, all wall times, median CPU seconds): CPU time shows the cost on a busy machine."""
    times, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(times), times, statistics.median(cpu)


def cache_metrics_by_stat() -> None:
    """What-if for runs.py: memoize read_metrics on (path, mtime_ns, size), as a reader cache would."""
    from carviz.core import store as runs

    original = runs.read_metrics
    cache: dict[tuple[str, int, int], list] = {}

    def cached(path: Path) -> list:
        try:
            stat = os.stat(path)
        except OSError:
            return []
        key = (str(path), stat.st_mtime_ns, stat.st_size)
        if key not in cache:
            cache[key] = original(path)
        return [dict(row) for row in cache[key]]

    runs.read_metrics = cached


def profile(fn, lines: int = 15) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    fn()
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(lines)
    return out.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--compare", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="carviz-bench-") as home:
        os.environ["CARVIZ_HOME"] = home
        os.environ.pop("CARVIZ_RUNS", None)
        start = time.perf_counter()
        make_records(args.runs, args.epochs)
        print(f"made {args.runs} run records x {args.epochs} epochs in {time.perf_counter() - start:.1f} s")
        list_table()  # warm the page cache and imports: the dashboard's steady state
        compare_figures(args.compare)

        listing, listing_all, listing_cpu = timed(list_table, args.repeats)
        figures, figures_all, figures_cpu = timed(lambda: compare_figures(args.compare), args.repeats)
        print(f"(a) runs table, {args.runs} runs (list_runs + summarize + table): "
              f"median {listing:.3f} s wall, {listing_cpu:.3f} s CPU  [{', '.join(f'{t:.3f}' for t in listing_all)}]"
              f"  target <= {TARGET_SECONDS:.1f} s  {'OK' if listing <= TARGET_SECONDS else 'SLOW'}")
        print(f"(b) compare figures, {args.compare} runs (metrics + loss & accuracy figures): "
              f"median {figures:.3f} s wall, {figures_cpu:.3f} s CPU  [{', '.join(f'{t:.3f}' for t in figures_all)}]"
              f"  target <= {TARGET_SECONDS:.1f} s  {'OK' if figures <= TARGET_SECONDS else 'SLOW'}")
        if "tensorflow" in sys.modules:
            print("WARNING: TensorFlow was imported while listing runs or drawing curves")
        if args.profile or listing > TARGET_SECONDS:
            print("\nwhere the listing time goes (cProfile, cumulative):")
            print(profile(list_table))
        if args.profile or figures > TARGET_SECONDS:
            print("\nwhere the compare-figure time goes (cProfile, cumulative):")
            print(profile(lambda: compare_figures(args.compare)))
        if args.profile or listing > TARGET_SECONDS:
            cache_metrics_by_stat()
            list_table()
            what_if, _, what_if_cpu = timed(list_table, args.repeats)
            print(f"what-if: read_metrics memoized on (path, mtime, size) -> (a) median {what_if:.3f} s wall, "
                  f"{what_if_cpu:.3f} s CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
