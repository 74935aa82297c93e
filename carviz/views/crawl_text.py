"""A crawl's progress as text lines (the CLI's bars): one per class, then the status and time left."""

from __future__ import annotations

from carviz.data.crawl.job import CrawlState
from carviz.views.formatting import format_left


def progress_lines(state: CrawlState, width: int = 30) -> list[str]:
    """Text progress bars, one per class, and the status, for the CLI."""
    lines = []
    label = max((len(n) for n in state.classes), default=0)
    for name, p in state.classes.items():
        filled = int(round(p.fraction * width))
        lines.append(f"{name:<{label}} [{'#' * filled}{'.' * (width - filled)}] {p.saved}/{p.target}"
                     f"  ({p.candidates} seen, {p.failed} broken, {p.rejected} rejected, {p.state})")
    status = state.status.value if state.status else "never crawled"
    why = state.error or state.reason
    left = format_left(state.eta_seconds)
    lines.append(f"status: {status}" + (f", {left}" if left else "") + (f" - {why}" if why else ""))
    return lines
