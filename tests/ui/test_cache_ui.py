"""The feature cache in the UI: the Train and Sweeps captions, the cache panel (entries, limit, clear), run lines."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from carviz.core import feature_cache
from carviz.core import jobs, launch
from carviz.core import sweeps as sweep
from carviz.core.config import PRESETS
from carviz.data.datasets import generate_demo_dataset
from carviz.core.store import Run, Status, atomic_write_json, create_run, now_iso

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from test_cache_cli import add_entries, on_disk  # noqa: E402 - cache entries made the same way as the CLI tests

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "dashboard.py")
SWEEPS = str(ROOT / "app_pages" / "sweeps.py")
LAUNCH = "FormSubmitter:train_form-Launch"
SAVE = "FormSubmitter:cache_settings-Save cache settings"


@pytest.fixture
def demo(carviz_home: Path) -> Path:
    generate_demo_dataset(carviz_home / "data" / "demo", per_class=4, image_size=48)
    return carviz_home


def captions(at: AppTest) -> str:
    return "\n".join(c.value for c in at.caption)


def open_train() -> AppTest:
    return AppTest.from_file(APP, default_timeout=30).switch_page("app_pages/train.py").run()


def test_train_caption_and_checkbox_follow_the_form(demo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    submitted: list[Run] = []
    monkeypatch.setattr(launch, "submit", lambda config, runs_root=None, backend=None:
                        submitted.append(create_run(config)) or submitted[-1])
    at = open_train()
    assert not at.exception
    assert at.checkbox(key="tf_feature_cache").value is True
    assert "Feature cache not used: nothing before the first trainable layer" in captions(at)  # demo quick: freeze 1

    at.text_input(key="tf_freeze").input("all")
    at.button(key=LAUNCH).click().run()
    assert any("Frozen random backbone" in w.value for w in at.warning)  # small_cnn from scratch, all frozen
    at.button(key=LAUNCH).click().run()  # the second click launches it as it is
    assert "Feature cache on: the frozen layers run once per image" in captions(at)
    assert "Feature cache not used" not in captions(at)

    at.checkbox(key="tf_aug_enabled").check()  # form widgets apply on submit, as in the browser
    at.button(key=LAUNCH).click().run()
    assert not at.exception
    assert "Feature cache on with 4 augmented views" in captions(at)
    assert "Feature cache not used" not in captions(at)

    at.number_input(key="tf_aug_views").set_value(0)  # 0 views: augmented images every epoch, no cache
    at.button(key=LAUNCH).click().run()
    assert "Feature cache not used: augmentation is on with 0 cached views" in captions(at)
    assert "Feature cache on" not in captions(at)

    at.checkbox(key="tf_aug_enabled").uncheck()
    at.checkbox(key="tf_feature_cache").uncheck()
    at.button(key=LAUNCH).click().run()
    assert "Feature cache not used: the feature cache is off for this run" in captions(at)
    assert [run.config().feature_cache for run in submitted] == [True, True, True, False]
    assert [run.config().augmentation.enabled for run in submitted] == [False, True, True, False]
    assert [run.config().augment_views for run in submitted] == [4, 4, 0, 0]


def test_sweeps_caption_and_launch_carry_augmentation(demo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs, "launch", lambda *args, **kwargs: None)
    at = AppTest.from_file(SWEEPS, default_timeout=30).run()
    assert not at.exception
    at.text_input(key="sw_freeze_text").set_value("1, all").run()  # the default from scratch is "1" only
    assert ("Feature cache used by the runs with freeze all; not used with freeze 1: nothing before the first "
            "trainable layer") in captions(at)

    at.checkbox(key="sw_augment").check().run()
    assert "Feature cache used by the runs with freeze all (with 4 augmented views)" in captions(at)
    at.button(key="sw_launch").click().run()
    assert not at.exception and not at.error
    [record] = sweep.list_sweeps()
    assert record.config.base.augmentation.enabled and record.config.base.feature_cache
    assert all(run.config().augmentation.enabled for run in record.runs())


def test_panel_shows_entries_and_total(demo: Path) -> None:
    add_entries(["conv_dw_7_relu", "conv_pw_3_relu"], mib=1)
    at = AppTest.from_file(SWEEPS, default_timeout=30).run()
    assert not at.exception
    assert any("2 MiB of 20 GiB, 2 feature sets" in m.value for m in at.markdown)
    [table] = [d.value for d in at.dataframe if "layer" in d.value.columns]
    assert list(table["layer"]) == ["conv_dw_7_relu", "conv_pw_3_relu"]  # most recently used first
    assert list(table["size MiB"]) == [1.0, 1.0] and list(table["stored dtype"]) == ["float32", "float32"]
    assert list(table["backbone"]) == ["mobilenet"] * 2 and list(table["image size"]) == [224] * 2


def test_clear_empties_the_cache_on_disk(demo: Path) -> None:
    add_entries(["a", "b"], mib=1)
    at = open_train()  # the panel is on the Train page too
    assert len(on_disk()) == 2
    at.button(key="cache_clear").click().run()
    assert not at.exception
    assert on_disk() == set()
    assert any("2 feature set(s) removed" in s.value for s in at.success)
    assert any("0 B of 20 GiB, 0 feature sets" in m.value for m in at.markdown)


def test_saving_a_lower_limit_evicts(demo: Path) -> None:
    keys = add_entries(["newest", "middle", "oldest"])  # 4 MiB each
    at = AppTest.from_file(SWEEPS, default_timeout=30).run()
    at.number_input(key="cache_limit_gb").set_value(0.009)  # ~9.2 MiB
    at.selectbox(key="cache_dtype").set_value("float16")
    at.button(key=SAVE).click().run()
    assert not at.exception
    assert on_disk() == set(keys[:2])
    assert feature_cache.load_settings() == feature_cache.CacheSettings(max_gb=0.009, dtype="float16")
    assert any("1 feature set(s) evicted" in s.value for s in at.success)
    assert any("8 MiB of 9.2 MiB, 2 feature sets" in m.value for m in at.markdown)


def test_unwritable_cache_is_a_message(demo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = demo / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("CARVIZ_CACHE", str(blocker))
    at = AppTest.from_file(SWEEPS, default_timeout=30).run()
    at.number_input(key="cache_limit_gb").set_value(3.0)
    at.button(key=SAVE).click().run()
    assert not at.exception
    assert any("Could not save the cache settings" in e.value for e in at.error)
    assert blocker.read_text().startswith("a file")


def test_job_cards_say_how_each_run_trained(demo: Path) -> None:
    cached, on_images = (create_run(PRESETS["demo quick"].replace(name=name)) for name in ("cached", "on images"))
    for run, record in ((cached, {"used": True, "layer": "conv_dw_7_relu", "source": "cache hit", "seconds": 0.12,
                                  "bytes": 1024, "shape": [14, 14, 256], "dtype": "float32"}),
                        (on_images, {"used": False, "reason": "augmentation is on: every epoch feeds new pixels"})):
        run.write_status(Status.SUCCEEDED, started_at=now_iso(), ended_at=now_iso())
        atomic_write_json(run.file("run.json"), {"feature_cache": record})
    at = open_train()
    assert not at.exception
    assert "Trained on cached conv_dw_7_relu features (cache hit, 0.1 s)" in captions(at)
    assert "Trained on images: augmentation is on: every epoch feeds new pixels" in captions(at)
