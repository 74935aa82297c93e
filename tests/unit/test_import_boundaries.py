"""Package boundaries are import boundaries: everything outside carviz/ml loads neither TensorFlow nor Streamlit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def light_modules() -> list[str]:
    """Every module of carviz/ outside carviz/ml, by dotted name."""
    names = []
    for path in sorted((ROOT / "carviz").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[1:2] == ("ml",):
            continue
        if parts[-1] == "__main__":
            continue
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_everything_outside_ml_imports_without_tensorflow_or_streamlit() -> None:
    modules = light_modules()
    assert "carviz.core.jobs.harness" in modules and "carviz.cli" in modules and "carviz.views.compare" in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "heavy = sorted(m for m in ('tensorflow', 'keras', 'streamlit', 'jax', 'torch', 'ray') if m in sys.modules)\n"
        "print(' '.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"loaded by importing carviz outside ml/: {result.stdout.strip()}"


def test_the_ml_package_is_where_tensorflow_comes_in() -> None:
    code = "import sys, carviz.ml.callbacks; print('keras' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("True")  # the check above can fail: heavy imports are detectable
