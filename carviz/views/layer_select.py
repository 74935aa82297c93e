"""Pure logic behind the Layers page: filtering the layer table, mapping a row click to a freeze point, parameter split."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from carviz.core.config import FREEZE_ALL, RECOMMENDED, TrainConfig, parse_freeze

if TYPE_CHECKING:  # backbones imports keras lazily, but LayerInfo is only needed for hints here
    from carviz.ml.backbones import LayerInfo

LAYER_FILTERS = ("all layers", "convolutions", "block boundaries", "cut points")


def filter_layers(layers: Sequence["LayerInfo"], mode: str = "all layers", query: str = "") -> list["LayerInfo"]:
    """The rows the table shows: one of LAYER_FILTERS, then a case-insensitive name/type search."""
    if mode not in LAYER_FILTERS:
        raise ValueError(f"filter must be one of {', '.join(LAYER_FILTERS)}; got {mode!r}")
    keep = {
        "all layers": lambda layer: True,
        "convolutions": lambda layer: layer.is_conv,
        "block boundaries": lambda layer: layer.block_start or layer.block_end,
        "cut points": lambda layer: layer.is_cut_point,
    }[mode]
    needle = query.strip().lower()
    return [
        layer
        for layer in layers
        if keep(layer) and (not needle or needle in layer.name.lower() or needle in layer.type.lower())
    ]


# What the table shows, left to right: where a layer sits (block, boundary, cut point) comes right after its name,
# so it is on screen beside the table's summary column; shape and params, the widest, come last.
LAYER_COLUMNS = ("#", "name", "block", "boundary", "cut point", "conv", "type", "params", "output shape")
ROW_PX = 35  # st.dataframe's row height (and its header's)
MAX_TABLE_PX = 460


def layer_rows(layers_shown: Sequence["LayerInfo"]) -> list[dict[str, object]]:
    """One table row per layer shown, keys in LAYER_COLUMNS order (boundary: "start", "end" or "start end")."""
    return [
        {
            "#": layer.index,
            "name": layer.name,
            "block": layer.block,
            "boundary": " ".join(word for word, flag in (("start", layer.block_start), ("end", layer.block_end))
                                 if flag),
            "cut point": "✂" if layer.is_cut_point else "",
            "conv": "●" if layer.is_conv else "",
            "type": layer.type,
            "params": layer.params,
            "output shape": layer.output_shape,
        }
        for layer in layers_shown
    ]


def table_height(n_rows: int) -> int:
    """Pixels for a table of n_rows: every row without blank space below a short (filtered) table, a scroll past
    MAX_TABLE_PX."""
    return min(MAX_TABLE_PX, ROW_PX * (max(n_rows, 1) + 1) + 3)


def freeze_from_selection(layers_shown: Sequence["LayerInfo"], selected_rows: Sequence[int]) -> int | None:
    """The freeze point a row click means: the clicked layer's 1-based index becomes the first trainable layer.

    selected_rows are positions in the table as shown (after filtering); None when nothing valid is selected.
    """
    if not selected_rows:
        return None
    row = selected_rows[0]
    if not isinstance(row, int) or isinstance(row, bool) or not 0 <= row < len(layers_shown):
        return None  # a stale selection from a table that has since changed
    return layers_shown[row].index


def clamp_freeze(freeze: int | str, n_layers: int) -> int:
    """The freeze index 1..n_layers+1 ("all" or anything past the end = every layer frozen)."""
    if freeze == FREEZE_ALL:
        return n_layers + 1
    return max(1, min(int(freeze), n_layers + 1))


def frozen_trainable_params(layers: Sequence["LayerInfo"], freeze: int | str) -> tuple[int, int]:
    """(frozen, trainable) parameter counts under the seed rule: "freeze N" freezes layers[:N-1].

    Counts all of a layer's parameters; BatchNormalization's moving statistics are never trained anyway.
    """
    cut = clamp_freeze(freeze, len(layers)) - 1
    frozen = sum(layer.params for layer in layers[:cut])
    trainable = sum(layer.params for layer in layers[cut:])
    return frozen, trainable


def first_trainable(layers: Sequence["LayerInfo"], freeze: int | str) -> "LayerInfo | None":
    """The first layer that trains under `freeze`, or None when the whole backbone is frozen."""
    cut = clamp_freeze(freeze, len(layers))
    return layers[cut - 1] if cut <= len(layers) else None


def carried_config(backbone: str, alpha: float, image_size: int, freeze: int | str, dataset: str) -> TrainConfig:
    """What Layers' "Use in Train" sets: a transfer run on the recommended preset (ImageNet weights, the recommended
    head; weights 'none' for small_cnn, which has none) with the chosen backbone, size and freeze point, on `dataset`,
    named after what it is (never after the preset the form held)."""
    return RECOMMENDED.replace(
        name=f"{backbone} freeze {freeze}", dataset=dataset or RECOMMENDED.dataset, backbone=backbone,
        alpha=float(alpha), image_size=int(image_size), freeze=parse_freeze(freeze),
        weights="none" if backbone == "small_cnn" else "imagenet",
    )


def carry_note(config: TrainConfig) -> str:
    """The Train page's line saying what the carry from Layers set and what it kept."""
    weights = ("ImageNet weights" if config.weights == "imagenet" else
               f"weights {config.weights!r} ({config.backbone} has no ImageNet weights)")
    return (f"From Layers: {config.backbone} (alpha {config.alpha:g}) at {config.image_size} px, freeze "
            f"{config.freeze}, on the recommended preset: {weights}, the {config.head} head, lr "
            f"{config.learning_rate:g}, {config.epochs} epochs, batch {config.batch_size}; dataset "
            f"`{config.dataset}` kept; named \"{config.name}\". Change anything before launching.")
