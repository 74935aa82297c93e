"""Real transfer learning on ../shared/data/cars-mini with real ImageNet MobileNet weights (offline)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from carviz.runs import Run, list_runs

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("CARVIZ_SHARED") or REPO_ROOT.parent / "shared")
SHARED_DATA, SHARED_KERAS_HOME = SHARED / "data", SHARED / "keras_home"


def needs_shared(path: Path, what: str):
    return pytest.mark.skipif(not path.exists(), reason=f"needs {what} at {path} (../shared is absent here)")

pytestmark = [
    pytest.mark.slow,
    needs_shared(SHARED_DATA / "cars-mini", "the real car photos ../shared/data/cars-mini"),
    needs_shared(SHARED_KERAS_HOME / "models" / "mobilenet_2_5_224_tf_no_top.h5", "real ImageNet MobileNet weights"),
]


def writable_copy(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    for path in [dest, *dest.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)
    return dest


def train_best_val_accuracy(home: Path, keras_home: Path, weights: str) -> float:
    """Train MobileNet a0.25 (whole backbone frozen, pooled head) for 3 epochs as a job; best val accuracy."""
    env = dict(os.environ, CARVIZ_HOME=str(home), KERAS_HOME=str(keras_home), TF_CPP_MIN_LOG_LEVEL="2")
    before = {run.id for run in list_runs(home / "runs")}
    result = subprocess.run(
        [sys.executable, "-m", "carviz", "train", "--foreground", "--dataset", str(SHARED_DATA / "cars-mini"),
         "--backbone", "mobilenet", "--alpha", "0.25", "--weights", weights, "--image-size", "224",
         "--freeze", "all", "--head", "recommended", "--epochs", "3", "--batch-size", "8", "--lr", "1e-2",
         "--precision", "float32", "--name", f"transfer {weights}"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = [run for run in list_runs(home / "runs") if run.id not in before]
    rows = Run(run.path).metrics()
    assert len(rows) == 3
    return max(row["val_accuracy"] for row in rows)


def test_imagenet_mobilenet_transfers_to_shared_cars_mini_and_random_init_does_not(tmp_path):
    keras_home = writable_copy(SHARED_KERAS_HOME, tmp_path / "keras_home")
    home = tmp_path / "home"
    (home / "runs").mkdir(parents=True)
    pretrained = train_best_val_accuracy(home, keras_home, "imagenet")
    scratch = train_best_val_accuracy(home, keras_home, "none")
    # 4 classes (chance 0.25), 9 validation images with the seed's split.
    assert pretrained >= 0.6, f"ImageNet weights reached only {pretrained:.2f}"
    assert scratch < 0.6, f"random init reached {scratch:.2f}: the check would not tell transfer apart"
    assert not list((keras_home / "models").glob("*.tmp*")), "nothing was downloaded"
