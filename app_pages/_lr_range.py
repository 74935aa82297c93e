"""Train page section "Find a learning rate": launch an LR range test on the form's config, watch it, use its pick."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import streamlit as st

from carviz.ml import lr_range
from carviz.core import settings
from carviz.core.config import ConfigError
from carviz.ml.lr_range import LRRangeResult, LRRangeState, ema_smooth
from carviz.views.plots.lr_range import lr_range_figure
from carviz.views.formatting import format_left
from carviz.core.store import Status
from carviz.views.config_form import form_to_config
from app_pages._keys import SWEEP_LR_PREFILL
from carviz.views.formatting import status_label

CURRENT = "lr_range_dir"  # the test shown: the one launched here, else the newest on disk
WAS_LIVE = "lr_range_was_live"
ERROR = "lr_range_error"
LR_WIDGET = "tf_learning_rate"  # the Train form's learning-rate widget
SWEEP_PREFILL = SWEEP_LR_PREFILL
LR_WIDGET_RANGE = (1e-7, 10.0)  # the form widget's min/max


def _current() -> Path | None:
    chosen = st.session_state.get(CURRENT)
    if chosen and Path(chosen).is_dir():
        return Path(chosen)
    newest = lr_range.list_lr_ranges()
    return newest[0] if newest else None


def use_learning_rate(lr: float) -> None:
    """Callback: put `lr` (two significant digits) into the Train form, and the Sweeps page's prefill."""
    value = min(max(float(f"{lr:.2g}"), LR_WIDGET_RANGE[0]), LR_WIDGET_RANGE[1])
    st.session_state[LR_WIDGET] = value
    st.session_state[SWEEP_PREFILL] = value


def _shown_result(state: LRRangeState) -> LRRangeResult | None:
    """The finished result, else the curve so far from progress.json (no suggestion until the end)."""
    if state.result is not None:
        return state.result
    lrs = state.progress.get("lrs") or []
    losses = [math.nan if v is None else float(v) for v in state.progress.get("losses") or []]
    if len(lrs) < 2 or len(lrs) != len(losses):
        return None
    return LRRangeResult(lrs=[float(v) for v in lrs], losses=losses, smoothed_losses=ema_smooth(losses),
                         suggested_lr=None)


@st.fragment(run_every=2)
def lr_range_status() -> None:
    """Live status, curve and suggestion of the shown test, read afresh from its folder."""
    path = _current()
    if path is None:
        st.caption("No LR range test yet.")
        return
    state = lr_range.read_lr_range(path)
    live = state.status in (Status.QUEUED, Status.RUNNING)
    if not live and st.session_state.get(WAS_LIVE):
        st.session_state[WAS_LIVE] = False
        st.rerun()  # the whole page, so the start button is enabled again
    steps = int(state.progress.get("steps") or state.params.get("steps") or 0)
    step = int(state.progress.get("step") or 0)
    text = f"{status_label(state.status.value)} · step {step}/{steps}"
    fraction = min(1.0, step / steps) if steps else 0.0
    if live and state.progress.get("phase") == "computing features":
        done, total = state.progress.get("images") or 0, state.progress.get("of") or 0
        text = f"{status_label(state.status.value)} · computing features · {done}/{total} images"
        fraction = min(1.0, done / total) if total else 0.0
    elif live and state.progress.get("lr"):
        text += f" · lr {state.progress['lr']:.2g}"
    left = format_left(state.progress.get("eta_seconds")) if live else ""
    st.progress(fraction, text=text + (f" · {left}" if left else ""))
    config = state.config
    st.caption(f"`{state.id}` · {config.get('backbone')} on {config.get('dataset')} · {config.get('optimizer')} · "
               f"batch {config.get('batch_size')} · {config.get('image_size')} px"
               + (f"  \n{state.reason}" if state.reason else ""))
    if state.status == Status.FAILED:
        st.error(state.error or "The test failed; see its log.")
    if live:
        st.button("Stop", key="lr_range_stop", on_click=lr_range.stop_lr_range, args=(path,))
    result = _shown_result(state)
    if result is not None:
        st.plotly_chart(lr_range_figure(result), key="lr_range_chart")
    if state.result is None:
        return
    if state.result.stopped_early_reason:
        st.caption(f"Stopped early: {state.result.stopped_early_reason}")
    suggested = state.result.suggested_lr
    if suggested is None:
        st.warning("No suggestion: too few finite points. Try a lower max learning rate or more steps.")
        return
    st.markdown(f"Suggested learning rate: **{suggested:.2g}** (the steeper descent or a tenth of the minimum's "
                "learning rate, whichever is smaller)")
    if st.button("Use this learning rate", key="lr_range_use", on_click=use_learning_rate, args=(suggested,),
                 help="Sets the form's learning rate and the Sweeps page's"):
        st.rerun()  # a click inside a fragment reruns only the fragment; the form is outside it


def _launch(form_values: dict[str, Any]) -> None:
    """Callback (runs before the page, so the page already shows the test as live): launch in the background."""
    st.session_state.pop(ERROR, None)
    try:
        config = form_to_config(form_values)
        settings.resolve_dataset(config.dataset)
        path = lr_range.launch_lr_range(config, float(st.session_state["lr_range_min"]),
                                        float(st.session_state["lr_range_max"]), int(st.session_state["lr_range_steps"]))
    except (ConfigError, FileNotFoundError, ValueError, OSError) as exc:
        st.session_state[ERROR] = str(exc)
    else:
        st.session_state[CURRENT] = str(path)


def lr_range_section(form_values: dict[str, Any]) -> None:
    """The expander below the Train form; form_values are the form's widget values as last submitted."""
    path = _current()
    state = lr_range.read_lr_range(path) if path is not None else None
    live = state is not None and state.status in (Status.QUEUED, Status.RUNNING)
    st.session_state[WAS_LIVE] = live
    with st.expander("Find a learning rate", expanded=CURRENT in st.session_state):
        st.caption("An LR range test trains a few steps on the form's settings (as last submitted) with the "
                   "learning rate rising exponentially from min to max, and plots loss against learning rate.")
        c1, c2, c3 = st.columns(3)
        c1.number_input("Steps", 10, 2000, value=100, step=10, key="lr_range_steps")
        c2.number_input("Min learning rate", 1e-8, 1.0, value=1e-6, format="%.1e", key="lr_range_min")
        c3.number_input("Max learning rate", 1e-7, 10.0, value=1.0, format="%.1e", key="lr_range_max")
        st.button("Run the LR range test", key="lr_range_start", disabled=live, on_click=_launch, args=(form_values,),
                  help="Runs in the background; one at a time")
        if st.session_state.get(ERROR):
            st.error(st.session_state[ERROR])
        lr_range_status()
