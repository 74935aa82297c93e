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


def freeze_position(freeze: Any, layer_count: Any = None) -> int | None:
    """Where a freeze point sits on a freeze-index axis: the index itself, or for "all" the backbone's layer count
    + 1 (training starts after the last layer); None when "all" has no known layer count (or freeze is not one)."""
    if isinstance(freeze, str) and freeze.isdigit():
        freeze = int(freeze)
    if isinstance(freeze, int) and not isinstance(freeze, bool):
        return freeze
    if freeze == "all" and isinstance(layer_count, int) and not isinstance(layer_count, bool) and layer_count > 0:
        return layer_count + 1
    return None


def freeze_axis(positions: Sequence[int], all_positions: Sequence[int] = (), max_ticks: int = 16) -> dict[str, Any]:
    """x-axis settings for freeze indices: a tick at each numeric freeze point (thinned to about max_ticks) and at
    each position of "all" (the layer count + 1, always kept, named "all (N)")."""
    numeric = sorted({int(v) for v in positions})
    alls = {int(v) for v in all_positions}
    if len(numeric) > max_ticks:
        numeric = numeric[::math.ceil(len(numeric) / max_ticks)]
    values = sorted(set(numeric) | alls)
    if not values:
        return {}
    text = [(f"{v} · all ({v})" if v in numeric else f"all ({v})") if v in alls else str(v) for v in values]
    return dict(tickmode="array", tickvals=values, ticktext=text)


def chance_level(rows: Sequence[Mapping[str, Any]]) -> float | None:
    """1 / the number of classes, when the rows that know it (summaries' num_classes) agree; else None."""
    counts = {row.get("num_classes") for row in rows if isinstance(row.get("num_classes"), int)
              and not isinstance(row.get("num_classes"), bool) and row.get("num_classes") > 0}
    return 1 / counts.pop() if len(counts) == 1 else None


def sweep_figure(rows: Sequence[Mapping[str, Any]], y: str = "kept_val_accuracy",
                 colour_by: str = "learning_rate") -> go.Figure:
    """Runs-table rows (summaries) as points of `y` (the kept model's val accuracy) against freeze index, one
    colour per value of `colour_by`; no lines: the runs may differ in more than their freeze point. "all" sits at
    the backbone's layer count + 1 (run.json's model.backbone_layers; left out when unknown); a run that did not
    succeed is an open marker; chance (1 / classes) is a dotted line when the runs agree on their classes."""
    groups: dict[str, list[tuple[int, float, str, bool]]] = {}
    alls: set[int] = set()
    numeric: set[int] = set()
    for row in rows:
        xv, yv = freeze_position(row.get("freeze"), row.get("backbone_layers")), _number(row.get(y))
        if xv is None or yv is None:
            continue
        (alls if row.get("freeze") == "all" else numeric).add(xv)
        finished = row.get("status") == "succeeded" and not row.get("problems")
        text = (f"{html.escape(str(row.get('name') or row.get('id')))}<br>freeze {html.escape(str(row.get('freeze')))}"
                + ("" if finished else f" · {html.escape(str(row.get('status')))}"))
        groups.setdefault(str(row.get(colour_by)), []).append((xv, yv, text, finished))
    fig = go.Figure()
    for index, (group, points) in enumerate(sorted(groups.items())):
        points.sort()
        fig.add_trace(go.Scatter(
            x=[p[0] for p in points], y=[p[1] for p in points], text=[p[2] for p in points], mode="markers",
            name=f"{colour_by} {group}", marker=dict(color=run_colour(index), size=10,
                                                     symbol=["circle" if p[3] else "circle-open" for p in points]),
            hovertemplate="%{text}<br>freeze index %{x}: %{y:.4g}<extra></extra>",
        ))
    chance = chance_level(rows)
    if chance is not None:
        fig.add_hline(y=chance, line=dict(dash="dot", color="grey"), annotation_text=f"chance {chance:.0%}",
                      annotation_position="bottom right")
    fig.update_layout(xaxis_title="freeze index (all = every layer frozen)",
                      yaxis_title="val accuracy (kept: best epoch)" if y == "kept_val_accuracy" else y,
                      margin=dict(l=10, r=10, t=30, b=10))
    fig.update_xaxes(**freeze_axis(sorted(numeric), sorted(alls)))
    return fig
