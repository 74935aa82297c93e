"""Command group: sweeps — sweep (launch a grid), sweeps (list), sweep-show, sweep-stop, sweep-resume."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

from carviz.cli.common import (
    SWEEP_BASE_FIELDS,
    add_backend_flag,
    add_config_flags,
    add_dataset_flags,
    config_changes_from_args,
    dataset_from_args,
    fmt,
    split,
)
from carviz.core import settings
from carviz.core.config import PRESETS, ConfigError, TrainConfig


def register(sub: Any) -> dict[str, Callable[[argparse.Namespace], int]]:

    sweep = sub.add_parser("sweep", help="launch a grid of runs: backbones x learning rates x freeze points x seeds")
    sweep.add_argument("--name", help="the sweep's display name (its runs are named after it); required unless "
                                      "--recommended (default there: 'recommended · DATASET · BACKBONE')")
    sweep.add_argument("--recommended", action="store_true",
                       help="one click: freeze points from the backbone's blocks plus 'all', learning rates from a "
                            "short LR range test (run first, here), seeds 1-3, pruning, the feature cache and a 15%% "
                            "test split; takes --dataset, --backbone and optionally --epochs, --image-size, "
                            "--batch-size, --weights")
    sweep.add_argument("--backbone", default=None, help="with --recommended: the backbone (default mobilenet)")
    sweep.add_argument("--lr-steps", type=int, default=None,
                       help="with --recommended: steps of the LR range test (default 60)")
    base = sweep.add_mutually_exclusive_group()
    base.add_argument("--preset", choices=sorted(PRESETS), help="base config (default: demo quick)")
    base.add_argument("--config", type=Path, help="base config.json")
    sweep.add_argument("--backbones", help="comma list (default: the base config's backbone)")
    sweep.add_argument("--lrs", help="comma list of learning rates, e.g. 1e-3,1e-4 (default: the base's)")
    freeze = sweep.add_mutually_exclusive_group()
    freeze.add_argument("--freeze", help="comma list of freeze points (integers or 'all')")
    freeze.add_argument("--freeze-rule", choices=("conv", "block", "cut"),
                        help="generate freeze points from each backbone's layers (builds it once)")
    sweep.add_argument("--every", type=int, default=1, help="with --freeze-rule cut: keep every K-th cut point")
    sweep.add_argument("--seeds", help="comma list of run seeds (default: the base's); every run shares one split")
    sweep.add_argument("--vary-split", action="store_true",
                       help="each run splits with its own seed instead (the split varies with --seeds)")
    add_dataset_flags(sweep)
    add_config_flags(sweep, SWEEP_BASE_FIELDS)  # the base config's epochs, batch size, …, split seed (every run's)
    sweep.add_argument("--prune", action="store_true", help="successive halving at the rung epochs")
    sweep.add_argument("--rungs", default="2,4", help="with --prune: comma list of rung epochs (default 2,4)")
    sweep.add_argument("--keep-fraction", type=float, default=0.5, help="with --prune: share kept at a rung")
    sweep.add_argument("--min-runs", type=int, default=3, help="with --prune: configurations at a rung before any is pruned")
    sweep.add_argument("--wait", action="store_true", help="follow the sweep until every run ends")
    add_backend_flag(sweep)

    sweeps = sub.add_parser("sweeps", help="list sweeps with progress")
    sweeps.add_argument("--json", action="store_true")
    for command, text in (("sweep-show", "a sweep's points: kept val accuracy mean ± std over finished seeds, "
                                         "and whether a configuration clearly wins"),
                          ("sweep-stop", "ask every unfinished run of a sweep to stop"),
                          ("sweep-resume", "relaunch a sweep's stopped and lost runs")):
        parser = sub.add_parser(command, help=text)
        parser.add_argument("sweep", help="sweep id, unique id prefix, or name")
        if command == "sweep-show":
            parser.add_argument("--json", action="store_true")
    return {"sweep": cmd_sweep, "sweeps": cmd_sweeps, "sweep-show": cmd_sweep_show, "sweep-stop": cmd_sweep_stop,
            "sweep-resume": cmd_sweep_resume}


def sweep_config_from_args(args: argparse.Namespace) -> Any:
    """The SweepConfig the sweep command's flags describe (a freeze rule builds each backbone's layer listing)."""
    from carviz.core.sweeps import PruneConfig, SweepConfig, freeze_points

    base = TrainConfig.load(args.config) if args.config else PRESETS[args.preset or "demo quick"]
    changes = {path[0]: value for path, value in config_changes_from_args(args, SWEEP_BASE_FIELDS).items()}
    dataset = dataset_from_args(args)  # a checked name, or --dataset-path recorded as an absolute path
    if dataset is not None:
        changes["dataset"] = dataset
    backbones = split(args.backbones) or [base.backbone]
    changes["backbone"] = backbones[0]  # the base itself must be valid (small_cnn has no ImageNet weights)
    base = base.replace(**changes)
    try:
        lrs = [float(v) for v in split(args.lrs)] or [base.learning_rate]
        seeds = [int(v) for v in split(args.seeds)] or [base.seed]
        rungs = tuple(int(v) for v in split(args.rungs))
    except ValueError as error:
        raise ConfigError(f"--lrs, --seeds and --rungs take comma lists of numbers: {error}") from None
    per_backbone: dict[str, tuple] = {}
    if args.freeze_rule:
        per_backbone = {b: tuple(freeze_points(b, args.freeze_rule, base.image_size, base.alpha, k=args.every))
                        for b in backbones}
        points: tuple = per_backbone[backbones[0]]
    else:
        points = tuple(split(args.freeze)) or (base.freeze,)
    prune = PruneConfig(rungs, args.keep_fraction, args.min_runs) if args.prune else None
    return SweepConfig(name=args.name, base=base, backbones=tuple(backbones), learning_rates=tuple(lrs),
                       freeze_points=points, seeds=tuple(seeds), prune=prune, backbone_freeze_points=per_backbone,
                       vary_split=bool(getattr(args, "vary_split", False)))


def warn_frozen_random(config: Any) -> None:
    """A 'warning:' line on stderr for the sweep's runs that freeze a random backbone; launching goes on."""
    from carviz.core.advice import sweep_frozen_random_warning

    warning = sweep_frozen_random_warning(config)
    if warning:
        print(f"warning: {warning}", file=sys.stderr, flush=True)


def follow_sweep(sweep_id: str, out=None, poll: float = 2.0) -> str:
    """Print a line whenever the sweep's progress changes, until no run is queued or running; returns its status."""
    from carviz.core.sweeps import read_sweep

    from carviz.views.formatting import format_left

    out = out or sys.stdout
    last, printed_at = None, 0.0
    while True:
        state = read_sweep(sweep_id)
        counts = ", ".join(f"{n} {status}" for status, n in sorted(state.counts.items()))
        line = f"{sweep_id} {state.status}: {state.progress_text} ({counts})"
        left = format_left(state.eta_seconds) if state.status in ("queued", "running") else ""
        if line != last or (left and time.monotonic() - printed_at > 30):  # the estimate: at most every 30 s
            print(line + (f", {left}" if left else ""), file=out, flush=True)
            last, printed_at = line, time.monotonic()
        if state.status not in ("queued", "running"):
            return state.status
        time.sleep(poll)


def cmd_recommended(args: argparse.Namespace) -> int:
    """sweep --recommended: plan the sweep, run the LR range test here (recorded like the page's), and the test
    launches the sweep with its suggested learning rates."""
    from carviz.core import recommend
    from carviz.ml.backbones import list_layers
    from carviz.ml.lr_range import run_lr_range_job

    dataset = dataset_from_args(args)
    if dataset is None:
        raise ConfigError("sweep --recommended needs --dataset NAME (or --dataset-path FOLDER)")
    backbone = args.backbone or (split(args.backbones) or ["mobilenet"])[0]
    changes = {path[0]: value for path, value in config_changes_from_args(args, SWEEP_BASE_FIELDS).items()}
    image_size = changes.get("image_size", recommend.RECOMMENDED.image_size)
    plan = recommend.recommended_sweep(dataset, backbone, list_layers(backbone, image_size), name=args.name or "",
                                       **changes)
    warn_frozen_random(plan)
    settings.resolve_dataset(plan.base.dataset)  # fail here, not in the background
    test = recommend.create_recommended(plan, backend=args.backend, steps=args.lr_steps)
    print(f"{plan.name}: freeze points {', '.join(str(p) for p in plan.freeze_points)}, seeds "
          f"{', '.join(str(s) for s in plan.seeds)}; LR range test {test.id} first", flush=True)
    result = run_lr_range_job(test.path)
    sweep_id = recommend.planned_sweep_id(test)
    if sweep_id is None:
        print(f"LR range test {test.id} ended {test.state().status.value}: no sweep launched", file=sys.stderr)
        return 1
    from carviz.core.sweeps import read_record

    record = read_record(sweep_id)
    suggested = f"{result.suggested_lr:.3g}" if result.suggested_lr else "none (default pair)"
    print(f"suggested learning rate {suggested}: learning rates "
          f"{', '.join(f'{lr:g}' for lr in record.config.learning_rates)}", flush=True)
    print(f"sweep {record.id}: {len(record.run_ids)} runs launched", flush=True)
    if args.wait:
        return 0 if follow_sweep(record.id) == "done" else 1
    print(f"follow it with: python -m carviz sweep-show {record.id}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from carviz.core.sweeps import launch_sweep

    if args.recommended:
        return cmd_recommended(args)
    if not args.name:
        raise ConfigError("sweep needs --name (or --recommended)")
    config = sweep_config_from_args(args)
    warn_frozen_random(config)
    settings.resolve_dataset(config.base.dataset)  # fail here, not in every background job
    record = launch_sweep(config, backend=args.backend)
    print(f"sweep {record.id}: {len(record.run_ids)} runs launched", flush=True)
    if args.wait:
        return 0 if follow_sweep(record.id) == "done" else 1
    print(f"follow it with: python -m carviz sweep-show {record.id}")
    return 0


def cmd_sweeps(args: argparse.Namespace) -> int:
    from carviz.core.sweeps import list_sweeps, read_sweep
    from carviz.views.plots.sweeps import sweep_points, verdict

    states = [read_sweep(record.id) for record in list_sweeps()]
    verdicts = [verdict(sweep_points(s.rows)) for s in states]
    if args.json:
        print(json.dumps([{"id": s.record.id, "name": s.record.config.name, "status": s.status, "done": s.n_done,
                           "total": s.n_total, "counts": s.counts, "eta_seconds": s.eta_seconds,
                           "best_run": (s.best or {}).get("id"),
                           "best_kept_val_accuracy": (s.best or {}).get("kept_val_accuracy"),
                           "clear_winner": v["clear"], "verdict": v["text"]} for s, v in zip(states, verdicts)],
                         indent=2, ensure_ascii=False))
        return 0
    if not states:
        print(f"no sweeps in {settings.runs_dir()}")
        return 0
    print(f"{'id':<23} {'status':<8} {'progress':<16} name")
    for s, v in zip(states, verdicts):
        print(f"{s.record.id:<23} {s.status:<8} {s.progress_text:<16} {s.record.config.name}")
        print(f"{'':<23} {v['text']}")
    return 0


def cmd_sweep_show(args: argparse.Namespace) -> int:
    from carviz.core.sweeps import find_sweep, read_sweep
    from carviz.views.plots.curves import chance_level
    from carviz.views.formatting import format_accuracy
    from carviz.views.plots.sweeps import VALUE_TITLE, sweep_points, verdict

    state = read_sweep(find_sweep(args.sweep).id)
    points = sweep_points(state.rows)
    result, chance = verdict(points), chance_level(state.rows)
    if args.json:
        print(json.dumps({"points": json.loads(points.to_json(orient="records")), "chance": chance,
                          "verdict": {key: result[key] for key in ("clear", "margin", "spread", "text")}},
                         indent=2, ensure_ascii=False))
        return 0
    counts = ", ".join(f"{n} {status}" for status, n in sorted(state.counts.items()))
    print(f"sweep {state.record.id} ({state.record.config.name}) {state.status}: {state.progress_text} ({counts})")
    print(f"{VALUE_TITLE}: mean ± std (in percentage points) over each point's n finished runs; pruned and "
          "unfinished runs are left out")
    print(f"{'backbone':<14} {'lr':>8} {'freeze':>6} {'index':>5} {'mean':>7} {'std':>7} {'n':>3} {'pruned':>6} "
          f"{'unfinished':>10}  layer")
    for p in points.itertuples():  # the mean as every page shows an accuracy; the std in percentage points
        mean = format_accuracy(p.mean)
        std = "–" if p.std is None or p.std != p.std else f"{p.std * 100:.1f}"
        print(f"{p.backbone:<14} {fmt(p.learning_rate, 2):>8} {p.freeze!s:>6} {p.freeze_index:>5} {mean:>7} {std:>7} "
              f"{p.n:>3} {p.n_pruned:>6} {p.n_unfinished:>10}  {p.layer if isinstance(p.layer, str) else ''}")
    if chance is not None:
        print(f"chance: {format_accuracy(chance)} ({round(1 / chance)} classes)")
    print(result["text"])
    from carviz.core.recommend import recommended_run

    pick = recommended_run(state.rows, result)
    if pick:
        print(f"{pick['text']} · id {pick['row']['id']}")
    return 0


def cmd_sweep_stop(args: argparse.Namespace) -> int:
    from carviz.core.sweeps import find_sweep, stop_sweep

    record = find_sweep(args.sweep)
    print(f"sweep {record.id}: stop requested for {len(stop_sweep(record.id))} run(s)")
    return 0


def cmd_sweep_resume(args: argparse.Namespace) -> int:
    from carviz.core.sweeps import find_sweep, resume_sweep

    record = find_sweep(args.sweep)
    print(f"sweep {record.id}: {len(resume_sweep(record.id))} run(s) resumed")
    return 0
