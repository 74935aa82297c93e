"""A sweep's warm worker: `python -m carviz.ml.worker WORKER_DIR` runs the sweep's waiting runs one after another
in this one process (the protocol is core/workers.py), keeping TensorFlow, dataset scans and cached features loaded
between them (ml/warm.py). Each run is a job of its own inside it: its lock, status, heartbeat, log and stop request.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from carviz.core import workers
from carviz.core.jobs import JobContext, Outcome, Status, job_main, run_job
from carviz.core.jobs.harness import output_to
from carviz.core.store import Run, Worker

log = logging.getLogger("carviz.ml.worker")


def cpu_threads(concurrent: int) -> int:
    """Threads for one of `concurrent` jobs sharing this machine's CPUs: Ray's share where Ray set it
    (OMP_NUM_THREADS is the CPUs a Ray job asked for), else the usable cores divided among the jobs."""
    from carviz.core.jobs.slots import usable_cores

    ray_share = os.environ.get("OMP_NUM_THREADS", "").strip()
    if ray_share.isdigit() and int(ray_share) > 0:
        return int(ray_share)
    return max(1, usable_cores() // max(1, concurrent))


def share_cpus(concurrent: int) -> int | None:
    """On a machine without GPUs, run TensorFlow's ops on this worker's share of the cores; must come before
    TensorFlow starts. Measured on 2 cores (two runs at freeze 62 on cached features, 10 cars20 classes): one
    thread each, epochs of 3.1 s side by side (1.57 s of epoch each), against 1.9 s one after the other on two
    threads and 3.3 s side by side on two threads each. Returns the threads set, or None on a GPU machine."""
    from carviz.core.jobs.slots import gpu_count

    if gpu_count():
        return None
    threads = cpu_threads(concurrent)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    return threads


def host(run: Run, lock_fd: int, context: JobContext) -> Status | None:
    """Run one claimed run as a job inside this worker: a fresh Keras session (layer names and memory as in a new
    process), its output in its own log. Returns its final status; None when it raised (recorded as failed)."""
    import keras

    from carviz.ml.train import train_body

    keras.backend.clear_session()
    with output_to(run.log_path()):
        try:
            return run_job(run, lambda job: train_body(run, job), needs_accelerator=True, lock_fd=lock_fd,
                           host=context)
        except Exception:  # noqa: BLE001 - recorded as failed by run_job, with its reason; the next run goes on
            log.exception("run %s failed", run.id)
            return None


def worker_body(worker: Worker, context: JobContext) -> Outcome:
    """Claim and run the sweep's waiting runs until none waits or the worker is asked to stop."""
    from carviz.core import jobs
    from carviz.ml import warm

    sweep = worker.sweep()
    remote = jobs.get_backend(context.backend).remote  # on Ray, OMP_NUM_THREADS says this job's CPUs
    threads = share_cpus(1 if remote else jobs.capacity(sweep.backend))
    warm.enable()
    launch = workers.hosted_launch(worker, context.backend)
    hosted: list[dict[str, Any]] = []
    while not context.should_stop():
        claimed = workers.claim_next(sweep, launch)
        if claimed is None:
            break
        run, lock_fd = claimed
        worker.write_progress({"run": run.id, "runs_done": len(hosted), "threads": threads})
        log.info("hosting run %s", run.id)
        status = host(run, lock_fd, context)
        hosted.append({"run": run.id, "status": status.value if status else Status.FAILED.value})
        log.info("run %s ended %s", run.id, hosted[-1]["status"])
    worker.write_progress({"run": None, "runs_done": len(hosted), "threads": threads})
    return Outcome(Status.STOPPED if context.should_stop() else Status.SUCCEEDED,
                   {"runs": len(hosted), "hosted": hosted, "threads": threads})


def main(argv: list[str] | None = None) -> int:
    return job_main(argv, lambda context: worker_body(Worker(context.record.path), context), kind="sweep worker",
                    needs_accelerator=True, record_type=Worker)


if __name__ == "__main__":
    from carviz.ml.worker import main as module_main  # the imported module's classes, not a __main__ copy

    sys.exit(module_main())
