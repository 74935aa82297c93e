"""The one-click recommended sweep: the pure picker on real layer listings, the CLI (a real tiny LR range test, the
feeder stubbed) and the run it recommends from a finished sweep."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from carviz import cli
from carviz.core import recommend
from carviz.core import sweeps as sweep
from carviz.core.config import FREEZE_ALL, RECOMMENDED
from carviz.core.store import Status
from carviz.data.datasets import generate_demo_dataset
from carviz.ml.backbones import list_layers
from carviz.views.plots.sweeps import sweep_points, verdict


def test_picker_on_mobilenet_takes_late_block_starts_and_all() -> None:
    layers = list_layers("mobilenet", 32, 0.25)
    starts = {layer.index for layer in layers if layer.block_start}
    config = recommend.recommended_sweep("cars", "mobilenet", layers, suggested_lr=3.3e-4)
    points = config.freeze_points
    assert points[-1] == FREEZE_ALL
    blocks = points[:-1]
    assert 3 <= len(blocks) <= 4 and set(blocks) <= starts
    assert all(p > len(layers) // 2 for p in blocks) and list(blocks) == sorted(blocks)
    assert blocks[-1] == max(starts)  # the last block is a candidate: the least fine-tuning short of "all"
    assert config.seeds == (1, 2, 3)
    assert config.prune is not None and all(r < config.base.epochs for r in config.prune.rungs)
    assert config.base.test_fraction == recommend.TEST_FRACTION and config.base.feature_cache
    assert not config.base.augmentation.enabled  # augmentation would turn the cache off
    assert config.learning_rates == (9.9e-4, 3.3e-4)  # the suggestion and three times it
    assert (config.base.weights, config.base.head, config.base.train_batchnorm) == \
        (RECOMMENDED.weights, RECOMMENDED.head, RECOMMENDED.train_batchnorm)
    assert config.name == "recommended · cars · mobilenet"
    assert len(sweep.expand(config)) == len(points) * 2 * 3
    assert recommend.lr_test_config(config).freeze in blocks  # the LR test fine-tunes like the runs


def test_picker_on_small_cnn_trains_from_scratch_too() -> None:
    layers = list_layers("small_cnn", 32)
    config = recommend.recommended_sweep("demo", "small_cnn", layers, epochs=1, image_size=32)
    starts = {layer.index for layer in layers if layer.block_start}
    assert config.base.weights == "none"  # small_cnn has no ImageNet weights
    assert config.freeze_points[0] == 1 and config.freeze_points[-1] == FREEZE_ALL  # random layers: train all
    assert set(config.freeze_points[1:-1]) <= starts and len(config.freeze_points) >= 3
    assert config.learning_rates == recommend.DEFAULT_LRS  # no suggestion: the default pair
    assert config.prune is None  # one epoch: no rung before the last


@pytest.mark.parametrize("suggested", [None, 0.0, float("nan"), -1.0, True])
def test_unusable_suggestions_fall_back(suggested) -> None:
    assert recommend.recommended_lrs(suggested) == recommend.DEFAULT_LRS


def test_cli_runs_the_lr_test_then_launches_the_sweep(carviz_home: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys) -> None:
    generate_demo_dataset(carviz_home / "data" / "demo", per_class=8, image_size=48)
    feeders: list[str] = []
    monkeypatch.setattr(sweep, "start_feeder", lambda record: feeders.append(record.id) or 1)
    assert cli.main(["sweep", "--recommended", "--dataset", "demo", "--backbone", "small_cnn", "--epochs", "3",
                     "--image-size", "32", "--batch-size", "8", "--lr-steps", "8"]) == 0
    out = capsys.readouterr().out
    [record] = sweep.list_sweeps()
    assert feeders == [record.id] and f"sweep {record.id}" in out
    config = record.config
    assert config.name == "recommended · demo · small_cnn"
    assert config.seeds == (1, 2, 3) and config.freeze_points[-1] == FREEZE_ALL and config.prune is not None
    assert config.base.test_fraction == recommend.TEST_FRACTION and config.base.image_size == 32
    [found] = recommend.recommendations()
    assert found["sweep"] == record.id and found["status"] == Status.SUCCEEDED.value
    from carviz.ml.lr_range import list_lr_ranges, read_lr_range

    result = read_lr_range(list_lr_ranges()[0]).result
    assert result is not None and len(result.lrs) >= 2
    assert config.learning_rates == recommend.recommended_lrs(result.suggested_lr)
    assert len(record.run_ids) == len(config.freeze_points) * 2 * 3
    # the test stepped on cached features, and its one pass stored the cut of every planned freeze point
    from carviz.ml import features
    from carviz.core import feature_cache
    from carviz.ml.model import build_model

    model, _ = build_model(config.base, 4)
    n = len(model.get_layer("backbone").layers)
    planned = {features.cache_position(model, config.base.replace(freeze=point).freeze_index(n))
               for point in config.freeze_points if point != 1}  # freeze 1 trains everything: nothing to cache
    cached = {entry.meta["depth"] for entry in feature_cache.default_cache().entries()}
    assert planned and planned <= cached
    # launching again from the same test launches nothing more
    from carviz.core.store import Store

    test = Store().get_lr_test(found["test"])
    assert recommend.launch_planned(test, 1e-3) == record.id and len(sweep.list_sweeps()) == 1


def test_cli_recommended_needs_a_dataset(carviz_home: Path, capsys) -> None:
    assert cli.main(["sweep", "--recommended", "--backbone", "small_cnn"]) == 2
    assert "--dataset" in capsys.readouterr().err
    assert cli.main(["sweep", "--freeze", "1"]) == 2  # a plain sweep still needs its name


def _row(run_id: str, freeze, seed: int, val: float, test: float | None, status: str = "succeeded") -> dict:
    return {"id": run_id, "name": f"r {run_id}", "backbone": "small_cnn", "learning_rate": 1e-3, "freeze": freeze,
            "seed": seed, "status": status, "kept_val_accuracy": val, "test_accuracy": test, "problems": []}


def test_recommended_run_is_the_winners_best_seed_or_the_best_run() -> None:
    rows = [_row("a1", 4, 1, 0.90, 0.88), _row("a2", 4, 2, 0.92, 0.85), _row("a3", 4, 3, 0.91, 0.90),
            _row("b1", "all", 1, 0.60, 0.6), _row("b2", "all", 2, 0.62, 0.6), _row("b3", "all", 3, 0.99, None,
                                                                                     status="pruned")]
    pick = recommend.recommended_run(rows, verdict(sweep_points(rows)))
    assert pick["clear"] and pick["row"]["id"] == "a2"  # chosen by validation, never by test accuracy
    assert "test accuracy 85.0 %" in pick["text"]
    close = [_row("a1", 4, 1, 0.90, 0.8), _row("b1", "all", 1, 0.89, None)]
    pick = recommend.recommended_run(close, verdict(sweep_points(close)))
    assert not pick["clear"] and pick["row"]["id"] == "a1" and "no clear winner" in pick["text"]
    assert recommend.recommended_run([_row("x", 1, 1, 0.5, None, status="running")], {"clear": False}) is None


# ---------------------------------------------------------------- the Sweeps page (AppTest)

APP = str(Path(__file__).resolve().parents[2] / "dashboard.py")


def open_sweeps():
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(APP, default_timeout=60).switch_page("app_pages/sweeps.py").run()


def click_recommended(home: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, list[tuple[str, str]]]:
    """The Sweeps page after a click on "Recommended sweep" (small_cnn, demo data), with job launches recorded
    as (record id, kind) instead of started."""
    from carviz.core import jobs

    generate_demo_dataset(home / "data" / "demo", per_class=8, image_size=48)
    launched: list[tuple[str, str]] = []
    monkeypatch.setattr(jobs, "launch", lambda record, kind, backend=None: launched.append((record.id, kind.name)))
    at = open_sweeps()
    at.selectbox(key="sw_rec_backbone").set_value("small_cnn")
    at.button(key="sw_recommended").click().run()
    return at, launched


def test_page_button_starts_the_lr_test_that_launches_the_sweep(carviz_home: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from carviz.ml import lr_range

    at, launched = click_recommended(carviz_home, monkeypatch)
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    [found] = recommend.recommendations()
    assert launched == [(found["test"], "LR range test")] and found["sweep"] is None  # returned at once
    assert any(found["test"] in s.value for s in at.success)
    assert any("the sweep starts when it ends" in i.value for i in at.info)  # read from the record
    assert sweep.list_sweeps() == []

    # the job (here in-process, its measurement faked) launches the sweep when it ends
    fake = lr_range.LRRangeResult(lrs=[1e-4, 1e-3], losses=[1.0, 0.9], smoothed_losses=[1.0, 0.95],
                                  suggested_lr=2e-3)
    monkeypatch.setattr(lr_range, "lr_range_test", lambda config, *args, **kwargs: fake)
    from carviz.core.store import Store

    lr_range.run_lr_range_job(Store().get_lr_test(found["test"]).path)
    [record] = sweep.list_sweeps()
    assert record.config.learning_rates == (6e-3, 2e-3) and record.config.name == "recommended · demo · small_cnn"
    assert launched[-1] == (record.id, "sweep feeder")
    at = open_sweeps()  # a fresh session, as after a restart: the sweep is listed, nothing waits
    assert not at.exception
    assert list(at.dataframe[0].value["id"]) == [record.id]
    assert not any("starts when it ends" in i.value for i in at.info)


def test_finished_sweep_names_the_recommended_run_and_offers_it_to_predict(carviz_home: Path) -> None:
    from carviz.core.config import PRESETS, SweepConfig
    from carviz.core.store import METRIC_COLUMNS, atomic_write_json

    generate_demo_dataset(carviz_home / "data" / "demo", per_class=4, image_size=48)
    config = SweepConfig(name="rec", base=PRESETS["demo quick"].replace(epochs=2, test_fraction=0.15),
                         backbones=("small_cnn",), learning_rates=(1e-3,), freeze_points=(1, "all"), seeds=(1, 2))
    record = sweep.create_sweep(config)
    accuracies = [0.80, 0.90, 0.30, 0.32]
    for run, accuracy in zip(record.runs(), accuracies):
        lines = [",".join(METRIC_COLUMNS), f"1,1.0,0.5,1.0,{accuracy - 0.1},0.001,2.0",
                 f"2,1.0,0.5,1.0,{accuracy},0.001,2.0"]
        run.file("metrics.csv").write_text("\n".join(lines) + "\n")
        atomic_write_json(run.file("evaluation.json"), {
            "split": "validation", "images": 10, "loss": 0.5, "accuracy": accuracy, "kept_epoch": 2,
            "kept": "best val", "test": {"split": "test", "images": 4, "loss": 0.6, "accuracy": accuracy - 0.05}})
        run.file("model.keras").write_bytes(b"a model file (never loaded here)")
        atomic_write_json(run.file("classes.json"), ["a", "b"])
        run.write_status(Status.SUCCEEDED, started_at="2026-01-01T00:00:00+00:00",
                         ended_at="2026-01-01T00:00:08+00:00")
    at = open_sweeps()
    assert not at.exception, at.exception
    best = record.runs()[1]
    line = " ".join(m.value for m in at.markdown if "Recommended run" in m.value)
    assert "test accuracy 85.0 %" in line and "clear winner" in line, line
    at.button(key="sw_use_in_predict").click().run()
    assert not at.exception, at.exception
    assert at.session_state["predict_run"] == best.id
    assert at.selectbox(key="predict_run").value == best.id  # the Predict page opened on it


def test_a_failed_lr_test_can_be_retried_or_skipped_from_the_page(carviz_home: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from carviz.core.store import Store

    at, launched = click_recommended(carviz_home, monkeypatch)
    [first] = recommend.recommendations()
    Store().get_lr_test(first["test"]).write_status(Status.FAILED, error="MemoryError: out of memory")

    at = open_sweeps()
    assert any("ended failed without a sweep: MemoryError" in w.value for w in at.warning)
    at.button(key=f"sw_rec_retry_{first['test']}").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    [second] = recommend.recommendations()  # the retried test is no longer listed
    assert second["test"] != first["test"] and second["status"] == "queued"
    assert launched[-1] == (second["test"], "LR range test")
    assert sweep.list_sweeps() == []

    Store().get_lr_test(second["test"]).write_status(Status.STOPPED)
    at = open_sweeps()
    at.button(key=f"sw_rec_skip_{second['test']}").click().run()
    assert not at.exception and not at.error
    [record] = sweep.list_sweeps()
    assert record.config.learning_rates == (1e-3, 1e-4)
    assert launched[-1] == (record.id, "sweep feeder")
    assert [r["sweep"] for r in recommend.recommendations()] == [record.id]
    with pytest.raises(ValueError, match="launched its sweep"):
        recommend.retry_recommended(Store().get_lr_test(second["test"]))
