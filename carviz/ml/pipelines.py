"""The tf.data pipelines that feed image files to Keras (decoded and resized one way for training, evaluation,
export checks and feature passes), and the augmentation layers (training and the Data page's preview)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import keras
import numpy as np
import tensorflow as tf

if TYPE_CHECKING:
    from carviz.core.config import Augmentation


def make_pipeline(
    paths: Sequence[Path],
    labels: Sequence[int],
    num_classes: int,
    image_size: int,
    batch_size: int,
    training: bool,
    augmentation: "Augmentation | None" = None,
    seed: int = 123,
    cache: bool = True,
) -> tf.data.Dataset:
    """Batches of (float32 images 0..255, one-hot float32 labels); training batches reshuffled each epoch, augmented."""
    if len(paths) != len(labels):
        raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
    path_tensor = tf.constant([str(p) for p in paths], dtype=tf.string, shape=(len(paths),))
    label_tensor = tf.constant(list(labels), dtype=tf.int32, shape=(len(labels),))

    def load(path: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        image = tf.image.resize(image, (image_size, image_size), method="bilinear")
        # held as uint8 (4x less memory in the cache); the model sees float32 0..255
        image = tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)
        image.set_shape((image_size, image_size, 3))
        return image, tf.one_hot(label, num_classes, dtype=tf.float32)

    ds = tf.data.Dataset.from_tensor_slices((path_tensor, label_tensor))
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    if cache:
        ds = ds.cache()
    if training:
        ds = ds.shuffle(max(1, len(paths)), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE)
    if training and augmentation is not None and augmentation.enabled:
        augmenter = augmentation_model(augmentation, seed=seed)
        ds = ds.map(lambda x, y: (augmenter(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    return steady(ds.prefetch(tf.data.AUTOTUNE))


def steady(ds: tf.data.Dataset) -> tf.data.Dataset:
    """The pipeline with tf.data's autotuning off (parallel maps then use one call per core).

    Keras makes a new iterator for every epoch (and every validation pass); with autotuning on, making one
    sometimes waited about 4 s with the CPU idle, so epochs took 1.5-2x their steps' time at random
    (measured: 62 steps of 100 ms took 6 s in some epochs and 10 s in others; with autotuning off, 6.0-6.8 s)."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


def augmentation_model(aug: "Augmentation", seed: int = 123) -> keras.Sequential:
    """Keras preprocessing layers doing what ImageDataGenerator(rotation, shifts, zoom, horizontal_flip) did.

    Built from the amounts whatever aug.enabled says (the caller decides whether to apply it); works on float
    batches in 0..255 and keeps their shape.
    """
    layers: list[keras.layers.Layer] = []
    if aug.rotation > 0:
        layers.append(keras.layers.RandomRotation(aug.rotation / 360.0, fill_mode="nearest", seed=seed))
    if aug.width_shift > 0 or aug.height_shift > 0:
        layers.append(
            keras.layers.RandomTranslation(aug.height_shift, aug.width_shift, fill_mode="nearest", seed=seed + 1)
        )
    if aug.zoom > 0:
        # width_factor given too: ImageDataGenerator zoomed each axis independently
        layers.append(
            keras.layers.RandomZoom((-aug.zoom, aug.zoom), (-aug.zoom, aug.zoom), fill_mode="nearest", seed=seed + 2)
        )
    if aug.horizontal_flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed + 3))
    if not layers:
        layers.append(keras.layers.Identity())
    return keras.Sequential(layers, name="augmentation")


def augment_preview(image: np.ndarray, aug: "Augmentation", count: int = 8, seed: int = 0) -> list[np.ndarray]:
    """`count` augmented uint8 copies of one uint8 HxWx3 image, made by the same layers training uses.

    Downsize big images before calling: the whole batch of copies is processed at once as float32.
    """
    if count <= 0:
        return []
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise ValueError(f"expected an HxWx3 image, got shape {array.shape}")
    batch = np.repeat(array[None, ..., :3].astype("float32"), count, axis=0)
    out = augmentation_model(aug, seed=seed)(batch, training=True)
    out = np.asarray(out)
    return [np.clip(np.rint(x), 0, 255).astype(np.uint8) for x in out]
