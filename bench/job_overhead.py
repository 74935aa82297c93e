"""Benchmark: what running a job through Ray costs over the local backend, measured in one run.

On a temporary CARVIZ_HOME (demo data, 12 images per class at 48 px) with the tiny config of the tests (small_cnn,
no weights, 32 px, 2 epochs, batch 16), against a Ray head this script starts on 127.0.0.1 (and stops):

  (a) submit to first training step, per backend (median of --repeats, the backends taking turns): from just
      before launch.submit() to the updated_at of the first progress.json that shows phase "training" with
      step >= 1 (progress is written at most every 0.5 s, but the first step, which includes tracing, takes
      longer, so it is written as it ends). Also shown: how long submit() blocks, and submit to status "running"
      (the job's process is up, before TensorFlow loads);
  (b) wall time of an 8-run sweep (learning rates 1e-3, 3e-3 x seeds 1-4, no pruning), from just before
      launch_sweep() to the last run's ended_at, at equal concurrency: CARVIZ_SLOTS=2 locally, and a Ray head
      with --num-cpus 2 and CARVIZ_RAY_CPUS_PER_JOB=1 (2 jobs at once; the feeder asks Ray for nothing). Also
      shown: the mean run (status running to ended), launch to the first run running, idle job-seconds (wall x 2
      minus the runs' running time: hand-over gaps between runs) and the CPU the head's own long-lived processes
      used meanwhile (the machine's other load counts too: it is printed at the end).

Prints the figures and the Ray/local ratios (target: the sweep on Ray within 1.3x of local).

    .venv/bin/python bench/job_overhead.py [--repeats 3] [--sweep-runs 8] [--sweep-repeats 1] [--port-base 27300]
                                           [--json PATH]
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
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "integration"))  # ray_head: the test suite's loopback-only Ray head

CONCURRENCY = 2


def seconds_since(start: float, iso: str | None) -> float | None:
    """Seconds from the wall-clock time `start` (time.time()) to a record's ISO timestamp."""
    if not iso:
        return None
    return datetime.fromisoformat(iso).timestamp() - start


def wait(predicate, timeout: float, what: str, poll: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def cpu_by_process(processes) -> dict[int, float]:
    """CPU seconds each of the given processes (the head's long-lived ones) has used so far, by pid."""
    import psutil

    used = {}
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        used[process.pid] = times.user + times.system
    return used


def cpu_since(before: dict[int, float], processes) -> float:
    """CPU seconds the processes alive at both readings used since `before`."""
    after = cpu_by_process(processes)
    return sum(after[pid] - before[pid] for pid in after.keys() & before.keys())


def long_lived(head) -> list:
    """The head's own processes (GCS, raylet, dashboard, agents, idle workers), not jobs or ended processes."""
    import psutil

    kept = []
    for process in head.processes():
        try:
            if process.status() != psutil.STATUS_ZOMBIE and "carviz" not in " ".join(process.cmdline()):
                kept.append(process)
        except psutil.Error:
            continue
    return kept


def head_cpu_percent(head, seconds: float) -> float:
    """CPU the head's processes use over `seconds` (no jobs running), in percent of one core."""
    processes = long_lived(head)
    before = cpu_by_process(processes)
    time.sleep(seconds)
    return cpu_since(before, processes) / seconds * 100


def first_step(backend: str, config) -> dict[str, float]:
    """One tiny run on `backend`: how long submit() blocked, submit to running, submit to the first step."""
    from carviz.core import launch

    start = time.time()
    run = launch.submit(config, backend=backend)
    submitted = time.time() - start

    polls = 0

    def stepped():  # reads progress.json often, the status (an HTTP request to Ray there) once a second
        nonlocal polls
        polls += 1
        progress = run.progress() or {}
        if progress.get("phase") == "training" and (progress.get("step") or 0) >= 1:
            return progress
        if polls % 20 == 0 and run.status().is_terminal():
            raise RuntimeError(f"{run.id} ended before its first step: {run.status().value}\n{run.log_tail()}")
        return None

    progress = wait(stepped, 180, f"the first step of {run.id}")
    figures = {"submit_call": submitted,
               "to_running": seconds_since(start, run.raw_status().get("started_at")),
               "to_first_step": seconds_since(start, progress.get("updated_at"))}
    wait(lambda: run.status().is_terminal(), 180, f"{run.id} to end", poll=1.0)
    if run.status().value != "succeeded":
        raise RuntimeError(f"{run.id} {run.status().value}:\n{run.log_tail()}")
    return figures


def sweep_wall(backend: str, base, runs: int, head_processes) -> dict[str, float]:
    """launch_sweep to the last run's end, for a sweep of `runs` runs on `backend`; also the mean run time (its
    process running to ended) and the idle capacity (wall x concurrency - the runs' running time: launch and
    start-up overhead, a feeder waiting)."""
    from carviz.core import sweeps
    from carviz.core.sweeps import SweepConfig

    seeds = tuple(range(1, runs // 2 + 1))
    config = SweepConfig(name=f"overhead-{backend}", base=base, backbones=("small_cnn",),
                         learning_rates=(1e-3, 3e-3), freeze_points=(1,), seeds=seeds)
    start = time.time()
    head_cpu = cpu_by_process(head_processes)
    record = sweeps.launch_sweep(config, backend=backend)
    state = wait(lambda: (s := sweeps.read_sweep(record.id)).status not in ("queued", "running") and s, 900,
                 f"the {backend} sweep to end", poll=2.0)  # the figures come from the records, not the poll
    if state.status != "done":
        logs = "\n".join(run.log_tail(10) for run in record.runs())
        raise RuntimeError(f"the {backend} sweep ended {state.status}: {state.counts}\n{logs}")
    spans = [(seconds_since(start, run.raw_status().get("started_at")),
              seconds_since(start, run.raw_status().get("ended_at"))) for run in record.runs()]
    wall = max(end for _, end in spans)
    busy = sum(end - begin for begin, end in spans)
    return {"wall": wall, "mean_run": busy / len(spans), "idle_capacity": wall * CONCURRENCY - busy,
            "first_start": min(begin for begin, _ in spans),
            "head_cpu": cpu_since(head_cpu, head_processes)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="first-step measurements per backend")
    parser.add_argument("--sweep-runs", type=int, default=8, help="runs in the sweep (even)")
    parser.add_argument("--sweep-repeats", type=int, default=1, help="sweeps per backend (taking turns)")
    parser.add_argument("--port-base", type=int, default=27300, help="first of the Ray head's fixed local ports")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="carviz-overhead-"))
    os.environ.update({"CARVIZ_HOME": str(home), "CARVIZ_SLOTS": str(CONCURRENCY), "CARVIZ_RAY_CPUS_PER_JOB": "1",
                       "TF_CPP_MIN_LOG_LEVEL": "2"})
    for name in ("CARVIZ_RUNS", "CARVIZ_DATA", "CARVIZ_CACHE", "CARVIZ_BACKEND"):
        os.environ.pop(name, None)

    from ray_head import start_ray_head

    from carviz.core import jobs
    from carviz.core.config import TrainConfig
    from carviz.data.datasets import generate_demo_dataset

    generate_demo_dataset(home / "data" / "demo", per_class=12, image_size=48)
    tiny = TrainConfig(name="tiny", dataset="demo", backbone="small_cnn", weights="none", image_size=32, epochs=2,
                       batch_size=16, learning_rate=1e-3, precision="float32")
    started = time.monotonic()
    head = start_ray_head(port_base=args.port_base, num_cpus=CONCURRENCY, num_gpus=0)
    head_seconds = time.monotonic() - started
    os.environ["CARVIZ_RAY_ADDRESS"] = head.address
    results: dict[str, object] = {"ray_head_start_seconds": head_seconds, "load_before": os.getloadavg()}
    try:
        capacities = {backend: jobs.capacity(backend) for backend in ("local", "ray")}
        assert capacities == {"local": CONCURRENCY, "ray": CONCURRENCY}, capacities
        print(f"Ray head up in {head_seconds:.1f} s at {head.address}; concurrency {capacities}", flush=True)
        results["ray_head_idle_cpu_percent"] = idle_cpu = head_cpu_percent(head, 10.0)
        print(f"Ray head's own processes at idle: {idle_cpu:.0f}% of one core (10 s)", flush=True)
        first_step("local", tiny)  # warm-up, not counted: page cache, .pyc files
        first_step("ray", tiny)
        steps: dict[str, list[dict[str, float]]] = {"local": [], "ray": []}
        for repeat in range(args.repeats):
            for backend in ("local", "ray") if repeat % 2 == 0 else ("ray", "local"):
                steps[backend].append(first_step(backend, tiny))
                print(f"  {backend:5s} #{repeat + 1}: " + ", ".join(f"{key} {value:.2f} s"
                                                              for key, value in steps[backend][-1].items()),
                      flush=True)
        medians = {backend: {key: statistics.median(row[key] for row in rows) for key in rows[0]}
                   for backend, rows in steps.items()}
        sweep_rows: dict[str, list[dict[str, float]]] = {"local": [], "ray": []}
        head_processes = long_lived(head)
        for repeat in range(args.sweep_repeats):
            for backend in ("local", "ray") if repeat % 2 == 0 else ("ray", "local"):
                sweep_rows[backend].append(sweep_wall(backend, tiny, args.sweep_runs, head_processes))
                print(f"  {backend:5s} sweep of {args.sweep_runs} #{repeat + 1}: " + ", ".join(
                    f"{key} {value:.1f} s" for key, value in sweep_rows[backend][-1].items()), flush=True)
        sweeps = {backend: {key: statistics.median(row[key] for row in rows) for key in rows[0]}
                  for backend, rows in sweep_rows.items()}
        results.update({"first_step": steps, "first_step_median": medians, "sweeps": sweep_rows,
                        "load_after": os.getloadavg()})
    finally:
        head.stop()
        shutil.rmtree(home, ignore_errors=True)

    print()
    print(f"submit -> first training step (median of {args.repeats}; progress.json phase training, step >= 1)")
    print(f"{'':24s}{'local':>10s}{'ray':>10s}{'ray/local':>11s}")
    labels = {"submit_call": "submit() blocks", "to_running": "submit -> running",
              "to_first_step": "submit -> 1st step"}
    for key, label in labels.items():
        local, ray = medians["local"][key], medians["ray"][key]
        print(f"{label:24s}{local:9.2f}s{ray:9.2f}s{ray / local:10.2f}x")
    print(f"\n{args.sweep_runs}-run tiny sweep, {CONCURRENCY} jobs at once (median of {args.sweep_repeats}; "
          f"launch_sweep -> last run ended)")
    sweep_labels = {"wall": "wall time", "mean_run": "mean run (running->end)", "first_start": "launch -> 1st run up",
                    "idle_capacity": "idle job-seconds", "head_cpu": "Ray head CPU seconds"}
    for key, label in sweep_labels.items():
        local, ray = sweeps["local"][key], sweeps["ray"][key]
        print(f"{label:24s}{local:9.1f}s{ray:9.1f}s{ray / local if local > 0 else float('nan'):10.2f}x")
    ratio = sweeps["ray"]["wall"] / sweeps["local"]["wall"]
    print(f"sweep wall time Ray/local {ratio:.2f}x (target <= 1.30x: {'met' if ratio <= 1.3 else 'NOT met'})")
    print(f"\nload average before / after: {results['load_before']} / {results['load_after']}")
    results["ratios"] = {"first_step": medians["ray"]["to_first_step"] / medians["local"]["to_first_step"],
                         "sweep": ratio}
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
