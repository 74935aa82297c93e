"""Data page: classes and counts, sample images, the health report and an augmentation preview."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from carviz import settings
from carviz.config import Augmentation, ConfigError
from carviz.datasets import ImageLoadError, load_image_rgb
from carviz.plots.data import class_counts_figure
from app_pages._common import DEMO_DATASET, dataset_names, scan

SAMPLES_PER_CLASS = 6
PREVIEW_SIDE = 192  # augment small copies: the preview batch is processed as float32

st.title("Data")
names = dataset_names()
if not names:
    st.info(
        f"No datasets yet. Put images in `{settings.data_dir()}/<dataset>/<class>/*.jpg` "
        "(one folder per class), then reload."
    )
    st.stop()

default = names.index(DEMO_DATASET) if DEMO_DATASET in names else 0
dataset = st.selectbox("Dataset", names, index=default, key="data_dataset")
root = settings.safe_join(settings.data_dir(), dataset)
result = scan(root)
counts = result.counts()

if not result.classes:
    st.warning(f"`{root}` has no class folders: put each class's images in `{root}/<class>/`.")
    st.stop()

c1, c2, c3 = st.columns(3)
c1.metric("Classes", len(result.classes))
c2.metric("Usable images", result.total())
c3.metric("Set aside", len(result.problems))
if result.total() == 0:
    st.warning("No usable images in this dataset yet.")

st.plotly_chart(class_counts_figure(counts), key="data_counts")

st.subheader("Samples")
for name in result.classes:
    files = result.files.get(name, [])
    st.markdown(f"**{name}** · {len(files)} images")
    if files:
        st.image([str(path) for path in files[:SAMPLES_PER_CLASS]], width=110,
                 caption=[path.name for path in files[:SAMPLES_PER_CLASS]])
    else:
        st.caption("no usable images")

st.subheader("Health report")
if result.problems:
    st.warning(f"{len(result.problems)} image(s) are left out of training.")
    st.dataframe(
        pd.DataFrame(
            [
                {"problem": p.kind, "file": p.path.relative_to(result.root).as_posix(), "detail": p.detail}
                for p in result.problems
            ]
        ),
        hide_index=True,
        key="data_problems",
    )
else:
    st.success("Every image decodes, none is tiny, no duplicates.")

st.subheader("Augmentation preview")
st.caption("The same Keras layers training applies to the training split (rotation, shifts, zoom, flip).")
usable = [name for name in result.classes if result.files.get(name)]
if not st.toggle("Show the preview", value=True, key="aug_show", help="Its first use loads Keras (seconds)"):
    st.stop()
if not usable:
    st.info("No images to preview.")
    st.stop()
left, right = st.columns([1, 2])
with left:
    klass = st.selectbox("Class", usable, key="aug_class")
    files = result.files[klass]
    picked = st.selectbox("Image", files[:200], format_func=lambda path: path.name, key="aug_image")
    rotation = st.slider("Rotation (± degrees)", 0, 180, 20, key="aug_rotation")
    width_shift = st.slider("Width shift (± fraction)", 0.0, 0.9, 0.2, 0.05, key="aug_width_shift")
    height_shift = st.slider("Height shift (± fraction)", 0.0, 0.9, 0.2, 0.05, key="aug_height_shift")
    zoom = st.slider("Zoom (± fraction)", 0.0, 0.9, 0.2, 0.05, key="aug_zoom")
    flip = st.checkbox("Horizontal flip", True, key="aug_flip")
    seed = st.number_input("Seed", 0, 10_000, 0, key="aug_seed")
with right:
    try:
        image = load_image_rgb(picked)
        image.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
        aug = Augmentation(True, float(rotation), width_shift, height_shift, zoom, flip)
        from carviz.datasets import augment_preview  # the first call imports Keras (seconds)

        with st.spinner("Augmenting…"):
            copies = augment_preview(np.asarray(image), aug, count=8, seed=int(seed))
        st.image(image, caption="original", width=160)
        st.image(copies, width=160, caption=[f"#{i + 1}" for i in range(len(copies))])
    except (ImageLoadError, ConfigError, ValueError) as exc:
        st.error(f"Cannot preview this image: {exc}")
