"""LR range test figure: loss against learning rate on a log axis, with the suggested rate marked (pure)."""

from __future__ import annotations

import math
from typing import Any, Sequence

import plotly.graph_objects as go

RAW_OPACITY = 0.3
LINE_COLOUR = "#1f77b4"
SUGGESTION_COLOUR = "#d62728"


def _finite(values: Sequence[Any]) -> list[float | None]:
    out: list[float | None] = []
    for value in values:
        number = None if value is None or isinstance(value, bool) else float(value)
        out.append(number if number is not None and math.isfinite(number) else None)
    return out


def lr_range_figure(result: Any) -> go.Figure:
    """Raw loss (faint) and smoothed loss against learning rate (log x), a dashed line at the suggested rate.

    result: an LRRangeResult, or anything with lrs, losses, smoothed_losses and suggested_lr attributes.
    """
    lrs = list(result.lrs)
    losses = _finite(result.losses)
    smoothed = _finite(result.smoothed_losses)
    fig = go.Figure()
    fig.add_trace(go.Scatter(
        x=lrs, y=losses, mode="lines", name="loss", opacity=RAW_OPACITY, line=dict(color=LINE_COLOUR, width=1),
        hovertemplate="lr %{x:.3g}<br>loss %{y:.4g}<extra></extra>",
    ))
    fig.add_trace(go.Scatter(
        x=lrs, y=smoothed, mode="lines", name="smoothed loss", line=dict(color=LINE_COLOUR, width=2.5),
        hovertemplate="lr %{x:.3g}<br>smoothed %{y:.4g}<extra></extra>",
    ))
    suggested = getattr(result, "suggested_lr", None)
    if suggested:
        # On a log axis a shape takes the value itself, an annotation its log10 (plotly.js #1258).
        fig.add_vline(x=suggested, line=dict(color=SUGGESTION_COLOUR, dash="dash", width=2))
        fig.add_annotation(x=math.log10(suggested), y=1, yref="paper", text=f"suggested {suggested:.2g}",
                           showarrow=False, xanchor="left", yanchor="top", font=dict(color=SUGGESTION_COLOUR))
    layout_y: dict[str, Any] = dict(title="loss")
    values = [v for v in losses + smoothed if v is not None]
    start = next((v for v in smoothed if v is not None), None)
    if values and start is not None:
        # Cap at twice the starting loss so a diverged tail does not squash the descent.
        low, high = min(values), min(max(values), 2 * start)
        if high > low:
            pad = 0.05 * (high - low)
            layout_y["range"] = [low - pad, high + pad]
    fig.update_layout(
        xaxis=dict(title="learning rate", type="log", exponentformat="power"),
        yaxis=layout_y,
        height=360, margin=dict(l=10, r=10, t=30, b=10),
        legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0),
    )
    return fig
