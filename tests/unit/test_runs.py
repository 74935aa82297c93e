"""The run store: creation, forgiving readers, derived statuses (lost, stopped), listing."""

import os
import subprocess
import sys
import time

import pytest

from carviz.core.jobs import record
from carviz.core.jobs.status import process_create_time
from carviz.core.config import TrainConfig
from carviz.core.store import Run, Status, create_run, find_run, list_runs, read_metrics, summarize


def test_create_run_makes_unique_folders_named_by_id_not_by_name(carviz_home):
    config = TrainConfig(name="../../etc/passwd 현대")
    first, second = create_run(config), create_run(config)
    assert first.path != second.path
    assert first.path.parent == carviz_home / "runs"
    assert first.config().name == "../../etc/passwd 현대"
    assert first.status() == Status.QUEUED  # never launched: nothing to derive
    assert [run.id for run in list_runs()] == sorted([first.id, second.id], reverse=True)


def test_metrics_reader_skips_a_truncated_line_and_keeps_the_last_repeat(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text(
        "epoch,loss,accuracy,val_loss,val_accuracy,learning_rate,seconds\n"
        "1,1.5,0.4,1.6,0.35,0.001,2.5\n"
        "2,1.2,0.5,1.3,0.45,0.001,2.4\n"
        "2,1.1,0.55,1.25,0.5,0.001,2.4\n"
        "3,0.9,0.6,1.0"
    )
    rows = read_metrics(path)
    assert [row["epoch"] for row in rows] == [1, 2]
    assert rows[1]["val_accuracy"] == 0.5
    assert read_metrics(tmp_path / "missing.csv") == []


def test_status_enum():
    assert Status.LOST.is_terminal() and Status.STOPPED.is_terminal()
    assert not Status.RUNNING.is_terminal() and not Status.QUEUED.is_terminal()


def _dead_pid() -> tuple[int, float]:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    create_time = process_create_time(process.pid)
    process.wait()
    return process.pid, create_time


def test_running_run_whose_process_is_gone_is_lost(carviz_home):
    run = create_run(TrainConfig())
    pid, create_time = _dead_pid()
    run.write_status(Status.RUNNING, pid=pid, pid_create_time=create_time)
    state = run.state()
    assert state.status == Status.LOST and state.recorded == Status.RUNNING
    assert str(pid) in state.reason


def test_a_reused_pid_does_not_count_as_alive(carviz_home):
    run = create_run(TrainConfig())
    # our own pid is alive, but with another start time it is some other process
    run.write_status(Status.RUNNING, pid=os.getpid(), pid_create_time=process_create_time(os.getpid()) - 1000)
    assert run.status() == Status.LOST


def test_a_stale_heartbeat_means_lost(carviz_home):
    run = create_run(TrainConfig())
    run.write_status(Status.RUNNING, pid=os.getpid(), pid_create_time=process_create_time(os.getpid()))
    heartbeat = run.file(record.HEARTBEAT_FILE)
    heartbeat.write_text("x")
    assert run.status() == Status.RUNNING
    old = time.time() - record.HEARTBEAT_STALE_SECONDS - 5
    os.utime(heartbeat, (old, old))
    assert run.status() == Status.LOST


def test_dead_process_after_a_stop_request_is_stopped(carviz_home):
    run = create_run(TrainConfig())
    pid, create_time = _dead_pid()
    run.write_status(Status.RUNNING, pid=pid, pid_create_time=create_time)
    run.request_stop()
    assert run.status() == Status.STOPPED


def test_find_run_by_prefix_and_name(carviz_home):
    run = create_run(TrainConfig(name="alpha"))
    assert find_run(run.id[:-2]) == run
    assert find_run("alpha") == run
    with pytest.raises(LookupError):
        find_run("nope")


def test_summary_of_a_run_with_metrics(carviz_home):
    run = create_run(TrainConfig(name="s", learning_rate=1e-3))
    run.file("metrics.csv").write_text(
        "epoch,loss,accuracy,val_loss,val_accuracy,learning_rate,seconds\n"
        "1,1.0,0.5,1.1,0.6,0.001,2\n2,0.8,0.6,1.0,0.8,0.001,2\n3,0.7,0.7,1.2,0.7,0.001,2\n"
    )
    row = summarize(run)
    assert (row["best_val_accuracy"], row["best_epoch"], row["final_val_accuracy"], row["epochs_done"]) == (0.8, 2, 0.7, 3)
    assert row["seconds"] == 6


def test_a_folder_without_config_is_not_a_run(carviz_home):
    (carviz_home / "runs" / "junk").mkdir()
    (carviz_home / "runs" / ".slots").mkdir()
    assert list_runs() == []


def test_unreadable_status_reads_as_lost_with_a_reason(carviz_home):
    run = create_run(TrainConfig())
    run.file("status.json").write_text("{not json")
    state = Run(run.path).state()
    assert state.status == Status.LOST and "unreadable" in state.reason


def test_metrics_reader_sees_an_appended_epoch(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,loss,accuracy,val_loss,val_accuracy,learning_rate,seconds\n1,1.5,0.4,1.6,0.35,0.001,2.5\n")
    first = read_metrics(path)
    first[0]["loss"] = 99  # callers may mutate what they get; the cache must not change
    with open(path, "a") as handle:
        handle.write("2,1.2,0.5,1.3,0.45,0.001,2.4\n")
    rows = read_metrics(path)
    assert [row["epoch"] for row in rows] == [1, 2] and rows[0]["loss"] == 1.5


def test_run_ids_sort_by_creation_even_within_a_second(carviz_home):
    made = [create_run(TrainConfig()).id for _ in range(5)]
    assert made == sorted(made)
