"""The Train and Sweeps pages offer where jobs run only when a Ray cluster is configured."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from carviz.data.datasets import generate_demo_dataset

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def demo(carviz_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    generate_demo_dataset(carviz_home / "data" / "demo", per_class=4, image_size=48)
    monkeypatch.delenv("CARVIZ_RAY_ADDRESS", raising=False)
    return carviz_home


@pytest.mark.parametrize("page, key", [("train.py", "train_backend"), ("sweeps.py", "sw_backend")])
def test_no_cluster_no_choice(demo: Path, page: str, key: str) -> None:
    at = AppTest.from_file(str(ROOT / "app_pages" / page), default_timeout=30).run()
    assert not at.exception
    assert not [box for box in at.selectbox if box.key == key]


@pytest.mark.parametrize("page, key", [("train.py", "train_backend"), ("sweeps.py", "sw_backend")])
def test_a_configured_cluster_is_offered(demo: Path, page: str, key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARVIZ_RAY_ADDRESS", "http://127.0.0.1:26399")  # nothing is contacted until a launch
    at = AppTest.from_file(str(ROOT / "app_pages" / page), default_timeout=30).run()
    assert not at.exception
    [box] = [box for box in at.selectbox if box.key == key]
    assert box.options == ["local", "ray"] and box.value == "local"
