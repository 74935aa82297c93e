"""A throwaway one-machine Ray head for tests and benchmarks: bound to 127.0.0.1 only, on fixed ports.

Ray turns --node-ip-address 127.0.0.1 into the machine's outward address (and then listens on every interface)
unless RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, which makes it keep the loopback address; its two metrics servers take
their ports from DASHBOARD_METRIC_PORT and AUTOSCALER_METRIC_PORT. The head runs as `ray start --block` in a session
of its own, so stop() ends exactly the processes it started (that session and their descendants, by pid), never
other Ray instances on the machine as `ray stop --force` would.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
PORT_BASE_ENV = "CARVIZ_TEST_RAY_PORT_BASE"  # moves every port of the test head (e.g. two checkouts at once)
WORKER_PORTS = 100  # ports base+100 .. base+199 for Ray's worker processes


def ports(base: int) -> dict[str, int]:
    """Every port the head opens, as fixed offsets from `base`."""
    names = ("port", "dashboard-port", "ray-client-server-port", "dashboard-agent-listen-port",
             "dashboard-agent-grpc-port", "metrics-export-port", "runtime-env-agent-port", "node-manager-port",
             "object-manager-port", "dashboard-metric-port", "autoscaler-metric-port")
    return {name: base + offset for offset, name in enumerate(names)}


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a closed socket's TIME_WAIT is no owner
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


@dataclass
class RayHead:
    """A running head: its dashboard address (what CARVIZ_RAY_ADDRESS takes), its process and temp folder."""

    address: str
    process: subprocess.Popen
    temp_dir: Path
    log_path: Path
    port_map: dict[str, int] = field(default_factory=dict)

    def processes(self) -> list:
        """The head's processes now: its session (raylet, GCS, dashboard, workers) and all their descendants
        (job entrypoints run in sessions of their own under a worker)."""
        import psutil

        found: dict[int, psutil.Process] = {}
        try:
            leader = psutil.Process(self.process.pid)
            found[leader.pid] = leader
            for child in leader.children(recursive=True):
                found[child.pid] = child
        except psutil.Error:
            pass
        for process in psutil.process_iter():
            try:
                if process.pid not in found and os.getsid(process.pid) == self.process.pid:
                    found[process.pid] = process
                    for child in process.children(recursive=True):
                        found[child.pid] = child
            except (OSError, psutil.Error):
                continue
        return list(found.values())

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the `ray start --block` process, which shuts its processes down in order (a few seconds); then
        SIGTERM whatever of the head is left, SIGKILL it after `grace` seconds, and remove the temp folder."""
        import psutil

        processes = self.processes()
        try:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=grace)
        except (OSError, subprocess.TimeoutExpired):
            pass
        _, alive = psutil.wait_procs(processes, timeout=grace)
        for process in alive:
            try:
                process.send_signal(signal.SIGTERM)
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(alive, timeout=grace)
        for process in alive:
            try:
                process.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=5)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def _answering(address: str) -> bool:
    try:
        with urllib.request.urlopen(f"{address}/api/version", timeout=2) as response:
            return response.status == 200 and "ray_version" in json.loads(response.read())
    except (OSError, ValueError):
        return False


def _node_ready(address: str, num_cpus: int) -> bool:
    from ray.util.state import list_nodes

    try:
        nodes = list_nodes(address=address, timeout=5, raise_on_missing_output=False)
    except Exception:  # noqa: BLE001 - not up yet
        return False
    return any(node.state == "ALIVE" and node.resources_total.get("CPU", 0) >= num_cpus for node in nodes)


def start_ray_head(port_base: int | None = None, num_cpus: int = 2, num_gpus: int = 0,
                   timeout: float = 120.0) -> RayHead:
    """Start a head on 127.0.0.1 (ports from `port_base`, default $CARVIZ_TEST_RAY_PORT_BASE or 26300) and wait
    until its dashboard answers and its node is alive. Raises RuntimeError (with Ray's output) if it does not."""
    base = port_base or int(os.environ.get(PORT_BASE_ENV, "26300"))
    port_map = ports(base)
    busy = [port for port in [*port_map.values(), *range(base + 100, base + 100 + WORKER_PORTS)]
            if not _port_free(port)]
    if busy:
        raise RuntimeError(f"ports {busy[:5]} on {HOST} are taken (another Ray head?); set {PORT_BASE_ENV} to "
                           f"another base port")
    temp_dir = Path(tempfile.mkdtemp(prefix="carviz-ray-", dir="/tmp"))  # short: Ray's socket paths are capped
    log_path = temp_dir / "ray-start.log"
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("CARVIZ_", "RAY_ADDRESS", "CUDA_VISIBLE_DEVICES"))}
    env.update({
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # keep 127.0.0.1 as the node address: listen on loopback only
        "DASHBOARD_METRIC_PORT": str(port_map["dashboard-metric-port"]),
        "AUTOSCALER_METRIC_PORT": str(port_map["autoscaler-metric-port"]),
    })
    ray = str(Path(sys.executable).with_name("ray"))
    command = [
        ray, "start", "--head", "--block", "--node-ip-address", HOST, "--dashboard-host", HOST,
        "--include-dashboard", "true", "--disable-usage-stats", "--temp-dir", str(temp_dir),
        "--num-cpus", str(num_cpus), "--num-gpus", str(num_gpus),
        "--min-worker-port", str(base + 100), "--max-worker-port", str(base + 100 + WORKER_PORTS - 1),
    ]
    for name in ("port", "dashboard-port", "ray-client-server-port", "dashboard-agent-listen-port",
                 "dashboard-agent-grpc-port", "metrics-export-port", "runtime-env-agent-port", "node-manager-port",
                 "object-manager-port"):
        command += [f"--{name}", str(port_map[name])]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True, close_fds=True)
    head = RayHead(f"http://{HOST}:{port_map['dashboard-port']}", process, temp_dir, log_path, port_map)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = head.log_tail()
            head.stop()
            raise RuntimeError(f"ray start exited with {process.returncode}:\n{tail}")
        if _answering(head.address) and _node_ready(head.address, num_cpus):
            return head
        time.sleep(0.5)
    tail = head.log_tail()
    head.stop()
    raise RuntimeError(f"the Ray head did not come up within {timeout:.0f} s:\n{tail}")


def listening_addresses(head: RayHead) -> set[str]:
    """The local addresses the head's processes listen on (for checking that nothing listens beyond loopback)."""
    import psutil

    addresses = set()
    for process in head.processes():
        try:
            connections = process.net_connections(kind="inet")
        except psutil.Error:
            continue
        for connection in connections:
            if connection.status == psutil.CONN_LISTEN:
                addresses.add(connection.laddr.ip)
    return addresses
