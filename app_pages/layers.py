"""Layers page: every layer of a backbone, filterable; clicking a row sets the freeze point."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from carviz.ml.backbones import BACKBONES
from carviz.core.config import FREEZE_ALL
from carviz.views.layer_select import (
    LAYER_COLUMNS,
    LAYER_FILTERS,
    clamp_freeze,
    filter_layers,
    first_trainable,
    freeze_from_selection,
    frozen_trainable_params,
    layer_rows,
    table_height,
)
from carviz.views.plots.layers import layer_strip_figure
from app_pages._common import layers_of
from app_pages._keys import TRAIN_PREFILL

ALPHAS = (0.25, 0.5, 0.75, 1.0)
SIZES = (96, 128, 160, 192, 224)

st.title("Layers")
st.caption(
    'Layers are counted from 1 with the InputLayer as number 1; "freeze N" freezes layers 1…N-1 and trains '
    "layer N onwards. Click a row to make it the first trainable layer."
)

c1, c2, c3 = st.columns(3)
backbone = c1.selectbox("Backbone", list(BACKBONES), format_func=lambda name: BACKBONES[name].label,
                        key="layers_backbone")
spec = BACKBONES[backbone]
image_size = c2.selectbox("Input size", SIZES, index=SIZES.index(spec.default_size), key="layers_size")
is_mobilenet = backbone in ("mobilenet", "mobilenetv2")
alpha = c3.selectbox("Alpha (width)", ALPHAS, index=ALPHAS.index(1.0), key="layers_alpha",
                     disabled=not is_mobilenet, help="Width multiplier: MobileNet and MobileNetV2 only")
alpha = float(alpha) if is_mobilenet else 1.0

try:
    layers = layers_of(backbone, int(image_size), alpha)
except Exception as exc:  # noqa: BLE001 - a backbone that cannot be built at this size is a message, not a crash
    st.error(f"Cannot build {spec.label} at {image_size} px (alpha {alpha}): {exc}")
    st.stop()

n_layers = len(layers)
freeze_key = f"layers_freeze:{backbone}"
if freeze_key not in st.session_state:
    st.session_state[freeze_key] = min(next(iter(spec.seed_freeze_points), 1), n_layers + 1)
st.session_state[freeze_key] = clamp_freeze(st.session_state[freeze_key], n_layers)

f1, f2 = st.columns([1, 2])
mode = f1.radio("Show", LAYER_FILTERS, horizontal=True, key="layers_filter")
query = f2.text_input("Search name or type", key="layers_query", placeholder="e.g. conv_pw or BatchNorm")
shown = filter_layers(layers, mode, query)

table, summary = st.columns([3, 2])
with table:
    st.caption(f"{len(shown)} of {n_layers} layers shown")
    frame = pd.DataFrame(layer_rows(shown), columns=list(LAYER_COLUMNS))
    # The key names the view: a new backbone or filter starts with no selection instead of a stale row.
    table_key = f"layers_table:{backbone}:{image_size}:{alpha}:{mode}:{query}"
    small = st.column_config.TextColumn(width="small")
    event = st.dataframe(frame, hide_index=True, height=table_height(len(frame)), key=table_key, on_select="rerun",
                         selection_mode="single-row",
                         column_config={"#": st.column_config.NumberColumn(width="small"), "block": small,
                                        "boundary": small, "cut point": small, "conv": small,
                                        "params": st.column_config.NumberColumn(width="small", format="localized")})
    rows = list(event.selection.rows)
    applied_key = table_key + ":applied"
    if rows != st.session_state.get(applied_key):  # a new click (not the same selection seen on a later rerun)
        st.session_state[applied_key] = rows
        picked = freeze_from_selection(shown, rows)
        if picked is not None:
            st.session_state[freeze_key] = picked

with summary:
    freeze = st.number_input(f"Freeze point (1 … {n_layers + 1}; {n_layers + 1} = all frozen)", min_value=1,
                             max_value=n_layers + 1, step=1, key=freeze_key)
    frozen, trainable = frozen_trainable_params(layers, freeze)
    first = first_trainable(layers, freeze)
    m1, m2 = st.columns(2)
    m1.metric("Frozen params", f"{frozen:,}")
    m2.metric("Trainable params", f"{trainable:,}")
    if first is None:
        st.markdown("**Whole backbone frozen** (only the head trains).")
    else:
        st.markdown(f"First trainable layer: **#{first.index} `{first.name}`** ({first.type})")
    for index, name in spec.seed_freeze_points.items():
        st.caption(f"Seed study's best point for {spec.label}: {index} (`{name}`)")
    if st.button("Use in Train", type="primary", key="layers_use",
                 help="Opens Train on the recommended preset (ImageNet weights, the recommended head) with this "
                      "backbone, input size and freeze point; the dataset stays as the form had it"):
        st.session_state[TRAIN_PREFILL] = {
            "backbone": backbone,
            "alpha": alpha,
            "image_size": int(image_size),
            "freeze": FREEZE_ALL if freeze > n_layers else int(freeze),
        }
        st.switch_page("app_pages/train.py")

st.plotly_chart(layer_strip_figure(layers, int(freeze), spec.seed_freeze_points), key="layers_strip")
