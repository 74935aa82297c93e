"""`python -m carviz cache`: listing, size limit (evicting), dtype, clearing; bad values change nothing."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from carviz.core import feature_cache
from carviz.cli import main

MIB = 1024**2


def key_of(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def add_entries(layers: list[str], mib: int = 4) -> list[str]:
    """Feature sets of `mib` MiB each in the cache under CARVIZ_HOME, the first one most recently used."""
    cache = feature_cache.FeatureCache(feature_cache.cache_root(), 10**12)
    keys = []
    now = time.time()
    for age, layer in enumerate(layers):
        key = key_of(layer)
        rows = mib * MIB // (4 * 1024)
        assert cache.put(key, np.zeros((rows, 1024), dtype="float32"), np.zeros(rows, dtype="int64"),
                         meta={"layer": layer, "backbone": "mobilenet", "alpha": 1.0, "image_size": 224,
                               "head": "seed", "precision": "float32", "images": rows, "weights": "imagenet",
                               "dataset_fingerprint": "f" * 8},
                         paths=[f"c/{i}.jpg" for i in range(rows)])
        os.utime(cache.path_for(key) / "meta.json", (now - 60 * age, now - 60 * age))  # last_used order
        keys.append(key)
    return keys


def on_disk() -> set[str]:
    root = feature_cache.cache_root()
    return {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")} if root.is_dir() else set()


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_lists_entries_and_total(carviz_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "cache")
    assert code == 0 and "0 B of 20 GiB, 0 feature sets" in out

    add_entries(["conv_dw_7_relu", "conv_pw_3_relu"])
    code, out, _ = run_cli(capsys, "cache")
    assert code == 0
    assert "of 20 GiB, 2 feature sets" in out and "(new sets stored as float32)" in out
    lines = out.splitlines()
    assert lines[1].split()[:3] == ["key", "layer", "backbone"]
    assert lines[2].split()[1] == "conv_dw_7_relu" and lines[3].split()[1] == "conv_pw_3_relu"  # most recent first
    assert "mobilenet" in lines[2] and "224" in lines[2]

    code, out, _ = run_cli(capsys, "cache", "--json")
    listed = json.loads(out)
    assert code == 0 and [e["meta"]["layer"] for e in listed["entries"]] == ["conv_dw_7_relu", "conv_pw_3_relu"]
    assert listed["total_bytes"] == sum(e["bytes"] for e in listed["entries"]) > 8 * MIB


def test_lower_limit_evicts_least_recently_used(carviz_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys = add_entries(["newest", "middle", "oldest"])
    code, out, _ = run_cli(capsys, "cache", "--limit-gb", "0.009")  # ~9.2 MiB: room for two 4 MiB sets
    assert code == 0 and "1 feature set(s) evicted" in out
    assert on_disk() == set(keys[:2])
    assert feature_cache.load_settings() == feature_cache.CacheSettings(max_gb=0.009, dtype="float32")

    code, out, _ = run_cli(capsys, "cache", "--dtype", "float16")
    assert code == 0 and feature_cache.load_settings() == feature_cache.CacheSettings(max_gb=0.009, dtype="float16")
    assert on_disk() == set(keys[:2])  # a dtype change alone keeps what fits


def test_clear_empties_the_cache(carviz_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    add_entries(["a", "b"], mib=1)
    code, out, _ = run_cli(capsys, "cache", "--clear")
    assert code == 0 and "2 feature set(s) removed" in out and "0 feature sets" in out
    assert on_disk() == set()


@pytest.mark.parametrize("argv", [["--dtype", "float64"], ["--limit-gb", "-1"], ["--limit-gb", "nan"],
                                  ["--clear", "--dtype", "int8"]])
def test_bad_values_exit_2_and_change_nothing(carviz_home: Path, capsys: pytest.CaptureFixture[str],
                                              argv: list[str]) -> None:
    keys = add_entries(["kept"], mib=1)
    feature_cache.save_settings(feature_cache.CacheSettings(max_gb=5.0, dtype="float32"))
    code, out, err = run_cli(capsys, "cache", *argv)
    assert code == 2 and err.startswith("error: ") and out == ""
    assert ("dtype" in err) if "--dtype" in argv else ("limit" in err)
    assert on_disk() == set(keys)
    assert feature_cache.load_settings() == feature_cache.CacheSettings(max_gb=5.0, dtype="float32")


def test_show_prints_the_runs_cache_line_and_train_can_turn_it_off(carviz_home: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from carviz.cli import build_parser
    from carviz.cli.common import config_from_args
    from carviz.core.config import PRESETS
    from carviz.core.store import atomic_write_json, create_run

    run = create_run(PRESETS["demo quick"].replace(name="shown"))
    atomic_write_json(run.file("run.json"), {"feature_cache": {"used": True, "layer": "conv_dw_7_relu",
                                                               "source": "computed from the images", "seconds": 3.21}})
    code, out, _ = run_cli(capsys, "show", run.id)
    assert code == 0 and "Trained on cached conv_dw_7_relu features (computed from the images, 3.2 s)" in out

    parser = build_parser()[0]
    args = parser.parse_args(["train", "--preset", "demo quick", "--no-feature-cache"])
    assert config_from_args(args).feature_cache is False
    assert config_from_args(parser.parse_args(["train", "--preset", "demo quick"])).feature_cache is True
