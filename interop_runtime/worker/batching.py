"""Dynamic batching without I/O: ready nodes of one function, from different runs, stacked
along the batch dimension into one call and split back run by run (SPEC "Dynamic batching").

The worker config declares it per function::

    batching:
      forward: {max_batch: 32, max_delay_ms: 2, dim: 0}

The host hands every Ready node of a batched function to its ``Batcher`` and runs what
comes back: a batch once it holds ``max_batch`` rows (or items), a lone item that cannot
batch (an input without the batch dimension, inputs that disagree on rows, rows that fill
a batch alone), and, from ``due``, batches whose first item waited ``max_delay_ms``.
Items share a batch only when their input names, dtypes, other dimensions and node args
agree; the rest open another batch. Each run may bring several rows.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Container, Hashable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from interop_runtime.graph.signatures import batch_dim_problem
from interop_runtime.wire.messages import BatchingSpec, FunctionSpec
from interop_runtime.wire.model import WireValidationError, describe
from interop_runtime.worker.state import Ready

MAX_GROUPS = 64  # open batches per function (distinct shapes or args); beyond, the oldest runs
KEYS = ("max_batch", "max_delay_ms", "dim")


# --- the worker config ---------------------------------------------------------------------

def batching_policies(config: Any, functions: Mapping[str, FunctionSpec],
                      mutates: Callable[[str], bool] = lambda _: False
                      ) -> dict[str, BatchingSpec]:
    """The config's ``batching`` checked against the functions' signatures; a ValueError
    says in one line which function, key, input or output is wrong."""
    if config is None:
        return {}
    if not isinstance(config, Mapping):
        raise ValueError("batching must map function names to {max_batch, max_delay_ms, dim}")
    policies: dict[str, BatchingSpec] = {}
    for name, entry in config.items():
        where = f"batching.{name}"
        spec = functions.get(str(name))
        if spec is None:
            raise ValueError(f"{where}: the worker has no function {name!r} (it offers: "
                             f"{', '.join(functions) or 'none'})")
        if not isinstance(entry, Mapping):
            raise ValueError(f"{where} must be a mapping with keys {', '.join(KEYS)}")
        unknown = sorted(str(k) for k in entry if k not in KEYS)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)} "
                             f"(known: {', '.join(KEYS)})")
        try:
            policy = BatchingSpec.model_validate(dict(entry))
        except WireValidationError as exc:
            loc, problem = describe(exc)
            raise ValueError(f"{where}.{loc}: {problem}" if loc else f"{where}: {problem}"
                             ) from None
        if mutates(spec.name):  # a failed batch is retried run by run: calls must be pure
            raise ValueError(f"{where}: {spec.name} changes the parameters and cannot batch")
        check_batchable(spec, policy.dim)
        policies[spec.name] = policy
    return policies


def check_batchable(spec: FunctionSpec, dim: int) -> None:
    """Every input and output must declare a dynamic (null or -1) size at ``dim``."""
    problem = batch_dim_problem(spec, dim)
    if problem:
        raise ValueError(f"batching.{spec.name}: {problem}")


# --- batches -----------------------------------------------------------------------------

@dataclass
class Item:
    ready: Ready
    rows: int
    added_at: float  # monotonic seconds: what it waited here counts as the run's wait


@dataclass
class Batch:
    function: str
    dim: int
    items: list[Item] = field(default_factory=list)
    first_at: float = 0.0

    @property
    def rows(self) -> int:
        return sum(i.rows for i in self.items)

    def settle(self, now: float, gone: Container[str]) -> tuple[Batch, list[Ready]]:
        """The batch of the items whose run is not in ``gone`` (cancelled), and the others'
        Ready nodes; what each waited here is added to its run's wait."""
        live, dropped = Batch(self.function, self.dim, first_at=self.first_at), []
        for item in self.items:
            item.ready = replace(item.ready, wait_s=item.ready.wait_s + now - item.added_at)
            (dropped.append(item.ready) if item.ready.run in gone else live.items.append(item))
        return live, dropped

    def stack(self) -> dict[str, np.ndarray]:
        """Each input, the items' arrays concatenated along the batch dimension."""
        names = self.items[0].ready.inputs
        return {n: np.concatenate([i.ready.inputs[n] for i in self.items], axis=self.dim)
                for n in names}

    def split(self, outputs: Mapping[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
        """Each item's rows of every output; ValueError when an output does not have the
        batch's rows at the batch dimension (the call did not keep rows apart)."""
        total, dim = self.rows, self.dim
        for name, arr in outputs.items():
            if arr.ndim <= dim or arr.shape[dim] != total:
                raise ValueError(f"output {name!r} has shape {list(arr.shape)}, not {total} "
                                 f"rows at dim {dim}")
        cuts = np.cumsum([i.rows for i in self.items])[:-1]
        parts = {n: np.split(a, cuts, axis=dim) for n, a in outputs.items()}
        # dim 0 slices of a C-ordered array are contiguous already; others are made so
        fix = np.ascontiguousarray if dim else (lambda a: a)
        return [{n: fix(p[k]) for n, p in parts.items()} for k in range(len(self.items))]


class Batcher:
    """Open batches of one function, by what makes items stackable; oldest first."""

    def __init__(self, function: str, policy: BatchingSpec) -> None:
        self.function, self.policy = function, policy
        self.delay_s = policy.max_delay_ms / 1000.0
        self.groups: dict[Hashable, Batch] = {}  # insertion order is first_at order

    def __len__(self) -> int:
        return sum(len(b.items) for b in self.groups.values())

    def add(self, ready: Ready, now: float) -> list[Batch]:
        """Take a ready node; return the batches to run now (possibly none)."""
        fit = self._fit(ready)
        cap = self.policy.max_batch
        if fit is None or fit[0] >= cap:  # cannot batch, or fills a batch alone
            return [self._batch([Item(ready, fit[0] if fit else 0, now)], now)]
        rows, key = fit
        out: list[Batch] = []
        group = self.groups.get(key)
        if group is not None and group.rows + rows > cap:
            out.append(self.groups.pop(key))
            group = None
        if group is None:
            if len(self.groups) >= MAX_GROUPS:
                out.append(self.groups.pop(next(iter(self.groups))))
            group = self.groups[key] = self._batch([], now)
        group.items.append(Item(ready, rows, now))
        if group.rows >= cap or len(group.items) >= cap:
            out.append(self.groups.pop(key))
        return out

    def due(self, now: float) -> list[Batch]:
        """The batches whose first item has waited max_delay_ms."""
        keys = [k for k, b in self.groups.items() if now >= b.first_at + self.delay_s]
        return [self.groups.pop(k) for k in keys]

    def deadline(self) -> float | None:
        """When the oldest open batch is due (monotonic seconds), or None."""
        first = next(iter(self.groups.values()), None)
        return None if first is None else first.first_at + self.delay_s

    def wake_ms(self, timeout_ms: int, now: float) -> int:
        """A poll timeout no later than the oldest open batch's deadline."""
        due = self.deadline()
        if due is None:
            return timeout_ms
        return max(0, min(timeout_ms, math.ceil((due - now) * 1000)))

    def _batch(self, items: list[Item], now: float) -> Batch:
        return Batch(self.function, self.policy.dim, items, now)

    def _fit(self, ready: Ready) -> tuple[int, Hashable] | None:
        """(rows, what a batch-mate must share), or None when the item cannot stack."""
        dim, rows = self.policy.dim, -1
        parts = []
        for name in sorted(ready.inputs):
            a = ready.inputs[name]
            if a.ndim <= dim or (rows >= 0 and a.shape[dim] != rows):
                return None
            rows = a.shape[dim]
            parts.append((name, a.dtype.str, a.shape[:dim] + a.shape[dim + 1:]))
        if rows < 0:
            return None
        try:
            args = json.dumps(ready.plan.args, sort_keys=True)
        except (TypeError, ValueError):
            return None
        return rows, (tuple(parts), args)
