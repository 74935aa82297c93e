"""Benchmark: the dataset audit on real photos with planted faults, and its speed once the features are cached.

On a temporary copy of a dataset (default ../shared/data/cars20), seeded:
  - 5 % of the images moved to another class's folder at random (flipped labels);
  - 10 images copied into other classes' folders, resized (60-90 %) and re-encoded as JPEG (quality 70-90);
  - 5 off-topic images (drawn vehicles from the demo set, which are no photos of these classes) put in classes;
then the audit as `python -m carviz audit` runs it (MobileNet 1.0 ImageNet features, from an offline copy of
../shared/keras_home), twice: the first computes the features, the second finds them cached (the target: <= 60 s).

Figures: the share of flipped images in the top 10 % of the suspect ranking (target >= 70 %) and that top's
precision; the flagged set's precision and recall; planted copies found as near-duplicate pairs (target >= 9 of
10) and the pairs found besides them; off-topic images among the outliers; both audits' seconds.

    .venv/bin/python bench/audit.py [--dataset PATH] [--flip 0.05] [--copies 10] [--seed 0] [--json PATH]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("CARVIZ_SHARED") or REPO.parent / "shared")


def plant(root: Path, flip: float, copies: int, strangers: int, seed: int) -> dict[str, object]:
    """Flip labels, plant copies and off-topic images in the dataset copy at root; what was planted where."""
    from PIL import Image

    from carviz.data.demo import generate_demo_dataset

    rng = np.random.default_rng(seed)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    files = sorted(p for p in root.rglob("*") if p.is_file())
    chosen = rng.choice(len(files), size=int(round(flip * len(files))) + copies, replace=False)
    flipped, copied = [], []
    for index in chosen[:len(chosen) - copies]:
        path = files[index]
        other = classes[(classes.index(path.parent.name) + int(rng.integers(1, len(classes)))) % len(classes)]
        target = root / other / f"flipped-{path.name}"
        path.rename(target)
        flipped.append(target.relative_to(root).as_posix())
    for number, index in enumerate(chosen[len(chosen) - copies:]):
        path = files[index]
        other = classes[(classes.index(path.parent.name) + int(rng.integers(1, len(classes)))) % len(classes)]
        image = Image.open(path).convert("RGB")
        scale = rng.uniform(0.6, 0.9)
        buffer = io.BytesIO()
        image.resize((int(image.width * scale), int(image.height * scale))).save(
            buffer, format="JPEG", quality=int(rng.integers(70, 91)))
        target = root / other / f"copy-{number:02d}.jpg"
        target.write_bytes(buffer.getvalue())
        copied.append((path.relative_to(root).as_posix(), target.relative_to(root).as_posix()))
    drawn = generate_demo_dataset(Path(tempfile.mkdtemp(prefix="carviz-drawn-")), per_class=2, image_size=160)
    off_topic = []
    for number, path in enumerate(sorted(drawn.rglob("*.jpg"))[:strangers]):
        target = root / classes[number % len(classes)] / f"off-topic-{number}.jpg"
        shutil.copy(path, target)
        off_topic.append(target.relative_to(root).as_posix())
    shutil.rmtree(drawn, ignore_errors=True)
    return {"flipped": flipped, "copies": copied, "off_topic": off_topic}


def audit_once(dataset: Path) -> tuple[float, object]:
    from carviz.ml.audit import run_audit

    started = time.perf_counter()
    result = run_audit(dataset)
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=SHARED / "data" / "cars20")
    parser.add_argument("--keras-home", type=Path, default=SHARED / "keras_home")
    parser.add_argument("--flip", type=float, default=0.05)
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--off-topic", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not args.dataset.is_dir() or not (args.keras_home / "models").is_dir():
        print(f"skipped: needs a dataset ({args.dataset}) and ImageNet weights ({args.keras_home}/models)")
        return
    root = Path(tempfile.mkdtemp(prefix="carviz-audit-bench-"))
    try:
        keras_home = root / "keras_home"
        shutil.copytree(args.keras_home, keras_home)
        for path in [keras_home, *keras_home.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)
        os.environ.update(KERAS_HOME=str(keras_home), CARVIZ_HOME=str(root / "home"), TF_CPP_MIN_LOG_LEVEL="2")
        dataset = root / "home" / "data" / args.dataset.name
        shutil.copytree(args.dataset, dataset)
        planted = plant(dataset, args.flip, args.copies, args.off_topic, args.seed)
        first, result = audit_once(dataset)
        second, result = audit_once(dataset)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    flipped = set(planted["flipped"])
    ranking = [issue.path for issue in result.label_issues]
    top = ranking[:len(ranking) // 10]
    in_top = len(flipped & set(top))
    flagged = {issue.path for issue in result.flagged}
    pairs = {frozenset((pair.first, pair.second)) for pair in result.duplicates}
    found = sum(frozenset(copy) in pairs for copy in planted["copies"])
    outliers = {item.path for item in result.outliers}
    figures = {
        "images": result.images, "classes": len(result.classes), "out_of_fold_accuracy": result.accuracy,
        "flipped": len(flipped), "flipped_in_top_10pct": in_top, "top_10pct": len(top),
        "top_precision": in_top / max(1, len(top)), "flagged": len(flagged),
        "flagged_precision": len(flagged & flipped) / max(1, len(flagged)),
        "flagged_recall": len(flagged & flipped) / max(1, len(flipped)),
        "copies": len(planted["copies"]), "copies_found": found, "pairs_found": len(pairs),
        "other_pairs": sorted(" ~ ".join(sorted(p)) for p in pairs if p not in
                              {frozenset(c) for c in planted["copies"]}),
        "duplicate_threshold": result.duplicate_threshold, "leaking_pairs": len(result.leaks),
        "off_topic": len(planted["off_topic"]),
        "off_topic_in_outliers": len(outliers & set(planted["off_topic"])), "outliers": len(outliers),
        "first_audit_seconds": round(first, 1), "cached_audit_seconds": round(second, 1),
    }
    print(f"{result.images} images, {len(result.classes)} classes; out-of-fold accuracy {100 * result.accuracy:.1f} %")
    print(f"label errors: {in_top} of {len(flipped)} flipped images in the top 10 % ({len(top)}) of the ranking "
          f"({100 * in_top / max(1, len(flipped)):.0f} %; target >= 70 %), precision of that top "
          f"{100 * figures['top_precision']:.0f} %; flagged {len(flagged)}: precision "
          f"{100 * figures['flagged_precision']:.0f} %, recall {100 * figures['flagged_recall']:.0f} %")
    print(f"near-duplicates: {found} of {len(planted['copies'])} planted copies found (target >= 9); "
          f"{len(pairs) - found} other pairs at similarity >= {result.duplicate_threshold:.3f}; "
          f"{len(result.leaks)} pairs across the split")
    for line in figures["other_pairs"][:10]:
        print(f"  also: {line}")
    print(f"outliers: {figures['off_topic_in_outliers']} of {len(planted['off_topic'])} off-topic drawings among "
          f"{len(outliers)} outliers")
    print(f"audit: {first:.0f} s with the feature pass, {second:.0f} s with the features cached (target <= 60 s)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
