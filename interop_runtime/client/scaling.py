"""Scaling a local cluster's replica pool while runs flow (``interop scale POOL N``).

Up: new replicas are started from the pool's first replica's spec, named POOL-k, and
the coordinator routes to them once they register. Down: the newest replicas are
drained (no new runs are placed on them; the coordinator stops each once its runs are
done), so no run is lost.

``interop up`` runs the cluster in the foreground; another shell asks it to scale by
writing ``scale/POOL.request`` (a number) into the cluster's state folder, and reads the
outcome from ``scale/POOL.done``.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from interop_runtime.wire.errors import InteropError, UnknownTargetError

if TYPE_CHECKING:
    from interop_runtime.client.cluster import LocalCluster

REQUESTS = "scale"
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$")


class ScaleError(InteropError):
    """A pool could not be scaled as asked; the message says why."""


def replicas_of(cluster: LocalCluster, pool: str) -> list[str]:
    return [w.name for w in cluster.spec.workers if w.pool == pool]


def _index(name: str, pool: str) -> int:
    tail = name[len(pool) + 1:] if name.startswith(pool + "-") else ""
    return int(tail) if tail.isdigit() else -1


def scale_pool(cluster: LocalCluster, pool: str, count: int, timeout_s: float = 120.0
               ) -> list[str]:
    """Make ``pool`` have ``count`` replicas; returns their names once the change is done."""
    from interop_runtime.client.cluster import pool_limits

    if count < 1 or count > 64:
        raise ScaleError(f"a pool has 1 to 64 replicas, not {count}", field="count")
    if not cluster.spec.supervise.enabled:  # nobody restarts a replica that exited: gone
        gone = {n for n in replicas_of(cluster, pool)
                if n in cluster.workers and cluster.workers[n].poll() is not None}
        cluster.spec.workers = [w for w in cluster.spec.workers if w.name not in gone]
    current = replicas_of(cluster, pool)
    if not current:
        pools = sorted({w.pool for w in cluster.spec.workers if w.pool})
        raise UnknownTargetError(f"this cluster has no pool {pool!r} (pools: "
                                 f"{', '.join(pools) or 'none'})", field="pool")
    most = pool_limits(cluster.spec).get(pool, 1)
    if count > most:
        raise ScaleError(f"pool {pool!r} may have at most {most} replicas (its keys were made "
                         f"at start; set max_replicas in the cluster file)", field="count")
    if count > len(current):
        template = next(w for w in cluster.spec.workers if w.pool == pool)
        free = [i for i in range(most) if f"{pool}-{i}" not in current]
        new = [template.model_copy(update={"name": f"{pool}-{i}"})
               for i in free[:count - len(current)]]
        for spec in new:
            cluster.spec.workers.append(spec)
            cluster.start_worker(spec)
        cluster.wait_ready([w.name for w in new], timeout_s)
    elif count < len(current):
        leaving = sorted(current, key=lambda n: _index(n, pool))[count:]
        cluster.retiring.update(leaving)
        with cluster.client(timeout_s=10.0) as client:
            for name in leaving:
                client.drain(name)
        deadline = time.monotonic() + timeout_s
        for name in leaving:
            proc = cluster.workers[name]
            while proc.poll() is None:
                if time.monotonic() > deadline:
                    raise ScaleError(f"replica {name} still has runs after {timeout_s:.0f} s "
                                     f"of draining", worker=name)
                time.sleep(0.05)
        cluster.spec.workers = [w for w in cluster.spec.workers if w.name not in leaving]
        for name in leaving:
            cluster.workers.pop(name, None)
    return replicas_of(cluster, pool)


def request_scale(state_dir: Path, pool: str, count: int, timeout_s: float = 180.0
                  ) -> dict[str, Any]:
    """Ask the ``interop up`` that owns ``state_dir`` to scale, and wait for its answer."""
    if not NAME_RE.match(pool):
        raise ScaleError(f"{pool!r} is not a pool name", field="pool")
    folder = state_dir / REQUESTS
    folder.mkdir(exist_ok=True)
    done = folder / f"{pool}.done"
    done.unlink(missing_ok=True)
    (folder / f"{pool}.request").write_text(str(count))
    deadline = time.monotonic() + timeout_s
    while not done.exists():
        if time.monotonic() > deadline:
            raise ScaleError(f"no answer from `interop up` in {state_dir} after "
                             f"{timeout_s:.0f} s (is it still running?)")
        time.sleep(0.1)
    answer: dict[str, Any] = json.loads(done.read_text())
    return answer


def serve_scale_requests(cluster: LocalCluster) -> bool:
    """In ``interop up``: carry out the requests other shells left in the state folder;
    True if there were any."""
    folder = cluster.log_dir / REQUESTS
    requests = sorted(folder.glob("*.request")) if folder.is_dir() else []
    for request in requests:
        pool = request.name.removesuffix(".request")
        try:
            count = int(request.read_text().strip())
            request.unlink()
            answer: dict[str, Any] = {"pool": pool, "replicas": scale_pool(cluster, pool, count)}
        except (ValueError, OSError) as exc:
            request.unlink(missing_ok=True)
            answer = {"pool": pool, "error": f"bad request: {exc}"}
        except InteropError as exc:
            answer = {"pool": pool, "error": exc.message}
        (folder / f"{pool}.done").write_text(json.dumps(answer))
    return bool(requests)
