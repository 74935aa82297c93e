"""What the command groups share: TrainConfig flags and their reading, the backend flag, small formatters."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from carviz.core import settings
from carviz.core.config import CLASS_WEIGHTS, FREEZE_ALL, PRESETS, Augmentation, ConfigError, TrainConfig


def freeze_arg(text: str) -> int | str:
    if text == FREEZE_ALL:
        return FREEZE_ALL
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"freeze must be an integer >= 1 or 'all', got {text!r}")


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """The TrainConfig flags of `train` (read back by config_from_args): --config/--preset, then one per field."""
    parser.add_argument("--config", type=Path, help="a config.json to start from")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="a named preset to start from")
    add_dataset_flags(parser)
    for flag, kind in (("name", str), ("backbone", str), ("alpha", float), ("weights", str),
                       ("image-size", int), ("head", str), ("dropout", float), ("optimizer", str),
                       ("learning-rate", float), ("epochs", int), ("batch-size", int),
                       ("validation-split", float), ("early-stopping-patience", int),
                       ("precision", str), ("checkpoint-every", int)):
        parser.add_argument(f"--{flag}", type=kind, default=None)
    add_split_flags(parser)
    parser.add_argument("--lr", dest="learning_rate", type=float, default=None, help="same as --learning-rate")
    parser.add_argument("--freeze", type=freeze_arg, default=None)
    parser.add_argument("--augment", action="store_true", default=None, help="augment the training split")
    parser.add_argument("--augment-views", type=int, default=None, metavar="K",
                        help="with --augment and the feature cache: cache K augmented views of each training image "
                             "and train epoch e on view (e-1) mod K (default 4; 0: augment the images every epoch)")
    parser.add_argument("--train-frozen-bn", action="store_true", help="frozen BatchNorm layers keep training")
    parser.add_argument("--freeze-all-bn", action="store_true",
                        help="BatchNorm layers of the trainable part are frozen too (the recommended preset does this)")
    parser.add_argument("--xla", action="store_true", help="compile with XLA (slow first epoch on CPU)")
    parser.add_argument("--class-weight", choices=CLASS_WEIGHTS, default=None,
                        help="balanced: every class counts alike in the loss whatever its size (see `health`)")
    parser.add_argument("--no-feature-cache", action="store_true",
                        help="run the frozen layers on every image each epoch instead of training on cached features")
    parser.add_argument("--from-run", default=None, metavar="RUN",
                        help="start from a finished run's model (id, prefix or name): every layer but the classifier, "
                             "which is new for this dataset's classes; backbone, alpha, image size and head are the "
                             "run's (--freeze as usual)")


def add_split_flags(parser: argparse.ArgumentParser) -> None:
    """--seed, --split-seed and --test-fraction (read back by config_from_args / split_changes_from_args)."""
    parser.add_argument("--seed", type=int, default=None,
                        help="the run seed: initial weights, shuffling, augmentation (not the split)")
    parser.add_argument("--split-seed", type=int, default=None,
                        help="which images are validation and test (default 123, the study's)")
    parser.add_argument("--test-fraction", type=float, default=None,
                        help="share of all images held out as a test split, evaluated once at the end "
                             "(default 0: none)")


def split_changes_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The config changes --split-seed and --test-fraction ask for."""
    return {field: getattr(args, field) for field in ("split_seed", "test_fraction")
            if getattr(args, field, None) is not None}


def add_dataset_flags(parser: argparse.ArgumentParser) -> None:
    """--dataset NAME (a folder under data/, never a path) or --dataset-path FOLDER (anywhere; read back by
    dataset_from_args, which records it as an absolute path)."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--dataset", default=None, metavar="NAME",
                       help="a dataset name: one folder under data/ ($CARVIZ_DATA); never a path")
    where.add_argument("--dataset-path", type=Path, default=None, metavar="FOLDER",
                       help="a dataset folder anywhere; the run records its absolute path")


def dataset_from_args(args: argparse.Namespace) -> str | None:
    """The config's dataset from --dataset (a checked name) or --dataset-path (an existing folder, recorded as its
    absolute path so the run reads the same folder from any working directory); None when neither is given."""
    if getattr(args, "dataset_path", None) is not None:
        folder = Path(args.dataset_path).expanduser().resolve()
        if not folder.is_dir():
            raise FileNotFoundError(f"--dataset-path {str(args.dataset_path)!r} is not a folder (looked in {folder})")
        return str(folder)
    if getattr(args, "dataset", None) is not None:
        try:
            return settings.dataset_name(args.dataset)
        except ValueError as exc:
            raise ValueError(f"{exc}; a dataset elsewhere is given with --dataset-path FOLDER") from None
    return None


def add_backend_flag(parser: argparse.ArgumentParser,
                      text: str = "where jobs run: local (default, or $CARVIZ_BACKEND) or ray "
                                  "(the cluster at $CARVIZ_RAY_ADDRESS)") -> None:
    parser.add_argument("--backend", choices=("local", "ray"), default=None, help=text)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    if args.config:
        base = TrainConfig.load(args.config)
    elif args.preset:
        base = PRESETS[args.preset]
    else:
        base = TrainConfig()
    changes: dict[str, Any] = {}
    dataset = dataset_from_args(args)
    if dataset is not None:
        changes["dataset"] = dataset
    for field in ("name", "backbone", "alpha", "weights", "image_size", "head", "dropout", "optimizer",
                  "learning_rate", "epochs", "batch_size", "validation_split", "seed", "early_stopping_patience",
                  "precision", "checkpoint_every", "freeze", "augment_views", "class_weight"):
        value = getattr(args, field, None)
        if value is not None:
            changes[field] = value
    changes.update(split_changes_from_args(args))
    if args.augment:
        changes["augmentation"] = Augmentation(enabled=True)
    if args.train_frozen_bn:
        changes.update(freeze_batchnorm=False, train_batchnorm=True)  # every BatchNorm trains
    if args.freeze_all_bn:
        changes["train_batchnorm"] = False
    if args.xla:
        changes["jit_compile"] = True
    if args.no_feature_cache:
        changes["feature_cache"] = False
    config = base.replace(**changes)
    return _from_run(config, args) if getattr(args, "from_run", None) else config


def _from_run(config: TrainConfig, args: argparse.Namespace) -> TrainConfig:
    """config started from --from-run's run (resolved to its id): its backbone, alpha, image size, head and weights;
    a flag asking for another backbone, alpha, image size or head is refused, saying why."""
    from carviz.core import lineage
    from carviz.core.store import find_run

    parent = find_run(args.from_run)
    config = lineage.from_parent(config, parent)
    wrong = [f"--{field.replace('_', '-')} {getattr(args, field)} (the run's {getattr(config, field)})"
             for field in lineage.PARENT_FIELDS
             if getattr(args, field, None) is not None and getattr(args, field) != getattr(config, field)]
    if wrong:
        raise ConfigError(f"--from-run {args.from_run}: {', '.join(wrong)}; a run started from another keeps its "
                          "backbone, alpha, image size and head (leave those flags out)")
    lineage.parent_of(config)  # finished, with a model
    return config


def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def split(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def dataset_arg(text: str, create: bool = False) -> Path:
    """The dataset of a data command (crawl, import, trash, restore, crawl-status/stop): a name, one folder under
    data/; never a path, so these commands only ever write under the data folder."""
    from carviz.data.importer import dataset_path

    try:
        name = settings.dataset_name(text)
    except ValueError as exc:
        raise ValueError(f"{exc}; this command works only on datasets in the data folder (CARVIZ_DATA sets it)") \
            from None
    path = dataset_path(name, create=create)
    if not create and not path.is_dir():
        raise FileNotFoundError(f"dataset {text!r} not found (looked in {path})")
    return path
