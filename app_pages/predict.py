"""Predict page: classify uploaded or camera images with a trained run, and evaluate it on its validation split,
its held-out test split, or another dataset with the same class names."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from carviz.views import compare
from carviz.core import settings
from carviz.views.formatting import format_accuracy, is_number
from carviz.views.plots.evaluation import per_class_accuracy_figure, topk_figure
from carviz.core.store import Run, Status, Store, kept_label, list_runs
from app_pages._common import _folder_signature, dataset_names
from app_pages._keys import PREDICT_RUN
from app_pages._gradcam import gallery_controls, heatmap_controls, show_heatmap
from app_pages._evaluation import (calibration_section, comparison_section, confusion_section, per_class_section,
                                   show_gallery)
from app_pages._exports import model_section

IMAGE_TYPES = ["jpg", "jpeg", "png", "bmp", "webp"]
TOP_K = 5


@st.cache_resource(max_entries=4, show_spinner="Loading the model…")
def get_predictor(run_path: str, model_mtime: float):  # noqa: ANN201 - carviz.ml.predict.Predictor (TF loads lazily)
    """One loaded model per (run, model file version), shared by every session."""
    from carviz.ml.predict import load_model

    return load_model(Run(run_path))


@st.cache_data(max_entries=8, show_spinner="Evaluating…")
def get_evaluation(run_path: str, model_mtime: float, split: str = "validation", dataset: str | None = None,
                   folder_signature: tuple = (), skip_extra: bool = False):  # noqa: ANN201 - evaluate.Evaluation
    """The run's evaluation on its split, or on another dataset (folder_signature: that folder's state, part of the
    cache key so a changed folder is evaluated again)."""
    from carviz.ml.evaluate import evaluate_run

    return evaluate_run(Run(run_path), predictor=get_predictor(run_path, model_mtime), split=split, dataset=dataset,
                        skip_extra=skip_extra)


@st.cache_data(max_entries=8, show_spinner="Evaluating the other run…")
def get_evaluation_of(other_path: str, other_mtime: float, paths: tuple[str, ...], labels: tuple[int, ...],
                      classes: tuple[str, ...]):  # noqa: ANN201 - evaluate.Evaluation
    """Another run's model on exactly the given images (cached per its model version and the images)."""
    from carviz.ml.evaluate import evaluate_images

    return evaluate_images(Run(other_path), [Path(p) for p in paths], list(labels), list(classes),
                           predictor=get_predictor(other_path, other_mtime))


def calibrate_run(run: Run) -> None:
    """The Calibrate button: fit the run's temperature on its validation split, store it, forget cached models."""
    from carviz.core.calibration import calibrate
    from carviz.ml.evaluate import evaluate_run, has_test_split
    from carviz.ml.predict import model_version

    predictor = get_predictor(str(run.path), model_version(run))
    validation = evaluate_run(run, predictor=predictor, split="validation")
    test = evaluate_run(run, predictor=predictor, split="test") if has_test_split(run) else None
    run.write_calibration(calibrate(validation.raw_probabilities, validation.labels,
                                    test.raw_probabilities if test else None, test.labels if test else None).to_dict())
    get_predictor.clear()
    get_evaluation.clear()


@st.cache_data(max_entries=16, show_spinner=False)
def validation_samples(run_path: str, limit: int = 200) -> list[str]:
    """Up to `limit` validation image paths of the run (empty when its split or dataset is gone)."""
    from carviz.ml.evaluate import validation_files

    try:
        _, _, paths, _ = validation_files(Run(run_path))
    except (OSError, ValueError, KeyError, TypeError):  # a damaged split.json: no samples
        return []
    return [str(path) for path in paths[:limit] if path.is_file()]


def predict_uploads(run: Run, files: list) -> list:
    """Classify Streamlit uploads (or any named file objects) with the run's cached model; per-file errors kept."""
    from carviz.ml.predict import model_version, predict_files

    predictor = get_predictor(str(run.path), model_version(run))
    return predict_files(predictor, files, top_k=TOP_K, keep_images=True)


st.title("Predict")

# Runs with a model: the succeeded ones are offered, unless their record is damaged (then the page says why not;
# so it does for a model whose status.json is damaged).
with_model = [run for run in list_runs() if run.has_model()]
rows = {run.id: row for run, row in zip(with_model, compare.summaries(with_model))}
finished = [run for run in with_model if rows[run.id]["status"] == Status.SUCCEEDED.value
            and not rows[run.id]["problems"]]
broken_note = compare.broken_note(rows.values(), "not offered for prediction")
if broken_note:
    st.warning(broken_note)
if not finished:
    st.info("No finished run with a trained model yet. Train one on the **Train** page, then come back.")
    st.stop()

summaries = {run.id: rows[run.id] for run in finished}


def describe(run_id: str) -> str:
    """The run, its kept model's val accuracy (and test accuracy) and which epoch that model is."""
    row = summaries[run_id]
    accuracy, test = row.get("kept_val_accuracy"), row.get("test_accuracy")
    score = f" · val acc {format_accuracy(accuracy)}" if is_number(accuracy) else ""
    score += f" · test acc {format_accuracy(test)}" if is_number(test) else ""
    label = kept_label(row)
    return f"{compare.run_label(row)} · {row.get('backbone')}{score}" + (f" ({label})" if label else "")


run_id = st.selectbox("Run", [run.id for run in finished], format_func=describe, key=PREDICT_RUN)
run = Store().get_run(run_id)
classes = run.classes() or []
st.caption(f"{len(classes)} classes: {', '.join(classes[:20])}{' …' if len(classes) > 20 else ''}")
model_section(run, get_predictor)  # the .keras download, exports and their checks

predict_tab, evaluate_tab = st.tabs(["Classify images", "Evaluate"])

with predict_tab:
    uploads = st.file_uploader("Images", type=IMAGE_TYPES, accept_multiple_files=True, key="predict_files")
    use_camera = st.toggle("Use the camera", key="predict_camera_on")
    picture = st.camera_input("Take a picture", key="predict_camera") if use_camera else None
    samples = validation_samples(str(run.path))
    sample = st.selectbox("…or try an image from the validation split", samples, index=None,
                          format_func=lambda path: "/".join(Path(path).parts[-2:]), key="predict_sample",
                          placeholder="choose a validation image") if samples else None
    files = list(uploads or []) + ([picture] if picture is not None else []) + ([Path(sample)] if sample else [])
    if not files:
        st.caption("Upload images (jpg, png, bmp, webp) or take a picture to see the top classes.")
    else:
        try:
            results = predict_uploads(run, files)
        except (OSError, ValueError) as exc:
            st.error(f"Could not load the model of run {run.id}: {exc}")
            results = []
        heat, mtime = None, 0.0
        if any(result.error is None for result in results):  # Grad-CAM controls shared by every image
            from carviz.ml.predict import model_version

            mtime = model_version(run)
            heat = heatmap_controls(get_predictor(str(run.path), mtime))
        for index, (source, result) in enumerate(zip(files, results)):
            if result.error:
                st.error(result.error)
                continue
            if heat is not None and heat.on:
                image_col, heat_col, chart_col = st.columns([1, 1, 2])
                show_heatmap(heat_col, run, mtime, get_predictor(str(run.path), mtime), source, result.top, heat,
                             key=f"predict_gradcam_class_{index}")
            else:
                image_col, chart_col = st.columns([1, 2])
            image_col.image(result.image, caption=result.name, width="stretch")
            chart_col.plotly_chart(topk_figure(result.top, title=result.name))

with evaluate_tab:
    from carviz.ml.evaluate import has_test_split

    targets = {"validation": "Validation split"}
    if has_test_split(run):
        targets["test"] = "Test split (held out)"
    targets["dataset"] = "Another dataset"
    target = st.radio("Evaluate on", list(targets), format_func=targets.get, key="predict_eval_target",
                      horizontal=True)
    other, skip_extra = None, False
    if target == "dataset":
        own = str(run.run_info().dataset_path or "")
        others = [name for name in dataset_names()  # not the run's own: it holds the training images
                  if not own or (settings.data_dir() / name).resolve() != Path(own).resolve()]
        other = st.selectbox("Dataset", others, index=None, key="predict_eval_dataset",
                             placeholder="a dataset under data/ with the same class names" if others else
                             "no other dataset in the data folder")
        skip_extra = st.checkbox("Leave out class folders the run does not know", key="predict_eval_skip_extra")
        st.caption("Every usable image of that dataset, its class folders matched to the run's classes by name.")
    elif target == "test":
        st.caption("The images the run held out before its validation split: never trained on, never used to "
                   "stop early or prune.")
    else:
        st.caption("Runs the model over the validation images recorded in the run's split.json (cached per model).")
    evaluated_key = f"predict_evaluated_{run.id}"
    if st.button("Evaluate", key="predict_evaluate", type="primary"):
        st.session_state[evaluated_key] = True
    if st.session_state.get(evaluated_key) and target == "dataset" and other is None:
        st.info("Choose a dataset to evaluate on.")
    elif st.session_state.get(evaluated_key):
        from carviz.ml.predict import model_version

        try:
            if target == "dataset":
                folder = settings.resolve_dataset(other)
                evaluation = get_evaluation(str(run.path), model_version(run), dataset=other,
                                            folder_signature=_folder_signature(folder), skip_extra=skip_extra)
            else:
                evaluation = get_evaluation(str(run.path), model_version(run), split=target)
        except (OSError, ValueError) as exc:
            st.error(f"Evaluation failed: {exc}")
            evaluation = None
        if evaluation is not None:
            label = {"validation": "Validation accuracy", "test": "Test accuracy"}.get(target,
                                                                                     f"Accuracy on {other}")
            st.metric(label, format_accuracy(evaluation.accuracy),
                      help=f"{evaluation.images} images, the model Predict uses (the run's kept model) evaluated now")
            if evaluation.skipped_classes:
                st.caption(f"Left out (not classes of the run): {', '.join(evaluation.skipped_classes)}")
            if evaluation.absent_classes:
                st.caption(f"No images of: {', '.join(evaluation.absent_classes)}")
            version = model_version(run)
            predictor = get_predictor(str(run.path), version)
            st.caption("Grad-CAM in the galleries below (a cell's images, the misclassified, a comparison):")
            heat = gallery_controls()
            st.subheader("Confusion matrix")
            confusion_section(run, predictor, evaluation, version, heat)
            per_class_col, table_col = st.columns([1, 2])
            per_class_col.plotly_chart(per_class_accuracy_figure(evaluation.classes, evaluation.per_class_accuracy,
                                                                 evaluation.class_counts), key="predict_per_class")
            with table_col:
                per_class_section(evaluation)
            wrong = evaluation.misclassified
            st.subheader(f"Misclassified images ({len(wrong)})")
            if wrong:
                show_gallery(run, predictor, wrong, "predict_gallery", version, heat, default=24)
            else:
                st.success("Every image is classified correctly.")
            st.subheader("Calibration")
            calibration_section(run, evaluation, lambda: calibrate_run(run))
            st.subheader("Compare with another run")
            shown = (tuple(str(path) for path in evaluation.paths), tuple(evaluation.labels), tuple(evaluation.classes))
            comparison_section(run, predictor, evaluation, finished,
                               lambda other: get_evaluation_of(str(other.path), model_version(other), *shown),
                               version, describe, heat)
