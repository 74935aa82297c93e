"""The dashboard frame: navigation, the sidebar's folders, and the demo dataset made on first start."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[2] / "dashboard.py")


def test_first_start_draws_the_demo_dataset_and_opens_on_data(carviz_home: Path) -> None:
    demo = carviz_home / "data" / "demo"
    assert not demo.exists()
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["aug_show"] = False  # the preview (Keras) is tested on the Data page
    at.run()
    assert not at.exception
    assert demo.is_dir() and sum(1 for _ in demo.rglob("*.jpg")) >= 4 * 60
    assert at.title[0].value == "Data"
    sidebar = " ".join(caption.value for caption in at.sidebar.caption)
    assert str(carviz_home / "runs") in sidebar and str(carviz_home / "data") in sidebar


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
