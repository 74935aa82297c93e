"""Keras' private graph internals that carviz reads (ml/keras_graph.py), checked on a small functional model with a
skip connection: a Keras upgrade that changes them fails here first, naming the module to update."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from carviz.ml import keras_graph


def skip_model() -> keras.Model:
    inputs = keras.Input((4,), name="x")
    a = keras.layers.Dense(3, name="a")(inputs)
    b = keras.layers.Dense(3, name="b")(a)
    c = keras.layers.Add(name="c")([a, b])  # an edge that jumps over b
    return keras.Model(inputs, keras.layers.Dense(2, name="d")(c), name="skip")


def test_nodes_come_in_execution_order_and_each_layer_has_its_one_call() -> None:
    model = skip_model()
    names = [node.operation.name for node in keras_graph.graph_nodes(model) if not node.is_input]
    assert names == ["a", "b", "c", "d"]
    node = keras_graph.node_for(model, model.get_layer("c"))
    assert [parent.operation.name for parent in node.parent_nodes] == ["a", "b"]
    assert len(node.input_tensors) == 2 and len(node.outputs) == 1
    assert [len(keras_graph.inbound_calls(model, layer)) for layer in model.layers] == [1, 1, 1, 1, 1]  # input too
    assert {layer.name for layer in keras_graph.all_layers(model)} >= {"a", "b", "c", "d"}


def test_replaying_the_graph_on_new_inputs_computes_what_the_model_does() -> None:
    model = skip_model()
    fresh = keras.Input((4,))
    tensors = {id(model.inputs[0]): fresh}
    keras_graph.replay(model, tensors, skip=set())
    copy = keras.Model(fresh, tensors[id(model.outputs[0])])
    x = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
    np.testing.assert_allclose(copy(x), model(x), rtol=1e-6)
    args, kwargs = keras_graph.fill_in(keras_graph.node_for(model, model.get_layer("a")), tensors)
    assert args[0] is fresh and kwargs == {}


def test_a_missing_internal_says_which_module_to_update() -> None:
    with pytest.raises(keras_graph.KerasInternalsChanged, match="carviz/ml/keras_graph.py"):
        keras_graph.graph_nodes(object())


def test_a_prebuilt_model_traces_its_train_step_once() -> None:
    """build_training_state creates the optimizer and metric variables up front, so fit() traces once (Keras' own
    deferred build makes TensorFlow trace a variable-creating step twice)."""
    import tensorflow as tf

    class CountingModel(keras.Model):
        traces = 0

        def train_step(self, data):  # Python runs only while TensorFlow traces the step
            CountingModel.traces += 1
            return super().train_step(data)

    def fitted_traces(prebuild: bool) -> int:
        inputs = keras.Input((4,))
        model = CountingModel(inputs, keras.layers.Dense(3, activation="softmax")(inputs))
        model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
        x = np.random.default_rng(0).normal(size=(10, 4)).astype("float32")
        data = tf.data.Dataset.from_tensor_slices((x, np.eye(3, dtype="float32")[np.arange(10) % 3])).batch(4)
        if prebuild:
            keras_graph.build_training_state(model, data.element_spec)
            assert model.optimizer.built
        CountingModel.traces = 0
        model.fit(data, epochs=2, verbose=0)
        return CountingModel.traces

    assert fitted_traces(prebuild=True) == 1
    assert fitted_traces(prebuild=False) >= 1  # Keras' own path still works (twice on Keras 3.15)
