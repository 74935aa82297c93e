"""Pure functions behind the Data and Layers pages: figures, layer filters, freeze from a row click, param split."""

from __future__ import annotations


import plotly.graph_objects as go
import pytest

from carviz.ml.backbones import LayerInfo
from carviz.core.config import ConfigError
from carviz.views.layer_select import (
    clamp_freeze,
    filter_layers,
    first_trainable,
    freeze_from_selection,
    frozen_trainable_params,
    parse_freeze,
)
from carviz.views.plots.data import class_counts_figure, problem_counts, problems_figure
from carviz.views.plots.layers import layer_family, layer_strip_figure


def layer(index: int, name: str, type_: str, params: int = 0, block: str = "stem", **marks: bool) -> LayerInfo:
    return LayerInfo(index=index, name=name, type=type_, output_shape="(None, 8, 8, 4)", params=params,
                     is_conv=type_ in ("Conv2D", "DepthwiseConv2D"), block=block,
                     block_start=marks.get("start", False), block_end=marks.get("end", False),
                     is_cut_point=marks.get("cut", False))


LAYERS = [
    layer(1, "input_layer", "InputLayer", cut=True, start=True),
    layer(2, "conv1", "Conv2D", 100, cut=True),
    layer(3, "conv1_bn", "BatchNormalization", 10, end=True),
    layer(4, "conv_dw_1", "DepthwiseConv2D", 20, block="block_1", start=True, cut=True),
    layer(5, "conv_pw_1", "Conv2D", 300, block="block_1"),
    layer(6, "conv_pw_1_relu", "ReLU", 0, block="block_1", end=True, cut=True),
]


def test_filters_and_search() -> None:
    assert filter_layers(LAYERS) == LAYERS
    assert [l.index for l in filter_layers(LAYERS, "convolutions")] == [2, 4, 5]
    assert [l.index for l in filter_layers(LAYERS, "block boundaries")] == [1, 3, 4, 6]
    assert [l.index for l in filter_layers(LAYERS, "cut points")] == [1, 2, 4, 6]
    assert [l.index for l in filter_layers(LAYERS, "all layers", " PW_1 ")] == [5, 6]
    assert [l.index for l in filter_layers(LAYERS, "convolutions", "depthwise")] == [4]
    with pytest.raises(ValueError):
        filter_layers(LAYERS, "dense only")


def test_freeze_from_selection_maps_a_row_of_the_shown_table_to_the_layer_index() -> None:
    shown = filter_layers(LAYERS, "convolutions")
    assert freeze_from_selection(shown, [2]) == 5  # third shown row is layer #5
    assert freeze_from_selection(LAYERS, [0]) == 1
    assert freeze_from_selection(shown, []) is None
    assert freeze_from_selection(shown, [7]) is None  # stale row from a longer table


def test_frozen_trainable_params_follow_the_seed_rule() -> None:
    total = sum(l.params for l in LAYERS)
    assert frozen_trainable_params(LAYERS, 1) == (0, total)
    assert frozen_trainable_params(LAYERS, 4) == (110, 320)  # layers 1-3 frozen
    assert frozen_trainable_params(LAYERS, "all") == (total, 0)
    assert frozen_trainable_params(LAYERS, 99) == (total, 0)
    assert first_trainable(LAYERS, 4).name == "conv_dw_1"
    assert first_trainable(LAYERS, "all") is None
    assert clamp_freeze(0, 6) == 1 and clamp_freeze("all", 6) == 7


def test_parse_freeze() -> None:
    assert parse_freeze(" 47 ") == 47 and parse_freeze("ALL") == "all" and parse_freeze(3) == 3
    for bad in ("", "half", "0", "-2", 0):
        with pytest.raises(ConfigError):
            parse_freeze(bad)


def test_class_counts_figure() -> None:
    figure = class_counts_figure({"bus": 3, "sedan": 5})
    assert isinstance(figure, go.Figure)
    assert list(figure.data[0].x) == ["bus", "sedan"] and list(figure.data[0].y) == [3, 5]
    assert class_counts_figure({}).data[0].x is None or len(class_counts_figure({}).data[0].x) == 0


def test_problems_figure_counts_every_kind() -> None:
    assert problem_counts(["tiny", "duplicate", "tiny"]) == {"unreadable": 0, "truncated": 0, "tiny": 2,
                                                              "duplicate": 1}
    assert list(problems_figure(["odd"]).data[0].y)[-1] == "odd"


def test_layer_strip_figure_marks_frozen_part_and_points() -> None:
    figure = layer_strip_figure(LAYERS, freeze=4, seed_points={5: "conv_pw_1"})
    xs = sorted(x for trace in figure.data for x in trace.x)
    assert xs == [1, 2, 3, 4, 5, 6]
    assert {trace.name for trace in figure.data} >= {"convolution", "depthwise conv", "normalization"}
    shapes = figure.layout.shapes
    assert any(shape.type == "rect" and shape.x1 == 3.5 for shape in shapes)  # layers 1-3 shaded
    lines = [shape.x0 for shape in shapes if shape.type == "line"]
    assert 3.5 in lines and 4.5 in lines  # chosen point and the seed's point
    assert layer_family("Conv2D")[0] == "convolution" and layer_family("Lambda")[0] == "other"
    assert not any(shape.type == "rect" for shape in layer_strip_figure(LAYERS, freeze=1).layout.shapes)
