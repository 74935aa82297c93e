"""Predict page sections: Grad-CAM heatmaps over classified images and over the misclassified gallery."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st
from PIL import Image

from carviz.core.store import Run
from carviz.views.formatting import format_accuracy

SHOWN_SIDE = 640  # overlays are drawn on the image scaled down to this side at most (the page shows them smaller)
GALLERY_SIDE = 320
GALLERY_MODES = {"predicted": "Predicted class", "true": "True class", "off": "Off"}


@dataclass(frozen=True)
class HeatmapControls:
    """The shared controls of the classified images: heatmaps on or off, and their opacity."""

    on: bool
    opacity: float


def _shown(pixels: np.ndarray, side: int) -> np.ndarray:
    """The pixels scaled down (aspect kept) so the longer side is at most `side`."""
    image = Image.fromarray(np.asarray(pixels, dtype=np.uint8))
    image.thumbnail((side, side), Image.Resampling.BILINEAR)
    return np.asarray(image)


def _source_bytes(source: Any) -> tuple[str, bytes]:
    """(name, content) of a Streamlit upload, a camera picture or a path."""
    if isinstance(source, (str, Path)):
        return Path(source).name, Path(source).read_bytes()
    data = source.getvalue() if hasattr(source, "getvalue") else source.read()
    return str(getattr(source, "name", "upload")), bytes(data)


@st.cache_data(max_entries=32, show_spinner="Computing the heatmap…")
def explain_bytes(run_path: str, model_mtime: float, data: bytes, name: str, class_index: int,
                  _predictor: Any) -> tuple[np.ndarray, np.ndarray, str, tuple[int, int]]:
    """(pixels scaled for display, heatmap, layer, map size) of one image for one class; cached per (run, model
    version, content, class): the predictor itself is not hashed."""
    from carviz.ml.gradcam import gradcam_images, pixels_like_training

    pixels = pixels_like_training(data, name)
    result = gradcam_images(_predictor, [pixels], [class_index])
    return _shown(pixels, SHOWN_SIDE), result.heatmaps[0], result.layer, result.map_size


@st.cache_data(max_entries=16, show_spinner="Computing the heatmaps…")
def explain_paths(run_path: str, model_mtime: float, paths: tuple[str, ...], class_indices: tuple[int, ...],
                  _predictor: Any) -> list[tuple[np.ndarray, np.ndarray] | None]:
    """Per image file: (pixels scaled for the gallery, heatmap for its class), or None when it cannot be read."""
    from carviz.ml.gradcam import gradcam_images, pixels_like_training

    pixels: list[np.ndarray | None] = []
    for path in paths:
        try:
            pixels.append(pixels_like_training(Path(path).read_bytes(), Path(path).name))
        except (OSError, ValueError):
            pixels.append(None)
    good = [i for i, array in enumerate(pixels) if array is not None]
    if not good:
        return [None] * len(paths)
    result = gradcam_images(_predictor, [pixels[i] for i in good], [class_indices[i] for i in good])
    out: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(paths)
    for row, i in enumerate(good):
        out[i] = (_shown(pixels[i], GALLERY_SIDE), result.heatmaps[row])
    return out


def heatmap_controls(predictor: Any) -> HeatmapControls:
    """The toggle and opacity slider shared by every classified image, and which layer the heatmaps explain."""
    from carviz.ml.gradcam import explainer

    on_col, opacity_col = st.columns([1, 2])
    on = on_col.toggle("Grad-CAM heatmaps", value=True, key="predict_gradcam_on",
                       help="Where the model looked: Grad-CAM of the class chosen under each image, from the last "
                            "convolutional feature map of the backbone, in the precision and preprocessing of "
                            "prediction.")
    opacity = opacity_col.slider("Heatmap opacity", 0.0, 1.0, 0.5, 0.05, key="predict_gradcam_opacity",
                                 disabled=not on)
    if on:
        try:
            found = explainer(predictor.model)
        except (ValueError, KeyError) as exc:  # a model carviz did not build (no "backbone" part)
            st.caption(f"No heatmaps for this model: {exc}")
            return HeatmapControls(on=False, opacity=float(opacity))
        height, width = found.map_size
        st.caption(f"Heatmaps from backbone layer `{found.layer}` ({height}×{width} map), stretched over the image "
                   "as the model's input was: red is where the chosen class's score rises most.")
    return HeatmapControls(on=on, opacity=float(opacity))


def show_heatmap(container: Any, run: Run, model_mtime: float, predictor: Any, source: Any, top: list,
                 controls: HeatmapControls, key: str) -> None:
    """In `container`: a class to explain (the top one first) and the image with its heatmap over it."""
    from carviz.ml.gradcam import overlay

    classes = predictor.classes
    probability = dict(top)
    top_index = classes.index(top[0][0])

    def label(index: int) -> str:
        name = classes[index]
        shown = f" · {format_accuracy(probability[name])}" if name in probability else ""
        return f"{name}{shown}" + (" (top)" if index == top_index else "")

    chosen = container.selectbox("Explain class", range(len(classes)), index=top_index, format_func=label, key=key)
    try:
        name, data = _source_bytes(source)
        pixels, heatmap, layer, _ = explain_bytes(str(run.path), model_mtime, data, name, int(chosen), predictor)
    except (OSError, ValueError) as exc:
        container.warning(f"No heatmap: {exc}")
        return
    caption = f"Grad-CAM: {classes[chosen]} ({layer})"
    if not heatmap.any():
        caption += " · nothing in the image raises this class's score"
    container.image(overlay(pixels, heatmap, controls.opacity), caption=caption, width="stretch")


def gallery_controls(key: str = "predict_gallery") -> tuple[str, float]:
    """A gallery's heatmap choice (predicted class, true class or off) and its opacity (key: the gallery's)."""
    mode_col, opacity_col = st.columns([2, 1])
    mode = mode_col.radio("Heatmap of", list(GALLERY_MODES), format_func=GALLERY_MODES.get, horizontal=True,
                          key=f"{key}_heatmap",
                          help="Grad-CAM over each image: where the model found its answer, or the evidence it saw "
                               "for the true class")
    opacity = opacity_col.slider("Opacity", 0.0, 1.0, 0.5, 0.05, key=f"{key}_opacity",
                                 disabled=mode == "off")
    return mode, float(opacity)


def gallery_overlays(run: Run, model_mtime: float, predictor: Any, items: list, mode: str,
                     opacity: float) -> list[Image.Image | None]:
    """Per misclassified item: its image with the heatmap of the predicted (or true) class, None when unreadable or
    when the mode is off."""
    from carviz.ml.gradcam import overlay

    if mode == "off" or not items:
        return [None] * len(items)
    classes = predictor.classes
    wanted = tuple(classes.index(item.predicted if mode == "predicted" else item.true) for item in items)
    try:
        results = explain_paths(str(run.path), model_mtime, tuple(str(item.path) for item in items), wanted,
                                predictor)
    except (ValueError, KeyError) as exc:  # a model carviz did not build (no "backbone" part)
        st.caption(f"No heatmaps for this model: {exc}")
        return [None] * len(items)
    return [None if found is None else overlay(found[0], found[1], opacity) for found in results]
