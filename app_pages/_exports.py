"""Predict page section: download a run's .keras model, export it (SavedModel, TFLite) and list its checked exports."""

from __future__ import annotations

from typing import Any, Callable

import streamlit as st

from carviz.core import exports
from carviz.core.store import Run
from carviz.views.formatting import format_size, format_time

MESSAGE = "predict_export_message"  # (kind, text) left by an export for the next render
NAMES = {"savedmodel": "saved_model.zip", "tflite": "model.tflite", "tflite-dynamic": "model-dynamic.tflite"}


def tolerance_note() -> str:
    parts = [f"{exports.LABELS[fmt]}: top-1 agreement >= {t.min_top1_agreement:.0%}, probability difference "
             f"<= {t.max_prob_diff:g}" for fmt, t in exports.TOLERANCES.items()]
    return ("Each export is checked on the run's validation images against the Keras model. Tolerances: "
            + "; ".join(parts) + ". An export that fails its check is not offered for download.")


def _export(run: Run, fmt: str, get_predictor: Callable[[str, float], Any]) -> None:
    from carviz.ml.export import export_run
    from carviz.ml.predict import model_version

    with st.spinner(f"Exporting {exports.LABELS[fmt]} and checking it on the validation images…"):
        try:
            check = export_run(run, fmt, get_predictor(str(run.path), model_version(run)))  # the page's cached model
        except Exception as exc:  # noqa: BLE001 - e.g. TFLite's ConverterError: say why, keep the page
            st.session_state[MESSAGE] = ("error", f"{exports.LABELS[fmt]} export failed: {exc}")
            return
    kind = "success" if check.get("passed") else "error"
    st.session_state[MESSAGE] = (kind, f"{exports.LABELS[fmt]}: {exports.describe_check(check)}")


def _listed(run: Run, record: exports.ExportRecord) -> None:
    label = exports.LABELS[record.format]
    size = format_size(exports.size_bytes(record.path))
    text, download = st.columns([4, 1])
    when = format_time(record.check.get("checked_at")) if record.check.get("checked_at") else ""
    line = f"**{label}** · {size}" + (f" · checked {when}" if when else "")
    if record.passed:
        text.markdown(f"{line}  \n:green[passed] {exports.describe_check(record.check)}")
        path = record.path
        data = (lambda: exports.zip_folder(path)) if record.format == "savedmodel" else (lambda: path.read_bytes())
        download.download_button("Download", data=data, file_name=f"{run.id}-{NAMES[record.format]}",
                                 mime="application/octet-stream", key=f"predict_export_download_{record.format}",
                                 icon=":material/download:")
    else:
        verdict = record.verdict()
        detail = exports.describe_check(record.check) if record.check and not record.stale else "export it again"
        text.markdown(f"{line}  \n:red[**{verdict}**] {detail}")
        download.caption("no download")


def model_section(run: Run, get_predictor: Callable[[str, float], Any]) -> None:
    """The .keras download, the export buttons and the run's exports with their checks.

    get_predictor: the page's cached loader, (run path, model version) -> carviz.ml.predict.Predictor."""
    st.download_button("Download model (.keras)", data=lambda: run.model_path().read_bytes(),
                       file_name=f"{run.id}.keras", mime="application/octet-stream", key="predict_download_keras",
                       icon=":material/download:")
    listed = exports.list_exports(run)
    with st.expander(f"Exports ({len(listed)})", expanded=bool(listed) or MESSAGE in st.session_state):
        st.caption(tolerance_note())
        for column, fmt in zip(st.columns(len(exports.FORMATS)), exports.FORMATS):
            if column.button(f"Export {exports.LABELS[fmt]}", key=f"predict_export_{fmt}"):
                _export(run, fmt, get_predictor)
                listed = exports.list_exports(run)
        message = st.session_state.pop(MESSAGE, None)
        if message:
            getattr(st, message[0])(message[1])
        for record in listed:
            _listed(run, record)
