"""Helpers shared by the tests that run real training jobs: wait for a run's end, read its epochs as written, check
that a state holds for a while."""

from __future__ import annotations

import time
from typing import Any, Callable

from carviz.core.store import Run, Status


def wait_terminal(wait_for: Callable[..., Any], run: Run, timeout: float = 180) -> Status:
    """Poll (with the wait_for fixture) until the run ends; returns its final status."""
    wait_for(lambda: run.status().is_terminal(), timeout, f"{run.id} to end (log:\n{run.log_tail()})")
    return run.status()


def metric_epochs_on_disk(run: Run) -> list[int]:
    """Epoch numbers exactly as written in metrics.csv (no reader-side de-duplication)."""
    lines = run.file("metrics.csv").read_text().splitlines()[1:]
    return [int(line.split(",")[0]) for line in lines if line]


def holds_for(predicate: Callable[[], Any], seconds: float, what: str, poll: float = 0.1) -> None:
    """Check that predicate() stays true for `seconds` (polled), failing at the first moment it is not: for "keeps
    waiting" checks, which no deadline-bound wait can make."""
    deadline = time.monotonic() + seconds
    while True:
        assert predicate(), f"{what} stopped holding {seconds - (deadline - time.monotonic()):.1f} s in"
        if time.monotonic() >= deadline:
            return
        time.sleep(poll)
