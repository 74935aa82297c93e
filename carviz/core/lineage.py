"""Transfer from a run: find and check a child's parent run, fill a config from it, and record the lineage."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from carviz.core.config import ConfigError, TrainConfig
from carviz.core.jobs.status import Status
from carviz.core.store import Run, Store

# What a child takes from its parent (the architecture every copied weight must fit); alpha only for the MobileNets.
PARENT_FIELDS = ("backbone", "alpha", "image_size", "head")
_ALPHA_BACKBONES = ("mobilenet", "mobilenetv2")


def mismatches(config: TrainConfig, parent: TrainConfig) -> list[str]:
    """The fields in which a child config differs from its parent's architecture, as "image_size 96 (parent 128)"."""
    found = []
    for field in PARENT_FIELDS:
        if field == "alpha" and config.backbone not in _ALPHA_BACKBONES:
            continue
        mine, theirs = getattr(config, field), getattr(parent, field)
        if (float(mine) != float(theirs)) if field == "alpha" else mine != theirs:
            found.append(f"{field} {mine} (parent {theirs})")
    return found


def parent_of(config: TrainConfig, store: Store | None = None) -> Run:
    """The finished run config.init_from_run names, checked: it exists, succeeded with a saved model, and has this
    config's backbone, alpha, image size and head. ConfigError saying what is wrong otherwise."""
    if not config.init_from_run:
        raise ConfigError("this config starts from weights, not from a run (init_from_run is empty)")
    store = store or Store()
    try:
        parent = store.get_run(config.init_from_run)
    except LookupError:
        raise ConfigError(f"init_from_run: no run {config.init_from_run!r} in {store.root}") from None
    status = parent.status()
    if status != Status.SUCCEEDED or not parent.has_model():
        raise ConfigError(f"init_from_run: run {parent.id} is {status.value}"
                          + ("" if parent.has_model() else " without a saved model")
                          + "; a run can start only from a finished run's model")
    try:
        parent_config = parent.config()
    except (ConfigError, OSError, ValueError) as error:
        raise ConfigError(f"init_from_run: run {parent.id}'s config.json is unreadable ({error})") from None
    wrong = mismatches(config, parent_config)
    if wrong:
        raise ConfigError(f"init_from_run: this run's {', '.join(wrong)} differ from run {parent.id}'s; a run that "
                          f"starts from another keeps its backbone, alpha, image size and head (its weights must fit)")
    return parent


def from_parent(config: TrainConfig, parent: Run) -> TrainConfig:
    """config started from `parent`: its id, and the parent's backbone, alpha, image size, head and weights (the
    weights field is not loaded by a transfer run; it records where the parent started)."""
    source = parent.config()
    return config.replace(init_from_run=parent.id, weights=source.weights,
                          **{field: getattr(source, field) for field in PARENT_FIELDS})


def model_sha256(parent: Run) -> str:
    """sha256 of the parent's model.keras: what a child's frozen features depend on (the feature cache's key)."""
    digest = hashlib.sha256()
    with open(parent.model_path(), "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def parent_record(parent: Run) -> dict[str, Any]:
    """What a child records about its parent in run.json ("parent"): run id, name, dataset, classes, the kept epoch
    whose weights it starts from, and the model file's sha256."""
    config = parent.config_dict()
    evaluation = parent.evaluation() or {}
    classes = parent.classes() or parent.run_info().classes
    return {"run_id": parent.id, "name": parent.display_name(config), "dataset": config.get("dataset"),
            "classes": list(classes), "kept_epoch": evaluation.get("kept_epoch"),
            "val_accuracy": evaluation.get("accuracy"), "model_sha256": model_sha256(parent)}


def lineage_line(parent: Any, init_from_run: Any = "") -> str | None:
    """One line naming where a run started, e.g. "From run cars-mini base (20261128-…) on cars-mini, 4 classes,
    kept epoch 3"; from the config alone before the run has started; None for a run that did not start from one."""
    if isinstance(parent, Mapping) and isinstance(parent.get("run_id"), str):
        name, run_id = parent.get("name"), parent["run_id"]
        text = f"From run {name} ({run_id})" if isinstance(name, str) and name else f"From run {run_id}"
        dataset = parent.get("dataset")
        if isinstance(dataset, str) and dataset:
            text += f" on {dataset.rstrip('/').rsplit('/', 1)[-1]}"
        classes = parent.get("classes")
        if isinstance(classes, list) and classes:
            text += f", {len(classes)} classes"
        epoch = parent.get("kept_epoch")
        if isinstance(epoch, int) and not isinstance(epoch, bool):
            text += f", kept epoch {epoch}"
        return text + ": its weights, a new classifier for these classes."
    if isinstance(init_from_run, str) and init_from_run:
        return f"From run {init_from_run}: its weights, a new classifier for these classes."
    return None
