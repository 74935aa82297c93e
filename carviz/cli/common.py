"""What the command groups share: TrainConfig flags and their reading, the backend flag, small formatters."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from carviz.core.config import FREEZE_ALL, PRESETS, Augmentation, TrainConfig


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
    for flag, kind in (("name", str), ("dataset", str), ("backbone", str), ("alpha", float), ("weights", str),
                       ("image-size", int), ("head", str), ("dropout", float), ("optimizer", str),
                       ("learning-rate", float), ("epochs", int), ("batch-size", int),
                       ("validation-split", float), ("seed", int), ("early-stopping-patience", int),
                       ("precision", str), ("checkpoint-every", int)):
        parser.add_argument(f"--{flag}", type=kind, default=None)
    parser.add_argument("--lr", dest="learning_rate", type=float, default=None, help="same as --learning-rate")
    parser.add_argument("--freeze", type=freeze_arg, default=None)
    parser.add_argument("--augment", action="store_true", default=None, help="augment the training split")
    parser.add_argument("--train-frozen-bn", action="store_true", help="frozen BatchNorm layers keep training")
    parser.add_argument("--freeze-all-bn", action="store_true",
                        help="BatchNorm layers of the trainable part are frozen too (the recommended preset does this)")
    parser.add_argument("--xla", action="store_true", help="compile with XLA (slow first epoch on CPU)")
    parser.add_argument("--no-feature-cache", action="store_true",
                        help="run the frozen layers on every image each epoch instead of training on cached features")


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
    for field in ("name", "dataset", "backbone", "alpha", "weights", "image_size", "head", "dropout", "optimizer",
                  "learning_rate", "epochs", "batch_size", "validation_split", "seed", "early_stopping_patience",
                  "precision", "checkpoint_every", "freeze"):
        value = getattr(args, field, None)
        if value is not None:
            changes[field] = value
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
    return base.replace(**changes)


def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def split(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def dataset_arg(text: str, create: bool = False) -> Path:
    """A dataset folder from the command line: a name under data/, or a path (absolute or starting with .)."""
    from carviz.data.importer import dataset_path

    as_path = Path(text).expanduser()
    if as_path.is_absolute() or text.startswith("."):
        path = dataset_path(as_path, create=create)
    else:
        path = dataset_path(text, create=create)
    if not create and not path.is_dir():
        raise FileNotFoundError(f"dataset {text!r} not found (looked in {path})")
    return path
