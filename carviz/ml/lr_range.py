"""LR range test: a short run with an exponentially rising learning rate, its loss curve and a suggested rate."""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from carviz.core import eta, settings
from carviz.core.config import TrainConfig
from carviz.core.jobs import JobContext, Outcome, Status, job_main, run_job
from carviz.core.store import LRTest, Store

log = logging.getLogger("carviz.ml.lr_range")

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
    also_freeze_points: Sequence[Any] = (),
    on_features: Callable[[int, int], None] | None = None,
) -> LRRangeResult:
    """Build the model as training does, then take `steps` training steps with an exponentially rising lr.

    Where the run could train on cached features (no augmentation, the cache on), the steps train the trainable
    remainder on the frozen part's cached output: the same updates, without recomputing the frozen layers each
    step. The pass that computes them also stores the cuts of also_freeze_points (a planned sweep's), so the sweep
    finds its features cached.

    on_step(step, lr, loss) is called after each step (step counts from 1). Stops early when the smoothed loss
    exceeds DIVERGENCE_FACTOR × its best, the loss is not finite, or should_stop() says so. Each step is a full
    optimizer update on one training batch (augmented, as in training); the pipeline repeats when it runs out.
    """
    schedule = exponential_schedule(min_lr, max_lr, steps)
    from carviz.data import datasets
    from carviz.ml import pipelines

    dataset_root = settings.resolve_dataset(config.dataset)  # before TensorFlow loads: fail fast
    scan = datasets.scan_dataset(dataset_root)
    if len(scan.classes) < 2:
        raise ValueError(f"dataset {config.dataset!r} needs at least 2 classes with images, found {scan.counts()}")
    # the training part of the run's split: never the validation or test images
    split = datasets.split_files(scan, config.validation_split, config.split_seed, config.test_fraction)
    if not split.train_paths:
        raise ValueError(f"dataset {config.dataset!r} is too small to split ({scan.total()} usable images)")

    import keras

    from carviz.ml.model import build_model
    from carviz.ml.devices import configure_devices

    device = configure_devices()
    keras.utils.set_random_seed(config.seed)
    model, summary = build_model(config, len(split.classes), on_gpu=device["kind"] == "gpu")
    if config.init_from_run:  # as training starts it: the parent run's weights, a new classifier
        from carviz.ml.transfer import init_from_parent

        init_from_parent(model, config)
    model, train_data = _cached_steps(model, config, summary.precision, dataset_root, scan, split,
                                      also_freeze_points, on_features)
    if train_data is None:
        train_data = pipelines.make_pipeline(split.train_paths, split.train_labels, len(split.classes),
                                            config.image_size, config.batch_size, training=True,
                                            augmentation=config.augmentation, seed=config.seed)
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


def _cached_steps(model: Any, config: TrainConfig, precision: str, dataset_root: Path, scan: Any, split: Any,
                  also_freeze_points: Sequence[Any], on_features: Callable[[int, int], None] | None) -> tuple[Any, Any]:
    """(the model to step, batches of its input): the remainder and cached features when training would use them
    without augmentation, else (model, None) and the caller feeds images."""
    from carviz.ml import features
    from carviz.core import feature_cache

    if config.augmentation.enabled or config.init_from_run or feature_cache.unavailable_reason(config) is not None:
        return model, None  # (a transfer run's cache key needs its parent's hash: not worth it for a test)
    n = len(model.get_layer("backbone").layers)
    freeze_index = config.freeze_index(n)
    try:
        from carviz.ml.backbones import layers_of

        layers = layers_of(model.get_layer("backbone"))
        also = sorted({features.cache_position(model, config.replace(freeze=point).freeze_index(n), layers)
                       for point in also_freeze_points})
        all_paths, all_labels = scan.labelled_files()
        settings_ = feature_cache.load_settings()
        cache = feature_cache.FeatureCache(feature_cache.cache_root(), settings_.max_bytes)
        own = features.cache_position(model, freeze_index, layers)
        features.precompute(model, config, precision, dataset_root, all_paths, all_labels, scan.fingerprint, cache,
                            settings_.dtype, [*also, own], on_features)  # the sweep's cuts and this one, one pass
        cached = features.prepare_cached_training(features.CacheRequest(
            model, config, freeze_index, precision, dataset_root, all_paths, all_labels, scan.fingerprint, split,
            cache, settings_.dtype, on_features))
    except (feature_cache.CacheFull, ValueError, TypeError, OSError) as error:
        log.info("LR test on images: %s", error)
        return model, None
    log.info("LR test on cached %s features (%s)", cached.info["layer"], cached.info["source"])
    return cached.remainder, cached.train_data


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


def create_lr_range(config: TrainConfig, min_lr: float = 1e-6, max_lr: float = 1.0, steps: int = 100,
                    runs_root: Path | None = None) -> Path:
    """A new test record (id made by the store) with config, parameters and a queued status; not launched."""
    check_range(min_lr, max_lr, steps)
    return Store(runs_root).create_lr_test(config, {"min_lr": min_lr, "max_lr": max_lr, "steps": steps}).path


def launch_lr_range(config: TrainConfig, min_lr: float = 1e-6, max_lr: float = 1.0, steps: int = 100,
                    runs_root: Path | None = None, backend: str | None = None) -> Path:
    """Create a test and start its job (`python -m carviz.ml.lr_range DIR`); like training it waits for a slot."""
    from carviz.core.launch import launch_lr_test

    check_range(min_lr, max_lr, steps)
    return launch_lr_test(config, {"min_lr": min_lr, "max_lr": max_lr, "steps": steps}, runs_root, backend).path


def read_lr_range(path: str | Path) -> LRRangeState:
    """The test's state; status derived as for runs (a queued/running test whose process is gone is LOST)."""
    test = LRTest(Path(path))
    state = test.state()
    raw_result = test.result()
    return LRRangeState(
        path=test.path,
        status=state.status,
        reason=state.reason,
        error=state.error,
        config=test.config_dict(),
        params=test.params(),
        progress=test.progress() or {},
        result=LRRangeResult.from_dict(raw_result) if raw_result else None,
    )


def list_lr_ranges(runs_root: Path | None = None) -> list[Path]:
    """Every test folder, newest first."""
    return [test.path for test in Store(runs_root).list_lr_tests()]


def stop_lr_range(path: str | Path) -> None:
    """Ask a running test to stop; it ends between steps and keeps what it measured."""
    LRTest(Path(path)).request_stop()


def lr_range_body(test: LRTest, context: JobContext) -> Outcome:
    """The job: run the recorded test, writing progress as it goes and the result at the end."""
    config = test.config()
    params = test.params()
    min_lr, max_lr, steps = float(params["min_lr"]), float(params["max_lr"]), int(params["steps"])
    lrs: list[float] = []
    losses: list[float | None] = []
    last_write = 0.0

    step_rate, feature_rate = eta.Rate(), eta.Rate()

    def on_step(step: int, lr: float, loss: float) -> None:
        nonlocal last_write
        lrs.append(lr)
        losses.append(loss if math.isfinite(loss) else None)
        left = step_rate.eta(step, steps)
        now = time.monotonic()
        if now - last_write >= PROGRESS_INTERVAL or step == steps:
            last_write = now
            test.write_progress({"step": step, "steps": steps, "lr": lr, "lrs": lrs, "losses": losses,
                                 "eta_seconds": left})

    feature_pass: dict[str, float] = {}  # its first and last report: (monotonic time, images done)

    def on_features(done: int, total: int) -> None:
        feature_pass.setdefault("first", time.monotonic())
        feature_pass.setdefault("first_done", done)
        feature_pass.update(last=time.monotonic(), total=total)
        test.write_progress({"step": 0, "steps": steps, "phase": "computing features", "images": done,
                             "of": total, "eta_seconds": feature_rate.eta(done, total)})

    from carviz.core.recommend import PLAN_KEY

    plan = params.get(PLAN_KEY)
    points = plan.get("freeze_points") if isinstance(plan, dict) else None
    test.write_progress({"step": 0, "steps": steps})
    result = lr_range_test(config, min_lr, max_lr, steps, on_step=on_step, should_stop=context.should_stop,
                           also_freeze_points=points if isinstance(points, list) else (), on_features=on_features)
    test.write_progress({"step": len(result.lrs), "steps": steps, "lr": result.lrs[-1] if result.lrs else None,
                         "lrs": lrs, "losses": losses})
    feature_seconds = None  # the pass's seconds, its first batch counted at the others' rate
    if feature_pass and feature_pass["total"] > feature_pass["first_done"]:
        feature_seconds = round((feature_pass["last"] - feature_pass["first"]) * feature_pass["total"]
                                / (feature_pass["total"] - feature_pass["first_done"]), 2)
    test.write_result({**result.to_dict(), "feature_pass_seconds": feature_seconds})
    stopped = result.stopped_early_reason == "stopped on request"
    if not stopped:  # a recommended sweep's test: launch the planned sweep with the suggested learning rates
        from carviz.core.recommend import launch_planned

        launch_planned(test, result.suggested_lr)
    return Outcome(Status.STOPPED if stopped else Status.SUCCEEDED)


def run_lr_range_job(path: str | Path, stop_flag: threading.Event | None = None) -> LRRangeResult:
    """Run the test recorded in `path` in this process (with its slot), writing status, progress and result."""
    test = LRTest(Path(path))
    run_job(test, lambda context: lr_range_body(test, context), needs_accelerator=True, stop_flag=stop_flag)
    raw = test.result()
    if raw is None:
        raise RuntimeError(f"LR range test {test.id} ended without a result ({test.state().status.value})")
    return LRRangeResult.from_dict(raw)


def main(argv: list[str] | None = None) -> int:
    return job_main(argv, lambda context: lr_range_body(LRTest(context.record.path), context),
                    kind="LR range test", needs_accelerator=True, record_type=LRTest)


if __name__ == "__main__":
    from carviz.ml.lr_range import main as module_main

    sys.exit(module_main())
