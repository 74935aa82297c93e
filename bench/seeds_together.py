"""Benchmark: would training the seeds of one sweep configuration together (one model with a branch per seed on the
shared cached features) beat training them one by one? Plain Keras, MobileNet 1.0 at 224 px from freeze 62 (the
recommended sweep's costliest point: a 14x14x512 cut), one CPU thread (as each of two warm workers uses), batch 64,
random weights and data (only the time is measured).

    .venv/bin/python bench/seeds_together.py [--seeds 3] [--steps 8] [--freeze 62]

Prints seconds per training step of one model, of the seeds as separate models (seeds x one), and of one model with
a branch per seed, and the ratio stacked / separate (below 1: stacking saves time).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--freeze", type=int, default=62, help="the seed's 1-based freeze index")
    args = parser.parse_args()

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras
    import numpy as np

    backbone = keras.applications.MobileNet(weights=None, include_top=False, input_shape=(224, 224, 3))
    trainable = backbone.layers[args.freeze - 1:]
    cut_shape = tuple(trainable[0].input.shape[1:])

    def branch(x, k: int):
        for layer in trainable:  # a fresh copy of each layer per branch (own weights, unique names)
            x = layer.__class__.from_config({**layer.get_config(), "name": f"{layer.name}_{k}"})(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        return keras.layers.Dense(10, activation="softmax", name=f"classifier_{k}")(x)

    def model(branches: int) -> keras.Model:
        features = keras.Input(cut_shape)
        outputs = [branch(features, k) for k in range(branches)]
        built = keras.Model(features, outputs if branches > 1 else outputs[0])
        built.compile("adam", ["categorical_crossentropy"] * branches if branches > 1 else "categorical_crossentropy")
        return built

    rng = np.random.default_rng(0)
    x = rng.random((64, *cut_shape), dtype=np.float32)
    y = keras.utils.to_categorical(rng.integers(0, 10, 64), 10)

    def seconds_per_step(built: keras.Model, branches: int) -> float:
        targets = [y] * branches if branches > 1 else y
        for _ in range(2):  # trace and warm up
            built.train_on_batch(x, targets)
        started = time.perf_counter()
        for _ in range(args.steps):
            built.train_on_batch(x, targets)
        return (time.perf_counter() - started) / args.steps

    one = seconds_per_step(model(1), 1)
    stacked = seconds_per_step(model(args.seeds), args.seeds)
    print(f"MobileNet 1.0 from freeze {args.freeze} (cut {cut_shape}), batch 64, 1 thread: one model {one:.3f} s a "
          f"step; {args.seeds} seeds separately {args.seeds * one:.3f} s; together in one model {stacked:.3f} s: "
          f"{stacked / (args.seeds * one):.2f}x")


if __name__ == "__main__":
    main()
