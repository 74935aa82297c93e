"""Data page: browse a dataset (counts, samples, health report, augmentation preview), collect images with the
crawler, import a zip or a folder, and review images (marked ones go to the trash and can be restored)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from carviz.data.crawl import job as crawl
from carviz.core import settings
from carviz.core.jobs import Status
from carviz.data.collect import (
    ENGINE_CHOICES,
    GENERIC_OPTIONS,
    REQUIRED_GENERIC,
    build_spec,
    class_folders,
    class_images,
    class_lines,
    crawl_headline,
    crawl_rows,
    dataset_name,
    generic_defaults,
    import_upload,
    page_count,
    paginate,
    parse_class_lines,
    parse_engine_options,
    report_summary,
)
from carviz.core.config import Augmentation, ConfigError
from carviz.data.datasets import MAX_PIXELS, ImageLoadError, load_image_rgb
from carviz.data.importer import (MAX_FILE_BYTES, MAX_FILES, MAX_TOTAL_BYTES, ImportFailed, import_folder,
                                  list_trash, restore_images, trash_images)
from carviz.data.audit import imbalance_note
from carviz.views.plots.data import class_counts_chart
from carviz.views.formatting import STATUS_ICONS, format_left
from app_pages._common import DEMO_DATASET, dataset_names, refresh_scan, scan, thumbnail_of
from app_pages._audit import audit_section
from app_pages._browse import preview_toggle, sample_grid, use_in_train_button
from app_pages._frame import start_here
from app_pages._imports import (import_result, recent_imports, reset_import_form, trash_grid, upload_type_error,
                                zip_key)

PREVIEW_SIDE = 192  # augment small copies: the preview batch is processed as float32
NEW_DATASET = "(new dataset…)"
REVIEW_PER_PAGE = 24
REVIEW_COLUMNS = 6
TRASH_SHOWN = 200
FORM_DEFAULTS = {"cr_per_class": 50, "cr_min_side": 100, "cr_delay": 1.0,
                 **{f"cr_opt_{k}": v for k, v in generic_defaults().items()}}
MESSAGES = "data_messages"  # section -> (kind, text), shown once after a callback
ss = st.session_state


# ---------------------------------------------------------------- callbacks (run before the page is drawn again)


def _say(section: str, kind: str, text: str) -> None:
    ss.setdefault(MESSAGES, {})[section] = (kind, text)


def _show_message(section: str) -> None:
    kind, text = ss.get(MESSAGES, {}).pop(section, (None, None))
    if kind:
        getattr(st, kind)(text)


def _root(name: str) -> Path:
    return settings.safe_join(settings.data_dir(), name)


def _chosen_dataset(prefix: str) -> str:
    """The dataset picked in a section's 'into dataset' box (existing, or the new name typed)."""
    choice = ss.get(f"{prefix}_target") or NEW_DATASET
    return dataset_name(ss.get(f"{prefix}_new_name", "")) if choice == NEW_DATASET else choice


def _show_dataset(name: str, prefix: str) -> None:
    ss["data_dataset"] = name  # the new dataset appears in the lists on this rerun
    ss[f"{prefix}_target"] = name


def _start_crawl() -> None:
    try:
        name = _chosen_dataset("cr")
        classes = parse_class_lines(ss.get("cr_classes", ""), int(ss["cr_per_class"]))
        engine = ss["cr_engine"]
        options = parse_engine_options({k: ss.get(f"cr_opt_{k}", "") for k in GENERIC_OPTIONS}) if engine == "generic" else {}
        spec = build_spec(classes, engine, options, min_side=int(ss["cr_min_side"]), delay=float(ss["cr_delay"]),
                          audit_when_done=bool(ss.get("cr_audit")))
        crawl.launch_crawl(name, spec)
    except crawl.CrawlBusy as exc:
        _say("collect", "warning", str(exc))
    except (ValueError, OSError) as exc:
        _say("collect", "error", f"Cannot start: {exc}")
    else:
        _show_dataset(name, "cr")
        _say("collect", "success", f"Crawl of {len(classes)} class(es) into `{name}` started in the background.")


def _stop_crawl(root: Path) -> None:
    crawl.request_stop(root)  # the job stops between two downloads; the status area shows it


def _force_stop(root: Path) -> None:
    crawl.stop_crawl(root, timeout=2.0)


def _resume_crawl(root: Path) -> None:
    state = crawl.read_crawl(root)
    try:
        if state.spec is None:
            raise ValueError("this crawl has no saved request to resume")
        crawl.launch_crawl(root, state.spec)
    except crawl.CrawlBusy as exc:
        _say("crawl", "warning", str(exc))
    except (ValueError, OSError) as exc:
        _say("crawl", "error", f"Cannot resume: {exc}")


def _load_spec(root: Path) -> None:
    spec = crawl.read_crawl(root).spec
    if spec is None:
        return
    ss["cr_target"] = root.name
    ss["cr_classes"] = class_lines(spec)
    ss["cr_per_class"] = max(c.target for c in spec.classes)
    ss["cr_engine"] = spec.engine
    ss["cr_min_side"] = int(spec.min_side)
    ss["cr_delay"] = float(spec.delay)
    ss["cr_audit"] = bool(spec.audit_when_done)
    defaults = generic_defaults()
    for key in GENERIC_OPTIONS:
        value = spec.engine_options.get(key) or defaults.get(key, "")
        ss[f"cr_opt_{key}"] = ", ".join(value) if isinstance(value, (list, tuple)) else str(value or "")


def _import(kind: str) -> None:
    try:
        name = _chosen_dataset("imp")
        if kind == "zip":
            upload = ss.get(zip_key())
            if upload is None:
                raise ImportFailed("choose a .zip file first")
            source = upload.name
            report = import_upload(upload, name, source=source)
        else:
            folder = str(ss.get("imp_folder") or "").strip()
            if not folder:
                raise ImportFailed("give the path of a folder of class folders")
            source = folder
            report = import_folder(Path(folder).expanduser(), name)
    except (ImportFailed, ValueError, OSError) as exc:
        _say("import", "error", f"Import failed: {exc}")
        return
    ss["imp_report"] = (source, name, report)
    reset_import_form()  # an empty uploader: a second click cannot import the same files again
    refresh_scan()
    _show_dataset(name, "imp")


def _marks(root: Path, class_name: str) -> set[str]:
    return ss.setdefault("rv_marked", {}).setdefault(f"{root}::{class_name}", set())


def _toggle_mark(root: Path, class_name: str, file_name: str, key: str) -> None:
    marks = _marks(root, class_name)
    (marks.add if ss.get(key) else marks.discard)(file_name)


def _trash_marked(root: Path, class_name: str) -> None:
    marks = _marks(root, class_name)
    present = [n for n in sorted(marks) if (root / class_name / n).is_file()]
    try:
        moved = trash_images(root, class_name, present)
    except (ValueError, OSError) as exc:
        _say("review", "error", f"Nothing moved: {exc}")
        return
    marks.clear()
    refresh_scan()
    _say("review", "success", f"Moved {len(moved)} image(s) of {class_name} to the trash.")


def _restore(root: Path, everything: bool) -> None:
    entries = list_trash(root)
    chosen = entries if everything else [e for e in entries if ss.get(_restore_key(root, e))]
    try:
        restored = restore_images(root, chosen)
    except (ValueError, OSError) as exc:
        _say("review", "error", f"Nothing restored: {exc}")
        return
    refresh_scan()
    _say("review", "success", f"Restored {len(restored)} image(s).")


def _restore_key(root: Path, entry) -> str:
    return f"rv_restore::{root.name}::{entry.class_name}/{entry.file_name}"


# ---------------------------------------------------------------- sections


def _target_box(prefix: str, names: list[str], label: str) -> None:
    choice = st.selectbox(label, [NEW_DATASET, *names], key=f"{prefix}_target")
    if choice == NEW_DATASET:
        st.text_input("New dataset name", key=f"{prefix}_new_name", placeholder="e.g. cars")


@st.fragment(run_every=2)
def crawl_status(root: Path) -> None:
    """The crawl of the selected dataset, read from disk: survives reloads and dashboard restarts."""
    state = crawl.read_crawl(root)
    was_active = ss.setdefault("cr_active", {})
    if was_active.get(str(root)) and not state.active:
        was_active[str(root)] = False
        st.rerun()  # the crawl just ended: redraw the whole page so counts include the new images
    was_active[str(root)] = state.active
    _show_message("crawl")
    if state.status is None and state.spec is None:
        st.caption(f"No crawl for `{root.name}` yet.")
        return
    icon = STATUS_ICONS.get(state.status.value, "") if state.status else ""
    left = format_left(state.eta_seconds)
    st.markdown(f"**Crawl of `{root.name}`** · {icon} {crawl_headline(state)}" + (f" · {left}" if left else ""))
    for row in crawl_rows(state):
        st.progress(row["fraction"], text=f"**{row['class']}** · {row['saved']}/{row['target']} saved · "
                                          f"{row['seen']} seen · {row['broken']} broken · "
                                          f"{row['rejected']} rejected · {row['state']}")
    if state.error:
        st.error(state.error)
    elif state.status == Status.LOST and state.reason:
        st.warning(f"The crawl job is lost: {state.reason}.")
    if state.message and not state.active:
        st.caption(state.message)
    left, middle, _ = st.columns([1, 1, 4])
    resumable = (Status.STOPPED, Status.LOST, Status.FAILED)
    if not state.active and not state.process_alive and state.status not in resumable:
        middle = left  # no Resume: Edit request takes the first place
    if state.active:
        if state.stop_requested:
            left.button("Stopping…", key="cr_stopping", disabled=True)
            middle.button("Force stop", key="cr_force", on_click=_force_stop, args=(root,),
                          help="Signal the job (and its browser) to end now; waits a few seconds")
        else:
            left.button("Stop", key="cr_stop", on_click=_stop_crawl, args=(root,),
                        help="The job stops after the current download; images kept, a re-run resumes")
    elif state.process_alive:  # lost (no heartbeat) while its process still runs: hung
        left.button("Force stop", key="cr_force", on_click=_force_stop, args=(root,),
                    help="End the hung job (and its browser) so that it can be resumed")
    elif state.status in resumable and state.spec:
        left.button("Resume", key="cr_resume", on_click=_resume_crawl, args=(root,),
                    help="Run the same request again: URLs already tried are skipped, saved images count")
    if state.spec is not None and not state.active:
        if middle.button("Edit request", key="cr_load", help="Copy this crawl's classes and settings into the form above"):
            ss["cr_pending_load"] = str(root)  # applied before the form's widgets exist, on a whole-page rerun
            st.rerun()
    record = state.record
    if record.log_path().is_file():
        with st.expander("Job log"):
            st.code(record.log_tail(30) or "(empty)", language=None)


def collect_section(names: list[str], root: Path | None) -> None:
    st.caption("A background job drives headless Chromium through an image search, one or more queries per class; "
               "it survives this page and the dashboard. Duplicates and small images are skipped, and a re-run "
               "resumes without downloading anything twice.")
    pending = ss.pop("cr_pending_load", None)
    if pending:
        _load_spec(Path(pending))
    for key, value in FORM_DEFAULTS.items():  # defaults through session state, so "Edit request" can fill the form
        ss.setdefault(key, value)
    _target_box("cr", names, "Into dataset")
    engine = st.radio("Search engine", ENGINE_CHOICES, horizontal=True, key="cr_engine")
    if engine == "generic":
        with st.container(border=True):
            st.caption("Generic engine: any results page, described by CSS selectors (* required).")
            for key in GENERIC_OPTIONS:
                st.text_input(key.replace("_", " ") + (" *" if key in REQUIRED_GENERIC else ""), key=f"cr_opt_{key}",
                              placeholder="https://example.org/search?q={query}" if key == "search_url_template" else "")
    st.text_area("Classes, one per line: `class name: query one; query two`", key="cr_classes", height=120,
                 placeholder="sedan: sedan car photo; sedan side view\nsuv: suv car photo")
    c1, c2, c3 = st.columns(3)
    c1.number_input("Images per class", 1, 100_000, key="cr_per_class")
    c2.number_input("Min side (px)", 1, 10_000, key="cr_min_side", help="smaller images are skipped")
    c3.number_input("Delay between downloads (s)", 0.0, 60.0, step=0.1, key="cr_delay")
    st.checkbox("Check the dataset when the crawl finishes", key="cr_audit",
                help="Starts an audit (the Check tab) of the dataset once every class is collected: crawled images "
                     "often hold wrong labels, copies and off-topic pictures")
    st.button("Start crawl", type="primary", key="cr_start", on_click=_start_crawl)
    _show_message("collect")
    st.divider()
    if root is None:
        st.caption("No dataset yet: a crawl creates one.")
        return
    active = [n for n in names if n != root.name and crawl.read_crawl(_root(n)).active]
    if active:
        st.caption("Also crawling: " + ", ".join(f"`{n}`" for n in active) + " (pick it in the Dataset box).")
    crawl_status(root)


def import_section(names: list[str], root: Path | None) -> None:
    st.caption("A zip of class folders (`class/image.jpg`, optionally inside one top folder), up to "
               f"{MAX_TOTAL_BYTES >> 20:,} MB. Paths leaving the dataset, links, non-images and files past the caps "
               f"({MAX_FILES:,} files, {MAX_FILE_BYTES >> 20} MB and {MAX_PIXELS / 1e6:g} megapixels each, "
               f"{MAX_TOTAL_BYTES >> 30} GB in all) are dropped and listed; nothing is overwritten, images "
               "the dataset already holds are skipped, and an import can be undone.")
    _target_box("imp", names, "Into dataset")
    # Any type is taken, so that a wrong one is named in a message (the uploader's own type filter shows an icon)
    rejected = upload_type_error(st.file_uploader("Zip of class folders", key=zip_key()))
    st.button("Import zip", key="imp_zip_go", on_click=_import, args=("zip",),
              disabled=ss.get(zip_key()) is None or rejected)
    st.text_input("…or add a folder of class folders (a path on this machine)", key="imp_folder")
    st.button("Add folder", key="imp_folder_go", on_click=_import, args=("folder",))
    _show_message("import")
    target = ss.get("imp_target") or NEW_DATASET
    recent_imports(_root(target) if target != NEW_DATASET else root)  # the latest imports, each with Undo
    shown = ss.get("imp_report")
    if not shown:
        return
    source, name, report = shown
    kind = st.success if report.added else st.info if report.skipped and not report.dropped else st.warning
    kind(f"`{source}` → `{name}`: {report_summary(report)}")
    import_result(report, _root(name))
    if report.added:
        st.dataframe(pd.DataFrame(sorted(report.by_class().items()), columns=["class", "added"]),
                     hide_index=True, key="imp_added")
    if report.dropped:
        st.markdown("**Dropped**")
        st.dataframe(pd.DataFrame(report.dropped, columns=["member", "reason"]), hide_index=True, key="imp_dropped")
    if report.notes:
        with st.expander(f"{len(report.notes)} note(s): renamed or converted files"):
            st.dataframe(pd.DataFrame(report.notes, columns=["member", "note"]), hide_index=True, key="imp_notes")


def review_section(root: Path | None) -> None:
    if root is None:
        st.info("No dataset to review yet.")
        return
    st.caption("Mark images to leave out of training; they move to the dataset's trash and can be restored.")
    _show_message("review")
    class_name = st.selectbox("Class to review", class_folders(root), index=None, placeholder="Choose a class",
                              key=f"rv_class::{root.name}")
    if class_name:
        files = class_images(root, class_name)
        marks = _marks(root, class_name)
        marks.intersection_update(p.name for p in files)
        pages = page_count(len(files), REVIEW_PER_PAGE)
        page = 1
        if pages > 1:
            page_key = f"rv_page::{root.name}::{class_name}"
            if ss.get(page_key, 1) > pages:
                ss[page_key] = pages
            page = st.number_input(f"Page (of {pages})", 1, pages, key=page_key)
        if not files:
            st.caption("No images in this class.")
        shown = paginate(files, page, REVIEW_PER_PAGE)
        for start in range(0, len(shown), REVIEW_COLUMNS):
            for column, path in zip(st.columns(REVIEW_COLUMNS), shown[start:start + REVIEW_COLUMNS]):
                with column:
                    thumb = thumbnail_of(path)
                    if thumb is None:
                        st.caption(f":material/broken_image: {path.name} (does not decode)")
                    else:
                        st.image(thumb, caption=path.name, width="stretch")
                    key = f"rv_mark::{root.name}::{class_name}::{path.name}"
                    st.checkbox("Remove", value=path.name in marks, key=key, on_change=_toggle_mark,
                                args=(root, class_name, path.name, key))
        st.button(f"Move {len(marks)} marked to trash", key="rv_trash", disabled=not marks,
                  on_click=_trash_marked, args=(root, class_name))
    trash = list_trash(root)
    st.markdown(f"**Trash** · {len(trash)} image(s)")
    if not trash:
        st.caption("The trash is empty.")
        return
    trash_grid(trash[:TRASH_SHOWN], lambda entry: _restore_key(root, entry), REVIEW_COLUMNS)
    if len(trash) > TRASH_SHOWN:
        st.caption(f"… and {len(trash) - TRASH_SHOWN} more (Restore all includes them).")
    chosen = sum(1 for e in trash[:TRASH_SHOWN] if ss.get(_restore_key(root, e)))
    left, right, _ = st.columns([1, 1, 3])
    left.button(f"Restore {chosen} selected", key="rv_restore", disabled=not chosen, on_click=_restore,
                args=(root, False))
    right.button("Restore all", key="rv_restore_all", on_click=_restore, args=(root, True))


# ---------------------------------------------------------------- the page

st.title("Data")
start_here()
names = dataset_names()
root = None
if names:
    if ss.get("data_dataset") not in names:
        ss["data_dataset"] = DEMO_DATASET if DEMO_DATASET in names else names[0]
    dataset = st.selectbox("Dataset", names, key="data_dataset")
    root = _root(dataset)

browse_tab, check_tab, collect_tab, import_tab, review_tab = st.tabs(
    ["Browse", "Check this dataset", "Collect images", "Import", "Review"])
with check_tab:
    audit_section(root)
with collect_tab:
    collect_section(names, root)
with import_tab:
    import_section(names, root)
with review_tab:
    review_section(root)

with browse_tab:  # drawn last: its early st.stop()s must not hide the other tabs
    if root is None:
        st.info(
            f"No datasets yet. Put images in `{settings.data_dir()}/<dataset>/<class>/*.jpg` "
            "(one folder per class), collect them with the crawler or import a zip, then reload."
        )
        st.stop()
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

    st.altair_chart(class_counts_chart(counts), key="data_counts")  # Vega-Lite: no empty box while Plotly loads
    imbalance = imbalance_note(counts)
    if imbalance:
        st.caption(imbalance[0].upper() + imbalance[1:])

    st.subheader("Samples")
    sample_grid(result)

    st.subheader("Health report")
    if result.problems:
        st.warning(f"{len(result.problems)} image(s) are left out of training (trash them in the Review tab).")
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
    st.caption("The same Keras layers training applies to the training split (rotation, shifts, zoom, flip). These "
               "sliders only preview: **Use these in Train** copies them into the Train form.")
    usable = [name for name in result.classes if result.files.get(name)]
    if not preview_toggle():
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
        use_in_train_button()
    with right:
        try:
            image = load_image_rgb(picked)
            image.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
            aug = Augmentation(True, float(rotation), width_shift, height_shift, zoom, flip)
            from carviz.ml.pipelines import augment_preview  # the first call imports Keras (seconds)

            with st.spinner("Augmenting…"):
                copies = augment_preview(np.asarray(image), aug, count=8, seed=int(seed))
            st.image(image, caption="original", width=160)
            st.image(copies, width=160, caption=[f"#{i + 1}" for i in range(len(copies))])
        except (ImageLoadError, ConfigError, ValueError) as exc:
            st.error(f"Cannot preview this image: {exc}")
