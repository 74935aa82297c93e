"""`python -m carviz …`: demo data, layer listings, training jobs, the run store, collecting, importing and
reviewing images (crawl, import, trash, restore), and the frozen-feature cache from the command line."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from carviz.core import settings
from carviz.core.config import FREEZE_ALL, PRESETS, Augmentation, ConfigError, TrainConfig
from carviz.core.store import Run, Status, find_run, list_runs, summarize


def _freeze_arg(text: str) -> int | str:
    if text == FREEZE_ALL:
        return FREEZE_ALL
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"freeze must be an integer >= 1 or 'all', got {text!r}")


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """The TrainConfig flags of `train` (read back by config_from_args): --config/--preset, then one per field."""
    parser.add_argument("--config", type=Path, help="a config.json to start from")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="a named preset to start from")
    for flag, kind in (("name", str), ("dataset", str), ("backbone", str), ("alpha", float), ("weights", str),
                       ("image-size", int), ("head", str), ("dropout", float), ("optimizer", str),
                       ("learning-rate", float), ("epochs", int), ("batch-size", int),
                       ("validation-split", float), ("seed", int), ("early-stopping-patience", int),
                       ("precision", str), ("checkpoint-every", int)):
        parser.add_argument(f"--{flag}", type=kind, default=None)
    parser.add_argument("--lr", dest="learning_rate", type=float, default=None, help="same as --learning-rate")
    parser.add_argument("--freeze", type=_freeze_arg, default=None)
    parser.add_argument("--augment", action="store_true", default=None, help="augment the training split")
    parser.add_argument("--train-frozen-bn", action="store_true", help="frozen BatchNorm layers keep training")
    parser.add_argument("--freeze-all-bn", action="store_true",
                        help="BatchNorm layers of the trainable part are frozen too (the recommended preset does this)")
    parser.add_argument("--xla", action="store_true", help="compile with XLA (slow first epoch on CPU)")
    parser.add_argument("--no-feature-cache", action="store_true",
                        help="run the frozen layers on every image each epoch instead of training on cached features")


def _add_backend_flag(parser: argparse.ArgumentParser,
                      text: str = "where jobs run: local (default, or $CARVIZ_BACKEND) or ray "
                                  "(the cluster at $CARVIZ_RAY_ADDRESS)") -> None:
    parser.add_argument("--backend", choices=("local", "ray"), default=None, help=text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m carviz", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo-data", help="generate the demo dataset of drawn vehicles")
    demo.add_argument("--dest", type=Path, default=None, help="folder (default: data/demo)")
    demo.add_argument("--per-class", type=int, default=60)
    demo.add_argument("--size", type=int, default=96)

    layers = sub.add_parser("layers", help="list a backbone's layers with the seed's 1-based index")
    layers.add_argument("backbone")
    layers.add_argument("--size", type=int, default=None)
    layers.add_argument("--alpha", type=float, default=1.0)
    layers.add_argument("--conv-only", action="store_true")
    layers.add_argument("--blocks-only", action="store_true", help="only block boundaries")
    layers.add_argument("--freeze", type=_freeze_arg, default=None, help="mark what 'freeze N' freezes")

    train = sub.add_parser("train", help="launch a training job in the background")
    _add_config_flags(train)
    mode = train.add_mutually_exclusive_group()
    mode.add_argument("--wait", action="store_true", help="follow the job until it ends")
    mode.add_argument("--foreground", action="store_true", help="train in this process instead")
    _add_backend_flag(train)

    runs = sub.add_parser("runs", help="list runs")
    runs.add_argument("--json", action="store_true")

    show = sub.add_parser("show", help="a run's config, status and metrics")
    show.add_argument("run")
    show.add_argument("--json", action="store_true")

    stop = sub.add_parser("stop", help="stop a job (gracefully, then killed after --timeout)")
    stop.add_argument("run")
    stop.add_argument("--timeout", type=float, default=30.0)

    resume = sub.add_parser("resume", help="resume a stopped or lost run from its last checkpoint")
    resume.add_argument("run")
    resume.add_argument("--wait", action="store_true")
    _add_backend_flag(resume, "where to run it (default: where it ran last)")

    lr_find = sub.add_parser("lr-find", help="LR range test: a short run with a rising learning rate, and a suggestion")
    _add_config_flags(lr_find)
    lr_find.add_argument("--steps", type=int, default=100, help="training steps (default 100)")
    lr_find.add_argument("--min-lr", type=float, default=1e-6, help="first learning rate (default 1e-6)")
    lr_find.add_argument("--max-lr", type=float, default=1.0, help="last learning rate (default 1)")
    lr_find.add_argument("--background", action="store_true", help="launch it as a background job instead")
    _add_backend_flag(lr_find, "with --background: where to run it (default: $CARVIZ_BACKEND, else local)")
    _add_data_commands(sub)
    _add_sweep_commands(sub)
    _add_cache_command(sub)
    return parser


def _add_data_commands(sub: Any) -> None:
    """Collecting, importing and reviewing images: crawl, crawl-status, crawl-stop, import, trash, restore."""
    dataset_help = "a dataset name (a folder under data/) or a path (absolute, or starting with .)"
    crawl = sub.add_parser("crawl", help="collect images with the crawler, as a background job (re-run resumes)")
    crawl.add_argument("dataset", help=dataset_help)
    crawl.add_argument("--class", dest="classes", action="append", required=True, metavar="NAME=QUERY;QUERY",
                       help='a class and its search queries, e.g. "sedan=sedan car;sedan side view" (repeat per class)')
    crawl.add_argument("--target", type=int, default=50, help="images wanted per class (default 50)")
    crawl.add_argument("--engine", choices=("bing", "duckduckgo", "generic"), default="bing")
    crawl.add_argument("--engine-option", dest="engine_options", action="append", default=[], metavar="KEY=VALUE",
                       help="generic engine settings: search_url_template, thumb_selector, full_link_selector, "
                            "more_button_selector... (repeat)")
    crawl.add_argument("--min-side", type=int, default=100, help="smaller images are skipped (pixels)")
    crawl.add_argument("--delay", type=float, default=1.0, help="seconds between two downloads")
    crawl.add_argument("--wait", action="store_true", help="follow the job's progress until it ends")

    status = sub.add_parser("crawl-status", help="a dataset's crawl: per-class progress and status")
    status.add_argument("dataset", help=dataset_help)
    status.add_argument("--json", action="store_true")

    crawl_stop = sub.add_parser("crawl-stop", help="stop a dataset's crawl (gracefully, then killed after --timeout)")
    crawl_stop.add_argument("dataset", help=dataset_help)
    crawl_stop.add_argument("--timeout", type=float, default=15.0)

    imp = sub.add_parser("import", help="import a zip or a folder of class folders into a dataset")
    imp.add_argument("dataset", help=dataset_help)
    imp.add_argument("source", type=Path, help="a .zip file or a folder of class folders")

    trash = sub.add_parser("trash", help="move images of a class to the dataset's trash (left out of training)")
    trash.add_argument("dataset", help=dataset_help)
    trash.add_argument("class_name", metavar="CLASS")
    trash.add_argument("files", nargs="+", metavar="FILE", help="file names inside the class folder")

    restore = sub.add_parser("restore", help="move trashed images back (all when no FILE is given)")
    restore.add_argument("dataset", help=dataset_help)
    restore.add_argument("files", nargs="*", metavar="CLASS/FILE", help="as listed by `restore --list`")
    restore.add_argument("--list", action="store_true", help="only list the trash")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    if args.config:
        base = TrainConfig.load(args.config)
    elif args.preset:
        base = PRESETS[args.preset]
    else:
        base = TrainConfig()
    changes: dict[str, Any] = {}
    for field in ("name", "dataset", "backbone", "alpha", "weights", "image_size", "head", "dropout", "optimizer",
                  "learning_rate", "epochs", "batch_size", "validation_split", "seed", "early_stopping_patience",
                  "precision", "checkpoint_every", "freeze"):
        value = getattr(args, field, None)
        if value is not None:
            changes[field] = value
    if args.augment:
        changes["augmentation"] = Augmentation(enabled=True)
    if args.train_frozen_bn:
        changes.update(freeze_batchnorm=False, train_batchnorm=True)  # every BatchNorm trains
    if args.freeze_all_bn:
        changes["train_batchnorm"] = False
    if args.xla:
        changes["jit_compile"] = True
    if args.no_feature_cache:
        changes["feature_cache"] = False
    return base.replace(**changes)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def follow(run: Run, out=sys.stdout, poll: float = 1.0) -> Status:
    """Print progress lines until the job ends; returns its final status."""
    last = None
    while True:
        state = run.state()
        progress = run.progress() or {}
        line = f"{run.id} {state.status.value}"
        if progress.get("phase") == "training":
            line += (f" epoch {progress.get('epoch')}/{progress.get('epochs')}"
                     f" step {progress.get('step')}/{progress.get('steps_per_epoch')}"
                     f" {_fmt(progress.get('images_per_second'), 3)} img/s"
                     f" loss {_fmt(progress.get('loss'))}")
        elif progress.get("phase"):
            line += f" ({progress['phase']})"
        if line != last:
            print(line, file=out, flush=True)
            last = line
        if state.status.is_terminal():
            if state.error:
                print(f"error: {state.error}", file=out)
            return state.status
        time.sleep(poll)


def cmd_demo_data(args: argparse.Namespace) -> int:
    from carviz.data.datasets import generate_demo_dataset, scan_dataset

    dest = args.dest or settings.data_dir() / "demo"
    generate_demo_dataset(dest, per_class=args.per_class, image_size=args.size)
    scan = scan_dataset(dest, check_images=False)
    print(f"demo dataset at {dest}: " + ", ".join(f"{name} {count}" for name, count in scan.counts().items()))
    return 0


def cmd_layers(args: argparse.Namespace) -> int:
    from carviz.ml.backbones import BACKBONES, list_layers

    if args.backbone not in BACKBONES:
        print(f"unknown backbone {args.backbone!r}; choose from {', '.join(BACKBONES)}", file=sys.stderr)
        return 2
    layers = list_layers(args.backbone, args.size, args.alpha)
    freeze = None
    if args.freeze is not None:
        freeze = len(layers) + 1 if args.freeze == FREEZE_ALL else args.freeze
    print(f"{'idx':>4} {'name':<28} {'type':<24} {'output shape':<22} {'params':>9}  marks")
    for layer in layers:
        if args.conv_only and not layer.is_conv:
            continue
        if args.blocks_only and not (layer.block_start or layer.block_end):
            continue
        marks = [m for m, on in (("conv", layer.is_conv), ("block-start", layer.block_start),
                                  ("block-end", layer.block_end), ("cut", layer.is_cut_point)) if on]
        if freeze is not None:
            marks.insert(0, "frozen" if layer.index < freeze else "trainable")
        print(f"{layer.index:>4} {layer.name:<28} {layer.type:<24} {layer.output_shape:<22} {layer.params:>9}  "
              + " ".join(marks))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from carviz.core import launch
    from carviz.core.store import create_run

    config = config_from_args(args)
    settings.resolve_dataset(config.dataset)  # fail here, not in the background, when it is missing
    if args.foreground:
        from carviz.ml.train import main as train_main

        run = create_run(config)
        print(run.id, flush=True)
        return train_main([str(run.path)])
    run = launch.submit(config, backend=args.backend)
    print(run.id, flush=True)
    if args.wait:
        return 0 if follow(run) == Status.SUCCEEDED else 1
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    rows = [summarize(run) for run in list_runs()]
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    if not rows:
        print(f"no runs in {settings.runs_dir()}")
        return 0
    print(f"{'id':<23} {'status':<10} {'backbone':<14} {'lr':>8} {'freeze':>6} {'epochs':>7} {'best val':>8}  name")
    for row in rows:
        print(f"{row['id']:<23} {row['status']:<10} {row['backbone']!s:<14} {_fmt(row['learning_rate'], 2):>8} "
              f"{row['freeze']!s:>6} {row['epochs_done']:>3}/{row['epochs']!s:<3} "
              f"{_fmt(row['best_val_accuracy'], 3):>8}  {row['name']}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from carviz.views.cache_report import run_line

    run = find_run(args.run)
    state = run.state()
    detail = {
        "id": run.id,
        "path": str(run.path),
        "status": state.status.value,
        "reason": state.reason or None,
        "error": state.error,
        "config": run.config_dict(),
        "progress": run.progress(),
        "metrics": run.metrics(),
        "evaluation": run.evaluation(),
        "info": run.info(),
    }
    if args.json:
        print(json.dumps(detail, indent=2, ensure_ascii=False, default=str))
        return 0
    print(f"run {run.id}  ({detail['config'].get('name') or 'unnamed'})  {state.status.value}"
          + (f"  [{state.reason}]" if state.reason else ""))
    if state.error:
        print(f"error: {state.error}")
    config = detail["config"]
    print("config: " + ", ".join(f"{k}={config[k]}" for k in ("dataset", "backbone", "weights", "image_size",
                                                               "head", "learning_rate", "freeze", "epochs",
                                                               "batch_size") if k in config))
    for row in detail["metrics"]:
        print("  epoch {epoch:>3}  loss {l}  acc {a}  val_loss {vl}  val_acc {va}  {s}s".format(
            epoch=row["epoch"], l=_fmt(row.get("loss")), a=_fmt(row.get("accuracy")), vl=_fmt(row.get("val_loss")),
            va=_fmt(row.get("val_accuracy")), s=_fmt(row.get("seconds"), 3)))
    cache_line = run_line(detail["info"])
    if cache_line:
        print(cache_line)
    if detail["evaluation"]:
        print(f"final evaluation on {detail['evaluation']['images']} validation images: "
              f"accuracy {detail['evaluation']['accuracy']:.4f}, loss {detail['evaluation']['loss']:.4f}")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from carviz.core import jobs

    run = find_run(args.run)
    if run.status().is_terminal():
        print(f"{run.id} is already {run.status().value}")
        return 0
    status = jobs.stop(run, timeout=args.timeout)
    print(f"{run.id} {status.value}")
    return 0


def cmd_lr_find(args: argparse.Namespace) -> int:
    from carviz.ml import lr_range

    config = config_from_args(args)
    settings.resolve_dataset(config.dataset)
    lr_range.check_range(args.min_lr, args.max_lr, args.steps)
    if args.background:
        print(lr_range.launch_lr_range(config, args.min_lr, args.max_lr, args.steps, backend=args.backend),
              flush=True)
        return 0
    path = lr_range.create_lr_range(config, args.min_lr, args.max_lr, args.steps)
    print(f"LR range test {path.name}: {config.backbone} on {config.dataset}, {args.steps} steps, "
          f"lr {args.min_lr:g} -> {args.max_lr:g}", flush=True)
    result = lr_range.run_lr_range_job(path)
    every = max(1, len(result.lrs) // 15)
    print(f"{'step':>5} {'lr':>10} {'loss':>10} {'smoothed':>10}")
    for i, (lr, loss, smooth) in enumerate(zip(result.lrs, result.losses, result.smoothed_losses)):
        if i % every == 0 or i == len(result.lrs) - 1:
            print(f"{i + 1:>5} {lr:>10.3g} {loss:>10.4g} {smooth:>10.4g}")
    if result.stopped_early_reason:
        print(f"stopped early: {result.stopped_early_reason}")
    if result.suggested_lr is None:
        print("no suggestion: too few finite points (try a lower --max-lr or more --steps)")
        return 1
    print(f"suggested learning rate: {result.suggested_lr:.2g}"
          f" (steepest descent {_fmt(result.steepest_lr, 2)}, minimum loss at {_fmt(result.min_loss_lr, 2)})")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from carviz.core import launch

    run = find_run(args.run)
    launch.resume(run, backend=args.backend)
    print(f"{run.id} resumed")
    if args.wait:
        return 0 if follow(run) == Status.SUCCEEDED else 1
    return 0


def _dataset(text: str, create: bool = False) -> Path:
    """A dataset folder from the command line: a name under data/, or a path (absolute or starting with .)."""
    from carviz.data.importer import dataset_path

    as_path = Path(text).expanduser()
    if as_path.is_absolute() or text.startswith("."):
        path = dataset_path(as_path, create=create)
    else:
        path = dataset_path(text, create=create)
    if not create and not path.is_dir():
        raise FileNotFoundError(f"dataset {text!r} not found (looked in {path})")
    return path


def _parse_class_arg(text: str, target: int):
    from carviz.data.collect import parse_class_line

    return parse_class_line(text, target, separator="=")


def _follow_crawl(dataset: Path, out: Any = None, poll: float = 1.0) -> Any:
    """Print the crawl's progress whenever it changes, until the job ends; returns the final CrawlState."""
    from carviz.data.crawl.job import CrawlState, progress_lines, wait_crawl

    out = out or sys.stdout
    last: list[str] = []

    def show(state: CrawlState) -> None:
        nonlocal last
        lines = progress_lines(state)
        if lines != last:
            print("\n".join(lines), file=out, flush=True)
            last = lines

    return wait_crawl(dataset, poll=poll, on_state=show)


def cmd_crawl(args: argparse.Namespace) -> int:
    from carviz.data.collect import build_spec, parse_engine_options
    from carviz.core.jobs import Status as JobStatus
    from carviz.data.crawl.job import CrawlBusy, launch_crawl

    classes = [_parse_class_arg(text, args.target) for text in args.classes]
    names = [c.name for c in classes]
    if len(set(names)) != len(names):
        raise ValueError("each --class name may be given once")
    spec = build_spec(classes, args.engine, parse_engine_options(args.engine_options),
                      min_side=args.min_side, delay=args.delay)
    try:
        dataset = launch_crawl(_dataset(args.dataset, create=True), spec)
    except CrawlBusy as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"crawl of {len(classes)} class(es) into {dataset} started in the background", flush=True)
    if args.wait:
        return 0 if _follow_crawl(dataset).status == JobStatus.SUCCEEDED else 1
    print(f"follow it with: python -m carviz crawl-status {args.dataset}")
    return 0


def cmd_crawl_status(args: argparse.Namespace) -> int:
    from carviz.data.crawl.job import progress_lines, read_crawl

    state = read_crawl(_dataset(args.dataset))
    if args.json:
        print(json.dumps({
            "dataset": str(state.dataset_dir),
            "status": state.status.value if state.status else None,
            "saved": state.saved, "target": state.target, "error": state.error, "reason": state.reason,
            "message": state.message,
            "stop_requested": state.stop_requested, "current": state.current,
            "classes": {n: {"saved": p.saved, "target": p.target, "candidates": p.candidates, "failed": p.failed,
                            "rejected": p.rejected, "state": p.state} for n, p in state.classes.items()},
        }, indent=2, ensure_ascii=False))
        return 0
    if state.current.get("class"):
        print(f"now: {state.current['class']} <- {state.current.get('query', '')!r}")
    print("\n".join(progress_lines(state)))
    if state.message and not state.active:
        print(state.message)
    return 0


def cmd_crawl_stop(args: argparse.Namespace) -> int:
    from carviz.data.crawl.job import progress_lines, read_crawl, stop_crawl

    dataset = _dataset(args.dataset)
    current = read_crawl(dataset)
    if not (current.active or current.process_alive):  # a hung job (lost, process alive) is stopped too
        print(f"no crawl is running for {dataset.name}")
        return 0
    state = stop_crawl(dataset, timeout=args.timeout)
    print("\n".join(progress_lines(state)))
    if state.message:
        print(state.message)
    return 0


def _print_report(report, dataset: Path) -> None:
    from carviz.data.collect import report_summary

    print(f"{dataset}: {report_summary(report)}")
    for member, reason in report.dropped:
        print(f"  dropped {member}: {reason}")
    for member, note in report.notes:
        print(f"  note {member}: {note}")


def cmd_import(args: argparse.Namespace) -> int:
    import zipfile

    from carviz.data.importer import import_folder, import_zip

    source = args.source.expanduser()
    if source.is_dir():
        dataset = _dataset(args.dataset, create=True)
        report = import_folder(source, dataset)
    elif source.is_file():
        if not zipfile.is_zipfile(source):
            raise ValueError(f"{source} is neither a folder nor a zip file")
        dataset = _dataset(args.dataset, create=True)
        report = import_zip(source, dataset)
    else:
        raise FileNotFoundError(f"{source} does not exist")
    _print_report(report, dataset)
    return 0


def cmd_trash(args: argparse.Namespace) -> int:
    from carviz.data.importer import trash_images

    dataset = _dataset(args.dataset)
    moved = trash_images(dataset, args.class_name, args.files)
    for path in moved:
        print(f"trashed {args.class_name}/{path.name}" if path.name in args.files else
              f"trashed {args.class_name} file as {path.name}")
    print(f"{len(moved)} image(s) moved to {dataset / '.trash'}")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from carviz.data.importer import list_trash, restore_images

    dataset = _dataset(args.dataset)
    entries = list_trash(dataset)
    if args.list:
        for entry in entries:
            print(f"{entry.class_name}/{entry.file_name}  (from {entry.original}, {entry.trashed_at or 'time unknown'})")
        print(f"{len(entries)} image(s) in the trash")
        return 0
    restored = restore_images(dataset, args.files or entries)
    for path in restored:
        print(f"restored {path.parent.name}/{path.name}")
    print(f"{len(restored)} image(s) restored")
    return 0


COMMANDS = {
    "demo-data": cmd_demo_data,
    "layers": cmd_layers,
    "train": cmd_train,
    "runs": cmd_runs,
    "show": cmd_show,
    "stop": cmd_stop,
    "resume": cmd_resume,
    "crawl": cmd_crawl,
    "crawl-status": cmd_crawl_status,
    "crawl-stop": cmd_crawl_stop,
    "import": cmd_import,
    "trash": cmd_trash,
    "restore": cmd_restore,
    "lr-find": cmd_lr_find,
}


def main(argv: Sequence[str] | None = None) -> int:
    from carviz.core.gpu import share_gpu_memory
    from carviz.core.jobs.ray_backend import RayUnavailable

    share_gpu_memory()  # before anything loads TensorFlow: never reserve a GPU that jobs need
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ConfigError, LookupError, FileNotFoundError, ValueError, RayUnavailable) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


# ---------------------------------------------------------------- sweeps (issue 4)


def _add_sweep_commands(sub: Any) -> None:
    """Sweeps: sweep (launch a grid), sweeps (list), sweep-show, sweep-stop, sweep-resume."""
    sweep = sub.add_parser("sweep", help="launch a grid of runs: backbones x learning rates x freeze points x seeds")
    sweep.add_argument("--name", required=True, help="the sweep's display name (its runs are named after it)")
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
    sweep.add_argument("--seeds", help="comma list of seeds (default: the base's)")
    for flag, kind in (("epochs", int), ("batch-size", int), ("image-size", int), ("dataset", str),
                       ("weights", str), ("head", str)):
        sweep.add_argument(f"--{flag}", type=kind, default=None)
    sweep.add_argument("--prune", action="store_true", help="successive halving at the rung epochs")
    sweep.add_argument("--rungs", default="2,4", help="with --prune: comma list of rung epochs (default 2,4)")
    sweep.add_argument("--keep-fraction", type=float, default=0.5, help="with --prune: share kept at a rung")
    sweep.add_argument("--min-runs", type=int, default=3, help="with --prune: runs at a rung before any is pruned")
    sweep.add_argument("--wait", action="store_true", help="follow the sweep until every run ends")
    _add_backend_flag(sweep)

    sweeps = sub.add_parser("sweeps", help="list sweeps with progress")
    sweeps.add_argument("--json", action="store_true")
    for command, text in (("sweep-show", "a sweep's points: best val accuracy mean ± std over seeds"),
                          ("sweep-stop", "ask every unfinished run of a sweep to stop"),
                          ("sweep-resume", "relaunch a sweep's stopped and lost runs")):
        parser = sub.add_parser(command, help=text)
        parser.add_argument("sweep", help="sweep id, unique id prefix, or name")
        if command == "sweep-show":
            parser.add_argument("--json", action="store_true")


def _split(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def sweep_config_from_args(args: argparse.Namespace) -> Any:
    """The SweepConfig the sweep command's flags describe (a freeze rule builds each backbone's layer listing)."""
    from carviz.core.sweeps import PruneConfig, SweepConfig, freeze_points

    base = TrainConfig.load(args.config) if args.config else PRESETS[args.preset or "demo quick"]
    changes = {field: getattr(args, field) for field in ("epochs", "batch_size", "image_size", "dataset", "weights",
                                                          "head") if getattr(args, field) is not None}
    backbones = _split(args.backbones) or [base.backbone]
    changes["backbone"] = backbones[0]  # the base itself must be valid (small_cnn has no ImageNet weights)
    base = base.replace(**changes)
    try:
        lrs = [float(v) for v in _split(args.lrs)] or [base.learning_rate]
        seeds = [int(v) for v in _split(args.seeds)] or [base.seed]
        rungs = tuple(int(v) for v in _split(args.rungs))
    except ValueError as error:
        raise ConfigError(f"--lrs, --seeds and --rungs take comma lists of numbers: {error}") from None
    per_backbone: dict[str, tuple] = {}
    if args.freeze_rule:
        per_backbone = {b: tuple(freeze_points(b, args.freeze_rule, base.image_size, base.alpha, k=args.every))
                        for b in backbones}
        points: tuple = per_backbone[backbones[0]]
    else:
        points = tuple(_split(args.freeze)) or (base.freeze,)
    prune = PruneConfig(rungs, args.keep_fraction, args.min_runs) if args.prune else None
    return SweepConfig(name=args.name, base=base, backbones=tuple(backbones), learning_rates=tuple(lrs),
                       freeze_points=points, seeds=tuple(seeds), prune=prune, backbone_freeze_points=per_backbone)


def follow_sweep(sweep_id: str, out=None, poll: float = 2.0) -> str:
    """Print a line whenever the sweep's progress changes, until no run is queued or running; returns its status."""
    from carviz.core.sweeps import read_sweep

    out = out or sys.stdout
    last = None
    while True:
        state = read_sweep(sweep_id)
        counts = ", ".join(f"{n} {status}" for status, n in sorted(state.counts.items()))
        line = f"{sweep_id} {state.status}: {state.progress_text} ({counts})"
        if state.eta_seconds:
            line += f", about {state.eta_seconds:.0f} s left"
        if line != last:
            print(line, file=out, flush=True)
            last = line
        if state.status not in ("queued", "running"):
            return state.status
        time.sleep(poll)


def cmd_sweep(args: argparse.Namespace) -> int:
    from carviz.core.sweeps import launch_sweep

    config = sweep_config_from_args(args)
    settings.resolve_dataset(config.base.dataset)  # fail here, not in every background job
    record = launch_sweep(config, backend=args.backend)
    print(f"sweep {record.id}: {len(record.run_ids)} runs launched", flush=True)
    if args.wait:
        return 0 if follow_sweep(record.id) == "done" else 1
    print(f"follow it with: python -m carviz sweep-show {record.id}")
    return 0


def cmd_sweeps(args: argparse.Namespace) -> int:
    from carviz.core.sweeps import list_sweeps, read_sweep

    states = [read_sweep(record.id) for record in list_sweeps()]
    if args.json:
        print(json.dumps([{"id": s.record.id, "name": s.record.config.name, "status": s.status, "done": s.n_done,
                           "total": s.n_total, "counts": s.counts, "eta_seconds": s.eta_seconds,
                           "best_run": (s.best or {}).get("id"),
                           "best_val_accuracy": (s.best or {}).get("best_val_accuracy")} for s in states],
                         indent=2, ensure_ascii=False))
        return 0
    if not states:
        print(f"no sweeps in {settings.runs_dir()}")
        return 0
    print(f"{'id':<23} {'status':<8} {'progress':<16} {'best val':>8}  name")
    for s in states:
        print(f"{s.record.id:<23} {s.status:<8} {s.progress_text:<16} "
              f"{_fmt((s.best or {}).get('best_val_accuracy'), 3):>8}  {s.record.config.name}")
    return 0


def cmd_sweep_show(args: argparse.Namespace) -> int:
    from carviz.views.plots.sweeps import sweep_points
    from carviz.core.sweeps import find_sweep, read_sweep

    state = read_sweep(find_sweep(args.sweep).id)
    points = sweep_points(state.rows)
    if args.json:
        print(points.to_json(orient="records", indent=2))
        return 0
    counts = ", ".join(f"{n} {status}" for status, n in sorted(state.counts.items()))
    print(f"sweep {state.record.id} ({state.record.config.name}) {state.status}: {state.progress_text} ({counts})")
    print(f"{'backbone':<14} {'lr':>8} {'freeze':>6} {'mean':>7} {'std':>7} {'n':>3}  layer")
    for p in points.itertuples():
        mean = "-" if p.mean is None or p.mean != p.mean else f"{p.mean:.4f}"
        std = "-" if p.std is None or p.std != p.std else f"{p.std:.4f}"
        print(f"{p.backbone:<14} {_fmt(p.learning_rate, 2):>8} {p.freeze!s:>6} {mean:>7} {std:>7} {p.n:>3}  "
              f"{p.layer if isinstance(p.layer, str) else ''}")
    if state.best:
        print(f"best: {state.best['id']} {state.best['name']} val acc {state.best['best_val_accuracy']:.4f}")
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


COMMANDS.update({
    "sweep": cmd_sweep,
    "sweeps": cmd_sweeps,
    "sweep-show": cmd_sweep_show,
    "sweep-stop": cmd_sweep_stop,
    "sweep-resume": cmd_sweep_resume,
})


# ---------------------------------------------------------------- the frozen-feature cache


def _add_cache_command(sub: Any) -> None:
    cache = sub.add_parser("cache", help="the frozen-feature cache: list it, change its size limit or dtype, clear it")
    cache.add_argument("--limit-gb", type=float, default=None, metavar="GB",
                       help="size limit in GiB (0..100000); a lower limit evicts the least recently used sets now")
    cache.add_argument("--dtype", default=None, metavar="DTYPE",
                       help="storage dtype of new feature sets: float32 (default) or float16 (half the disk; "
                            "results may differ slightly)")
    cache.add_argument("--clear", action="store_true", help="remove every cached feature set")
    cache.add_argument("--json", action="store_true")


def cmd_cache(args: argparse.Namespace) -> int:
    from carviz.views import cache_report
    from carviz.ml import feature_cache

    try:
        if args.limit_gb is not None or args.dtype is not None:
            # change_settings validates both values before it saves or evicts anything (ValueError: exit 2)
            saved, evicted = cache_report.change_settings(args.limit_gb, args.dtype)
            if not args.json:
                print(f"limit {saved.max_gb:g} GiB, new feature sets stored as {saved.dtype}"
                      + (f"; {len(evicted)} feature set(s) evicted" if evicted else ""))
        if args.clear:
            removed = cache_report.clear_cache()
            if not args.json:
                print(f"cleared: {removed} feature set(s) removed")
        current = feature_cache.load_settings()
        entries = feature_cache.FeatureCache(feature_cache.cache_root(), current.max_bytes).entries()
    except OSError as error:  # e.g. an unwritable cache folder
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"root": str(feature_cache.cache_root()), "max_gb": current.max_gb, "dtype": current.dtype,
                          "total_bytes": sum(e.bytes for e in entries),
                          "entries": [{"key": e.key, "bytes": e.bytes, "last_used": e.last_used, "meta": e.meta}
                                      for e in entries]}, indent=2, ensure_ascii=False))
        return 0
    print(f"feature cache in {feature_cache.cache_root()}: {cache_report.totals_text(entries, current.max_bytes)}"
          f" (new sets stored as {current.dtype})")
    if entries:
        print(f"{'key':<12} {'layer':<24} {'backbone':<14} {'alpha':>5} {'size':>5} {'head':<11} {'precision':<14} "
              f"{'images':>6} {'MiB':>9} {'dtype':<7}  last used")
    for row in cache_report.entry_rows(entries):
        print(f"{row['key']:<12} {row['layer']!s:<24} {row['backbone']!s:<14} {row['alpha']!s:>5} "
              f"{row['image size']!s:>5} {row['head']!s:<11} {row['precision']!s:<14} {row['images']!s:>6} "
              f"{row['size MiB']:>9.1f} {row['stored dtype']!s:<7}  {row['last used']:%Y-%m-%d %H:%M:%S}")
    return 0


COMMANDS["cache"] = cmd_cache
