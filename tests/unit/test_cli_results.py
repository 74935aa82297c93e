"""CLI parity: predict, compare (table and CSV) and health on a real tiny run and dataset."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from carviz.cli import main


@pytest.fixture
def trained_home(tiny_trained, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    home, run_dir = tiny_trained
    monkeypatch.setenv("CARVIZ_HOME", str(home))
    for name in ("CARVIZ_RUNS", "CARVIZ_DATA", "CARVIZ_CACHE"):
        monkeypatch.delenv(name, raising=False)
    return home, run_dir


def test_predict_prints_the_top_classes_and_flags_a_broken_file(trained_home, tmp_path, capsys) -> None:
    home, run_dir = trained_home
    image = next((home / "data" / "demo" / "bus").glob("*.jpg"))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    assert main(["predict", run_dir.name, str(image), "--top", "2"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{image}: ") and line.count(" %") == 2
    assert main(["predict", run_dir.name, str(image), str(broken), "--json"]) == 1
    [good, bad] = json.loads(capsys.readouterr().out)
    assert len(good["top"]) == 4 and abs(sum(t["probability"] for t in good["top"]) - 1) < 1e-4
    assert good["top"][0]["class"] in {"bus", "sedan", "sports car", "suv"} and good["error"] is None
    assert bad["top"] == [] and "not a usable image" in bad["error"]


def test_compare_prints_the_kept_model_and_writes_every_epoch_as_csv(trained_home, capsys) -> None:
    _, run_dir = trained_home
    assert main(["compare", run_dir.name]) == 0
    table = capsys.readouterr().out
    assert "tiny" in table and " %" in table
    assert main(["compare", run_dir.name, "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(row["run_id"], row["epoch"]) for row in rows] == [(run_dir.name, "1")]  # tiny: one epoch
    assert float(rows[0]["val_accuracy"]) >= 0
    assert main(["compare", "no-such-run"]) == 2


def test_health_lists_counts_and_what_is_set_aside(carviz_home, capsys) -> None:
    from carviz.data.datasets import generate_demo_dataset

    generate_demo_dataset(carviz_home / "data" / "demo", per_class=3, image_size=48)
    (carviz_home / "data" / "demo" / "bus" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    assert main(["health", "demo"]) == 0
    out = capsys.readouterr().out
    assert "4 classes, 12 usable images, 1 set aside" in out and "bus/broken.jpg" in out
    assert main(["health", "--dataset-path", str(carviz_home / "data" / "demo"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["classes"]["bus"] == 3 and report["problems"][0]["file"] == "bus/broken.jpg"
    assert main(["health"]) == 2 and "which dataset" in capsys.readouterr().err
    assert main(["health", "../etc"]) == 2
