"""Transfer from a run: copy a finished run's weights into a new model, every layer but the classifier."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from carviz.core import lineage
from carviz.core.config import TrainConfig
from carviz.core.store import Store

if TYPE_CHECKING:
    import keras

CLASSIFIER = "predictions"  # the final Dense(num_classes) of both heads (model.py): replaced, never copied


def weighted_layers(model: "keras.Model", prefix: str = "") -> dict[str, Any]:
    """Every layer with weights, nested models walked into: {"backbone/conv1": layer, "head_dense": layer, …}."""
    found: dict[str, Any] = {}
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:  # a nested model (the backbone)
            found.update(weighted_layers(layer, f"{prefix}{layer.name}/"))
        elif layer.weights:
            found[f"{prefix}{layer.name}"] = layer
    return found


def _base_name(name: str) -> str:
    """A layer path without Keras' uniquifying suffixes ("backbone/normalization_1" -> "backbone/normalization"):
    layers a backbone leaves unnamed are numbered by how many were made before in the process."""
    return "/".join(re.sub(r"_\d+$", "", part) for part in name.split("/"))


def copy_weights(source: "keras.Model", target: "keras.Model", skip: tuple[str, ...] = (CLASSIFIER,)) -> int:
    """Copy every weighted layer of `source` into the matching layer of `target`, except `skip` (the classifier).
    Layers are paired in model order and must match: the same name (up to Keras' "_N" suffix for unnamed layers),
    type and weight shapes. ValueError saying where they differ otherwise (nothing is copied then). Returns how many
    layers were copied."""
    if CLASSIFIER in skip and CLASSIFIER not in {layer.name for layer in target.layers}:
        raise ValueError(f"the new model has no {CLASSIFIER!r} classifier layer to replace")
    mine = [(name, layer) for name, layer in weighted_layers(target).items() if name not in skip]
    theirs = [(name, layer) for name, layer in weighted_layers(source).items() if name not in skip]
    problems = []
    if len(mine) != len(theirs):
        problems.append(f"the new model has {len(mine)} layers with weights besides the classifier, the parent "
                        f"{len(theirs)}")
    for (name, layer), (parent_name, parent_layer) in zip(mine, theirs):
        shapes = [tuple(w.shape) for w in layer.weights]
        parent_shapes = [tuple(w.shape) for w in parent_layer.weights]
        if _base_name(name) != _base_name(parent_name) or type(layer).__name__ != type(parent_layer).__name__:
            problems.append(f"{name} ({type(layer).__name__}) meets the parent's {parent_name} "
                            f"({type(parent_layer).__name__})")
        elif shapes != parent_shapes:
            problems.append(f"{name} has weights {shapes}, the parent's {parent_shapes}")
    if problems:
        raise ValueError(f"the parent's model does not fit the new one ({len(problems)} difference(s)): "
                         + "; ".join(problems[:5]))
    for (_, layer), (_, parent_layer) in zip(mine, theirs):
        layer.set_weights(parent_layer.get_weights())
    return len(mine)


def load_parent_model(path: Path) -> "keras.Model":
    """A finished run's model.keras, without its optimizer (as Predict loads it)."""
    import keras

    from carviz.ml import backbones

    backbones.register_serializables()
    return keras.saving.load_model(str(path), compile=False)


def init_from_parent(model: "keras.Model", config: TrainConfig, store: Store | None = None) -> dict[str, Any]:
    """Give a freshly built model (build_model) the weights of config.init_from_run's model, every layer but the
    classifier, which stays new for this run's classes; freezing is build_model's, unchanged. Returns the parent
    record for run.json (lineage.parent_record, plus how many layers were copied). ConfigError when the parent is
    missing, unfinished or of another architecture; ValueError when its model does not fit."""
    parent = lineage.parent_of(config, store)
    record = lineage.parent_record(parent)
    source = load_parent_model(parent.model_path())
    record["layers_copied"] = copy_weights(source, model)
    return record
