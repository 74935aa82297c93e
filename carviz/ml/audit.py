"""A dataset audit as a job: one embedding per image (the pooled output of an ImageNet backbone, from the feature
cache, which the recommended sweep's classifier-only runs share), a copy test that sets the near-duplicate
threshold, then the findings of data/audit.py, recorded in the audit's folder. `python -m carviz.ml.audit DIR`.
"""

from __future__ import annotations

import io
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from carviz.core import eta
from carviz.core.config import RECOMMENDED, TrainConfig
from carviz.core.jobs import JobContext, Outcome, Status, job_main
from carviz.data import audit as findings
from carviz.data.audit_record import AuditRecord

log = logging.getLogger("carviz.ml.audit")

COPIES = 24  # images copied (resized and re-encoded) to measure the similarity of a copy
Progress = Callable[[str, int, int, "float | None"], None]  # (phase, done, total, seconds left)


def embedding_config(dataset_root: Path, backbone: str, image_size: int) -> TrainConfig:
    """The config whose classifier-only cut is the audit's embedding: the recommended preset, fully frozen."""
    weights = "none" if backbone == "small_cnn" else "imagenet"
    return RECOMMENDED.replace(dataset=str(dataset_root), backbone=backbone, weights=weights,
                               image_size=image_size, freeze="all", feature_cache=True, name="audit")


def embeddings(dataset_root: Path, scan: Any, backbone: str = "mobilenet", image_size: int = 224,
               on_progress: Progress | None = None) -> tuple[np.ndarray, Any, TrainConfig]:
    """(one pooled embedding per usable image, in scan.labelled_files() order; the model; its config)."""
    from carviz.ml import features
    from carviz.core import feature_cache
    from carviz.ml.devices import configure_devices
    from carviz.ml.model import build_model, choose_precision

    device = configure_devices()
    config = embedding_config(dataset_root, backbone, image_size)
    precision, _ = choose_precision(config.precision, device["kind"] == "gpu", backbone)
    model, _ = build_model(config.replace(precision=precision), len(scan.classes), on_gpu=device["kind"] == "gpu")
    position = features.pooled_position(model)
    if position is None:
        raise ValueError(f"{backbone} with the recommended head has no pooled output to embed with")
    paths, labels = scan.labelled_files()
    settings = feature_cache.load_settings()
    cache = feature_cache.FeatureCache(feature_cache.cache_root(), settings.max_bytes)
    rate = eta.Rate()

    def report(done: int, total: int) -> None:
        if on_progress:
            on_progress("computing embeddings", done, total, rate.eta(done, total))

    features.precompute(model, config, precision, dataset_root, paths, labels, scan.fingerprint, cache,
                        settings.dtype, [position], report)
    from carviz.ml import extraction

    computed_in = extraction.spec_precision(config.backbone, len(paths), config.image_size, precision)
    key = feature_cache.feature_spec(config, scan.fingerprint, computed_in, settings.dtype).key(
        features.position_name(model, position))
    found = cache.get(key)
    if found is None:
        raise ValueError("the embeddings were not cached (the feature cache is full or unwritable)")
    return np.asarray(found[0], dtype=np.float32), model, config


def copy_similarity_threshold(model: Any, config: TrainConfig, paths: list[Path], seed: int = 0) -> float:
    """The near-duplicate threshold, measured here: COPIES images each embedded as it is and as a copy resized to
    60-85 % and re-encoded as JPEG at quality 60-85; the lowest similarity of an image to its copy, less a margin."""
    from PIL import Image

    from carviz.data.datasets import load_image_rgb
    from carviz.ml.pipelines import make_pipeline
    from carviz.ml import features

    rng = np.random.default_rng(seed)
    chosen = [paths[i] for i in rng.choice(len(paths), size=min(COPIES, len(paths)), replace=False)]
    extractor = features.frozen_extractor(model, features.pooled_position(model))
    with tempfile.TemporaryDirectory(prefix="carviz-audit-copies-") as folder:
        copies = []
        for index, path in enumerate(chosen):
            image = load_image_rgb(path)
            scale = rng.uniform(0.6, 0.85)
            size = (max(8, int(image.width * scale)), max(8, int(image.height * scale)))
            buffer = io.BytesIO()
            image.resize(size, Image.Resampling.BILINEAR).save(buffer, format="JPEG",
                                                                quality=int(rng.integers(60, 86)))
            copy = Path(folder) / f"copy-{index:03d}.jpg"
            copy.write_bytes(buffer.getvalue())
            copies.append(copy)

        def embed(files: list[Path]) -> np.ndarray:
            data = make_pipeline(files, [0] * len(files), 1, config.image_size, 32, training=False, cache=False)
            return np.concatenate([np.asarray(extractor(x, training=False), dtype=np.float32) for x, _ in data])

        return findings.copy_threshold(embed(chosen), embed(copies))


def split_sides(scan: Any, dataset_root: Path, validation_split: float, split_seed: int, test_fraction: float
                ) -> dict[str, str]:
    """"<class>/<file>" -> train / validation / test: the split a run with these settings would make."""
    from carviz.data.datasets import split_files

    split = split_files(scan, validation_split, split_seed, test_fraction)
    side: dict[str, str] = {}
    for name, files in (("train", split.train_paths), ("validation", split.val_paths), ("test", split.test_paths)):
        for path in files:
            side[Path(path).resolve().relative_to(dataset_root).as_posix()] = name
    return side


def run_audit(dataset_root: Path, backbone: str = "mobilenet", image_size: int = 224,
              validation_split: float = RECOMMENDED.validation_split, split_seed: int = RECOMMENDED.split_seed,
              test_fraction: float = 0.15, on_progress: Progress | None = None) -> findings.AuditResult:
    """Audit every usable image of the dataset (broken, tiny and exact-duplicate files are set aside by the scan
    and not audited: `health` lists them)."""
    from carviz.data.datasets import scan_dataset

    started = time.perf_counter()
    root = Path(dataset_root).resolve()
    scan = scan_dataset(root)
    if len(scan.classes) < 2 or scan.total() < 2 * findings.FOLDS:
        raise ValueError(f"{root.name} needs at least 2 classes and {2 * findings.FOLDS} usable images to audit "
                         f"(has {len(scan.classes)} classes, {scan.total()} images)")
    vectors, model, config = embeddings(root, scan, backbone, image_size, on_progress)
    passed = time.perf_counter() - started
    if on_progress:
        on_progress("measuring copies", 0, 1, None)
    paths, labels = scan.labelled_files()
    threshold = copy_similarity_threshold(model, config, list(paths))
    relative = [Path(p).resolve().relative_to(root).as_posix() for p in paths]
    if on_progress:
        on_progress("analysing", 0, 1, None)
    result = findings.audit(vectors, labels, relative, scan.classes, threshold,
                            split_sides(scan, root, validation_split, split_seed, test_fraction))
    result.settings = {**result.settings, "backbone": backbone, "image_size": image_size,
                       "validation_split": validation_split,
                       "split_seed": split_seed, "test_fraction": test_fraction, "folds": findings.FOLDS,
                       "dataset_fingerprint": scan.fingerprint, "set_aside": len(scan.problems),
                       "embedding_seconds": round(passed, 1), "seconds": round(time.perf_counter() - started, 1)}
    return result


def audit_body(record: AuditRecord, context: JobContext, echo: Progress | None = None) -> Outcome:
    """The job: the audit its request asks for, its progress and result in its folder (echo: also told of
    progress, e.g. the CLI printing it)."""
    request = record.request()

    def progress(phase: str, done: int, total: int, left: float | None) -> None:
        record.write_progress({"phase": phase, "done": done, "total": total, "eta_seconds": left})
        if echo:
            echo(phase, done, total, left)
        if context.should_stop():
            raise InterruptedError("stopped on request")

    try:
        result = run_audit(record.dataset_dir, request.get("backbone", "mobilenet"),
                           int(request.get("image_size", 224)), float(request.get("validation_split", 0.2)),
                           int(request.get("split_seed", 123)), float(request.get("test_fraction", 0.15)), progress)
    except InterruptedError:
        return Outcome(Status.STOPPED)
    record.write_result(result.to_dict())
    record.write_progress({"phase": "done"})
    return Outcome(Status.SUCCEEDED, {"counts": result.to_dict()["counts"]})


def main(argv: list[str] | None = None) -> int:
    return job_main(argv, lambda context: audit_body(AuditRecord(context.record.path), context), kind="dataset audit",
                    needs_accelerator=True, record_type=AuditRecord)


if __name__ == "__main__":
    from carviz.ml.audit import main as module_main

    sys.exit(module_main())
