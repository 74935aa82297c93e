"""Package boundaries are import boundaries: everything outside carviz/ml loads neither TensorFlow nor Streamlit
(the one place these are checked by importing; other tests need not repeat it)."""

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


# Modules of ml/ that must stay light: what pages import before any training (the Layers page's registry, the LR
# test's reader), and the trainer's entry and data step (a queued job waits, a bad dataset fails, without TensorFlow).
LIGHT_ML_MODULES = ("carviz.ml.backbones", "carviz.ml.lr_range", "carviz.ml.train", "carviz.ml.train_data")


def test_light_ml_modules_load_no_keras_and_the_rest_of_ml_does() -> None:
    code = (
        "import importlib, sys\n"
        f"for name in {LIGHT_ML_MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in ('tensorflow', 'keras', 'streamlit') if m in sys.modules))\n"
        "import carviz.ml.callbacks\n"
        "print('keras' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    light, heavy = result.stdout.strip().splitlines()[-2:]
    assert light == "[]", f"loaded by {LIGHT_ML_MODULES}: {light}"
    assert heavy == "True"  # the checks here can fail: heavy imports are detectable


def test_no_module_outside_ml_imports_tensorflow_even_inside_a_function() -> None:
    """The rule holds for imports inside functions too (a lazy import is still TensorFlow outside ml/): only
    carviz/ml imports tensorflow or keras, by the source of every other module."""
    import ast

    offenders = []
    for path in sorted((ROOT / "carviz").rglob("*.py")):
        if path.relative_to(ROOT / "carviz").parts[0] == "ml":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path.relative_to(ROOT)}:{node.lineno} {name}" for name in names
                          if name.split(".")[0] in ("tensorflow", "keras")]
    assert not offenders, offenders
