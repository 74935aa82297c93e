"""run.json's schema: what a training job records about its run (where it ran, the data, the model, the feature
cache, the kept epoch, its attempts and resumes), typed and versioned. The store owns it: readers get a RunInfo
(Run.run_info(), forgiving: a field that is missing or of the wrong type reads as its default, and a record written
before the schema had a version reads as version 1, with the same fields); the job writes it through
Run.update_info(**RunInfo field values). What makes a record broken is record_checks' business, not this one's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from carviz.core.record_checks import is_int

VERSION = 2  # 1: written before run.json had a version (no "version" key); 2: the same fields, versioned


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _whole(value: Any) -> int | None:
    return value if is_int(value) else None


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _texts(value: Any) -> list[str]:
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def _objects(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


@dataclass(frozen=True)
class Attempt:
    """One start of the job (the first, or a resume): when, from which epoch, where; and, once known, when its first
    training step began and its fit() ended (the job's start-up and wind-down around them)."""

    started_at: str | None = None
    initial_epoch: int = 0
    backend: str | None = None
    node: str | None = None
    gpus: list[str] = field(default_factory=list)
    first_step_at: str | None = None
    fit_ended_at: str | None = None

    @classmethod
    def read(cls, data: dict[str, Any]) -> "Attempt":
        return cls(_text(data.get("started_at")), _whole(data.get("initial_epoch")) or 0, _text(data.get("backend")),
                   _text(data.get("node")), _texts(data.get("gpus")), _text(data.get("first_step_at")),
                   _text(data.get("fit_ended_at")))


@dataclass(frozen=True)
class ModelSummary:
    """The built model: the backbone's layer count, the freeze point and its first trainable layer, parameters."""

    backbone_layers: int | None = None
    freeze_index: int | None = None
    first_trainable: str | None = None
    trainable_params: int | None = None
    non_trainable_params: int | None = None
    precision: str | None = None

    @classmethod
    def read(cls, data: dict[str, Any]) -> "ModelSummary":
        return cls(_whole(data.get("backbone_layers")), _whole(data.get("freeze_index")),
                   _text(data.get("first_trainable")), _whole(data.get("trainable_params")),
                   _whole(data.get("non_trainable_params")), _text(data.get("precision")))


@dataclass(frozen=True)
class Kept:
    """The epoch whose weights the run kept (saved as model.keras), by which rule, of how many, and why."""

    epoch: int | None = None
    rule: str = ""
    last_epoch: int | None = None
    reason: str = ""

    @classmethod
    def read(cls, data: dict[str, Any]) -> "Kept":
        return cls(_whole(data.get("epoch")), _text(data.get("rule")) or "", _whole(data.get("last_epoch")),
                   _text(data.get("reason")) or "")


@dataclass(frozen=True)
class RunInfo:
    """Everything run.json says, typed. Objects whose inside other modules own (device, versions, precision,
    feature_cache, parent, resumes, skipped_images) stay dictionaries: their readers know them."""

    version: int = 1
    device: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, Any] = field(default_factory=dict)
    dataset_path: str | None = None
    dataset_fingerprint: str = ""
    launch_fingerprint: str = ""  # the dataset's at the first start (a resume compares with it)
    classes: list[str] = field(default_factory=list)
    class_counts: dict[str, Any] = field(default_factory=dict)
    train_images: int | None = None
    val_images: int | None = None
    test_images: int | None = None
    skipped_images: list[dict[str, Any]] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    precision: dict[str, Any] = field(default_factory=dict)
    model: ModelSummary | None = None
    feature_cache: dict[str, Any] = field(default_factory=dict)
    parent: dict[str, Any] | None = None  # a transfer run's parent (core/lineage.py)
    kept: Kept | None = None
    resumes: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def read(cls, data: dict[str, Any]) -> "RunInfo":
        """A RunInfo from run.json's object, whatever its version (unknown keys are ignored)."""
        data = data if isinstance(data, dict) else {}
        return cls(
            version=_whole(data.get("version")) or 1,
            device=_object(data.get("device")), versions=_object(data.get("versions")),
            dataset_path=_text(data.get("dataset_path")),
            dataset_fingerprint=_text(data.get("dataset_fingerprint")) or "",
            launch_fingerprint=_text(data.get("launch_fingerprint")) or "",
            classes=_texts(data.get("classes")), class_counts=_object(data.get("class_counts")),
            train_images=_whole(data.get("train_images")), val_images=_whole(data.get("val_images")),
            test_images=_whole(data.get("test_images")), skipped_images=_objects(data.get("skipped_images")),
            attempts=[Attempt.read(item) for item in _objects(data.get("attempts"))],
            precision=_object(data.get("precision")),
            model=ModelSummary.read(data["model"]) if isinstance(data.get("model"), dict) else None,
            feature_cache=_object(data.get("feature_cache")),
            parent=data["parent"] if isinstance(data.get("parent"), dict) else None,
            kept=Kept.read(data["kept"]) if isinstance(data.get("kept"), dict) else None,
            resumes=_objects(data.get("resumes")),
        )

    @property
    def fingerprint_at_launch(self) -> str:
        """The dataset's fingerprint when the run was first launched (records before launch_fingerprint: the last)."""
        return self.launch_fingerprint or self.dataset_fingerprint

    @property
    def parent_model(self) -> str:
        """A transfer run's parent model hash ("" for a run on ImageNet or random weights)."""
        return str((self.parent or {}).get("model_sha256") or "")


def field_names() -> tuple[str, ...]:
    """RunInfo's keys, as the job writes them."""
    return tuple(item.name for item in fields(RunInfo))


def as_dict(value: Any) -> Any:
    """A schema object (Attempt, ModelSummary, Kept) or a list of them as run.json holds it."""
    if isinstance(value, list):
        return [as_dict(item) for item in value]
    return asdict(value) if hasattr(value, "__dataclass_fields__") else value
