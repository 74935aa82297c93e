"""Transfer from a run in the pages: Train's "Start from a finished run", the lineage on cards and Compare."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from carviz.core import launch, lineage
from carviz.core.config import TrainConfig
from carviz.core.store import METRIC_COLUMNS, Run, Status, create_run, now_iso

pytestmark = pytest.mark.slow  # uses the tiny model trained once per session (tests/conftest.py)

ROOT = Path(__file__).resolve().parents[2]
PARENT_KEY = "tf_init_from_run"


@pytest.fixture
def parent(tiny_trained: tuple[Path, Path], carviz_home: Path) -> Run:
    """A copy of the session's tiny finished run (small_cnn on demo), and the demo data, in this test's home."""
    home, path = tiny_trained
    shutil.copytree(home / "data" / "demo", carviz_home / "data" / "demo")
    return Run(shutil.copytree(path, carviz_home / "runs" / path.name))


def test_train_form_starts_from_a_finished_run(parent: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    submitted: list[Run] = []

    def checked_submit(config, runs_root=None, backend=None):  # launch.submit's parent check, without a job process
        lineage.parent_of(config)
        run = create_run(config, runs_root)
        submitted.append(run)
        return run

    monkeypatch.setattr(launch, "submit", checked_submit)
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=30).switch_page("app_pages/train.py").run()
    assert not at.exception
    box = at.selectbox(key=PARENT_KEY)
    assert box.value == "" and any(parent.id in option for option in box.options)
    at.selectbox(key="tf_backbone").set_value("mobilenet")
    at.number_input(key="tf_image_size").set_value(96)
    box.set_value(parent.id).run()
    assert not at.exception
    assert at.selectbox(key="tf_backbone").value == "small_cnn" and at.selectbox(key="tf_backbone").disabled
    assert at.number_input(key="tf_image_size").value == 32 and at.number_input(key="tf_image_size").disabled
    assert at.selectbox(key="tf_head").value == "recommended" and at.selectbox(key="tf_weights").value == "none"
    assert any(f"From run {parent.id}" in caption.value for caption in at.caption)

    at.selectbox(key="train_preset").set_value("seed study").run()  # a preset keeps the run to start from
    assert at.selectbox(key=PARENT_KEY).value == parent.id
    assert at.selectbox(key="tf_backbone").value == "small_cnn" and at.selectbox(key="tf_head").value == "recommended"
    assert not at.warning  # its weights are the parent's, not a frozen random backbone (seed study freezes 47)

    at.selectbox(key="tf_dataset").set_value("demo")
    at.text_input(key="tf_name").input("child")
    at.button(key="FormSubmitter:train_form-Launch").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    (child,) = submitted
    config = child.config()
    assert (config.init_from_run, config.backbone, config.image_size, config.freeze) == (parent.id, "small_cnn", 32, 47)
    cards = " ".join(c.value for c in at.caption)
    assert f"From run {parent.id}: its weights, a new classifier for these classes." in cards

    box = at.selectbox(key=PARENT_KEY)
    box.set_value("").run()
    assert not at.selectbox(key="tf_backbone").disabled


def test_compare_shows_where_a_transfer_run_started(parent: Run) -> None:
    child = create_run(TrainConfig(name="child", dataset="demo", backbone="small_cnn", weights="none", image_size=32,
                                   head="recommended", epochs=2, init_from_run=parent.id))
    child.update_info(parent=lineage.parent_record(parent))  # what the job records when it starts
    lines = [",".join(METRIC_COLUMNS)] + [f"{e},1.0,0.5,1.1,0.4,0.001,1.5" for e in (1, 2)]
    child.file("metrics.csv").write_text("\n".join(lines) + "\n")
    child.write_status(Status.SUCCEEDED, ended_at=now_iso())
    at = AppTest.from_file(str(ROOT / "app_pages" / "compare.py"), default_timeout=30)
    at.session_state["compare_selected_ids"] = [child.id, parent.id]
    at.run()
    assert not at.exception
    table = at.dataframe[0].value.set_index("id")
    assert table.loc[child.id, "parent"] == "tiny on demo" and table.loc[parent.id, "parent"] == ""
    expected = f"From run tiny ({parent.id}) on demo, 4 classes, kept epoch 1"
    assert any(expected in caption.value and "child" in caption.value for caption in at.caption)
