"""Train page: the whole TrainConfig as a form with presets, launch, and the live jobs area."""

from __future__ import annotations


import streamlit as st

from carviz.core import jobs, launch, lineage, settings
from carviz.core.config import PRESETS, ConfigError, TrainConfig
from carviz.core.advice import frozen_random_backbone_warning
from carviz.views.layer_select import carried_config, carry_note
from carviz.views import cache_report
from carviz.views.plots.curves import chance_level, curves_figure
from carviz.views.run_card import run_card
from carviz.core.store import Run, RunState, Status, Store, list_runs
from carviz.views.config_form import FIELD_BY_KEY, WEIGHTS_PATH_KEY, config_to_form, form_to_config
from app_pages._common import dataset_names, launch_once
from app_pages._config_form import config_widget
from app_pages._keys import DEFAULT_TRAIN_PRESET, TRAIN_FORM, TRAIN_PREFILL
from app_pages._cache import form_cache_note, form_cut_warning, render_cache_panel
from app_pages._lr_range import lr_range_section

DEFAULT_PRESET = DEFAULT_TRAIN_PRESET
FINISHED_SHOWN = 10
FINISHED_LIMIT = "train_finished_limit"  # grows by FINISHED_SHOWN with each "show more"
SAVED_FORM = TRAIN_FORM
PREFILL = TRAIN_PREFILL
CARRY_PRESET = "recommended"  # what "Use in Train" on Layers starts from
WARNED = "train_warned_config"  # set while a frozen-random-backbone warning is on screen
RESUME_ERRORS = "train_resume_errors"
STOP_ASKED = "train_stop_asked"  # run ids whose Stop was clicked and awaits "Yes, stop it"
FORM_KEYS = list(config_to_form(PRESETS[DEFAULT_PRESET]))
PARENT_KEY = "tf_init_from_run"  # "Start from a finished run": a run id, "" for none
PARENT_FORM_KEYS = ("tf_backbone", "tf_alpha", "tf_image_size", "tf_head", "tf_weights", WEIGHTS_PATH_KEY)


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
config_widget(st, PARENT_KEY, options=["", *finished_runs], on_change=_apply_parent,
              format_func=lambda run_id: finished_runs.get(run_id, run_id) or "none: start from the weights below")
parent_id = st.session_state.get(PARENT_KEY) or ""
if parent_id:
    st.caption(f"{lineage.lineage_line(None, parent_id)} Backbone, alpha, image size, head and weights come from "
               "that run (locked below); the freeze point applies as usual.")

datasets = dataset_names()
if st.session_state.get("tf_dataset") and st.session_state["tf_dataset"] not in datasets:
    datasets.append(st.session_state["tf_dataset"])  # e.g. a preset's "demo" before data/ has it
alphas = list(FIELD_BY_KEY["tf_alpha"].spec.options)
if st.session_state.get("tf_alpha") not in alphas:
    alphas.append(st.session_state["tf_alpha"])

with st.form("train_form", border=True):
    locked = bool(parent_id)  # started from a run: its architecture and weights
    config_widget(st, "tf_name")
    c1, c2, c3, c4 = st.columns(4)
    config_widget(c1, "tf_dataset", options=datasets, help=f"Folders under {settings.data_dir()}")
    config_widget(c2, "tf_backbone", disabled=locked)
    config_widget(c3, "tf_alpha", options=alphas, disabled=locked)
    config_widget(c4, "tf_image_size", disabled=locked)
    c1, c2, c3, c4 = st.columns(4)
    config_widget(c1, "tf_weights", disabled=locked)
    c2.text_input("Weights file (when 'file')", key=WEIGHTS_PATH_KEY, disabled=locked)
    config_widget(c3, "tf_head", disabled=locked)
    config_widget(c4, "tf_dropout")
    c1, c2, c3, c4 = st.columns(4)
    for column, key in zip((c1, c2, c3, c4), ("tf_optimizer", "tf_learning_rate", "tf_epochs", "tf_batch_size")):
        config_widget(column, key)
    c1, c2, c3, c4 = st.columns(4)
    config_widget(c1, "tf_freeze")
    config_widget(c2, "tf_freeze_batchnorm")
    config_widget(c2, "tf_train_batchnorm")
    config_widget(c3, "tf_validation_split")
    config_widget(c4, "tf_seed")
    c1, c2, c3, c4 = st.columns(4)
    for column, key in zip((c1, c2, c3, c4), ("tf_patience", "tf_precision", "tf_test_fraction", "tf_split_seed")):
        config_widget(column, key)
    with st.expander("Augmentation"):
        a1, a2, a3 = st.columns(3)
        for column, key in ((a1, "tf_aug_enabled"), (a1, "tf_aug_flip"), (a1, "tf_aug_views"),
                            (a2, "tf_aug_rotation"), (a2, "tf_aug_zoom"),
                            (a3, "tf_aug_width_shift"), (a3, "tf_aug_height_shift")):
            config_widget(column, key)
    config_widget(st, "tf_class_weight")
    config_widget(st, "tf_feature_cache")
    with st.expander("Advanced"):
        a1, a2, _ = st.columns(3)
        config_widget(a1, "tf_checkpoint_every")
        config_widget(a2, "tf_jit_compile")
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
    card = run_card(run, state)  # the card's words, each file read once per refresh (views/run_card.py)
    status, live = card.status, card.live
    with st.container(border=True):
        head, bar, actions = st.columns([3, 5, 1])
        head.markdown(f"**{card.title}**  \n`{run.id}`")
        head.caption(card.headline)
        bar.progress(card.progress, text=card.progress_text)
        bar.caption(card.metrics_line)
        if card.kept_line:  # the one number of the run: its kept model's (the best-validation epoch)
            bar.caption(card.kept_line)
        if live and card.metrics:  # a small live chart of the finished epochs
            for column, metric in zip(st.columns(2), ("loss", "accuracy")):
                figure = curves_figure([(card.title, card.config, card.metrics)], metric,
                                       chance=chance_level([card.row]))
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
        for note in card.notes:
            bar.caption(note)
        if resume_error and status.is_terminal():
            st.error(resume_error)
        if status == Status.FAILED:
            st.error(state.error or "The job failed; see its log.")
        if card.problems:
            st.warning("Broken record: " + "; ".join(card.problems))
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
