"""Command group: audit — what is wrong in a dataset (label errors, near-duplicates and leakage, outliers,
imbalance), and acting on a finding: move an image to another class (and back), trash and restore as for review."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable

from carviz.cli.common import dataset_arg


def register(sub: Any) -> dict[str, Callable[[argparse.Namespace], int]]:
    audit = sub.add_parser("audit", help="audit a dataset: suspected label errors, near-duplicates (leakage across "
                                         "the split), outliers, class imbalance; recorded under DATASET/.audit")
    audit.add_argument("dataset", type=dataset_arg, help="a dataset name (a folder under data/)")
    audit.add_argument("--backbone", default="mobilenet", help="whose ImageNet features to audit with")
    audit.add_argument("--top", type=int, default=15, help="findings of each kind to print (default 15)")
    audit.add_argument("--json", action="store_true", help="print the whole result as JSON")
    audit.add_argument("--background", action="store_true", help="run it as a job (the Data page shows it)")

    move = sub.add_parser("move", help="move images of a class to another class folder (a wrong label); recorded "
                                       "with the dataset's latest audit")
    move.add_argument("dataset", type=dataset_arg, help="a dataset name")
    move.add_argument("class_name", metavar="CLASS")
    move.add_argument("files", nargs="+", metavar="FILE", help="file names inside the class folder")
    move.add_argument("--to", required=True, metavar="CLASS", help="the class folder they belong to")
    return {"audit": cmd_audit, "move": cmd_move}


def _print_result(result: Any, top: int) -> None:
    counts = result.to_dict()["counts"]
    print(f"{result.images} images in {len(result.classes)} classes; out-of-fold accuracy of a classifier on "
          f"{result.settings.get('backbone')} features: {100 * result.accuracy:.1f} %")
    print(f"suspected label errors: {counts['suspected_label_errors']} (most suspect first)")
    for issue in result.flagged[:top]:
        print(f"  {issue.path}  labelled {issue.given}, looks like {issue.looks_like} "
              f"({100 * issue.looks_like_probability:.0f} % vs {100 * issue.given_probability:.0f} %)")
    print(f"near-duplicate pairs: {counts['near_duplicate_pairs']} (cosine similarity >= "
          f"{result.duplicate_threshold:.3f}, measured on copies), {counts['leaking_pairs']} across the split")
    for pair in (result.leaks + [p for p in result.duplicates if not p.leakage])[:top]:
        print(f"  {pair.first}  ~  {pair.second}  ({pair.similarity:.3f})"
              + (f"  LEAKAGE: {pair.leakage}" if pair.leakage else ""))
    print(f"outliers: {counts['outliers']}")
    for item in result.outliers[:top]:
        print(f"  {item.path}  nearest class {item.nearest_class} (similarity {item.similarity:.2f}, z {item.z})")
    print("classes: " + (result.imbalance or "balanced (largest under 1.5x the smallest)"))


def cmd_audit(args: argparse.Namespace) -> int:
    from carviz.data.audit import AuditResult
    from carviz.data.audit_record import create_audit, launch_audit
    from carviz.views.formatting import format_left

    if args.background:
        record = launch_audit(args.dataset, args.backbone)
        print(f"audit {record.id} of {args.dataset} started; the Data page's 'Check this dataset' shows it")
        return 0
    from carviz.core.jobs import derive_state, run_job
    from carviz.ml.audit import audit_body

    record = create_audit(args.dataset, args.backbone)
    shown: set[str] = set()

    def echo(phase: str, done: int, total: int, left: float | None) -> None:  # a line per phase, and its end
        if not args.json and (phase not in shown or done == total):
            shown.add(phase)
            print(f"{phase}: {done}/{total}" + (f", {format_left(left)}" if left else ""), file=sys.stderr,
                  flush=True)

    run_job(record, lambda context: audit_body(record, context, echo), needs_accelerator=True)
    raw = record.result()
    if raw is None:
        state = derive_state(record)
        print(f"error: audit {record.id} ended {state.status.value}: {state.error or ''}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"audit": record.id, **raw}, indent=2, ensure_ascii=False))
    else:
        _print_result(AuditResult.from_dict(raw), args.top)
        print(f"recorded as audit {record.id} in {record.path}")
    return 0


def cmd_move(args: argparse.Namespace) -> int:
    from carviz.data.audit_record import latest_audit, move_finding
    from carviz.data.importer import dataset_path, move_image

    record = latest_audit(args.dataset)
    for name in args.files:
        relative = f"{args.class_name}/{name}"
        if record is not None:
            where = move_finding(record, relative, args.to, finding="by hand")
        else:
            where = move_image(dataset_path(args.dataset), relative, args.to).relative_to(
                dataset_path(args.dataset)).as_posix()
        print(f"{relative} -> {where}")
    return 0
