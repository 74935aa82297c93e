"""Command group: the frozen-feature cache — list it, change its size limit or storage dtype, clear it."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable



def register(sub: Any) -> dict[str, Callable[[argparse.Namespace], int]]:
    cache = sub.add_parser("cache", help="the frozen-feature cache: list it, change its size limit or dtype, clear it")
    cache.add_argument("--limit-gb", type=float, default=None, metavar="GB",
                       help="size limit in GiB (0..100000); a lower limit evicts the least recently used sets now")
    cache.add_argument("--dtype", default=None, metavar="DTYPE",
                       help="storage dtype of new feature sets: float32 (default) or float16 (half the disk; "
                            "results may differ slightly)")
    cache.add_argument("--clear", action="store_true", help="remove every cached feature set")
    cache.add_argument("--json", action="store_true")
    return {"cache": cmd_cache}


def cmd_cache(args: argparse.Namespace) -> int:
    from carviz.views import cache_report
    from carviz.core import feature_cache

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
        view = row.get("augmented view")
        layer = f"{row['layer']} view {view}" if view is not None else row["layer"]  # an augmented view's features
        print(f"{row['key']:<12} {layer!s:<24} {row['backbone']!s:<14} {row['alpha']!s:>5} "
              f"{row['image size']!s:>5} {row['head']!s:<11} {row['precision']!s:<14} {row['images']!s:>6} "
              f"{row['size MiB']:>9.1f} {row['stored dtype']!s:<7}  {row['last used']:%Y-%m-%d %H:%M:%S}")
    return 0
