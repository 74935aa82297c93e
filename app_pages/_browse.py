"""Data page, Browse tab: the sample grid across the page's width, and the augmentation preview's carry to Train."""

from __future__ import annotations

from typing import Any

import streamlit as st

from carviz.core.config import PRESETS, Augmentation
from carviz.data.datasets import DatasetScan
from app_pages._common import thumbnail_of
from carviz.views.config_form import config_to_form
from app_pages._keys import DEFAULT_TRAIN_PRESET, TRAIN_FORM
from app_pages._frame import FRAME_PAGES

SAMPLE_COLUMNS = 8  # thumbnails per row, stretched to the column width: one row per class on a wide page
SAMPLE_SIDE = 256  # px of the thumbnail sent to the browser (the column is narrower on most screens)
AUG_MESSAGE = "aug_carry_message"
PREVIEW_CHOICE = "aug_show_chosen"  # the preview toggle's last value: widget state is dropped on a page switch


def sample_grid(scan: DatasetScan) -> None:
    """The first SAMPLE_COLUMNS usable images of every class, one row each, filling the page's width."""
    for name in scan.classes:
        files = scan.files.get(name, [])
        st.markdown(f"**{name}** · {len(files)} images")
        if not files:
            st.caption("no usable images")
            continue
        for column, path in zip(st.columns(SAMPLE_COLUMNS), files[:SAMPLE_COLUMNS]):
            thumb = thumbnail_of(path, SAMPLE_SIDE)
            if thumb is None:
                column.caption(f":material/broken_image: {path.name}")
            else:
                column.image(thumb, caption=path.name, width="stretch")


def _remember_preview() -> None:
    st.session_state[PREVIEW_CHOICE] = bool(st.session_state.get("aug_show"))


def preview_toggle() -> bool:
    """Whether to draw the augmentation preview: off until asked for, then remembered for the session. Off at first
    because the preview imports Keras, and that import, in the dashboard's process, held the first screen's chart
    and sample images back as empty boxes (measured in Chromium: about a second on an idle machine, longer on a
    busy one)."""
    return st.toggle("Show the preview", value=bool(st.session_state.get(PREVIEW_CHOICE, False)), key="aug_show",
                     on_change=_remember_preview, help="Its first use in a session loads Keras (a few seconds)")


def aug_form_values(aug: Augmentation) -> dict[str, Any]:
    """The Train form's augmentation fields (tf_aug_*) for these settings, augmentation switched on."""
    return {
        "tf_aug_enabled": True,
        "tf_aug_rotation": float(aug.rotation),
        "tf_aug_width_shift": float(aug.width_shift),
        "tf_aug_height_shift": float(aug.height_shift),
        "tf_aug_zoom": float(aug.zoom),
        "tf_aug_flip": bool(aug.horizontal_flip),
    }


def _preview_settings() -> Augmentation:
    """The preview's sliders as they are now (read in the click's callback: the values of this very click)."""
    ss = st.session_state
    return Augmentation(True, float(ss["aug_rotation"]), float(ss["aug_width_shift"]), float(ss["aug_height_shift"]),
                        float(ss["aug_zoom"]), bool(ss["aug_flip"]))


def _use_in_train() -> None:
    aug = _preview_settings()
    values = aug_form_values(aug)
    saved = st.session_state.get(TRAIN_FORM) or config_to_form(PRESETS[DEFAULT_TRAIN_PRESET])
    st.session_state[TRAIN_FORM] = {**saved, **values}  # what the Train form loads when it is next shown
    for key, value in values.items():
        st.session_state[key] = value
    st.session_state[AUG_MESSAGE] = (
        f"Copied to the Train form (its Augmentation section, switched on): rotation ± {aug.rotation:g}°, "
        f"shifts ± {aug.width_shift:g} / ± {aug.height_shift:g}, zoom ± {aug.zoom:g}, "
        f"flip {'on' if aug.horizontal_flip else 'off'}.")


def use_in_train_button() -> None:
    """The preview's sliders (keys aug_*) train nothing by themselves: this button copies them into the Train form."""
    st.button("Use these in Train", key="aug_use_in_train", on_click=_use_in_train,
              help="Copy these settings into the Train form's Augmentation section and switch augmentation on")
    message = st.session_state.pop(AUG_MESSAGE, None)
    if message:
        st.success(message)
        if "app_pages/train.py" in (st.session_state.get(FRAME_PAGES) or ()):
            st.page_link("app_pages/train.py", label="Open Train", icon=":material/model_training:")
