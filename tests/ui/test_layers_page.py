"""Layers page: the layer table of a small MobileNet, the freeze point from a row selection, Use in Train."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest
from test_train_page import APP, make_runs, tiny_demo  # tests/ui is on sys.path (pytest's rootdir-less import)

TABLE_KEY = "layers_table:mobilenet:96:0.25:all layers:"  # the page names the table by its view


def open_layers(at: AppTest) -> AppTest:
    at.session_state["layers_size"] = 96  # never build big backbones in UI tests
    at.session_state["layers_alpha"] = 0.25
    return at.switch_page("app_pages/layers.py").run()


def page_text(at: AppTest) -> str:
    return " ".join(m.value for m in at.markdown) + " " + " ".join(c.value for c in at.caption)


def test_mobilenet_table_and_seed_freeze_point(carviz_home: Path) -> None:
    tiny_demo(carviz_home)
    make_runs()
    at = open_layers(AppTest.from_file(APP, default_timeout=90))
    assert not at.exception
    table = at.dataframe[0].value
    assert table["#"].tolist()[:2] == [1, 2] and table["name"].iloc[46] == "conv_pw_7"
    assert at.number_input(key="layers_freeze:mobilenet").value == 47  # the seed study's point by default
    assert "conv_pw_7" in page_text(at)
    frozen = int(at.metric[0].value.replace(",", ""))
    trainable = int(at.metric[1].value.replace(",", ""))
    assert frozen > 0 and trainable > 0

    at.radio(key="layers_filter").set_value("convolutions").run()
    shown = at.dataframe[0].value
    assert len(shown) < len(table) and set(shown["type"]) <= {"Conv2D", "DepthwiseConv2D"}


def test_row_selection_sets_the_freeze_point_and_use_in_train_prefills(carviz_home: Path) -> None:
    tiny_demo(carviz_home)
    at = AppTest.from_file(APP, default_timeout=90)
    at.session_state[TABLE_KEY] = {"selection": {"rows": [9], "columns": [], "cells": []}}
    open_layers(at)
    assert not at.exception
    name_10 = at.dataframe[0].value["name"].iloc[9]
    assert at.number_input(key="layers_freeze:mobilenet").value == 10
    assert f"#10 `{name_10}`" in page_text(at) or name_10 in page_text(at)

    at.button(key="layers_use").click().run()
    assert not at.exception
    assert at.title[0].value == "Train"
    assert at.selectbox(key="tf_backbone").value == "mobilenet"
    assert at.selectbox(key="tf_alpha").value == 0.25
    assert at.number_input(key="tf_image_size").value == 96
    assert at.text_input(key="tf_freeze").value == "10"
    # a sensible transfer run, said plainly: ImageNet weights and the recommended head, named after what it is
    assert at.selectbox(key="tf_weights").value == "imagenet"
    assert at.selectbox(key="tf_head").value == "recommended"
    assert at.text_input(key="tf_name").value == "mobilenet freeze 10"
    assert at.selectbox(key="tf_dataset").value == "demo"
    [info] = [i.value for i in at.info if i.value.startswith("From Layers")]
    assert "ImageNet weights" in info and "recommended head" in info and '"mobilenet freeze 10"' in info
    assert not [w for w in at.warning if "Frozen random backbone" in w.value]


def test_freeze_value_preset_in_session_state(carviz_home: Path) -> None:
    tiny_demo(carviz_home)
    at = AppTest.from_file(APP, default_timeout=90)
    at.session_state["layers_freeze:mobilenet"] = 1000  # past the end: clamped to "all frozen"
    open_layers(at)
    assert not at.exception
    n_layers = len(at.dataframe[0].value)
    assert at.number_input(key="layers_freeze:mobilenet").value == n_layers + 1
    assert "Whole backbone frozen" in page_text(at)
    assert at.metric[1].value == "0"


def test_the_table_puts_block_boundary_and_cut_point_beside_the_name_and_fits_its_rows(carviz_home: Path) -> None:
    from carviz.views.layer_select import table_height

    tiny_demo(carviz_home)
    at = open_layers(AppTest.from_file(APP, default_timeout=90))
    assert not at.exception
    columns = list(at.dataframe[0].value.columns)
    assert columns[:5] == ["#", "name", "block", "boundary", "cut point"]  # on screen without scrolling sideways
    assert columns.index("output shape") == len(columns) - 1  # the widest last
    full = at.dataframe[0]
    at.radio(key="layers_filter").set_value("block boundaries").run()
    shown = at.dataframe[0]
    rows = len(shown.value)
    assert 0 < rows < len(full.value)
    assert set(shown.value["boundary"]) <= {"start", "end", "start end"} and "" not in set(shown.value["boundary"])
    at.text_input(key="layers_query").set_value("conv_pw_7").run()
    few = len(at.dataframe[0].value)
    assert 0 < few < 4
    # the table is as tall as its rows (header + rows, no blank rows under a filtered view), up to a scroll
    assert table_height(few) == 35 * (few + 1) + 3 < table_height(rows) <= table_height(len(full.value)) == 460
