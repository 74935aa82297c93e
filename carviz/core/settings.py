"""Paths and environment: where runs, data and the Keras cache live (CARVIZ_HOME and friends)."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the checkout: carviz/core/settings.py is two below it


def home() -> Path:
    """The folder holding runs/ and data/: $CARVIZ_HOME, else the project checkout."""
    return Path(os.environ.get("CARVIZ_HOME") or PROJECT_ROOT).resolve()


def runs_dir() -> Path:
    """Where run records live: $CARVIZ_RUNS, else <home>/runs."""
    return Path(os.environ.get("CARVIZ_RUNS") or home() / "runs").resolve()


def data_dir() -> Path:
    """Where image datasets live: $CARVIZ_DATA, else <home>/data."""
    return Path(os.environ.get("CARVIZ_DATA") or home() / "data").resolve()


def cache_dir() -> Path:
    """Where computed caches (frozen features) live: $CARVIZ_CACHE, else <home>/cache."""
    return Path(os.environ.get("CARVIZ_CACHE") or home() / "cache").resolve()


def keras_home() -> Path:
    """Keras' cache folder (downloaded weights go to <this>/models): $KERAS_HOME, else ~/.keras."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")


def safe_join(root: Path, *parts: str) -> Path:
    """Join `parts` under `root`, refusing any result that escapes it (.., absolute parts, links out)."""
    root = Path(root).resolve()
    candidate = root.joinpath(*parts).resolve()
    if candidate != root and root not in candidate.parents:
        raise ValueError(f"path {'/'.join(parts)!r} escapes {root}")
    return candidate


def resolve_dataset(dataset: str) -> Path:
    """A dataset given by name (a folder under data/) or by path; must exist."""
    as_path = Path(dataset).expanduser()
    if as_path.is_absolute() or dataset.startswith("."):
        path = as_path.resolve()
    else:
        path = safe_join(data_dir(), dataset)
    if not path.is_dir():
        raise FileNotFoundError(f"dataset {dataset!r} not found (looked in {path})")
    return path


def slots_dir() -> Path:
    """Where the local accelerator slot locks and the waiting queue live: <runs>/.slots."""
    return runs_dir() / ".slots"


def _settings_file() -> dict:
    import json

    try:
        data = json.loads((home() / "settings.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def ray_address() -> str:
    """The Ray cluster jobs may be submitted to (its dashboard address, e.g. http://head:8265):
    $CARVIZ_RAY_ADDRESS, else "ray_address" in <home>/settings.json, else "" (no cluster)."""
    value = os.environ.get("CARVIZ_RAY_ADDRESS") or _settings_file().get("ray_address") or ""
    return value.strip() if isinstance(value, str) else ""


def default_backend() -> str:
    """Where jobs run unless the user picks: $CARVIZ_BACKEND ("local" or "ray"), else local."""
    value = (os.environ.get("CARVIZ_BACKEND") or "local").strip().lower()
    if value not in ("local", "ray"):
        raise ValueError(f"CARVIZ_BACKEND must be 'local' or 'ray', got {value!r}")
    return value
