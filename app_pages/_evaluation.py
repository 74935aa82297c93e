"""Predict page, Evaluate tab: error analysis of an evaluation. A clickable confusion matrix (a cell's images, with
Grad-CAM), per-class precision / recall / F1 (and CSV), calibration (reliability diagram, ECE, the run's
temperature), and two runs' predictions on the same images."""

from __future__ import annotations

from typing import Any, Callable

import pandas as pd
import streamlit as st

from carviz.core.store import Run
from carviz.views.formatting import format_accuracy
from carviz.views.plots.evaluation import confusion_figure, reliability_figure
from app_pages._gradcam import gallery_overlays

GALLERY_COLUMNS = 4
CELL_KEY = "predict_cell"  # the selectbox naming the shown confusion-matrix cell (a click on the matrix sets it)
CLICKED_KEY = "predict_cell_clicked"  # the last click applied, so a kept selection does not override the box
ss = st.session_state


def cell_label(evaluation: Any, cell: tuple[int, int]) -> str:
    true, predicted = cell
    count = int(evaluation.confusion[true, predicted])
    verb = "right" if true == predicted else f"as {evaluation.classes[predicted]}"
    return f"{evaluation.classes[true]} {verb} · {count} image{'s' if count != 1 else ''}"


def cells(evaluation: Any) -> list[tuple[int, int]]:
    """Non-empty cells, mistakes first (the largest first), then the diagonal."""
    matrix = evaluation.confusion
    found = [(i, j) for i in range(len(matrix)) for j in range(len(matrix)) if matrix[i, j]]
    return sorted(found, key=lambda cell: (cell[0] == cell[1], -int(matrix[cell])))


def clicked_cell(event: Any, confusion: Any) -> tuple[int, int] | None:
    """The confusion-matrix cell a selection event names: the clickable layer's k-th marker is the k-th non-empty
    cell in row order (views.plots.evaluation.confusion_figure)."""
    points = ((event.get("selection") or {}).get("points") or []) if isinstance(event, dict) else []
    indices = [point.get("point_index", point.get("pointIndex")) for point in points if point.get("curve_number",
                                                                                                  1) == 1]
    if not indices or not isinstance(indices[0], int):
        return None
    rows, cols = confusion.nonzero()
    return (int(rows[indices[0]]), int(cols[indices[0]])) if indices[0] < len(rows) else None


def _apply_click(event: Any, evaluation: Any, choices: list[tuple[int, int]]) -> None:
    """A new click on the matrix picks its cell in the box below (a kept selection does not override the box)."""
    cell = clicked_cell(event, evaluation.confusion)
    if cell in choices and ss.get(CLICKED_KEY) != cell:
        ss[CLICKED_KEY] = cell
        ss[CELL_KEY] = cell


def show_gallery(run: Run, predictor: Any, items: list[Any], key: str, version: float, heat: tuple[str, float],
                 default: int = 12) -> None:
    """Thumbnails of evaluated images (Misclassified items: true → predicted, confidence) with the tab's Grad-CAM
    choice (heat: gallery_controls' mode and opacity); `key` names the gallery's Show slider (key_limit)."""
    limit = st.slider("Show", 1, len(items), min(len(items), default), key=f"{key}_limit") if len(items) > 1 else 1
    heat_mode, heat_opacity = heat
    overlays = gallery_overlays(run, version, predictor, items[:limit], heat_mode, heat_opacity)
    columns = st.columns(GALLERY_COLUMNS)
    for index, item in enumerate(items[:limit]):
        caption = f"true {item.true} → {item.predicted} ({item.confidence:.0%})"
        try:
            columns[index % GALLERY_COLUMNS].image(
                str(item.path) if overlays[index] is None else overlays[index],
                caption=caption if overlays[index] is None else f"{caption} · Grad-CAM: {heat_mode} class",
                width="stretch")
        except Exception:  # noqa: BLE001 - a file removed since evaluating: say so, keep the gallery
            columns[index % GALLERY_COLUMNS].warning(f"{item.path.name}: cannot be shown. {caption}")


def gallery(run: Run, predictor: Any, evaluation: Any, indices: list[int], key: str, version: float,
            heat: tuple[str, float]) -> None:
    """The gallery of some of an evaluation's images (by index)."""
    if not indices:
        st.caption("No images.")
        return
    from carviz.ml.evaluate import Misclassified

    items = [Misclassified(path=evaluation.paths[i], true=evaluation.classes[evaluation.labels[i]],
                           predicted=evaluation.classes[int(evaluation.predicted[i])],
                           confidence=float(evaluation.probabilities[i].max()),
                           true_probability=float(evaluation.probabilities[i, evaluation.labels[i]]))
             for i in indices]
    show_gallery(run, predictor, items, key, version, heat)


def confusion_section(run: Run, predictor: Any, evaluation: Any, version: float, heat: tuple[str, float]) -> None:
    normalize = st.toggle("Colour by share of the true class", key="predict_normalize")
    choices = cells(evaluation)
    event = st.plotly_chart(confusion_figure(evaluation.confusion, evaluation.classes, normalize=normalize,
                                             clickable=True),
                            key="predict_confusion", on_select="rerun", selection_mode="points")
    _apply_click(event, evaluation, choices)
    if not choices:
        return
    if ss.get(CELL_KEY) not in choices:
        ss[CELL_KEY] = choices[0]
    cell = st.selectbox("Images of a cell (or click one in the matrix)", choices, key=CELL_KEY,
                        format_func=lambda c: cell_label(evaluation, c))
    gallery(run, predictor, evaluation, evaluation.cell(*cell), "predict_cell_gallery", version, heat)


def per_class_section(evaluation: Any) -> None:
    rows = evaluation.per_class_rows()
    table = pd.DataFrame([{"class": row["class"], "images": row["images"], "correct": row["correct"],
                           "precision": _percent(row["precision"]), "recall": _percent(row["recall"]),
                           "F1": float("nan") if row["f1"] is None else row["f1"],
                           "most confused with": row["most_confused_with"]} for row in rows])
    st.dataframe(table, hide_index=True, key="predict_per_class_table",
                 column_config={"precision": st.column_config.NumberColumn(format="%.1f %%"),
                                "recall": st.column_config.NumberColumn(format="%.1f %%"),
                                "F1": st.column_config.NumberColumn(format="%.2f")})
    st.download_button("Per-class table (CSV)", pd.DataFrame(rows).to_csv(index=False).encode("utf-8"),
                       file_name=f"{evaluation.run_id}-{evaluation.split}-per-class.csv", mime="text/csv",
                       key="predict_per_class_csv")


def _percent(value: float | None) -> float:
    return float("nan") if value is None else 100 * value  # NaN: an empty cell (undefined), not "None"


def calibration_section(run: Run, evaluation: Any, recalibrate: Callable[[], None]) -> None:
    model = evaluation.reliability()
    if evaluation.temperature != 1.0:
        st.plotly_chart(reliability_figure(model, evaluation.reliability(calibrated=True), evaluation.temperature),
                        key="predict_reliability")
        stored = run.calibration() or {}
        st.caption(f"Temperature {evaluation.temperature:.2f}, fitted on {stored.get('fitted_on', '?')} validation "
                   "images, scales every probability carviz gives for this run (predictions, this page, exports); "
                   "it never changes which class comes first.")
    else:
        st.plotly_chart(reliability_figure(model), key="predict_reliability")
        st.caption("This run has no temperature yet (trained before calibration existed).")
        st.button("Fit a temperature on the validation split", key="predict_calibrate", on_click=recalibrate)


def comparison_section(run: Run, predictor: Any, evaluation: Any, others: list[Run],
                       evaluate_other: Callable[[Run], Any], version: float, describe: Callable[[str], str],
                       heat: tuple[str, float]) -> None:
    """Another run with the same classes on the same images: which it gets right that this one gets wrong."""
    from carviz.ml.evaluate import compare_predictions, trained_on

    same = [other for other in others if other.id != run.id and (other.classes() or []) == evaluation.classes]
    if not same:
        st.caption("No other finished run with the same classes to compare with.")
        return
    other = st.selectbox("Compare with", [o.id for o in same], index=None, format_func=describe,
                         key="predict_compare_run", placeholder="another run with the same classes")
    if other is None:
        return
    other_run = next(o for o in same if o.id == other)
    try:
        second = evaluate_other(other_run)
    except (OSError, ValueError) as exc:
        st.error(f"Could not evaluate {other}: {exc}")
        return
    seen = trained_on(other_run, evaluation.paths)
    if seen:
        st.warning(f"{other} trained on {seen} of these {evaluation.images} images: on those it is flattered.")
    split = compare_predictions(evaluation, second)
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Both right", len(split["both"]))
    c2.metric("Only this run", len(split["only_first"]))
    c3.metric(f"Only {other[-6:]}", len(split["only_second"]))
    c4.metric("Neither", len(split["neither"]))
    st.caption(f"This run {format_accuracy(evaluation.accuracy)}, {other} {format_accuracy(second.accuracy)} on "
               "the same images.")
    which = st.radio("Show", ["only_first", "only_second", "neither"], horizontal=True, key="predict_compare_show",
                     format_func={"only_first": "this run right, the other wrong",
                                  "only_second": "the other right, this run wrong", "neither": "both wrong"}.get)
    shown = second if which == "only_second" else evaluation
    gallery(run, predictor, shown, split[which], "predict_compare_gallery", version, heat)
