"""Train page: the whole TrainConfig as a form with presets, launch, and the live jobs area."""

from __future__ import annotations


import streamlit as st

from carviz.core import jobs, launch, lineage, settings
from carviz.core.config import (BACKBONES, CLASS_WEIGHTS, HEADS, MAX_AUGMENT_VIEWS, OPTIMIZERS, PRECISIONS, PRESETS,
                                ConfigError, TrainConfig)
from carviz.core.advice import frozen_random_backbone_warning
from carviz.views.layer_select import carried_config, carry_note
from carviz.views import cache_report
from carviz.views.cache_report import run_line
from carviz.views.formatting import format_accuracy, format_seconds
from carviz.views.plots.curves import chance_level, curves_figure
from carviz.views.run_notes import live_value, progress_line, resume_line
from carviz.core.store import BROKEN, Run, RunState, Status, Store, kept_label, list_runs, summarize
from app_pages._common import (
    WEIGHT_CHOICES,
    config_to_form,
    dataset_names,
    form_to_config,
    format_metric,
    launch_once,
    number,
    progress_fraction,
    status_label,
    where_ran,
)
from app_pages._cache import form_cache_note, form_cut_warning, render_cache_panel
from app_pages._lr_range import lr_range_section

DEFAULT_PRESET = "demo quick"
ALPHAS = [0.25, 0.5, 0.75, 1.0]
FINISHED_SHOWN = 10
FINISHED_LIMIT = "train_finished_limit"  # grows by FINISHED_SHOWN with each "show more"
SAVED_FORM = "train_form_values"  # survives page switches (widget state does not)
PREFILL = "train_prefill"  # set by the Layers page
CARRY_PRESET = "recommended"  # what "Use in Train" on Layers starts from
WARNED = "train_warned_config"  # set while a frozen-random-backbone warning is on screen
RESUME_ERRORS = "train_resume_errors"
STOP_ASKED = "train_stop_asked"  # run ids whose Stop was clicked and awaits "Yes, stop it"
FORM_KEYS = list(config_to_form(PRESETS[DEFAULT_PRESET]))
PARENT_KEY = "tf_init_from_run"  # "Start from a finished run": a run id, "" for none
PARENT_FORM_KEYS = ("tf_backbone", "tf_alpha", "tf_image_size", "tf_head", "tf_weights", "tf_weights_path")


def _load_form(values: dict) -> None:
    for key, value in values.items():
        st.session_state[key] = value


def _apply_preset() -> None:
    parent = st.session_state.get(PARENT_KEY) or ""
    _load_form(config_to_form(PRESETS[st.session_state["train_preset"]]))
    st.session_state[PARENT_KEY] = parent  # a preset changes the rest; the run to start from stays
    _apply_parent()


def _finished_runs() -> dict[str, str]:
    """Runs a new run can start from (succeeded, with a model), newest first: id -> label."""
    labels = {}
    for run in list_runs():
        if run.status() != Status.SUCCEEDED or not run.has_model():
            continue
        config = run.config_dict()
        dataset = str(config.get("dataset") or "").rstrip("/").rsplit("/", 1)[-1]
        labels[run.id] = (f"{run.display_name(config) or run.id} ({run.id}) · {dataset} · {config.get('backbone')} "
                          f"{config.get('image_size')} px · {config.get('head')} head")
    return labels


def _apply_parent() -> None:
    """Fill the form's backbone, alpha, image size, head and weights from the run to start from (then locked)."""
    run_id = st.session_state.get(PARENT_KEY) or ""
    if not run_id:
        return
    try:
        filled = config_to_form(lineage.from_parent(TrainConfig(), Store().get_run(run_id)))
    except (LookupError, ConfigError, OSError, ValueError):
        return  # gone or unreadable: launching says why
    for key in PARENT_FORM_KEYS:
        st.session_state[key] = filled[key]


class _NotYet(Exception):
    """A launch held back once, so that its warning is read before the run starts."""


def _frozen_backbone_advice(values: dict) -> tuple[str, str] | None:
    """(the config as JSON, the frozen-random-backbone warning) for the form's values; None when there is none."""
    try:
        config = form_to_config(values)
    except (ConfigError, ValueError):
        return None  # launching says what is wrong
    warning = frozen_random_backbone_warning(config)
    return (config.to_json(), warning) if warning else None


st.title("Train")

if "tf_backbone" not in st.session_state:  # a fresh session, or back from another page
    _load_form(st.session_state.get(SAVED_FORM) or config_to_form(PRESETS[DEFAULT_PRESET]))
prefill = st.session_state.pop(PREFILL, None)
if prefill:  # a transfer run on the recommended preset, never merged into whatever the form held (e.g. demo quick)
    carried = carried_config(prefill["backbone"], prefill["alpha"], prefill["image_size"], prefill["freeze"],
                             dataset=str(st.session_state.get("tf_dataset") or ""))
    _load_form(config_to_form(carried))
    st.session_state["train_preset"] = CARRY_PRESET
    st.info(carry_note(carried))

st.selectbox("Preset", list(PRESETS), key="train_preset", index=list(PRESETS).index(DEFAULT_PRESET),
             on_change=_apply_preset, help="Fills the form; change anything after.")

finished_runs = _finished_runs()
if st.session_state.get(PARENT_KEY) not in ("", None, *finished_runs):
    st.session_state[PARENT_KEY] = ""  # the run is gone (deleted) or no longer finished
st.selectbox("Start from a finished run", ["", *finished_runs], key=PARENT_KEY, on_change=_apply_parent,
             format_func=lambda run_id: finished_runs.get(run_id, run_id) or "none: start from the weights below",
             help="Transfer from a run: the new run starts from that run's trained model, every layer but the "
                  "classifier, which is new for this dataset's classes. Its backbone, alpha, image size and head "
                  "are the run's; freeze as usual.")
parent_id = st.session_state.get(PARENT_KEY) or ""
if parent_id:
    st.caption(f"{lineage.lineage_line(None, parent_id)} Backbone, alpha, image size, head and weights come from "
               "that run (locked below); the freeze point applies as usual.")

datasets = dataset_names()
if st.session_state.get("tf_dataset") and st.session_state["tf_dataset"] not in datasets:
    datasets.append(st.session_state["tf_dataset"])  # e.g. a preset's "demo" before data/ has it
if st.session_state.get("tf_alpha") not in ALPHAS:
    ALPHAS.append(st.session_state["tf_alpha"])

with st.form("train_form", border=True):
    st.text_input("Run name", key="tf_name", max_chars=200)
    c1, c2, c3, c4 = st.columns(4)
    c1.selectbox("Dataset", datasets, key="tf_dataset", help=f"Folders under {settings.data_dir()}")
    c2.selectbox("Backbone", BACKBONES, key="tf_backbone", disabled=bool(parent_id))
    c3.selectbox("Alpha (MobileNets)", ALPHAS, key="tf_alpha", disabled=bool(parent_id))
    c4.number_input("Image size (px)", 32, 1024, step=16, key="tf_image_size", disabled=bool(parent_id))
    c1, c2, c3, c4 = st.columns(4)
    c1.selectbox("Weights", WEIGHT_CHOICES, key="tf_weights", disabled=bool(parent_id),
                 help="ImageNet (offline cache), none, or a file; started from a run: that run's weights")
    c2.text_input("Weights file (when 'file')", key="tf_weights_path", disabled=bool(parent_id))
    c3.selectbox("Head", HEADS, key="tf_head", disabled=bool(parent_id),
                 help="recommended: pooled head; seed: the seed study's conv head")
    c4.slider("Dropout", 0.0, 0.9, step=0.05, key="tf_dropout")
    c1, c2, c3, c4 = st.columns(4)
    c1.selectbox("Optimizer", OPTIMIZERS, key="tf_optimizer")
    c2.number_input("Learning rate", min_value=1e-7, max_value=10.0, step=1e-4, format="%.1e",
                    key="tf_learning_rate")
    c3.number_input("Epochs", 1, 1000, step=1, key="tf_epochs")
    c4.number_input("Batch size", 1, 4096, step=1, key="tf_batch_size")
    c1, c2, c3, c4 = st.columns(4)
    c1.text_input("Freeze (layer number or 'all')", key="tf_freeze",
                  help="freeze N freezes layers 1…N-1 (InputLayer = 1); 1 trains everything")
    c2.checkbox("Frozen BN: inference", key="tf_freeze_batchnorm",
                help="Frozen BatchNormalization layers run in inference mode (their stored statistics); off lets "
                     "them use each batch's statistics")
    c2.checkbox("Train BN after freeze", key="tf_train_batchnorm",
                help="Train the BatchNormalization layers of the trainable part (from the freeze point on). Off "
                     "keeps every BatchNorm at its ImageNet statistics while fine-tuning (recommended: batch "
                     "statistics of small batches hurt validation accuracy)")
    c3.slider("Validation split", 0.05, 0.5, step=0.05, key="tf_validation_split")
    c4.number_input("Seed", 0, 2**31 - 1, step=1, key="tf_seed",
                    help="The run's: initial weights, shuffling, augmentation. The split has its own seed.")
    c1, c2, c3, c4 = st.columns(4)
    c1.number_input("Early stopping patience (0 = off)", 0, 1000, step=1, key="tf_patience")
    c2.selectbox("Precision", PRECISIONS, key="tf_precision")
    c3.slider("Test split (held out)", 0.0, 0.5, step=0.05, key="tf_test_fraction",
              help="Share of all images set aside before the validation split: never trained on, never used for "
                   "early stopping or pruning; the finished model is evaluated on it once.")
    c4.number_input("Split seed", 0, 2**32 - 1, step=1, key="tf_split_seed",
                    help="Which images are validation and test (123: the study's). Runs with the same split seed "
                         "share the split whatever their run seed.")
    with st.expander("Augmentation"):
        a1, a2, a3 = st.columns(3)
        a1.checkbox("Augment the training split", key="tf_aug_enabled")
        a1.checkbox("Horizontal flip", key="tf_aug_flip")
        a1.number_input("Cached views", 0, MAX_AUGMENT_VIEWS, step=1, key="tf_aug_views",
                        help="With the frozen-feature cache on: each training image is augmented this many times "
                             "and its frozen features stored; epoch e trains on view (e-1) mod this number. "
                             "0 augments the images afresh every epoch (no cache).")
        a2.slider("Rotation (± degrees)", 0.0, 180.0, step=1.0, key="tf_aug_rotation")
        a2.slider("Zoom (± fraction)", 0.0, 0.9, step=0.05, key="tf_aug_zoom")
        a3.slider("Width shift (± fraction)", 0.0, 0.9, step=0.05, key="tf_aug_width_shift")
        a3.slider("Height shift (± fraction)", 0.0, 0.9, step=0.05, key="tf_aug_height_shift")
    st.radio("Class weights in the loss", CLASS_WEIGHTS, key="tf_class_weight", horizontal=True,
             help="balanced: each class counts alike whatever its number of training images (for imbalanced "
                  "data; the dataset's health report says when it would matter); none: each image counts alike")
    st.checkbox("Frozen-feature cache", key="tf_feature_cache",
                help="Run the frozen layers once per image and train the rest on their stored output. "
                     "With augmentation on, a few augmented views per image are cached (Augmentation → Cached "
                     "views). Never used with trainable frozen BatchNormalization; without augmentation, results "
                     "equal an uncached run.")
    form_values = {key: st.session_state[key] for key in FORM_KEYS}
    # Form values change on submit, so this line describes the settings as last launched or loaded;
    # the rule itself is stated too, so a user who just ticked augmentation is not misled.
    cache_note = form_cache_note(form_values)
    if cache_note == cache_report.USED_NOTE:
        cache_note += " With augmentation on, each epoch trains on one of the cached augmented views."
    st.caption(cache_note)
    cut_warning = form_cut_warning(form_values)
    if cut_warning:
        st.warning(cut_warning)
    advice = _frozen_backbone_advice(form_values)  # (config json, warning): shown before any launch
    if advice:
        st.warning(advice[1])
    backends = jobs.available_backends()
    backend = backends[0]
    if len(backends) > 1:  # offered once a Ray cluster is configured
        backend = st.selectbox("Run on", backends, key="train_backend",
                               help=f"local: this machine, one job per slot (GPU). ray: the Ray cluster at "
                                    f"{settings.ray_address()} (CARVIZ_HOME must be on storage every node sees).")
    launched = st.form_submit_button("Launch", type="primary")

st.session_state[SAVED_FORM] = form_values
warned_before = st.session_state.get(WARNED)  # the config whose warning was on screen when Launch was clicked
st.session_state[WARNED] = advice[0] if advice else None

if launched:
    try:
        config = form_to_config(form_values)
        settings.resolve_dataset(config.dataset)
        if config.init_from_run:
            lineage.parent_of(config)  # finished, with a model, of this architecture: else say why, launch nothing
        if advice and not warned_before:  # made frozen-random and launched in one click: warn first, launch next
            raise _NotYet(f"Not launched yet. {advice[1]} Click Launch again to start it as it is.")
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        st.error(str(exc))
    except _NotYet as exc:
        st.warning(str(exc))
    else:
        try:
            run_id, fresh = launch_once("train_last_launch", config.to_json() + backend,
                                        lambda: launch.submit(config, backend=backend).id)
        except jobs.ray_backend.RayUnavailable as exc:
            st.error(f"Not launched: {exc}")
            st.stop()
        if not fresh:
            st.warning(f"Already launched as {run_id} a moment ago.")
        else:
            st.success(f"Launched run `{run_id}` ({config.name or 'unnamed'}).")

lr_range_section(form_values)
with st.expander("Feature cache"):
    render_cache_panel()


def _resume(run: Run, accept_dataset_changes: bool = False) -> None:
    errors = st.session_state.setdefault(RESUME_ERRORS, {})
    try:
        launch.resume(run, accept_dataset_changes=accept_dataset_changes)
        errors.pop(run.id, None)
    except (ValueError, OSError, jobs.ray_backend.RayUnavailable) as exc:  # e.g. resumed elsewhere meanwhile
        errors[run.id] = f"Cannot resume: {exc}"


def _ask_stop(run_id: str, asking: bool) -> None:
    asked = st.session_state.setdefault(STOP_ASKED, set())
    (asked.add if asking else asked.discard)(run_id)


def _confirm_stop(run: Run) -> None:
    run.request_stop()
    _ask_stop(run.id, False)


def _job_card(run: Run, state: RunState) -> None:
    status = state.status
    config = run.config_dict()
    metrics = run.metrics()
    progress = run.progress() or {}
    info = run.info()
    row = summarize(run, config, metrics, info, state)  # each file read once per refresh
    problems = row["problems"]  # a damaged record shows as broken, with what is wrong
    epochs = int(number(config.get("epochs")) or number(progress.get("epochs")) or 1)
    name = config.get("name") if isinstance(config.get("name"), str) else ""
    with st.container(border=True):
        head, bar, actions = st.columns([3, 5, 1])
        head.markdown(f"**{name or run.id}**  \n`{run.id}`")
        head.caption(
            (f"{status_label(BROKEN)} (job {status.value})" if problems else status_label(status.value))
            + f" · {config.get('backbone')} · lr {config.get('learning_rate')} · "
            f"freeze {config.get('freeze')} · {where_ran(state, info)}"
            + (f"  \n{state.reason}" if state.reason else "")
        )
        text = progress_line(status.value, progress, len(metrics), epochs)
        bar.progress(progress_fraction(progress, BROKEN if problems else status.value, len(metrics), epochs),
                     text=text)
        last = metrics[-1] if metrics else {}
        ips = number(progress.get("images_per_second"))
        live = status in (Status.QUEUED, Status.RUNNING)
        bar.caption(
            (f"{ips:.0f} img/s · ETA {format_seconds(progress.get('eta_seconds'))} · " if live and ips else "")
            + f"loss {format_metric(live_value(progress, last, 'loss') if live else last.get('loss'))} · "
            f"acc {format_accuracy(live_value(progress, last, 'accuracy') if live else last.get('accuracy'))} · "
            f"val loss {format_metric(last.get('val_loss'))} · val acc {format_accuracy(last.get('val_accuracy'))}"
            + (f" (latest: epoch {last['epoch']})" if number(last.get("epoch")) else "")
        )
        if kept_label(row):  # the one number of the run: its kept model's (the best-validation epoch)
            bar.caption(f"**{kept_label(row)}** · val acc {format_accuracy(row['kept_val_accuracy'])}"
                        + (f" · test acc {format_accuracy(row['test_accuracy'])}"
                           if row.get("test_accuracy") is not None else ""))
        if live and metrics:  # a small live chart of the finished epochs
            for column, metric in zip(st.columns(2), ("loss", "accuracy")):
                figure = curves_figure([(name or run.id, config, metrics)], metric, chance=chance_level([row]))
                figure.update_layout(height=220, margin={"l": 10, "r": 10, "t": 30, "b": 10}, showlegend=False)
                column.plotly_chart(figure, key=f"live_{metric}_{run.id}")
        if live:
            stopping = run.stop_requested()
            asking = run.id in st.session_state.get(STOP_ASKED, set())
            # Stop only asks; the confirming button sits below the card's text, never where Resume was, so a
            # double click on Resume cannot stop the run it just resumed. Callbacks run before the fragment
            # reruns, so the card already shows the new state.
            actions.button("Stopping…" if stopping else "Stop…", key=f"stop_{run.id}", disabled=stopping or asking,
                           on_click=_ask_stop, args=(run.id, True), help="Asks first; the job stops between steps")
            if asking and not stopping:
                bar.warning("Stop this run? It ends after the current step; Resume continues from its last "
                            "checkpoint.")
                yes, no, _ = bar.columns([1, 1, 2])
                yes.button("Yes, stop it", key=f"stop_yes_{run.id}", type="primary", on_click=_confirm_stop,
                           args=(run,))
                no.button("Keep running", key=f"stop_no_{run.id}", on_click=_ask_stop, args=(run.id, False))
        elif status in (Status.STOPPED, Status.LOST, Status.FAILED, Status.PRUNED) and \
                jobs.still_exiting(run, state):  # recorded as ended, its process still exiting
            actions.button("Ending…", key=f"ending_{run.id}", disabled=True,
                           help="The job has stopped and its process is exiting; Resume appears when it is gone")
        elif status in (Status.STOPPED, Status.LOST, Status.FAILED, Status.PRUNED):
            actions.button("Resume", key=f"resume_{run.id}", on_click=_resume, args=(run,),
                           help="Continue from the last checkpoint")
            if status == Status.FAILED and (state.error or "").startswith("DatasetChanged"):
                actions.button("Resume anyway", key=f"resume_accept_{run.id}", on_click=_resume, args=(run, True),
                               help="Continue on the split and classes recorded at launch, without the images "
                                    "gone since (new images are not added)")
        resume_error = st.session_state.get(RESUME_ERRORS, {}).get(run.id)
        for note in (lineage.lineage_line(info.get("parent"), config.get("init_from_run")), run_line(info),
                     resume_line(info)):
            if note:
                bar.caption(note)
        if resume_error and status.is_terminal():
            st.error(resume_error)
        if status == Status.FAILED:
            st.error(state.error or "The job failed; see its log.")
        if problems:
            st.warning("Broken record: " + "; ".join(problems))
        with st.expander("log"):
            st.code(run.log_tail(40) or "(empty)", language=None)


@st.fragment(run_every=2)
def jobs_area() -> None:
    """Everything from the run store, so reloads and restarts never lose or duplicate a job."""
    shown: list[tuple[Run, RunState]] = []
    finished = hidden = 0
    limit = st.session_state.get(FINISHED_LIMIT, FINISHED_SHOWN)
    for run in list_runs():  # newest first
        state = run.state()
        if state.status.is_terminal():
            if finished >= limit:
                hidden += 1
                continue
            finished += 1
        shown.append((run, state))
    if not shown:
        st.info("No jobs yet: launch one above.")
        return
    for run, state in shown:
        _job_card(run, state)
    if hidden:
        st.button(f"Show {min(hidden, FINISHED_SHOWN)} more finished jobs ({hidden} not shown)", key="train_more",
                  on_click=lambda: st.session_state.update({FINISHED_LIMIT: limit + FINISHED_SHOWN}))


st.subheader("Jobs")
jobs_area()
