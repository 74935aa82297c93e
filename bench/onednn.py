"""Benchmark: TensorFlow's oneDNN CPU kernels off vs on, for what carviz computes on a CPU.

carviz turns them on (carviz/ml/__init__.py sets TF_ENABLE_ONEDNN_OPTS=1 on x86 unless it is set): TensorFlow itself
turns them on only on CPUs with AVX-512 VNNI or BF16 or with AMX. Each measure runs in a fresh process with the switch
set to 0 and then to 1, on carviz's own models (random weights: only the time is measured):

- a cached sweep run's training step: the trainable remainder of MobileNet 1.0 at 224 px from freeze 62, 74 and 81
  (the recommended sweep's block starts; batch 64, the recommended preset's inference BatchNorm, one thread: as each
  of two warm workers trains);
- a training step on images through the whole model (an augmented or uncached run: MobileNet from freeze 62, batch
  32, two threads) and ResNet50 trained whole at 128 px (batch 16, two threads);
- the feature pass (the frozen part up to freeze 62, batch 32, two threads), images a second;
- one image's prediction through the whole model (carviz's compiled inference, two threads), median of 30.

    .venv/bin/python bench/onednn.py [--steps 5] [--only cached-62,predict]

Prints each measure both ways and the ratio off / on (above 1: oneDNN is faster), and whether TensorFlow's own
default on this CPU is on.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MEASURES = ("cached-62", "cached-74", "cached-81", "images-62", "resnet50", "feature-pass", "predict")


def child(measure: str, steps: int) -> dict[str, Any]:
    """One measure in this process (its oneDNN switch already set in the environment)."""
    import carviz.ml  # noqa: F401  (sets nothing here: the parent set the switch)
    import numpy as np
    import tensorflow as tf
    from tensorflow.python.util import _pywrap_util_port

    threads = 1 if measure.startswith("cached") else 2
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from carviz.core.config import RECOMMENDED
    from carviz.ml import features, model as model_lib, predict

    rng = np.random.default_rng(0)
    backbone = "resnet50" if measure == "resnet50" else "mobilenet"
    size, batch = (128, 16) if backbone == "resnet50" else (224, 64 if measure.startswith("cached") else 32)
    freeze = 1 if backbone == "resnet50" else int(measure.split("-")[1]) if measure[-1].isdigit() else 62
    config = RECOMMENDED.replace(dataset="bench", backbone=backbone, weights="none", image_size=size, freeze=freeze,
                                 batch_size=batch, precision="float32")
    model, _ = model_lib.build_model(config, 20)
    labels = np.eye(20, dtype=np.float32)[rng.integers(0, 20, batch)]
    images = rng.uniform(0, 255, (batch, size, size, 3)).astype(np.float32)

    def timed(step: Any, repeats: int) -> list[float]:
        step()
        step()  # trace, then warm
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            step()
            times.append(time.perf_counter() - started)
        return times

    if measure.startswith("cached"):
        position = features.cache_position(model, freeze)
        remainder = features.compiled_remainder(model, position, config)
        cut = rng.random((batch, *remainder.inputs[0].shape[1:]), dtype=np.float32)
        times = timed(lambda: remainder.train_on_batch(cut, labels), steps)
        value, unit = statistics.median(times), "s a step"
    elif measure in ("images-62", "resnet50"):
        times = timed(lambda: model.train_on_batch(images, labels), steps)
        value, unit = statistics.median(times), "s a step"
    elif measure == "feature-pass":
        extractor = features.frozen_extractor(model, features.cache_position(model, freeze))
        run = tf.function(lambda x: extractor(x, training=False))
        times = timed(lambda: run(images).numpy(), steps)
        value, unit = batch / statistics.median(times), "images/s"
    else:
        infer = predict.compiled_inference(model, size)
        times = timed(lambda: np.asarray(infer(images[:1])), 30)
        value, unit = statistics.median(times) * 1000, "ms"
    return {"measure": measure, "value": value, "unit": unit, "onednn": bool(_pywrap_util_port.IsMklEnabled())}


def run_child(measure: str, switch: str | None, steps: int) -> dict[str, Any]:
    env = {key: value for key, value in os.environ.items() if key != "TF_ENABLE_ONEDNN_OPTS"}
    if switch is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = switch
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, __file__, "--child", measure, "--steps", str(steps)], env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{measure} with TF_ENABLE_ONEDNN_OPTS={switch} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def tensorflow_default() -> bool:
    """Whether TensorFlow turns oneDNN on by itself on this CPU (the switch unset, carviz.ml not imported)."""
    env = {key: value for key, value in os.environ.items() if key != "TF_ENABLE_ONEDNN_OPTS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    code = "from tensorflow.python.util import _pywrap_util_port as p; print(p.IsMklEnabled())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    return out.strip().splitlines()[-1] == "True"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5, help="timed steps (or feature-pass batches) per measure")
    parser.add_argument("--only", default=",".join(MEASURES), help=f"comma-separated, of {', '.join(MEASURES)}")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.steps)))
        return

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU") if Path("/proc/cpuinfo").exists() else "unknown CPU"
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    print(f"CPU: {cpu}, {os.cpu_count()} cores; avx512f: {'avx512f' in flags}, avx512_bf16: {'avx512_bf16' in flags}")
    print(f"TensorFlow's own default on this CPU: oneDNN {'on' if tensorflow_default() else 'off'}\n")
    print(f"{'measure':<14}{'oneDNN off':>14}{'oneDNN on':>14}  unit        off/on")
    for measure in args.only.split(","):
        off, on = run_child(measure, "0", args.steps), run_child(measure, "1", args.steps)
        if off["onednn"] or not on["onednn"]:
            raise SystemExit(f"{measure}: the switch did not take ({off['onednn']}, {on['onednn']})")
        better = on["value"] / off["value"] if on["unit"] == "images/s" else off["value"] / on["value"]
        print(f"{measure:<14}{off['value']:>14.3f}{on['value']:>14.3f}  {on['unit']:<10}{better:>7.2f}x", flush=True)


if __name__ == "__main__":
    main()
