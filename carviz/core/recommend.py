"""The one-click recommended sweep: freeze points from the backbone's structure, learning rates from a short LR range
test, 3 seeds, pruning, the feature cache and a held-out test split; and the run it recommends when it is done.

Pure (no TensorFlow at import). How it runs: `launch_recommended` starts one LR range test job whose params carry
the planned sweep (`PLAN_KEY`); when the test ends, the job itself (ml/lr_range.py) sets the learning rates from its
suggestion and launches the sweep (`launch_planned`), recording the sweep's id in the test folder. So the plan lives
on disk from the first click: a closed or restarted dashboard loses nothing, and nothing polls for it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from carviz.core import jobs
from carviz.core.config import (
    FREEZE_ALL,
    MAX_SWEEP_NAME,
    RECOMMENDED,
    ConfigError,
    PruneConfig,
    SweepConfig,
    TrainConfig,
    format_lr,
)
from carviz.core.store import LRTest, Store, atomic_write_json, read_json_object

if TYPE_CHECKING:
    from carviz.ml.backbones import LayerInfo

PLAN_KEY = "recommended_sweep"  # in an LR test's params.json: the sweep to launch when it ends
SWEEP_FILE = "recommended_sweep.json"  # in the LR test's folder once launched: {"sweep": id}
SEEDS = (1, 2, 3)
TEST_FRACTION = 0.15
MAX_BLOCK_POINTS = 3
DEFAULT_LRS = (1e-3, 1e-4)  # when the LR test suggests nothing: the usual fine-tuning pair for Adam
LR_TEST = {"min_lr": 1e-6, "max_lr": 1.0, "steps": 60}  # short: a minute or two on a CPU at 224 px


def sweep_name(dataset: str, backbone: str) -> str:
    """ "recommended · DATASET · BACKBONE" (a dataset given as a path by its folder's name), cut to fit."""
    name = f"recommended · {Path(dataset).name or dataset}"
    return f"{name[:MAX_SWEEP_NAME - len(backbone) - 3]} · {backbone}"


def pick_freeze_points(layers: Sequence["LayerInfo"], from_scratch: bool = False) -> list[int | str]:
    """Up to MAX_BLOCK_POINTS block starts spread evenly over the backbone's last third (the first and the last
    included; the second half when the last third has fewer than two), then "all" (the whole backbone frozen).
    Transfer learning mostly gains from retraining the late blocks, and each earlier freeze point costs more to
    train: on cars20 (5 epochs) MobileNet fine-tuned from block 44 no better than the classifier alone, in six times
    its time. Without pretrained weights freezing random layers makes no sense, so `from_scratch` adds 1 (train
    everything) in front."""
    n = len(layers)
    starts = [layer.index for layer in layers if layer.block_start and layer.index > max(1, 2 * n // 3)]
    if len(starts) < 2:
        starts = [layer.index for layer in layers if layer.block_start and layer.index > max(1, n // 2)]
    if len(starts) > MAX_BLOCK_POINTS:
        last = len(starts) - 1
        starts = sorted({starts[round(i * last / (MAX_BLOCK_POINTS - 1))] for i in range(MAX_BLOCK_POINTS)})
    points: list[int | str] = [1] if from_scratch else []
    points += [p for p in starts if p not in points]
    return points + [FREEZE_ALL]


def recommended_lrs(suggested_lr: float | None) -> tuple[float, ...]:
    """{3 × suggested, suggested}, rounded to two significant digits; DEFAULT_LRS without a usable suggestion.

    The suggestion is the safer (smaller) of the two classic LR-test rules, measured at a block start; a
    classifier-only configuration ("all") learns best higher, and a tenth of it trained too slowly in a short sweep
    (measured on cars20: a hand grid's 1e-3 won while the suggested pair was 2.9e-4 and 2.9e-5), so the pair
    brackets it from above."""
    if not isinstance(suggested_lr, (int, float)) or isinstance(suggested_lr, bool) or not 0 < suggested_lr <= 10:
        return DEFAULT_LRS
    low = float(f"{suggested_lr:.2g}")
    return (float(f"{3 * low:.2g}"), low)


def prune_for(epochs: int) -> PruneConfig | None:
    """One rung, at half the epochs (rounded up; before the last): an earlier rung judges configurations on the
    first epochs' noise (measured: rungs at a fifth and a half pruned 27 of 30 runs and left no clear winner).
    None when there is no room for one."""
    rung = -(-epochs // 2)
    return PruneConfig(rungs=(rung,), keep_fraction=0.5, min_runs=3) if rung < epochs else None


def recommended_sweep(dataset: str, backbone: str = "mobilenet", layers: Sequence["LayerInfo"] = (),
                      suggested_lr: float | None = None, base: TrainConfig = RECOMMENDED, name: str = "",
                      **changes: Any) -> SweepConfig:
    """The recommended sweep for `dataset` on `backbone`: freeze points from its layer listing (pick_freeze_points),
    learning rates from the LR test's suggestion (recommended_lrs), seeds 1-3, pruning, the feature cache, a 15 %
    test split; the rest from the RECOMMENDED preset (ImageNet weights, its head; none for small_cnn, which has none).
    `changes` override base fields (epochs, image_size, batch_size, …)."""
    if not layers:
        raise ConfigError(f"no layer listing for {backbone}: cannot pick freeze points")
    weights = "none" if backbone == "small_cnn" else changes.pop("weights", base.weights)
    changes.pop("weights", None)
    test_fraction = changes.pop("test_fraction", TEST_FRACTION)
    config = base.replace(dataset=dataset, backbone=backbone, weights=weights, test_fraction=test_fraction,
                          feature_cache=True, augmentation=dataclasses.replace(base.augmentation, enabled=False),
                          name="", **changes)
    return SweepConfig(name=name or sweep_name(dataset, backbone), base=config, backbones=(backbone,),
                       learning_rates=recommended_lrs(suggested_lr),
                       freeze_points=tuple(pick_freeze_points(layers, from_scratch=weights == "none")),
                       seeds=SEEDS, prune=prune_for(config.epochs))


def lr_test_config(plan: SweepConfig) -> TrainConfig:
    """What the LR range test trains: the sweep's base at its middle block-start freeze point (not "all": the lr
    must suit the runs that fine-tune)."""
    points = [p for p in plan.freeze_points if p != FREEZE_ALL] or [FREEZE_ALL]
    return plan.base.replace(name=f"{plan.name} · LR test", freeze=points[len(points) // 2])


def with_suggestion(plan: SweepConfig, suggested_lr: float | None) -> SweepConfig:
    return dataclasses.replace(plan, learning_rates=recommended_lrs(suggested_lr))


# ---------------------------------------------------------------- launching: the LR test first, then the sweep


def lr_test_params(plan: SweepConfig, backend: str | None, steps: int | None = None) -> dict[str, Any]:
    """The test's params: its range, the plan, and the backend the sweep goes to (resolved now, where the user
    chose it, not on whichever node the test runs)."""
    return {**LR_TEST, **({"steps": steps} if steps else {}), PLAN_KEY: plan.to_dict(),
            "backend": backend or jobs.default_backend()}


def create_recommended(plan: SweepConfig, runs_root: Path | None = None, backend: str | None = None,
                       steps: int | None = None) -> LRTest:
    """The LR test record carrying the plan, not launched (the CLI runs it in-process)."""
    return Store(runs_root).create_lr_test(lr_test_config(plan), lr_test_params(plan, backend, steps))


def launch_recommended(plan: SweepConfig, runs_root: Path | None = None, backend: str | None = None,
                       steps: int | None = None) -> LRTest:
    """Start the LR test job that launches `plan` (its learning rates set from the suggestion) when it ends.
    Returns at once."""
    from carviz.core.launch import launch_lr_test

    return launch_lr_test(lr_test_config(plan), lr_test_params(plan, backend, steps), runs_root, backend)


def planned_sweep_id(test: LRTest) -> str | None:
    value = read_json_object(test.file(SWEEP_FILE)).get("sweep")
    return value if isinstance(value, str) and value else None


def launch_planned(test: LRTest, suggested_lr: float | None) -> str | None:
    """Launch the sweep planned in the test's params (once: a second call returns the first one's id); None when
    the test carries no plan."""
    params = test.params()
    plan = params.get(PLAN_KEY)
    if not isinstance(plan, Mapping):
        return None
    existing = planned_sweep_id(test)
    if existing:
        return existing
    from carviz.core.sweeps import launch_sweep

    config = with_suggestion(SweepConfig.from_dict(plan), suggested_lr)
    backend = params.get("backend") if isinstance(params.get("backend"), str) else None
    record = launch_sweep(config, test.path.parent.parent, backend)
    atomic_write_json(test.file(SWEEP_FILE), {"sweep": record.id, "suggested_lr": suggested_lr,
                                              "learning_rates": list(config.learning_rates)})
    print(f"recommended sweep {record.id} launched: learning rates "
          f"{', '.join(format_lr(lr) for lr in config.learning_rates)}", flush=True)
    return record.id


def retry_recommended(test: LRTest) -> LRTest:
    """A new LR test for the plan of one that ended without launching its sweep (failed, stopped, lost); the old
    one is marked as retried, so it is no longer listed as waiting."""
    plan, params = test.params().get(PLAN_KEY), test.params()
    if not isinstance(plan, Mapping):
        raise ValueError(f"LR range test {test.id} carries no recommended sweep")
    if planned_sweep_id(test) or test.state().status.value in ("queued", "running"):
        raise ValueError(f"LR range test {test.id} has launched its sweep or is still going")
    backend = params.get("backend") if isinstance(params.get("backend"), str) else None
    steps = params.get("steps") if isinstance(params.get("steps"), int) else None
    retry = launch_recommended(SweepConfig.from_dict(plan), test.path.parent.parent, backend, steps)
    atomic_write_json(test.file(SWEEP_FILE), {"retried_as": retry.id})
    return retry


def skip_lr_test(test: LRTest) -> str:
    """Launch the plan of a test that ended without its sweep with the default learning rates (1e-3 and 1e-4, as
    when a test suggests none); the sweep's id."""
    if test.state().status.value in ("queued", "running"):
        raise ValueError(f"LR range test {test.id} is still going")
    sweep_id = launch_planned(test, None)
    if sweep_id is None:
        raise ValueError(f"LR range test {test.id} carries no recommended sweep")
    return sweep_id


def recommendations(runs_root: Path | None = None) -> list[dict[str, Any]]:
    """Every LR test that carries a plan and was not retried, newest first: {"test", "name", "status", "error",
    "sweep"} (sweep: its id once launched, else None)."""
    found = []
    for test in Store(runs_root).list_lr_tests():
        plan = test.params().get(PLAN_KEY)
        if not isinstance(plan, Mapping) or read_json_object(test.file(SWEEP_FILE)).get("retried_as"):
            continue
        state = test.state()
        found.append({"test": test.id, "name": str(plan.get("name", "")), "status": state.status.value,
                      "error": state.error, "sweep": planned_sweep_id(test)})
    return found


# ---------------------------------------------------------------- the run it recommends


def recommended_run(rows: Sequence[Mapping[str, Any]], result: Mapping[str, Any]) -> dict[str, Any] | None:
    """The run to use from a sweep: the clear winner's best finished run (by kept val accuracy, never by test
    accuracy: the test split stays unbiased), else the best finished run of the sweep. `result` is
    views.plots.sweeps.verdict's. Returns {"row", "clear", "text"} or None without a finished run."""
    finished = [r for r in rows if r.get("status") == "succeeded" and not r.get("problems")
                and isinstance(r.get("kept_val_accuracy"), (int, float))]
    winner = result.get("winner") if result.get("clear") else None
    if winner:
        ids = set(winner.get("run_ids") or [])
        finished = [r for r in finished if r.get("id") in ids] or finished
    if not finished:
        return None
    best = max(finished, key=lambda r: r["kept_val_accuracy"])
    test = best.get("test_accuracy")
    test_text = f"test accuracy {_percent(test)}" if isinstance(test, (int, float)) else "no test accuracy"
    why = "the clear winner's best seed" if winner else "no clear winner: the best single run"
    return {"row": best, "clear": bool(winner),
            "text": f"recommended run: {best.get('name') or best.get('id')} · {test_text} "
                    f"(val accuracy of the kept model {_percent(best['kept_val_accuracy'])}; {why})"}


def _percent(accuracy: float) -> str:
    """An accuracy as every page and the CLI show one (views.formatting.format_accuracy; core does not import
    views): "85.0 %"."""
    return f"{accuracy * 100:.1f} %"
