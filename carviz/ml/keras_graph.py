"""The one place carviz reads Keras' private functional-graph internals (checked with Keras 3.10-3.15): a model's
nodes by depth, a node's operation, inputs, outputs, parents and call arguments, a layer's inbound nodes, and a
model's nested layers. Cutting a built model into a frozen part and a trainable remainder (features.py), finding the
cut points (backbones.py), Grad-CAM's feature map and float32 export copies need them; Keras has no public API for
them. Also the trainer's symbolic build, so that fit() traces its train step once (build_training_state).
tests/unit/test_keras_graph.py fails loudly, naming this module, when a Keras upgrade changes them."""

from __future__ import annotations

from typing import Any


class KerasInternalsChanged(RuntimeError):
    """This Keras no longer has the graph internals carviz reads."""


def _require(condition: bool, what: str) -> None:
    if not condition:
        import keras

        raise KerasInternalsChanged(f"Keras {keras.__version__} changed {what}, which carviz reads: update "
                                    "carviz/ml/keras_graph.py")


def graph_nodes(model: Any) -> list[Any]:
    """The model's own graph nodes in execution order (deepest first)."""
    by_depth = getattr(model, "_nodes_by_depth", None)
    _require(isinstance(by_depth, dict), "Functional._nodes_by_depth")
    return [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]]


def node_for(model: Any, layer: Any) -> Any:
    """The one node where `model` calls `layer` (ValueError when it calls it more than once, or never)."""
    matches = [node for node in graph_nodes(model) if node.operation is layer]
    if len(matches) != 1:
        raise ValueError(f"layer {layer.name} is called {len(matches)} times in {model.name}; need exactly once")
    return matches[0]


def replay(model: Any, tensors: dict[int, Any], skip: set[int]) -> None:
    """Call model's layers again on new tensors: tensors maps id(original tensor) -> new tensor and is filled in.
    Layers in `skip` (by id) are not called; nodes whose inputs are not all known yet are passed over."""
    for node in graph_nodes(model):
        if not node.operation or node.is_input or id(node.operation) in skip:
            continue
        if any(id(x) not in tensors for x in node.input_tensors):
            continue  # depends on something not replayed (before the cut, or a skipped layer)
        args, kwargs = node.arguments.fill_in(tensors)
        outputs = node.operation(*args, **kwargs)
        for original, new in zip(node.outputs, outputs if isinstance(outputs, (list, tuple)) else [outputs]):
            tensors[id(original)] = new


def fill_in(node: Any, tensors: dict[int, Any]) -> tuple[Any, Any]:
    """The node's call arguments (args, kwargs) with its input tensors replaced from tensors (by id)."""
    return node.arguments.fill_in(tensors)


def inbound_calls(model: Any, layer: Any) -> list[Any]:
    """The nodes where `model`'s own graph calls `layer` (a layer may also be called elsewhere); for a Sequential
    model (no functional graph) None, the caller then treats the model as a chain."""
    node_keys = getattr(model, "_nodes", None)
    if node_keys is None:
        return None  # type: ignore[return-value]
    inbound = list(getattr(layer, "_inbound_nodes", []))
    nodes = [node for k, node in enumerate(inbound) if f"{id(layer)}_ib-{k}" in node_keys]
    if not nodes and len(inbound) == 1:  # node-key format changed: assume its one call
        nodes = inbound
    return nodes


def all_layers(model: Any) -> list[Any]:
    """Every layer inside the model, nested models' layers included."""
    return list(model._flatten_layers())


def build_training_state(model: Any, element_spec: Any) -> None:
    """Create a compiled model's optimizer, loss and metric variables before fit(), from its data's element spec
    (no data is read). Keras' TensorFlow trainer defers this to the first traced train step, and a tf.function that
    creates variables is traced twice: about 2 s of every run, more for larger models."""
    build = getattr(model, "_symbolic_build", None)
    _require(callable(build), "Trainer._symbolic_build")
    strategy = getattr(model, "distribute_strategy", None)  # the TensorFlow trainer builds in its strategy's scope
    if strategy is None:
        build(data_batch=element_spec)
        return
    with strategy.scope():
        build(data_batch=element_spec)
