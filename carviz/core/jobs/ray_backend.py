"""The Ray backend: the same job entry points submitted to an existing Ray cluster through Ray's job submission API.

The run record stays the source of truth (CARVIZ_HOME must be on storage every node sees); Ray's own job status
adds what the record cannot say: a job that failed to start, was killed, or vanished with the cluster.
"""

from __future__ import annotations

import os
import secrets
import shlex
import sys
import time
from typing import Any

from carviz.core.jobs.local import job_environment
from carviz.core.jobs.record import JobRecord
from carviz.core.jobs.status import Status

NAME = "ray"
CLIENT_TIMEOUT = 10.0  # seconds for one request to the cluster
_clients: dict[str, Any] = {}
_resources: dict[str, tuple[float, dict[str, float]]] = {}  # address -> (read at, total resources)
RESOURCES_TTL = 30.0


class RayUnavailable(RuntimeError):
    """No Ray address is configured, Ray is not installed, or the cluster does not answer."""


def client(address: str) -> Any:
    """A JobSubmissionClient for the cluster at `address` (made once per address: it checks the version)."""
    if address not in _clients:
        try:
            from ray.job_submission import JobSubmissionClient
        except ImportError as error:
            raise RayUnavailable(f"Ray is not installed ({error}); pip install 'ray[default]'") from error
        try:
            _clients[address] = JobSubmissionClient(address)
        except Exception as error:  # noqa: BLE001 - connection refused, bad address, version mismatch
            raise RayUnavailable(f"cannot reach the Ray cluster at {address}: {error}") from error
    return _clients[address]


def cluster_resources(address: str) -> dict[str, float]:
    """Total resources of the cluster's alive nodes (CPU, GPU, …), read through Ray's state API; cached briefly."""
    cached = _resources.get(address)
    if cached and time.monotonic() - cached[0] < RESOURCES_TTL:
        return cached[1]
    try:
        from ray.util.state import list_nodes

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


def entrypoint_resources(address: str, needs_accelerator: bool) -> dict[str, float]:
    """What a job asks Ray for: one GPU per training or LR test job when the cluster has GPUs, otherwise CPUs
    ($CARVIZ_RAY_CPUS_PER_JOB, default 1); light jobs (the sweep feeder) ask for nothing and run on the head."""
    if not needs_accelerator:
        return {}
    if cluster_resources(address).get("GPU", 0) >= 1:
        return {"entrypoint_num_gpus": 1}
    return {"entrypoint_num_cpus": float(os.environ.get("CARVIZ_RAY_CPUS_PER_JOB", "1"))}


def launch(record: JobRecord, module: str, needs_accelerator: bool) -> None:
    """Submit `python -m MODULE FOLDER` as a Ray job; writes launch.json (address and submission id)."""
    address = _address()
    submission_id = f"carviz-{record.id}-{secrets.token_hex(3)}"  # a resumed job is a new submission
    resources = entrypoint_resources(address, needs_accelerator)
    env = job_environment(NAME)
    passed = {key: env[key] for key in env if key.startswith(("CARVIZ_", "KERAS_", "TF_", "PYTHONPATH"))}
    entrypoint = " ".join(shlex.quote(part) for part in (sys.executable, "-m", module, str(record.path)))
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


def kill(launch_info: dict[str, Any]) -> bool:
    """Stop the Ray job (Ray sends SIGTERM, then SIGKILL); True if Ray accepted the request."""
    try:
        return bool(client(launch_info["address"]).stop_job(launch_info["submission_id"]))
    except Exception:  # noqa: BLE001 - already ended, or the cluster is gone
        return False


def capacity() -> int:
    """How many accelerator jobs the cluster runs at once: its GPUs, else its CPUs per job's CPUs."""
    resources = cluster_resources(_address())
    if resources.get("GPU", 0) >= 1:
        return int(resources["GPU"])
    per_job = float(os.environ.get("CARVIZ_RAY_CPUS_PER_JOB", "1"))
    return max(1, int(resources.get("CPU", 1) // max(per_job, 0.001)))


def _last_words(message: str) -> str:
    """The most telling line of Ray's failure message: a carviz line if the job printed one, else its first line."""
    lines = [line.strip() for line in (message or "").splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("carviz:"):
            return line
    return lines[0] if lines else "no message from Ray"


def derive(record: JobRecord, recorded: Status, launch_info: dict[str, Any]) -> tuple[Status, str, str | None]:
    """(status, reason, error) for a record that says queued or running, from Ray's view of its job.

    Pending or running in Ray: as recorded. Failed in Ray while the record still says queued: the job could not
    start (failed, with Ray's reason). Failed, stopped or succeeded in Ray while the record says running, or unknown
    to Ray: the process died without a word (lost). An unreachable cluster leaves the recorded status, saying so.
    """
    address, submission_id = launch_info.get("address"), launch_info.get("submission_id")
    if not isinstance(address, str) or not isinstance(submission_id, str):
        return Status.LOST, "launch.json names no Ray job", None
    try:
        info = client(address).get_job_info(submission_id)
    except RayUnavailable as error:
        return recorded, str(error), None
    except Exception as error:  # noqa: BLE001 - Ray raises RuntimeError for an unknown job
        if "not exist" in str(error) or "404" in str(error):
            return Status.LOST, f"Ray job {submission_id} vanished (the cluster does not know it)", None
        return recorded, f"Ray cluster at {address} did not answer: {error}", None
    ray_status = str(getattr(info.status, "value", info.status))
    message = getattr(info, "message", "") or ""
    if ray_status in ("PENDING", "RUNNING"):
        return recorded, "", None
    if ray_status == "STOPPED" and record.stop_requested():
        return Status.STOPPED, "stopped on request (Ray job stopped)", None
    if ray_status == "FAILED" and recorded == Status.QUEUED:
        words = _last_words(message)
        return Status.FAILED, f"Ray job failed before it started: {words}", words
    return Status.LOST, f"Ray job {submission_id} is {ray_status.lower()} but the run never recorded an end " \
                        f"({_last_words(message)})", None
