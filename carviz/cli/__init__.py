"""`python -m carviz …`: demo data and layer listings; training jobs, sweeps and the run store (rename, tag, note,
archive, delete, diff); using a run (predict, compare, evaluate, calibrate, gradcam, export); collecting, importing
and reviewing images (crawl, import, undo-import, trash, restore, health); auditing a dataset (audit, move); and the
frozen-feature cache."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from carviz.cli import audit, cache, data, explain, manage, results, runs, ship, sweeps
from carviz.core.config import ConfigError

GROUPS = (data, audit, runs, manage, results, explain, ship, sweeps, cache)  # the registry: each group adds its subcommands and returns their handlers


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    parser = argparse.ArgumentParser(prog="python -m carviz", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    commands: dict = {}
    for group in GROUPS:
        commands.update(group.register(sub))
    return parser, commands


def main(argv: Sequence[str] | None = None) -> int:
    from carviz.core.gpu import share_gpu_memory
    from carviz.core.jobs.ray_backend import RayUnavailable

    share_gpu_memory()  # before anything loads TensorFlow: never reserve a GPU that jobs need
    parser, commands = build_parser()
    args = parser.parse_args(argv)
    try:
        return commands[args.command](args)
    except (ConfigError, LookupError, OSError, ValueError, RayUnavailable) as error:  # OSError: e.g. a full disk
        print(f"error: {error}", file=sys.stderr)
        return 2
