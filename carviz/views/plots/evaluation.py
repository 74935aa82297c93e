"""Evaluation figures: confusion-matrix heatmap, per-class accuracy bars, top-k probability bars (pure functions)."""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from carviz.views.formatting import format_accuracy


def confusion_figure(confusion: np.ndarray | Sequence[Sequence[int]], classes: Sequence[str],
                     normalize: bool = False, clickable: bool = False) -> go.Figure:
    """Heatmap of a confusion matrix (rows = true class, columns = predicted), counts written in the cells.

    normalize=True colours by each true class's share (rows sum to 1) and still writes the counts. clickable=True
    lays a transparent square marker on every non-empty cell (a second trace; heatmap cells cannot be selected in
    Plotly), whose customdata is (true index, predicted index): selecting one names its cell.
    """
    counts = np.asarray(confusion, dtype=np.int64)
    n = len(classes)
    if counts.shape != (n, n):
        raise ValueError(f"confusion matrix shape {counts.shape} does not match {n} classes")
    names = [html.escape(str(c)) for c in classes]
    if normalize:
        totals = counts.sum(axis=1, keepdims=True)
        colour = np.divide(counts, totals, out=np.zeros(counts.shape, dtype=float), where=totals > 0)
        hover = "true %{y}<br>predicted %{x}<br>%{text} images (%{z:.1%} of the class)<extra></extra>"
    else:
        colour = counts
        hover = "true %{y}<br>predicted %{x}<br>%{z} images<extra></extra>"
    fig = go.Figure(go.Heatmap(
        z=colour, x=names, y=names, text=counts.astype(str), texttemplate="%{text}", colorscale="Blues",
        hovertemplate=hover, showscale=True,
    ))
    if clickable:
        rows, cols = np.nonzero(counts)
        fig.add_trace(go.Scatter(
            x=[names[j] for j in cols], y=[names[i] for i in rows], mode="markers",
            customdata=np.stack([rows, cols], axis=1) if len(rows) else np.zeros((0, 2), dtype=int),
            marker=dict(symbol="square", size=max(12, min(60, 520 // max(1, n))), color="rgba(0,0,0,0.01)"),
            hovertemplate="true %{y}<br>predicted %{x}<br>%{text} images · click to see them<extra></extra>",
            text=[str(counts[i, j]) for i, j in zip(rows, cols)], showlegend=False, name="cells",
        ))
        fig.update_layout(clickmode="event+select", dragmode=False)
    side = max(320, min(900, 60 * n + 160))
    fig.update_layout(
        xaxis=dict(title="predicted", side="bottom", type="category"),
        yaxis=dict(title="true", autorange="reversed", type="category"),  # first class at the top, like a table
        height=side, margin=dict(l=10, r=10, t=30, b=10),
    )
    return fig


def per_class_accuracy_figure(classes: Sequence[str], accuracy: Sequence[float],
                              counts: Sequence[int] | None = None) -> go.Figure:
    """Horizontal bars of per-class accuracy (recall) in 0..1, written as format_accuracy does; classes without
    images show no bar; a dashed line at chance (1 / classes)."""
    values = [float(a) if a is not None and np.isfinite(a) else None for a in accuracy]
    names = [html.escape(str(c)) for c in classes]
    text = [format_accuracy(v) if v is not None else "no images" for v in values]
    if counts is not None:
        text = [f"{t} of {int(c)}" for t, c in zip(text, counts)]
    fig = go.Figure(go.Bar(
        x=values, y=names, orientation="h", text=text, textposition="outside", cliponaxis=False,
        hovertemplate="%{y}: %{text}<extra></extra>", marker_color="#1f77b4",
    ))
    fig.update_layout(
        # room right of 100% for the labels, which stay readable next to empty (0%) bars
        xaxis=dict(title="accuracy", range=[0, 1.25], tickformat=".0%", tickvals=[0, 0.25, 0.5, 0.75, 1]),
        yaxis=dict(autorange="reversed", type="category"),
        height=max(240, 28 * len(names) + 90), margin=dict(l=10, r=10, t=30, b=10),
    )
    if names:
        fig.add_vline(x=1 / len(names), line=dict(dash="dash", color="grey", width=1),
                      annotation_text=f"chance {format_accuracy(1 / len(names))}", annotation_position="top")
    return fig


def topk_figure(top: Sequence[tuple[str, float]], title: str | None = None) -> go.Figure:
    """Horizontal bars of the top-k (class, probability) pairs, most likely at the top."""
    names = [html.escape(str(name)) for name, _ in top]
    probs = [float(p) for _, p in top]
    fig = go.Figure(go.Bar(
        x=probs, y=names, orientation="h", text=[f"{p:.1%}" for p in probs], textposition="auto",
        hovertemplate="%{y}: %{x:.2%}<extra></extra>",
        marker_color=["#d62728" if i == 0 else "#1f77b4" for i in range(len(probs))],
    ))
    fig.update_layout(
        title=html.escape(title) if title else None,
        xaxis=dict(title="probability", range=[0, 1], tickformat=".0%"),
        yaxis=dict(autorange="reversed", type="category"),
        height=60 + 32 * max(1, len(names)), margin=dict(l=10, r=10, t=40 if title else 10, b=10),
    )
    return fig


def reliability_figure(model: object, scaled: object | None = None, temperature: float | None = None) -> go.Figure:
    """Reliability diagram: each confidence bin's accuracy against its mean confidence (core/calibration.Reliability)
    for the model's own probabilities and, when given, the temperature-scaled ones; the diagonal is perfect
    calibration. ECE in the legend."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot", color="grey"),
                             name="perfectly calibrated", hoverinfo="skip"))
    series = [("model", model, "#d62728")]
    if scaled is not None:
        series.append((f"with temperature {temperature:.2f}" if temperature else "calibrated", scaled, "#1f77b4"))
    for label, rel, colour in series:
        points = [(c, a, n) for c, a, n in zip(rel.confidence, rel.accuracy, rel.counts) if n]
        fig.add_trace(go.Scatter(
            x=[c for c, _, _ in points], y=[a for _, a, _ in points], mode="lines+markers",
            marker=dict(size=[max(6, min(18, 4 + n ** 0.5)) for _, _, n in points], color=colour),
            line=dict(color=colour), name=f"{html.escape(label)} · ECE {rel.ece:.3f}",
            text=[f"{n} images" for _, _, n in points],
            hovertemplate="confidence %{x:.0%}<br>accuracy %{y:.0%}<br>%{text}<extra></extra>",
        ))
    fig.update_layout(xaxis=dict(title="confidence (top class probability)", range=[0, 1], tickformat=".0%"),
                      yaxis=dict(title="accuracy", range=[0, 1], tickformat=".0%"), height=360,
                      margin=dict(l=10, r=10, t=30, b=10), legend=dict(orientation="h", y=-0.25))
    return fig
