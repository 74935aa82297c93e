"""Training-curve figures: loss/accuracy vs epoch for several runs, optional EMA smoothing (pure functions)."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

import plotly.colors
import plotly.graph_objects as go

METRICS = ("loss", "accuracy")
TRAIN_DASH = "dash"
VAL_DASH = "solid"
RAW_OPACITY = 0.3
PALETTE: tuple[str, ...] = tuple(plotly.colors.qualitative.Plotly) + tuple(plotly.colors.qualitative.Dark24)
HOVER_CONFIG_KEYS = ("name", "backbone", "weights", "learning_rate", "freeze", "head", "optimizer", "batch_size",
                     "image_size", "epochs", "dataset")

# One run to draw: (legend label, its config dict, its metrics rows as Run.metrics() returns them).
CurveRun = tuple[str, Mapping[str, Any], Sequence[Mapping[str, Any]]]


def run_colour(index: int) -> str:
    """The colour of the index-th run; cycles after len(PALETTE) runs."""
    return PALETTE[index % len(PALETTE)]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def ema(values: Sequence[float | None], smoothing: float) -> list[float | None]:
    """TensorBoard-style debiased exponential moving average; gaps (None) stay gaps and do not reset it.

    smoothing is the weight of the past, in [0, 1): 0 returns the values unchanged.
    """
    if not 0 <= smoothing < 1:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    out: list[float | None] = []
    last = 0.0
    steps = 0
    for value in values:
        number = _number(value)
        if number is None:
            out.append(None)
            continue
        steps += 1
        last = last * smoothing + (1 - smoothing) * number
        # debias: early points would otherwise be pulled towards the 0 the average starts from
        out.append(last / (1 - smoothing**steps) if smoothing > 0 else number)
    return out


def config_hover(config: Mapping[str, Any]) -> str:
    """The run's config as HTML lines for a hover label (escaped: names are user text)."""
    lines = []
    for key in HOVER_CONFIG_KEYS:
        value = config.get(key)
        if value is None or value == "":
            continue
        lines.append(f"{key}: {html.escape(str(value))}")
    return "<br>".join(lines)


def curves_figure(runs: Sequence[CurveRun], metric: str, smoothing: float = 0.0, title: str | None = None) -> go.Figure:
    """Train (dashed) and validation (solid) `metric` vs epoch, one colour per run, config in the hover.

    With smoothing > 0 each series is an EMA line drawn over its raw points as faint markers.
    Traces per run: 2 without smoothing (train, val), 4 with (raw markers first, then the lines).
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    traces: list[dict[str, Any]] = []  # plain dicts: the figure validates them once (go.Scatter + add_trace: twice)
    for index, (label, config, rows) in enumerate(runs):
        colour = run_colour(index)
        epochs = [row.get("epoch") for row in rows]
        hover_config = config_hover(config)
        safe_label = html.escape(label)
        for split, key, dash in (("train", metric, TRAIN_DASH), ("validation", f"val_{metric}", VAL_DASH)):
            values = [_number(row.get(key)) for row in rows]
            # everything non-numeric goes through `text` (one string for the whole trace: cheap to validate),
            # so user text is never parsed as a template
            text = f"<b>{safe_label}</b> · {split}<br>{hover_config}"
            template = "%{text}<br>epoch %{x}: %{y:.4g}<extra></extra>"
            group = f"run{index}"
            if smoothing > 0:
                traces.append(dict(
                    type="scatter", x=epochs, y=values, mode="markers", name=f"{label} · {split} (raw)",
                    marker=dict(color=colour, size=5, opacity=RAW_OPACITY), legendgroup=group, showlegend=False,
                    text=text, hovertemplate=template, meta={"run": index, "split": split, "raw": True},
                ))
                line_values = ema(values, smoothing)
            else:
                line_values = values
            traces.append(dict(
                type="scatter", x=epochs, y=line_values, mode="lines+markers" if smoothing == 0 else "lines",
                name=f"{label} · {split}", line=dict(color=colour, dash=dash, width=2), marker=dict(size=5),
                legendgroup=group, connectgaps=True, text=text, hovertemplate=template,
                meta={"run": index, "split": split, "raw": False},
            ))
    fig = go.Figure(data=traces)
    fig.update_layout(
        title=title or metric.replace("_", " ").capitalize(),
        xaxis_title="epoch",
        yaxis_title=metric,
        hovermode="closest",
        legend=dict(orientation="h", yanchor="top", y=-0.2),
        margin=dict(l=10, r=10, t=50, b=10),
    )
    if metric == "accuracy":
        fig.update_yaxes(rangemode="tozero")
    return fig


def sweep_figure(rows: Sequence[Mapping[str, Any]], x: str = "freeze", y: str = "best_val_accuracy",
                 colour_by: str = "learning_rate") -> go.Figure:
    """Scatter of runs-table rows: `y` against `x` (e.g. best validation accuracy vs freeze index), one trace per
    value of `colour_by`, lines joining points sorted by x. Rows with a non-numeric x or y are left out."""
    groups: dict[str, list[tuple[float, float, str]]] = {}
    for row in rows:
        xv, yv = _number(row.get(x)), _number(row.get(y))
        if xv is None or yv is None:
            continue
        groups.setdefault(str(row.get(colour_by)), []).append((xv, yv, html.escape(str(row.get("name") or row.get("id")))))
    fig = go.Figure()
    for index, (group, points) in enumerate(sorted(groups.items())):
        points.sort()
        fig.add_trace(go.Scatter(
            x=[p[0] for p in points], y=[p[1] for p in points], text=[p[2] for p in points],
            mode="lines+markers", name=f"{colour_by} {group}", line=dict(color=run_colour(index)),
            hovertemplate="%{text}<br>" + x + " %{x}: %{y:.4g}<extra></extra>",
        ))
    fig.update_layout(xaxis_title=x, yaxis_title=y, margin=dict(l=10, r=10, t=30, b=10))
    return fig
