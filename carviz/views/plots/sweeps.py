"""Sweep figures: validation accuracy against freeze index (mean ± std over seeds), training time and parameters;
the points behind them and the verdict on a winner (the sweep table, the chart and `sweep-show` share these)."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from carviz.views.formatting import ACCURACY_DIGITS, format_accuracy
from carviz.views.plots.curves import add_chance_line, freeze_axis, freeze_position, run_colour

POINT_COLUMNS = ("backbone", "learning_rate", "freeze", "freeze_index", "mean", "std", "n", "run_ids", "layer",
                 "seconds", "trainable_params", "n_pruned", "n_unfinished", "excluded")
VALUE = "kept_val_accuracy"  # the kept model's (the best-validation epoch), as every table says
VALUE_TITLE = "val accuracy (kept: best epoch)"
FINISHED = "succeeded"
BAND_OPACITY = 0.18
EXCLUDED_MARKERS = {"pruned": "x-thin-open", "unfinished": "circle-open"}


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


def _kind(row: Mapping[str, Any]) -> str:
    """finished (counts in mean ± std), pruned, or unfinished (queued, running, stopped, lost, failed, broken)."""
    if row.get("status") == FINISHED and not row.get("problems"):
        return "finished"
    return "pruned" if row.get("status") == "pruned" else "unfinished"


def sweep_points(summaries: Sequence[Mapping[str, Any]],
                 layer_counts: Mapping[str, int] | None = None) -> pd.DataFrame:
    """One row per (backbone, learning rate, freeze point) over the runs of a sweep (one per seed): mean and sample
    std of the kept model's val accuracy over its finished runs (n of them), every run id, the layer name at the
    freeze index (from the runs' records), the mean training seconds and trainable parameters. Pruned and unfinished
    runs are left out of mean, std and n: counted in n_pruned / n_unfinished and listed in `excluded` (id, status,
    kind, value so far, pruned_at_epoch) to be drawn as their own markers.

    freeze_index is the numeric x: the freeze point itself, or for "all" the backbone's layer count + 1 (layer_counts
    by backbone, else the runs' own backbone_layers), else one past the largest freeze index of that backbone.
    Sorted by backbone, learning rate, index."""
    counts = dict(layer_counts or {})
    groups: dict[tuple[str, float, Any], list[Mapping[str, Any]]] = {}
    for row in summaries:
        lr = _number(row.get("learning_rate"))
        key = (str(row.get("backbone")), lr if lr is not None else math.nan, row.get("freeze"))
        groups.setdefault(key, []).append(row)
        layers = row.get("backbone_layers")
        if isinstance(layers, int) and not isinstance(layers, bool) and layers > 0:
            counts.setdefault(str(row.get("backbone")), layers)
    records = []
    for (backbone, lr, freeze), rows in groups.items():
        finished = [r for r in rows if _kind(r) == "finished"]
        values = [v for v in (_number(r.get(VALUE)) for r in finished) if v is not None]
        timed = finished or rows
        seconds = [v for v in (_number(r.get("wall_seconds")) or _number(r.get("seconds")) for r in timed)
                   if v is not None]
        params = [v for v in (_number(r.get("trainable_params")) for r in rows) if v is not None]
        layer = next((str(r["layer"]) for r in rows if r.get("layer")), None)
        excluded = [{"id": str(r.get("id")), "status": str(r.get("status")), "kind": _kind(r),
                     "value": _number(r.get(VALUE)), "pruned_at_epoch": r.get("pruned_at_epoch")}
                    for r in rows if _kind(r) != "finished"]
        records.append({
            "backbone": backbone, "learning_rate": lr, "freeze": freeze,
            "freeze_index": freeze_position(freeze, counts.get(backbone)),
            "mean": _mean(values), "std": _std(values) if values else None, "n": len(values),
            "run_ids": [str(r.get("id")) for r in rows], "layer": layer,
            "seconds": _mean(seconds), "trainable_params": _mean(params),
            "n_pruned": sum(1 for e in excluded if e["kind"] == "pruned"),
            "n_unfinished": sum(1 for e in excluded if e["kind"] == "unfinished"), "excluded": excluded,
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


def point_label(point: Mapping[str, Any]) -> str:
    """One point (configuration) in words: backbone · lr · freeze."""
    return f"{series_label(point['backbone'], point['learning_rate'])} · freeze {point['freeze']}"


def points_text(difference: float) -> str:
    """A difference of two accuracies in percentage points, e.g. "5.0 points"."""
    return f"{difference * 100:.{ACCURACY_DIGITS}f} points"


def point_stats(point: Mapping[str, Any]) -> str:
    """mean ± std (n=…) of a point's kept val accuracy in percent, e.g. "85.0 ± 5.0 % (n=3)"; "–" for the mean
    of a point without finished runs."""
    mean, std = _number(point.get("mean")), _number(point.get("std"))
    if mean is None:
        return f"– (n={int(point.get('n') or 0)})"
    return f"{mean_std_text(mean, std)} (n={int(point.get('n') or 0)})"


def mean_std_text(mean: float, std: float | None) -> str:
    """Accuracies' mean ± std in percent, one decimal as format_accuracy writes it: "85.0 ± 5.0 %"."""
    return f"{mean * 100:.{ACCURACY_DIGITS}f} ± {(std or 0.0) * 100:.{ACCURACY_DIGITS}f} %"


def verdict(points: pd.DataFrame) -> dict[str, Any]:
    """The winner, named only when it is clear: the best point (mean over its finished runs) is ahead of the
    runner-up by more than the spread, the larger of the two points' sample std over seeds. With one run on either
    side the spread is unknown, so there is no clear winner. Returns {"clear", "winner", "runner_up" (point dicts
    or None), "margin", "spread", "text"}; the text names both when there is no clear winner."""
    ranked = [] if points.empty else sorted(
        (p for p in points.to_dict("records") if _number(p.get("mean")) is not None and p.get("n")),
        key=lambda p: p["mean"], reverse=True)
    result: dict[str, Any] = {"clear": False, "winner": None, "runner_up": None, "margin": None, "spread": None}
    if not ranked:
        return {**result, "text": "no finished runs yet: no winner"}
    if len(ranked) == 1:
        return {**result, "text": f"one configuration so far: {point_label(ranked[0])} {point_stats(ranked[0])}"}
    top, second = ranked[0], ranked[1]
    margin = top["mean"] - second["mean"]
    both = f"{point_label(top)} {point_stats(top)} and {point_label(second)} {point_stats(second)}"
    result.update(margin=margin)
    if top["n"] < 2 or second["n"] < 2:
        return {**result, "text": f"no clear winner: {both} are {points_text(margin)} apart, and with one finished "
                                  "run the spread is unknown"}
    spread = max(_number(top.get("std")) or 0.0, _number(second.get("std")) or 0.0)
    result.update(spread=spread)
    if margin > spread:
        return {**result, "clear": True, "winner": top, "runner_up": second,
                "text": f"winner: {point_label(top)} {point_stats(top)}, ahead of {point_label(second)} "
                        f"{point_stats(second)} by {points_text(margin)}, more than the spread "
                        f"{points_text(spread)}"}
    return {**result, "text": f"no clear winner: {both} are {points_text(margin)} apart, within the spread "
                              f"{points_text(spread)}"}


def freeze_figure(points: pd.DataFrame, layer_names: Mapping[str, Sequence[str]] | None = None,
                  title: str = "Validation accuracy by freeze point", chance: float | None = None) -> go.Figure:
    """The kept model's val accuracy (mean over the finished runs of each point) against freeze index, one line per
    (backbone, learning rate), a mean ± std band, "n=…" on every point, hover with the layer training starts at.
    Pruned and unfinished runs are their own markers (not in the mean); "all" sits at the backbone's layer count + 1
    and the axis names it; chance (1 / classes) is a dotted line. layer_names: backbone → layer names in order
    (index 1 = first), used when given; else the points' own `layer` column.

    Each marker's customdata is [run ids joined by ",", layer name] (what a click selects). Traces per series:
    band (when any std > 0), the line, then one trace per kind of excluded run present; meta says which
    ({"band": bool, "kind": "mean" | "pruned" | "unfinished"})."""
    fig = go.Figure()
    if not points.empty:
        for number, ((backbone, lr), group) in enumerate(points.groupby(["backbone", "learning_rate"], sort=True)):
            group = group.sort_values("freeze_index")
            colour = run_colour(number)
            names = (layer_names or {}).get(backbone)
            layer_of: dict[int, str] = {}
            for index, layer in zip(group["freeze_index"], group["layer"]):
                if names and 1 <= index <= len(names):
                    layer_of[int(index)] = names[index - 1]
                elif names and index > len(names):
                    layer_of[int(index)] = "(all frozen: only the head trains)"
                else:
                    layer_of[int(index)] = layer if isinstance(layer, str) else ""
            label = series_label(backbone, lr)
            scored = group[group["mean"].notna()]
            if not scored.empty:
                x = [int(v) for v in scored["freeze_index"]]
                mean = [float(v) for v in scored["mean"]]
                std = [float(v) if v is not None and not pd.isna(v) else 0.0 for v in scored["std"]]
                if any(s > 0 for s in std):
                    upper = [m + s for m, s in zip(mean, std)]
                    lower = [m - s for m, s in zip(mean, std)]
                    fig.add_trace(go.Scatter(
                        x=x + x[::-1], y=upper + lower[::-1], fill="toself", fillcolor=colour, opacity=BAND_OPACITY,
                        line=dict(width=0), hoverinfo="skip", showlegend=False, legendgroup=label,
                        name=f"{label} ± std", meta={"band": True, "kind": "band"},
                    ))
                customdata = [[",".join(ids), layer_of[i]] for ids, i in zip(scored["run_ids"], x)]
                hover = [
                    f"freeze {freeze} · from <b>{html.escape(layer_of[i]) or '?'}</b><br>"
                    f"val acc (kept) {mean_std_text(m, s)} (n={n} finished)"
                    + (f"<br>not in the mean: {p} pruned, {u} unfinished" if p or u else "")
                    for freeze, i, m, s, n, p, u in zip(scored["freeze"], x, mean, std, scored["n"],
                                                        scored["n_pruned"], scored["n_unfinished"])
                ]
                fig.add_trace(go.Scatter(
                    x=x, y=mean, mode="lines+markers+text", name=label, legendgroup=label,
                    line=dict(color=colour, width=2), marker=dict(size=9), customdata=customdata,
                    text=[f"n={n}" for n in scored["n"]], textposition="top center", hovertext=hover,
                    hovertemplate=f"<b>{html.escape(label)}</b><br>%{{hovertext}}<extra></extra>",
                    meta={"band": False, "kind": "mean"},
                ))
            for kind, symbol in EXCLUDED_MARKERS.items():
                marks = [(int(i), e, freeze) for i, excluded, freeze in
                         zip(group["freeze_index"], group["excluded"], group["freeze"])
                         for e in excluded if e["kind"] == kind and e["value"] is not None]
                if not marks:
                    continue
                fig.add_trace(go.Scatter(
                    x=[i for i, _, _ in marks], y=[e["value"] for _, e, _ in marks], mode="markers",
                    name=f"{label} · {kind} (not in the mean)", legendgroup=label,
                    marker=dict(color=colour, size=10, symbol=symbol, line=dict(width=2, color=colour)),
                    customdata=[[e["id"], layer_of.get(i, "")] for i, e, _ in marks],
                    hovertext=[f"freeze {freeze} · run {html.escape(e['id'])}: {e['status']}"
                               + (f" at epoch {e['pruned_at_epoch']}" if e.get("pruned_at_epoch") else "")
                               + f"<br>val acc so far {format_accuracy(e['value'])} (not in the mean)"
                               for i, e, freeze in marks],
                    hovertemplate=f"<b>{html.escape(label)}</b><br>%{{hovertext}}<extra></extra>",
                    meta={"band": False, "kind": kind},
                ))
    add_chance_line(fig, chance, dash="dot")
    fig.update_layout(
        title=title, xaxis_title="freeze index (training starts at this layer; all = every layer frozen)",
        yaxis_title=VALUE_TITLE, hovermode="closest", clickmode="event+select",
        legend=dict(orientation="h", yanchor="top", y=-0.2), margin=dict(l=10, r=10, t=50, b=10),
    )
    if not points.empty:
        fig.update_xaxes(**freeze_axis(
            [int(i) for i, f in zip(points["freeze_index"], points["freeze"]) if f != "all"],
            [int(i) for i, f in zip(points["freeze_index"], points["freeze"]) if f == "all"]))
    fig.update_yaxes(range=[0, 1.05], tickformat=".0%")
    return fig


def runs_scatter_figure(rows: Sequence[Mapping[str, Any]], x: str, x_title: str, title: str,
                        log_x: bool = False) -> go.Figure:
    """The kept model's val accuracy of each run against a per-run quantity `x` (e.g. wall_seconds,
    trainable_params), one colour per (backbone, learning rate); customdata = [run id, run name]. Runs without x or
    y are left out."""
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
            customdata=[[str(r.get("id")), html.escape(str(r.get("name") or "")),
                         format_accuracy(_number(r.get(VALUE)))] for r in members],
            hovertemplate="%{customdata[1]}<br>" + html.escape(x_title) + " %{x:,.4g}<br>val acc (kept) "
                          "%{customdata[2]}<extra></extra>",
        ))
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=VALUE_TITLE, hovermode="closest",
                      legend=dict(orientation="h", yanchor="top", y=-0.2), margin=dict(l=10, r=10, t=50, b=10))
    fig.update_yaxes(tickformat=".0%")  # accuracy reads as a percentage on every chart
    if log_x:
        fig.update_xaxes(type="log")
    return fig


def time_figure(rows: Sequence[Mapping[str, Any]]) -> go.Figure:
    """Kept val accuracy against training time (wall seconds, else the epochs' seconds), one point per run."""
    prepared = [{**row, "time": _number(row.get("wall_seconds")) or _number(row.get("seconds"))} for row in rows]
    return runs_scatter_figure(prepared, "time", "training time (s)", "Validation accuracy vs training time")


def params_figure(rows: Sequence[Mapping[str, Any]]) -> go.Figure:
    """Kept val accuracy against trainable parameters (log scale), one point per run."""
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
