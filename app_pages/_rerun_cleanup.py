"""Streamlit's end-of-run cleanup without its full garbage collection.

After every script run and every fragment run (the jobs area refreshes itself every few seconds), Streamlit calls
keras.backend.clear_session(), which ends with gc.collect(): once TensorFlow is loaded in the dashboard's process
that collection took 0.19 s of CPU each time (measured, 380,000 live objects), stolen from the jobs training beside
it. The replacement clears the same Keras state (layer-name counters, TensorFlow's graph and kernel cache) and
closes Matplotlib figures as Streamlit does, and leaves the collection to Python's own collector.
"""

from __future__ import annotations

import sys
from typing import Callable

_HOOK = "_clean_problem_modules"  # streamlit.runtime.scriptrunner.script_runner's cleanup, called after each run
streamlits_cleanup: Callable[[], None] | None = None  # the hook install() replaced (None before it ran)


def clean_problem_modules_without_full_collection() -> None:
    """What Streamlit's cleanup does, with clear_session(free_memory=False)."""
    keras = sys.modules.get("keras")
    if keras is not None:
        try:
            keras.backend.clear_session(free_memory=False)
        except Exception:  # noqa: BLE001 - as Streamlit's: a cleanup must never stop the app
            pass
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        try:
            pyplot.close("all")
        except Exception:  # noqa: BLE001
            pass


def install() -> bool:
    """Put the lighter cleanup in Streamlit's place (idempotent); False when this Streamlit has no such hook."""
    from streamlit.runtime.scriptrunner import script_runner

    global streamlits_cleanup
    current = getattr(script_runner, _HOOK, None)
    if not callable(current):
        return False
    if current is not clean_problem_modules_without_full_collection:
        streamlits_cleanup = current
        setattr(script_runner, _HOOK, clean_problem_modules_without_full_collection)
    return True
