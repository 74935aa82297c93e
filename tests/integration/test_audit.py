"""The dataset audit for real: as a background job (recorded, shown), from the command line, and, with the ImageNet
MobileNet weights of ../shared, finding planted faults in a small generated set: flipped labels ranked first,
resized and re-encoded copies paired (across the split: leakage), an off-topic image among the outliers."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from carviz.core.jobs import Status, derive_state
from carviz.data import audit_record
from carviz.data.datasets import generate_demo_dataset

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("CARVIZ_SHARED") or REPO.parent / "shared")
WEIGHTS = SHARED / "keras_home" / "models"


def copy_resized(source: Path, target: Path, scale: float = 0.8, quality: int = 80) -> None:
    image = Image.open(source).convert("RGB")
    buffer = io.BytesIO()
    image.resize((int(image.width * scale), int(image.height * scale))).save(buffer, "JPEG", quality=quality)
    target.write_bytes(buffer.getvalue())


def test_an_audit_job_records_its_result_and_the_cli_prints_it(job_home: Path, wait_for) -> None:
    dataset = generate_demo_dataset(job_home / "data" / "demo", per_class=10, image_size=48)
    record = audit_record.launch_audit(dataset, "small_cnn")  # no pretrained weights needed: the mechanics
    state = wait_for(lambda: (s := derive_state(record)).status.is_terminal() and s, 180,
                     f"the audit to end (log:\n{record.log_tail()})")
    assert state.status == Status.SUCCEEDED, record.log_tail()
    result = record.result()
    assert result["images"] == 40 and result["classes"] == ["bus", "sedan", "sports car", "suv"]
    assert 0 < result["duplicate_threshold"] <= 1 and len(result["label_issues"]) == 40
    assert set(result["counts"]) == {"suspected_label_errors", "near_duplicate_pairs", "leaking_pairs", "outliers"}
    assert result["settings"]["backbone"] == "small_cnn" and record.progress()["phase"] == "done"

    out = subprocess.run([sys.executable, "-m", "carviz", "audit", "demo", "--backbone", "small_cnn", "--json"],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr
    printed = json.loads(out.stdout)
    assert printed["images"] == 40 and printed["audit"] != record.id
    assert len(audit_record.list_audits(dataset)) == 2


@pytest.mark.skipif(not (WEIGHTS / "mobilenet_1_0_224_tf_no_top.h5").is_file(),
                    reason=f"needs the ImageNet MobileNet weights of ../shared ({WEIGHTS}; ../shared is absent here)")
def test_mobilenet_features_find_flipped_labels_copies_and_an_off_topic_image(job_home: Path, tmp_path: Path) -> None:
    keras_home = tmp_path / "keras_home"
    shutil.copytree(WEIGHTS.parent, keras_home)
    for path in [keras_home, *keras_home.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o200)
    dataset = generate_demo_dataset(job_home / "data" / "demo", per_class=30, image_size=96)
    rng = np.random.default_rng(0)
    files = sorted(dataset.rglob("*.jpg"))
    classes = sorted(p.name for p in dataset.iterdir() if p.is_dir())
    flipped = []
    for index in rng.choice(len(files), size=6, replace=False):  # 5 % of 120
        other = classes[(classes.index(files[index].parent.name) + 1) % len(classes)]
        target = dataset / other / f"flipped-{files[index].name}"
        files[index].rename(target)
        flipped.append(target.relative_to(dataset).as_posix())
    copies = []
    for number, index in enumerate(rng.choice([i for i in range(len(files)) if files[i].exists()], 3, replace=False)):
        target = dataset / classes[(classes.index(files[index].parent.name) + 2) % len(classes)] / f"copy-{number}.jpg"
        copy_resized(files[index], target)
        copies.append({files[index].relative_to(dataset).as_posix(), target.relative_to(dataset).as_posix()})
    Image.new("RGB", (96, 96), (250, 250, 250)).save(dataset / "bus" / "blank.jpg")  # no vehicle at all

    # a process of its own: Keras reads KERAS_HOME once, when it is first imported
    out = subprocess.run([sys.executable, "-m", "carviz", "audit", "demo", "--json"], capture_output=True, text=True,
                         cwd=REPO, timeout=600, env=dict(os.environ, KERAS_HOME=str(keras_home)))
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    ranking = [issue["path"] for issue in result["label_issues"]]
    top = set(ranking[:result["images"] // 10])
    assert sum(path in top for path in flipped) >= 5, (flipped, ranking[:15])  # >= 70 % in the top 10 %
    pairs = [{pair["first"], pair["second"]} for pair in result["duplicates"]]
    assert all(copy in pairs for copy in copies), (copies, pairs)
    assert "bus/blank.jpg" in [item["path"] for item in result["outliers"]]
    assert not list((keras_home / "models").glob("*.tmp*")), "nothing was downloaded"
