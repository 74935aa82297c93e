"""The network along its depth: one bar per layer coloured by type, frozen part shaded, freeze points marked."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import plotly.graph_objects as go

if TYPE_CHECKING:
    from carviz.ml.backbones import LayerInfo

# Layer families, first match wins; anything else is "other".
FAMILIES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("convolution", ("Conv2D", "SeparableConv2D"), "#4C78A8"),
    ("depthwise conv", ("DepthwiseConv2D",), "#72B7B2"),
    ("normalization", ("BatchNormalization", "LayerNormalization"), "#EECA3B"),
    ("activation", ("ReLU", "Activation", "ReLU6", "Softmax"), "#F58518"),
    ("pooling", ("MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D", "GlobalMaxPooling2D"), "#54A24B"),
    ("merge", ("Add", "Concatenate", "Multiply"), "#B279A2"),
    ("dense", ("Dense",), "#9D755D"),
)
OTHER_COLOUR = "#BAB0AC"


def layer_family(layer_type: str) -> tuple[str, str]:
    """(family, colour) of a Keras layer type name."""
    for family, types, colour in FAMILIES:
        if layer_type in types:
            return family, colour
    return "other", OTHER_COLOUR


def layer_strip_figure(
    layers: Sequence["LayerInfo"],
    freeze: int | None = None,
    seed_points: Mapping[int, str] | None = None,
    height: int = 260,
) -> go.Figure:
    """Bars along the depth (x = 1-based layer index, height = log10(params + 1), so parameter-free layers stay visible).

    freeze N shades layers 1..N-1 (frozen); seed_points ({index: layer name}) are drawn as dotted lines.
    """
    figure = go.Figure()
    by_family: dict[str, list["LayerInfo"]] = {}
    colours: dict[str, str] = {}
    for layer in layers:
        family, colour = layer_family(layer.type)
        by_family.setdefault(family, []).append(layer)
        colours[family] = colour
    for family, members in by_family.items():
        figure.add_trace(
            go.Bar(
                x=[layer.index for layer in members],
                y=[0.3 + math.log10(layer.params + 1) for layer in members],
                name=family,
                width=0.9,  # one layer wide: per-trace auto widths would smear sparse families across gaps
                marker_color=colours[family],
                customdata=[[layer.name, layer.type, layer.params, layer.output_shape] for layer in members],
                hovertemplate="#%{x} %{customdata[0]}<br>%{customdata[1]} · %{customdata[2]:,} params"
                "<br>out %{customdata[3]}<extra></extra>",
            )
        )
    n = len(layers)
    if freeze is not None and n:
        cut = max(1, min(int(freeze), n + 1))
        if cut > 1:
            figure.add_vrect(x0=0.5, x1=cut - 0.5, fillcolor="grey", opacity=0.18, line_width=0,
                             annotation_text="frozen", annotation_position="top left")
        figure.add_vline(x=cut - 0.5, line_color="#D62728", line_width=2,
                         annotation_text=f"freeze {cut}" if cut <= n else "all frozen",
                         annotation_position="top right")
    for index, name in (seed_points or {}).items():
        if 1 <= index <= n + 1:
            figure.add_vline(x=index - 0.5, line_dash="dot", line_color="black",
                             annotation_text=f"seed {index} ({name})", annotation_position="bottom right")
    figure.update_layout(
        barmode="overlay",
        bargap=0.0,
        height=height,
        margin=dict(l=40, r=20, t=30, b=40),
        xaxis=dict(title="layer index (InputLayer = 1)", range=[0.5, n + 0.5] if n else None),
        yaxis=dict(title="log₁₀ params", showgrid=False),
        legend=dict(orientation="h", y=-0.35),
    )
    return figure
