"""The cluster file's models: the coordinator, the workers (replica pools included) and
supervision, as ``LocalCluster`` starts them; read with ``ClusterSpec.from_yaml``.

Cluster YAML::

    coordinator: {bind: "tcp://127.0.0.1:0", heartbeat_s: 1.0}
    workers:
      - name: w1
        plugin: numpy
        device: cpu
        python: /path/to/other/venv/bin/python   # optional: run under another interpreter
        config: {functions: {scale: "interop_runtime.worker.numpy_ops:scale"}}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from interop_runtime.graph.pipeline import load_yaml_model
from interop_runtime.transport.allowlist import Role, inferred_role

MAX_REPLICAS = 64  # one pool's replicas on one machine


class CoordinatorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    bind: str = "tcp://127.0.0.1:0"
    heartbeat_s: float = 1.0
    dead_after_s: float | None = None
    state: str = ":memory:"
    max_message_bytes: int | None = None
    # secure by default: fresh CURVE keys for every process of this cluster, one role each;
    # false runs plain text on loopback, which trusts every local process
    curve: bool = True
    metrics_port: int | None = None  # serve Prometheus metrics on 127.0.0.1:PORT
    dashboard_port: int | None = None  # serve the web dashboard on 127.0.0.1:PORT (0: any)
    max_runs: int | None = None  # runs in flight at most (admission control)
    max_runs_per_client: int | None = None
    log_format: str = "text"


class WorkerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    plugin: str
    device: str = "cpu"
    python: str | None = None
    config: dict[str, Any] = {}
    env: dict[str, str] = {}
    heartbeat_s: float | None = None
    bind: str | None = None  # the inbox address; "ipc" picks a socket file in the log dir
    shm: bool = True  # same-host shared memory for large tensors (off: frames only)
    shm_pool_mib: int | None = None  # the most its segments take (default 4 GiB)
    # replica pools: ``replicas: N`` starts NAME-0 .. NAME-(N-1) in pool NAME (or ``pool``);
    # ``pool`` alone puts this one worker in that pool
    pool: str | None = None
    replicas: int | None = Field(default=None, ge=1, le=MAX_REPLICAS)
    # the most replicas `interop scale` may give the pool: under CURVE their keys are made
    # at start, so that every process's allow-list knows them (default: 2 x replicas, >= 8)
    max_replicas: int | None = Field(default=None, ge=1, le=MAX_REPLICAS)
    # a worker whose model does not load: stop the cluster (fail) or come up without it
    on_load_error: Literal["fail", "skip"] = "fail"
    model_repository: str | None = None  # a folder of models it watches (README)
    # folders that models loaded over the wire may read files from (README "Models in
    # running workers"); the repository is one too
    model_root: str | list[str] | None = None


class SupervisionSpec(BaseModel):
    """Restart workers that exit, waiting longer after each quick failure."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = False
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    stable_after_s: float = 60.0  # a worker up this long gets its backoff reset


class ClusterSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = None  # names its state folder (default: the file's stem)
    coordinator: CoordinatorSpec = CoordinatorSpec()
    workers: list[WorkerSpec] = []
    supervise: SupervisionSpec = SupervisionSpec()

    @model_validator(mode="after")
    def _expand_replicas(self) -> ClusterSpec:
        """``replicas: N`` becomes N workers of one pool, each with a name of its own."""
        workers: list[WorkerSpec] = []
        for w in self.workers:
            if w.replicas is None:
                workers.append(w)
                continue
            pool = w.pool or w.name
            most = w.max_replicas or min(MAX_REPLICAS, max(8, 2 * w.replicas))
            if most < w.replicas:
                raise ValueError(f"worker {w.name!r}: max_replicas {most} is below replicas "
                                 f"{w.replicas}")
            workers += [w.model_copy(update={"name": f"{pool}-{i}", "pool": pool,
                                             "replicas": None, "max_replicas": most})
                        for i in range(w.replicas)]
        names = [w.name for w in workers]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"worker name {twice[0]!r} is used twice (replicas are named "
                             f"POOL-0, POOL-1, ...)")
        self.workers = workers
        return self

    @classmethod
    def from_yaml(cls, path: str | Path) -> ClusterSpec:
        """Read a cluster file; a problem is a ``ConfigError`` naming the file and the key."""
        return load_yaml_model(cls, path)


def pool_limits(spec: ClusterSpec) -> dict[str, int]:
    """Pool -> the most replicas it may have (its keys exist from the start)."""
    limits: dict[str, int] = {}
    for w in spec.workers:
        if w.pool:
            limits[w.pool] = max(limits.get(w.pool, 1), w.max_replicas or 1)
    return limits


def _role_for(name: str, spec: ClusterSpec) -> Role:
    pools = {w.name: w.pool for w in spec.workers}
    if name in pools:
        return Role("worker", name, pools[name])
    return inferred_role(name)
