"""Helpers for bench/gpu_check.py: JAX-free probes and formatting, and the check's bookkeeping and setup."""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

NUM_CLASSES = 8
# backbone -> (weights, freeze index, train_batchnorm, expected first trainable layer or None)
BACKBONE_SETUPS: dict[str, tuple[str, int, bool, str | None]] = {
    "mobilenet": ("imagenet", 47, False, "conv_pw_7"),  # the RECOMMENDED preset (seed's freeze point)
    "resnet50": ("none", 1, True, None),  # from scratch: train everything, BatchNorm on batch statistics
    "densenet121": ("none", 1, True, None),
}
VISIBILITY_CODE = (
    "import json, os, jax\n"
    "devs = jax.devices()\n"
    "print(json.dumps({'gpus': sum(d.platform == 'gpu' for d in devs), 'devices': [str(d) for d in devs],"
    " 'cuda_visible_devices': os.environ.get('CUDA_VISIBLE_DEVICES')}))\n"
)


# ---------------------------------------------------------------- helpers that need no JAX


def visibility_check(timeout: float = 120.0) -> list[dict[str, Any]]:
    """How many GPUs JAX sees in a fresh process with CUDA_VISIBLE_DEVICES=0 and with it empty."""
    results = []
    for value in ("0", ""):
        env = dict(os.environ, CUDA_VISIBLE_DEVICES=value)
        env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        start = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, "-c", VISIBILITY_CODE], env=env, capture_output=True,
                                  text=True, timeout=timeout)
            line = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
            info = json.loads(line) if line.startswith("{") else {"error": proc.stderr.strip()[-400:]}
            info["returncode"] = proc.returncode
        except (subprocess.TimeoutExpired, OSError) as exc:
            info = {"error": f"{type(exc).__name__}: {exc}"}
        info["CUDA_VISIBLE_DEVICES"] = value
        info["seconds"] = round(time.perf_counter() - start, 2)
        results.append(info)
    return results


def nvidia_smi() -> dict[str, Any]:
    """memory.used / memory.total of every GPU and the compute processes, from nvidia-smi (MiB)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return {"error": "nvidia-smi not found"}
    out: dict[str, Any] = {}
    try:
        gpu = subprocess.run([exe, "--query-gpu=index,name,memory.used,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=30)
        out["gpus"] = [dict(zip(("index", "name", "memory_used_mib", "memory_total_mib"),
                                [c.strip() for c in line.split(",")])) for line in gpu.stdout.strip().splitlines()]
        apps = subprocess.run([exe, "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, timeout=30)
        out["compute_apps"] = [dict(zip(("pid", "used_memory_mib"), [c.strip() for c in line.split(",")]))
                               for line in apps.stdout.strip().splitlines() if line.strip()]
        if gpu.returncode:
            out["error"] = gpu.stderr.strip()[-300:]
    except (OSError, subprocess.TimeoutExpired) as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


def smi_used_mib(smi: dict[str, Any]) -> str:
    gpus = smi.get("gpus") or []
    if not gpus:
        return "n/a"
    return f"{gpus[0].get('memory_used_mib')} / {gpus[0].get('memory_total_mib')} MiB"


def synthetic_pool(n_images: int, size: int, seed: int = 0) -> tuple[Any, Any]:
    """Images 0..255 (float32, NHWC) of dim noise with one bright square; the class is the square's cell."""
    import numpy as np

    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n_images) % NUM_CLASSES)
    x = rng.uniform(0.0, 80.0, size=(n_images, size, size, 3)).astype("float32")
    cells = [(r, c) for r in range(3) for c in range(3) if (r, c) != (1, 1)]
    cell, side = size // 3, max(2, size // 5)
    for i, label in enumerate(labels):
        r, c = cells[label]
        top = r * cell + (cell - side) // 2
        left = c * cell + (cell - side) // 2
        x[i, top:top + side, left:left + side, :] = rng.uniform(200.0, 255.0, size=3).astype("float32")
    y = np.eye(NUM_CLASSES, dtype="float32")[labels]
    return x, y


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fmt(value: Any, spec: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return format(value, spec) if spec else str(value)


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))


# ---------------------------------------------------------------- the check: bookkeeping and setup


class CheckBase:
    """The report, failures and timing; environment/device setup, memory probes, data and configs."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.start = time.perf_counter()
        self.failures: list[str] = []
        self.report: dict[str, Any] = {"args": {k: (v if not isinstance(v, float) or math.isfinite(v) else None)
                                                 for k, v in vars(args).items()},
                                       "failures": self.failures, "runs": []}

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def fail(self, message: str) -> None:
        print(f"CHECK FAILED: {message}")
        self.failures.append(message)

    def save(self) -> None:
        self.report["elapsed_s"] = round(self.elapsed(), 2)
        if self.args.json:
            Path(self.args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(self.args.json).write_text(json.dumps(self.report, indent=2, default=str), encoding="utf-8")

    # -------------------------------------------------------- steps

    def setup(self) -> None:
        os.environ["KERAS_BACKEND"] = "jax"
        from carviz.core.gpu import share_gpu_memory

        growth = share_gpu_memory()  # before jax or keras is imported
        self.report["memory_policy"] = growth
        self.report["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")
        print(f"memory policy: {growth}; CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}")

        print("visibility check (subprocesses) ...")
        vis = visibility_check()
        self.report["visibility"] = vis
        self.save()

        import jax

        t0 = time.perf_counter()
        devices = jax.devices()
        self.jax_init_s = time.perf_counter() - t0
        self.gpus = [d for d in devices if d.platform == "gpu"]
        self.device = devices[0]
        import keras

        self.report["versions"] = {"python": sys.version.split()[0], "jax": jax.__version__,
                                   "jaxlib": getattr(__import__("jaxlib"), "__version__", "?"),
                                   "keras": keras.__version__, "keras_backend": keras.backend.backend()}
        self.report["devices"] = [str(d) for d in devices]
        self.report["device_kind"] = getattr(self.device, "device_kind", None)
        self.report["jax_init_s"] = round(self.jax_init_s, 2)
        self.report["tensorflow_imported"] = "tensorflow" in sys.modules
        print(f"jax {jax.__version__}, keras {keras.__version__} (backend {keras.backend.backend()})")
        print(f"jax.devices(): {devices}  (kind: {self.report['device_kind']}, init {self.jax_init_s:.1f} s)")
        if keras.backend.backend() != "jax":
            self.fail(f"keras runs on backend {keras.backend.backend()!r}, not jax (keras imported earlier?)")
        if self.args.require_gpu and not self.gpus:
            self.fail("--require-gpu: JAX sees no GPU")
        self.report["memory_at_start"] = {"device": self.memory(), "nvidia_smi": nvidia_smi()}
        print(f"memory before any model: {self.memory_text()}; nvidia-smi {smi_used_mib(self.report['memory_at_start']['nvidia_smi'])}")

        expect = {"0": 1, "": 0} if self.gpus else None
        for info in vis:
            print(f"  CUDA_VISIBLE_DEVICES={info['CUDA_VISIBLE_DEVICES']!r:5} -> GPUs seen by JAX: "
                  f"{info.get('gpus', 'error')}  devices {info.get('devices', info.get('error'))}  "
                  f"({info['seconds']} s)")
            if expect is not None and len(self.gpus) == 1 and info.get("gpus") != expect[info["CUDA_VISIBLE_DEVICES"]]:
                self.fail(f"CUDA_VISIBLE_DEVICES={info['CUDA_VISIBLE_DEVICES']!r}: JAX saw {info.get('gpus')} GPU(s), "
                          f"expected {expect[info['CUDA_VISIBLE_DEVICES']]}")
        self.save()

    def memory(self) -> dict[str, Any] | None:
        try:
            stats = self.device.memory_stats()
        except Exception as exc:  # noqa: BLE001 - CPU backends may not implement it
            return {"error": f"{type(exc).__name__}: {exc}"}
        if not stats:
            return None
        keys = ("bytes_in_use", "peak_bytes_in_use", "bytes_limit", "bytes_reserved", "largest_alloc_size")
        return {k: int(stats[k]) for k in keys if k in stats}

    def memory_text(self) -> str:
        m = self.memory()
        if not m or "bytes_in_use" not in m:
            return "device memory_stats() n/a"
        gib = 1 << 30
        return (f"in use {m['bytes_in_use'] / gib:.2f} GiB, peak {m.get('peak_bytes_in_use', 0) / gib:.2f} GiB, "
                f"limit {m.get('bytes_limit', 0) / gib:.1f} GiB")

    def make_data(self) -> None:
        import jax

        t0 = time.perf_counter()
        n_batches = 4
        x, y = synthetic_pool(n_batches * self.args.batch_size, self.args.image_size)
        b = self.args.batch_size
        self.batches = [(jax.device_put(x[i * b:(i + 1) * b]), jax.device_put(y[i * b:(i + 1) * b]))
                        for i in range(n_batches)]
        self.report["data"] = {"images": int(x.shape[0]), "image_size": self.args.image_size, "batch_size": b,
                               "classes": NUM_CLASSES, "bytes_on_device": int(x.nbytes + y.nbytes),
                               "seconds": round(time.perf_counter() - t0, 2)}
        print(f"synthetic data: {x.shape[0]} images {x.shape[1:]} in {n_batches} device batches of {b} "
              f"({(x.nbytes + y.nbytes) / 2**20:.0f} MiB)")

    def batches_forever(self):
        while True:
            yield from self.batches

    def config_for(self, backbone: str, precision: str):
        from carviz.core.config import RECOMMENDED

        weights, freeze, train_bn, _ = BACKBONE_SETUPS[backbone]
        return RECOMMENDED.replace(name=f"gpu check {backbone} {precision}", backbone=backbone, weights=weights,
                                   freeze=freeze, train_batchnorm=train_bn, precision=precision,
                                   image_size=self.args.image_size, batch_size=self.args.batch_size,
                                   jit_compile=True)

    def dtypes(self, model) -> dict[str, Any]:
        import keras

        backbone = model.get_layer("backbone")
        conv = next(layer for layer in backbone.layers if isinstance(layer, keras.layers.Conv2D))
        head = model.get_layer("predictions")
        return {"conv_layer": conv.name, "conv_compute_dtype": conv.compute_dtype,
                "conv_variable_dtype": conv.variable_dtype, "predictions_compute_dtype": head.compute_dtype,
                "output_dtype": str(model.outputs[0].dtype)}
