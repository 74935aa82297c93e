"""The shared job runtime: the harness's final statuses, the job lock, liveness rules, and forgiving reads."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from carviz.core import jobs
from carviz.core.config import TrainConfig
from carviz.core.jobs import JobRecord, Outcome, Status, run_job
from carviz.core.jobs.harness import EXIT_NO_RECORD, JobBusy
from carviz.core.jobs.record import HEARTBEAT_STALE_SECONDS, make_record_dir, now_iso
from carviz.core.jobs.status import ProcessCheck, check_process, process_create_time
from carviz.core.store import Store, summarize

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def record(tmp_path: Path) -> JobRecord:
    return JobRecord(make_record_dir(tmp_path / "jobs"))


def test_a_body_that_returns_records_its_outcome_and_fields(record: JobRecord, tmp_path: Path) -> None:
    seen = {}

    def body(context):
        seen["status"] = context.record.raw_status()
        return Outcome(Status.PRUNED, {"pruned_at_epoch": 2})

    assert run_job(record, body, needs_accelerator=True, slots_dir=tmp_path / "slots") == Status.PRUNED
    assert seen["status"]["state"] == "running" and seen["status"]["slot"] == 0
    assert seen["status"]["pid"] == os.getpid() and seen["status"]["backend"] == "local"
    raw = record.raw_status()
    assert raw["state"] == "pruned" and raw["pruned_at_epoch"] == 2 and raw["ended_at"]
    assert jobs.derive_state(record).status == Status.PRUNED


def test_a_failing_body_is_recorded_failed_with_its_reason(record: JobRecord) -> None:
    def body(context):
        raise ValueError("dataset 'x' not found")

    with pytest.raises(ValueError):
        run_job(record, body, needs_accelerator=False)
    state = jobs.derive_state(record)
    assert state.status == Status.FAILED and state.error == "ValueError: dataset 'x' not found"


def test_a_stop_requested_before_the_start_never_runs_the_body(record: JobRecord) -> None:
    record.request_stop()
    ran = []
    assert run_job(record, lambda context: ran.append(1) or Status.SUCCEEDED, needs_accelerator=False) \
        == Status.STOPPED
    assert ran == [] and record.raw_status()["state"] == "stopped"


def test_one_process_per_job_the_second_is_refused(record: JobRecord) -> None:
    inside, release = threading.Event(), threading.Event()

    def body(context):
        inside.set()
        release.wait(10)
        return Status.SUCCEEDED

    first = threading.Thread(target=run_job, args=(record, body), kwargs={"needs_accelerator": False})
    first.start()
    assert inside.wait(10)
    with pytest.raises(JobBusy):
        run_job(record, lambda context: Status.SUCCEEDED, needs_accelerator=False)
    release.set()
    first.join(10)
    assert record.raw_status()["state"] == "succeeded"


def test_liveness_one_rule(record: JobRecord) -> None:
    me = os.getpid()
    assert check_process(me, process_create_time(me)) == ProcessCheck.ALIVE
    assert check_process(me, process_create_time(me) - 100) == ProcessCheck.GONE  # pid reused by another process
    assert check_process(me, None, host="another-node") == ProcessCheck.UNVERIFIABLE
    assert check_process("abc", None) == ProcessCheck.GONE and check_process(-5, None) == ProcessCheck.GONE
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert check_process(dead.pid, None) == ProcessCheck.GONE


def test_a_job_on_another_host_is_judged_by_its_heartbeat(record: JobRecord) -> None:
    record.write_status(Status.RUNNING, pid=12345, pid_create_time=1.0, host="another-node")
    record.touch_heartbeat()
    state = jobs.derive_state(record)
    assert state.status == Status.RUNNING and state.process == ProcessCheck.UNVERIFIABLE
    old = os.path.getmtime(record.file("heartbeat")) - HEARTBEAT_STALE_SECONDS - 5
    os.utime(record.file("heartbeat"), (old, old))
    state = jobs.derive_state(record)
    assert state.status == Status.LOST and state.reason.startswith("no heartbeat")


@pytest.mark.parametrize("content", ['"garbage"', "42", "[1, 2]", '{"state": "running", "pid": "abc"}',
                                     '{"state": "running", "pid": -5}', "{not json", b"\xff\xfe"])
def test_a_malformed_status_reads_as_a_state_not_a_crash(carviz_home: Path, content) -> None:
    store = Store()
    store.create_run(TrainConfig(name="good"))
    bad = store.create_run(TrainConfig(name="bad"))
    path = bad.file("status.json")
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    state = bad.state()
    assert state.status in (Status.LOST, Status.RUNNING)
    assert [summarize(run)["name"] for run in store.list_runs()] == ["bad", "good"]


def test_the_store_refuses_ids_that_escape_and_finds_by_prefix_or_name(carviz_home: Path) -> None:
    store = Store()
    run = store.create_run(TrainConfig(name="mine"))
    for bad in ("..", "../x", ".sweeps", "", "a/b"):
        with pytest.raises(LookupError):
            store.get_run(bad)
    assert store.get_run(run.id) == run and store.find_run("mine") == run and store.find_run(run.id[:15]) == run


def test_a_job_that_cannot_see_its_record_says_so(tmp_path: Path) -> None:
    missing = tmp_path / "not-shared" / "20260101-000000.000-abcdef"
    result = subprocess.run([sys.executable, "-m", "carviz.ml.train", str(missing)], capture_output=True, text=True,
                            cwd=ROOT, timeout=300)
    assert result.returncode == EXIT_NO_RECORD
    assert "cannot see its record" in result.stderr and "storage that every node sees" in result.stderr


def test_stop_of_a_never_launched_job_marks_it_stopped(record: JobRecord) -> None:
    record.write_status(Status.QUEUED, created_at=now_iso())
    assert jobs.stop(record, timeout=1) == Status.STOPPED
    assert record.raw_status()["state"] == "stopped" and record.stop_requested()


def test_a_process_that_cannot_be_verified_is_never_signalled(record: JobRecord) -> None:
    foreign = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        record.write_status(Status.RUNNING, pid=foreign.pid)  # no start time recorded: not verifiably the job
        record.touch_heartbeat()
        assert check_process(foreign.pid, None) == ProcessCheck.UNVERIFIABLE
        jobs.stop(record, timeout=0.5)
        assert foreign.poll() is None, "a process that cannot be verified as the job was signalled"
    finally:
        foreign.kill()
        foreign.wait()


QUEUE_CHILD = """
import sys, time
from pathlib import Path
from carviz.core.jobs.slots import acquire_slot
slots, job_id, start_after, out = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3]), Path(sys.argv[4])
time.sleep(start_after)  # a slow start: the later launches get going first
slot = acquire_slot(slots, job_id, lambda: False, poll=0.05)
with open(out, "a") as handle:
    handle.write(job_id + "\\n")
time.sleep(0.3)
slot.release()
"""


def test_the_slot_queue_is_first_come_first_served_from_the_launch(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from carviz.core.jobs.slots import take_ticket

    monkeypatch.setenv("CARVIZ_SLOTS", "1")
    slots, order = tmp_path / "slots", tmp_path / "order.txt"
    ids = [f"20260101-000000.00{i}-aaaaaa" for i in range(4)]
    children = []
    for position, job_id in enumerate(ids):  # launched in id order; the first ones are the slowest to start
        delay = 1.5 - 0.4 * position
        child = subprocess.Popen([sys.executable, "-c", QUEUE_CHILD, str(slots), job_id, str(delay), str(order)],
                                 cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        take_ticket(slots, job_id, child.pid, process_create_time(child.pid))  # what the local launcher does
        children.append(child)
    for child in children:
        assert child.wait(timeout=60) == 0
    assert order.read_text().split() == ids


def test_a_finished_job_is_reaped_not_left_a_zombie(carviz_home: Path) -> None:
    import time

    import psutil

    from carviz.core.config import SweepConfig
    from carviz.core.sweeps import start_feeder

    sweep = Store().create_sweep(SweepConfig(name="empty", base=TrainConfig(dataset="demo", backbone="small_cnn",
                                                                            weights="none", image_size=32),
                                             backbones=("small_cnn",), learning_rates=(1e-3,), freeze_points=(1,)))
    sweep.request_stop()  # the feeder job starts, sees the stop and ends at once
    start_feeder(sweep)  # a local detached job, launched by this process
    pid = sweep.launch_info()["pid"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not jobs.derive_state(sweep).status.is_terminal():
        time.sleep(0.1)
    assert sweep.raw_status()["state"] == "stopped"
    while time.monotonic() < deadline:  # ended: the launcher (this process) must have collected it
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                time.sleep(0.1)
                continue
        except psutil.NoSuchProcess:
            return
        time.sleep(0.1)
    raise AssertionError(f"job process {pid} is still a zombie (or still running) a minute after it ended")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="boot-relative start times are read from /proc")
def test_a_step_of_the_wall_clock_leaves_a_running_job_alive(monkeypatch: pytest.MonkeyPatch) -> None:
    import psutil
    from psutil import _pslinux

    me = os.getpid()
    recorded, epoch_recorded = process_create_time(me), psutil.Process(me).create_time()
    assert recorded is not None and recorded < 1e8, "recorded in seconds since boot"
    real_boot_time = _pslinux.boot_time
    # psutil's epoch start time is the boot time plus the start since boot; a clock step moves the boot time.
    monkeypatch.setattr(_pslinux, "boot_time", lambda: real_boot_time() + 30)

    assert check_process(me, recorded) == ProcessCheck.ALIVE
    assert check_process(me, epoch_recorded) == ProcessCheck.GONE, "an epoch start time cannot tell a step from reuse"
    assert check_process(me, recorded - 5) == ProcessCheck.GONE, "another process with this pid is still told apart"
