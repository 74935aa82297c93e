"""GPU check: carviz's classifier (carviz.ml.model / carviz.ml.backbones) trained on Keras' JAX backend on a GPU.

What it checks, in order (every figure also goes to a JSON file):

1. Visibility (one GPU per job): two tiny subprocesses import JAX with CUDA_VISIBLE_DEVICES=0 and with
   CUDA_VISIBLE_DEVICES="" and report how many GPU devices each sees (expected 1 and 0 on a one-GPU machine).
2. Memory policy and devices: carviz.core.gpu.share_gpu_memory() runs before JAX/Keras are imported (it sets
   XLA_PYTHON_CLIENT_PREALLOCATE=false); jax.devices() and CUDA_VISIBLE_DEVICES are recorded; --require-gpu fails
   the check when JAX sees no GPU.
3. Precision and weights: resolve_precision("auto", on_gpu=True) is mixed_float16; build_model(RECOMMENDED, 8,
   on_gpu=True) builds MobileNet with its ImageNet weights read offline from $KERAS_HOME/models, and its backbone
   weights equal those of keras.applications.MobileNet(weights="imagenet") and differ from a random init; a
   backbone conv layer computes in float16 and the 'predictions' output is float32 (also on a real forward pass).
4. Training throughput: for MobileNet (ImageNet, freeze 47 = conv_pw_7, the RECOMMENDED preset), ResNet50 and
   DenseNet121 (weights none, freeze 1 = train all) at float32, mixed_float16 and mixed_bfloat16, model.fit on
   a synthetic, learnable 8-class task (class k: a bright square in cell k of a 3x3 grid, fixed numpy RNG; the
   batches stay on the device, so the input pipeline is not measured). The first fit step (trace + XLA compile)
   is timed on its own, then --warmup steps, then --steps timed steps give images/s. Every step's loss must be
   finite, and for MobileNet at mixed_float16 the loss of the last steps must be below that of the first ones.
   The models are compiled with jit_compile=True: carviz's TrainConfig default (False) would run the JAX
   backend's train step op by op, without jax.jit.
5. GPU memory: the device's memory_stats() (bytes_in_use, peak_bytes_in_use) after each run and nvidia-smi's
   memory.used, against the card's total, to show that memory grows on demand and was not preallocated.

A time budget (--budget-s) skips the later (backbone, precision) runs whose predicted cost (from the compile and
step times measured so far) would overrun it; the mixed_float16 runs go first. Only backend-neutral carviz code
is used: carviz.ml.devices, carviz.ml.train and carviz.data.datasets import TensorFlow and are not touched.

Run it locally on CPU (tiny sizes) with a throwaway JAX install, e.g. `pip install --target /tmp/jaxsite jax jaxlib`:

    cp -r ../shared/keras_home /tmp/keras_home && chmod -R u+w /tmp/keras_home
    PYTHONPATH=/tmp/jaxsite KERAS_BACKEND=jax KERAS_HOME=/tmp/keras_home .venv/bin/python bench/gpu_check.py --quick

(the script sets KERAS_BACKEND=jax itself; keras must not have been imported with another backend). On the
device machine (JAX with CUDA there; keras, namex and optree carried as wheels in .whl, the MobileNet weights in
.gpu_keras_home, both named in `carry`):

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl && export PYTHONPATH=/tmp/site || exit; cp -r .gpu_keras_home /tmp/keras_home && \
        export KERAS_HOME=/tmp/keras_home KERAS_BACKEND=jax PYTHONUNBUFFERED=1 && \
        python3 bench/gpu_check.py --require-gpu 2>&1 | tee $OUT/gpu_check.log

Options: --steps N (timed steps per run), --warmup N, --quick (64 px, batch 8, 3 steps: a smoke test),
--json PATH (default $OUT/gpu_check.json when OUT is set, else no file), --require-gpu, --budget-s S.
Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpu_check_parts import (  # noqa: E402 - bench/ (the script's folder) is on sys.path
    BACKBONE_SETUPS, NUM_CLASSES, CheckBase, fmt, nvidia_smi, print_table, sha256, smi_used_mib,
)

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=None, help="timed training steps per run (default 30; quick 3)")
    parser.add_argument("--warmup", type=int, default=None, help="steps after the compile step, not timed (2; quick 1)")
    parser.add_argument("--json", default=None, help="where to write the figures (default $OUT/gpu_check.json)")
    parser.add_argument("--require-gpu", action="store_true", help="fail unless JAX sees a GPU")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (64 px, batch 8): a CPU smoke test")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="skip runs predicted to end after this many seconds (default 210; quick: no limit)")
    parser.add_argument("--backbones", default="mobilenet,resnet50,densenet121")
    parser.add_argument("--precisions", default=",".join(PRECISIONS))
    args = parser.parse_args(argv)
    args.image_size = 64 if args.quick else 224
    args.batch_size = 8 if args.quick else 64
    if args.steps is None:
        args.steps = 3 if args.quick else 30
    if args.warmup is None:
        args.warmup = 1 if args.quick else 2
    if args.budget_s is None:
        args.budget_s = math.inf if args.quick else 210.0
    if args.json is None and os.environ.get("OUT"):
        args.json = str(Path(os.environ["OUT"]) / "gpu_check.json")
    args.backbones = [b.strip() for b in args.backbones.split(",") if b.strip()]
    args.precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    for b in args.backbones:
        if b not in BACKBONE_SETUPS:
            parser.error(f"--backbones: choose from {', '.join(BACKBONE_SETUPS)}; got {b!r}")
    for p in args.precisions:
        if p not in PRECISIONS:
            parser.error(f"--precisions: choose from {', '.join(PRECISIONS)}; got {p!r}")
    return args


# ---------------------------------------------------------------- the check


class Check(CheckBase):
    # -------------------------------------------------------- steps

    def precision_and_weights(self) -> tuple[Any, Any, float]:
        """resolve_precision("auto"), MobileNet ImageNet weights vs Keras' own and a random init, output dtype."""
        import keras
        import numpy as np

        from carviz.ml import backbones
        from carviz.ml.model import build_model, resolve_precision

        auto = resolve_precision("auto", on_gpu=True)
        self.report["resolve_precision_auto_on_gpu"] = auto
        print(f"resolve_precision('auto', on_gpu=True) = {auto}")
        if auto != "mixed_float16":
            self.fail(f"resolve_precision('auto', on_gpu=True) gave {auto}, expected mixed_float16")

        size = self.args.image_size
        target = backbones.expected_weights_file("mobilenet", size, 1.0)
        info: dict[str, Any] = {"expected_file": str(target), "exists": target.is_file(),
                                "keras_home": os.environ.get("KERAS_HOME")}
        if target.is_file():
            info["sha256"] = sha256(target)
            info["bytes"] = target.stat().st_size
        print(f"MobileNet weights file: {target} (exists: {target.is_file()})")

        config = self.config_for("mobilenet", "auto")
        t0 = time.perf_counter()
        model, summary = build_model(config, NUM_CLASSES, on_gpu=True)
        build_s = time.perf_counter() - t0
        info["summary"] = summary.__dict__
        if summary.precision != "mixed_float16":
            self.fail(f"build_model(precision='auto', on_gpu=True) used {summary.precision}")

        backbone = model.get_layer("backbone")
        ours = [np.asarray(v.numpy()) for v in backbone.weights]
        ref_imagenet = keras.applications.MobileNet(weights="imagenet", include_top=False, input_shape=(size, size, 3))
        ref_random = keras.applications.MobileNet(weights=None, include_top=False, input_shape=(size, size, 3))
        imagenet = [np.asarray(v.numpy()) for v in ref_imagenet.weights]
        random = [np.asarray(v.numpy()) for v in ref_random.weights]
        same_shapes = [a.shape for a in ours] == [a.shape for a in imagenet] == [a.shape for a in random]
        info["weight_tensors"] = len(ours)
        info["same_layout_as_keras"] = same_shapes
        if same_shapes:
            info["max_abs_diff_vs_keras_imagenet"] = float(max(np.max(np.abs(a - b)) for a, b in zip(ours, imagenet)))
            conv = [i for i, v in enumerate(backbone.weights) if v.path.endswith("kernel")]
            info["kernels_equal_to_random_init"] = int(sum(np.array_equal(ours[i], random[i]) for i in conv))
            info["kernels"] = len(conv)
            k = conv[0]
            info["conv1_kernel"] = {"path": backbone.weights[k].path, "mean_abs_ours": float(np.mean(np.abs(ours[k]))),
                                    "mean_abs_random_init": float(np.mean(np.abs(random[k]))),
                                    "max_abs_diff_vs_random": float(np.max(np.abs(ours[k] - random[k])))}
            if info["max_abs_diff_vs_keras_imagenet"] != 0.0:
                self.fail("carviz's MobileNet backbone weights differ from keras.applications.MobileNet(imagenet)")
            if info["kernels_equal_to_random_init"]:
                self.fail(f"{info['kernels_equal_to_random_init']} MobileNet kernels equal a random init")
            if np.array_equal(ours[k], random[k]):
                self.fail("MobileNet conv1 kernel is the random init")
        else:
            self.fail("carviz's MobileNet backbone has another weight layout than keras.applications.MobileNet")
        del ref_imagenet, ref_random, imagenet, random, ours

        # A real forward pass under the mixed policy: the classifier's output must come out float32.
        t0 = time.perf_counter()
        x0 = self.batches[0][0]
        probs = model.predict_on_batch(x0)
        info["predict_on_batch_s"] = round(time.perf_counter() - t0, 2)
        info["predict_output_dtype"] = str(probs.dtype)
        info["predict_rows_sum_to_1"] = bool(np.allclose(np.asarray(probs, dtype="float64").sum(axis=1), 1.0, atol=1e-3))
        if str(probs.dtype) != "float32":
            self.fail(f"predictions came out {probs.dtype}, expected float32")
        self.report["mobilenet_imagenet"] = info
        print(f"  backbone weights vs keras MobileNet(imagenet): max |diff| {info.get('max_abs_diff_vs_keras_imagenet')}; "
              f"kernels equal to a random init: {info.get('kernels_equal_to_random_init')} of {info.get('kernels')}; "
              f"conv1 mean|w| ours {info.get('conv1_kernel', {}).get('mean_abs_ours', float('nan')):.4f} vs random "
              f"{info.get('conv1_kernel', {}).get('mean_abs_random_init', float('nan')):.4f}")
        print(f"  predict_on_batch output dtype {probs.dtype} (first forward incl. compile {info['predict_on_batch_s']} s)")
        self.save()
        return model, summary, build_s

    def train(self, backbone: str, precision: str, built: tuple[Any, Any, float] | None = None) -> dict[str, Any]:
        import keras

        from carviz.ml.model import build_model

        row: dict[str, Any] = {"backbone": backbone, "precision": precision, "status": "ok"}
        config = self.config_for(backbone, precision)
        row["weights"], row["freeze"], row["train_batchnorm"] = config.weights, config.freeze, config.train_batchnorm
        if built is None:
            t0 = time.perf_counter()
            model, summary = build_model(config, NUM_CLASSES, on_gpu=True)
            build_s = time.perf_counter() - t0
        else:
            model, summary, build_s = built
        row["build_s"] = round(build_s, 2)
        row["summary"] = summary.__dict__
        row["dtypes"] = self.dtypes(model)
        expected_first = BACKBONE_SETUPS[backbone][3]
        if expected_first and summary.first_trainable != expected_first:
            self.fail(f"{backbone}: first trainable layer {summary.first_trainable}, expected {expected_first}")
        want_compute = {"float32": "float32", "mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}[precision]
        if row["dtypes"]["conv_compute_dtype"] != want_compute or row["dtypes"]["conv_variable_dtype"] != "float32":
            self.fail(f"{backbone} {precision}: conv computes in {row['dtypes']['conv_compute_dtype']} "
                      f"(variables {row['dtypes']['conv_variable_dtype']})")
        if row["dtypes"]["predictions_compute_dtype"] != "float32" or row["dtypes"]["output_dtype"] != "float32":
            self.fail(f"{backbone} {precision}: predictions not float32 ({row['dtypes']})")

        records: list[tuple[int, int, float]] = []

        class StepLoss(keras.callbacks.Callback):
            async_safe = True  # lets Keras dispatch steps without waiting for this callback

            def __init__(self, offset: int) -> None:
                super().__init__()
                self.offset = offset

            def on_train_batch_end(self, batch, logs=None):
                records.append((self.offset, batch, float((logs or {}).get("loss", float("nan")))))

        def fit(steps: int, offset: int) -> float:
            t0 = time.perf_counter()
            model.fit(self.batches_forever(), steps_per_epoch=steps, epochs=1, verbose=0,
                      callbacks=[StepLoss(offset)])
            return time.perf_counter() - t0

        b = self.args.batch_size
        row["compile_s"] = round(fit(1, 0), 2)  # trace + XLA compile + the first step
        row["warmup_s"] = round(fit(self.args.warmup, 1), 3)
        timed = fit(self.args.steps, 1 + self.args.warmup)
        row["timed_steps"] = self.args.steps
        row["timed_s"] = round(timed, 3)
        row["step_ms"] = round(1000 * timed / self.args.steps, 2)
        row["images_per_s"] = round(self.args.steps * b / timed, 1)

        # Keras logs the running mean of the loss within a fit call: recover each step's own loss.
        losses: list[float] = []
        by_call: dict[int, list[tuple[int, float]]] = {}
        for offset, batch, mean in records:
            by_call.setdefault(offset, []).append((batch, mean))
        for offset in sorted(by_call):
            previous = 0.0
            for batch, mean in sorted(by_call[offset]):
                losses.append((batch + 1) * mean - batch * previous)
                previous = mean
        row["losses"] = [round(v, 5) for v in losses]
        k = min(5, max(1, len(losses) // 3))
        row["loss_first"] = sum(losses[:k]) / k if losses else None
        row["loss_last"] = sum(losses[-k:]) / k if losses else None
        row["loss_window"] = k
        row["loss_finite"] = bool(losses) and all(math.isfinite(v) for v in losses)
        row["loss_decreased"] = bool(losses) and row["loss_last"] < row["loss_first"]
        if not row["loss_finite"]:
            self.fail(f"{backbone} {precision}: a loss was not finite: {row['losses']}")
        if backbone == "mobilenet" and precision == "mixed_float16" and not self.args.quick and not row["loss_decreased"]:
            self.fail(f"mobilenet mixed_float16: loss did not decrease ({row['loss_first']:.4f} -> {row['loss_last']:.4f})")
        row["memory_after"] = self.memory()
        row["nvidia_smi_after"] = nvidia_smi()
        del model
        keras.backend.clear_session()
        gc.collect()
        return row

    def run_matrix(self, mobilenet_built: tuple[Any, Any, float] | None) -> None:
        order = [(b, "mixed_float16") for b in self.args.backbones if "mixed_float16" in self.args.precisions]
        order += [(b, p) for b in self.args.backbones for p in self.args.precisions if p != "mixed_float16"]
        seen: dict[str, dict[str, Any]] = {}
        for backbone, precision in order:
            built = None
            if (backbone, precision) == ("mobilenet", "mixed_float16"):  # the "auto" model of the weights check
                built, mobilenet_built = mobilenet_built, None
            prior = seen.get(backbone)
            if prior is not None:
                factor = 2.5 if precision == "float32" else 1.3
                predicted = (1.3 * prior["compile_s"] + prior["build_s"] + prior["warmup_s"]
                             + factor * prior["timed_s"] + 2)
            else:
                predicted = 60.0  # unknown: run it if a minute is left
            if self.elapsed() + predicted > self.args.budget_s:
                print(f"-- {backbone} {precision}: skipped (predicted {predicted:.0f} s, "
                      f"{self.args.budget_s - self.elapsed():.0f} s of the budget left)")
                self.report["runs"].append({"backbone": backbone, "precision": precision,
                                            "status": f"skipped: time budget (predicted {predicted:.0f} s)"})
                continue
            print(f"-- {backbone} {precision} ...", flush=True)
            try:
                row = self.train(backbone, precision, built)
            except Exception as exc:  # noqa: BLE001 - record and go on with the next run
                import traceback

                traceback.print_exc()
                row = {"backbone": backbone, "precision": precision, "status": f"error: {type(exc).__name__}: {exc}"}
                self.fail(f"{backbone} {precision}: {type(exc).__name__}: {exc}")
            built = None
            self.report["runs"].append(row)
            if row.get("status") == "ok":
                seen.setdefault(backbone, row)
                print(f"   build {row['build_s']} s, compile+1st step {row['compile_s']} s, "
                      f"{row['images_per_s']} images/s ({row['step_ms']} ms/step), loss "
                      f"{fmt(row['loss_first'], '.4f')} -> {fmt(row['loss_last'], '.4f')}, {self.memory_text()}")
            self.save()

    def summarize(self) -> None:
        import keras

        keras.mixed_precision.set_global_policy("float32")
        mem_end = self.memory()
        smi_end = nvidia_smi()
        self.report["memory_at_end"] = {"device": mem_end, "nvidia_smi": smi_end}
        gib = 1 << 30

        print("\n=== training throughput (model.fit, device-resident synthetic batches, jit_compile=True) ===")
        headers = ["backbone", "precision", "weights", "freeze", "trainable", "build s", "compile s", "img/s",
                   "ms/step", "loss first→last", "finite", "decr.", "conv dtype", "output", "in use GiB", "status"]
        rows = []
        for r in self.report["runs"]:
            if r.get("status") != "ok":
                rows.append([r["backbone"], r["precision"]] + ["-"] * 13 + [r.get("status", "?")])
                continue
            m = r.get("memory_after") or {}
            rows.append([
                r["backbone"], r["precision"], r["weights"], str(r["freeze"]),
                f"{r['summary']['trainable_params']:,}", fmt(r["build_s"]), fmt(r["compile_s"]),
                fmt(r["images_per_s"], ".1f"), fmt(r["step_ms"], ".1f"),
                f"{fmt(r['loss_first'], '.4f')}→{fmt(r['loss_last'], '.4f')} (w{r['loss_window']})",
                "yes" if r["loss_finite"] else "NO", "yes" if r["loss_decreased"] else "no",
                r["dtypes"]["conv_compute_dtype"], r["dtypes"]["output_dtype"],
                f"{m['bytes_in_use'] / gib:.2f}" if "bytes_in_use" in m else "-", "ok",
            ])
        print_table(headers, rows)

        print("\n=== GPU memory ===")
        start = self.report["memory_at_start"]
        print(f"policy: {self.report['memory_policy']}")
        print(f"device memory_stats at start: {start['device']}")
        print(f"device memory_stats at end:   {mem_end}")
        if mem_end and "peak_bytes_in_use" in mem_end:
            print(f"peak bytes in use: {mem_end['peak_bytes_in_use'] / gib:.2f} GiB"
                  + (f" of a {mem_end['bytes_limit'] / gib:.1f} GiB limit" if "bytes_limit" in mem_end else ""))
        print(f"nvidia-smi memory.used at start: {smi_used_mib(start['nvidia_smi'])}; at end: {smi_used_mib(smi_end)}")
        if smi_end.get("compute_apps"):
            print(f"nvidia-smi compute apps: {smi_end['compute_apps']}")
        gpus = smi_end.get("gpus") or []
        if self.gpus and gpus:
            try:
                used, total = float(gpus[0]["memory_used_mib"]), float(gpus[0]["memory_total_mib"])
                self.report["nvidia_smi_used_fraction_end"] = round(used / total, 4)
                print(f"nvidia-smi: {100 * used / total:.1f} % of the card in use at the end")
                if used / total > 0.5:
                    self.fail(f"nvidia-smi shows {used:.0f} of {total:.0f} MiB used: memory looks preallocated")
            except (KeyError, ValueError):
                pass

        print("\n=== one GPU per job (subprocesses) ===")
        for info in self.report["visibility"]:
            print(f"CUDA_VISIBLE_DEVICES={info['CUDA_VISIBLE_DEVICES']!r}: JAX sees {info.get('gpus', 'error')} GPU(s)"
                  f" {info.get('devices', info.get('error'))}")
        print(f"\nthis process: CUDA_VISIBLE_DEVICES={self.report['cuda_visible_devices']!r}, "
              f"devices {self.report['devices']}, tensorflow imported: {self.report['tensorflow_imported']}")
        print(f"elapsed {self.elapsed():.1f} s")
        if self.failures:
            print(f"\n{len(self.failures)} check(s) FAILED:")
            for message in self.failures:
                print(f"  - {message}")
        else:
            print("\nall checks passed")
        self.save()
        if self.args.json:
            print(f"figures written to {self.args.json}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check = Check(args)
    check.setup()
    if args.require_gpu and not check.gpus:
        check.save()
        print("no GPU: stopping (--require-gpu)")
        return 1
    check.make_data()
    built = None
    if "mobilenet" in args.backbones:
        try:
            built = check.precision_and_weights()
        except Exception as exc:  # noqa: BLE001
            import traceback

            traceback.print_exc()
            check.fail(f"mobilenet ImageNet build/weights check: {type(exc).__name__}: {exc}")
        if built is not None and "mixed_float16" not in args.precisions:
            built = None
    check.run_matrix(built)
    check.summarize()
    return 1 if check.failures else 0


if __name__ == "__main__":
    sys.exit(main())
