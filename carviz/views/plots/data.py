"""Dataset figures: images per class and image problems by kind (pure functions)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go

PROBLEM_KINDS = ("unreadable", "truncated", "tiny", "duplicate")


def class_counts_figure(counts: Mapping[str, int], title: str = "Images per class") -> go.Figure:
    """A bar per class (in the given order), the count written on each bar; a dashed line marks the mean."""
    classes = list(counts)
    values = [int(counts[name]) for name in classes]
    figure = go.Figure(
        go.Bar(
            x=classes,
            y=values,
            text=values,
            textposition="auto",
            marker_color="#4C78A8",
            hovertemplate="%{x}: %{y} images<extra></extra>",
        )
    )
    if values:
        mean = sum(values) / len(values)
        figure.add_hline(y=mean, line_dash="dash", line_color="grey", annotation_text=f"mean {mean:.0f}",
                         annotation_position="top left")
    figure.update_layout(
        title=title,
        xaxis_title="class",
        yaxis_title="images",
        height=320,
        margin=dict(l=40, r=20, t=50, b=40),
        showlegend=False,
    )
    return figure


def problem_counts(kinds: Sequence[str]) -> dict[str, int]:
    """How many problems of each kind (every known kind present, zero when absent; unknown kinds appended)."""
    counts = {kind: 0 for kind in PROBLEM_KINDS}
    for kind in kinds:
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def problems_figure(kinds: Sequence[str], title: str = "Images set aside") -> go.Figure:
    """A horizontal bar per problem kind (unreadable / truncated / tiny / duplicate)."""
    counts = problem_counts(kinds)
    figure = go.Figure(
        go.Bar(
            y=list(counts),
            x=list(counts.values()),
            orientation="h",
            text=list(counts.values()),
            textposition="auto",
            marker_color="#E45756",
            hovertemplate="%{y}: %{x}<extra></extra>",
        )
    )
    figure.update_layout(title=title, height=220, margin=dict(l=90, r=20, t=50, b=30), xaxis_title="images")
    return figure
