"""Pure helpers of the first screen and the sweep form: sidebar facts, layer rows, the grid's size, sweep wording."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from carviz.core.config import PRESETS, SweepConfig
from carviz.ml.backbones import LayerInfo
from carviz.views.layer_select import LAYER_COLUMNS, layer_rows, table_height
from carviz.views.overview import cache_line, dataset_line, jobs_line, quick_counts, run_counts, runs_line
from carviz.views.plots.data import class_counts_chart
from carviz.views.plots.sweeps import verdict
from carviz.views.sweep_text import best_label, grid_size_text, settled_verdict


def test_quick_counts_counts_image_names_in_class_folders_and_skips_hidden_ones(tmp_path: Path) -> None:
    for name in ("bus/a.jpg", "bus/b.PNG", "bus/notes.txt", "bus/.hidden.jpg", "suv/c.webp", ".trash/bus/d.jpg"):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")  # counted by name: nothing is decoded
    (tmp_path / "empty").mkdir()
    assert quick_counts(tmp_path) == (3, 3)  # bus, suv, empty; a.jpg, b.PNG, c.webp
    assert quick_counts(tmp_path / "missing") == (0, 0)
    assert dataset_line("demo", 1, 1) == "Dataset **demo** · 1 class · 1 image"
    assert dataset_line("cars", 33, 12000) == "Dataset **cars** · 33 classes · 12,000 images"


def test_run_counts_and_the_other_sidebar_lines() -> None:
    counts = run_counts(["running", "queued", "queued", "succeeded", "failed", "lost", "pruned", "stopped"])
    assert counts == {"running": 1, "queued": 2, "finished": 5}
    assert runs_line(counts) == "Runs · 1 running · 2 queued · 5 finished"
    assert runs_line(run_counts([])) == "Runs · none yet"
    assert jobs_line("local", "", 2) == "Jobs run locally · 2 at a time"
    assert jobs_line("local", "http://head:8265", 1).endswith("(Ray offered when launching)")
    assert jobs_line("ray", "http://head:8265", None) == "Jobs run on Ray (http://head:8265)"
    assert cache_line(0) == "Feature cache · empty" and cache_line(3 * 1024**3) == "Feature cache · 3 GiB"


def test_layer_rows_follow_the_column_order_and_fit_the_table() -> None:
    layers = [LayerInfo(index=1, name="input_layer", type="InputLayer", output_shape="(None, 96, 96, 3)", params=0,
                        is_conv=False, block="stem", block_start=True, block_end=False, is_cut_point=True),
              LayerInfo(index=2, name="conv1", type="Conv2D", output_shape="(None, 48, 48, 8)", params=216,
                        is_conv=True, block="stem", block_start=False, block_end=True, is_cut_point=False)]
    rows = layer_rows(layers)
    assert [list(row) for row in rows] == [list(LAYER_COLUMNS)] * 2
    assert list(LAYER_COLUMNS[:5]) == ["#", "name", "block", "boundary", "cut point"]
    assert [(r["boundary"], r["cut point"], r["conv"]) for r in rows] == [("start", "✂", ""), ("end", "", "●")]
    assert table_height(2) == 3 * 35 + 3 and table_height(1000) == 460 and table_height(0) == table_height(1)


def test_grid_size_text_names_the_factors() -> None:
    base = PRESETS["demo quick"]
    grid = SweepConfig(name="g", base=base, backbones=("small_cnn",), learning_rates=(1e-3, 1e-4),
                       freeze_points=(1, 3, "all"), seeds=(1, 2))
    assert grid_size_text(grid) == "12 runs: 2 learning rates × 3 freeze points × 2 seeds"
    imagenet = base.replace(backbone="mobilenet", weights="imagenet", image_size=96)
    two = SweepConfig(name="g", base=imagenet, backbones=("mobilenet", "resnet50"), learning_rates=(1e-3,),
                      freeze_points=(1,), seeds=(1,))
    assert grid_size_text(two) == "2 runs: 2 backbones × 1 learning rate × 1 freeze point × 1 seed"
    own = SweepConfig(name="g", base=imagenet, backbones=("mobilenet", "resnet50"), learning_rates=(1e-3, 1e-4),
                      freeze_points=(1,), seeds=(1,), backbone_freeze_points={"mobilenet": (1, 2, 3),
                                                                             "resnet50": (5,)})
    assert own.size() == 8
    assert grid_size_text(own) == ("8 runs: (3 freeze points for mobilenet + 1 for resnet50) × 2 learning rates × "
                                   "1 seed")


def test_an_ended_sweep_is_not_worded_as_in_progress() -> None:
    one = pd.DataFrame([{"backbone": "small_cnn", "learning_rate": 1e-3, "freeze": 1, "mean": 0.7, "std": 0.0,
                         "n": 1}])
    text = verdict(one)["text"]
    assert "so far" in text  # what verdict says of one configuration
    assert settled_verdict(text, "running") == text
    assert "so far" not in settled_verdict(text, "done") and "one configuration:" in settled_verdict(text, "done")
    none = verdict(pd.DataFrame())["text"]
    assert settled_verdict(none, "done") == "no finished runs: no winner"
    assert best_label("running") == best_label("queued") == "Best so far"
    assert best_label("done") == best_label("stopped") == "Best run"


def test_class_counts_chart_has_a_bar_and_label_per_class_and_a_mean_line() -> None:
    spec = class_counts_chart({"bus": 3, "sedan": 5}).to_dict()
    [bars] = [layer for layer in spec["layer"] if layer["mark"]["type"] == "bar"]
    values = spec["datasets"][bars["data"]["name"]]
    assert values == [{"class": "bus", "images": 3}, {"class": "sedan", "images": 5}]
    assert bars["encoding"]["x"]["sort"] is None  # the classes in the scan's order
    assert {layer["mark"]["type"] for layer in spec["layer"]} == {"bar", "text", "rule"}
    assert class_counts_chart({}).to_dict()["layer"]  # an empty dataset still draws (no mean line)
