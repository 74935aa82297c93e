"""LR range test: a short run with an exponentially rising learning rate, its loss curve and a suggested rate."""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from . import settings
from .config import TrainConfig
from .jobs import spawn_detached
from .runs import (
    CONFIG_FILE,
    HEARTBEAT_FILE,
    LOG_FILE,
    PROGRESS_FILE,
    STATUS_FILE,
    Run,
    Status,
    atomic_write_json,
    atomic_write_text,
    new_run_id,
    now_iso,
    process_create_time,
    read_json,
)

log = logging.getLogger("carviz.lr_range")

LR_RANGE_DIR = ".lr_range"  # under runs/; the leading dot keeps it out of list_runs()
PARAMS_FILE = "params.json"
RESULT_FILE = "result.json"
DIVERGENCE_FACTOR = 4.0
SMOOTHING = 0.9  # EMA weight of the past; lower than fastai's 0.98 because our runs are 20-200 steps
PROGRESS_INTERVAL = 0.5  # seconds between progress.json writes
MAX_STEPS = 10_000


@dataclass(frozen=True)
class LRRangeResult:
    """One LR range test: the learning rate and loss of every step, the smoothed loss and the suggestion."""

    lrs: list[float]
    losses: list[float]
    smoothed_losses: list[float]
    suggested_lr: float | None
    stopped_early_reason: str | None = None
    min_loss_lr: float | None = None  # where the smoothed loss is lowest
    steepest_lr: float | None = None  # where it falls fastest (per decade of learning rate)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        # JSON has no NaN: a diverged last loss is written as null
        data["losses"] = [v if math.isfinite(v) else None for v in self.losses]
        data["smoothed_losses"] = [v if math.isfinite(v) else None for v in self.smoothed_losses]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LRRangeResult":
        def floats(values: Sequence[Any]) -> list[float]:
            return [float("nan") if v is None else float(v) for v in values]

        return cls(
            lrs=floats(data.get("lrs") or []),
            losses=floats(data.get("losses") or []),
            smoothed_losses=floats(data.get("smoothed_losses") or []),
            suggested_lr=data.get("suggested_lr"),
            stopped_early_reason=data.get("stopped_early_reason"),
            min_loss_lr=data.get("min_loss_lr"),
            steepest_lr=data.get("steepest_lr"),
        )


# ---------------------------------------------------------------- pure helpers


def check_range(min_lr: float, max_lr: float, steps: int) -> None:
    """ValueError unless 0 < min_lr < max_lr <= 10 and 2 <= steps <= MAX_STEPS."""
    if not (math.isfinite(min_lr) and math.isfinite(max_lr) and 0 < min_lr < max_lr <= 10):
        raise ValueError(f"need 0 < min_lr < max_lr <= 10, got min_lr={min_lr}, max_lr={max_lr}")
    if isinstance(steps, bool) or not isinstance(steps, int) or not 2 <= steps <= MAX_STEPS:
        raise ValueError(f"steps must be an integer in 2..{MAX_STEPS}, got {steps!r}")


def exponential_schedule(min_lr: float, max_lr: float, steps: int) -> list[float]:
    """min_lr·(max_lr/min_lr)^(i/(steps-1)) for i = 0..steps-1: equal ratios, first min_lr, last max_lr."""
    check_range(min_lr, max_lr, steps)
    ratio = max_lr / min_lr
    lrs = [min_lr * ratio ** (i / (steps - 1)) for i in range(steps)]
    lrs[-1] = max_lr  # exact despite rounding
    return lrs


def ema_smooth(values: Sequence[float], beta: float = SMOOTHING) -> list[float]:
    """Bias-corrected exponential moving average (as Adam debiases its moments); NaN in, NaN from there on."""
    if not 0 <= beta < 1:
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    out: list[float] = []
    average = 0.0
    for step, value in enumerate(values, start=1):
        average = beta * average + (1 - beta) * float(value)
        out.append(average / (1 - beta**step))
    return out


def _finite_prefix(lrs: Sequence[float], smoothed: Sequence[float]) -> tuple[list[float], list[float]]:
    """The points up to the first non-finite loss (a diverged tail carries no information)."""
    xs: list[float] = []
    ys: list[float] = []
    for lr, loss in zip(lrs, smoothed):
        if not (math.isfinite(lr) and lr > 0 and math.isfinite(loss)):
            break
        xs.append(float(lr))
        ys.append(float(loss))
    return xs, ys


def suggestion_parts(lrs: Sequence[float], smoothed: Sequence[float]) -> tuple[float | None, float | None]:
    """(lr at the minimum smoothed loss, lr at the steepest descent before it); None where there is none."""
    xs, ys = _finite_prefix(lrs, smoothed)
    if len(xs) < 3:
        return None, None
    best = min(range(len(ys)), key=ys.__getitem__)
    logs = [math.log10(x) for x in xs]
    steepest: float | None = None
    steepest_slope = 0.0
    # Central differences in log10(lr) over the descent, skipping the first 10% (as fastai does): the EMA has
    # seen few points there, so its noise would pass for a steep drop.
    for i in range(min(len(xs) // 10, best), best + 1):
        lo, hi = max(0, i - 1), min(len(xs) - 1, i + 1)
        if logs[hi] == logs[lo]:
            continue
        slope = (ys[hi] - ys[lo]) / (logs[hi] - logs[lo])
        if slope < steepest_slope:
            steepest, steepest_slope = xs[i], slope
    return xs[best], steepest


def suggest_lr(lrs: Sequence[float], smoothed: Sequence[float]) -> float | None:
    """The suggested learning rate: the smaller of (a) the lr where the smoothed loss falls fastest per decade,
    before its minimum, and (b) one tenth of the lr at the minimum smoothed loss.

    Both are the classic rules (Smith 2017; fastai's "steep" and "min/10"); the smaller one is the safer pick: on a
    noisy short curve the steepest point can sit just before the blow-up, and a minimum reached late can still be
    past the stable region. Clamped to the tested range; None with fewer than 3 finite points.
    """
    min_loss_lr, steepest_lr = suggestion_parts(lrs, smoothed)
    if min_loss_lr is None:
        return None
    candidates = [min_loss_lr / 10]
    if steepest_lr is not None:
        candidates.append(steepest_lr)
    xs, _ = _finite_prefix(lrs, smoothed)
    return min(max(min(candidates), xs[0]), xs[-1])


# ---------------------------------------------------------------- the test itself (TensorFlow loaded lazily)


def lr_range_test(
    config: TrainConfig,
    min_lr: float = 1e-6,
    max_lr: float = 1.0,
    steps: int = 100,
    on_step: Callable[[int, float, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    smoothing: float = SMOOTHING,
) -> LRRangeResult:
    """Build the model as training does, then take `steps` training steps with an exponentially rising lr.

    on_step(step, lr, loss) is called after each step (step counts from 1). Stops early when the smoothed loss
    exceeds DIVERGENCE_FACTOR × its best, the loss is not finite, or should_stop() says so. Each step is a full
    optimizer update on one training batch (augmented, as in training); the pipeline repeats when it runs out.
    """
    schedule = exponential_schedule(min_lr, max_lr, steps)
    from . import datasets

    dataset_root = settings.resolve_dataset(config.dataset)  # before TensorFlow loads: fail fast
    scan = datasets.scan_dataset(dataset_root)
    if len(scan.classes) < 2:
        raise ValueError(f"dataset {config.dataset!r} needs at least 2 classes with images, found {scan.counts()}")
    split = datasets.split_files(scan, config.validation_split, config.seed)
    if not split.train_paths:
        raise ValueError(f"dataset {config.dataset!r} is too small to split ({scan.total()} usable images)")

    import keras

    from .model import build_model
    from .train import configure_devices

    device = configure_devices()
    keras.utils.set_random_seed(config.seed)
    model, _summary = build_model(config, len(split.classes), on_gpu=device["kind"] == "gpu")
    train_data = datasets.make_pipeline(split.train_paths, split.train_labels, len(split.classes), config.image_size,
                                        config.batch_size, training=True, augmentation=config.augmentation,
                                        seed=config.seed)
    batches = iter(train_data.repeat())

    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    average = 0.0
    best = math.inf
    reason: str | None = None
    for i, lr in enumerate(schedule):
        if should_stop is not None and should_stop():
            reason = "stopped on request"
            break
        x, y = next(batches)
        model.optimizer.learning_rate = lr
        loss = float(model.train_on_batch(x, y, return_dict=True)["loss"])
        average = smoothing * average + (1 - smoothing) * loss
        smooth = average / (1 - smoothing ** (i + 1))
        lrs.append(lr)
        losses.append(loss)
        smoothed.append(smooth)
        if on_step is not None:
            on_step(i + 1, lr, loss)
        if not math.isfinite(loss) or not math.isfinite(smooth):
            reason = f"loss is not finite at lr {lr:.3g}"
            break
        if smooth > DIVERGENCE_FACTOR * best:
            reason = f"diverged at lr {lr:.3g}: smoothed loss {smooth:.3g} > {DIVERGENCE_FACTOR:g} × best {best:.3g}"
            break
        best = min(best, smooth)
    min_loss_lr, steepest_lr = suggestion_parts(lrs, smoothed)
    return LRRangeResult(lrs=lrs, losses=losses, smoothed_losses=smoothed, suggested_lr=suggest_lr(lrs, smoothed),
                         stopped_early_reason=reason, min_loss_lr=min_loss_lr, steepest_lr=steepest_lr)


# ---------------------------------------------------------------- as a background job: runs/.lr_range/<id>/


@dataclass(frozen=True)
class LRRangeState:
    """What a test folder says, read afresh: status (LOST derived from a dead process), progress, result."""

    path: Path
    status: Status
    reason: str
    error: str | None
    config: dict[str, Any]
    params: dict[str, Any]
    progress: dict[str, Any] = field(default_factory=dict)
    result: LRRangeResult | None = None

    @property
    def id(self) -> str:
        return self.path.name


def lr_range_root(runs_root: Path | None = None) -> Path:
    return Path(runs_root or settings.runs_dir()) / LR_RANGE_DIR


def create_lr_range(config: TrainConfig, min_lr: float = 1e-6, max_lr: float = 1.0, steps: int = 100,
                    runs_root: Path | None = None) -> Path:
    """A new test folder (exclusive mkdir, id made here) with config.json, params.json and a queued status."""
    check_range(min_lr, max_lr, steps)
    root = lr_range_root(runs_root)
    root.mkdir(parents=True, exist_ok=True)
    for _ in range(20):
        path = root / new_run_id()
        try:
            path.mkdir()
        except FileExistsError:
            continue
        atomic_write_text(path / CONFIG_FILE, config.to_json())
        atomic_write_json(path / PARAMS_FILE, {"min_lr": min_lr, "max_lr": max_lr, "steps": steps})
        Run(path).write_status(Status.QUEUED, created_at=now_iso())
        return path
    raise RuntimeError(f"could not create a unique LR range test folder under {root}")


def launch_lr_range(config: TrainConfig, min_lr: float = 1e-6, max_lr: float = 1.0, steps: int = 100,
                    runs_root: Path | None = None) -> Path:
    """Create a test folder and start `python -m carviz.lr_range DIR` detached (it outlives us); returns the folder."""
    path = create_lr_range(config, min_lr, max_lr, steps, runs_root)
    spawn_detached("carviz.lr_range", path, path / LOG_FILE)
    return path


def read_lr_range(path: str | Path) -> LRRangeState:
    """The test's state; status derived as for runs (a queued/running test whose process is gone is LOST)."""
    path = Path(path)
    state = Run(path).state()
    raw_result = read_json(path / RESULT_FILE)
    progress = read_json(path / PROGRESS_FILE)
    return LRRangeState(
        path=path,
        status=state.status,
        reason=state.reason,
        error=state.error,
        config=read_json(path / CONFIG_FILE) or {},
        params=read_json(path / PARAMS_FILE) or {},
        progress=progress if isinstance(progress, dict) else {},
        result=LRRangeResult.from_dict(raw_result) if isinstance(raw_result, dict) else None,
    )


def list_lr_ranges(runs_root: Path | None = None) -> list[Path]:
    """Every test folder, newest first."""
    root = lr_range_root(runs_root)
    if not root.is_dir():
        return []
    found = [entry for entry in root.iterdir() if entry.is_dir() and (entry / CONFIG_FILE).exists()]
    return sorted(found, key=lambda p: p.name, reverse=True)


def stop_lr_range(path: str | Path) -> None:
    """Ask a running test to stop; it ends between steps and keeps what it measured."""
    Run(Path(path)).request_stop()


def run_lr_range_job(path: str | Path, stop_flag: threading.Event | None = None) -> LRRangeResult:
    """Run the test recorded in `path` in this process, writing status, progress and result as it goes."""
    run = Run(Path(path))
    stop_flag = stop_flag or threading.Event()
    config = TrainConfig.load(run.file(CONFIG_FILE))
    params = read_json(run.file(PARAMS_FILE)) or {}
    min_lr, max_lr, steps = float(params["min_lr"]), float(params["max_lr"]), int(params["steps"])
    run.write_status(Status.RUNNING, pid=os.getpid(), pid_create_time=process_create_time(os.getpid()),
                     started_at=now_iso())
    lrs: list[float] = []
    losses: list[float] = []
    last_write = 0.0

    def on_step(step: int, lr: float, loss: float) -> None:
        nonlocal last_write
        lrs.append(lr)
        losses.append(loss if math.isfinite(loss) else None)  # type: ignore[arg-type]
        now = time.monotonic()
        if now - last_write >= PROGRESS_INTERVAL or step == steps:
            last_write = now
            atomic_write_json(run.file(PROGRESS_FILE), {"step": step, "steps": steps, "lr": lr,
                                                        "lrs": lrs, "losses": losses, "updated_at": now_iso()})

    atomic_write_json(run.file(PROGRESS_FILE), {"step": 0, "steps": steps, "updated_at": now_iso()})
    try:
        result = lr_range_test(config, min_lr, max_lr, steps, on_step=on_step,
                               should_stop=lambda: stop_flag.is_set() or run.stop_requested())
    except KeyboardInterrupt:
        run.write_status(Status.STOPPED, ended_at=now_iso())
        raise
    except Exception as error:  # the record says why; the caller decides what else to do
        run.write_status(Status.FAILED, ended_at=now_iso(), error=f"{type(error).__name__}: {error}")
        raise
    atomic_write_json(run.file(PROGRESS_FILE), {"step": len(result.lrs), "steps": steps,
                                                "lr": result.lrs[-1] if result.lrs else None,
                                                "lrs": lrs, "losses": losses, "updated_at": now_iso()})
    atomic_write_json(run.file(RESULT_FILE), result.to_dict())
    stopped = result.stopped_early_reason == "stopped on request"
    run.write_status(Status.STOPPED if stopped else Status.SUCCEEDED, ended_at=now_iso())
    return result


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m carviz.lr_range DIR", file=sys.stderr)
        return 2
    path = Path(args[0]).resolve()
    if not (path / CONFIG_FILE).exists():
        print(f"not an LR range test folder (no config.json): {path}", file=sys.stderr)
        return 2
    from .train import Heartbeat, _install_stop_signals, _setup_logging

    _setup_logging(path / LOG_FILE)
    stop_flag = threading.Event()
    _install_stop_signals(stop_flag)
    with Heartbeat(path / HEARTBEAT_FILE):
        try:
            run_lr_range_job(path, stop_flag)
        except Exception as error:  # noqa: BLE001 - any failure ends the test as failed, with why
            log.error("LR range test failed:\n%s", traceback.format_exc())
            if (read_json(path / STATUS_FILE) or {}).get("state") != Status.FAILED.value:  # failed before the test
                Run(path).write_status(Status.FAILED, ended_at=now_iso(), error=f"{type(error).__name__}: {error}")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
