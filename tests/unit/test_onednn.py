"""carviz turns TensorFlow's oneDNN CPU kernels on for x86 before TensorFlow loads; a value the user set wins."""

from __future__ import annotations

import os
import platform

import pytest

from carviz.ml import ONEDNN_SWITCH, turn_on_onednn


def test_the_switch_is_set_on_x86_only_and_a_value_already_set_wins() -> None:
    env: dict[str, str] = {}
    assert turn_on_onednn(env, "x86_64") == "1" and env == {ONEDNN_SWITCH: "1"}
    env = {ONEDNN_SWITCH: "0"}
    assert turn_on_onednn(env, "x86_64") == "0"
    env = {}
    assert turn_on_onednn(env, "aarch64") is None and env == {}


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="the switch is set on x86 only")
def test_tensorflow_in_this_process_runs_with_onednn_when_the_switch_is_on() -> None:
    # tests/conftest.py imports carviz.ml before any test module imports Keras, as carviz's own processes do.
    from tensorflow.python.util import _pywrap_util_port

    assert _pywrap_util_port.IsMklEnabled() == (os.environ.get(ONEDNN_SWITCH) == "1")
