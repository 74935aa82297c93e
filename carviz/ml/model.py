"""Build the classifier (preprocessing, backbone, head), apply the freeze point and precision, compile."""

from __future__ import annotations

import math
from dataclasses import dataclass

import keras

from carviz.ml import backbones
from carviz.core.config import PRECISIONS, TrainConfig

backbones.register_serializables()  # so keras.saving.load_model finds carviz layers after `import carviz.ml.model`


@dataclass(frozen=True)
class ModelSummary:
    """What build_model made: freeze point, parameter counts and the precision actually used."""

    backbone_layers: int
    freeze_index: int
    first_trainable: str | None
    trainable_params: int
    non_trainable_params: int
    precision: str


# Backbones that train at least 1.2x faster under mixed_bfloat16 than in float32 on a CPU with native bfloat16, at
# accuracy within the seeds' spread (bench/scale.py); "auto" picks bfloat16 for them on such CPUs. Measured on an
# AMD EPYC with AVX-512 BF16 (2 cores): MobileNet's cached freeze-73 epochs 1.59x faster, ResNet50 training 2.0x,
# DenseNet121 1.6x; MobileNet on cars20 (3 seeds) tested 74.2 +- 1.1 % against 73.3 +- 2.7 % in float32.
CPU_BF16_BACKBONES: frozenset[str] = frozenset({"mobilenet", "resnet50", "densenet121"})


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes bfloat16 natively (x86 AVX-512 BF16 or AMX), from /proc/cpuinfo's flags."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as file:
                cpuinfo = file.read()
        except OSError:
            return False
    flags = {flag for line in cpuinfo.splitlines() if line.startswith("flags") for flag in line.split()}
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def choose_precision(setting: str, on_gpu: bool, backbone: str = "",
                     cpu_bf16: bool | None = None) -> tuple[str, str]:
    """(the Keras precision policy, why): explicit settings as they are; "auto" is mixed_float16 on a GPU, and on
    a CPU mixed_bfloat16 for CPU_BF16_BACKBONES where the CPU has native bfloat16, else float32."""
    if setting not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {setting!r}")
    if setting != "auto":
        return setting, "set in the run's config"
    if on_gpu:
        return "mixed_float16", "auto: float16 mixed precision on a GPU"
    if not (cpu_has_native_bf16() if cpu_bf16 is None else cpu_bf16):
        return "float32", "auto: float32 on a CPU without native bfloat16"
    if backbone in CPU_BF16_BACKBONES:
        return "mixed_bfloat16", (f"auto: this CPU computes bfloat16 natively, and {backbone} trains at least 1.2x "
                                  "faster in it at equal accuracy (bench/scale.py)")
    return "float32", (f"auto: float32; bfloat16 was measured no faster for {backbone or 'this backbone'} on a CPU "
                       "(bench/scale.py)")


def resolve_precision(setting: str, on_gpu: bool, cpu_has_bf16: bool | None = None, backbone: str = "") -> str:
    """choose_precision's policy alone."""
    return choose_precision(setting, on_gpu, backbone, cpu_has_bf16)[0]


def make_optimizer(name: str, learning_rate: float) -> "keras.optimizers.Optimizer":
    """adam, sgd (momentum 0.9) or rmsprop at the given learning rate."""
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=learning_rate)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=learning_rate, momentum=0.9)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=learning_rate)
    raise ValueError(f"optimizer must be adam, sgd or rmsprop; got {name!r}")


def _count(weights: list) -> int:
    return sum(math.prod(w.shape) for w in weights)


def build_model(config: TrainConfig, num_classes: int, on_gpu: bool = False) -> tuple["keras.Model", ModelSummary]:
    """Set the global precision policy, build input -> preprocessing -> backbone -> head, freeze, compile."""
    if num_classes < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
    precision = resolve_precision(config.precision, on_gpu, backbone=config.backbone)
    keras.mixed_precision.set_global_policy(precision)  # before any layer is made; "float32" resets it

    size = config.image_size
    # A run that starts from another run's model takes every weight but the classifier from it (transfer.py):
    # loading ImageNet weights first would only cost time (and fail offline).
    weights = "none" if config.init_from_run else config.weights
    backbone = backbones.build_backbone(config.backbone, size, weights, config.alpha)
    backbone.name = "backbone"
    freeze_index = config.freeze_index(len(backbone.layers))
    backbones.apply_freeze(backbone, freeze_index, config.freeze_batchnorm, config.train_batchnorm)

    inputs = keras.Input((size, size, 3), dtype="float32", name="image")  # 0..255 RGB pixels
    if config.head == "seed":
        # The seed study's head: 1/255 input scaling only, then a small conv stack on the feature map.
        x = keras.layers.Rescaling(1 / 255, dtype="float32", name="rescale")(inputs)
        x = backbone(x)
        for filters in (16, 32, 64):
            x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"head_conv{filters}")(x)
            # "same" pooling keeps 1x1 and 2x2 maps (small inputs) valid.
            x = keras.layers.MaxPooling2D(padding="same", name=f"head_pool{filters}")(x)
            x = keras.layers.Dropout(config.dropout, name=f"head_dropout{filters}")(x)
        x = keras.layers.Flatten(name="head_flatten")(x)
        x = keras.layers.Dense(128, activation="relu", name="head_dense")(x)
    else:
        x = backbones.preprocessing_layer(config.backbone)(inputs)
        x = backbone(x)
        x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
        x = keras.layers.Dropout(config.dropout, name="head_dropout")(x)
    # The recommended head starts from a zero classifier (uniform predictions, loss = log(classes)): on frozen
    # ImageNet features a random init's large first logits cost most of a short run's few steps.
    initializer = "glorot_uniform" if config.head == "seed" else "zeros"
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", kernel_initializer=initializer,
                                 name="predictions")(x)
    model = keras.Model(inputs, outputs, name=f"carviz_{config.backbone}_{config.head}")

    model.compile(
        optimizer=make_optimizer(config.optimizer, config.learning_rate),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=config.jit_compile,
    )
    summary = ModelSummary(
        backbone_layers=len(backbone.layers),
        freeze_index=freeze_index,
        first_trainable=backbones.first_trainable_layer(backbone, freeze_index),
        trainable_params=_count(model.trainable_weights),
        non_trainable_params=_count(model.non_trainable_weights),
        precision=precision,
    )
    return model, summary
