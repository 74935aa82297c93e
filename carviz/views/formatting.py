"""One way to show a number: accuracy as a percentage, times as local wall-clock, durations, sizes, everywhere
(pages and CLI)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from carviz.core.jobs.record import parse_iso
from carviz.core.record_checks import is_number

GIB = 1024**3
MIB = 1024**2
ACCURACY_DIGITS = 1  # "41.7 %": one decimal is finer than any run-to-run noise carviz can measure
STATUS_ICONS = {  # Material icons: they render everywhere (emoji need a font)
    "queued": ":material/schedule:",
    "running": ":material/play_circle:",
    "succeeded": ":material/check_circle:",
    "failed": ":material/error:",
    "stopped": ":material/stop_circle:",
    "lost": ":material/warning:",
    "pruned": ":material/content_cut:",
    "broken": ":material/report:",  # a damaged record (store.BROKEN): shown instead of the job's status
}


def status_label(status: str) -> str:
    """A job status with its icon, e.g. ":material/check_circle: succeeded"."""
    return f"{STATUS_ICONS.get(status, '')} {status}".strip()


def number(value: Any) -> float | int | None:
    """value when it is a finite number (not a bool), else None: record fields are read, never trusted."""
    return value if is_number(value) else None


def format_metric(value: Any, digits: int = 3) -> str:
    """A loss or other metric with `digits` decimals; "–" when it is not a number."""
    return f"{value:.{digits}f}" if number(value) is not None else "–"


def format_number(value: Any, digits: int = 4) -> str:
    """Any recorded value for the CLI: a float to `digits` significant digits, None as "-", anything else as is."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def format_accuracy(value: Any, digits: int = ACCURACY_DIGITS) -> str:
    """An accuracy in 0..1 as a percentage ("41.7 %"); "–" for a missing or non-numeric value."""
    return f"{value * 100:.{digits}f} %" if is_number(value) else "–"


def format_time(value: Any, now: datetime | None = None) -> str:
    """An ISO timestamp as local time: "14:05" today, "Nov 28 14:05" this year, else "2025-11-28 14:05";
    "–" when it cannot be read."""
    moment = parse_iso(value) if not isinstance(value, datetime) else value
    if moment is None:
        return "–"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    local = moment.astimezone()
    today = (now or datetime.now(timezone.utc)).astimezone()
    if local.date() == today.date():
        return local.strftime("%H:%M")
    if local.year == today.year:
        return local.strftime("%b %d %H:%M")
    return local.strftime("%Y-%m-%d %H:%M")


def format_seconds(seconds: Any) -> str:
    """A duration: "42 s", "3 min 05 s", "1 h 02 min"; "–" when it is not a number."""
    if not is_number(seconds):
        return "–"
    whole = int(round(seconds))
    if whole < 60:
        return f"{whole} s"
    minutes, whole = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {whole:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def format_left(seconds: Any) -> str:
    """Time left as a phrase: "about 3 min 05 s left"; "" when there is no estimate."""
    return f"about {format_seconds(seconds)} left" if is_number(seconds) else ""


def format_size(n_bytes: float) -> str:
    """Bytes as a short binary size: '1.2 GiB', '340 MiB', '12 KiB', '0 B'."""
    for unit, scale in (("GiB", GIB), ("MiB", MIB), ("KiB", 1024)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{int(n_bytes)} B"
