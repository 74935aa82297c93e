"""Command group: shipping a run's model — export to SavedModel or TFLite, each checked against the Keras model."""

from __future__ import annotations

import argparse
import json
from typing import Any, Callable

from carviz.core import exports
from carviz.core.store import find_run
from carviz.views.formatting import format_size


def register(sub: Any) -> dict[str, Callable[[argparse.Namespace], int]]:
    export = sub.add_parser(
        "export", help="export a finished run's model (SavedModel, TFLite float32, TFLite dynamic-range quantised), "
                       "checked on its validation images against the Keras model",
        description="Writes RUN/exports/<format>/ and the check beside it (check.json): top-1 agreement with the Keras "
                    "model and the largest probability difference on the run's validation images. Tolerances: "
                    + "; ".join(f"{fmt}: agreement >= {t.min_top1_agreement:.0%}, difference <= {t.max_prob_diff:g}"
                                for fmt, t in exports.TOLERANCES.items())
                    + ". Exits 1 when an export fails its check.")
    export.add_argument("run")
    export.add_argument("--format", required=True, choices=(*exports.FORMATS, "all"),
                        help="what to export ('all': every format)")
    export.add_argument("--json", action="store_true", help="print the checks as JSON")
    return {"export": cmd_export}


def cmd_export(args: argparse.Namespace) -> int:
    from carviz.ml.export import export_run
    from carviz.ml.predict import load_model

    run = find_run(args.run)
    formats = exports.FORMATS if args.format == "all" else (args.format,)
    predictor = load_model(run)  # once for every format
    checks = {}
    for fmt in formats:
        check = export_run(run, fmt, predictor)
        checks[fmt] = check
        if not args.json:
            path = exports.artifact_path(run, fmt)
            print(f"{exports.LABELS[fmt]}: {path} ({format_size(check.get('size_bytes') or 0)})")
            print(f"  check: {exports.describe_check(check)}")
    if args.json:
        print(json.dumps(checks, indent=2, ensure_ascii=False))
    failed = [fmt for fmt, check in checks.items() if check.get("passed") is not True]
    if failed and not args.json:
        print(f"not fit to use (failed the check): {', '.join(failed)}")
    return 1 if failed else 0
