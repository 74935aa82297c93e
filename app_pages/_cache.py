"""The feature-cache panel (size, entries, limit and dtype, clear) and the cache notes the Train form shows."""

from __future__ import annotations

from typing import Any

import streamlit as st

from carviz.views import cache_report
from carviz.core import feature_cache
from carviz.core.config import ConfigError
from app_pages._common import layers_of, scan
from carviz.views.config_form import form_to_config

MESSAGE = "cache_panel_message"  # (kind, text) left by a callback for the next render


def form_cache_note(values: dict[str, Any]) -> str:
    """The cache line under the Train form's checkbox, for the form's (last submitted) values."""
    try:
        config = form_to_config(values)
    except (ConfigError, ValueError) as exc:
        return f"Feature cache: decided at launch, once the form is valid ({exc})"
    return cache_report.config_note(config)


def form_cut_warning(values: dict[str, Any]) -> str | None:
    """A warning before launch when the form's cut will not fit the cache limit or the memory budget; None when
    it fits, the cache is off, or the form or dataset cannot be read yet."""
    from carviz.core import settings
    from carviz.ml.feature_rows import ram_budget

    try:
        config = form_to_config(values)
        images = scan(settings.resolve_dataset(config.dataset)).total()
        return cache_report.launch_cut_warning(config, images, lambda: layers_of(config.backbone, config.image_size,
                                                                                config.alpha),
                                               feature_cache.load_settings(), ram_budget())
    except (ConfigError, ValueError, OSError):
        return None


def _save_settings() -> None:
    try:
        saved, removed = cache_report.change_settings(st.session_state["cache_limit_gb"],
                                                      st.session_state["cache_dtype"])
    except (ValueError, OSError) as exc:
        st.session_state[MESSAGE] = ("error", f"Could not save the cache settings: {exc}")
        return
    text = f"Saved: limit {saved.max_gb:g} GiB, features stored as {saved.dtype}."
    if removed:
        text += f" {len(removed)} feature set(s) evicted to fit."
    st.session_state[MESSAGE] = ("success", text)


def _clear() -> None:
    try:
        removed = cache_report.clear_cache()
    except OSError as exc:
        st.session_state[MESSAGE] = ("error", f"Could not clear the cache: {exc}")
        return
    st.session_state[MESSAGE] = ("success", f"Cleared: {removed} feature set(s) removed.")


def render_cache_panel() -> None:
    """Size against the limit, the cached feature sets, the limit/dtype form and a Clear button."""
    message = st.session_state.pop(MESSAGE, None)
    if message:
        (st.error if message[0] == "error" else st.success)(message[1])
    root = feature_cache.cache_root()
    try:
        current = feature_cache.load_settings()
        entries = feature_cache.FeatureCache(root, current.max_bytes).entries()
    except OSError as exc:
        st.error(f"Cannot read the feature cache in {root}: {exc}")
        return
    st.markdown(f"**{cache_report.totals_text(entries, current.max_bytes)}** · stored as {current.dtype}")
    st.caption(f"In `{root}`. Least recently used feature sets are evicted above the limit; "
               "a cleared or evicted set is recomputed by the next run that needs it.")
    if entries:
        st.dataframe(cache_report.entry_rows(entries), hide_index=True, key="cache_entries",
                     column_config={"last used": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss")})
    else:
        st.info("No cached features yet: a run with the cache on stores its frozen layers' output here.")

    with st.form("cache_settings"):
        c1, c2 = st.columns(2)
        c1.number_input("Size limit (GiB)", min_value=0.0, max_value=100_000.0, value=float(current.max_gb),
                        step=1.0, format="%g", key="cache_limit_gb",
                        help="Lowering it evicts the least recently used feature sets at once.")
        c2.selectbox("Storage dtype", feature_cache.STORAGE_DTYPES,
                     index=feature_cache.STORAGE_DTYPES.index(current.dtype), key="cache_dtype",
                     help="float16 halves the disk used; results may differ slightly from float32. "
                          "Feature sets stored in the other dtype are not reused.")
        st.form_submit_button("Save cache settings", on_click=_save_settings)
    st.button("Clear cache", key="cache_clear", on_click=_clear, disabled=not entries,
              help="Remove every cached feature set")
