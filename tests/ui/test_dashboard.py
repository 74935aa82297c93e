"""The dashboard frame: navigation, the sidebar's facts, "Start here", and the demo dataset made on first start."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[2] / "dashboard.py")


def test_first_start_draws_the_demo_dataset_and_opens_on_data(carviz_home: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit.runtime.scriptrunner import script_runner

    from app_pages import _rerun_cleanup

    demo = carviz_home / "data" / "demo"
    assert not demo.exists()
    monkeypatch.setattr(script_runner, "_clean_problem_modules", _rerun_cleanup.streamlits_cleanup)
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["aug_show"] = False  # the preview (Keras) is tested on the Data page
    at.run()
    assert not at.exception
    assert demo.is_dir() and sum(1 for _ in demo.rglob("*.jpg")) >= 4 * 60
    assert at.title[0].value == "Data"
    sidebar = " ".join(caption.value for caption in at.sidebar.caption)
    assert "Dataset **demo** · 4 classes · 240 images" in sidebar  # facts, not folders: paths sit in the help
    assert "Runs · none yet" in sidebar and "Jobs run locally" in sidebar and "Feature cache · empty" in sidebar
    helps = " ".join(caption.proto.help for caption in at.sidebar.caption)
    assert str(carviz_home / "runs") in helps and str(carviz_home / "data") in helps
    # dashboard.py put the lighter end-of-run cleanup in Streamlit's place (app_pages/_rerun_cleanup.py)
    assert script_runner._clean_problem_modules is _rerun_cleanup.clean_problem_modules_without_full_collection


def test_every_own_page_is_reachable(carviz_home: Path) -> None:
    from carviz.data.datasets import generate_demo_dataset

    generate_demo_dataset(carviz_home / "data" / "demo", per_class=4, image_size=48)
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["layers_size"] = 96  # small builds only in UI tests
    at.session_state["layers_alpha"] = 0.25
    at.session_state["aug_show"] = False
    at.run()
    for page, title in (("app_pages/train.py", "Train"), ("app_pages/layers.py", "Layers"), ("app_pages/data.py", "Data")):
        at.switch_page(page).run()
        assert not at.exception, page
        assert at.title[0].value == title


def test_the_dashboard_turns_gpu_memory_growth_on(carviz_home: Path, monkeypatch) -> None:
    from carviz.data.datasets import generate_demo_dataset

    generate_demo_dataset(carviz_home / "data" / "demo", per_class=4, image_size=48)
    monkeypatch.delenv("TF_FORCE_GPU_ALLOW_GROWTH", raising=False)
    monkeypatch.delenv("XLA_PYTHON_CLIENT_PREALLOCATE", raising=False)
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["aug_show"] = False
    at.run()
    assert not at.exception
    import os

    assert os.environ["TF_FORCE_GPU_ALLOW_GROWTH"] == "true" and os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"


def test_start_here_links_the_pages_in_order_and_opens_until_a_run_exists(carviz_home: Path) -> None:
    from carviz.core.config import PRESETS
    from carviz.core.store import create_run
    from carviz.data.datasets import generate_demo_dataset

    generate_demo_dataset(carviz_home / "data" / "demo", per_class=4, image_size=48)
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["aug_show"] = False
    at.run()
    assert not at.exception
    [start] = [e for e in at.expander if "Start here" in e.label]
    assert start.proto.expanded  # first visit, no runs yet: open
    links = [(link.value, link.proto.page) for link in start.get("page_link")]
    assert [label for label, _ in links[:5]] == ["1. Data", "2. Layers", "3. Train", "4. Compare", "5. Predict"]
    # the pages' URLs (Data is the default page: the root)
    assert [page.rsplit("/", 1)[-1] for _, page in links[:5]] == ["", "layers", "train", "compare", "predict"]
    assert "demo quick" in " ".join(m.value for m in start.markdown)  # the default preset, and that it is quick

    create_run(PRESETS["demo quick"].replace(name="first"))
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["aug_show"] = False
    at.run()
    [start] = [e for e in at.expander if "Start here" in e.label]
    assert not start.proto.expanded  # there is a run: the box stays, closed


def test_sidebar_counts_runs_by_state_on_every_page(carviz_home: Path) -> None:
    from test_train_page import make_runs, tiny_demo  # tests/ui is on sys.path

    tiny_demo(carviz_home)
    make_runs()  # succeeded, running, failed, lost
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["aug_show"] = False
    at.run()
    assert not at.exception
    for page in (None, "app_pages/train.py"):
        if page:
            at.switch_page(page).run()
            assert not at.exception
        sidebar = " ".join(caption.value for caption in at.sidebar.caption)
        assert "Runs · 1 running · 0 queued · 3 finished" in sidebar, sidebar
        assert "Dataset **demo** · 4 classes · 16 images" in sidebar


def _keras_layer_names_script() -> None:
    import keras
    import streamlit as st

    st.write(keras.layers.Dense(1).name)  # "dense" in every run while Keras' name counters are cleared after each


def test_pages_clear_keras_after_each_run_without_a_full_garbage_collection(monkeypatch: pytest.MonkeyPatch) -> None:
    import gc

    from streamlit.runtime.scriptrunner import script_runner

    from app_pages import _rerun_cleanup

    collections: list = []
    collect = gc.collect
    monkeypatch.setattr(gc, "collect", lambda *args: collections.append(args) or collect(*args))
    at = AppTest.from_function(_keras_layer_names_script, default_timeout=30)
    for _ in range(2):
        at.run()
        assert not at.exception and at.markdown[0].value == "dense"
    assert collections == []
    # Streamlit's own cleanup does the same with a full collection after every run (what the replacement saves).
    monkeypatch.setattr(script_runner, "_clean_problem_modules", _rerun_cleanup.streamlits_cleanup)
    at.run()
    assert at.markdown[0].value == "dense" and len(collections) == 1
