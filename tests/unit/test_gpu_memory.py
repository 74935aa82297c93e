"""Processes that are not training jobs never reserve a whole GPU: memory growth is on before TensorFlow loads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from carviz.core.gpu import GROWTH_SETTINGS, share_gpu_memory

ROOT = Path(__file__).resolve().parents[2]


def test_share_gpu_memory_sets_growth_and_respects_the_user() -> None:
    env: dict[str, str] = {}
    assert share_gpu_memory(env) == {"TF_FORCE_GPU_ALLOW_GROWTH": "true", "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    assert env == GROWTH_SETTINGS
    mine = {"TF_FORCE_GPU_ALLOW_GROWTH": "false"}
    share_gpu_memory(mine)
    assert mine["TF_FORCE_GPU_ALLOW_GROWTH"] == "false"  # a user's own choice wins


def test_the_cli_turns_growth_on_before_tensorflow_initialises() -> None:
    # The CLI lists layers (that loads TensorFlow) with a clean environment; TensorFlow reads the switch when it
    # initialises its GPUs, so it must already be set when tensorflow is first imported.
    code = (
        "import builtins, os, sys\n"
        "seen = {}\n"
        "real_import = builtins.__import__\n"
        "def spy(name, *args, **kwargs):\n"
        "    if name.split('.')[0] == 'tensorflow' and 'at_tf' not in seen:\n"
        "        seen['at_tf'] = os.environ.get('TF_FORCE_GPU_ALLOW_GROWTH')\n"
        "    return real_import(name, *args, **kwargs)\n"
        "builtins.__import__ = spy\n"
        "from carviz.cli import main\n"
        "assert main(['layers', 'small_cnn', '--size', '32']) == 0\n"
        "print('growth-at-tf-import', seen.get('at_tf'))\n"
    )
    env = {key: value for key, value in __import__("os").environ.items() if key not in GROWTH_SETTINGS}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert "growth-at-tf-import true" in result.stdout
