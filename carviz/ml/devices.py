"""What a job runs on: memory growth on its GPUs, the device it sees, and the library versions, for run.json."""

from __future__ import annotations

import os
import platform
import socket
from typing import Any

from carviz import __version__
from carviz.core.gpu import share_gpu_memory


def configure_devices() -> dict[str, Any]:
    """Memory growth on every visible GPU (before TensorFlow initialises them); returns where this job runs."""
    share_gpu_memory()
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            pass
    names = []
    for gpu in gpus:
        try:
            names.append(tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name))
        except Exception:  # noqa: BLE001 - details are informational
            names.append(gpu.name)
    return {
        "kind": "gpu" if gpus else "cpu",
        "gpus": names,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "node": socket.gethostname(),
        "backend": os.environ.get("CARVIZ_JOB_BACKEND", "local"),
    }


def library_versions() -> dict[str, str]:
    import keras
    import numpy
    import tensorflow as tf

    return {
        "carviz": __version__,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": numpy.__version__,
    }
