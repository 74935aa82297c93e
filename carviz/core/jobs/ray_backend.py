"""The Ray backend: the same job entry points submitted to an existing Ray cluster through Ray's job submission API.

The run record stays the source of truth (CARVIZ_HOME must be on storage every node sees, and the Python that
submits, sys.executable, must exist at the same path on every node); Ray's own job status adds what the record
cannot say: a job that failed to start, was killed, or vanished with the cluster.

What Ray does with a job (checked against Ray 2.x's job supervisor): the entrypoint runs under `/bin/sh -c` (we
exec the job, so the pid it records is the one Ray signals) in its own session on the node Ray picks, with
OMP_NUM_THREADS set to the whole CPUs it asked for (1 when none; TensorFlow's own thread pools ignore it);
`stop_job` sends SIGTERM to it and its children and SIGKILL after $RAY_JOB_STOP_WAIT_TIME_S (default 3 s), but
only once the job has its resources (a pending job is stopped as it starts); a job that asks for GPUs
(entrypoint_num_gpus) gets CUDA_VISIBLE_DEVICES set by Ray to the GPUs it holds, one that asks for none leaves
CUDA_VISIBLE_DEVICES alone; a job that asks for no resources at all runs on the head node. An unknown submission
id is an HTTP 404 ("Job … does not exist").
"""

from __future__ import annotations

import os
import secrets
import shlex
import signal
import sys
import time
from typing import Any

from carviz.core.jobs.backend import Backend, JobKind, Recorded, Verdict
from carviz.core.jobs.local import job_environment
from carviz.core.jobs.record import JobRecord
from carviz.core.jobs.status import JobState, Status

NAME = "ray"
CLIENT_TIMEOUT = 10.0  # seconds for one request to the cluster
_clients: dict[str, Any] = {}
_resources: dict[str, tuple[float, dict[str, float]]] = {}  # address -> (read at, total resources)
RESOURCES_TTL = 30.0
_down: dict[str, tuple[float, str]] = {}  # address -> (when it last failed to answer, why)
DOWN_TTL = 5.0  # seconds an address that did not answer is not asked again (a page of 50 runs waits once, not 50x)
ACTIVE = ("PENDING", "RUNNING")  # Ray's job statuses of a job that has not ended


class RayUnavailable(RuntimeError):
    """No Ray address is configured, Ray is not installed, or the cluster does not answer."""


def _client_class() -> type:
    """JobSubmissionClient whose every request gives up after CLIENT_TIMEOUT seconds (Ray's own has no timeout:
    a dashboard that accepts the connection but never answers would hang every status read)."""
    from ray.job_submission import JobSubmissionClient

    class TimedJobSubmissionClient(JobSubmissionClient):
        def _do_request(self, method: str, endpoint: str, **kwargs: Any) -> Any:
            kwargs.setdefault("timeout", CLIENT_TIMEOUT)
            return super()._do_request(method, endpoint, **kwargs)

    return TimedJobSubmissionClient


def _check_up(address: str) -> None:
    """Raise RayUnavailable at once if `address` failed to answer within the last DOWN_TTL seconds."""
    down = _down.get(address)
    if down and time.monotonic() - down[0] < DOWN_TTL:
        raise RayUnavailable(down[1])


def _mark_down(address: str, error: RayUnavailable) -> RayUnavailable:
    _down[address] = (time.monotonic(), str(error))
    return error


def client(address: str) -> Any:
    """A JobSubmissionClient for the cluster at `address` (made once per address: it checks the version)."""
    if address not in _clients:
        _check_up(address)
        try:
            cls = _client_class()
        except ImportError as error:
            raise RayUnavailable(f"Ray is not installed ({error}); pip install 'ray[default]'") from error
        try:
            _clients[address] = cls(address)
        except Exception as error:  # noqa: BLE001 - connection refused, bad address, version mismatch
            raise _mark_down(address, RayUnavailable(f"cannot reach the Ray cluster at {address}: {error}")) \
                from error
        _down.pop(address, None)
    return _clients[address]


def cluster_resources(address: str) -> dict[str, float]:
    """Total resources of the cluster's alive nodes (CPU, GPU, …), read through Ray's state API; cached briefly."""
    cached = _resources.get(address)
    if cached and time.monotonic() - cached[0] < RESOURCES_TTL:
        return cached[1]
    try:
        from ray.util.state import list_nodes

        # the state API takes the dashboard address too; it returns NodeState dataclasses
        nodes = list_nodes(address=address, timeout=int(CLIENT_TIMEOUT), raise_on_missing_output=False)
    except Exception as error:  # noqa: BLE001 - an unreachable cluster
        raise RayUnavailable(f"cannot read the resources of the Ray cluster at {address}: {error}") from error
    total: dict[str, float] = {}
    for node in nodes:
        if getattr(node, "state", "ALIVE") != "ALIVE":
            continue
        for name, amount in (getattr(node, "resources_total", None) or {}).items():
            total[name] = total.get(name, 0.0) + float(amount)
    _resources[address] = (time.monotonic(), total)
    return total


def _address() -> str:
    from carviz.core import settings

    address = settings.ray_address()
    if not address:
        raise RayUnavailable("no Ray cluster configured: set CARVIZ_RAY_ADDRESS (e.g. http://head-node:8265)")
    return address


def cpus_per_job() -> float:
    """CPUs a training job asks for on a cluster without GPUs: $CARVIZ_RAY_CPUS_PER_JOB, default 1."""
    configured = os.environ.get("CARVIZ_RAY_CPUS_PER_JOB", "").strip() or "1"
    try:
        value = float(configured)
    except ValueError:
        raise ValueError(f"CARVIZ_RAY_CPUS_PER_JOB must be a number, got {configured!r}") from None
    if not value > 0:
        raise ValueError(f"CARVIZ_RAY_CPUS_PER_JOB must be above 0, got {configured!r}")
    return value


def entrypoint_resources(address: str, needs_accelerator: bool) -> dict[str, float]:
    """What a job asks Ray for: one GPU per training or LR test job when the cluster has GPUs (Ray then sets its
    CUDA_VISIBLE_DEVICES), otherwise CPUs ($CARVIZ_RAY_CPUS_PER_JOB, default 1); light jobs (the sweep feeder) ask
    for nothing and run on the head."""
    if not needs_accelerator:
        return {}
    if cluster_resources(address).get("GPU", 0) >= 1:
        return {"entrypoint_num_gpus": 1}
    return {"entrypoint_num_cpus": cpus_per_job()}


def submit(record: JobRecord, module: str, needs_accelerator: bool) -> None:
    """Submit `python -m MODULE FOLDER` as a Ray job; writes launch.json (address and submission id)."""
    address = _address()
    submission_id = f"carviz-{record.id}-{secrets.token_hex(3)}"  # a resumed job is a new submission
    resources = entrypoint_resources(address, needs_accelerator)
    env = job_environment(NAME)
    passed = {key: env[key] for key in env if key.startswith(("CARVIZ_", "KERAS_", "TF_", "PYTHONPATH"))}
    # exec: the job replaces Ray's shell, so the pid it records is the one Ray signals and waits for
    entrypoint = "exec " + " ".join(shlex.quote(part) for part in (
        sys.executable, "-c", ENTRY_CODE, module, str(record.path)))
    try:
        client(address).submit_job(entrypoint=entrypoint, submission_id=submission_id,
                                   runtime_env={"env_vars": passed}, metadata={"carviz_record": str(record.path)},
                                   **resources)
    except RayUnavailable:
        raise
    except Exception as error:  # noqa: BLE001 - the cluster refused or went away
        raise RayUnavailable(f"the Ray cluster at {address} refused the job: {error}") from error
    record.write_launch({"backend": NAME, "module": module, "address": address, "submission_id": submission_id,
                         "resources": resources})


ENTRY_CODE = "from carviz.core.jobs.ray_backend import job_entry; job_entry()"


def job_entry(argv: list[str] | None = None) -> None:
    """A Ray job's process: `python -c ENTRY_CODE MODULE FOLDER` runs MODULE's main on FOLDER like
    `python -m MODULE FOLDER` would, then leaves without Python's teardown of TensorFlow (about a second, on a CPU
    that Ray holds for the job until the process is gone, so the next job would wait for it). What that teardown
    would do for the job is done first: garbage collection (TensorBoard writers flush as they close), atexit
    handlers, logging and stdio flushed."""
    import atexit
    import gc
    import importlib
    import logging

    module, folder = (sys.argv[1:] if argv is None else argv)[:2]
    code = importlib.import_module(module).main([folder])
    gc.collect()
    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code if isinstance(code, int) else 1)


def _unknown_job(error: Exception) -> bool:
    """Whether Ray's error says it does not know the job (JobSubmissionClient raises RuntimeError on HTTP 404)."""
    text = str(error)
    return "does not exist" in text or "status code 404" in text


def job_info(launch_info: dict[str, Any]) -> Any | None:
    """Ray's JobDetails of the job launch.json names; None when Ray does not know it (it never got it, or the
    cluster restarted). Raises RayUnavailable when the cluster does not answer, ValueError when launch.json names
    no Ray job."""
    address, submission_id = launch_info.get("address"), launch_info.get("submission_id")
    if not isinstance(address, str) or not isinstance(submission_id, str):
        raise ValueError("launch.json names no Ray job")
    ray_client = client(address)
    _check_up(address)
    try:
        info = ray_client.get_job_info(submission_id)
    except Exception as error:  # noqa: BLE001 - RuntimeError for an unknown job or a failed request; timeouts
        if _unknown_job(error):
            return None
        raise _mark_down(address, RayUnavailable(f"Ray cluster at {address} did not answer: {error}")) from error
    _down.pop(address, None)
    return info


def status_name(info: Any) -> str:
    """Ray's job status as a plain string: PENDING, RUNNING, STOPPED, SUCCEEDED or FAILED."""
    return str(getattr(info.status, "value", info.status))


def job_alive(launch_info: dict[str, Any]) -> bool:
    """Whether the Ray job may still run: pending or running in Ray, or the cluster cannot tell us (then it may
    still run, so it is never resumed beside itself). False when Ray says it ended or does not know it."""
    try:
        info = job_info(launch_info)
    except ValueError:
        return False
    except RayUnavailable:
        return True
    return info is not None and status_name(info) in ACTIVE


def kill(launch_info: dict[str, Any]) -> bool:
    """Stop the Ray job (Ray sends SIGTERM, then SIGKILL); True if Ray accepted the request."""
    try:
        return bool(client(launch_info["address"]).stop_job(launch_info["submission_id"]))
    except Exception:  # noqa: BLE001 - already ended, or the cluster is gone
        return False


def cluster_capacity() -> int:
    """How many accelerator jobs the cluster runs at once: its GPUs, else its CPUs per job's CPUs."""
    resources = cluster_resources(_address())
    if resources.get("GPU", 0) >= 1:
        return int(resources["GPU"])
    return max(1, int(resources.get("CPU", 1) // cpus_per_job()))


def _exit_words(code: Any) -> str:
    if not isinstance(code, int) or isinstance(code, bool):
        return ""
    number = -code if code < 0 else code - 128 if code > 128 else 0
    if number:
        try:
            return f"exit code {code}: killed by {signal.Signals(number).name}"
        except ValueError:
            pass
    return f"exit code {code}"


def _last_words(info: Any) -> str:
    """The most telling words of Ray about an ended job: a carviz line if the job printed one, else its exit code
    and last log line, else the first line of Ray's message."""
    message = getattr(info, "message", "") or ""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("carviz:"):
            return line
    exit_words = _exit_words(getattr(info, "driver_exit_code", None))
    if exit_words:
        return exit_words + (f"; last log line: {lines[-1][:200]}" if len(lines) > 1 else "")
    return lines[0] if lines else "no message from Ray"


def derive(record: JobRecord, recorded: Status, launch_info: dict[str, Any]) -> tuple[Status, str, str | None]:
    """(status, reason, error) for a record that says queued or running, from Ray's view of its job.

    Pending or running in Ray: as recorded. Ended in Ray: the record is read once more (the job writes its final
    status just before it exits, so the first read may predate it); if it still says queued or running, the job
    ended without a word: stopped when a stop was requested, failed (with Ray's reason) when it failed before it
    started, else lost. Unknown to Ray: lost (or stopped on request). An unreachable cluster leaves the recorded
    status, saying so.
    """
    try:
        info = job_info(launch_info)
    except ValueError as error:
        return Status.LOST, str(error), None
    except RayUnavailable as error:
        return recorded, str(error), None
    submission_id = launch_info.get("submission_id")
    if info is not None and status_name(info) in ACTIVE:
        return recorded, "", None
    fresh = record.raw_status()
    try:
        now = Status(fresh.get("state"))
    except ValueError:
        now = None
    if now is not None and now not in (Status.QUEUED, Status.RUNNING):
        error = fresh.get("error")
        return now, "", error if isinstance(error, str) else None
    if info is None:
        if record.stop_requested():
            return Status.STOPPED, f"stopped on request (Ray no longer knows job {submission_id})", None
        return Status.LOST, f"Ray job {submission_id} vanished (the cluster does not know it)", None
    ray_status = status_name(info)
    if record.stop_requested():
        return Status.STOPPED, f"stopped on request (Ray job {ray_status.lower()})", None
    words = _last_words(info)
    if ray_status == "FAILED" and (now or recorded) == Status.QUEUED:
        return Status.FAILED, f"Ray job failed before it started: {words}", words
    return Status.LOST, f"Ray job {submission_id} is {ray_status.lower()} ({words}) but the job never recorded " \
                        f"an end", None


class RayBackend(Backend):
    """A job is a Ray job on the cluster at $CARVIZ_RAY_ADDRESS; Ray's own job status says what the record cannot."""

    name = NAME
    remote = True

    def launch(self, record: JobRecord, kind: JobKind) -> None:
        submit(record, kind.module, kind.needs_accelerator)

    def capacity(self) -> int:
        return cluster_capacity()

    def judge(self, record: JobRecord, seen: Recorded) -> Verdict | None:
        status, reason, error = derive(record, seen.status, seen.launch)
        return Verdict(status, reason, error)

    def lives(self, record: JobRecord, state: JobState) -> bool:
        """Ray's own job status, not the derived one: a hung job reads lost yet still runs."""
        return job_alive(record.launch_info())

    def kill(self, record: JobRecord, state: JobState) -> bool:
        return kill(record.launch_info())

    def identify_self(self, record: JobRecord) -> dict[str, Any]:
        """The Ray job that runs `record` (its own launch.json names it)."""
        launch = record.launch_info()
        return {"backend": NAME, "address": launch.get("address"), "submission_id": launch.get("submission_id")}

    def available(self) -> bool:
        """Once a cluster address is configured."""
        from carviz.core import settings

        return bool(settings.ray_address())

    def cancel_pending(self, record: JobRecord, state: JobState) -> bool:
        """Still pending in Ray: no process of it runs yet, and Ray acts on stop_job only once the job gets its
        resources; then the job ends at once (Ray stops it, and it sees the stop request before it trains)."""
        kill(record.launch_info())
        return True
