"""Benchmark: carviz at the seed study's data size (feature pass, steady cached epochs, memory) and bfloat16 on CPUs.

All in one run, each measurement in a fresh worker process (its own peak memory, no warm caches carried over):

  (1) a generated image folder of 196 classes x 40 images at 224 px (the study's 196-class size; drawn like the demo
      set, so nothing is downloaded); MobileNet 1.0 (ImageNet weights from ../shared/keras_home when present, else
      none), freeze 73, the recommended head, batch 32, 10 epochs, per precision (float32, mixed_bfloat16):
        - the feature pass: images/s of carviz's pass against a plain Keras `model.predict` of the same frozen part
          over `keras.utils.image_dataset_from_directory` of the same images (measured in the same run);
        - every epoch's time (training + validation) of the cached run: min / median / max and max / median;
        - the run's peak memory (the worker's maximum resident set), the cache entry's size, how the cut was read
          (in memory or in blocks) and, where the kernel exposes it (DAMON), how much page cache it paged out;
  (1a) float32 only, the feature pass alone in three ways, --pass-rounds (2) rounds interleaved: carviz as the issue
      found it (Keras, 32 images a batch), Keras at 128 a batch (session 5), and carviz now (the planned engine, on a
      CPU a float32 TFLite copy run by XNNPACK, 64 a batch);
  (1b) a cut larger than memory: the float32 run again (the cut from (1), or computed first outside the cgroup: a
      cache hit either way) in a memory cgroup (--bigcut-memory-gb, 4) that leaves less room than the cut beside the
      process's own memory (about 2.5 GB), so carviz must read it from its file in shuffled blocks and the page cache
      cannot keep it between epochs; its epoch times against (1)'s; then, in the same cgroup, raw reads of the file
      after dropping its pages (posix_fadvise DONTNEED): one sequential pass, one epoch in carviz's block order, and
      (for contrast) random rows 32 at a time, as training on the memory-mapped file would read. Needs a writable
      memory cgroup (root on cgroup v1 or v2); skipped, saying so, without one;
  (2) training throughput of ResNet50 and DenseNet121 (weights none, freeze 1, synthetic images in memory), built by
      carviz, in float32 and mixed_bfloat16: images/s and the ratio;
  (3) accuracy: MobileNet (ImageNet) at freeze 73 on ../shared/data/cars20 with a 15 % test split, seeds 1-3, float32
      against mixed_bfloat16: validation and test accuracy mean +- std (skipped without ../shared).

    .venv/bin/python bench/scale.py [--classes 196] [--per-class 40] [--epochs 10]
                                    [--parts data,passes,bigcut,throughput,accuracy]
                                    [--json PATH]

--quick: 8 classes x 10 images, 3 epochs, 2 throughput steps, one accuracy seed on cars-mini: a check that it all
runs, not figures to quote.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import stat
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
import carviz.ml  # noqa: E402,F401  (TensorFlow's CPU kernels switched as in carviz's jobs, plain-Keras baselines too)
SHARED = Path(os.environ.get("CARVIZ_SHARED") or REPO.parent / "shared")
PRECISIONS = ("float32", "mixed_bfloat16")
DAMON_STATE = Path("/sys/kernel/mm/damon/admin/kdamonds/0/state")
DAMON_APPLIED = Path("/sys/kernel/mm/damon/admin/kdamonds/0/contexts/0/schemes/0/stats/sz_applied")


def generate(root: Path, classes: int, per_class: int, size: int) -> Path:
    from carviz.data.demo import generate_demo_dataset

    return generate_demo_dataset(root, per_class=per_class, image_size=size, classes=classes)


def paged_out_bytes() -> int | None:
    """Bytes of page cache DAMON's reclaim scheme has paged out since boot; None where it is not readable."""
    try:
        DAMON_STATE.write_text("update_schemes_stats")
        return int(DAMON_APPLIED.read_text())
    except (OSError, ValueError):
        return None


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ---------------------------------------------------------------- workers (each in its own process)


def evict_cache_files() -> None:
    """Drop the pages of every file under CARVIZ_CACHE from the page cache: the next reads come from disk."""
    for path in Path(os.environ["CARVIZ_CACHE"]).rglob("*.npy"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def work_run(dataset: str, weights: str, precision: str, epochs: int, seed: int, freeze: Any,
             test_fraction: float) -> dict[str, Any]:
    """One carviz run, in this process, as a job runs it; its timings, memory and accuracies."""
    from carviz.core.config import RECOMMENDED
    from carviz.core.store import create_run
    from carviz.ml import train

    config = RECOMMENDED.replace(name=f"scale {precision} seed {seed}", dataset=dataset, backbone="mobilenet",
                                 weights=weights, image_size=224, freeze=freeze, epochs=epochs, batch_size=32,
                                 learning_rate=1e-3, precision=precision, seed=seed, test_fraction=test_fraction,
                                 feature_cache=True, early_stopping_patience=0, checkpoint_every=epochs)
    run = create_run(config)
    before = paged_out_bytes()
    status = train.train(run)
    after = paged_out_bytes()
    if status.value != "succeeded":
        raise RuntimeError(f"run ended {status.value}: {run.log_tail()[-800:]}")
    info, evaluation = run.info(), run.evaluation() or {}
    cache = info.get("feature_cache") or {}
    return {"epoch_seconds": [row["seconds"] for row in run.metrics()], "feature_seconds": cache.get("seconds"),
            "feature_source": cache.get("source"), "engine": cache.get("engine"), "images": sum((info.get("class_counts") or {}).values()),
            "cache_bytes": cache.get("bytes"), "read": cache.get("read"), "layer": cache.get("layer"),
            "peak_rss_bytes": peak_rss_bytes(), "val_accuracy": evaluation.get("accuracy"),
            "test_accuracy": evaluation.get("test_accuracy"), "precision": info.get("model", {}).get("precision"),
            "paged_out_bytes": after - before if before is not None and after is not None else None}


def work_predict(dataset: str, weights: str, precision: str) -> dict[str, Any]:
    """The plain-Keras baseline: the frozen part of the same model, model.predict over image_dataset_from_directory."""
    import keras

    from carviz.core.config import RECOMMENDED
    from carviz.ml import features
    from carviz.ml.model import build_model

    config = RECOMMENDED.replace(dataset=dataset, backbone="mobilenet", weights=weights, image_size=224, freeze=73,
                                 precision=precision)
    images = keras.utils.image_dataset_from_directory(dataset, image_size=(224, 224), batch_size=32, shuffle=False,
                                                      label_mode=None)
    model, _ = build_model(config, 2)
    part = features.submodel(model, features.IMAGE, features.cache_position(model, 73))
    part.predict(images.take(1), verbose=0)  # traced before the clock starts
    started = time.perf_counter()
    out = part.predict(images, verbose=0)
    return {"images": int(len(out)), "seconds": time.perf_counter() - started}


def work_throughput(backbone: str, precision: str, steps: int) -> dict[str, Any]:
    """Training images/s of a carviz-built model (weights none, everything trainable) on synthetic batches."""
    import numpy as np
    import tensorflow as tf

    from carviz.core.config import RECOMMENDED
    from carviz.ml.model import build_model

    config = RECOMMENDED.replace(backbone=backbone, weights="none", image_size=224, freeze=1, precision=precision,
                                 batch_size=32)
    model, _ = build_model(config, 196)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (32, 224, 224, 3)).astype("float32")
    y = np.eye(196, dtype="float32")[rng.integers(0, 196, 32)]
    data = tf.data.Dataset.from_tensors((x, y)).repeat()
    model.fit(data, steps_per_epoch=2, epochs=1, verbose=0)  # traced and warmed
    started = time.perf_counter()
    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
    return {"images_per_second": steps * 32 / (time.perf_counter() - started)}


def work_pass(dataset: str, weights: str, engine: str, batch: int) -> dict[str, Any]:
    """carviz's feature pass alone (freeze 73's cut, float32, into a fresh cache) with one engine and batch size."""
    from carviz.core.config import RECOMMENDED
    from carviz.data.datasets import scan_dataset
    from carviz.core import feature_cache
    from carviz.ml import extraction, features
    from carviz.ml.model import build_model

    os.environ[extraction.ENGINE_ENV] = engine
    features.EXTRACTION_PIXELS = batch * 224 * 224
    config = RECOMMENDED.replace(dataset=dataset, backbone="mobilenet", weights=weights, image_size=224, freeze=73,
                                 precision="float32")
    scan = scan_dataset(Path(dataset))
    paths, labels = scan.labelled_files()
    model, summary = build_model(config, len(scan.classes))
    cache = feature_cache.FeatureCache(feature_cache.cache_root(), 40 * 2**30)
    started = time.perf_counter()
    source = features.precompute(model, config, summary.precision, Path(dataset), paths, labels, scan.fingerprint,
                                 cache, "float32", [features.cache_position(model, 73)])
    return {"images": len(paths), "seconds": time.perf_counter() - started, "source": source}


def work_reads(seconds_limit: float) -> dict[str, Any]:
    """Reads of the largest cached cut under CARVIZ_CACHE, each after dropping its pages: MB/s of a sequential pass,
    of one training epoch in carviz's block order, and of random rows 32 at a time (stopped after seconds_limit)."""
    import numpy as np

    from carviz.ml import feature_rows

    path = max(Path(os.environ["CARVIZ_CACHE"]).rglob("features.npy"), key=lambda p: p.stat().st_size)

    def fresh() -> np.ndarray:  # a new mapping each time: dropping pages skips those still mapped
        evict_cache_files()
        return np.load(path, mmap_mode="r")

    features = fresh()
    count, row_bytes, total = len(features), int(features[0].nbytes), int(features.nbytes)
    del features
    results: dict[str, Any] = {"bytes": total, "row_bytes": row_bytes}

    evict_cache_files()
    started = time.perf_counter()
    with open(path, "rb") as file:
        while file.read(8 * 2**20):
            pass
    results["sequential_mb_s"] = total / 1e6 / (time.perf_counter() - started)

    features = fresh()
    rows = np.arange(count)
    blocks = feature_rows.blocks_of(rows, rows, row_bytes)
    started = time.perf_counter()
    read = sum(len(x) for x, _ in feature_rows.block_order_batches(
        features, blocks, 32, np.random.default_rng(0), feature_rows.BUFFER_BYTES // feature_rows.BLOCK_BYTES))
    results["block_epoch_seconds"] = time.perf_counter() - started
    results["block_mb_s"] = read * row_bytes / 1e6 / results["block_epoch_seconds"]
    del features

    features = fresh()
    order = np.random.default_rng(0).permutation(count)
    started, read = time.perf_counter(), 0
    for i in range(0, count, 32):
        np.asarray(features[np.sort(order[i:i + 32])])
        read += len(order[i:i + 32])
        if time.perf_counter() - started > seconds_limit:
            break
    results["random_rows_mb_s"] = read * row_bytes / 1e6 / (time.perf_counter() - started)
    results["random_rows_read"], results["rows"] = read, count
    return results


WORKERS = {"run": work_run, "predict": work_predict, "throughput": work_throughput, "pass": work_pass,
           "reads": work_reads}


def in_worker(kind: str, cgroup: Path | None = None, **arguments: Any) -> dict[str, Any]:
    """Run WORKERS[kind](**arguments) in a fresh Python process (in the memory cgroup `cgroup` when given)."""
    command = [sys.executable, __file__, "--worker", kind, json.dumps(arguments)]
    join = (lambda: (cgroup / "cgroup.procs").write_text(str(os.getpid()))) if cgroup else None  # noqa: E731
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy(), preexec_fn=join)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{kind} worker failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


# ---------------------------------------------------------------- the parts


def use_home(root: Path, label: str, max_gb: float = 40.0) -> None:
    """A fresh CARVIZ_HOME and feature cache (limit max_gb) for the next workers."""
    from carviz.core.feature_cache import CacheSettings, save_settings

    home = root / label
    (home / "runs").mkdir(parents=True)
    os.environ.update(CARVIZ_HOME=str(home), CARVIZ_CACHE=str(home / "cache"))
    save_settings(CacheSettings(max_gb=max_gb), home / "cache")


def data_part(root: Path, dataset: Path, weights: str, epochs: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for precision in PRECISIONS:
        use_home(root, f"data-{precision}")
        run = in_worker("run", dataset=str(dataset), weights=weights, precision=precision, epochs=epochs, seed=1,
                        freeze=73, test_fraction=0.0)
        baseline = in_worker("predict", dataset=str(dataset), weights=weights, precision=precision)
        results[precision] = {**run, "predict_images_per_second": baseline["images"] / baseline["seconds"],
                              "extract_images_per_second": run["images"] / run["feature_seconds"]}
        print(f"  {precision}: feature pass {run['feature_seconds']:.0f} s, epochs "
              f"{', '.join(f'{s:.1f}' for s in run['epoch_seconds'])} s", flush=True)
    return results


PASSES = (("keras", 32, "as the issue found it: Keras, 32 a batch"), ("keras", 128, "Keras, 128 a batch"),
          ("auto", 64, "carviz now: the planned engine, 64 a batch"))


def passes_part(root: Path, dataset: Path, weights: str, rounds: int) -> dict[str, Any]:
    """Each way of running the pass `rounds` times, interleaved (so a slow spell of the machine hits all alike)."""
    results: dict[str, Any] = {label: {"images_per_second": []} for _, _, label in PASSES}
    for number in range(rounds):
        for engine, batch, label in PASSES:
            use_home(root, f"pass-{engine}-{batch}-{number}")
            result = in_worker("pass", dataset=str(dataset), weights=weights, engine=engine, batch=batch)
            shutil.rmtree(os.environ["CARVIZ_CACHE"], ignore_errors=True)  # 3 GB each: not kept
            results[label]["images_per_second"].append(result["images"] / result["seconds"])
            results[label]["source"] = result["source"]
            print(f"  {label}: {results[label]['images_per_second'][-1]:.1f} img/s ({result['source']})", flush=True)
    return results


def memory_cgroup(limit_bytes: int) -> Path | None:
    """A new memory cgroup limited to limit_bytes (v1, else v2), or None where none can be made."""
    name = f"carviz-bench-{os.getpid()}"
    for folder, limit_file in ((Path("/sys/fs/cgroup/memory") / name, "memory.limit_in_bytes"),
                               (Path("/sys/fs/cgroup") / name, "memory.max")):
        try:
            folder.mkdir()
        except OSError:
            continue
        try:
            (folder / limit_file).write_text(str(limit_bytes))
            return folder
        except OSError:
            folder.rmdir()
    return None


def bigcut_part(root: Path, dataset: Path, weights: str, epochs: int, memory_gb: float) -> dict[str, Any]:
    cgroup = memory_cgroup(int(memory_gb * 2**30))
    if cgroup is None:
        print("  skipped: no memory cgroup can be made here (needs root on cgroup v1 or v2)", flush=True)
        return {}
    try:
        use_home(root, "bigcut")
        reused = root / "data-float32" / "cache"
        if reused.is_dir():  # the data part's cut: a cache hit, no second feature pass
            os.environ["CARVIZ_CACHE"] = str(reused)
        else:  # computed first, outside the cgroup: the run in it then starts from the cache like (1)'s later runs
            in_worker("pass", dataset=str(dataset), weights=weights, engine="auto", batch=64)
        evict_cache_files()  # pages already cached were charged to another cgroup: the run must read them itself
        run = in_worker("run", cgroup=cgroup, dataset=str(dataset), weights=weights, precision="float32",
                        epochs=epochs, seed=1, freeze=73, test_fraction=0.0)
        reads = in_worker("reads", cgroup=cgroup, seconds_limit=60.0)
    finally:
        cgroup.rmdir()
    print(f"  epochs {', '.join(f'{s:.1f}' for s in run['epoch_seconds'])} s; reads {reads}", flush=True)
    return {"run": run, "reads": reads, "memory_gb": memory_gb}


def throughput_part(steps: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for backbone in ("resnet50", "densenet121"):
        results[backbone] = {p: in_worker("throughput", backbone=backbone, precision=p, steps=steps)
                             ["images_per_second"] for p in PRECISIONS}
        print(f"  {backbone}: {results[backbone]}", flush=True)
    return results


def accuracy_part(root: Path, dataset: Path, seeds: list[int], epochs: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for precision in PRECISIONS:
        use_home(root, f"accuracy-{precision}")
        runs = [in_worker("run", dataset=str(dataset), weights="imagenet", precision=precision, epochs=epochs,
                          seed=seed, freeze=73, test_fraction=0.15) for seed in seeds]
        results[precision] = {"val": [r["val_accuracy"] for r in runs], "test": [r["test_accuracy"] for r in runs],
                              "epoch_seconds": statistics.median(s for r in runs for s in r["epoch_seconds"][1:]),
                              "feature_seconds": runs[0]["feature_seconds"]}
        print(f"  {precision}: test {results[precision]['test']}", flush=True)
    return results


# ---------------------------------------------------------------- report


def mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{100 * values[0]:.1f} %" if values else "-"
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f} %"


def report(figures: dict[str, Any]) -> None:
    data = figures.get("data")
    if data:
        print(f"\n(1) {figures['dataset']}: MobileNet 1.0 ({figures['weights']} weights), freeze 73, batch 32, "
              f"{figures['epochs']} epochs, one job")
        print(f"{'precision':>15} {'pass img/s':>10} {'predict':>8} {'ratio':>6} {'epoch min':>9} {'median':>7} "
              f"{'max':>6} {'max/med':>7} {'peak RSS':>9} {'cache':>8}  cut read / DAMON paged out")
        for precision, r in data.items():
            epochs = r["epoch_seconds"]
            median = statistics.median(epochs)
            damon = "-" if r["paged_out_bytes"] is None else f"{r['paged_out_bytes'] / 2**20:.0f} MiB"
            print(f"{precision:>15} {r['extract_images_per_second']:>10.1f} {r['predict_images_per_second']:>8.1f} "
                  f"{r['extract_images_per_second'] / r['predict_images_per_second']:>5.2f}x {min(epochs):>9.1f} "
                  f"{median:>7.1f} {max(epochs):>6.1f} {max(epochs) / median:>7.2f} "
                  f"{r['peak_rss_bytes'] / 2**30:>7.2f} G {r['cache_bytes'] / 2**30:>6.2f} G  {r['read']} / {damon}")
        print("  (epoch times include validation; the first epoch includes tracing)")
    passes = figures.get("passes")
    if passes:
        best = {label: max(r["images_per_second"]) for label, r in passes.items()}
        first = next(iter(best.values()))
        predict = (data or {}).get("float32", {}).get("predict_images_per_second")
        print(f"\n(1a) the feature pass alone, float32, {figures['dataset']} (writing the cut included), rounds "
              "interleaved; the ratios compare the best round of each")
        for label, r in passes.items():
            against = f", {best[label] / predict:.2f}x model.predict" if predict else ""
            rounds = " / ".join(f"{v:.1f}" for v in r["images_per_second"])
            print(f"{label:>46}: {rounds} img/s ({best[label] / first:.2f}x the first{against}) {r['source']}")
    bigcut = figures.get("bigcut")
    if bigcut:
        epochs, reads = bigcut["run"]["epoch_seconds"], bigcut["reads"]
        print(f"\n(1b) a cut larger than memory: {reads['bytes'] / 2**30:.2f} GiB ({reads['rows']} rows of "
              f"{reads['row_bytes'] / 1024:.0f} KiB) in a {bigcut['memory_gb']:g} GiB memory cgroup")
        line = (f"  epochs min / median / max {min(epochs):.1f} / {statistics.median(epochs):.1f} / "
                f"{max(epochs):.1f} s, peak RSS {bigcut['run']['peak_rss_bytes'] / 2**30:.2f} G, cut read "
                f"{bigcut['run']['read']}")
        if data and "float32" in data:
            held = data["float32"]["epoch_seconds"]
            line += f"; held in memory (1): {min(held):.1f} / {statistics.median(held):.1f} / {max(held):.1f} s"
        print(line)
        print(f"  reads after dropping the pages: sequential {reads['sequential_mb_s']:.0f} MB/s; one epoch in block "
              f"order {reads['block_epoch_seconds']:.1f} s ({reads['block_mb_s']:.0f} MB/s); random rows 32 at a "
              f"time {reads['random_rows_mb_s']:.0f} MB/s ({reads['random_rows_read']} rows read)")
    throughput = figures.get("throughput")
    if throughput:
        print("\n(2) training throughput, weights none, batch 32, 224 px (images/s)")
        for backbone, r in throughput.items():
            print(f"{backbone:>12}: float32 {r['float32']:.1f}, mixed_bfloat16 {r['mixed_bfloat16']:.1f} "
                  f"({r['mixed_bfloat16'] / r['float32']:.2f}x)")
    accuracy = figures.get("accuracy")
    if accuracy:
        print(f"\n(3) {figures['accuracy_dataset']}: MobileNet ImageNet, freeze 73, 15 % test split, seeds "
              f"{figures['seeds']}")
        for precision, r in accuracy.items():
            print(f"{precision:>15}: val {mean_std(r['val'])}, test {mean_std(r['test'])}; epoch "
                  f"{r['epoch_seconds']:.2f} s, feature pass {r['feature_seconds']:.1f} s")


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        result = WORKERS[sys.argv[2]](**json.loads(sys.argv[3]))
        print("RESULT " + json.dumps(result), flush=True)
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, default=196)
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per throughput figure")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--accuracy-epochs", type=int, default=10)
    parser.add_argument("--parts", default="data,passes,bigcut,throughput,accuracy",
                        help="any of them; data, passes and bigcut share one generated set")
    parser.add_argument("--bigcut-memory-gb", type=float, default=4.0)
    parser.add_argument("--pass-rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.quick:
        args.classes, args.per_class, args.epochs, args.steps, args.seeds, args.accuracy_epochs = 8, 10, 3, 2, "1", 2
    parts = set(args.parts.split(","))
    root = Path(tempfile.mkdtemp(prefix="carviz-scale-bench-"))
    weights = "none"
    if (SHARED / "keras_home" / "models").is_dir():
        keras_home = root / "keras_home"
        shutil.copytree(SHARED / "keras_home", keras_home)  # Keras writes keras.json there: it must be writable
        for path in [keras_home, *keras_home.rglob("*")]:
            path.chmod(path.stat().st_mode | stat.S_IWUSR)
        os.environ["KERAS_HOME"] = str(keras_home)
        weights = "imagenet"
    os.environ.update(CARVIZ_SLOTS="1", TF_CPP_MIN_LOG_LEVEL="2")
    figures: dict[str, Any] = {"weights": weights, "epochs": args.epochs, "seeds": args.seeds,
                               "cpus": os.cpu_count()}
    try:
        if parts & {"data", "passes", "bigcut"}:
            started = time.perf_counter()
            dataset = generate(root / "data" / "scale", args.classes, args.per_class, 224)
            figures["dataset"] = f"{args.classes} classes x {args.per_class} images at 224 px"
            print(f"generated {figures['dataset']} in {time.perf_counter() - started:.0f} s; {os.cpu_count()} CPUs",
                  flush=True)
            if "data" in parts:
                figures["data"] = data_part(root, dataset, weights, args.epochs)
            if "passes" in parts:
                figures["passes"] = passes_part(root, dataset, weights, args.pass_rounds)
            if "bigcut" in parts:
                figures["bigcut"] = bigcut_part(root, dataset, weights, args.epochs, args.bigcut_memory_gb)
        if "throughput" in parts:
            figures["throughput"] = throughput_part(args.steps)
        cars = SHARED / "data" / ("cars-mini" if args.quick else "cars20")
        if "accuracy" in parts and cars.is_dir() and weights == "imagenet":
            figures["accuracy_dataset"] = str(cars)
            figures["accuracy"] = accuracy_part(root, cars, [int(s) for s in args.seeds.split(",")],
                                                args.accuracy_epochs)
        elif "accuracy" in parts:
            print(f"accuracy part skipped: needs {cars} and ImageNet weights under {SHARED}/keras_home")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
