"""Grad-CAM: where a run's model looks, from the last convolutional feature map of its backbone."""

from __future__ import annotations

import io
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from carviz.data.datasets import load_image_rgb
from carviz.ml.predict import Predictor, decode_like_training, preprocess

if TYPE_CHECKING:
    import keras

# Layers that only shrink the map they are given: the map *before* them is the same evidence at a finer grid.
_POOLING_TYPES = ("MaxPooling2D", "AveragePooling2D")

# The colour map's stops (a "turbo"-like ramp: dark blue, blue, cyan, green, yellow, orange, dark red) at 0..1.
_STOPS = np.array([0.0, 0.15, 0.35, 0.5, 0.65, 0.85, 1.0], dtype=np.float32)
_COLOURS = np.array([[48, 18, 59], [50, 130, 246], [26, 228, 182], [114, 254, 94], [250, 186, 57],
                     [228, 70, 10], [122, 4, 3]], dtype=np.float32)


@dataclass(frozen=True)
class GradCam:
    """Grad-CAM heatmaps of a batch: one (S, S) map in 0..1 per image (S: the model's input size), for the class
    explained in that image; probabilities are the model's softmax outputs, as prediction computes them."""

    heatmaps: np.ndarray  # (N, S, S) float32, 0..1 (all zeros: no positive evidence for that class)
    class_indices: np.ndarray  # (N,) int: the class each heatmap explains
    probabilities: np.ndarray  # (N, classes) float32
    layer: str  # the backbone layer whose output map is explained
    map_size: tuple[int, int]  # that map's (height, width), before upsampling

    def top_indices(self) -> np.ndarray:
        """The most likely class of each image."""
        return self.probabilities.argmax(axis=1) if len(self.probabilities) else np.zeros(0, dtype=np.int64)


def target_layer(model: "keras.Model") -> tuple[int, str]:
    """(1-based position in the backbone, name) of the feature map Grad-CAM explains: the last backbone layer with a
    4-D output, stepping back over trailing pooling layers (small_cnn: block3_conv, not block3_pool), and only to a
    layer the rest of the network depends on alone (a cut point); else the backbone's own output.

    For both heads this is a backbone layer: the seed head's own conv stack works on an already small map (7x7 at
    224 px, pooled to 4, 2, 1), so the backbone's map is the finest one the prediction depends on; gradients still
    flow through that head. The ImageNet backbones end on their last conv block's activation (mobilenet
    conv_pw_13_relu, mobilenetv2 out_relu, resnet50 conv5_block3_out, densenet121 relu, efficientnetb0
    top_activation).
    """
    from carviz.ml.backbones import layers_of

    backbone = model.get_layer("backbone")
    layers = backbone.layers
    infos = layers_of(backbone)
    last = len(layers)
    position = last
    while position > 1 and type(layers[position - 1]).__name__ in _POOLING_TYPES:
        position -= 1
    while position > 1 and len(layers[position - 1].output.shape) != 4:
        position -= 1
    if position == 1 or (position != last and not infos[position - 1].is_cut_point):
        position = last
    if len(layers[position - 1].output.shape) != 4:
        raise ValueError(f"backbone of {model.name} has no 4-D feature map to explain")
    return position, layers[position - 1].name


class _Explainer:
    """The model cut at the explained map: image -> map, and map -> class scores (logits), sharing its layers."""

    def __init__(self, model: "keras.Model") -> None:
        import keras
        import tensorflow as tf

        from carviz.ml.features import IMAGE, submodel
        from carviz.ml.keras_graph import node_for

        self.position, self.layer = target_layer(model)
        self.to_map = submodel(model, IMAGE, self.position)  # preprocessing included: as prediction does it
        rest = submodel(model, self.position, None)
        final = model.layers[-1]
        self.final = final if isinstance(final, keras.layers.Dense) and \
            getattr(final.activation, "__name__", "") == "softmax" else None
        if self.final is not None:  # explain the class score before the softmax (the logit), as Grad-CAM defines it
            features = node_for(rest, self.final).input_tensors[0]
            self.to_score = keras.Model(rest.inputs, features, name=f"{rest.name}_features")
        else:  # another output layer: explain the log-probability instead
            self.to_score = rest
        self.map_size = tuple(int(d) for d in self.to_map.output.shape[1:3])
        size = int(model.input_shape[1])
        self.function = tf.function(self._compute, reduce_retracing=True, input_signature=[
            tf.TensorSpec([None, size, size, 3], tf.float32), tf.TensorSpec([None], tf.int32)])

    def _scores(self, feature_map: Any) -> tuple[Any, Any]:
        import tensorflow as tf

        if self.final is None:
            probabilities = tf.cast(self.to_score(feature_map, training=False), tf.float32)
            return tf.math.log(tf.maximum(probabilities, 1e-30)), probabilities
        features = self.to_score(feature_map, training=False)
        logits = tf.matmul(tf.cast(features, self.final.kernel.dtype), self.final.kernel) + self.final.bias
        logits = tf.cast(logits, tf.float32)
        return logits, tf.nn.softmax(logits)

    def _compute(self, batch: Any, classes: Any) -> tuple[Any, Any, Any]:
        import tensorflow as tf

        feature_map = self.to_map(batch, training=False)  # in the model's own compute dtype
        with tf.GradientTape() as tape:
            tape.watch(feature_map)
            scores, probabilities = self._scores(feature_map)
            top = tf.argmax(probabilities, axis=1, output_type=tf.int32)
            classes = tf.where(classes < 0, top, classes)  # -1: the image's most likely class
            chosen = tf.gather(scores, classes, axis=1, batch_dims=1)
        gradients = tf.cast(tape.gradient(chosen, feature_map), tf.float32)
        weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)  # one weight per channel and image
        cam = tf.nn.relu(tf.reduce_sum(weights * tf.cast(feature_map, tf.float32), axis=-1))
        size = tf.shape(batch)[1:3]
        cam = tf.image.resize(cam[..., None], size, method="bilinear")[..., 0]
        peak = tf.reduce_max(cam, axis=(1, 2), keepdims=True)
        cam = tf.math.divide_no_nan(cam, peak)
        return tf.clip_by_value(cam, 0.0, 1.0), probabilities, classes


_EXPLAINERS: "weakref.WeakKeyDictionary[Any, _Explainer]" = weakref.WeakKeyDictionary()


def explainer(model: "keras.Model") -> _Explainer:
    """The model's explainer, built once per model object (kept while the model lives)."""
    found = _EXPLAINERS.get(model)
    if found is None:
        found = _EXPLAINERS[model] = _Explainer(model)
    return found


def explained_layer(predictor: Predictor) -> str:
    """The name of the backbone layer whose map the predictor's heatmaps explain."""
    return explainer(predictor.model).layer


def gradcam(predictor: Predictor, batch: np.ndarray, class_indices: Sequence[int] | np.ndarray | None = None,
            batch_size: int = 16) -> GradCam:
    """Grad-CAM of a preprocessed float32 (N, S, S, 3) batch (predict.preprocess), for the given class of each image
    (None: each image's most likely class)."""
    import tensorflow as tf

    found = explainer(predictor.model)
    batch = np.asarray(batch, dtype=np.float32)
    count, size = len(batch), predictor.image_size
    if batch.ndim != 4 or batch.shape[1:] != (size, size, 3):
        raise ValueError(f"expected a ({count}, {size}, {size}, 3) batch, got shape {batch.shape}")
    wanted = None if class_indices is None else np.asarray(class_indices, dtype=np.int64).reshape(-1)
    if wanted is not None:
        if len(wanted) != count:
            raise ValueError(f"{len(wanted)} class indices for {count} images")
        if len(wanted) and (wanted.min() < 0 or wanted.max() >= len(predictor.classes)):
            raise ValueError(f"class indices must lie in 0..{len(predictor.classes) - 1}")
    heatmaps = np.zeros((count, size, size), dtype=np.float32)
    probabilities = np.zeros((count, len(predictor.classes)), dtype=np.float32)
    explained = np.zeros(count, dtype=np.int64)
    for start in range(0, count, batch_size):
        part = batch[start:start + batch_size]
        chosen = np.full(len(part), -1) if wanted is None else wanted[start:start + batch_size]
        cams, probs, used = found.function(tf.constant(part), tf.constant(chosen, dtype=tf.int32))
        heatmaps[start:start + len(part)] = np.asarray(cams, dtype=np.float32)
        probabilities[start:start + len(part)] = np.asarray(probs, dtype=np.float32)
        explained[start:start + len(part)] = np.asarray(used)
    return GradCam(heatmaps=heatmaps, class_indices=explained, probabilities=probabilities, layer=found.layer,
                   map_size=found.map_size)


def gradcam_images(predictor: Predictor, images: Sequence[Image.Image | np.ndarray] | np.ndarray,
                   class_indices: Sequence[int] | np.ndarray | None = None) -> GradCam:
    """Grad-CAM of raw RGB images of any size, preprocessed as prediction preprocesses them."""
    return gradcam(predictor, preprocess(images, predictor.image_size), class_indices)


def class_index(predictor: Predictor, name: str) -> int:
    """The index of a class name; ValueError listing the run's classes when it has no such class."""
    if name not in predictor.classes:
        raise ValueError(f"no class {name!r}; the run's classes: {', '.join(predictor.classes)}")
    return predictor.classes.index(name)


def pixels_like_training(data: bytes, name: str = "image") -> np.ndarray:
    """The RGB pixels prediction feeds the model for a file's bytes (decoded as training decodes its files, Pillow's
    decoding when TensorFlow cannot); ValueError when the bytes are not a usable image."""
    handle = io.BytesIO(data)
    handle.name = name  # load_image_rgb names the file in its errors
    image = load_image_rgb(handle)  # the same checks as prediction: clear errors for broken or huge images
    decoded = decode_like_training(data)
    return decoded if decoded is not None else np.asarray(image)


# ---------------------------------------------------------------- drawing


def colorize(heatmap: np.ndarray) -> np.ndarray:
    """An (H, W) map in 0..1 as (H, W, 3) uint8 colours: dark blue (0) through green and yellow to dark red (1)."""
    values = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float32)), 0.0, 1.0)
    channels = [np.interp(values, _STOPS, _COLOURS[:, channel]) for channel in range(3)]
    return np.clip(np.rint(np.stack(channels, axis=-1)), 0, 255).astype(np.uint8)


def overlay(image: Image.Image | np.ndarray, heatmap: np.ndarray, opacity: float = 0.5) -> Image.Image:
    """The image with the coloured heatmap blended over it: opacity 0 shows the image, 1 the heatmap alone. The
    heatmap (any size, 0..1) is stretched to the image's size, as the model's input was stretched from it."""
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must lie in 0..1, got {opacity}")
    if isinstance(image, Image.Image):
        base = np.asarray(image.convert("RGB"), dtype=np.float32)
    else:
        base = np.asarray(image, dtype=np.float32)
        if base.ndim != 3 or base.shape[-1] != 3:
            raise ValueError(f"expected an HxWx3 RGB image, got shape {base.shape}")
    height, width = base.shape[:2]
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.ndim != 2:
        raise ValueError(f"expected a 2-D heatmap, got shape {heat.shape}")
    if heat.shape != (height, width):
        heat = np.asarray(Image.fromarray(heat).resize((width, height), Image.Resampling.BILINEAR))
    blended = (1.0 - opacity) * base + opacity * colorize(heat).astype(np.float32)
    return Image.fromarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8))
