"""Training-curve figures: loss/accuracy vs epoch (or fraction of the run) for several runs, EMA smoothing, chance."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

import plotly.colors
import plotly.graph_objects as go

from carviz.views.formatting import format_accuracy

METRICS = ("loss", "accuracy")
TRAIN_DASH = "dash"
VAL_DASH = "solid"
RAW_OPACITY = 0.3
X_AXES = ("epoch", "fraction")
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


def _planned_epochs(config: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> float:
    """The run's planned epochs (its config's), else the last epoch it recorded (1 when neither is known)."""
    planned = _number(config.get("epochs"))
    last = max((_number(row.get("epoch")) or 0 for row in rows), default=0)
    return max(planned or 0, last, 1)


def _masked(series: Sequence[Any], keep: Sequence[bool]) -> list[Any]:
    return [value for value, kept in zip(series, keep) if kept]


def _format_loss(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


def add_chance_line(fig: go.Figure, chance: float | None, dash: str = "dash") -> go.Figure:
    """A grey horizontal line at chance level (1 / classes) labelled "chance 25.0 %"; nothing when chance is None."""
    if chance is not None:
        fig.add_hline(y=chance, line=dict(dash=dash, color="grey", width=1),
                      annotation_text=f"chance {format_accuracy(chance)}", annotation_position="bottom right")
    return fig


def curves_figure(runs: Sequence[CurveRun], metric: str, smoothing: float = 0.0, title: str | None = None, *,
                  colours: Sequence[str] | None = None, x_axis: str = "epoch",
                  epoch_range: tuple[float, float] | None = None, chance: float | None = None) -> go.Figure:
    """Train (dashed) and validation (solid) `metric` vs epoch, one colour per run, config in the hover.

    colours: one per run (e.g. compare.run_colours, stable when the selection changes); default: by position.
    x_axis "epoch", or "fraction": epoch / the run's planned epochs, so runs of 8 and 90 epochs align.
    epoch_range (first, last): only those epochs are drawn (the y axis then fits them).
    chance: for accuracy, a dashed grey line at 1 / classes labelled "chance".
    With smoothing > 0 each series is an EMA line drawn over its raw points as faint markers.
    Traces per run: 2 without smoothing (train, val), 4 with (raw markers first, then the lines).
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if x_axis not in X_AXES:
        raise ValueError(f"x_axis must be one of {X_AXES}, got {x_axis!r}")
    show = format_accuracy if metric == "accuracy" else _format_loss
    traces: list[dict[str, Any]] = []  # plain dicts: the figure validates them once (go.Scatter + add_trace: twice)
    for index, (label, config, rows) in enumerate(runs):
        colour = colours[index] if colours is not None and index < len(colours) else run_colour(index)
        epochs = [row.get("epoch") for row in rows]
        keep = [epoch_range is None or (_number(e) is not None and epoch_range[0] <= e <= epoch_range[1])
                for e in epochs]
        planned = _planned_epochs(config, rows)
        xs = [e / planned if x_axis == "fraction" and _number(e) is not None else e for e in epochs]
        hover_config = config_hover(config)
        safe_label = html.escape(label)
        for split, key, dash in (("train", metric, TRAIN_DASH), ("validation", f"val_{metric}", VAL_DASH)):
            values = [_number(row.get(key)) for row in rows]
            # everything non-numeric goes through `text` (one string for the whole trace: cheap to validate),
            # so user text is never parsed as a template; customdata: [epoch, the value as every table shows it]
            text = f"<b>{safe_label}</b> · {split}<br>{hover_config}"
            template = "%{text}<br>epoch %{customdata[0]}: %{customdata[1]}<extra></extra>"
            group = f"run{index}"
            custom = _masked([[e, show(v)] for e, v in zip(epochs, values)], keep)
            if smoothing > 0:
                traces.append(dict(
                    type="scatter", x=_masked(xs, keep), y=_masked(values, keep), mode="markers",
                    name=f"{label} · {split} (raw)",
                    marker=dict(color=colour, size=5, opacity=RAW_OPACITY), legendgroup=group, showlegend=False,
                    text=text, customdata=custom, hovertemplate=template,
                    meta={"run": index, "split": split, "raw": True},
                ))
                line_values = ema(values, smoothing)  # over the whole run, then cut: a zoom does not restart it
            else:
                line_values = values
            traces.append(dict(
                type="scatter", x=_masked(xs, keep), y=_masked(line_values, keep),
                mode="lines+markers" if smoothing == 0 else "lines",
                name=f"{label} · {split}", line=dict(color=colour, dash=dash, width=2), marker=dict(size=5),
                legendgroup=group, connectgaps=True, text=text, hovertemplate=template,
                customdata=custom if smoothing == 0 else
                _masked([[e, show(v)] for e, v in zip(epochs, line_values)], keep),
                meta={"run": index, "split": split, "raw": False},
            ))
    fig = go.Figure(data=traces)
    fig.update_layout(
        title=title or metric.replace("_", " ").capitalize(),
        xaxis_title="epoch" if x_axis == "epoch" else "fraction of the run (epoch / planned epochs)",
        yaxis_title=metric,
        hovermode="closest",
        legend=dict(orientation="h", yanchor="top", y=-0.2),
        margin=dict(l=10, r=10, t=50, b=10),
    )
    if x_axis == "fraction":
        fig.update_xaxes(tickformat=".0%", range=[0, 1.02])
    if metric == "accuracy":
        fig.update_yaxes(rangemode="tozero", tickformat=".0%")
        add_chance_line(fig, chance)
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
