"""Connect to Ray for ``--cluster local[:N]|auto|ADDRESS``: parse the spec, start or join, describe, shut down.

``local[:N]`` starts a private Ray on this machine bound to 127.0.0.1 (N workers; default: one per GPU, or
one per CPU core without a GPU), no dashboard, no log forwarding; ``auto`` joins the cluster Ray finds
(``RAY_ADDRESS`` or a ``ray start`` on this machine); ``HOST:PORT`` (or ``ray://HOST:PORT``) joins that
cluster's head. Ray is imported inside :func:`connect` only."""
from __future__ import annotations

import os
import re
import socket
import time
from dataclasses import dataclass, field
from typing import Optional

from engine.errors import UserError

SPEC_HELP = "use local[:N] (a private Ray on this machine), auto (the cluster Ray finds) or HOST:PORT of a Ray head"
NAMESPACE = "diffusion-renderer"
REACH_TIMEOUT_S = 5.0
_ADDRESS = re.compile(r"^(?:ray://)?(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.\-]+):(?P<port>\d{1,5})$")


class ClusterError(UserError):
    """A bad ``--cluster`` value or a cluster that cannot be reached (one line, with the fix)."""


@dataclass(frozen=True)
class ClusterSpec:
    mode: str                       # "local" | "auto" | "address"
    workers: Optional[int] = None   # local: N (None: one per GPU, else per CPU core)
    address: Optional[str] = None   # address: "host:port" or "ray://host:port"


def parse_spec(spec: str) -> ClusterSpec:
    """``local``, ``local:N`` (N ≥ 1), ``auto`` or ``[ray://]HOST:PORT``; anything else is a ClusterError."""
    text = (spec or "").strip()
    if text == "local":
        return ClusterSpec("local")
    if text.startswith("local:"):
        n = text[len("local:"):]
        if not n.isdigit() or int(n) < 1:
            raise ClusterError(f"--cluster {spec!r}: the worker count after 'local:' must be a whole number ≥ 1; "
                               + SPEC_HELP)
        return ClusterSpec("local", workers=int(n))
    if text == "auto":
        return ClusterSpec("auto")
    m = _ADDRESS.match(text)
    if m and 0 < int(m.group("port")) < 65536:
        return ClusterSpec("address", address=text)
    raise ClusterError(f"--cluster {spec!r} is not a cluster; {SPEC_HELP}")


def _check_reachable(address: str) -> None:
    m = _ADDRESS.match(address)
    host, port = m.group("host").strip("[]"), int(m.group("port"))
    try:
        with socket.create_connection((host, port), timeout=REACH_TIMEOUT_S):
            pass
    except OSError as exc:
        raise ClusterError(f"--cluster {address}: no Ray head answers there ({exc.strerror or exc}); start one "
                           f"with `ray start --head --port {port}` on {host}, or use --cluster local[:N]") from None


@dataclass
class Cluster:
    """A connected Ray: how it was reached, how many workers it offers, how long the connection took."""
    spec: ClusterSpec
    workers: int
    gpus_per_worker: float
    started_s: float
    owns_ray: bool = field(default=False)

    def describe(self) -> dict:
        return describe(self.workers)

    def shutdown(self) -> None:
        shutdown()


def connect(spec: str, *, namespace: str = NAMESPACE) -> Cluster:
    """Start (``local``) or join (``auto``/ADDRESS) Ray in this process; returns a :class:`Cluster`."""
    parsed = parse_spec(spec)
    t0 = time.perf_counter()
    if parsed.mode == "local":
        _loopback_only()
    if parsed.mode == "address" and not parsed.address.startswith("ray://"):
        _check_reachable(parsed.address)
    import ray

    if ray.is_initialized():
        raise ClusterError("--cluster: this process is already connected to a Ray cluster; shut it down first")
    common = dict(namespace=namespace, include_dashboard=False, log_to_driver=False, configure_logging=False)
    if parsed.mode == "local":
        gpus = _local_gpus()
        workers = parsed.workers or gpus or (os.cpu_count() or 1)
        # one CPU slot per worker; a GPU per worker when there are enough GPUs for all of them
        # address="local": always a new private Ray, never a cluster another process started on this machine
        ray.init(address="local", num_cpus=workers, num_gpus=gpus, _node_ip_address="127.0.0.1", **common)
    else:
        try:
            ray.init(address=parsed.address or "auto", **common)
        except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
            where = parsed.address or "auto (RAY_ADDRESS or a `ray start` on this machine)"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ClusterError(f"--cluster {where}: could not join a Ray cluster ({first}); start one with "
                               "`ray start --head`, or use --cluster local[:N]") from None
        gpus = int(ray.cluster_resources().get("GPU", 0))
        workers = gpus or int(ray.cluster_resources().get("CPU", 0))
    if workers < 1:
        shutdown()
        raise ClusterError(f"--cluster {spec}: the cluster offers no CPU or GPU to run a worker on")
    per_gpu = 1.0 if gpus >= workers else 0.0
    return Cluster(parsed, workers, per_gpu, time.perf_counter() - t0, owns_ray=parsed.mode == "local")


def _loopback_only() -> None:
    """Keep a private Ray on 127.0.0.1: Ray resolves a local node to a routable address unless its
    "single machine" switch is off (read by its workers from the environment, and by this process's
    already-imported Ray from its constants module)."""
    import sys

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:
        constants.ENABLE_RAY_CLUSTER = False


def _local_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def describe(workers: Optional[int] = None) -> dict:
    """``{"nodes": n, "workers": n, "devices": [{"node", "kind", "count", "name"}, ...]}`` for ``hello``."""
    import ray

    devices, nodes = [], 0
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        nodes += 1
        res = node.get("Resources", {})
        accel = [k.split(":", 1)[1] for k in res if k.startswith("accelerator_type:")]
        if res.get("GPU"):
            devices.append({"node": node.get("NodeManagerAddress"), "kind": "cuda", "count": int(res["GPU"]),
                            "name": accel[0] if accel else None})
        else:
            devices.append({"node": node.get("NodeManagerAddress"), "kind": "cpu", "count": int(res.get("CPU", 0)),
                            "name": None})
    if workers is None:
        total = ray.cluster_resources()
        workers = int(total.get("GPU", 0)) or int(total.get("CPU", 0))
    return {"nodes": nodes, "workers": workers, "devices": devices}


def shutdown() -> None:
    """Disconnect (and stop a private ``local`` Ray); a no-op when Ray was never imported."""
    import sys

    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
