"""Command group: training runs — train, runs, show, stop, resume, lr-find, evaluate."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Callable

from carviz.cli.common import add_backend_flag, add_config_flags, add_dataset_flags, config_from_args, \
    dataset_from_args, fmt
from carviz.core import settings
from carviz.views.formatting import format_accuracy, format_left, is_number
from carviz.core.store import BROKEN, Run, Status, display_status, find_run, kept_label, list_runs, summarize


def register(sub: Any) -> dict[str, Callable[[argparse.Namespace], int]]:
    train = sub.add_parser("train", help="launch a training job in the background")
    add_config_flags(train)
    mode = train.add_mutually_exclusive_group()
    mode.add_argument("--wait", action="store_true", help="follow the job until it ends")
    mode.add_argument("--foreground", action="store_true", help="train in this process instead")
    add_backend_flag(train)

    runs = sub.add_parser("runs", help="list runs (archived ones only with --archived)")
    runs.add_argument("--json", action="store_true")
    runs.add_argument("--search", default="", help="only runs whose name, id, tags or note contain this text")
    runs.add_argument("--tag", action="append", default=[], help="only runs with this tag (repeatable: all of them)")
    runs.add_argument("--status", help="only runs in this state (e.g. succeeded, running, failed)")
    runs.add_argument("--archived", action="store_true", help="include archived runs")

    show = sub.add_parser("show", help="a run's config, status and metrics")
    show.add_argument("run")
    show.add_argument("--json", action="store_true")

    stop = sub.add_parser("stop", help="stop a job (gracefully, then killed after --timeout)")
    stop.add_argument("run")
    stop.add_argument("--timeout", type=float, default=30.0)

    resume = sub.add_parser("resume", help="resume a stopped or lost run from its last checkpoint")
    resume.add_argument("run")
    resume.add_argument("--wait", action="store_true")
    resume.add_argument("--accept-dataset-changes", action="store_true",
                        help="continue although the dataset changed since launch: on the recorded split and classes, "
                             "without the images gone since (new images are not added)")
    add_backend_flag(resume, "where to run it (default: where it ran last)")

    lr_find = sub.add_parser("lr-find", help="LR range test: a short run with a rising learning rate, and a suggestion")
    add_config_flags(lr_find)
    lr_find.add_argument("--steps", type=int, default=100, help="training steps (default 100)")
    lr_find.add_argument("--min-lr", type=float, default=1e-6, help="first learning rate (default 1e-6)")
    lr_find.add_argument("--max-lr", type=float, default=1.0, help="last learning rate (default 1)")
    lr_find.add_argument("--background", action="store_true", help="launch it as a background job instead")
    add_backend_flag(lr_find, "with --background: where to run it (default: $CARVIZ_BACKEND, else local)")

    evaluate = sub.add_parser("evaluate", help="evaluate a run's model on its validation or test split, or on "
                                               "another dataset with the same class names")
    evaluate.add_argument("run")
    add_dataset_flags(evaluate)  # another dataset: every usable image of it, class folders matched by name
    evaluate.add_argument("--split", choices=("validation", "test"), default=None,
                          help="the run's own recorded split to evaluate (default: validation)")
    evaluate.add_argument("--skip-extra-classes", action="store_true",
                          help="with --dataset/--dataset-path: leave out class folders the run does not know "
                               "(refused otherwise)")
    evaluate.add_argument("--batch-size", type=int, default=64)
    evaluate.add_argument("--json", action="store_true", help="print the whole evaluation as JSON")
    calibrate = sub.add_parser("calibrate", help="fit a finished run's temperature on its validation split "
                                                 "(probabilities that match accuracy); predict and exports apply it")
    calibrate.add_argument("run")
    return {"train": cmd_train, "runs": cmd_runs, "show": cmd_show, "stop": cmd_stop, "resume": cmd_resume,
            "lr-find": cmd_lr_find, "evaluate": cmd_evaluate, "calibrate": cmd_calibrate}


def follow(run: Run, out=sys.stdout, poll: float = 1.0) -> Status:
    """Print progress lines until the job ends; returns its final status."""
    last = None
    while True:
        state = run.state()
        progress = run.progress() or {}
        line = f"{run.id} {state.status.value}"
        left = format_left(progress.get("eta_seconds")) if not state.status.is_terminal() else ""
        if progress.get("phase") == "training":
            line += (f" epoch {progress.get('epoch')}/{progress.get('epochs')}"
                     f" step {progress.get('step')}/{progress.get('steps_per_epoch')}"
                     f" {fmt(progress.get('images_per_second'), 3)} img/s"
                     f" loss {fmt(progress.get('loss'))}" + (f", {left}" if left else ""))
        elif progress.get("phase") == "computing features":
            line += f" (computing features: batch {progress.get('step')}/{progress.get('steps_per_epoch')}" + \
                (f", {left}" if left else "") + ")"
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


def warn_frozen_random(config: Any) -> None:
    """A 'warning:' line on stderr when the run freezes a random backbone; launching goes on."""
    from carviz.core.advice import frozen_random_backbone_warning

    warning = frozen_random_backbone_warning(config)
    if warning:
        print(f"warning: {warning}", file=sys.stderr, flush=True)


def cmd_train(args: argparse.Namespace) -> int:
    from carviz.core import launch
    from carviz.core.store import create_run

    config = config_from_args(args)
    warn_frozen_random(config)
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
    from carviz.core.annotations import filter_rows

    rows = filter_rows([summarize(run) for run in list_runs()], text=args.search, tags=args.tag,
                       status=args.status, include_archived=args.archived)
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    if not rows:
        print(f"no runs in {settings.runs_dir()}")
        return 0
    # val acc / test: the kept model's (see kept_label: the best-validation epoch, restored and saved)
    print(f"{'id':<23} {'status':<10} {'backbone':<14} {'lr':>8} {'freeze':>6} {'epochs':>7} {'val acc':>8} "
          f"{'test acc':>8}  name  [kept model: its val acc]")
    for row in rows:
        label = kept_label(row)
        print(f"{row['id']:<23} {display_status(row):<10} {row['backbone']!s:<14} {fmt(row['learning_rate'], 2):>8} "
              f"{row['freeze']!s:>6} {row['epochs_done']:>3}/{row['epochs']!s:<3} "
              f"{_accuracy(row['kept_val_accuracy']):>8} {_accuracy(row['test_accuracy']):>8}  {row['name']}"
              + (f"  [{label}]" if label else ""))
        if row["problems"]:  # a damaged record is listed with what is wrong; the others list as usual
            print(f"{'':<23} {BROKEN} ({row['status']}): " + "; ".join(row["problems"]))
    return 0


def _accuracy(value: Any) -> str:
    """An accuracy as every page shows one ("41.7 %"); "–" when missing, a wrong-typed value as it is (the run's
    problems say what is wrong)."""
    return format_accuracy(value) if value is None or is_number(value) else fmt(value)


def cmd_show(args: argparse.Namespace) -> int:
    from carviz.core.lineage import lineage_line
    from carviz.views.cache_report import run_line
    from carviz.views.run_notes import resume_line

    run = find_run(args.run)
    state = run.state()
    config, metrics = run.config_dict(), run.metrics()
    problems = run.problems(config, metrics, state)
    detail = {
        "id": run.id,
        "path": str(run.path),
        "status": state.status.value,
        "reason": state.reason or None,
        "error": state.error,
        "broken": bool(problems),
        "problems": problems,
        "config": config,
        "progress": run.progress(),
        "metrics": metrics,
        "evaluation": run.evaluation(),
        "info": run.info(),
    }
    if args.json:
        print(json.dumps(detail, indent=2, ensure_ascii=False, default=str))
        return 0
    name = config.get("name") if isinstance(config.get("name"), str) else None
    print(f"run {run.id}  ({name or 'unnamed'})  "
          + (f"{BROKEN} (job {state.status.value})" if problems else state.status.value)
          + (f"  [{state.reason}]" if state.reason else ""))
    for problem in problems:
        print(f"problem: {problem}")
    if state.error:
        print(f"error: {state.error}")
    print("config: " + ", ".join(f"{k}={config[k]}" for k in ("dataset", "backbone", "weights", "image_size",
                                                               "head", "learning_rate", "freeze", "epochs",
                                                               "batch_size") if k in config))
    for row in detail["metrics"]:
        print("  epoch {epoch:>3}  loss {l}  acc {a}  val_loss {vl}  val_acc {va}  {s}s".format(
            epoch=row["epoch"], l=fmt(row.get("loss")), a=_accuracy(row.get("accuracy")), vl=fmt(row.get("val_loss")),
            va=_accuracy(row.get("val_accuracy")), s=fmt(row.get("seconds"), 3)))
    info = run.run_info()
    for note in (lineage_line(info.parent, config.get("init_from_run")), run_line(info), resume_line(info)):
        if note:
            print(note)
    evaluation = detail["evaluation"] or {}
    if evaluation:
        def four(value: Any) -> str:  # a wrong-typed value (the problems above say so) prints as it is
            return f"{value:.4f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else fmt(value)

        row = summarize(run, config, metrics, info)
        print(f"{kept_label(row)} of {len(metrics)}: val accuracy {_accuracy(evaluation.get('accuracy'))} on "
              f"{fmt(evaluation.get('images'))} images, loss {four(evaluation.get('loss'))}")
        if isinstance(evaluation.get("kept_reason"), str):
            print(f"  {evaluation['kept_reason']}")
        test = evaluation.get("test")
        if isinstance(test, dict):
            print(f"test accuracy {_accuracy(test.get('accuracy'))} on {fmt(test.get('images'))} images, "
                  f"loss {four(test.get('loss'))} (the kept model, on images never trained on nor chosen by)")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from carviz.core import jobs

    run = find_run(args.run)
    state = run.state()
    hung = state.status == Status.LOST and state.process == jobs.ProcessCheck.ALIVE  # e.g. SIGSTOPped: kill it
    if state.status.is_terminal() and not hung:
        print(f"{run.id} is already {state.status.value}")
        return 0
    status = jobs.stop(run, timeout=args.timeout)
    print(f"{run.id} {status.value}")
    return 0


def cmd_lr_find(args: argparse.Namespace) -> int:
    from carviz.ml import lr_range

    config = config_from_args(args)
    warn_frozen_random(config)
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
          f" (steepest descent {fmt(result.steepest_lr, 2)}, minimum loss at {fmt(result.min_loss_lr, 2)})")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from carviz.core import launch

    run = find_run(args.run)
    launch.resume(run, backend=args.backend, accept_dataset_changes=args.accept_dataset_changes)
    print(f"{run.id} resumed")
    if args.wait:
        return 0 if follow(run) == Status.SUCCEEDED else 1
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from carviz.ml.evaluate import evaluate_run

    run = find_run(args.run)
    dataset = dataset_from_args(args)
    if dataset is not None and args.split:
        raise ValueError("--split names the run's own split; with --dataset/--dataset-path the whole folder is "
                         "evaluated")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    evaluation = evaluate_run(run, batch_size=args.batch_size, split=args.split or "validation", dataset=dataset,
                              skip_extra=args.skip_extra_classes)
    if args.json:
        print(json.dumps(evaluation.to_json_dict(), indent=2, ensure_ascii=False, default=str))
        return 0
    what = f"dataset {evaluation.dataset}" if dataset is not None else f"{evaluation.split} split"
    print(f"run {run.id} on the {what}: accuracy {_accuracy(evaluation.accuracy)} on {evaluation.images} images, "
          f"{len(evaluation.misclassified)} misclassified")
    if evaluation.skipped_classes:
        print(f"skipped class folders the run does not know: {', '.join(evaluation.skipped_classes)}")
    if evaluation.absent_classes:
        print(f"classes without images there: {', '.join(evaluation.absent_classes)}")
    width = max(len("class"), *(len(name) for name in evaluation.classes))
    print(f"{'class':<{width}} {'images':>7} {'correct':>7} {'recall':>8} {'precision':>9} {'F1':>6}  "
          "most confused with")
    for row in evaluation.per_class_rows():
        f1 = "–" if row["f1"] is None else f"{row['f1']:.2f}"
        print(f"{row['class']:<{width}} {row['images']:>7} {row['correct']:>7} {_accuracy(row['recall']):>8} "
              f"{_accuracy(row['precision']):>9} {f1:>6}  {row['most_confused_with']}")
    calibration = evaluation.calibration_summary()
    if "ece" in calibration:
        print(f"calibration: expected calibration error {calibration['ece']:.3f}"
              + (f", {calibration['ece_scaled']:.3f} with the run's temperature {calibration['temperature']:.2f}"
                 if calibration["temperature"] != 1.0 else " (the run has no temperature: `calibrate` fits one)"))
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Fit the run's temperature on its validation split and store it (runs trained before calibration existed;
    a finished run's job did it already, and this fits it again the same way)."""
    from carviz.core.calibration import calibrate
    from carviz.ml.evaluate import evaluate_run, has_test_split

    run = find_run(args.run)
    if run.status() != Status.SUCCEEDED or not run.has_model():
        raise ValueError(f"run {run.id} is {run.status().value}: only a finished run's model is calibrated")
    validation = evaluate_run(run, split="validation")
    test = evaluate_run(run, split="test") if has_test_split(run) else None
    result = calibrate(validation.raw_probabilities, validation.labels,
                       test.raw_probabilities if test else None, test.labels if test else None)
    run.write_calibration(result.to_dict())
    print(f"run {run.id}: temperature {result.temperature:.3f} (fitted on {result.fitted_on} validation images); "
          f"expected calibration error on validation {result.ece_validation:.3f} -> {result.ece_validation_scaled:.3f}"
          + (f", on the test split {result.ece_test:.3f} -> {result.ece_test_scaled:.3f}" if test else ""))
    print("predictions, the Predict page and new exports apply it; existing exports now read stale")
    return 0
