"""carviz dashboard entry point: `streamlit run dashboard.py` — navigation and the frame shared by every page."""

from __future__ import annotations

from carviz.core.gpu import share_gpu_memory

share_gpu_memory()  # before any page loads TensorFlow: the dashboard must not reserve the GPUs jobs train on

import streamlit as st  # noqa: E402

from carviz.core import settings  # noqa: E402
from app_pages import _rerun_cleanup  # noqa: E402
from app_pages._common import dataset_names, ensure_demo_dataset  # noqa: E402
from app_pages._frame import FRAME_PAGES, sidebar_facts  # noqa: E402

_rerun_cleanup.install()  # no full garbage collection after every run and fragment run (0.19 s each with Keras)

st.set_page_config(page_title="carviz", layout="wide")

try:
    ensure_demo_dataset(str(settings.data_dir()))
except OSError as exc:  # a read-only data folder must not take the whole app down
    st.sidebar.warning(f"Could not create the demo dataset: {exc}")

PAGES = {name: f"app_pages/{name}.py" for name in ("data", "layers", "train", "sweeps", "runs", "compare", "predict")}
navigation = st.navigation(
    [
        st.Page(PAGES["data"], title="Data", icon=":material/photo_library:", default=True),
        st.Page(PAGES["layers"], title="Layers", icon=":material/layers:"),
        st.Page(PAGES["train"], title="Train", icon=":material/model_training:"),
        st.Page(PAGES["sweeps"], title="Sweeps", icon=":material/grid_on:"),
        st.Page(PAGES["runs"], title="Runs", icon=":material/list_alt:"),
        st.Page(PAGES["compare"], title="Compare", icon=":material/compare:"),
        st.Page(PAGES["predict"], title="Predict", icon=":material/image_search:"),
    ]
)

st.session_state[FRAME_PAGES] = list(PAGES.values())  # the pages "Start here" may link to
with st.sidebar:
    st.caption("**carviz** — transfer-learning experiments")
    sidebar_facts(dataset_names())

navigation.run()
