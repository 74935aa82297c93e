"""Training configuration: a frozen, validated dataclass with a JSON round trip and named presets."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Sequence
from typing import Any, Mapping

from carviz.core.field_spec import check_fields, setting

BACKBONES = ("mobilenet", "mobilenetv2", "resnet50", "densenet121", "efficientnetb0", "small_cnn")
HEADS = ("recommended", "seed")
OPTIMIZERS = ("adam", "sgd", "rmsprop")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
CLASS_WEIGHTS = ("none", "balanced")  # balanced: each class weighs n / (classes x its training images) in the loss
FREEZE_ALL = "all"
MAX_AUGMENT_VIEWS = 16


class ConfigError(ValueError):
    """A configuration value is out of range or unknown; the message says which and why."""


def reject_unknown_keys(cls: type, data: Mapping[str, Any], what: str) -> None:
    """Raise ConfigError naming any key of `data` that is not a field of dataclass `cls`."""
    unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ConfigError(f"unknown {what} keys: {', '.join(sorted(unknown))}")


def parse_freeze(text: str | int) -> int | str:
    """A freeze value typed by a person or read from a record: a layer number >= 1 or "all"; ConfigError otherwise."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        cleaned = str(text).strip().lower()
        if cleaned == FREEZE_ALL:
            return FREEZE_ALL
        try:
            value = int(cleaned)
        except ValueError:
            raise ConfigError(f"freeze must be a layer number >= 1 or 'all', got {text!r}") from None
    if value < 1:
        raise ConfigError(f"freeze must be a layer number >= 1 or 'all', got {text!r}")
    return value


FRACTION = {"low": 0, "high": 1, "high_open": True, "widget": "slider", "form_min": 0.0, "form_max": 0.9,
            "step": 0.05}


@dataclass(frozen=True)
class Augmentation:
    """On-the-fly augmentation of the training split, as the seed's ImageDataGenerator did it."""

    enabled: bool = setting(False, label="Augment the training split", widget="checkbox", flag="--augment",
                            const=True, form_key="tf_aug_enabled", help="augment the training split")
    rotation: float = setting(20.0, label="Rotation (± degrees)", widget="slider", low=0, high=180, step=1.0,
                              flag="--aug-rotation", form_key="tf_aug_rotation",
                              help="with --augment: random rotation, ± degrees (default 20)")
    width_shift: float = setting(0.2, label="Width shift (± fraction)", **FRACTION, flag="--aug-width-shift",
                                 form_key="tf_aug_width_shift",
                                 help="with --augment: random horizontal shift, ± fraction of the width (default 0.2)")
    height_shift: float = setting(0.2, label="Height shift (± fraction)", **FRACTION, flag="--aug-height-shift",
                                  form_key="tf_aug_height_shift",
                                  help="with --augment: random vertical shift, ± fraction of the height (default 0.2)")
    zoom: float = setting(0.2, label="Zoom (± fraction)", **FRACTION, flag="--aug-zoom", form_key="tf_aug_zoom",
                          help="with --augment: random zoom, ± fraction (default 0.2)")
    horizontal_flip: bool = setting(True, label="Horizontal flip", widget="checkbox", flag="--no-flip", const=False,
                                    form_key="tf_aug_flip", help="with --augment: no random horizontal flips")

    def __post_init__(self) -> None:
        check_fields(self, ConfigError, prefix="augmentation ")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training job needs; recorded whole in the run's config.json.

    freeze follows the seed study: layers of the backbone are counted from 1 with the
    InputLayer as number 1, and "freeze N" freezes layers[:N-1]; 1 trains everything,
    "all" (or any N past the last layer) freezes the whole backbone.

    Each field's range, help, flag and form widget is its setting(...) (core/field_spec.py); the checks that
    involve several fields are in __post_init__.
    """

    name: str = setting("", label="Run name", widget="text", max_length=200,
                        help="shown in lists and charts (empty: the run id)")
    dataset: str = setting("demo", label="Dataset", widget="select", flag=None, cli="--dataset / --dataset-path",
                           help="a folder under data/, or a dataset folder's absolute path")
    backbone: str = setting("mobilenet", label="Backbone", widget="select", choices=BACKBONES)
    alpha: float = setting(1.0, label="Alpha (MobileNets)", widget="select", low=0, low_open=True, high=1.4,
                           options=(0.25, 0.5, 0.75, 1.0), help="width multiplier, MobileNet/MobileNetV2 only")
    weights: str = setting("imagenet", label="Weights", widget="select", options=("imagenet", "none", "file"),
                           help="imagenet (offline cache), none, or the path of a weights file; started from a "
                                "run: that run's weights")
    image_size: int = setting(224, label="Image size (px)", integer=True, low=32, high=1024, step=16)
    head: str = setting("recommended", label="Head", widget="select", choices=HEADS,
                        help="recommended: pooled head; seed: the seed study's conv head")
    dropout: float = setting(0.2, label="Dropout", **FRACTION)
    optimizer: str = setting("adam", label="Optimizer", widget="select", choices=OPTIMIZERS)
    learning_rate: float = setting(1e-4, label="Learning rate", low=0, low_open=True, high=10, form_min=1e-7,
                                   step=1e-4, number_format="%.1e", aliases=("--lr",))
    epochs: int = setting(20, label="Epochs", integer=True, low=1, form_max=1000, step=1)
    batch_size: int = setting(64, label="Batch size", integer=True, low=1, form_max=4096, step=1)
    freeze: int | str = setting(1, label="Freeze (layer number or 'all')", widget="text", parse=parse_freeze,
                                help="freeze N freezes layers 1…N-1 (InputLayer = 1); 1 trains everything; all "
                                     "freezes the whole backbone")
    freeze_batchnorm: bool = setting(
        True, label="Frozen BN: inference", widget="checkbox", flag="--train-frozen-bn", const=False,
        help="frozen BatchNormalization layers run in inference mode (their stored statistics); off lets them use "
             "each batch's statistics, and every BatchNorm trains")
    # Keras 3 ignores training=False on a nested backbone inside fit(), so train_batchnorm=False is the way to keep
    # the ImageNet statistics while fine-tuning (measured: 0.57 vs 0.16 validation accuracy, cars20, MobileNet
    # freeze 47, 5 epochs).
    train_batchnorm: bool = setting(
        True, label="Train BN after freeze", widget="checkbox", flag="--freeze-all-bn", const=False,
        help="train the BatchNormalization layers of the trainable part (from the freeze point on); off keeps "
             "every BatchNorm at its ImageNet statistics while fine-tuning (the recommended preset: batch "
             "statistics of small batches hurt validation accuracy)")
    augmentation: Augmentation = setting(default_factory=Augmentation, label="Augmentation", widget="none",
                                         flag=None, nested=Augmentation, cli="--augment, --aug-*",
                                         form="its own fields, in the form's Augmentation section")
    validation_split: float = setting(0.2, label="Validation split", widget="slider", low=0, low_open=True, high=1,
                                      high_open=True, form_min=0.05, form_max=0.5, step=0.05)
    seed: int = setting(123, label="Seed", integer=True, low=0, high=2**32 - 1, form_max=2**31 - 1, step=1,
                        help="the run seed: initial weights, shuffling, augmentation (never the split)")
    split_seed: int = setting(123, label="Split seed", integer=True, low=0, high=2**32 - 1, step=1,
                              help="which images are validation and test (123: the study's); a sweep's runs "
                                   "share it, and runs with the same split seed share the split")
    test_fraction: float = setting(0.0, label="Test split (held out)", **{**FRACTION, "form_max": 0.5},
                                   help="share of all images set aside before the validation split: never trained "
                                        "on, never used for early stopping or pruning; the finished model is "
                                        "evaluated on it once (default 0: none)")
    early_stopping_patience: int = setting(0, label="Early stopping patience (0 = off)", integer=True, low=0,
                                           form_max=1000, step=1, form_key="tf_patience",
                                           help="epochs without val_loss improvement before stopping; 0 = off")
    precision: str = setting("auto", label="Precision", widget="select", choices=PRECISIONS,
                             help="auto: mixed_float16 on GPU, float32 on CPU")
    jit_compile: bool = setting(False, label="Compile with XLA", widget="checkbox", flag="--xla", const=True,
                                help="compile with XLA (slow first epoch; measured 7x slower per epoch on CPU)")
    checkpoint_every: int = setting(1, label="Checkpoint every (epochs)", integer=True, low=1, form_max=1000,
                                    step=1, help="epochs between resumable checkpoints")
    feature_cache: bool = setting(
        True, label="Frozen-feature cache", widget="checkbox", flag="--no-feature-cache", const=False,
        help="run the frozen layers once per image and train the rest on their stored output (features.py); "
             "with augmentation on, a few augmented views per image are cached (cached views). Never used with "
             "trainable frozen BatchNormalization; without augmentation, results equal an uncached run. Off: the "
             "frozen layers run on every image each epoch")
    augment_views: int = setting(4, label="Cached views", integer=True, low=0, high=MAX_AUGMENT_VIEWS, step=1,
                                 form_key="tf_aug_views", metavar="K",
                                 help="with augmentation and the feature cache: K augmented views of each training "
                                      "image are cached at the cut and epoch e trains on view (e-1) mod K "
                                      "(augmented_views.py); 0 trains on freshly augmented images every epoch")
    sweep: str = setting("", label="Sweep", widget="none", flag=None, cli="set by the sweep that launches the run",
                         form="set by the sweep that launches the run",
                         help="id of the sweep this run belongs to (runs/.sweeps/<id>); empty for a lone run")
    init_from_run: str = setting(
        "", label="Start from a finished run", widget="select", flag=None, cli="--from-run RUN",
        help="Transfer from a run: a finished run's model.keras gives every layer but the classifier its starting "
             "weights (core/lineage.py); its backbone, alpha, image size and head must be this config's, and "
             "weights is then not loaded (kept as the parent's, for the record). Empty: start from the weights")
    class_weight: str = setting("none", label="Class weights in the loss", widget="radio", choices=CLASS_WEIGHTS,
                                help="balanced: each class counts alike in the loss whatever its number of training "
                                     "images (for imbalanced data; the dataset's health report says when it would "
                                     "matter); none: each image counts alike")

    def __post_init__(self) -> None:
        check_fields(self, ConfigError)
        if not self.dataset:
            raise ConfigError("dataset is empty")
        if not self.weights:
            raise ConfigError("weights must be 'imagenet', 'none' or a file path")
        if self.backbone == "small_cnn" and self.weights == "imagenet":
            raise ConfigError("small_cnn has no ImageNet weights: use weights='none'")
        if self.freeze != FREEZE_ALL and (
            not isinstance(self.freeze, int) or isinstance(self.freeze, bool) or self.freeze < 1
        ):
            raise ConfigError(f"freeze must be an integer >= 1 or 'all', got {self.freeze!r}")
        if self.test_fraction + self.validation_split >= 1:
            raise ConfigError(f"test_fraction + validation_split must be below 1 (something must be left to train "
                              f"on), got {self.test_fraction} + {self.validation_split}")
        if not self.freeze_batchnorm and not self.train_batchnorm:
            raise ConfigError("freeze_batchnorm off (frozen BatchNorm keeps training) contradicts train_batchnorm off "
                              "(every BatchNorm frozen): choose one")
        if not isinstance(self.sweep, str) or len(self.sweep) > 100:
            raise ConfigError(f"sweep must be a sweep id (text up to 100 characters), got {self.sweep!r}")
        if not isinstance(self.init_from_run, str) or len(self.init_from_run) > 100 \
                or any(c in self.init_from_run for c in "/\\\x00") or self.init_from_run.startswith("."):
            raise ConfigError(f"init_from_run must be a run id (text up to 100 characters, no '/'), "
                              f"got {self.init_from_run!r}")
        if not isinstance(self.augmentation, Augmentation):
            raise ConfigError("augmentation must be an Augmentation")

    def freeze_index(self, n_layers: int) -> int:
        """The seed-rule freeze index for a backbone of n_layers layers: 1..n_layers+1."""
        if self.freeze == FREEZE_ALL:
            return n_layers + 1
        return min(int(self.freeze), n_layers + 1)

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        reject_unknown_keys(cls, data, "config")
        values = dict(data)
        if "split_seed" not in values and "seed" in values:  # written before split_seed: the run seed split it
            values["split_seed"] = values["seed"]
        if "augment_views" not in values:  # written before cached views existed: augmented runs trained on images
            values["augment_views"] = 0
        if isinstance(values.get("augmentation"), dict):
            reject_unknown_keys(Augmentation, values["augmentation"], "augmentation")
            values["augmentation"] = Augmentation(**values["augmentation"])
        if isinstance(values.get("freeze"), str) and values["freeze"] != FREEZE_ALL:
            try:
                values["freeze"] = int(values["freeze"])
            except ValueError:
                raise ConfigError(f"freeze must be an integer >= 1 or 'all', got {values['freeze']!r}")
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        return cls.from_dict(json.loads(text))

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        return cls.from_json(Path(path).read_text(encoding="utf-8"))


def _one_of(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


# The seed study's exact protocol: image_dataset_from_directory(validation_split=0.2, seed=123,
# image_size=224, batch_size=64), Adam, 20 epochs, lr 1e-4 (won for every backbone), its conv head
# on 1/255-scaled input, MobileNet frozen up to conv_pw_7 (freeze 47).
SEED_STUDY = TrainConfig(
    name="seed study",
    backbone="mobilenet",
    weights="imagenet",
    image_size=224,
    head="seed",
    dropout=0.2,
    optimizer="adam",
    learning_rate=1e-4,
    epochs=20,
    batch_size=64,
    freeze=47,
    validation_split=0.2,
    seed=123,
    precision="float32",
)

# What we recommend instead: the backbone's own preprocessing and a pooled head.
RECOMMENDED = SEED_STUDY.replace(name="recommended", head="recommended", precision="auto", train_batchnorm=False)

# A run on the generated demo data that finishes in about a minute on 2 CPU cores, offline: the seed's
# small from-scratch CNN with its conv head (measured: ~0.9 validation accuracy after 15 epochs at 64 px;
# MobileNet without pretrained weights stays near chance on 200 images).
DEMO_QUICK = TrainConfig(
    name="demo quick",
    dataset="demo",
    backbone="small_cnn",
    weights="none",
    image_size=64,
    head="seed",
    learning_rate=1e-3,
    epochs=20,
    batch_size=16,
    freeze=1,
    precision="float32",
)

PRESETS: dict[str, TrainConfig] = {
    "seed study": SEED_STUDY,
    "recommended": RECOMMENDED,
    "demo quick": DEMO_QUICK,
}


# ---------------------------------------------------------------- sweeps

MAX_SWEEP_RUNS = 500
MAX_SWEEP_NAME = 120  # leaves room in TrainConfig.name (200) for " · <backbone> lr … freeze … seed …"

FreezePoint = int | str  # an index >= 1, or "all"


def _is_index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _freeze_value(value: Any) -> FreezePoint:
    """A freeze point from user data: an int >= 1, "all", or a digit string; ConfigError otherwise."""
    if value == FREEZE_ALL:
        return FREEZE_ALL
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not _is_index(value) or value < 1:
        raise ConfigError(f"freeze points must be integers >= 1 or 'all', got {value!r}")
    return value


def _unique(name: str, values: Sequence[Any]) -> None:
    if not values:
        raise ConfigError(f"{name}: give at least one")
    if len(set(values)) != len(values):
        raise ConfigError(f"{name}: each value may be given once, got {list(values)}")


@dataclass(frozen=True)
class PruneConfig:
    """Successive halving over configurations (grid points: backbone, learning rate, freeze point), ASHA-style.

    At each rung epoch a run is judged by its configuration's mean over the seeds that have reached that epoch
    (its own included): when that mean is not in the top keep_fraction of the configurations there, the run stops
    as "pruned", and the configuration's later seeds are not trained at all. Nothing is pruned until min_runs
    configurations (this one included) have reached the rung. Judging configurations, not single runs, keeps a
    configuration's seeds together, so the best ones finish with all their seeds and the winner's spread is known.
    """

    rungs: tuple[int, ...] = (2, 4)
    keep_fraction: float = 0.5
    min_runs: int = 3

    def __post_init__(self) -> None:
        object.__setattr__(self, "rungs", tuple(self.rungs))
        if not self.rungs:
            raise ConfigError("pruning needs at least one rung epoch")
        if any(not _is_index(r) or r < 1 for r in self.rungs) or list(self.rungs) != sorted(set(self.rungs)):
            raise ConfigError(f"rungs must be increasing epoch numbers >= 1, got {list(self.rungs)}")
        if not (isinstance(self.keep_fraction, (int, float)) and 0 < self.keep_fraction < 1):
            raise ConfigError(f"keep_fraction must be in (0, 1), got {self.keep_fraction!r}")
        if not _is_index(self.min_runs) or self.min_runs < 2:
            raise ConfigError(f"min_runs must be an integer >= 2, got {self.min_runs!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"rungs": list(self.rungs), "keep_fraction": self.keep_fraction, "min_runs": self.min_runs}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PruneConfig":
        reject_unknown_keys(cls, data, "prune")
        values = dict(data)
        if "rungs" in values:
            values["rungs"] = tuple(values["rungs"])
        return cls(**values)


@dataclass(frozen=True)
class SweepConfig:
    """A grid of training runs: base config × backbones × learning rates × freeze points × seeds.

    freeze_points apply to every backbone unless backbone_freeze_points gives a backbone its own (freeze indices
    differ between backbones, e.g. when generated by a rule from each one's layer listing).

    Every run shares the base's split (split_seed, test_fraction): the seeds vary only the run seed (initial weights,
    shuffling, augmentation). vary_split=True makes each run's split_seed its seed, so the split varies too.
    """

    name: str
    base: TrainConfig
    backbones: tuple[str, ...]
    learning_rates: tuple[float, ...]
    freeze_points: tuple[FreezePoint, ...]
    seeds: tuple[int, ...] = (123,)
    prune: PruneConfig | None = None
    backbone_freeze_points: dict[str, tuple[FreezePoint, ...]] = field(default_factory=dict)
    vary_split: bool = False

    def __post_init__(self) -> None:
        set_ = lambda key, value: object.__setattr__(self, key, value)  # noqa: E731 - frozen dataclass
        set_("name", str(self.name).strip())
        if not self.name:
            raise ConfigError("sweep name is empty")
        if len(self.name) > MAX_SWEEP_NAME:
            raise ConfigError(f"sweep name is longer than {MAX_SWEEP_NAME} characters")
        if not isinstance(self.base, TrainConfig):
            raise ConfigError("base must be a TrainConfig")
        set_("backbones", tuple(self.backbones))
        set_("learning_rates", tuple(float(lr) for lr in self.learning_rates))
        set_("freeze_points", tuple(_freeze_value(v) for v in self.freeze_points))
        set_("seeds", tuple(self.seeds))
        set_("backbone_freeze_points",
             {str(k): tuple(_freeze_value(v) for v in vs) for k, vs in dict(self.backbone_freeze_points).items()})
        _unique("backbones", self.backbones)
        for backbone in self.backbones:
            if backbone not in BACKBONES:
                raise ConfigError(f"backbone must be one of {', '.join(BACKBONES)}; got {backbone!r}")
        _unique("learning rates", self.learning_rates)
        for lr in self.learning_rates:
            if not (math.isfinite(lr) and 0 < lr <= 10):
                raise ConfigError(f"learning rates must be in (0, 10], got {lr}")
        extra = set(self.backbone_freeze_points) - set(self.backbones)
        if extra:
            raise ConfigError(f"freeze points given for backbones not in the sweep: {', '.join(sorted(extra))}")
        for backbone in self.backbones:
            _unique(f"freeze points ({backbone})", self.points_for(backbone))
        _unique("seeds", self.seeds)
        if any(not _is_index(seed) or seed < 0 for seed in self.seeds):
            raise ConfigError(f"seeds must be integers >= 0, got {list(self.seeds)}")
        if self.prune is not None:
            if not isinstance(self.prune, PruneConfig):
                raise ConfigError("prune must be a PruneConfig or None")
            if self.prune.rungs[0] >= self.base.epochs:
                raise ConfigError(f"pruning rungs must come before the last epoch ({self.base.epochs}); "
                                  f"got {list(self.prune.rungs)}")
        if self.size() > MAX_SWEEP_RUNS:
            raise ConfigError(f"the sweep has {self.size()} runs; at most {MAX_SWEEP_RUNS}")
        if not isinstance(self.vary_split, bool):
            raise ConfigError(f"vary_split must be true or false, got {self.vary_split!r}")
        if self.base.sweep:  # e.g. a base taken from a run of another sweep
            set_("base", self.base.replace(sweep=""))
        expand(self)  # every run's TrainConfig must be valid (e.g. small_cnn with weights='imagenet' is not)

    def points_for(self, backbone: str) -> tuple[FreezePoint, ...]:
        """This backbone's freeze points."""
        return self.backbone_freeze_points.get(backbone, self.freeze_points)

    def size(self) -> int:
        """How many runs the grid expands to."""
        return sum(len(self.points_for(b)) for b in self.backbones) * len(self.learning_rates) * len(self.seeds)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "base": self.base.to_dict(),
            "backbones": list(self.backbones),
            "learning_rates": list(self.learning_rates),
            "freeze_points": list(self.freeze_points),
            "seeds": list(self.seeds),
            "prune": self.prune.to_dict() if self.prune else None,
            "backbone_freeze_points": {k: list(v) for k, v in self.backbone_freeze_points.items()},
            "vary_split": self.vary_split,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SweepConfig":
        reject_unknown_keys(cls, data, "sweep")
        values = dict(data)
        if isinstance(values.get("base"), Mapping):
            values["base"] = TrainConfig.from_dict(values["base"])
        if isinstance(values.get("prune"), Mapping):
            values["prune"] = PruneConfig.from_dict(values["prune"])
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> "SweepConfig":
        return cls.from_dict(json.loads(text))


def format_lr(lr: float) -> str:
    """A learning rate as a short power of ten: 1e-4, 3e-4, 2.5e-3."""
    mantissa, exponent = f"{lr:.6e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def run_name(sweep_name: str, backbone: str, lr: float, freeze: FreezePoint, seed: int) -> str:
    """The display name of one run of a sweep: "<sweep> · mobilenet lr 1e-4 freeze 47 seed 1"."""
    return f"{sweep_name} · {backbone} lr {format_lr(lr)} freeze {freeze} seed {seed}"


def grid_point(config: TrainConfig) -> tuple[str, float, str]:
    """(backbone, learning rate, freeze point as text): what a sweep's runs differ in besides the seed."""
    return config.backbone, float(config.learning_rate), str(config.freeze)


def expand(sweep: SweepConfig, sweep_id: str = "") -> list[TrainConfig]:
    """Every run of the grid in launch order, each tagged sweep_id: seed first, then backbone, learning rate and
    freeze point. So every configuration has a first result before any has its second seed, and pruning (which
    judges configurations) sees them all before the later seeds are spent. The runs share the base's split_seed
    (one split for the whole grid) unless the sweep varies the split."""
    configs = []
    for seed in sweep.seeds:
        for backbone in sweep.backbones:
            for lr, freeze in itertools.product(sweep.learning_rates, sweep.points_for(backbone)):
                configs.append(sweep.base.replace(
                    name=run_name(sweep.name, backbone, lr, freeze, seed), backbone=backbone, learning_rate=lr,
                    freeze=freeze, seed=seed, sweep=sweep_id,
                    split_seed=seed if sweep.vary_split else sweep.base.split_seed,
                ))
    return configs
