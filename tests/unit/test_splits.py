"""Splits: a split seed apart from the run seed, a held-out test part, evaluation on the test split and on another
folder with the same class names (API and CLI)."""

from __future__ import annotations

import inspect
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from carviz.cli import build_parser, main
from carviz.cli.common import config_from_args
from carviz.core import store as runs
from carviz.core.config import ConfigError, SweepConfig, TrainConfig, expand
from carviz.core.record_checks import RUN_FILES
from carviz.data import datasets
from carviz.ml import pipelines
from carviz.data.datasets import Split, pick_test_files, scan_dataset, split_files

DEMO = dict(per_class=8, image_size=48)


@pytest.fixture(scope="module")
def demo_scan(tmp_path_factory: pytest.TempPathFactory) -> datasets.DatasetScan:
    root = tmp_path_factory.mktemp("splits") / "demo"
    datasets.generate_demo_dataset(root, **DEMO)
    return scan_dataset(root)


def keras_split(scan: datasets.DatasetScan, validation_split: float, seed: int) -> tuple[list, list]:
    """The split as carviz made it before test parts (itself checked against Keras in test_datasets.py)."""
    paths, _ = scan.labelled_files()
    order = np.arange(len(paths))
    np.random.RandomState(seed).shuffle(order)
    shuffled = [paths[i] for i in order]
    num_train = len(paths) - int(validation_split * len(paths))
    return shuffled[:num_train], shuffled[num_train:]


# ---------------------------------------------------------------- config, flags, sweeps


def test_config_fields_validation_and_old_config_files() -> None:
    config = TrainConfig()
    assert (config.split_seed, config.test_fraction) == (123, 0.0)
    assert TrainConfig.from_json(config.replace(split_seed=7, test_fraction=0.1).to_json()) == \
        config.replace(split_seed=7, test_fraction=0.1)
    for bad, message in (({"test_fraction": -0.1}, "test_fraction must be in"),
                         ({"test_fraction": 1.0}, "test_fraction must be in"),
                         ({"test_fraction": True}, "test_fraction must be in"),
                         ({"test_fraction": 0.5, "validation_split": 0.5}, "must be below 1"),
                         ({"split_seed": -1}, "split_seed"), ({"split_seed": 2**32}, "split_seed"),
                         ({"split_seed": "7"}, "split_seed")):
        with pytest.raises(ConfigError, match=message):
            config.replace(**bad)
    # a config.json written before these fields loads; its run seed was its split seed then
    old = {key: value for key, value in config.replace(seed=5).to_dict().items()
           if key not in ("split_seed", "test_fraction")}
    loaded = TrainConfig.from_dict(old)
    assert (loaded.seed, loaded.split_seed, loaded.test_fraction) == (5, 5, 0.0)
    assert TrainConfig.from_dict({"seed": 5, "split_seed": 9}).split_seed == 9
    # the record check accepts both shapes
    check = RUN_FILES["config.json"][2]
    assert check(old) == [] and check(config.to_dict()) == []
    assert check({**config.to_dict(), "test_fraction": "a lot"})


def test_cli_flags() -> None:
    parser, _ = build_parser()
    args = parser.parse_args(["train", "--preset", "demo quick", "--seed", "4", "--split-seed", "9",
                              "--test-fraction", "0.15"])
    config = config_from_args(args)
    assert (config.seed, config.split_seed, config.test_fraction) == (4, 9, 0.15)
    plain = config_from_args(parser.parse_args(["train", "--preset", "demo quick", "--seed", "4"]))
    assert (plain.seed, plain.split_seed, plain.test_fraction) == (4, 123, 0.0)

    from carviz.cli.sweeps import sweep_config_from_args

    sweep = sweep_config_from_args(parser.parse_args(["sweep", "--name", "s", "--seeds", "1,2,3", "--split-seed",
                                                      "11", "--test-fraction", "0.1"]))
    assert [(c.seed, c.split_seed, c.test_fraction) for c in expand(sweep)] == [(1, 11, 0.1), (2, 11, 0.1),
                                                                               (3, 11, 0.1)]
    varied = sweep_config_from_args(parser.parse_args(["sweep", "--name", "s", "--seeds", "1,2", "--vary-split"]))
    assert [(c.seed, c.split_seed) for c in expand(varied)] == [(1, 1), (2, 2)]


def test_a_sweeps_runs_share_the_split_unless_it_varies() -> None:
    base = TrainConfig(backbone="small_cnn", weights="none", split_seed=42, test_fraction=0.1)
    sweep = SweepConfig(name="s", base=base, backbones=("small_cnn",), learning_rates=(1e-3, 1e-4),
                        freeze_points=(1,), seeds=(1, 2))
    configs = expand(sweep)
    assert {c.split_seed for c in configs} == {42} and {c.test_fraction for c in configs} == {0.1}
    assert sorted({c.seed for c in configs}) == [1, 2]
    varied = SweepConfig.from_dict({**sweep.to_dict(), "vary_split": True})
    assert [(c.seed, c.split_seed) for c in expand(varied)] == [(1, 1), (1, 1), (2, 2), (2, 2)]
    old = sweep.to_dict()
    del old["vary_split"]  # a sweep.json written before the option
    assert SweepConfig.from_dict(old) == sweep
    with pytest.raises(ConfigError, match="vary_split"):
        SweepConfig.from_dict({**sweep.to_dict(), "vary_split": "yes"})


# ---------------------------------------------------------------- the split itself


@pytest.mark.parametrize(("validation_split", "seed"), [(0.2, 123), (0.35, 7)])
def test_without_a_test_part_the_split_is_the_keras_one(demo_scan, validation_split: float, seed: int) -> None:
    split = split_files(demo_scan, validation_split, seed)
    train, val = keras_split(demo_scan, validation_split, seed)
    assert (split.train_paths, split.val_paths) == (train, val)  # same files, same order
    assert split_files(demo_scan, validation_split, seed, test_fraction=0.0) == split
    assert split.test_paths == split.test_labels == []


def test_a_test_part_is_carved_out_first_stratified_and_deterministic(demo_scan) -> None:
    split = split_files(demo_scan, 0.2, 123, test_fraction=0.25)
    all_paths, all_labels = demo_scan.labelled_files()
    train, val, test = set(split.train_paths), set(split.val_paths), set(split.test_paths)
    assert not (train & val) and not (train & test) and not (val & test)
    assert train | val | test == set(all_paths)
    assert len(test) == 8 and len(val) == int(0.2 * 32) and len(train) == 32 - 8 - 6
    assert np.bincount(split.test_labels).tolist() == [2, 2, 2, 2]  # stratified: 25 % of every class
    label_of = dict(zip(all_paths, all_labels))
    for paths, labels in ((split.train_paths, split.train_labels), (split.val_paths, split.val_labels),
                          (split.test_paths, split.test_labels)):
        assert [label_of[p] for p in paths] == labels
    assert split.test_paths == [p for p in all_paths if p in test]  # listed in Keras' (class, name) order
    # the rest is split as Keras would split it: its shuffle with the same seed
    rest = [p for p in all_paths if p not in test]
    order = np.arange(len(rest))
    np.random.RandomState(123).shuffle(order)
    assert split.train_paths + split.val_paths == [rest[i] for i in order]
    # deterministic; another split seed holds out and validates on other images
    assert split_files(demo_scan, 0.2, 123, 0.25) == split
    other = split_files(demo_scan, 0.2, 124, 0.25)
    assert set(other.test_paths) != test and set(other.val_paths) != val
    assert split.to_json_dict(demo_scan.root)["test_paths"][0].count("/") == 1
    assert Split.from_json_dict(split.to_json_dict(demo_scan.root), demo_scan.root) == split
    with pytest.raises(ValueError, match="validation_split \\+ test_fraction"):
        split_files(demo_scan, 0.5, 123, 0.5)


def test_test_images_are_chosen_by_name_not_by_listing(demo_scan, tmp_path: Path) -> None:
    """An image's place in the test part depends on the seed, its class and its name only: adding a class and
    renaming another (every label index shifts) leaves the other classes' test images where they were."""
    before = pick_test_files(demo_scan, 0.25, 123)
    root = tmp_path / "changed"
    shutil.copytree(demo_scan.root, root)
    shutil.copytree(root / "suv", root / "a-tractor")  # a new class, listed first
    (root / "bus").rename(root / "zz-bus")
    changed = scan_dataset(root, check_images=False)  # the copied class would read as duplicates otherwise
    after = pick_test_files(changed, 0.25, 123)
    rel = lambda paths, base: {p.relative_to(base).as_posix() for p in paths if p.parent.name in  # noqa: E731
                               ("sedan", "suv", "sports car")}
    assert rel(before, demo_scan.root) == rel(after, root) and len(rel(after, root)) == 6
    assert len(after) == 10  # 2 of each of the 5 classes
    assert pick_test_files(demo_scan, 0.0) == [] and split_files(demo_scan, 0.2, 1, 0.0).test_paths == []


def test_a_class_keeps_an_image_to_train_on(tmp_path: Path) -> None:
    root = tmp_path / "d"
    datasets.generate_demo_dataset(root, **DEMO)
    for extra in sorted((root / "bus").iterdir())[1:]:
        extra.unlink()
    scan = scan_dataset(root)
    split = split_files(scan, 0.1, 123, 0.85)
    # bus's 0.85 of an image has the largest remainder, but its one image stays for training/validation
    assert "bus" not in {p.parent.name for p in split.test_paths}
    assert len(split.test_paths) == 20 and len(split.val_paths) == 2 and len(split.train_paths) == 3


def test_a_resume_keeps_the_recorded_test_part_out_of_training(carviz_home: Path) -> None:
    from carviz.ml.train_data import recorded_split_for_resume

    root = carviz_home / "data" / "demo"
    datasets.generate_demo_dataset(root, **DEMO)
    scan = scan_dataset(root)
    split = split_files(scan, 0.2, 123, 0.25)
    run = runs.create_run(TrainConfig(backbone="small_cnn", weights="none", test_fraction=0.25))
    run.write_split(split.to_json_dict(root))
    assert recorded_split_for_resume(run, run.split(), root, scan) == split
    assert run.info()["resumes"][-1]["new_ignored"] == 0  # the test images are recorded, not "new"
    gone = split.test_paths[0]
    gone.unlink()
    run.request_resume(accept_dataset_changes=True)
    resumed = recorded_split_for_resume(run, run.split(), root, scan_dataset(root))
    assert resumed.test_paths == split.test_paths[1:] and resumed.train_paths == split.train_paths
    old_record = {key: value for key, value in split.to_json_dict(root).items() if not key.startswith("test_")}
    assert Split.from_json_dict(old_record, root).test_paths == []  # a split.json from before test parts
    check = RUN_FILES["split.json"][2]
    assert check(old_record) == [] and check(split.to_json_dict(root)) == []
    assert check({**old_record, "test_paths": [3]}) == ["split.json: test_paths is not a list of paths"]


@pytest.mark.slow
def test_the_lr_range_test_never_sees_test_or_validation_images(carviz_home: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from carviz.ml import lr_range

    datasets.generate_demo_dataset(carviz_home / "data" / "demo", **DEMO)
    config = TrainConfig(dataset="demo", backbone="small_cnn", weights="none", image_size=32, batch_size=8,
                         precision="float32", seed=3, split_seed=5, test_fraction=0.25)
    seen: list[list[Path]] = []
    real = pipelines.make_pipeline
    monkeypatch.setattr(pipelines, "make_pipeline", lambda paths, *a, **k: seen.append(list(paths)) or real(paths, *a,
                                                                                                           **k))
    lr_range.lr_range_test(config, steps=2)
    split = split_files(scan_dataset(carviz_home / "data" / "demo"), 0.2, 5, 0.25)
    assert seen == [split.train_paths]


# ---------------------------------------------------------------- real tiny runs: training, evaluation, CLI

# MobileNet (alpha 0.25, 32 px, frozen up to 71) so that the feature cache can be on; small and fast without weights
TINY = TrainConfig(name="split", dataset="demo", backbone="mobilenet", alpha=0.25, weights="none", image_size=32,
                   epochs=1, batch_size=8, learning_rate=1e-3, freeze=71, precision="float32", split_seed=7,
                   test_fraction=0.25)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """(home, {"cached": run, "uncached": run}, the pipelines each run built): two tiny runs with a test split that
    differ in their run seed and in the feature cache; CARVIZ_HOME points at home for the whole module."""
    from carviz.ml import features, train

    home = tmp_path_factory.mktemp("split-runs")
    calls: dict[str, list] = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CARVIZ_HOME", str(home))
        for name in ("CARVIZ_RUNS", "CARVIZ_DATA", "CARVIZ_CACHE"):
            patch.delenv(name, raising=False)
        datasets.generate_demo_dataset(home / "data" / "demo", **DEMO)
        real_pipeline, real_features = pipelines.make_pipeline, features.feature_pipeline
        current: list = []

        def spy_pipeline(paths, labels, *args, **kwargs):
            caller = inspect.stack()[1].function
            current.append(("images", caller, [Path(p) for p in paths], kwargs.get("training", args[3]
                                                                                   if len(args) > 3 else None)))
            return real_pipeline(paths, labels, *args, **kwargs)

        def spy_features(store, rows, labels, *args, **kwargs):
            current.append(("rows", "feature_pipeline", list(rows), kwargs.get("training")))
            return real_features(store, rows, labels, *args, **kwargs)

        patch.setattr(pipelines, "make_pipeline", spy_pipeline)
        patch.setattr(features, "feature_pipeline", spy_features)
        made = {}
        for name, config in (("cached", TINY.replace(seed=1)), ("uncached", TINY.replace(seed=2,
                                                                                         feature_cache=False))):
            current.clear()
            run = runs.create_run(config)
            assert train.train(run) == runs.Status.SUCCEEDED, run.log_tail()
            made[name], calls[name] = run, list(current)
        patch.setattr(pipelines, "make_pipeline", real_pipeline)
        patch.setattr(features, "feature_pipeline", real_features)
        yield home, made, calls


def recorded(run: runs.Run) -> Split:
    return Split.from_json_dict(run.split(), Path(run.info()["dataset_path"]))


@pytest.mark.slow
def test_runs_with_other_run_seeds_share_the_split_and_hold_out_the_test_images(trained) -> None:
    home, made, _ = trained
    cached, uncached = made["cached"], made["uncached"]
    assert cached.split() == uncached.split()  # run seeds 1 and 2, split seed 7
    split = recorded(cached)
    assert split == split_files(scan_dataset(home / "data" / "demo"), 0.2, 7, 0.25)
    assert len(split.test_paths) == 8 and not set(split.test_paths) & (set(split.train_paths) | set(split.val_paths))
    info = cached.info()
    assert (info["train_images"], info["val_images"], info["test_images"]) == (18, 6, 8)
    assert cached.info()["feature_cache"]["used"] and not uncached.info()["feature_cache"]["used"]


@pytest.mark.slow
def test_test_images_never_reach_the_training_or_validation_pipelines(trained) -> None:
    home, made, calls = trained
    split = recorded(made["uncached"])
    test = set(split.test_paths)
    # on images: the training and validation pipelines are exactly the split's, the test one comes last, alone
    images = [(caller, paths, training) for kind, caller, paths, training in calls["uncached"] if kind == "images"]
    assert [(caller, training) for caller, _, training in images] == [("make_feed", True), ("make_feed", False),
                                                                      ("evaluate_kept", False)]
    assert images[0][1] == split.train_paths and images[1][1] == split.val_paths and images[2][1] == split.test_paths
    assert not test & set(images[0][1]) and not test & set(images[1][1])
    # on cached features: the cache holds every image's features (shared by all runs of the dataset), but the rows
    # the run trains and validates on are the split's; the test rows reach only the final evaluation's pipeline,
    # which is made with the others but read once, after training (as the validation's, on the frozen part's output)
    all_paths, _ = scan_dataset(home / "data" / "demo").labelled_files()
    test_rows = {row for row, path in enumerate(all_paths) if path in test}
    rows = [(rows, training) for kind, _, rows, training in calls["cached"] if kind == "rows"]
    assert [training for _, training in rows] == [True, False, False]
    assert [all_paths[row] for row in rows[0][0]] == split.train_paths
    assert [all_paths[row] for row in rows[1][0]] == split.val_paths
    assert [all_paths[row] for row in rows[2][0]] == split.test_paths
    assert not test_rows & set(rows[0][0]) and not test_rows & set(rows[1][0])
    from_body = [(paths, training) for kind, caller, paths, training in calls["cached"]
                 if kind == "images" and caller in ("make_feed", "evaluate_kept")]
    assert from_body == []  # no pass over the images: the test split's features are cached with the others
    assert made["cached"].evaluation()["test"]["computed_on"] == "cached features"
    assert made["uncached"].evaluation()["test"]["computed_on"] == "images"


@pytest.mark.slow
def test_the_test_evaluation_is_recorded_and_matches_evaluate(trained) -> None:
    from carviz.ml.evaluate import evaluate_run

    _, made, _ = trained
    for run in made.values():
        evaluation = run.evaluation()
        assert evaluation["split"] == "validation" and evaluation["images"] == 6
        assert evaluation["test"]["images"] == 8 and evaluation["test"]["split"] == "test"
        assert evaluation["test_accuracy"] == evaluation["test"]["accuracy"]
        assert 0 <= evaluation["test_accuracy"] <= 1 and np.isfinite(evaluation["test"]["loss"])
        assert run.problems() == []
        on_test = evaluate_run(run, split="test", batch_size=4)
        assert on_test.split == "test" and on_test.images == 8
        assert on_test.accuracy == pytest.approx(evaluation["test_accuracy"], abs=1e-6)
        assert sorted(m.path for m in on_test.misclassified) <= sorted(recorded(run).test_paths)
        assert evaluate_run(run).accuracy == pytest.approx(evaluation["accuracy"], abs=1e-6)


def make_other_dataset(home: Path, name: str, drop: tuple[str, ...] = (), extra: str | None = None) -> Path:
    """Other pictures of the same classes (another drawing seed), minus `drop`, plus a class `extra`."""
    root = home / "data" / name
    if root.exists():
        shutil.rmtree(root)
    datasets.generate_demo_dataset(root, per_class=3, image_size=48, seed=99)
    for class_name in drop:
        shutil.rmtree(root / class_name)
    if extra:
        shutil.copytree(root / "suv", root / extra)
    return root


@pytest.mark.slow
def test_evaluate_on_another_folder_with_the_same_classes(trained) -> None:
    from carviz.ml.evaluate import evaluate_run

    home, made, _ = trained
    run = made["uncached"]
    classes = run.classes()
    make_other_dataset(home, "other", drop=("bus",))
    evaluation = evaluate_run(run, dataset="other", batch_size=4)
    assert evaluation.split == "dataset" and evaluation.dataset == str(home / "data" / "other")
    assert evaluation.classes == classes and evaluation.images == 9 and evaluation.absent_classes == ["bus"]
    assert evaluation.class_counts.tolist() == [0 if name == "bus" else 3 for name in classes]
    assert all(m.path.parent.name == m.true for m in evaluation.misclassified)  # labels follow the names
    by_path = evaluate_run(run, dataset=str(home / "data" / "other"), batch_size=4)  # an absolute path works too
    assert by_path.confusion.tolist() == evaluation.confusion.tolist()

    make_other_dataset(home, "extra", extra="tractor")
    with pytest.raises(ValueError, match=r"do not match run .*not classes of the run: tractor.*--skip-extra-classes"):
        evaluate_run(run, dataset="extra")
    skipped = evaluate_run(run, dataset="extra", skip_extra=True, batch_size=4)
    assert skipped.skipped_classes == ["tractor"] and skipped.images == 12 and skipped.absent_classes == []
    none_alike = home / "data" / "unrelated"
    (none_alike / "cats").mkdir(parents=True)
    shutil.copy(next((home / "data" / "other" / "suv").iterdir()), none_alike / "cats" / "a.jpg")
    with pytest.raises(ValueError, match=r"missing from the folder: bus, sedan, sports car, suv"):
        evaluate_run(run, dataset="unrelated", skip_extra=True)
    with pytest.raises(ValueError, match="own dataset"):
        evaluate_run(run, dataset="demo")
    with pytest.raises(FileNotFoundError, match="not found"):
        evaluate_run(run, dataset="nowhere")


@pytest.mark.slow
def test_a_run_without_a_test_split_says_so(trained) -> None:
    from carviz.ml.evaluate import evaluate_run, has_test_split

    _, made, _ = trained
    run = runs.create_run(TINY.replace(test_fraction=0.0))
    record = made["uncached"].split()
    run.write_split({key: value for key, value in record.items() if not key.startswith("test_")})
    run.update_info(dataset_path=made["uncached"].info()["dataset_path"])
    assert has_test_split(made["uncached"]) and not has_test_split(run)
    with pytest.raises(ValueError, match="has no test split"):
        evaluate_run(run, split="test")


@pytest.mark.slow
def test_the_evaluate_command(trained, capsys: pytest.CaptureFixture) -> None:
    home, made, _ = trained
    run = made["cached"]
    assert main(["evaluate", run.id, "--split", "test", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["split"] == "test" and result["images"] == 8 and result["run"] == run.id
    assert result["accuracy"] == pytest.approx(run.evaluation()["test_accuracy"], abs=1e-6)
    assert sum(row["images"] for row in result["per_class"]) == 8 and len(result["confusion"]) == 4

    assert main(["evaluate", run.id]) == 0
    out = capsys.readouterr().out
    assert f"run {run.id} on the validation split: accuracy" in out and "on 6 images" in out and "sedan" in out

    make_other_dataset(home, "other", drop=("bus",))
    assert main(["evaluate", run.id, "--dataset", "other"]) == 0
    out = capsys.readouterr().out
    assert "on 9 images" in out and "classes without images there: bus" in out
    assert main(["evaluate", run.id, "--dataset-path", str(home / "data" / "other"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["absent_classes"] == ["bus"]

    make_other_dataset(home, "extra", extra="tractor")
    assert main(["evaluate", run.id, "--dataset", "extra"]) == 2
    assert "not classes of the run: tractor" in capsys.readouterr().err
    assert main(["evaluate", run.id, "--dataset", "extra", "--skip-extra-classes"]) == 0
    assert "skipped class folders the run does not know: tractor" in capsys.readouterr().out
    assert main(["evaluate", run.id, "--dataset", "other", "--split", "test"]) == 2
    assert "--split names the run's own split" in capsys.readouterr().err

    assert main(["show", run.id]) == 0
    assert "test accuracy" in capsys.readouterr().out
