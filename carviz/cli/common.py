"""What the command groups share: TrainConfig flags (derived from its field specs) and their reading, the backend
flag, small formatters."""

from __future__ import annotations

import argparse
from pathlib import Path
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from carviz.core import settings
from carviz.views.formatting import format_number
from carviz.core.config import PRESETS, ConfigError, TrainConfig, parse_freeze
from carviz.core.field_spec import Leaf, flag_name, leaves, range_text, replace_paths


@dataclass(frozen=True)
class ConfigFlag:
    """A TrainConfig field's command-line flag."""

    field: Leaf
    flag: str

    @property
    def dest(self) -> str:
        return ".".join(self.field.path)


CONFIG_FLAGS: tuple[ConfigFlag, ...] = tuple(ConfigFlag(leaf, flag_name(leaf.name, leaf.spec))
                                              for leaf in leaves(TrainConfig) if flag_name(leaf.name, leaf.spec))
# What the sweep command takes from these (the grid's own flags set backbones, learning rates and freeze points).
SWEEP_BASE_FIELDS = ("epochs", "batch_size", "image_size", "weights", "head", "split_seed", "test_fraction")


def _as_argument_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse_flag(text: str) -> Any:
        try:
            return parse(text)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return parse_flag


freeze_arg = _as_argument_type(parse_freeze)  # --freeze N|all, for commands other than train (layers)


def add_config_flags(parser: argparse.ArgumentParser, fields: Sequence[str] | None = None) -> None:
    """One flag per TrainConfig field (read back by config_from_args / config_changes_from_args), derived from its
    spec; `fields` picks some (dotted paths). Without `fields`: all of them, plus --config/--preset, the dataset
    flags and --from-run."""
    if fields is None:
        parser.add_argument("--config", type=Path, help="a config.json to start from")
        parser.add_argument("--preset", choices=sorted(PRESETS), help="a named preset to start from")
        add_dataset_flags(parser)
        parser.add_argument("--from-run", default=None, metavar="RUN",
                            help="start from a finished run's model (id, prefix or name): every layer but the "
                                 "classifier, which is new for this dataset's classes; backbone, alpha, image size "
                                 "and head are the run's (--freeze as usual)")
    for option in CONFIG_FLAGS:
        if fields is not None and option.dest not in fields:
            continue
        spec = option.field.spec
        names = (option.flag, *spec.aliases)
        text = spec.help or spec.label
        if spec.const is not None:
            parser.add_argument(*names, dest=option.dest, action="store_const", const=spec.const, default=None,
                                help=f"{text} (sets {option.dest} to {str(spec.const).lower()})")
            continue
        kind = _as_argument_type(spec.parse) if spec.parse else type(option.field.default)
        if spec.low is not None and not spec.choices:
            text += f" ({range_text(spec)})"
        parser.add_argument(*names, dest=option.dest, type=kind, default=None, choices=spec.choices or None,
                            metavar=spec.metavar or (None if spec.choices else option.field.name.upper()), help=text)


def config_changes_from_args(args: argparse.Namespace,
                             fields: Sequence[str] | None = None) -> dict[tuple[str, ...], Any]:
    """The values the config flags given set, by field path (("augmentation", "zoom"): 0.3), for replace_paths;
    `fields`: only these flags' (as add_config_flags added them)."""
    changes = {option.field.path: getattr(args, option.dest) for option in CONFIG_FLAGS
               if (fields is None or option.dest in fields) and getattr(args, option.dest, None) is not None}
    if changes.get(("freeze_batchnorm",)) is False:
        changes.setdefault(("train_batchnorm",), True)  # --train-frozen-bn: every BatchNorm trains
    return changes


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
    """The TrainConfig that `train`'s flags describe: --config / --preset / defaults, then each flag given."""
    if args.config:
        base = TrainConfig.load(args.config)
    elif args.preset:
        base = PRESETS[args.preset]
    else:
        base = TrainConfig()
    changes = config_changes_from_args(args)
    dataset = dataset_from_args(args)
    if dataset is not None:
        changes[("dataset",)] = dataset
    config = replace_paths(base, changes)
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


fmt = format_number  # the CLI's short name for views.formatting.format_number


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
