"""Backends by name, and the backend that answers for a given record (from its launch.json)."""

from __future__ import annotations

from typing import Any

from carviz.core.jobs.backend import Backend
from carviz.core.jobs.hosted import WORKER_KEY, WorkerHosted
from carviz.core.jobs.local import LocalBackend
from carviz.core.jobs.ray_backend import RayBackend

BACKENDS: dict[str, Backend] = {backend.name: backend for backend in (LocalBackend(), RayBackend())}
NAMES = tuple(BACKENDS)


def get_backend(name: str | None = None) -> Backend:
    """The backend called `name` (default: the configured one, $CARVIZ_BACKEND, else local)."""
    configured = name is None
    if name is None:
        from carviz.core import settings

        name = settings.default_backend()
    try:
        return BACKENDS[name]
    except KeyError:
        where = "CARVIZ_BACKEND" if configured else "backend"
        raise ValueError(f"{where} must be one of {', '.join(NAMES)}; got {name!r}") from None


def backend_of(launch: dict[str, Any]) -> Backend:
    """The backend answering for a job launched as `launch` (its launch.json) says: local when it names none (never
    launched, or written before backends were recorded), wrapped in WorkerHosted when a worker runs it."""
    name = launch.get("backend")
    backend = BACKENDS.get(name) if isinstance(name, str) else None
    backend = backend or BACKENDS["local"]
    return WorkerHosted(backend) if launch.get(WORKER_KEY) else backend
