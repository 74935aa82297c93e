"""Backbone registry, offline ImageNet weights, layer listing with cut points and blocks, and the seed's freeze rule."""

from __future__ import annotations

import functools
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from carviz.core import settings

if TYPE_CHECKING:  # Keras is imported lazily: the registry must stay cheap to import.
    import keras


@dataclass(frozen=True)
class BackboneSpec:
    """One selectable backbone; seed_freeze_points maps the seed study's best freeze index to its layer name."""

    name: str
    label: str
    default_size: int
    has_imagenet: bool
    seed_freeze_points: dict[int, str]


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec("mobilenet", "MobileNet", 224, True, {47: "conv_pw_7"}),
        BackboneSpec("mobilenetv2", "MobileNetV2", 224, True, {}),
        BackboneSpec("resnet50", "ResNet50", 224, True, {}),
        BackboneSpec("densenet121", "DenseNet121", 224, True, {144: "conv4_block1_1_conv"}),
        BackboneSpec("efficientnetb0", "EfficientNetB0", 224, True, {}),
        BackboneSpec("small_cnn", "Small CNN (from scratch)", 224, False, {}),
    )
}

# preprocess_input mode of each backbone (see keras.applications.imagenet_utils).
_PREPROCESS_MODE = {
    "mobilenet": "tf",
    "mobilenetv2": "tf",
    "resnet50": "caffe",
    "densenet121": "torch",
    "efficientnetb0": "none",
    "small_cnn": "unit",
}
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)

_CONV_TYPES = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D")

# Layer-name pattern -> block name template, tried in order; unmatched layers join the stem, top or previous block.
_BLOCK_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^(conv\d+_block\d+)_"), r"\1"),  # resnet50, densenet121
    (re.compile(r"^(pool[2-9]\d*)_"), r"\1"),  # densenet121 transition blocks
    (re.compile(r"^conv_(?:dw|pw|pad)_(\d+)"), r"block_\1"),  # mobilenet
    (re.compile(r"^expanded_conv_"), "block_0"),  # mobilenetv2's first block
    (re.compile(r"^(block_\d+)_"), r"\1"),  # mobilenetv2
    (re.compile(r"^(block\d+[a-z])_"), r"\1"),  # efficientnet
    (re.compile(r"^(block\d+)_"), r"\1"),  # small_cnn
)


class WeightsUnavailableError(RuntimeError):
    """ImageNet weights are neither in the Keras cache nor downloadable (no internet)."""


@dataclass(frozen=True)
class LayerInfo:
    """One backbone layer as the Layers page shows it; index is 1-based with the InputLayer as 1."""

    index: int
    name: str
    type: str
    output_shape: str
    params: int
    is_conv: bool
    block: str
    block_start: bool
    block_end: bool
    is_cut_point: bool  # the rest of the network is a function of this layer's single output tensor


def spec(name: str) -> BackboneSpec:
    """The registry entry for `name`, with a clear error for unknown names."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}") from None


# ---------------------------------------------------------------- weights files


def _keras_cache_dir() -> Path:
    """The folder Keras' get_file caches into (before cache_subdir)."""
    keras_config = sys.modules.get("keras.src.backend.config")
    if keras_config is not None:  # Keras read $KERAS_HOME once, at import
        base = Path(os.path.expanduser(keras_config.keras_home()))
    else:
        base = settings.keras_home()
    # get_file falls back to /tmp/.keras when the cache folder is not writable (Keras creates it if it can).
    existing = next((p for p in (base, *base.parents) if p.exists()), base)
    if not os.access(existing, os.W_OK):
        base = Path("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()) / ".keras"
    return base


def _weights_file_name(name: str, image_size: int, alpha: float) -> str:
    if name == "mobilenet":
        texts = {1.0: "1_0", 0.75: "7_5", 0.5: "5_0", 0.25: "2_5"}
        if alpha not in texts:
            raise ValueError(f"MobileNet has ImageNet weights for alpha 0.25, 0.5, 0.75, 1.0 only; got {alpha}")
        rows = image_size if image_size in (128, 160, 192, 224) else 224  # Keras falls back to 224
        return f"mobilenet_{texts[alpha]}_{rows}_tf_no_top.h5"
    if name == "mobilenetv2":
        if alpha not in (0.35, 0.5, 0.75, 1.0, 1.3, 1.4):
            raise ValueError(
                f"MobileNetV2 has ImageNet weights for alpha 0.35, 0.5, 0.75, 1.0, 1.3, 1.4 only; got {alpha}"
            )
        rows = image_size if image_size in (96, 128, 160, 192, 224) else 224
        return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}_no_top.h5"
    if name == "resnet50":
        return "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    if name == "densenet121":
        return "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5"
    if name == "efficientnetb0":
        return "efficientnetb0_notop.h5"
    spec(name)
    raise ValueError(f"backbone {name!r} has no ImageNet weights")


def expected_weights_file(name: str, image_size: int, alpha: float = 1.0) -> Path:
    """Where Keras looks for the no-top ImageNet weights of this backbone: <keras home>/models/<file>."""
    return _keras_cache_dir() / "models" / _weights_file_name(name, image_size, alpha)


# ---------------------------------------------------------------- preprocessing layer


@functools.cache
def _preprocess_class() -> type:
    import keras

    @keras.saving.register_keras_serializable(package="carviz", name="Preprocess")
    class Preprocess(keras.layers.Layer):
        """A backbone's preprocess_input on 0..255 RGB pixels: tf, caffe, torch, unit (x/255) or none."""

        MODES = ("tf", "caffe", "torch", "unit", "none")

        def __init__(self, mode: str = "none", **kwargs: Any) -> None:
            kwargs.setdefault("dtype", "float32")  # exact even under mixed precision
            super().__init__(**kwargs)
            if mode not in self.MODES:
                raise ValueError(f"preprocess mode must be one of {', '.join(self.MODES)}; got {mode!r}")
            self.mode = mode

        def call(self, inputs: Any) -> Any:
            ops = keras.ops
            x = ops.cast(inputs, self.compute_dtype)
            if self.mode == "tf":
                return x / 127.5 - 1.0
            if self.mode == "caffe":
                return ops.flip(x, axis=-1) - ops.convert_to_tensor(_CAFFE_MEAN_BGR, dtype=x.dtype)
            if self.mode == "torch":
                mean = ops.convert_to_tensor(_TORCH_MEAN, dtype=x.dtype)
                std = ops.convert_to_tensor(_TORCH_STD, dtype=x.dtype)
                return (x / 255.0 - mean) / std
            if self.mode == "unit":
                return x / 255.0
            return x

        def compute_output_shape(self, input_shape: Any) -> Any:
            return input_shape

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "mode": self.mode}

    return Preprocess


def register_serializables() -> None:
    """Register carviz's custom Keras layers so keras.saving.load_model finds them (carviz.ml.model does this on import)."""
    _preprocess_class()


def __getattr__(attr: str) -> Any:
    if attr == "Preprocess":
        return _preprocess_class()
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def preprocessing_layer(name: str) -> "keras.layers.Layer":
    """The backbone's own preprocess_input as a serialisable layer taking 0..255 RGB pixels."""
    spec(name)
    return _preprocess_class()(mode=_PREPROCESS_MODE[name], name="preprocess")


# ---------------------------------------------------------------- building


def _small_cnn(image_size: int) -> "keras.Model":
    import keras

    inputs = keras.Input((image_size, image_size, 3), name="input_layer")
    x = inputs
    for i, filters in enumerate((32, 64, 128), start=1):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"block{i}_conv")(x)
        x = keras.layers.MaxPooling2D(name=f"block{i}_pool")(x)
    return keras.Model(inputs, x, name="small_cnn")


def _application(name: str, image_size: int, weights: str | None, alpha: float) -> "keras.Model":
    import keras

    apps = keras.applications
    kwargs: dict[str, Any] = {"include_top": False, "weights": weights, "input_shape": (image_size, image_size, 3)}
    if name == "mobilenet":
        return apps.MobileNet(alpha=alpha, **kwargs)
    if name == "mobilenetv2":
        return apps.MobileNetV2(alpha=alpha, **kwargs)
    if name == "resnet50":
        return apps.ResNet50(**kwargs)
    if name == "densenet121":
        return apps.DenseNet121(**kwargs)
    if name == "efficientnetb0":
        return apps.EfficientNetB0(**kwargs)
    raise ValueError(f"unknown backbone {name!r}")


def build_backbone(name: str, image_size: int, weights: str = "imagenet", alpha: float = 1.0) -> "keras.Model":
    """The backbone without its top, input (image_size, image_size, 3); weights "imagenet", "none" or a file path."""
    register_serializables()
    entry = spec(name)
    if name not in ("mobilenet", "mobilenetv2"):
        alpha = 1.0  # width multiplier only exists for the MobileNets
    choice = weights.strip()
    if choice.lower() == "imagenet":
        if not entry.has_imagenet:
            raise ValueError(f"{entry.label} has no ImageNet weights: use weights='none' or a weights file")
        return _build_imagenet(name, image_size, alpha)
    if choice.lower() == "none":
        return _build(name, image_size, None, alpha)
    model = _build(name, image_size, None, alpha)
    load_weights_file(model, Path(choice).expanduser())
    return model


def _build(name: str, image_size: int, weights: str | None, alpha: float) -> "keras.Model":
    if name == "small_cnn":
        return _small_cnn(image_size)
    return _application(name, image_size, weights, alpha)


def _build_imagenet(name: str, image_size: int, alpha: float) -> "keras.Model":
    target = expected_weights_file(name, image_size, alpha)  # also validates alpha
    was_cached = target.is_file()
    try:
        return _application(name, image_size, "imagenet", alpha)
    except Exception as exc:
        # Keras' get_file raises a bare Exception ("URL fetch failure ...") or an OSError when the download fails.
        download_failed = "URL fetch failure" in str(exc) or isinstance(exc, OSError)
        if not download_failed or target.is_file():
            raise
        stale = (
            f"The {target.name} that was there did not match Keras' checksum, so Keras tried to download it "
            "again and removed it when that failed. "
            if was_cached
            else ""
        )
        raise WeightsUnavailableError(
            f"ImageNet weights for {BACKBONES[name].label} are not available offline: Keras looked for "
            f"{target.name} in {target.parent} and could not download it ({exc}). {stale}Put the file "
            f"{target.name} into {target.parent} (KERAS_HOME selects the folder above 'models'), "
            "or run once with internet access and Keras downloads it itself."
        ) from exc


def load_weights_file(model: "keras.Model", path: Path) -> None:
    """Load a weights file into `model`: legacy .h5/.hdf5 by layer name (all layers must be present), else Keras' own."""
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    suffix = path.name.lower()
    if suffix.endswith((".weights.h5", ".keras")):
        try:
            model.load_weights(str(path))
        except Exception as exc:
            raise ValueError(f"weights file {path} does not fit backbone {model.name}: {exc}") from exc
        return
    if not suffix.endswith((".h5", ".hdf5")):
        raise ValueError(f"weights file {path} must be .h5, .hdf5, .weights.h5 or .keras")
    import h5py

    with h5py.File(path, "r") as f:
        group = f["model_weights"] if "layer_names" not in f.attrs and "model_weights" in f else f
        stored = {n.decode() if isinstance(n, bytes) else str(n) for n in group.attrs.get("layer_names", [])}
    missing = [layer.name for layer in model.layers if layer.weights and layer.name not in stored]
    if missing:
        raise ValueError(
            f"weights file {path} does not fit backbone {model.name}: it has no weights for "
            f"{len(missing)} layer(s), e.g. {', '.join(missing[:5])}"
        )
    try:
        model.load_weights(str(path), by_name=True)
    except Exception as exc:
        raise ValueError(f"weights file {path} does not fit backbone {model.name}: {exc}") from exc


# ---------------------------------------------------------------- layers, blocks, cut points


def list_layers(name: str, image_size: int | None = None, alpha: float = 1.0) -> list[LayerInfo]:
    """Every layer of the backbone (built with weights=None, memoised)."""
    entry = spec(name)
    if name not in ("mobilenet", "mobilenetv2"):
        alpha = 1.0
    return list(_list_layers_cached(name, image_size or entry.default_size, float(alpha)))


@functools.lru_cache(maxsize=32)
def _list_layers_cached(name: str, image_size: int, alpha: float) -> tuple[LayerInfo, ...]:
    return tuple(layers_of(build_backbone(name, image_size, "none", alpha)))


def _output_shape(layer: Any) -> str:
    try:
        output = layer.output
    except (AttributeError, ValueError):
        return "?"
    if isinstance(output, (list, tuple)):
        return ", ".join(str(tuple(t.shape)) for t in output)
    return str(tuple(output.shape))


def _blocks(names: list[str]) -> list[str]:
    matched: list[str | None] = []
    for layer_name in names:
        block = None
        for pattern, repl in _BLOCK_PATTERNS:
            hit = pattern.match(layer_name)
            if hit:
                block = hit.expand(repl)
                break
        matched.append(block)
    hits = [i for i, b in enumerate(matched) if b is not None]
    if not hits:  # an unknown architecture: every layer is its own block
        return list(names)
    blocks: list[str] = []
    for i, block in enumerate(matched):
        if block is None:
            block = "stem" if i < hits[0] else "top" if i > hits[-1] else blocks[-1]
        blocks.append(block)
    return blocks


def _cut_points(model: Any, layers: list[Any]) -> list[bool]:
    """For each layer: does no graph edge jump over it, and does it have one output tensor?"""
    from carviz.ml import keras_graph

    if getattr(model, "_nodes", None) is None:  # not a functional graph (Sequential): a chain
        return [True] * len(layers)
    position = {id(layer): i for i, layer in enumerate(layers)}
    single_output = [False] * len(layers)
    # crossing[i] > 0 when some edge u -> v has u < i < v; built as a difference array (O(layers + edges)).
    crossing = [0] * (len(layers) + 1)
    for v, layer in enumerate(layers):
        nodes = keras_graph.inbound_calls(model, layer)  # this model's calls (a layer may be reused elsewhere)
        single_output[v] = len(nodes) <= 1 and all(len(node.outputs) == 1 for node in nodes)
        for node in nodes:
            for parent in node.parent_nodes:
                u = position.get(id(parent.operation))
                if u is not None and v - u > 1:
                    crossing[u + 1] += 1
                    crossing[v] -= 1
    result = []
    running = 0
    for i in range(len(layers)):
        running += crossing[i]
        result.append(running == 0 and single_output[i])
    return result


def layers_of(model: "keras.Model") -> list[LayerInfo]:
    """LayerInfo for every layer of `model` (model.layers order, 1-based, InputLayer first)."""
    layers = list(model.layers)
    names = [layer.name for layer in layers]
    blocks = _blocks(names)
    cuts = _cut_points(model, layers)
    infos = []
    for i, layer in enumerate(layers):
        type_name = type(layer).__name__
        infos.append(
            LayerInfo(
                index=i + 1,
                name=layer.name,
                type=type_name,
                output_shape=_output_shape(layer),
                params=int(layer.count_params()) if layer.built else 0,
                is_conv=type_name in _CONV_TYPES,
                block=blocks[i],
                block_start=i == 0 or blocks[i - 1] != blocks[i],
                block_end=i == len(layers) - 1 or blocks[i + 1] != blocks[i],
                is_cut_point=cuts[i],
            )
        )
    return infos


# ---------------------------------------------------------------- freezing


def apply_freeze(backbone: "keras.Model", freeze_index: int, freeze_batchnorm: bool = True,
                 train_batchnorm: bool = True) -> None:
    """The seed's rule: "freeze N" makes layers[:N-1] non-trainable and layers[N-1:] trainable.

    N=1 freezes nothing; N > len(layers) freezes every layer. With freeze_batchnorm=True a frozen
    BatchNormalization layer runs in inference mode (Keras 3 does this for trainable=False BN: moving
    statistics, fixed gamma/beta). With freeze_batchnorm=False the BatchNormalization layers inside the
    frozen part stay trainable: in training they normalise with batch statistics, update their moving
    averages and learn gamma/beta, while the other frozen layers keep their weights. With train_batchnorm=False
    the BatchNormalization layers of the trainable part are frozen too (inference mode, fixed gamma/beta).
    """
    import keras

    if isinstance(freeze_index, bool) or not isinstance(freeze_index, int) or freeze_index < 1:
        raise ValueError(f"freeze index must be an integer >= 1, got {freeze_index!r}")
    layers = backbone.layers
    frozen = min(freeze_index - 1, len(layers))
    backbone.trainable = True  # the setter cascades to every sublayer; per-layer flags follow
    for i, layer in enumerate(layers):
        is_batchnorm = isinstance(layer, keras.layers.BatchNormalization)
        if i < frozen:
            layer.trainable = not freeze_batchnorm and is_batchnorm
        else:
            layer.trainable = train_batchnorm or not is_batchnorm


def first_trainable_layer(backbone: "keras.Model", freeze_index: int) -> str | None:
    """Name of layer number freeze_index (the first layer of the trainable part), or None when all are frozen."""
    if freeze_index < 1:
        raise ValueError(f"freeze index must be >= 1, got {freeze_index}")
    layers = backbone.layers
    return layers[freeze_index - 1].name if freeze_index <= len(layers) else None


if "keras" in sys.modules:  # Keras is already paid for: register now, so load_model works after importing this
    register_serializables()
