"""GPU memory policy for every process that is not a training job: grow on demand, never reserve a whole GPU.

By TensorFlow's default the first use of a GPU reserves nearly all of its memory (JAX's default reserves 75 %), so
a dashboard that lists layers or classifies one image would starve the training jobs beside it. The environment
switches below take effect when the framework initialises, so this must run before TensorFlow or JAX is imported.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

GROWTH_SETTINGS = {
    "TF_FORCE_GPU_ALLOW_GROWTH": "true",  # TensorFlow: allocate GPU memory as needed
    "XLA_PYTHON_CLIENT_PREALLOCATE": "false",  # JAX (Keras' jax backend): no up-front reservation
}


def share_gpu_memory(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Turn on memory growth for this process (values the user already set win); returns what is in force.

    If TensorFlow was imported already, its GPUs are switched to memory growth too while that is still possible.
    """
    env = os.environ if environ is None else environ
    for key, value in GROWTH_SETTINGS.items():
        env.setdefault(key, value)
    if environ is None and "tensorflow" in sys.modules:
        tf = sys.modules["tensorflow"]
        try:
            for gpu in tf.config.list_physical_devices("GPU"):
                tf.config.experimental.set_memory_growth(gpu, True)
        except (RuntimeError, AttributeError):
            pass  # already initialised: the environment switch above could not apply either
    return {key: env[key] for key in GROWTH_SETTINGS}
