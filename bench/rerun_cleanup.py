"""Benchmark: what Streamlit's end-of-run cleanup costs the dashboard's process, against carviz's replacement.

After every script run and fragment run Streamlit calls keras.backend.clear_session(), which ends in a full
gc.collect(); app_pages/_rerun_cleanup.py clears the same Keras state without that collection. Measured here in one
process set up as the dashboard's is once a page has used Keras (TensorFlow, Keras, Streamlit, Plotly and pandas
imported, a MobileNet built and run once, as the Layers and Predict pages do), and then for an AppTest rerun of the
Compare page with a few runs (the whole run, cleanup included) under each cleanup.

    .venv/bin/python bench/rerun_cleanup.py [--repeats 20]

Prints milliseconds per call (median) for each, and for the page rerun the ratio Streamlit's / carviz's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def median_ms(call: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="carviz-bench-cleanup-"))
    os.environ["CARVIZ_HOME"] = str(home)
    import gc

    import numpy as np
    import pandas  # noqa: F401
    import plotly.graph_objects  # noqa: F401
    from streamlit.runtime.scriptrunner import script_runner
    from streamlit.testing.v1 import AppTest

    import carviz.ml  # noqa: F401
    from app_pages import _rerun_cleanup
    from carviz.core import store
    from carviz.core.config import TrainConfig
    from carviz.ml.model import build_model

    model, _ = build_model(TrainConfig(backbone="mobilenet", weights="none", image_size=224), 33)
    model.predict(np.zeros((1, 224, 224, 3), "float32"), verbose=0)
    for number in range(5):
        run = store.create_run(TrainConfig(name=f"run {number}", learning_rate=10.0 ** -(number + 1)))
        run.write_status(store.Status.SUCCEEDED)
    streamlits = script_runner._clean_problem_modules
    print(f"live objects: {len(gc.get_objects()):,}")

    own = median_ms(streamlits, args.repeats)
    ours = median_ms(_rerun_cleanup.clean_problem_modules_without_full_collection, args.repeats)
    print(f"cleanup alone: Streamlit's {own:.1f} ms, carviz's {ours:.2f} ms")

    page = AppTest.from_file(str(REPO / "app_pages" / "compare.py"), default_timeout=60)
    page.run()
    rerun_own = median_ms(page.run, args.repeats)
    _rerun_cleanup.install()
    page.run()
    rerun_ours = median_ms(page.run, args.repeats)
    print(f"Compare page rerun, cleanup included: Streamlit's {rerun_own:.0f} ms, carviz's {rerun_ours:.0f} ms, "
          f"ratio {rerun_own / rerun_ours:.2f}x")


if __name__ == "__main__":
    main()
