"""Dataset names never leave the data folder; an explicit folder is --dataset-path, recorded as an absolute path;
the data commands (import, crawl, trash, restore) write only under the data folder."""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from carviz.cli import build_parser, main
from carviz.cli.common import config_from_args
from carviz.cli.sweeps import sweep_config_from_args
from carviz.core import settings
from carviz.core.config import TrainConfig

BAD_NAMES = ("../../../etc", "..", ".", "a/b", "./cars", ".hidden", "~/cars", "a\\b", "", " cars")


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _zip_of_one_image(path: Path) -> Path:
    image = io.BytesIO()
    Image.new("RGB", (40, 40), "red").save(image, "JPEG")
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("cats/a.jpg", image.getvalue())
    return path


def _tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def test_resolve_dataset_takes_names_under_data_or_absolute_paths(carviz_home: Path, tmp_path: Path) -> None:
    (carviz_home / "data" / "cars").mkdir()
    (carviz_home / "data" / "현대").mkdir()
    assert settings.resolve_dataset("cars") == carviz_home / "data" / "cars"
    assert settings.resolve_dataset("현대") == carviz_home / "data" / "현대"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert settings.resolve_dataset(str(elsewhere)) == elsewhere.resolve()
    for bad in BAD_NAMES:
        with pytest.raises(ValueError, match="not a dataset name"):
            settings.resolve_dataset(bad)
    with pytest.raises(FileNotFoundError, match="not found"):
        settings.resolve_dataset("missing")


def test_a_dataset_name_cannot_reach_outside_the_data_folder_through_a_link(carviz_home: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (carviz_home / "data" / "sneaky").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ValueError, match="escapes"):
        settings.resolve_dataset("sneaky")


def test_train_lr_find_and_sweep_refuse_paths_given_as_names(carviz_home: Path, capsys) -> None:
    for bad in ("../../../etc", "/etc", "a/b", "./demo"):
        for argv in (["train", "--preset", "demo quick", "--dataset", bad],
                     ["lr-find", "--preset", "demo quick", "--dataset", bad],
                     ["sweep", "--name", "s", "--preset", "demo quick", "--dataset", bad]):
            code, _, err = run_cli(capsys, *argv)
            assert code == 2 and "not a dataset name" in err and "--dataset-path" in err, (argv, err)
    assert _tree(carviz_home / "runs") == set()  # nothing launched


def test_a_config_file_with_a_relative_dataset_path_is_refused(carviz_home: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "etc").mkdir()
    config = tmp_path / "config.json"
    config.write_text(json.dumps({**TrainConfig().to_dict(), "dataset": "../etc"}))
    code, _, err = run_cli(capsys, "train", "--config", str(config))
    assert code == 2 and "not a dataset name" in err
    assert _tree(carviz_home / "runs") == set()


def test_dataset_path_is_recorded_absolute_and_reads_the_same_folder_from_anywhere(
        carviz_home: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    folder = tmp_path / "photos" / "cars"
    folder.mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "photos")
    parser, _ = build_parser()
    config = config_from_args(parser.parse_args(["train", "--preset", "demo quick", "--dataset-path", "cars"]))
    assert config.dataset == str(folder.resolve()) and os.path.isabs(config.dataset)
    lr = config_from_args(parser.parse_args(["lr-find", "--dataset-path", "./cars"]))
    assert lr.dataset == config.dataset
    sweep = sweep_config_from_args(parser.parse_args(["sweep", "--name", "s", "--dataset-path", "cars"]))
    assert sweep.base.dataset == config.dataset
    monkeypatch.chdir(carviz_home)  # elsewhere: the run still reads the same folder
    assert settings.resolve_dataset(config.dataset) == folder.resolve()
    assert settings.resolve_dataset(TrainConfig.from_json(config.to_json()).dataset) == folder.resolve()

    # a name stays a name
    assert config_from_args(parser.parse_args(["train", "--dataset", "cars"])).dataset == "cars"
    with pytest.raises(FileNotFoundError, match="--dataset-path"):
        config_from_args(parser.parse_args(["train", "--dataset-path", str(tmp_path / "missing")]))
    with pytest.raises(SystemExit):  # one or the other
        parser.parse_args(["train", "--dataset", "cars", "--dataset-path", str(folder)])
    capsys.readouterr()


def test_data_commands_take_names_only_and_write_only_under_data(
        carviz_home: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    archive = _zip_of_one_image(tmp_path / "pets.zip")
    before = _tree(tmp_path)
    for bad in ("../x", "./x", str(tmp_path / "abs"), "a/b", "..", ".x"):
        code, _, err = run_cli(capsys, "import", bad, str(archive))
        assert code == 2 and "not a dataset name" in err and "data folder" in err, (bad, err)
        code, _, err = run_cli(capsys, "crawl", bad, "--class", "sedan=sedan car")
        assert code == 2 and "not a dataset name" in err, (bad, err)
        for argv in (["trash", bad, "cats", "a.jpg"], ["restore", bad], ["crawl-status", bad], ["crawl-stop", bad]):
            code, _, err = run_cli(capsys, *argv)
            assert code == 2 and "not a dataset name" in err, (argv, err)
    assert _tree(tmp_path) == before  # nothing written anywhere: not in cwd, not beside it, not at the absolute path

    (carviz_home / "data" / "sneaky").symlink_to(tmp_path / "abs", target_is_directory=True)
    code, _, err = run_cli(capsys, "import", "sneaky", str(archive))
    assert code == 2 and "escapes" in err and not (tmp_path / "abs").exists()

    code, out, _ = run_cli(capsys, "import", "pets", str(archive))
    assert code == 0 and (carviz_home / "data" / "pets" / "cats" / "a.jpg").is_file(), out
