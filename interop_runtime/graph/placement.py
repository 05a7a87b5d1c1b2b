"""Which replica runs each pool node of a run (protocol/SPEC.md section 19).

A run is placed once, by whoever starts it: the client for a direct run, the coordinator
otherwise. The placement travels in every DATA of the run, so a join node's producers
agree on its replica, and the coordinator knows whom to watch. Pure functions: the
client, the coordinator and the workers share them.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class PoolView:
    """What placing a run needs to know of a graph's pool nodes."""

    order: list[str] = field(default_factory=list)  # pool nodes, in topological order
    replicas: dict[str, list[str]] = field(default_factory=dict)  # node -> placeable workers
    upstream: dict[str, str | None] = field(default_factory=dict)  # a producer; None: client

    def to_wire(self) -> dict[str, dict[str, object]]:
        return {n: {"replicas": self.replicas[n], "upstream": self.upstream.get(n)}
                for n in self.order}

    @classmethod
    def from_wire(cls, body: Mapping[str, Mapping[str, object]]) -> PoolView:
        view = cls()
        for node, entry in body.items():
            replicas = entry.get("replicas")
            upstream = entry.get("upstream")
            if isinstance(replicas, list) and replicas:
                view.order.append(node)
                view.replicas[node] = [str(r) for r in replicas]
                view.upstream[node] = upstream if isinstance(upstream, str) else None
        return view


@dataclass(frozen=True)
class Site:
    """Where a process runs: its shared-memory host key and its endpoint's host name."""

    host_key: str | None = None
    hostname: str | None = None

    @classmethod
    def of(cls, host_key: str | None, endpoint: str | None) -> Site:
        return cls(host_key, urlsplit(endpoint).hostname if endpoint else None)

    def distance(self, other: Site) -> int:
        """0: shared memory reaches it, 1: the same host by address, 2: elsewhere."""
        if self.host_key and self.host_key == other.host_key:
            return 0
        if self.hostname and self.hostname == other.hostname:
            return 1
        return 2


def fallback_replica(run: str, replicas: Sequence[str]) -> str:
    """The replica for a pool node that a run's placement does not name: derived from
    the run id alone, so that every producer feeding a join node picks the same one."""
    digest = hashlib.blake2b(run.encode(), digest_size=8).digest()
    ordered = sorted(replicas)
    return ordered[int.from_bytes(digest, "little") % len(ordered)]


def place(view: PoolView, fixed: Mapping[str, str], load: Mapping[str, int],
          sites: Mapping[str, Site], origin: Site, rng: random.Random | None = None
          ) -> dict[str, str]:
    """Pool node -> replica for one run: least outstanding work first, then the nearest
    to the node's producer (the client, for a node the client feeds), then at random.

    ``fixed`` maps the graph's other nodes to their workers; ``load`` counts each worker's
    outstanding runs (the caller counts this one in once it is placed)."""
    pick = (rng or random.Random()).choice
    chosen: dict[str, str] = {}
    for node in view.order:
        up = view.upstream.get(node)
        source = (chosen.get(up) or fixed.get(up)) if up else None
        near = sites.get(source, Site()) if source else origin

        def rank(worker: str, near: Site = near) -> tuple[int, int]:
            return load.get(worker, 0), near.distance(sites.get(worker, Site()))

        candidates = view.replicas[node]
        best = min(rank(w) for w in candidates)
        chosen[node] = pick([w for w in candidates if rank(w) == best])
    return chosen
