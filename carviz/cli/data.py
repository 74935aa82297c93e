"""Command group: data — demo data, layer listings, crawl, import (and undo-import), trash and restore."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

from carviz.cli.common import dataset_arg, freeze_arg
from carviz.core import settings
from carviz.core.config import FREEZE_ALL
from carviz.views.formatting import format_time


def register(sub: Any) -> dict[str, Callable[[argparse.Namespace], int]]:
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
    layers.add_argument("--freeze", type=freeze_arg, default=None, help="mark what 'freeze N' freezes")

    dataset_help = "a dataset name: one folder under data/ ($CARVIZ_DATA); never a path"
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
    crawl.add_argument("--audit", action="store_true",
                       help="audit the dataset when the crawl finishes (a job of its own; see `audit`)")
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

    undo = sub.add_parser("undo-import", help="remove what an import added (files changed since are kept); without "
                                              "IMPORT, list the dataset's imports")
    undo.add_argument("dataset", help=dataset_help)
    undo.add_argument("import_id", nargs="?", metavar="IMPORT", help="an import id, as `import` printed it")

    trash = sub.add_parser("trash", help="move images of a class to the dataset's trash (left out of training)")
    trash.add_argument("dataset", help=dataset_help)
    trash.add_argument("class_name", metavar="CLASS")
    trash.add_argument("files", nargs="+", metavar="FILE", help="file names inside the class folder")

    restore = sub.add_parser("restore", help="move trashed images back (all when no FILE is given)")
    restore.add_argument("dataset", help=dataset_help)
    restore.add_argument("files", nargs="*", metavar="CLASS/FILE", help="as listed by `restore --list`")
    restore.add_argument("--list", action="store_true", help="only list the trash")
    return {"demo-data": cmd_demo_data, "layers": cmd_layers, "crawl": cmd_crawl, "crawl-status": cmd_crawl_status,
            "crawl-stop": cmd_crawl_stop, "import": cmd_import, "undo-import": cmd_undo_import, "trash": cmd_trash,
            "restore": cmd_restore}


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


def _parse_class_arg(text: str, target: int):
    from carviz.data.collect import parse_class_line

    return parse_class_line(text, target, separator="=")


def _follow_crawl(dataset: Path, out: Any = None, poll: float = 1.0) -> Any:
    """Print the crawl's progress whenever it changes, until the job ends; returns the final CrawlState."""
    from carviz.data.crawl.job import CrawlState, wait_crawl
    from carviz.views.crawl_text import progress_lines

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
                      min_side=args.min_side, delay=args.delay, audit_when_done=args.audit)
    try:
        dataset = launch_crawl(dataset_arg(args.dataset, create=True), spec)
    except CrawlBusy as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"crawl of {len(classes)} class(es) into {dataset} started in the background", flush=True)
    if args.wait:
        return 0 if _follow_crawl(dataset).status == JobStatus.SUCCEEDED else 1
    print(f"follow it with: python -m carviz crawl-status {args.dataset}")
    return 0


def cmd_crawl_status(args: argparse.Namespace) -> int:
    from carviz.data.crawl.job import read_crawl
    from carviz.views.crawl_text import progress_lines

    state = read_crawl(dataset_arg(args.dataset))
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
    from carviz.data.crawl.job import read_crawl, stop_crawl
    from carviz.views.crawl_text import progress_lines

    dataset = dataset_arg(args.dataset)
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
    for member, reason in report.skipped:
        print(f"  skipped {member}: {reason}")
    for member, reason in report.dropped:
        print(f"  dropped {member}: {reason}")
    for member, note in report.notes:
        print(f"  note {member}: {note}")
    if report.import_id:
        print(f"import {report.import_id}; undo it with: python -m carviz undo-import {dataset.name} "
              f"{report.import_id}")


def cmd_import(args: argparse.Namespace) -> int:
    import zipfile

    from carviz.data.importer import import_folder, import_zip

    source = args.source.expanduser()
    if source.is_dir():
        dataset = dataset_arg(args.dataset, create=True)
        report = import_folder(source, dataset)
    elif source.is_file():
        if not zipfile.is_zipfile(source):
            raise ValueError(f"{source} is neither a folder nor a zip file")
        dataset = dataset_arg(args.dataset, create=True)
        report = import_zip(source, dataset)
    else:
        raise FileNotFoundError(f"{source} does not exist")
    _print_report(report, dataset)
    return 0


def cmd_undo_import(args: argparse.Namespace) -> int:
    from carviz.data.import_log import list_imports, undo_import

    dataset = dataset_arg(args.dataset)
    if not args.import_id:
        records = list_imports(dataset)
        for record in records:
            state = f"undone {record.undone_at}" if record.undone_at else "undo-able"
            print(f"{record.id}  {record.created_at}  {len(record.files)} image(s) from {record.source}  "
                  f"({record.skipped} skipped; {state})")
        print(f"{len(records)} import(s) into {dataset.name}")
        return 0
    report = undo_import(dataset, args.import_id)
    for rel in report.removed:
        print(f"removed {rel}")
    for rel, why in report.kept:
        print(f"kept {rel}: {why}")
    print(report.summary())
    return 0


def cmd_trash(args: argparse.Namespace) -> int:
    from carviz.data.importer import trash_images

    dataset = dataset_arg(args.dataset)
    moved = trash_images(dataset, args.class_name, args.files)
    for path in moved:
        print(f"trashed {args.class_name}/{path.name}" if path.name in args.files else
              f"trashed {args.class_name} file as {path.name}")
    print(f"{len(moved)} image(s) moved to {dataset / '.trash'}")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from carviz.data.importer import list_trash, restore_images

    dataset = dataset_arg(args.dataset)
    entries = list_trash(dataset)
    if args.list:
        for entry in entries:
            when = format_time(entry.trashed_at) if entry.trashed_at else "time unknown"
            print(f"{entry.class_name}/{entry.file_name}  (from {entry.original}, {when})")
        print(f"{len(entries)} image(s) in the trash")
        return 0
    restored = restore_images(dataset, args.files or entries)
    for path in restored:
        print(f"restored {path.parent.name}/{path.name}")
    print(f"{len(restored)} image(s) restored")
    return 0
