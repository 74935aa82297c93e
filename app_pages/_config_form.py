"""Draw one Train-form widget from its config field's spec (label, help, kind, range, choices)."""

from __future__ import annotations

from typing import Any, Sequence

from carviz.views.config_form import FIELD_BY_KEY


def config_widget(where: Any, key: str, *, options: Sequence[Any] | None = None, **extra: Any) -> Any:
    """The widget for form key `key` in container `where` (st or a column); `options` replace the spec's choices
    (e.g. the dataset folders), `extra` goes to the Streamlit call (disabled, on_change, format_func, …)."""
    spec = FIELD_BY_KEY[key].spec
    common = {"key": key, "help": spec.help[:1].upper() + spec.help[1:] if spec.help else None, **extra}
    if spec.widget == "text":
        return where.text_input(spec.label, max_chars=spec.max_length, **common)
    if spec.widget == "checkbox":
        return where.checkbox(spec.label, **common)
    choices = list(options if options is not None else (spec.choices or spec.options))
    if spec.widget == "select":
        return where.selectbox(spec.label, choices, **common)
    if spec.widget == "radio":
        return where.radio(spec.label, choices, horizontal=True, **common)
    low = spec.form_min if spec.form_min is not None else spec.low
    high = spec.form_max if spec.form_max is not None else spec.high
    kind = int if spec.integer else float
    low, high = (None if v is None else kind(v) for v in (low, high))
    step = kind(spec.step) if spec.step is not None else None
    if spec.widget == "slider":
        return where.slider(spec.label, low, high, step=step, **common)
    return where.number_input(spec.label, min_value=low, max_value=high, step=step, format=spec.number_format,
                              **common)
