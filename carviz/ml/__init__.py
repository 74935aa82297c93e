"""Machine learning: the only modules that import TensorFlow/Keras (each lazily, where it can).

Importing this package, which happens before any of its modules loads TensorFlow, turns TensorFlow's oneDNN CPU
kernels on for x86 CPUs (a value already in the environment wins). TensorFlow enables them by default only on CPUs
with AVX-512 VNNI or BF16 or with AMX; on an AVX2 CPU without them (AMD EPYC Zen 3) they trained MobileNet's
fine-tuned blocks about twice as fast (bench/onednn.py, docs/benchmarks.md).
"""

import os
import platform
from collections.abc import MutableMapping

ONEDNN_SWITCH = "TF_ENABLE_ONEDNN_OPTS"  # read once, when TensorFlow loads


def turn_on_onednn(environ: MutableMapping[str, str] = os.environ, machine: str = "") -> str | None:
    """Set ONEDNN_SWITCH to "1" on x86 unless it is set already; what it is now (None: left unset)."""
    if (machine or platform.machine()).lower() in ("x86_64", "amd64", "i686", "x86"):
        environ.setdefault(ONEDNN_SWITCH, "1")
    return environ.get(ONEDNN_SWITCH)


turn_on_onednn()
