"""Dataset figures: images per class and image problems by kind (pure functions)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import altair as alt
import pandas as pd
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


def class_counts_chart(counts: Mapping[str, int], title: str = "Images per class", height: int = 320) -> alt.LayerChart:
    """class_counts_figure as a Vega-Lite chart, for the landing page: a bar per class (in the given order) with its
    count, a dashed mean line. Vega-Lite because Streamlit loads it in a fraction of Plotly's 4.7 MB script, which
    left the first screen's chart an empty box for a second or more while it loaded."""
    frame = pd.DataFrame({"class": list(counts), "images": [int(counts[name]) for name in counts]})
    x = alt.X("class:N", sort=None, title="class", axis=alt.Axis(labelAngle=-30 if len(frame) > 8 else 0))
    base = alt.Chart(frame)
    layers: list[alt.Chart] = [
        base.mark_bar(color="#4C78A8").encode(x=x, y=alt.Y("images:Q", title="images"),
                                              tooltip=[alt.Tooltip("class:N"), alt.Tooltip("images:Q")]),
        base.mark_text(baseline="bottom", dy=-3).encode(x=x, y="images:Q", text="images:Q"),
    ]
    if len(frame):
        mean = pd.DataFrame({"mean": [float(frame["images"].mean())]})
        rule = alt.Chart(mean).mark_rule(color="grey", strokeDash=[5, 4]).encode(y="mean:Q")
        label = alt.Chart(mean).transform_calculate(label="'mean ' + format(datum.mean, '.0f')").mark_text(
            align="left", baseline="bottom", dx=4, dy=-2, color="grey").encode(x=alt.value(0), y="mean:Q",
                                                                               text="label:N")
        layers += [rule, label]
    return alt.layer(*layers).properties(title=title, height=height)
