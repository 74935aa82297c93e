"""Soak test of the job runtime: a seeded random sequence of faults on tiny training jobs, then a consistency check.

On a temporary CARVIZ_HOME (demo data, 16 images per class at 48 px) with CARVIZ_SLOTS=2, for --minutes (default
5) it picks, at random intervals, one of: launch a tiny run (small_cnn, 48 px, 4-12 epochs, checkpoint every 1 or 2
epochs), stop a job (gracefully, or killed after a short timeout), kill -9 a job's process group, SIGSTOP a job
(half the time also making its heartbeat stale, as a hang of over a minute would) and later SIGCONT it or stop it
(which must kill it), resume a stopped, lost or failed run, or resume one run from two threads at once. While a job
is SIGSTOPped with a stale heartbeat, resuming it must be refused.

Then everything is finished: every stopped process continued, every run resumed until it succeeded (or a clear
report says which did not). A sampler watches the processes all along (every trainer past its first seconds must
hold its run's lock, and no run ever has two). The check of every record: terminal state succeeded; metrics.csv
epochs exactly 1..N, each once; attempts in run.json sequential; the model loads and predicts; no partial temp files;
no job process left. Prints the counts and the check; exit status 1 when a check fails.

    .venv/bin/python bench/soak.py [--minutes 5] [--seed 0] [--slots 2] [--keep] [--verbose]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

IMAGE_SIZE = 48
TRAINER = "carviz.ml.train"
STARTUP_GRACE = 10.0  # seconds a trainer may live without its run's lock (it tries the lock within about one)


def log_event(events: list[str], verbose: bool, text: str) -> None:
    line = f"{time.strftime('%H:%M:%S')} {text}"
    events.append(line)
    if verbose:
        print(line, flush=True)


# ---------------------------------------------------------------- the sampler: no two writers, ever


def lock_holders() -> dict[int, set[int]]:
    """inode -> pids holding a WRITE flock on it (from /proc/locks; blocked waiters are skipped)."""
    holders: dict[int, set[int]] = {}
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return holders
    for line in lines:
        parts = line.split()
        if "->" in parts or len(parts) < 6 or parts[1] != "FLOCK" or parts[3] != "WRITE":
            continue
        try:
            pid, inode = int(parts[4]), int(parts[5].rsplit(":", 1)[1])
        except (ValueError, IndexError):
            continue
        holders.setdefault(inode, set()).add(pid)
    return holders


def trainers(runs_root: Path) -> list[tuple[int, float, Path]]:
    """(pid, start time, run folder) of every live (not zombie) training process of a run under runs_root."""
    import psutil

    found = []
    for process in psutil.process_iter(["pid", "cmdline", "create_time", "status"]):
        info = process.info
        cmdline = info.get("cmdline") or []
        if info.get("status") == psutil.STATUS_ZOMBIE or TRAINER not in cmdline or not cmdline:
            continue
        folder = Path(cmdline[-1])
        if folder.parent == runs_root:
            found.append((info["pid"], info["create_time"], folder))
    return found


class Sampler(threading.Thread):
    """Samples the job processes every `every` seconds: trainers per run, and whether each holds its run's lock."""

    def __init__(self, runs_root: Path, every: float = 0.5) -> None:
        super().__init__(name="sampler", daemon=True)
        self.runs_root = runs_root
        self.every = every
        self.done = threading.Event()
        self.samples = 0
        self.max_trainers_per_run = 0
        self.two_trainers: list[str] = []  # two trainers of one run past their startup, at the same time
        self.lockless: list[str] = []  # a trainer past its startup without its run's lock
        self.holders_seen: dict[str, set[int]] = {}  # run id -> the pids seen holding its lock

    def run(self) -> None:
        while not self.done.wait(self.every):
            self.sample()

    @staticmethod
    def ended(folder: Path, pid: int) -> bool:
        """Whether `pid` recorded its job's end: it frees the lock then, and may take a while to exit."""
        from carviz.core.jobs.record import JobRecord

        raw = JobRecord(folder).raw_status()
        return raw.get("pid") == pid and raw.get("state") not in ("queued", "running")

    def sample(self) -> None:
        now = time.time()
        locks = lock_holders()
        by_run: dict[Path, list[tuple[int, float]]] = {}
        for pid, started, folder in trainers(self.runs_root):
            by_run.setdefault(folder, []).append((pid, started))
        for folder, procs in by_run.items():
            try:
                inode = os.stat(folder / ".job.lock").st_ino
            except OSError:
                inode = -1
            grown = [(pid, started) for pid, started in procs if now - started > STARTUP_GRACE]
            self.max_trainers_per_run = max(self.max_trainers_per_run, len(grown))
            if len(grown) > 1:
                self.two_trainers.append(f"{folder.name}: pids {[pid for pid, _ in grown]}")
            for pid, _ in procs:
                if pid in locks.get(inode, set()):
                    self.holders_seen.setdefault(folder.name, set()).add(pid)
            for pid, _ in grown:
                if pid not in locks.get(inode, set()) and not self.ended(folder, pid):
                    self.lockless.append(f"{folder.name}: pid {pid}")
        self.samples += 1


# ---------------------------------------------------------------- the soak


class Soak:
    def __init__(self, args: argparse.Namespace, home: Path) -> None:
        from carviz.core.config import TrainConfig

        self.args = args
        self.rng = random.Random(args.seed)
        self.home = home
        self.runs_root = home / "runs"
        self.counts: Counter[str] = Counter()
        self.events: list[str] = []
        self.runs: list = []
        self.hung: dict[int, tuple] = {}  # pid -> (run, create_time, until, stale)
        self.violations: list[str] = []
        self.base = TrainConfig(name="soak", dataset="demo", backbone="small_cnn", weights="none",
                                image_size=IMAGE_SIZE, epochs=6, batch_size=16, learning_rate=1e-3,
                                precision="float32")

    def note(self, text: str) -> None:
        log_event(self.events, self.args.verbose, text)

    # --- helpers ---------------------------------------------------------------------------
    def live_pid(self, run) -> tuple[int, float] | None:
        """(pid, create time) of the run's recorded process when it is verifiably alive."""
        from carviz.core.jobs.status import ProcessCheck, check_process

        raw, launch_info = run.raw_status(), run.launch_info()
        own = isinstance(raw.get("pid"), int)
        pid = raw.get("pid") if own else launch_info.get("pid")
        create_time = raw.get("pid_create_time") if own else launch_info.get("pid_create_time")
        if isinstance(pid, int) and check_process(pid, create_time) == ProcessCheck.ALIVE:
            return pid, create_time
        return None

    def pick(self, predicate):
        candidates = [run for run in self.runs if predicate(run)]
        return self.rng.choice(candidates) if candidates else None

    def active(self, run) -> bool:
        return not run.status().is_terminal()

    def resumable(self, run) -> bool:
        from carviz.core.jobs import Status

        return run.status() in (Status.STOPPED, Status.LOST, Status.FAILED)

    # --- actions ---------------------------------------------------------------------------
    def launch(self) -> None:
        from carviz.core import launch

        if sum(self.active(run) for run in self.runs) >= self.args.slots + 3:
            self.counts["launch skipped (enough active jobs)"] += 1
            return
        config = self.base.replace(name=f"soak-{len(self.runs) + 1}", epochs=self.rng.randint(4, 12),
                                   checkpoint_every=self.rng.choice([1, 1, 2]), seed=self.rng.randint(1, 1000))
        run = launch.submit(config)
        self.runs.append(run)
        self.counts["launch"] += 1
        self.note(f"launch {run.id} ({config.epochs} epochs, checkpoint every {config.checkpoint_every})")

    def stop(self) -> None:
        from carviz.core import jobs

        run = self.pick(lambda r: self.active(r) and (self.live_pid(r) or (0,))[0] not in self.hung)
        if run is None:
            return
        timeout = self.rng.choice([0.5, 5.0, 20.0])
        status = jobs.stop(run, timeout=timeout)
        self.counts["stop"] += 1
        self.counts[f"stop -> {status.value}"] += 1
        self.note(f"stop {run.id} (timeout {timeout} s) -> {status.value}")

    def kill9(self) -> None:
        run = self.pick(lambda r: self.active(r) and self.live_pid(r) is not None)
        if run is None:
            return
        found = self.live_pid(run)
        if found is None:
            return
        pid = found[0]
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        self.hung.pop(pid, None)
        self.counts["kill -9"] += 1
        self.note(f"kill -9 {run.id} (pid {pid})")

    def sigstop(self) -> None:
        from carviz.core.jobs import Status

        run = self.pick(lambda r: r.status() == Status.RUNNING and self.live_pid(r) is not None
                        and self.live_pid(r)[0] not in self.hung)
        if run is None:
            return
        found = self.live_pid(run)
        if found is None:
            return
        pid, create_time = found
        try:
            os.kill(pid, signal.SIGSTOP)
        except ProcessLookupError:
            return
        stale = self.rng.random() < 0.5
        if stale:  # its heartbeat thread is frozen too: make the heartbeat read over a minute old now
            past = time.time() - 300
            try:
                os.utime(run.file("heartbeat"), (past, past))
            except OSError:
                pass
        self.hung[pid] = (run, create_time, time.monotonic() + self.rng.uniform(1.0, 8.0), stale)
        self.counts["SIGSTOP"] += 1
        self.counts["SIGSTOP with stale heartbeat"] += stale
        self.note(f"SIGSTOP {run.id} (pid {pid}{', heartbeat made stale' if stale else ''})")

    def end_hangs(self, force: bool = False) -> None:
        """Hangs whose time is up: SIGCONT, or stop (which must kill a hung job)."""
        from carviz.core import jobs
        from carviz.core.jobs.status import ProcessCheck, check_process

        for pid, (run, create_time, until, stale) in list(self.hung.items()):
            if not force and time.monotonic() < until:
                continue
            del self.hung[pid]
            if check_process(pid, create_time) != ProcessCheck.ALIVE:
                continue
            if not force and stale and self.rng.random() < 0.6:
                status = jobs.stop(run, timeout=20.0)
                lives = check_process(pid, create_time) == ProcessCheck.ALIVE
                self.counts["hung job stopped"] += 1
                self.note(f"stop hung {run.id} (pid {pid}) -> {status.value}{', STILL ALIVE' if lives else ''}")
                if not lives:
                    continue
                self.violations.append(f"stop left the hung job {run.id} (pid {pid}) alive")
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                continue
            self.counts["SIGCONT"] += 1
            self.note(f"SIGCONT {run.id} (pid {pid})")

    def resume(self) -> None:
        from carviz.core import launch

        hung_stale = {run.id for run, _, _, stale in self.hung.values() if stale}
        run = self.pick(lambda r: self.resumable(r) or r.id in hung_stale)
        if run is None:
            return
        try:
            launch.resume(run)
        except ValueError as refused:
            reason = "still runs" if "still runs" in str(refused) else "other"
            self.counts[f"resume refused ({reason})"] += 1
            self.note(f"resume {run.id} refused: {refused}")
            return
        self.counts["resume"] += 1
        self.note(f"resume {run.id}")
        if run.id in hung_stale:
            self.violations.append(f"resume launched {run.id} beside its SIGSTOPped process")

    def double_resume(self) -> None:
        from carviz.core import launch

        run = self.pick(self.resumable)
        if run is None:
            return
        from carviz.core.jobs import ProcessCheck

        # A run whose recorded process still lives (SIGSTOPped, hung) must be refused by both: 0 launches expected.
        expected = 0 if run.state().process == ProcessCheck.ALIVE else 1
        barrier = threading.Barrier(2)
        outcomes: list[str] = []

        def one() -> None:
            barrier.wait()
            try:
                launch.resume(run)
                outcomes.append("launched")
            except ValueError:
                outcomes.append("refused")

        threads = [threading.Thread(target=one) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        launched = outcomes.count("launched")
        self.counts["double resume"] += 1
        self.counts[f"double resume -> {launched} launched"] += 1
        self.note(f"double resume {run.id}: {sorted(outcomes)}")
        if launched != expected:
            self.violations.append(f"two resumes at once of {run.id} launched {launched} jobs (expected {expected})")

    ACTIONS = (("launch", 3.0), ("stop", 1.5), ("kill9", 1.5), ("sigstop", 1.5), ("resume", 3.0),
               ("double_resume", 1.0))

    def chaos(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        names, weights = zip(*self.ACTIONS)
        while time.monotonic() < deadline:
            self.end_hangs()
            action = self.rng.choices(names, weights)[0] if self.runs else "launch"
            getattr(self, action)()
            time.sleep(self.rng.uniform(0.3, 2.5))

    # --- the end ---------------------------------------------------------------------------
    def finish(self, timeout: float) -> tuple[float, list[str]]:
        """SIGCONT every stopped job, then resume runs until all succeeded; (seconds, what did not finish)."""
        from carviz.core import launch
        from carviz.core.jobs import Status

        self.end_hangs(force=True)
        start = time.monotonic()
        tries: Counter[str] = Counter()
        while time.monotonic() - start < timeout:
            states = {run.id: run.status() for run in self.runs}
            if all(status == Status.SUCCEEDED for status in states.values()):
                return time.monotonic() - start, []
            for run in self.runs:
                if states[run.id] in (Status.STOPPED, Status.LOST, Status.FAILED) and tries[run.id] < 5:
                    try:
                        launch.resume(run)
                        tries[run.id] += 1
                        self.counts["resume (finishing)"] += 1
                        self.note(f"finish: resume {run.id} (was {states[run.id].value})")
                    except ValueError as refused:
                        self.note(f"finish: resume {run.id} refused: {refused}")
            time.sleep(1.0)
        left = []
        for run in self.runs:
            state = run.state()
            if state.status != Status.SUCCEEDED:
                left.append(f"{run.id} {state.status.value} {state.reason or ''} {state.error or ''}".strip())
        return time.monotonic() - start, left


# ---------------------------------------------------------------- the check


def raw_epochs(run) -> list[int]:
    try:
        lines = run.file("metrics.csv").read_text().splitlines()[1:]
    except OSError:
        return []
    return [int(line.split(",")[0]) for line in lines if line]


def partial_files(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.name.endswith(".tmp") or path.name.startswith("tmp-")]


@contextlib.contextmanager
def quiet_stderr():
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def check(soak: Soak, sampler: Sampler) -> list[tuple[str, bool, str]]:
    import numpy as np
    import psutil

    from carviz.core.jobs import Status
    from carviz.core.jobs.record import parse_iso

    runs = soak.runs
    rows: list[tuple[str, bool, str]] = []

    bad = [f"{run.id} {run.state().status.value} (recorded {run.raw_status().get('state')})" for run in runs
           if run.state().status != Status.SUCCEEDED or run.raw_status().get("state") != "succeeded"]
    rows.append(("terminal state: succeeded", not bad, f"{len(runs) - len(bad)}/{len(runs)}" +
                 (f"; {'; '.join(bad[:5])}" if bad else "")))

    bad = []
    for run in runs:
        epochs, want = raw_epochs(run), run.config().epochs
        if epochs != list(range(1, want + 1)):
            bad.append(f"{run.id} {epochs} (want 1..{want})")
    rows.append(("metrics.csv epochs 1..N, each once", not bad,
                 f"{len(runs) - len(bad)}/{len(runs)}" + (f"; {'; '.join(bad[:5])}" if bad else "")))

    bad, total_attempts = [], 0
    for run in runs:
        attempts = run.info().get("attempts") or []
        total_attempts += len(attempts)
        starts = [parse_iso(a.get("started_at")) for a in attempts]
        initial = [a.get("initial_epoch") for a in attempts]
        if not attempts or None in starts or any(b <= a for a, b in zip(starts, starts[1:])) \
                or any(b < a for a, b in zip(initial, initial[1:])) or initial[0] != 0:
            bad.append(f"{run.id} {[(a.get('started_at'), a.get('initial_epoch')) for a in attempts]}")
    rows.append(("attempts sequential (start times rise, initial epochs never fall)", not bad,
                 f"{total_attempts} attempts in {len(runs)} runs" + (f"; {'; '.join(bad[:3])}" if bad else "")))

    with quiet_stderr():  # TensorFlow's C++ start-up lines
        import tensorflow  # noqa: F401

    from carviz.ml.predict import load_model

    bad = []
    for index, run in enumerate(runs):
        try:
            with quiet_stderr() if index == 0 else contextlib.nullcontext():  # the first load starts TensorFlow
                predictor = load_model(run)  # the dashboard's own loader (classes, input size, carviz layers)
            out = predictor.predict_batch(np.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 3), dtype="float32"))
            if out.shape != (1, len(predictor.classes)) or not np.all(np.isfinite(out)):
                bad.append(f"{run.id} output {out.shape}")
        except Exception as error:  # noqa: BLE001 - reported
            bad.append(f"{run.id} {type(error).__name__}: {str(error)[:200]}")
    rows.append(("models load and predict", not bad, f"{len(runs) - len(bad)}/{len(runs)}" +
                 (f"; {'; '.join(bad[:3])}" if bad else "")))

    bad = [str(path.relative_to(soak.runs_root)) for run in runs for path in partial_files(run.path)]
    rows.append(("no partial temp files (*.tmp, tmp-*)", not bad, "; ".join(bad[:5]) or "none"))

    deadline = time.monotonic() + 30
    while True:
        left = [p for p in psutil.process_iter(["pid", "cmdline", "status"])
                if p.info["status"] != psutil.STATUS_ZOMBIE and str(soak.home) in " ".join(p.info["cmdline"] or [])]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    rows.append(("no job processes left", not left, ", ".join(str(p.info["pid"]) for p in left) or "none"))

    refused = sum(run.log_tail(100000).count("already running") for run in runs)
    writers = not sampler.two_trainers and not sampler.lockless and not soak.violations
    detail = (f"{sampler.samples} samples; at most {sampler.max_trainers_per_run} trainer per run past startup; "
              f"{sum(len(p) for p in sampler.holders_seen.values())} lock holders seen; "
              f"{refused} second trainer(s) refused by the lock")
    problems = sampler.two_trainers[:3] + sampler.lockless[:3] + soak.violations[:5]
    rows.append(("no two writers ever (sampled; runtime rules held)", writers,
                 detail + (f"; {'; '.join(problems)}" if problems else "")))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="how long the random faults go on (default 5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--slots", type=int, default=2, help="CARVIZ_SLOTS (default 2)")
    parser.add_argument("--finish-minutes", type=float, default=15.0,
                        help="how long finishing every run may take before it is reported (default 15)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary CARVIZ_HOME")
    parser.add_argument("--verbose", action="store_true", help="print each action as it happens")
    args = parser.parse_args(argv)

    home = Path(tempfile.mkdtemp(prefix="carviz-soak-"))
    os.environ.update({"CARVIZ_HOME": str(home), "CARVIZ_SLOTS": str(args.slots), "TF_CPP_MIN_LOG_LEVEL": "2",
                       "CARVIZ_BACKEND": "local"})
    for name in ("CARVIZ_RUNS", "CARVIZ_DATA", "CARVIZ_CACHE", "CARVIZ_RAY_ADDRESS"):
        os.environ.pop(name, None)
    from carviz.data.datasets import generate_demo_dataset

    generate_demo_dataset(home / "data" / "demo", per_class=16, image_size=IMAGE_SIZE)
    (home / "runs").mkdir(exist_ok=True)
    print(f"soak: {args.minutes:g} min of faults, seed {args.seed}, {args.slots} slots, home {home}", flush=True)

    soak = Soak(args, home)
    sampler = Sampler(soak.runs_root)
    sampler.start()
    started = time.monotonic()
    ok = False
    try:
        soak.chaos(args.minutes * 60)
        chaos_seconds = time.monotonic() - started
        finish_seconds, left = soak.finish(args.finish_minutes * 60)
        sampler.done.set()
        sampler.join()
        rows = check(soak, sampler)
        ok = all(passed for _, passed, _ in rows) and not left

        print(f"\nactions ({chaos_seconds:.0f} s of faults, {len(soak.runs)} runs):")
        for name, count in sorted(soak.counts.items()):
            if "finishing" not in name:
                print(f"  {name:<40} {count}")
        print(f"finish: {soak.counts['resume (finishing)']} resumes, {finish_seconds:.0f} s; "
              + ("every run succeeded" if not left else f"{len(left)} did not finish:"))
        for line in left:
            print(f"  {line}")
        print("check:")
        for name, passed, detail in rows:
            print(f"  [{'ok' if passed else 'FAIL'}] {name}: {detail}")
        print(f"RESULT: {'OK' if ok else 'FAILED'} ({time.monotonic() - started:.0f} s)")
    finally:
        sampler.done.set()
        soak.end_hangs(force=True)
        for run in soak.runs:  # never leave a job behind
            if soak.live_pid(run) is not None:
                from carviz.core import jobs

                jobs.stop(run, timeout=5)
        if not args.keep and ok:
            shutil.rmtree(home, ignore_errors=True)
        else:
            print(f"kept {home} (events: {len(soak.events)})")
            (home / "soak-events.log").write_text("\n".join(soak.events) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
