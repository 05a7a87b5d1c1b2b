"""Helpers for tests of interop-runtime and of code built on it (shipped, not ad hoc)."""

from __future__ import annotations

from typing import Any

import zmq
import zmq.auth

from interop_runtime.client.cluster import LocalCluster

NUMPY_OPS = "interop_runtime.worker.numpy_ops"


def numpy_worker(name: str, *functions: str, **extra: Any) -> dict[str, Any]:
    """A worker spec for the built-in NumPy plugin hosting functions from numpy_ops."""
    config = {"functions": {f: f"{NUMPY_OPS}:{f}" for f in functions}, **extra.pop("config", {})}
    return {"name": name, "plugin": "numpy", "config": config, **extra}


def dial(cluster: LocalCluster, endpoint: str | None = None, *, as_name: str = "client",
         server: str = "coordinator") -> zmq.Socket:
    """A raw DEALER into a cluster, for tests that speak the wire protocol by hand: a peer
    holding ``as_name``'s keys (any key of the cluster: a client, a worker, the
    coordinator's), dialling ``endpoint`` (default: the coordinator) whose CURVE server key
    is ``server``'s. On an insecure cluster it is a plain-text socket. Close it with
    ``close(0)``."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if cluster.spec.coordinator.curve:
        keys = cluster.keys_dir
        public, secret = zmq.auth.load_certificate(str(keys / f"{as_name}.key_secret"))
        sock.curve_publickey, sock.curve_secretkey = public, secret
        sock.curve_serverkey = zmq.auth.load_certificate(str(keys / f"{server}.key"))[0]
    sock.connect(endpoint or cluster.address)
    return sock


def inbox(cluster: LocalCluster, worker: str) -> str:
    """A worker's inbox endpoint, as the coordinator knows it."""
    with cluster.client() as c:
        return next(w["endpoint"] for w in c.workers() if w["name"] == worker)
