"""Sweep figures: validation accuracy against freeze index (mean ± std over seeds), training time and parameters."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from carviz.views.plots.curves import run_colour

POINT_COLUMNS = ("backbone", "learning_rate", "freeze", "freeze_index", "mean", "std", "n", "run_ids", "layer",
                 "seconds", "trainable_params")
VALUE = "best_val_accuracy"
BAND_OPACITY = 0.18


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _std(values: Sequence[float]) -> float:
    """Sample standard deviation (n - 1); 0 for a single value."""
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _freeze_index(freeze: Any, layer_count: int | None) -> int | None:
    if isinstance(freeze, int) and not isinstance(freeze, bool):
        return freeze
    if freeze == "all" and layer_count:
        return layer_count + 1
    return None


def sweep_points(summaries: Sequence[Mapping[str, Any]],
                 layer_counts: Mapping[str, int] | None = None) -> pd.DataFrame:
    """One row per (backbone, learning rate, freeze point) over the runs of a sweep (one per seed):
    mean and sample std of their best validation accuracy, n runs with a value, every run id, the layer name at the
    freeze index (from the runs' records), and the mean training seconds and trainable parameters.

    freeze_index is the numeric x: the freeze point itself, or for "all" the layer count + 1 (layer_counts by
    backbone), else one past the largest freeze index of that backbone. Sorted by backbone, learning rate, index.
    """
    groups: dict[tuple[str, float, Any], list[Mapping[str, Any]]] = {}
    for row in summaries:
        lr = _number(row.get("learning_rate"))
        key = (str(row.get("backbone")), lr if lr is not None else math.nan, row.get("freeze"))
        groups.setdefault(key, []).append(row)
    records = []
    for (backbone, lr, freeze), rows in groups.items():
        values = [v for v in (_number(r.get(VALUE)) for r in rows) if v is not None]
        seconds = [v for v in (_number(r.get("wall_seconds")) or _number(r.get("seconds")) for r in rows)
                   if v is not None]
        params = [v for v in (_number(r.get("trainable_params")) for r in rows) if v is not None]
        layer = next((str(r["layer"]) for r in rows if r.get("layer")), None)
        records.append({
            "backbone": backbone, "learning_rate": lr, "freeze": freeze,
            "freeze_index": _freeze_index(freeze, (layer_counts or {}).get(backbone)),
            "mean": _mean(values), "std": _std(values) if values else None, "n": len(values),
            "run_ids": [str(r.get("id")) for r in rows], "layer": layer,
            "seconds": _mean(seconds), "trainable_params": _mean(params),
        })
    frame = pd.DataFrame.from_records(records, columns=list(POINT_COLUMNS))
    if frame.empty:
        return frame
    for backbone in frame["backbone"].unique():  # "all" without a layer count: one past the largest index
        mine = frame["backbone"] == backbone
        missing = mine & frame["freeze_index"].isna()
        if missing.any():
            known = frame.loc[mine, "freeze_index"].dropna()
            frame.loc[missing, "freeze_index"] = (int(known.max()) + 1) if not known.empty else 1
    frame["freeze_index"] = frame["freeze_index"].astype(int)
    return frame.sort_values(["backbone", "learning_rate", "freeze_index"]).reset_index(drop=True)


def _lr_text(lr: float) -> str:
    return f"{lr:.0e}" if isinstance(lr, float) and math.isfinite(lr) else str(lr)


def series_label(backbone: str, lr: float) -> str:
    """Legend label of one (backbone, learning rate) line."""
    return f"{backbone} · lr {_lr_text(lr)}"


def freeze_figure(points: pd.DataFrame, layer_names: Mapping[str, Sequence[str]] | None = None,
                  title: str = "Validation accuracy by freeze point") -> go.Figure:
    """Best validation accuracy (mean over seeds) against freeze index, one line per (backbone, learning rate),
    a mean ± std band, hover with the layer training starts at. layer_names: backbone → layer names in order
    (index 1 = first), used when given; else the points' own `layer` column.

    Each marker's customdata is [run ids joined by ",", layer name] (what a click selects).
    Traces per series: band (when any std > 0), then the line.
    """
    fig = go.Figure()
    if not points.empty:
        for number, ((backbone, lr), group) in enumerate(points.groupby(["backbone", "learning_rate"], sort=True)):
            group = group[group["mean"].notna()].sort_values("freeze_index")
            if group.empty:
                continue
            colour = run_colour(number)
            names = (layer_names or {}).get(backbone)
            layers = []
            for index, layer in zip(group["freeze_index"], group["layer"]):
                if names and 1 <= index <= len(names):
                    layers.append(names[index - 1])
                elif names and index > len(names):
                    layers.append("(all frozen: only the head trains)")
                else:
                    layers.append(layer if isinstance(layer, str) else "")
            x = [int(v) for v in group["freeze_index"]]
            mean = [float(v) for v in group["mean"]]
            std = [float(v) if v is not None and not pd.isna(v) else 0.0 for v in group["std"]]
            label = series_label(backbone, lr)
            if any(s > 0 for s in std):
                upper = [m + s for m, s in zip(mean, std)]
                lower = [m - s for m, s in zip(mean, std)]
                fig.add_trace(go.Scatter(
                    x=x + x[::-1], y=upper + lower[::-1], fill="toself", fillcolor=colour, opacity=BAND_OPACITY,
                    line=dict(width=0), hoverinfo="skip", showlegend=False, legendgroup=label,
                    name=f"{label} ± std", meta={"band": True},
                ))
            customdata = [[",".join(ids), layer] for ids, layer in zip(group["run_ids"], layers)]
            hover = [
                f"freeze {freeze} · from <b>{html.escape(layer) or '?'}</b><br>"
                f"val acc {m:.4f} ± {s:.4f} (n={n})"
                for freeze, layer, m, s, n in zip(group["freeze"], layers, mean, std, group["n"])
            ]
            fig.add_trace(go.Scatter(
                x=x, y=mean, mode="lines+markers", name=label, legendgroup=label, line=dict(color=colour, width=2),
                marker=dict(size=9), customdata=customdata, text=hover,
                hovertemplate=f"<b>{html.escape(label)}</b><br>%{{text}}<extra></extra>", meta={"band": False},
            ))
    fig.update_layout(
        title=title, xaxis_title="freeze index (training starts at this layer)", yaxis_title="best val accuracy",
        hovermode="closest", clickmode="event+select", legend=dict(orientation="h", yanchor="top", y=-0.2),
        margin=dict(l=10, r=10, t=50, b=10),
    )
    return fig


def runs_scatter_figure(rows: Sequence[Mapping[str, Any]], x: str, x_title: str, title: str,
                        log_x: bool = False) -> go.Figure:
    """Best validation accuracy of each run against a per-run quantity `x` (e.g. wall_seconds, trainable_params),
    one colour per (backbone, learning rate); customdata = [run id, run name]. Runs without x or y are left out."""
    groups: dict[tuple[str, float], list[Mapping[str, Any]]] = {}
    for row in rows:
        if _number(row.get(x)) is None or _number(row.get(VALUE)) is None:
            continue
        groups.setdefault((str(row.get("backbone")), float(row.get("learning_rate") or 0)), []).append(row)
    fig = go.Figure()
    for number, ((backbone, lr), members) in enumerate(sorted(groups.items())):
        label = series_label(backbone, lr)
        fig.add_trace(go.Scatter(
            x=[_number(r.get(x)) for r in members], y=[_number(r.get(VALUE)) for r in members], mode="markers",
            name=label, marker=dict(color=run_colour(number), size=9),
            customdata=[[str(r.get("id")), html.escape(str(r.get("name") or ""))] for r in members],
            hovertemplate="%{customdata[1]}<br>" + html.escape(x_title) + " %{x:,.4g}<br>val acc %{y:.4f}<extra></extra>",
        ))
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title="best val accuracy", hovermode="closest",
                      legend=dict(orientation="h", yanchor="top", y=-0.2), margin=dict(l=10, r=10, t=50, b=10))
    if log_x:
        fig.update_xaxes(type="log")
    return fig


def time_figure(rows: Sequence[Mapping[str, Any]]) -> go.Figure:
    """Best validation accuracy against training time (wall seconds, else the epochs' seconds), one point per run."""
    prepared = [{**row, "time": _number(row.get("wall_seconds")) or _number(row.get("seconds"))} for row in rows]
    return runs_scatter_figure(prepared, "time", "training time (s)", "Validation accuracy vs training time")


def params_figure(rows: Sequence[Mapping[str, Any]]) -> go.Figure:
    """Best validation accuracy against trainable parameters (log scale), one point per run."""
    return runs_scatter_figure(rows, "trainable_params", "trainable parameters",
                               "Validation accuracy vs trainable parameters", log_x=True)


def selected_run_ids(selection: Mapping[str, Any] | None) -> list[str]:
    """Run ids from a Plotly selection event (st.plotly_chart on_select): every selected point's customdata[0],
    split on commas, first-seen order, duplicates dropped."""
    points = ((selection or {}).get("selection") or {}).get("points") or []
    ids: list[str] = []
    for point in points:
        data = point.get("customdata") if isinstance(point, Mapping) else None
        if not data:
            continue
        for run_id in str(data[0]).split(","):
            if run_id and run_id not in ids:
                ids.append(run_id)
    return ids
