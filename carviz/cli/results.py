"""Command group: using results — predict images with a run, compare runs (table or CSV), a dataset's health."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

from carviz.cli.common import dataset_from_args
from carviz.core import settings
from carviz.core.store import Store
from carviz.views.formatting import format_accuracy


def register(sub: Any) -> dict[str, Callable[[argparse.Namespace], int]]:
    predict = sub.add_parser("predict", help="classify image files with a run's model: the top-k classes")
    predict.add_argument("run")
    predict.add_argument("files", nargs="+", metavar="FILE", type=Path)
    predict.add_argument("--top", type=int, default=5, help="classes per image (default 5)")
    predict.add_argument("--json", action="store_true")

    compare = sub.add_parser("compare", help="runs side by side: the kept model, best and final metrics")
    compare.add_argument("runs", nargs="+", metavar="RUN")
    compare.add_argument("--csv", action="store_true", help="every epoch's metrics of those runs, as CSV")

    health = sub.add_parser("health", help="a dataset's classes and counts, and the images left out of training")
    health.add_argument("dataset", nargs="?", metavar="DATASET", help="a name under data/ (or --dataset-path)")
    health.add_argument("--dataset-path", type=Path, default=None, metavar="FOLDER", help="a dataset folder anywhere")
    health.add_argument("--json", action="store_true")
    return {"predict": cmd_predict, "compare": cmd_compare, "health": cmd_health}


def cmd_predict(args: argparse.Namespace) -> int:
    from carviz.ml.predict import load_model, predict_files

    if args.top < 1:
        raise ValueError("--top must be at least 1")
    run = Store().find_run(args.run)
    predictor = load_model(run)
    results = predict_files(predictor, [str(path) for path in args.files], top_k=min(args.top, len(predictor.classes)))
    if args.json:
        print(json.dumps([{"file": str(path), "top": [{"class": c, "probability": p} for c, p in r.top or []],
                           "error": r.error} for path, r in zip(args.files, results)], indent=2, ensure_ascii=False))
    else:
        for path, result in zip(args.files, results):
            if result.error:
                print(f"{path}: error: {result.error}")
                continue
            print(f"{path}: " + ", ".join(f"{name} {format_accuracy(p)}" for name, p in result.top or []))
    return 1 if any(result.error for result in results) else 0


def cmd_compare(args: argparse.Namespace) -> int:
    from carviz.views import compare

    store = Store()
    runs = [store.find_run(ref) for ref in args.runs]
    rows, metrics, _ = compare.read_runs(runs)
    if args.csv:
        sys.stdout.write(compare.metrics_csv([(row["id"], row.get("name", ""), metrics[row["id"]]) for row in rows]))
        return 0
    table = compare.metrics_view(rows, metrics)
    table = table.drop(columns=[c for c in table.columns if c == "id"])
    print(table.to_string(index=False))
    return 0


def cmd_health(args: argparse.Namespace) -> int:
    from carviz.data.audit import imbalance_note
    from carviz.data.datasets import scan_dataset

    if args.dataset and args.dataset_path:
        raise ValueError("give either DATASET or --dataset-path")
    name = dataset_from_args(args)  # a checked name, or the folder's absolute path
    if name is None:
        raise ValueError("which dataset? e.g. `health demo` or `health --dataset-path FOLDER`")
    root = settings.resolve_dataset(name)
    scan = scan_dataset(root)
    counts = scan.counts()
    problems = [{"problem": p.kind, "file": p.path.relative_to(scan.root).as_posix(), "detail": p.detail}
                for p in scan.problems]
    imbalance = imbalance_note(counts)
    if args.json:
        print(json.dumps({"dataset": str(root), "classes": counts, "usable": scan.total(), "problems": problems,
                          "imbalance": imbalance}, indent=2, ensure_ascii=False))
        return 0
    print(f"{root}: {len(scan.classes)} classes, {scan.total()} usable images, {len(problems)} set aside")
    width = max((len(c) for c in counts), default=5)
    for name, count in counts.items():
        print(f"  {name:<{width}}  {count:>6}")
    if imbalance:
        print(imbalance[0].upper() + imbalance[1:])
    for problem in problems:
        print(f"set aside ({problem['problem']}): {problem['file']}  {problem['detail']}")
    if not problems:
        print("every image decodes, none is tiny, no duplicates")
    return 0
