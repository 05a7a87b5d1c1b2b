"""Which samples each epoch trains on, and in which order: the steering of fine_tune/distill.

One of, per call:

- nothing: a seeded shuffle (numpy PCG64, one stream across epochs; its state after an
  epoch is what a checkpoint keeps, so a resumed run draws the orders it would have drawn);
- ``order``: one index array for every epoch, a sequence of them (one per epoch, 2-d
  array or list), or ``callable(epoch) -> indices`` (epochs count from 1);
- ``sampler``: an iterable of indices (re-iterated each epoch; ``set_epoch(epoch)`` is
  called when it has one, as torch's DistributedSampler wants) or of index batches;
- ``batches``: an iterable of ``(x, y)`` (a list or a re-iterable loader, iterated once
  per epoch) or ``callable(epoch) -> iterable``; x and y are then not needed.

Bad input is a typed error naming where: a non-integer order is DTypeMismatchError, an
index out of range UnknownTargetError (no such sample), a batch of the wrong shape
ShapeMismatchError. numpy only: torch tensors and loaders work through ``np.asarray``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from typing import Any

import numpy as np

from interop_runtime.wire.errors import (
    BadArgumentError,
    DTypeMismatchError,
    ShapeMismatchError,
    UnknownTargetError,
)

Batch = tuple[np.ndarray, np.ndarray]
Order = np.ndarray | Sequence[Any] | Callable[[int], Any]
Batches = Iterable[Any] | Callable[[int], Iterable[Any]]


def check_indices(idx: Any, n: int, where: str) -> np.ndarray:
    """``idx`` as a 1-d int64 array of sample indices in [0, n), or a typed error."""
    arr = np.asarray(idx)
    if arr.size == 0:
        raise ShapeMismatchError(f"{where} is empty: an epoch needs at least one sample",
                                 field=where)
    if arr.dtype.kind not in "iu":
        raise DTypeMismatchError(f"{where} must hold integer sample indices, got {arr.dtype}",
                                 field=where)
    if arr.ndim != 1:
        raise ShapeMismatchError(f"{where} must be 1-d, got shape {arr.shape}", field=where)
    bad = np.flatnonzero((arr < 0) | (arr >= n))
    if bad.size:
        pos = int(bad[0])
        raise UnknownTargetError(f"{where}[{pos}] is {int(arr[pos])}, but the data has {n} "
                                 f"samples (indices 0..{n - 1})", field=f"{where}[{pos}]")
    return arr.astype(np.int64, copy=False)


def features(x: Any, where: str = "x") -> np.ndarray:
    """Features as the workers' signatures want them: contiguous float32."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise DTypeMismatchError(f"{where} must be numeric, got {arr.dtype}", field=where)
    if arr.ndim < 1:
        raise ShapeMismatchError(f"{where} must have a batch dimension, got a scalar",
                                 field=where)
    return np.ascontiguousarray(arr, dtype=np.float32)


def labels(y: Any, batch: int, where: str = "y") -> np.ndarray:
    """Class ids as int64 (n,), for a batch of ``batch`` samples."""
    arr = np.asarray(y)
    if arr.shape != (batch,):
        raise ShapeMismatchError(f"{where} has shape {arr.shape} but x has {batch} samples: "
                                 f"labels must be ({batch},)", field=where)
    if arr.dtype.kind not in "iu" and not (arr.dtype.kind == "f" and
                                           np.all(arr == np.round(arr))):
        raise DTypeMismatchError(f"{where} must hold integer class ids, got {arr.dtype}",
                                 field=where)
    return np.ascontiguousarray(arr, dtype=np.int64)


def _fits(shape: tuple[int, ...], spec: Sequence[int | None] | None) -> bool:
    if spec is None:
        return True
    return len(shape) == len(spec) and all(s is None or s == d for d, s in zip(shape, spec,
                                                                              strict=True))


class Plan:
    """The batches of each epoch, checked; ``state``/``restore`` carry what resuming needs."""

    kind = "plan"

    def epoch(self, epoch: int) -> tuple[int | None, Iterator[Batch]]:
        """(number of batches if known, the batches) of ``epoch`` (from 1)."""
        raise NotImplementedError

    def check(self, first: int, last: int) -> None:
        """Refuse bad input for epochs first..last before any of them trains, where it can."""

    def state(self) -> dict[str, Any]:
        return {"kind": self.kind}

    def restore(self, state: dict[str, Any]) -> None:
        if state.get("kind") != self.kind:
            raise BadArgumentError(f"the checkpoint's order is {state.get('kind')!r}, this run's is "
                             f"{self.kind!r}: resume with the same kind of order")


class IndexPlan(Plan):
    """Batches cut from (x, y) by index: shuffle, explicit order, callable or sampler."""

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, *, seed: int,
                 order: Order | None = None, sampler: Iterable[Any] | None = None) -> None:
        if batch_size < 1:
            raise BadArgumentError(f"batch_size must be >= 1, got {batch_size}")
        if order is not None and sampler is not None:
            raise BadArgumentError("give order or sampler, not both")
        self.x, self.y, self.batch_size, self.seed = x, y, batch_size, seed
        self.order, self.sampler = order, sampler
        self.kind = ("shuffle" if order is None and sampler is None else
                     "sampler" if sampler is not None else
                     "callable" if callable(order) else "order")
        self.rng = np.random.default_rng(seed)

    def _cuts(self, epoch: int) -> list[np.ndarray]:
        n = len(self.x)
        if self.kind == "shuffle":
            flat = self.rng.permutation(n)
        elif self.kind == "callable":
            assert callable(self.order)
            flat = check_indices(self.order(epoch), n, f"order({epoch})")
        elif self.kind == "order":
            flat = check_indices(self._explicit(epoch), n, f"order[{epoch - 1}]")
        else:
            return self._sampled(epoch, n)
        return [flat[i:i + self.batch_size] for i in range(0, len(flat), self.batch_size)]

    def _explicit(self, epoch: int) -> Any:
        order = self.order
        if isinstance(order, np.ndarray) and order.ndim == 1:
            return order  # one order for every epoch
        assert order is not None and not callable(order)
        if epoch > len(order):
            raise ShapeMismatchError(f"order has {len(order)} epoch(s) of indices, epoch "
                                     f"{epoch} needs one more", field="order")
        return order[epoch - 1]

    def _sampled(self, epoch: int, n: int) -> list[np.ndarray]:
        set_epoch = getattr(self.sampler, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)
        assert self.sampler is not None
        items = list(self.sampler)
        where = f"sampler (epoch {epoch})"
        if items and np.ndim(items[0]) > 0:  # a batch sampler: it cut the batches itself
            return [check_indices(b, n, f"{where} batch {i}") for i, b in enumerate(items)]
        flat = check_indices(np.asarray(items, dtype=np.int64) if items else items, n, where)
        return [flat[i:i + self.batch_size] for i in range(0, len(flat), self.batch_size)]

    def check(self, first: int, last: int) -> None:
        if self.kind == "order":  # explicit: every epoch's indices are known now
            for epoch in range(first, last + 1):
                check_indices(self._explicit(epoch), len(self.x), f"order[{epoch - 1}]")

    def epoch(self, epoch: int) -> tuple[int | None, Iterator[Batch]]:
        cuts = self._cuts(epoch)  # all checked before the first step of the epoch
        return len(cuts), ((self.x[idx], self.y[idx]) for idx in cuts)

    def state(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        if self.kind == "shuffle":  # after this epoch's draw: the next epoch's state
            out.update(seed=self.seed, rng=self.rng.bit_generator.state)
        return out

    def restore(self, state: dict[str, Any]) -> None:
        super().restore(state)
        if self.kind != "shuffle":
            return  # explicit and callable orders depend on the epoch only
        if state.get("seed") != self.seed:
            raise BadArgumentError(f"the checkpoint was trained with seed {state.get('seed')}, not "
                             f"{self.seed}: resume with the same seed")
        rng = state.get("rng")
        if not isinstance(rng, dict) or rng.get("bit_generator") != "PCG64":
            raise BadArgumentError("the checkpoint's order.rng is not a PCG64 state")
        try:
            self.rng.bit_generator.state = rng
        except (TypeError, ValueError, KeyError) as exc:
            raise BadArgumentError(f"the checkpoint's order.rng cannot be restored: {exc}") from None


class BatchPlan(Plan):
    """Batches from the caller: every (x, y) is checked against the worker's x signature."""

    kind = "batches"

    def __init__(self, batches: Batches, x_shape: Sequence[int | None] | None) -> None:
        self.batches, self.x_shape = batches, x_shape
        self._served = 0

    def epoch(self, epoch: int) -> tuple[int | None, Iterator[Batch]]:
        source = self.batches(epoch) if callable(self.batches) else self.batches
        it = iter(source)  # once: a loader starts its workers on each iter()
        one_shot = it is source  # a generator: it can serve one epoch only
        if one_shot and self._served:
            raise BadArgumentError(f"batches is a one-shot iterator and served epoch {self._served}; "
                             f"for epoch {epoch} pass a list, a re-iterable loader or a "
                             "callable(epoch) returning the batches")
        self._served = epoch
        count = len(source) if isinstance(source, Sized) else None
        return count, self._checked(epoch, it)

    def _checked(self, epoch: int, source: Iterable[Any]) -> Iterator[Batch]:
        got = 0
        for i, item in enumerate(source):
            where = f"batches[epoch {epoch}][{i}]"
            if not isinstance(item, Sequence | tuple) or len(item) != 2:
                raise ShapeMismatchError(f"{where} is not an (x, y) pair", field=where)
            x = features(item[0], f"{where}.x")
            if not _fits(x.shape, self.x_shape):
                raise ShapeMismatchError(f"{where}.x has shape {x.shape} but the worker takes "
                                         f"x {tuple(self.x_shape or ())} (None: any)",
                                         field=f"{where}.x")
            got += 1
            yield x, labels(item[1], len(x), f"{where}.y")
        if not got:
            raise BadArgumentError(f"batches gave no batches for epoch {epoch}")


def make_plan(x: Any, y: Any, *, batch_size: int, seed: int, order: Order | None,
              sampler: Iterable[Any] | None, batches: Batches | None,
              x_shape: Sequence[int | None] | None) -> tuple[Plan, int | None]:
    """The plan for one call, and the number of samples when known (None for batches)."""
    if batches is not None:
        if order is not None or sampler is not None or x is not None or y is not None:
            raise BadArgumentError("batches replaces x, y, order and sampler: give it alone")
        return BatchPlan(batches, x_shape), None
    if x is None or y is None:
        raise BadArgumentError("give x and y (or batches)")
    xs = features(x)
    return IndexPlan(xs, labels(y, len(xs)), batch_size, seed=seed, order=order,
                     sampler=sampler), len(xs)
