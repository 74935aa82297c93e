"""End to end in a real browser: Debian's Chromium, driven by Playwright, against `streamlit run dashboard.py`.

Train a tiny run on the demo data from the Train page, watch it reach "succeeded", see its curves on Compare,
upload an image on Predict and see a prediction. A full-page screenshot of every page goes to
test-artifacts/e2e/ (git-ignored).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from carviz.data.datasets import DEMO_CLASSES
from carviz.core.store import Run, Status

RUN_NAME = "e2e tiny"
LONG_RUN_NAME = "e2e long"
TRAIN_TIMEOUT = 180.0  # seconds for the tiny run, queueing and TensorFlow's import included
SLOW = 120_000  # ms: pages whose first render imports TensorFlow / loads a model
MAX_SHOT_HEIGHT = 8000  # px: a full-page screenshot taller than this is cut

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


# ------------------------------------------------------------------------------------------ helpers


def wait_idle(page, timeout: float = 60_000) -> None:
    """Wait until Streamlit is not running the script (its status widget is gone)."""
    page.wait_for_timeout(300)  # let a rerun that was just triggered show its status widget
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="hidden", timeout=timeout)


def open_page(page, slug: str, title: str, timeout: float = 60_000) -> None:
    """Follow the sidebar link to a page (keeps the session) and wait for its title."""
    href_end = "/" if slug == "" else f"/{slug}"
    links = page.locator('a[data-testid="stSidebarNavLink"]')
    hrefs = [links.nth(i).get_attribute("href") or "" for i in range(links.count())]
    matching = [i for i, href in enumerate(hrefs) if href.endswith(href_end)]
    assert matching, f"no sidebar link to {href_end} among {hrefs}"
    links.nth(matching[0]).click()
    page.locator("h1").filter(has_text=title).first.wait_for(timeout=timeout)
    page.wait_for_url(re.compile(re.escape(href_end) + r"(\?.*)?$"))  # a page may put its state in the query


def screenshot(page, artifacts: Path, name: str) -> Path:
    """The whole page. Streamlit scrolls inside <main>, not the document, so `full_page` alone would stop at the
    viewport: grow the viewport to the content's height for the shot, then put it back."""
    path = artifacts / f"{name}.png"
    viewport = page.viewport_size
    content = page.evaluate(
        "() => Math.max(...[...document.querySelectorAll('[data-testid=stMain], [data-testid=stSidebarContent]')]"
        ".map(e => e.scrollHeight), document.documentElement.scrollHeight)"
    )
    height = max(viewport["height"], min(int(content), MAX_SHOT_HEIGHT))
    try:
        if height != viewport["height"]:
            page.set_viewport_size({"width": viewport["width"], "height": height})
            page.wait_for_timeout(500)  # charts re-layout
        page.screenshot(path=str(path), full_page=True)
    finally:
        page.set_viewport_size(viewport)
    print(f"screenshot: {path}")
    return path


def widget(page, key: str):
    """The element container of the widget with this Streamlit key (Streamlit adds the class st-key-<key>)."""
    return page.locator(".st-key-" + re.sub(r"[^a-zA-Z0-9_-]", "-", key.strip()))  # as Streamlit writes the class


def button(page, key: str):
    """The button with this key (first match: while a fragment reruns, Streamlit may briefly keep a stale copy)."""
    return widget(page, key).locator("button").first


def choose(page, key: str, option: str) -> None:
    """Pick `option` in a selectbox: type to filter, then click the exact option."""
    box = widget(page, key).locator('input[role="combobox"]')
    box.click()
    box.fill(option)
    page.get_by_role("option", name=option, exact=True).click()
    assert box.input_value() == option


def set_number(page, key: str, value) -> None:
    field = widget(page, key).locator("input")
    field.fill(str(value))
    field.press("Tab")  # commits the value (inside a form it is sent with the submit)
    assert field.input_value() == str(value)


def wait_for_run(page, run: Run, timeout: float = TRAIN_TIMEOUT) -> None:
    """Wait until the jobs area shows the run as succeeded; fail early with its log when it fails."""
    card_done = page.get_by_text(re.compile(r"succeeded · small_cnn"))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if card_done.count():
            return
        status = run.status()
        if status.is_terminal() and status != Status.SUCCEEDED:
            pytest.fail(f"run {run.id} ended {status.value}: {run.state().error}\n{run.log_tail(60)}")
        page.wait_for_timeout(1000)
    pytest.fail(f"run {run.id} not shown as succeeded within {timeout:.0f} s (store says {run.status().value}):\n"
                f"{run.log_tail(60)}")


def wait_for_status(run: Run, status: Status, timeout: float = TRAIN_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while run.status() != status:
        assert time.monotonic() < deadline, f"run {run.id} is {run.status().value}, not {status.value}"
        time.sleep(0.3)


def launch_long_run(page, runs_root: Path) -> Run:
    """Launch, from the Train form, a tiny run with enough epochs to be seen training."""
    widget(page, "tf_name").locator("input").fill(LONG_RUN_NAME)
    set_number(page, "tf_epochs", 400)  # stopped long before the end
    page.locator('[data-testid="stFormSubmitButton"] button').filter(has_text="Launch").click()
    launched = page.get_by_text(re.compile(r"Launched run\s+\S+\s+\(" + re.escape(LONG_RUN_NAME)))
    launched.wait_for()
    return Run(runs_root / re.search(r"Launched run\s+(\S+)", launched.inner_text()).group(1))


def trace_colours(page, name: str) -> list[str]:
    """The line colours of a run's traces ("<name> · train", "<name> · validation") in the main area's Plotly charts,
    read from the charts' own data."""
    return page.evaluate(
        "name => [...document.querySelectorAll('[data-testid=stMain] .js-plotly-plot')]"
        ".flatMap(p => (p.data || []).filter(t => (t.name || '').startsWith(name + ' · ')).map(t => (t.line && t.line.color) || "
        "(t.marker && t.marker.color)))", name)


# ------------------------------------------------------------------------------------------ the test


def test_train_compare_predict_in_browser(browser_page, dashboard, artifacts_dir: Path) -> None:
    page = browser_page
    started = time.monotonic()
    page.goto(dashboard["url"] + "/")

    # Data (the default page): the demo dataset's classes and counts.
    page.locator("h1").filter(has_text="Data").first.wait_for()
    page.get_by_text("Augmentation preview").wait_for(timeout=SLOW)
    wait_idle(page, timeout=SLOW)
    for name in DEMO_CLASSES:
        assert page.get_by_text(re.compile(rf"\b{re.escape(name)}\b.*\b16 images")).count() >= 1, name
    screenshot(page, artifacts_dir, "1-data")

    # Train: a tiny config, launched from the form.
    open_page(page, "train", "Train")
    wait_idle(page)
    page.get_by_text("No jobs yet").wait_for()
    widget(page, "tf_name").locator("input").fill(RUN_NAME)
    choose(page, "tf_dataset", "demo")
    choose(page, "tf_backbone", "small_cnn")
    choose(page, "tf_weights", "none")
    set_number(page, "tf_image_size", 32)
    set_number(page, "tf_epochs", 2)
    set_number(page, "tf_batch_size", 16)
    page.locator('[data-testid="stFormSubmitButton"] button').filter(has_text="Launch").click()
    launched = page.get_by_text(re.compile(r"Launched run"))
    launched.wait_for()
    match = re.search(r"Launched run\s+(\S+)\s+\(" + re.escape(RUN_NAME) + r"\)", launched.inner_text())
    assert match, launched.inner_text()
    run = Run(dashboard["runs"] / match.group(1))
    config = run.config_dict()
    assert (config["backbone"], config["weights"], config["image_size"], config["epochs"], config["batch_size"]) == (
        "small_cnn", "none", 32, 2, 16), config

    # Layers while the job trains (it runs in its own process).
    open_page(page, "layers", "Layers")
    page.get_by_text(re.compile(r"^\d+ of \d+ layers shown$")).wait_for(timeout=SLOW)
    wait_idle(page, timeout=SLOW)
    screenshot(page, artifacts_dir, "2-layers")

    # Back to Train: the jobs area shows the run through to "succeeded".
    open_page(page, "train", "Train")
    page.get_by_text(run.id).first.wait_for()
    wait_for_run(page, run)
    assert run.status() == Status.SUCCEEDED
    page.get_by_text(re.compile(r"succeeded · 2/2 epochs")).first.wait_for()  # the card agrees with the record
    wait_idle(page)
    screenshot(page, artifacts_dir, "3-train")

    # A longer run: its card draws a live chart while it trains; Stop asks first; a double click on Resume
    # (whose second click lands where Stop appears) never stops the run it just resumed.
    long_run = launch_long_run(page, dashboard["runs"])
    # the innermost block holding the run's id and a chart: its card, with the live chart after its first epoch
    card = page.locator('[data-testid="stVerticalBlock"]').filter(has_text=long_run.id).filter(
        has=page.locator(".js-plotly-plot")).last
    card.wait_for(timeout=SLOW)
    card.locator(".js-plotly-plot").nth(1).wait_for()  # loss and accuracy
    assert long_run.status() == Status.RUNNING, long_run.status()
    screenshot(page, artifacts_dir, "3b-train-live")
    button(page, f"stop_{long_run.id}").click()
    button(page, f"stop_yes_{long_run.id}").wait_for()
    assert not long_run.stop_requested()  # only asked
    button(page, f"stop_yes_{long_run.id}").click()
    wait_for_status(long_run, Status.STOPPED)
    done_before = len(long_run.metrics())
    resume = button(page, f"resume_{long_run.id}")
    resume.wait_for()
    resume.dblclick()
    deadline = time.monotonic() + 30
    while long_run.stop_requested() or long_run.status() not in (Status.QUEUED, Status.RUNNING):  # the resume lands
        if time.monotonic() > deadline:
            screenshot(page, artifacts_dir, "debug-resume")
            pytest.fail(f"not resumed: {long_run.status().value}; page says: "
                        + " | ".join(page.locator('[data-testid="stAlert"]').all_inner_texts()))
        page.wait_for_timeout(200)
    while len(long_run.metrics()) < done_before + 2 and time.monotonic() < deadline:
        assert not long_run.stop_requested(), "a double click on Resume stopped the run it resumed"
        page.wait_for_timeout(500)
    assert len(long_run.metrics()) >= done_before + 2, f"the resumed run did not train on:\n{long_run.log_tail(40)}"
    assert not long_run.stop_requested() and long_run.status() == Status.RUNNING
    button(page, f"stop_{long_run.id}").click()  # end it: Compare needs only its epochs
    button(page, f"stop_yes_{long_run.id}").click()
    wait_for_status(long_run, Status.STOPPED)

    # Compare: the finished run is selected by default (the stopped one is not); both curve charts carry its label.
    open_page(page, "compare", "Compare runs")
    page.get_by_text(re.compile(r"2 of 2 runs shown · 1 selected")).wait_for()
    plots = page.locator('[data-testid="stMain"] .js-plotly-plot')
    plots.nth(1).wait_for()
    wait_idle(page)
    assert plots.count() >= 2
    label = f"{RUN_NAME} ({run.id[-6:]})"
    for i in range(2):
        assert label in (plots.nth(i).text_content() or ""), f"chart {i} has no trace for {label}"
    screenshot(page, artifacts_dir, "4-compare")

    # A run keeps its colour when another run joins the selection (colours follow the run, not the row).
    alone = trace_colours(page, label)
    page.goto(dashboard["url"] + f"/compare?runs={run.id},{long_run.id}")
    page.get_by_text(re.compile(r"2 selected")).first.wait_for(timeout=SLOW)
    long_label = f"{LONG_RUN_NAME} ({long_run.id[-6:]})"
    plots.first.wait_for()
    wait_idle(page)
    together = trace_colours(page, label)
    assert alone and together == alone, (alone, together)
    assert set(trace_colours(page, long_label)).isdisjoint(alone)
    screenshot(page, artifacts_dir, "4b-compare-two")

    # Predict: the run is offered, an uploaded demo image gets a top-k chart of demo classes.
    open_page(page, "predict", "Predict")
    run_box = widget(page, "predict_run").locator('input[role="combobox"]')
    run_box.wait_for()
    assert run_box.input_value().startswith(label), run_box.input_value()
    image = dashboard["home"] / "data" / "demo" / "bus" / "bus_000.jpg"
    widget(page, "predict_files").locator('input[type="file"]').set_input_files(str(image))
    chart = page.locator('[data-testid="stMain"] .js-plotly-plot')
    chart.first.wait_for(timeout=SLOW)
    wait_idle(page, timeout=SLOW)
    text = chart.first.text_content() or ""
    assert image.name in text, text
    shown = [name for name in DEMO_CLASSES if name in text]
    assert shown, f"no demo class in the prediction chart: {text!r}"
    assert re.search(r"\d+\.\d%", text), f"no probability in the prediction chart: {text!r}"
    assert not page.locator('[data-testid="stException"]').count()
    screenshot(page, artifacts_dir, "5-predict")

    # Evaluate: a click on a cell of the confusion matrix shows that cell's images (the first non-empty cell is the
    # first marker of the matrix's clickable layer).
    page.get_by_role("tab", name="Evaluate").click()
    button(page, "predict_evaluate").click()
    matrix = widget(page, "predict_confusion").locator(".js-plotly-plot")
    matrix.wait_for(timeout=SLOW)
    wait_idle(page, timeout=SLOW)
    screenshot(page, artifacts_dir, "5a-evaluate")
    from carviz.ml.evaluate import evaluate_run

    evaluation = evaluate_run(run)
    first = tuple(int(v) for v in next(zip(*evaluation.confusion.nonzero())))
    matrix.locator(".scatterlayer .point").first.click(force=True)
    cell_box = widget(page, "predict_cell").locator('input[role="combobox"]')
    expected = evaluation.classes[first[0]]
    deadline = time.monotonic() + 30
    wanted = f"{expected} {'right' if first[0] == first[1] else 'as'}"
    while not (cell_box.input_value() if cell_box.count() else "").startswith(wanted):
        if time.monotonic() > deadline:
            screenshot(page, artifacts_dir, "debug-cell")
            pytest.fail(f"the click did not pick cell {first}: the box says "
                        f"{cell_box.input_value() if cell_box.count() else 'nothing (no box)'!r}")
        page.wait_for_timeout(300)
    wait_idle(page, timeout=SLOW)
    gallery = page.locator('[data-testid="stImageCaption"]').filter(
        has_text=f"true {expected} → {evaluation.classes[first[1]]}")
    # The box shows the new cell as soon as its rerun starts; the gallery below it comes when the rerun reaches it
    # (Grad-CAM included), which may be before Streamlit shows its running status: poll with a deadline.
    shown_count = min(12, int(evaluation.confusion[first]))
    deadline = time.monotonic() + SLOW / 1000
    while gallery.count() != shown_count and time.monotonic() < deadline:
        page.wait_for_timeout(300)
    assert gallery.count() == shown_count, gallery.count()
    screenshot(page, artifacts_dir, "5b-confusion-cell")

    # Sweeps: a two-run sweep launched from the form reads done in the selector, and its Stop turns off, without
    # a reload (the table, selector and buttons refresh together).
    open_page(page, "sweeps", "Sweeps")
    widget(page, "sw_name").locator("input").fill("e2e sweep")
    widget(page, "sw_name").locator("input").press("Tab")
    for key, value in (("sw_epochs", 1), ("sw_batch_size", 16), ("sw_image_size", 32)):
        set_number(page, key, value)
    page.get_by_text(re.compile(r"^2 runs")).first.wait_for()  # the form says what it will launch
    button(page, "sw_launch").click()
    page.get_by_text(re.compile(r"Launched sweep")).wait_for()
    selector = widget(page, "sw_selected_sweep").locator('input[role="combobox"]')
    deadline = time.monotonic() + 2 * TRAIN_TIMEOUT
    while "2 of 2 done" not in (selector.input_value() if selector.count() else ""):
        if time.monotonic() > deadline:
            screenshot(page, artifacts_dir, "debug-sweep")
            pytest.fail(f"the sweep never read done in place: {selector.input_value()!r}")
        page.wait_for_timeout(1000)
    assert button(page, "sw_stop").is_disabled() and button(page, "sw_resume").is_disabled()
    wait_idle(page)
    screenshot(page, artifacts_dir, "6-sweeps")
    print(f"e2e flow took {time.monotonic() - started:.0f} s; top classes shown: {shown}")
