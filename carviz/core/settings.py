"""Paths and environment: where runs, data and the Keras cache live (CARVIZ_HOME and friends)."""

from __future__ import annotations

import os
import unicodedata
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


def safe_name(name: str) -> str:
    """Validate a name (dataset, class or file) as one safe path component; return it NFC-normalized.

    Any Unicode is fine (e.g. Korean); refused: empty, ".", "..", a leading dot (hidden),
    "/" or "\\", NUL and other control characters, more than 255 bytes in UTF-8.
    """
    if not isinstance(name, str):
        raise ValueError(f"name must be a string, got {type(name).__name__}")
    # macOS writes decomposed (NFD) Hangul in zips; normalize so one class never appears twice
    norm = unicodedata.normalize("NFC", name)
    if norm.strip() == "":
        raise ValueError("name is empty")
    if norm in (".", ".."):
        raise ValueError(f"name {name!r} is not allowed")
    if "/" in norm or "\\" in norm:
        raise ValueError(f"name {name!r} contains a path separator")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in norm):
        raise ValueError(f"name {name!r} contains NUL or a control character")
    if norm.startswith("."):
        raise ValueError(f"name {name!r} starts with a dot (hidden names are reserved)")
    if norm != norm.strip():
        raise ValueError(f"name {name!r} has leading or trailing spaces")
    if len(norm.encode("utf-8")) > 255:
        raise ValueError(f"name {name[:20]!r}... is longer than 255 bytes")
    return norm


def dataset_name(name: str) -> str:
    """A dataset name: exactly one folder under data/ (no separators, no "..", not absolute, not hidden).

    ValueError saying why not; a dataset elsewhere is given as an absolute path (`--dataset-path`)."""
    try:
        return safe_name(name)
    except ValueError as exc:
        raise ValueError(f"dataset {name!r} is not a dataset name ({exc}); a dataset name is one folder under "
                         f"{data_dir()}") from None


def resolve_dataset(dataset: str) -> Path:
    """A config's dataset: a name (one folder under data/, never leaving it) or an absolute path (as
    `--dataset-path` records it); must exist. Relative paths, "..", "~" are refused with a clear error."""
    text = str(dataset)
    if os.path.isabs(text):
        path = Path(text).resolve()
    else:
        try:
            dataset_name(text)  # refuses "../x", "a/b", ".x", "~/x" ...
        except ValueError as exc:
            raise ValueError(f"{exc}; a dataset elsewhere is given by its absolute path") from None
        path = safe_join(data_dir(), text)
    if not path.is_dir():
        raise FileNotFoundError(f"dataset {text!r} not found (looked in {path})")
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
    """Where jobs run unless the user picks: $CARVIZ_BACKEND (a backend's name: local or ray), else local. The
    name is checked where a backend is looked up (jobs.registry.get_backend)."""
    return (os.environ.get("CARVIZ_BACKEND") or "local").strip().lower()
