"""Fuzz the message handlers of a live cluster: well-formed headers of every kind, with
adversarial field values, sent by a rogue that holds allow-listed keys.

``python -m bench.fuzz_handlers --messages 100000`` is the long run;
``tests/test_fuzz_handlers.py`` runs a quick profile of the same loop in CI.

What it does:

- builds one Hypothesis strategy per message kind from ``protocol/schema.json`` (the
  ``oneOf`` entries, ``$defs`` resolved), with ``hypothesis_jsonschema.from_schema`` for
  every leaf value. Objects are assembled here: hypothesis-jsonschema 0.23.1 builds them
  with a private Hypothesis API (``many.more()``) that current Hypothesis no longer has;
- twists field values: huge, negative and zero numbers, NaN and infinities, long and
  unicode strings, names of the cluster's real workers, graphs, nodes, runs and keys mixed
  with random ones, empty, deep and wide free-form maps, bin and ext values;
- attaches tensors whose ``tensors`` metadata matches the frames (byte lengths computed
  from dtype and shape, at most 64 KiB in all), or deliberately does not;
- sends them to the coordinator with the client key, and to w2's inbox with the client key
  and with w1's key, while an honest client runs graph ``chain`` alongside;
- after every batch: every process alive, every answer a typed REPLY or ERROR (a code of
  ``x-error-codes``), honest runs correct; RSS of each process before and after.

Requests the authority table lets a client key make and that legitimately change shared
state (GRAPH register/drop of ``chain``) are aimed at decoys so that the honest runs keep
meaning something; so is PARAM set, which a client key may send and which changes a
worker's weights (``--forward-privileged`` aims it at the real workers too). CONTROL that
only the coordinator may send (shutdown, pause, unload, plan, ...) goes to the real workers:
the coordinator refuses to forward it (``tests/test_fuzz_handlers.py::
test_client_key_cannot_stop_a_worker_through_the_coordinator``, found by this fuzzer).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import zmq
import zmq.auth
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy
from hypothesis_jsonschema import from_schema

from interop_runtime import ClusterSpec, Graph, LocalCluster, ProtocolError
from interop_runtime.client.client import Client
from interop_runtime.client.results import RunResult
from interop_runtime.client.testing import dial, inbox, numpy_worker
from interop_runtime.wire.codec import decode
from interop_runtime.wire.dtypes import STRING, itemsize, to_numpy_dtype
from interop_runtime.wire.strings import encode_strings

from .common import rss_bytes

ROOT = Path(__file__).resolve().parent.parent
SCHEMA: dict[str, Any] = json.loads((ROOT / "protocol" / "schema.json").read_text())
PROTOCOL_VERSION: int = SCHEMA["x-protocol-version"]
ERROR_CODES: frozenset[str] = frozenset(SCHEMA["x-error-codes"])
DTYPES: list[str] = list(SCHEMA["x-dtypes"])

INT_MIN, INT_MAX = -(2**63), 2**64 - 1  # what msgpack can encode
TENSOR_BYTES = 16 << 10  # per tensor
MESSAGE_TENSOR_BYTES = 64 << 10  # all of one message's tensors
MIB = 1 << 20

# where a fuzz message goes, and as whom
COORDINATOR = "coordinator"  # the coordinator's ROUTER, with the client's key
INBOX_AS_CLIENT = "w2-inbox-as-client"  # w2's inbox, with the client's key
INBOX_AS_W1 = "w2-inbox-as-w1"  # w2's inbox, with w1's key (the feeder of chain.b.x)
ROUTES = (COORDINATOR, INBOX_AS_CLIENT, INBOX_AS_W1)

# CONTROL actions and PARAM ops that only the coordinator may send a worker (SPEC 13.3)
COORDINATOR_ONLY_ACTIONS = frozenset({"plan", "load", "unload", "shutdown", "pause", "resume",
                                      "cancel"})
COORDINATOR_ONLY_OPS = frozenset({"set"})

NASTY_STRINGS = [
    "", " ", "\x00", "a\x00b", "w1 ", " w1", "W1", "w1\u200b", "w1\n", "\u202ew1", "𝔴1", "🦀",
    "../../etc/passwd", "%s%n%x", "{}", "[]", "null", "NaN", "chain.a", "a.y -> b.x", "a.", ".x",
    "coordinator", "client", "*", "tcp://0.0.0.0:1", "tcp://*:5555", "tcp://127.0.0.1:9",
    "ipc:///tmp/fuzz", "inproc://fuzz", "run~1", "~", "\ud7ff\ue000\uffff", "\U0010ffff",
]
EXTREME_INTS = [0, 1, -1, 2**31 - 1, 2**31, -(2**31) - 1, 2**53 + 1, 2**63 - 1, 2**63, -(2**63),
                2**64 - 1, 10, 11, 604800, 604801]
EXTREME_FLOATS = [0.0, -0.0, math.nan, math.inf, -math.inf, 5e-324, 1e-300, 1e308, -1.0,
                  604800.0, 604800.000001, 1e-9, 0.5]


# --- the names of the cluster under test ----------------------------------------------------

@dataclass
class Pools:
    """Real names of the cluster under test, mixed into drawn fields so that messages reach
    past the "no such thing" checks. ``runs`` and ``ids`` fill up while the fuzzer runs:
    run ids and message ids the rogue itself used (never the honest client's)."""

    workers: list[str] = field(default_factory=lambda: ["w1", "w2"])
    graphs: list[str] = field(default_factory=lambda: ["chain"])
    nodes: list[str] = field(default_factory=lambda: ["a", "b"])
    ports: list[str] = field(default_factory=lambda: ["x", "y"])
    functions: list[str] = field(default_factory=lambda: ["scale", "add_const"])
    endpoints: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    runs: deque[str] = field(default_factory=lambda: deque(["r1"], maxlen=64))
    ids: deque[str] = field(default_factory=lambda: deque(["m1"], maxlen=64))

    @classmethod
    def from_cluster(cls, cluster: LocalCluster) -> Pools:
        pools = cls()
        pools.endpoints = [cluster.address, *(inbox(cluster, w) for w in pools.workers)]
        if cluster.spec.coordinator.curve:
            pools.keys = [zmq.auth.load_certificate(str(cluster.keys_dir / f"{n}.key"))[0].decode()
                          for n in ("coordinator", "client", *pools.workers)]
        return pools

    def static(self) -> list[str]:
        return [*self.workers, *self.graphs, *self.nodes, *self.ports, *self.functions,
                *self.endpoints, *self.keys]


@dataclass(frozen=True)
class Live:
    """A name from a pool that fills up while the fuzzer runs (``Pools.runs``, ``.ids``),
    resolved just before sending: drawing it must not depend on that state, or Hypothesis
    sees the same choices give different data."""

    pool: str
    index: int


def _live(pool: str) -> SearchStrategy[Live]:
    return st.builds(Live, st.just(pool), st.integers(0, 1 << 16))


def resolve(value: Any, pools: Pools) -> Any:
    """``value`` with every Live replaced by the name it stands for now."""
    if isinstance(value, Live):
        names: Sequence[str] = getattr(pools, value.pool)
        return names[value.index % len(names)] if names else ""
    if isinstance(value, dict):
        return {resolve(k, pools): resolve(v, pools) for k, v in value.items()}
    if isinstance(value, list) and any(isinstance(v, (Live, dict, list)) for v in value):
        return [resolve(v, pools) for v in value]
    return value


# --- field values -------------------------------------------------------------------------

def _repeat(seed: str, n: int) -> str:
    return (seed * (n // len(seed) + 1))[:n]


long_strings = st.builds(_repeat, st.text(min_size=1, max_size=3),
                         st.sampled_from([129, 257, 4096, 65536, 400_000]))
unicode_strings = st.text(st.characters(codec="utf-8"), min_size=1, max_size=24)
extreme_ints = st.sampled_from(EXTREME_INTS) | st.integers(INT_MIN, INT_MAX)
extreme_floats = st.sampled_from(EXTREME_FLOATS) | st.floats()
wrong_types = st.sampled_from([None, "3", 3, 2.5, True, [], {}, [None], {"": None}])

json_leaves = (st.none() | st.booleans() | st.integers(INT_MIN, INT_MAX)
               | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12))
plain_values = st.recursive(json_leaves, lambda c: st.lists(c, max_size=4)
                            | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=10)
# what free-form maps must refuse: bin, ext, non-finite numbers, non-string keys
poison_values = st.sampled_from([b"\x00bin", bytearray(b"x"), msgpack.ExtType(5, b"ext"),
                                 msgpack.Timestamp(1, 0), math.nan, math.inf, -math.inf,
                                 {1: "int key"}, {"k": {2: "nested int key"}}])


def _nest(depth: int, leaf: Any = 0) -> Any:
    value = leaf
    for i in range(depth):
        value = [value] if i % 2 else {"d": value}
    return value


deep_values = st.builds(_nest, st.sampled_from([30, 31, 32, 33, 40, 200]), json_leaves)
wide_values = st.sampled_from([1000, 99_990, 100_001, 150_000]).map(lambda n: [0] * n)


def free_form(key_names: SearchStrategy[str]) -> SearchStrategy[dict[str, Any]]:
    """Free-form maps (args, body, info, spec): empty, plain, deep, wide, poisoned."""
    keys = key_names | st.text(max_size=8)
    return st.one_of(
        st.just({}),
        st.dictionaries(keys, plain_values, max_size=5),
        st.dictionaries(keys, deep_values | wide_values, min_size=1, max_size=1),
        st.dictionaries(keys, plain_values | poison_values, min_size=1, max_size=3),
    )


def function_args() -> SearchStrategy[dict[str, Any]]:
    """Keyword arguments for scale(factor) and add_const(value), and some they do not take.
    Lists stay short: numpy would broadcast them against the input."""
    number = extreme_floats | extreme_ints | st.text(max_size=6) | st.lists(
        st.floats(allow_nan=False, width=32), max_size=4) | wrong_types
    return st.fixed_dictionaries({}, optional={"factor": number, "value": number,
                                               "x": plain_values, "params": plain_values,
                                               "bogus": plain_values})


# --- headers from the schema -----------------------------------------------------------

def _bounded(schema: dict[str, Any]) -> dict[str, Any]:
    """A leaf schema whose integers msgpack can encode."""
    if schema.get("type") == "integer":
        return {**schema, "minimum": max(schema.get("minimum", INT_MIN), INT_MIN),
                "maximum": min(schema.get("maximum", INT_MAX), INT_MAX)}
    if schema.get("type") == "array" and isinstance(schema.get("items"), dict):
        return {**schema, "items": _bounded(schema["items"])}
    if "anyOf" in schema:
        return {**schema, "anyOf": [_bounded(s) for s in schema["anyOf"]]}
    return schema


def _types(schema: dict[str, Any], defs: dict[str, Any]) -> set[str]:
    if "$ref" in schema:
        return _types(defs[schema["$ref"].rsplit("/", 1)[1]], defs)
    out = {schema["type"]} if isinstance(schema.get("type"), str) else set()
    for sub in schema.get("anyOf", []) + schema.get("oneOf", []):
        out |= _types(sub, defs)
    return out


@st.composite
def _twisted(draw: st.DrawFn, header: SearchStrategy[dict[str, Any]],
             twists: dict[str, SearchStrategy[Any]]) -> dict[str, Any]:
    """A header drawn from the schema, with up to three fields given adversarial values."""
    out = dict(draw(header))
    for _ in range(draw(st.sampled_from([0, 1, 0, 2, 3]))):
        key = draw(st.sampled_from(sorted(twists)))
        out[key] = draw(twists[key])
    return out


class HeaderStrategies:
    """One strategy per message kind, from protocol/schema.json, with adversarial twists."""

    def __init__(self, pools: Pools, schema: dict[str, Any] = SCHEMA) -> None:
        self.pools = pools
        self.defs: dict[str, Any] = schema["$defs"]
        static = pools.static()
        any_name = st.sampled_from(static) | _live("runs") | _live("ids")
        # real names by field, so that e.g. a "graph" field often names a real graph
        self.names: dict[str, SearchStrategy[Any]] = {  # str, or a Live name
            "graph": st.sampled_from(pools.graphs), "run": _live("runs"),
            "node": st.sampled_from(pools.nodes), "worker": st.sampled_from(pools.workers),
            "dst": st.sampled_from([*pools.workers, "coordinator"]),
            "src": st.sampled_from([*pools.workers, "coordinator", "client"]),
            "name": st.sampled_from([*pools.workers, *pools.graphs, *pools.ports]),
            "function": st.sampled_from(pools.functions),
            "endpoint": st.sampled_from(pools.endpoints or ["tcp://127.0.0.1:1"]),
            "public_key": st.sampled_from(pools.keys or ["0" * 40]),
            "reply_to": _live("ids"), "id": _live("ids"),
            "session": _live("ids"), "epoch": _live("ids"),
            "input": st.sampled_from(pools.ports), "field": st.sampled_from(pools.ports),
            "code": st.sampled_from(sorted(ERROR_CODES)),
            "dtype": st.sampled_from(DTYPES), "plugin": st.just("numpy"),
        }
        self.any_name = any_name
        self.kinds: dict[str, SearchStrategy[dict[str, Any]]] = {}
        for entry in schema["oneOf"]:
            sub = self._resolve(entry)
            kind = sub["properties"]["kind"]["const"]
            self.kinds[kind] = self._object(sub, owner=sub["title"], top=True).map(
                lambda h, k=kind: {**h, "v": PROTOCOL_VERSION, "kind": k})
        # the schema's own TensorMeta lists, random and rarely consistent with any frames
        self.tensor_metas = self.build(schema["$defs"]["DataMsg"]["properties"]["tensors"],
                                       "tensors", "Header")

    def _resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            schema = self.defs[schema["$ref"].rsplit("/", 1)[1]]
        return schema

    def _name(self, key: str) -> SearchStrategy[Any]:
        return self.names.get(key, self.any_name)

    def build(self, schema: dict[str, Any], key: str, owner: str) -> SearchStrategy[Any]:
        schema = self._resolve(schema)
        branches = schema.get("anyOf") or schema.get("oneOf")
        if branches:
            return st.one_of([self.build(b, key, owner) for b in branches])
        kind = schema.get("type")
        if kind == "object":
            if schema.get("properties"):
                return self._object(schema, owner=schema.get("title", owner))
            extra = schema.get("additionalProperties", True)
            if isinstance(extra, dict):  # a map of typed values (GraphSpec.nodes, routes)
                return st.dictionaries(self._name(key) | st.text(max_size=8),
                                       self.build(extra, key, owner), max_size=3)
            return self._free_form(key, owner)
        if kind == "array" and "object" in _types(schema.get("items", {}), self.defs):
            return st.lists(self.build(schema["items"], key, owner),
                            min_size=schema.get("minItems", 0),
                            max_size=min(schema.get("maxItems", 3), 3))
        leaf = from_schema(_bounded(schema))
        if kind == "string" and "enum" not in schema and "const" not in schema \
                and key in self.names:
            return self.names[key] | leaf  # real names first: they get past "no such thing"
        return leaf

    def _object(self, schema: dict[str, Any], owner: str, *, top: bool = False
                ) -> SearchStrategy[dict[str, Any]]:
        props: dict[str, Any] = schema["properties"]
        required = set(schema.get("required", []))
        fields = {k: self._field(k, p, owner, top=top) for k, p in props.items()}
        strategy = st.fixed_dictionaries({k: s for k, s in fields.items() if k in required},
                                         optional={k: s for k, s in fields.items()
                                                   if k not in required})
        if top:  # a valid header, then 0-3 of its fields twisted: many headers stay valid
            twists = {k: self._twist(k, p) for k, p in props.items() if k not in ("kind", "v")}
            strategy = _twisted(strategy, twists)
        if schema.get("additionalProperties") is False:
            return strategy
        # unknown fields: a receiver ignores them (and must still refuse bin and ext)
        unknown = st.dictionaries(st.sampled_from(["x_extra", "zz", "v2", "Kind"]),
                                  plain_values | poison_values, max_size=1)
        return st.builds(lambda known, more: {**more, **known}, strategy, unknown)

    def _field(self, key: str, schema: dict[str, Any], owner: str, *, top: bool = False
               ) -> SearchStrategy[Any]:
        if key in ("kind", "v"):
            return st.just(None)  # set per kind after drawing
        if key == "tensors" and top:
            return st.just([])  # messages() attaches tensors (schema-drawn ones too, at times)
        base = self.build(schema, key, owner)
        if top:
            return base
        if owner == "TensorMeta" and key in ("dtype", "shape", "frame"):
            return base | self._twist(key, schema)  # the schema-drawn tensors are noise anyway
        # inside typed maps: mostly the schema's own values, at times a twisted one
        return st.one_of(base, base, base, self._twist(key, schema))

    def _twist(self, key: str, schema: dict[str, Any]) -> SearchStrategy[Any]:
        types = _types(schema, self.defs)
        options: list[SearchStrategy[Any]] = []
        if "string" in types:
            options += [self._name(key), self._name(key), st.sampled_from(NASTY_STRINGS),
                        long_strings, unicode_strings]
        if "integer" in types:
            options += [extreme_ints]
        if "number" in types:
            options += [extreme_floats, extreme_ints]
        if "array" in types:
            options += [st.just([]), st.lists(self._name(key), min_size=1, max_size=40),
                        st.lists(extreme_ints, max_size=33)]
        if "object" in types:
            options += [self._free_form(key, "")]
        return st.one_of([*options, wrong_types])  # one_of favours its first branches

    def _free_form(self, key: str, owner: str) -> SearchStrategy[dict[str, Any]]:
        options = [free_form(self._name(key))]
        if owner == "ControlMsg" and key == "args":
            plan = self.build(self.defs["WorkerPlan"], "plan", "WorkerPlan")
            options += [function_args(), function_args(),
                        st.fixed_dictionaries({"plan": plan | plain_values})]
        elif owner == "GraphMsg" and key == "spec":
            options += [self.build(self.defs["GraphSpec"], "spec", "GraphSpec"),
                        graph_specs(self.pools), graph_specs(self.pools)]
        elif key == "args":  # a node's args
            options += [function_args()]
        return st.one_of(options)


@st.composite
def graph_specs(draw: st.DrawFn, pools: Pools) -> dict[str, Any]:
    """Graphs over the real workers and functions, often valid, sometimes not quite: a
    chain of one to three nodes, with random twists on names and wiring."""
    names = st.sampled_from([*pools.workers, "w9", ""])
    n = draw(st.integers(1, 3))
    nodes = {}
    for i in range(n):
        node = draw(st.sampled_from(["a", "b", "c"][i:i + 1] + ["a", "1bad", "n-x", "a.b"]))
        nodes[node] = {"worker": draw(names), "function": draw(st.sampled_from(
            [*pools.functions, "identity", "nope"])), "args": draw(function_args())}
        if draw(st.booleans()):
            nodes[node]["retries"] = draw(st.sampled_from([0, 1, 10, 11, -1]))
    order = list(nodes)
    edges: list[Any] = [f"{u}.y -> {v}.x" for u, v in zip(order, order[1:])]
    if draw(st.booleans()):
        edges = [{"src": f"{u}.y", "dst": f"{v}.x"} for u, v in zip(order, order[1:])]
    if draw(st.integers(0, 4)) == 0 and order:
        edges.append(f"{order[-1]}.y -> {order[0]}.x")  # a cycle
    spec = {"name": draw(st.sampled_from(["fz", "fz2", *pools.graphs]) | st.text(max_size=6)),
            "nodes": nodes, "edges": edges,
            "inputs": {"x": draw(st.sampled_from([f"{order[0]}.x", [f"{order[0]}.x"], [], "x"]))},
            "outputs": {"y": draw(st.sampled_from([f"{order[-1]}.y", f"{order[0]}.y", "nope.y"]))}}
    if draw(st.integers(0, 5)) == 0:
        spec["extra"] = 1  # GraphSpec forbids unknown fields
    return spec


# --- tensors ------------------------------------------------------------------------------

def _fit(shape: list[int], size: int, budget: int) -> list[int]:
    """Shrink dims until prod(shape) * size fits the byte budget."""
    shape = list(shape)
    while math.prod(shape) * size > budget:
        i = max(range(len(shape)), key=lambda j: shape[j])
        shape[i] //= 2
    return shape


def _strings(shape: list[int], seed: int) -> bytes:
    """A valid string tensor's frame: short non-ASCII words, some empty."""
    count = math.prod(shape)
    rng = np.random.default_rng(seed)
    words = ["", "a", "é", "日本", "🦀x"]
    values = np.array([words[i] for i in rng.integers(0, len(words), count)], dtype=object)
    return encode_strings(values.reshape(shape) if shape else values.reshape(()), "fuzz")


def _fill(kind: str, dtype: str, shape: list[int], seed: int) -> bytes:
    count = math.prod(shape)
    nbytes = count * itemsize(dtype)
    if kind == "random":
        return random.Random(seed).randbytes(nbytes)
    if kind == "ff":
        return b"\xff" * nbytes  # NaN, -1, the largest unsigned, a bool of 255
    np_dtype = to_numpy_dtype(dtype)
    if kind == "special" and np_dtype.kind in "fc":
        values = np.array([math.nan, math.inf, -math.inf, -0.0, 1e38], dtype=np.float64)
        with np.errstate(over="ignore"):  # 1e38 is inf in float16: that is the point
            return np.resize(values, count).astype(np_dtype).tobytes()
    return np.arange(count).astype(np_dtype).tobytes()


@dataclass
class Tensors:
    metas: list[dict[str, Any]]
    buffers: list[bytes]
    mode: str  # "consistent", or the way it is not


@st.composite
def consistent_tensors(draw: st.DrawFn, pools: Pools, min_size: int = 0) -> Tensors:
    """0-3 tensors whose metadata matches their frames, 64 KiB at most in all; frames in
    canonical order or shuffled (both valid)."""
    n = draw(st.integers(min_size, 3))
    metas: list[dict[str, Any]] = []
    buffers: list[bytes] = []
    budget = MESSAGE_TENSOR_BYTES
    for i in range(n):
        name = draw(st.sampled_from(["x", "x", *pools.ports, "w", "a"]) | st.text(
            min_size=1, max_size=8))
        while any(m["name"] == name for m in metas):
            name = f"{name}~{i}"  # names are unique within a message
        dtype = draw(st.sampled_from(["float32", "float32", *DTYPES]))
        shape = draw(st.lists(st.integers(0, 64), max_size=4)
                     | st.sampled_from([[], [0], [4], [1, 4], [4096], [0, 1 << 40]]))
        if dtype == STRING:  # a well-formed string frame: offsets, then UTF-8 data
            shape = _fit(shape, 8, min(TENSOR_BYTES, budget) // 2)
            data = _strings(shape, draw(st.integers(0, 2**32 - 1)))
        else:
            shape = _fit(shape, itemsize(dtype), min(TENSOR_BYTES, budget))
            data = _fill(draw(st.sampled_from(["random", "ramp", "ff", "special"])), dtype,
                         shape, draw(st.integers(0, 2**32 - 1)))
        budget -= len(data)
        meta: dict[str, Any] = {"name": name, "dtype": dtype, "shape": shape, "frame": i + 1}
        if draw(st.integers(0, 3)) == 0:
            meta["device"] = draw(st.sampled_from(["cpu", "cuda:0", ""]) | unicode_strings)
            meta["layout"] = draw(st.sampled_from(["NCHW", "NHWC", ""]) | unicode_strings)
        metas.append(meta)
        buffers.append(data)
    if n > 1 and draw(st.booleans()):  # any frame order is valid if every frame is referenced
        order = draw(st.permutations(range(n)))
        buffers = [buffers[j] for j in order]
        for pos, j in enumerate(order):
            metas[j]["frame"] = pos + 1
    return Tensors(metas, buffers, "consistent")


def _chain_input(shape: list[int], fill: str, seed: int) -> Tensors:
    data = _fill(fill, "float32", shape, seed)
    return Tensors([{"name": "x", "dtype": "float32", "shape": shape, "frame": 1}], [data],
                   "consistent")


# the one input graph chain, scale and add_const take: these get past the input checks
chain_inputs = st.builds(_chain_input, st.lists(st.integers(0, 64), min_size=1, max_size=2),
                         st.sampled_from(["random", "ramp", "special"]), st.integers(0, 2**32 - 1))


def _corrupt(t: Tensors, how: str, arg: int) -> Tensors:
    """One deliberate inconsistency between metadata and frames (SPEC section 6, 11-17)."""
    metas = [dict(m) for m in t.metas]
    buffers = list(t.buffers)
    first = metas[0]
    frame = first["frame"] - 1
    if how == "short":
        buffers[frame] = buffers[frame][:-1] if buffers[frame] else b"\x00"
    elif how == "long":
        buffers[frame] = buffers[frame] + b"\x00" * (1 + arg % 15)
    elif how == "missing_frame":
        buffers.pop()
    elif how == "extra_frame":
        buffers.append(b"\x00" * (arg % 9))
    elif how == "dup_frame":  # a second tensor on the first one's frame
        metas.append({**first, "name": f"{first['name']}~dup"})
    elif how == "dup_name":  # a second tensor of the same name, on a frame of its own
        metas.append({**first, "frame": len(buffers) + 1})
        buffers.append(buffers[frame])
    elif how == "frame_index":
        first["frame"] = [0, -1, len(buffers) + 1, 1 << 20, (1 << 20) + 1, 2**63][arg % 6]
    elif how == "huge_dims":
        first["shape"] = [[2**62, 4], [2**32, 2**32], [2**63 - 1], [2**63], [-1], [2**31] * 3,
                          [1, 2**63 - 1], [1 << 30, 1 << 30]][arg % 8]
    elif how == "many_dims":  # the limit is 32
        first["shape"] = [1] * (33 + arg % 3)
    elif how == "zero_dim":
        first["shape"] = [0, 5]
        buffers[frame] = buffers[frame] or b"\x01"
    elif how == "dtype":
        first["dtype"] = ["float8", "object", "<f4", "", "Float32", "str", 5][arg % 7]
    elif how == "name":
        first["name"] = ["", "n" * 257, 7, None][arg % 4]
    elif how == "types":
        key, value = [("shape", "4"), ("frame", "1"), ("frame", 1.0), ("shape", [1.5]),
                      ("shape", None), ("frame", True), ("dtype", None)][arg % 7]
        first[key] = value
    elif how == "missing_key":
        del first[["name", "dtype", "shape", "frame"][arg % 4]]
    return Tensors(metas, buffers, how)


CORRUPTIONS = ["short", "long", "missing_frame", "extra_frame", "dup_frame", "dup_name",
               "frame_index", "huge_dims", "many_dims", "zero_dim", "dtype", "name", "types",
               "missing_key"]


def inconsistent_tensors(pools: Pools) -> SearchStrategy[Tensors]:
    return st.builds(_corrupt, consistent_tensors(pools, min_size=1), st.sampled_from(CORRUPTIONS),
                     st.integers(0, 1000))


# --- messages -------------------------------------------------------------------------------

@dataclass
class FuzzMessage:
    route: str
    header: dict[str, Any]
    buffers: list[bytes]
    tensors: str  # "schema" (drawn with the header), "consistent" or a corruption
    neutralized: bool = False

    @property
    def kind(self) -> str:
        return str(self.header.get("kind"))

    def frames(self) -> list[bytes]:
        return [msgpack.packb(self.header, use_bin_type=True), *self.buffers]

    def describe(self, limit: int = 2000) -> str:
        text = (f"route={self.route} tensors={self.tensors} header={self.header!r} "
                f"frames={[len(b) for b in self.buffers]} bytes")
        return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"

    def to_json(self) -> dict[str, Any]:
        frames = self.frames()
        return {"route": self.route, "tensors": self.tensors, "header": repr(self.header)[:20000],
                "frames_hex": [f.hex() if len(f) <= 4096 else f[:4096].hex() + "..."
                               for f in frames], "frame_lengths": [len(f) for f in frames]}


def _message(route: str, header: dict[str, Any], tensors: Tensors) -> FuzzMessage:
    return FuzzMessage(route, {**header, "tensors": tensors.metas}, tensors.buffers, tensors.mode)


def messages(pools: Pools, headers: HeaderStrategies | None = None) -> SearchStrategy[FuzzMessage]:
    """Every kind, to every route; tensors consistent with their frames (most often),
    absent, deliberately inconsistent, or the schema's random TensorMeta with random frames."""
    headers = headers or HeaderStrategies(pools)
    route = st.sampled_from([COORDINATOR, COORDINATOR, COORDINATOR, INBOX_AS_CLIENT, INBOX_AS_W1])
    schema_drawn = st.builds(lambda metas, frames: Tensors(metas, frames, "schema"),
                             headers.tensor_metas, st.lists(st.binary(max_size=32), max_size=3))
    # Hypothesis favours the first branches of one_of: the order sets the mix
    tensors = st.one_of(chain_inputs, st.just(Tensors([], [], "none")), consistent_tensors(pools),
                        inconsistent_tensors(pools), chain_inputs, schema_drawn)
    return st.builds(_message, route, st.one_of(list(headers.kinds.values())), tensors)


def neutralize(msg: FuzzMessage, pools: Pools, *, forward_privileged: bool) -> bool:
    """Aim requests that a client key may make, and that would legitimately change what the
    honest runs see, at decoys: GRAPH register/drop of a real graph, and (unless
    ``forward_privileged``) coordinator-only CONTROL/PARAM forwarded to a real worker.
    Returns whether the message was changed."""
    if msg.route != COORDINATOR:
        return False  # the inbox refuses all of these from any rogue key
    h = msg.header
    kind = h.get("kind")

    def named(key: str, names: Iterable[str]) -> bool:  # twisted values may be unhashable
        return isinstance(h.get(key), str) and h[key] in names

    if kind in ("control", "param") and not forward_privileged and named("dst", pools.workers):
        # coordinator-only CONTROL is refused by the coordinator now (SPEC 13.3), so it goes
        # to the real workers; PARAM set is a client's right and would change their weights
        if kind == "param" and named("op", COORDINATOR_ONLY_OPS):
            h["dst"] = f"decoy-{h['dst']}"
            return True
    if kind == "graph" and named("op", ("register", "drop")):
        changed = False
        spec = h.get("spec")
        if isinstance(spec, dict) and isinstance(spec.get("name"), str) \
                and spec["name"] in pools.graphs:
            h["spec"] = {**spec, "name": f"{spec['name']}-decoy"}
            changed = True
        if named("graph", pools.graphs):
            h["graph"] = f"{h['graph']}-decoy"
            changed = True
        return changed
    return False


# --- the session -------------------------------------------------------------------------

class StopFuzz(BaseException):
    """Ends the Hypothesis loop at once. A BaseException, so that Hypothesis neither replays
    the example (against a cluster that is already broken) nor shrinks it."""


@dataclass
class Failure:
    what: str
    culprit: FuzzMessage | None
    batch: list[FuzzMessage]
    fatal: bool = True  # a process died, wedged or served an honest run wrong
    count: int = 1  # how many times this kind of failure was seen (keep_going)

    def text(self) -> str:
        lines = [f"FAILURE{'' if self.count == 1 else f' (x{self.count})'}: {self.what}"]
        if self.culprit is not None:
            lines.append(f"  message: {self.culprit.describe()}")
        lines.append(f"  in a batch of {len(self.batch)} messages; the last ones:")
        lines += [f"    {m.describe(400)}" for m in self.batch[-5:]]
        return "\n".join(lines)


@dataclass
class Report:
    sent: Counter[str] = field(default_factory=Counter)  # kind
    routes: Counter[str] = field(default_factory=Counter)
    tensor_modes: Counter[str] = field(default_factory=Counter)
    answers: Counter[str] = field(default_factory=Counter)  # "reply" or the error code
    by_kind: Counter[tuple[str, str]] = field(default_factory=Counter)  # (asked kind, answer)
    rss_samples: list[tuple[int, dict[str, int]]] = field(default_factory=list)  # per batch
    neutralized: int = 0
    unencodable: int = 0
    honest_ok: int = 0
    honest_failed: int = 0
    batches: int = 0
    rss_before: dict[str, int] = field(default_factory=dict)  # process -> bytes
    rss_after: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    failures: list[Failure] = field(default_factory=list)
    signatures: dict[str, Failure] = field(default_factory=dict)  # kind of failure -> first

    @property
    def messages(self) -> int:
        return sum(self.sent.values())

    @property
    def untyped(self) -> int:
        return sum(n for code, n in self.answers.items() if code != "reply"
                   and code not in ERROR_CODES)

    def rss_growth(self) -> dict[str, int]:
        return {p: self.rss_after.get(p, 0) - b for p, b in self.rss_before.items()}

    def table(self) -> str:
        rate = self.messages / self.elapsed_s if self.elapsed_s else 0.0
        out = ["| messages sent | batches | honest runs ok / failed | neutralized | "
               "unencodable | elapsed | messages/s |", "|---|---|---|---|---|---|---|",
               f"| {self.messages} | {self.batches} | {self.honest_ok} / {self.honest_failed} | "
               f"{self.neutralized} | {self.unencodable} | {self.elapsed_s:.1f} s | {rate:.0f} |",
               "", "| kind | sent |", "|---|---|"]
        out += [f"| {k} | {n} |" for k, n in sorted(self.sent.items())]
        out += ["", "| route | sent |", "|---|---|"]
        out += [f"| {k} | {n} |" for k, n in sorted(self.routes.items())]
        out += ["", "| tensors | sent |", "|---|---|"]
        out += [f"| {k} | {n} |" for k, n in sorted(self.tensor_modes.items())]
        out += ["", "| answer | count |", "|---|---|"]
        out += [f"| {k}{'' if k == 'reply' or k in ERROR_CODES else ' (UNTYPED)'} | {n} |"
                for k, n in sorted(self.answers.items())]
        asked = sorted({k for k, _ in self.by_kind})
        answers = sorted({a for _, a in self.by_kind})
        out += ["", "answers by the kind of message they answer, matched by reply_to (? = none;"
                " the rogue reuses ids, so a few land on a later message of the same id):", "",
                "| asked \\ answer | " + " | ".join(answers) + " |",
                "|---|" + "---|" * len(answers)]
        out += [f"| {k} | " + " | ".join(str(self.by_kind[(k, a)] or "") for a in answers) + " |"
                for k in asked]
        # RSS at a quarter, half and three quarters of the run: growth that keeps going shows
        quarters = [self.rss_samples[int(len(self.rss_samples) * q)] for q in (0.25, 0.5, 0.75)
                    ] if len(self.rss_samples) >= 4 else []
        out += ["", "| process | RSS before | " + "".join(f"after {n} | " for n, _ in quarters)
                + "RSS after | growth |", "|---|---|" + "---|" * len(quarters) + "---|---|"]
        for proc, before in self.rss_before.items():
            after = self.rss_after.get(proc, 0)
            mid = "".join(f"{rss.get(proc, 0) / MIB:.1f} MiB | " for _, rss in quarters)
            out.append(f"| {proc} | {before / MIB:.1f} MiB | {mid}{after / MIB:.1f} MiB | "
                       f"{(after - before) / MIB:+.1f} MiB |")
        if self.failures:
            out += ["", *(f.text() for f in self.failures)]
        return "\n".join(out)


def honest_graph() -> Graph:
    """x -> w1.scale (2x) -> w2.add_const (+1) -> y"""
    g = Graph("chain").node("a", "w1", "scale").node("b", "w2", "add_const")
    return g.edge("a.y", "b.x").input("x", "a.x").output("y", "b.y")


def cluster_spec() -> ClusterSpec:
    return ClusterSpec.model_validate({
        "coordinator": {"heartbeat_s": 0.5},
        "workers": [numpy_worker("w1", "scale"), numpy_worker("w2", "add_const")]})


def expected_y(x: np.ndarray) -> np.ndarray:
    return (x * np.float32(2.0)).astype(np.float32) + np.float32(1.0)


class FuzzSession:
    """A rogue with three sockets, an honest client beside it, and the checks between
    batches. ``send`` raises StopFuzz at the first failure (with ``keep_going``, at the first
    fatal one: untyped answers are counted, one example kept per kind of failure)."""

    def __init__(self, cluster: LocalCluster, *, batch: int = 200, honest_every: int = 25,
                 forward_privileged: bool = False, run_timeout_s: float = 20.0,
                 keep_going: bool = False, pools: Pools | None = None) -> None:
        self.cluster = cluster
        self.pools = pools or Pools.from_cluster(cluster)
        self.batch_size, self.honest_every = batch, honest_every
        self.forward_privileged = forward_privileged
        self.keep_going = keep_going  # record untyped answers and go on; stop on fatal ones
        self.stopped = False
        self.run_timeout_s = run_timeout_s
        w2 = inbox(cluster, "w2")
        self.sockets: dict[str, zmq.Socket] = {
            COORDINATOR: dial(cluster),
            INBOX_AS_CLIENT: dial(cluster, w2, server="w2"),
            INBOX_AS_W1: dial(cluster, w2, as_name="w1", server="w2"),
        }
        for sock in self.sockets.values():
            sock.setsockopt(zmq.SNDTIMEO, int(run_timeout_s * 1000))  # a wedged peer shows
        self.poller = zmq.Poller()
        for sock in self.sockets.values():
            self.poller.register(sock, zmq.POLLIN)
        self.route_of = {sock: route for route, sock in self.sockets.items()}
        self.client: Client = cluster.client(timeout_s=run_timeout_s)
        self.rng = np.random.default_rng(0)
        self.report = Report()
        self.batch: list[FuzzMessage] = []
        self.previous_batch: list[FuzzMessage] = []
        self.honest: list[tuple[Future[RunResult], np.ndarray]] = []
        self.started = time.monotonic()

    def processes(self) -> dict[str, Any]:
        return {"coordinator": self.cluster.coordinator, **self.cluster.workers}

    def measure_rss(self) -> dict[str, int]:
        return {name: rss_bytes(p.pid) for name, p in self.processes().items()}

    def warm_up(self, runs: int = 20) -> None:
        """Honest runs first, so that RSS 'before' is a served process, not a fresh one."""
        for _ in range(runs):
            self._honest_run()
        self.report.rss_before = self.measure_rss()
        self.started = time.monotonic()

    def _fail(self, what: str, culprit: FuzzMessage | None = None, *, fatal: bool = True,
              signature: str | None = None) -> None:
        seen = self.report.signatures.get(signature or what)
        if seen is not None:
            seen.count += 1
        else:
            failure = Failure(what, culprit, list(self.batch), fatal)
            self.report.failures.append(failure)
            self.report.signatures[signature or what] = failure
        if fatal or not self.keep_going:
            self.stopped = True
            raise StopFuzz(what)

    def send(self, msg: FuzzMessage) -> None:
        if self.stopped:
            raise StopFuzz("already failed")
        msg.header = resolve(msg.header, self.pools)
        if neutralize(msg, self.pools, forward_privileged=self.forward_privileged):
            msg.neutralized = True
            self.report.neutralized += 1
        try:
            frames = msg.frames()
        except (OverflowError, TypeError, ValueError, UnicodeEncodeError):
            self.report.unencodable += 1  # a value msgpack cannot write: nothing to send
            return
        self._remember(msg)
        self.batch.append(msg)
        r = self.report
        r.sent[msg.kind] += 1
        r.routes[msg.route] += 1
        r.tensor_modes[msg.tensors] += 1
        try:
            self.sockets[msg.route].send_multipart(frames)
        except zmq.Again:
            self._fail(f"could not send to {msg.route} within {self.run_timeout_s:.0f} s "
                       f"(the receiver stopped reading)", msg)
        self._drain(0)
        if r.messages % self.honest_every == 0:
            x = self.rng.standard_normal(int(self.rng.integers(1, 64))).astype(np.float32)
            self.honest.append((self.client.submit("chain", {"x": x},
                                                   timeout_s=self.run_timeout_s), x))
        if len(self.batch) >= self.batch_size:
            self.check()

    def _remember(self, msg: FuzzMessage) -> None:
        """Ids and run ids the rogue used come back in later messages' fields."""
        for key, pool in (("id", self.pools.ids), ("run", self.pools.runs)):
            value = msg.header.get(key)
            if isinstance(value, str) and 0 < len(value) <= 128:
                pool.append(value)

    def _drain(self, wait_ms: int) -> None:
        """Read and check every answer waiting on the rogue's sockets; with ``wait_ms``, until
        they have been quiet that long."""
        while True:
            events = dict(self.poller.poll(wait_ms))
            if not events:
                return
            for sock in events:
                while True:
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self._check_answer(self.route_of[sock], frames)

    def _culprit(self, reply_to: Any) -> FuzzMessage | None:
        """The message an answer is about (answers may come in after the batch ended)."""
        return next((m for m in reversed(self.previous_batch + self.batch)
                     if m.header.get("id") == reply_to and isinstance(reply_to, str)), None)

    def _check_answer(self, route: str, frames: list[bytes]) -> None:
        try:
            msg = decode(frames).msg
        except ProtocolError as exc:
            self.report.answers["undecodable"] += 1
            try:  # what it says, read past the limits the decoder enforces
                raw = msgpack.unpackb(frames[0], raw=False)
            except Exception:
                raw = {}
            raw = raw if isinstance(raw, dict) else {}
            self._fail(f"undecodable answer on {route}: {exc}; it is a {raw.get('kind')!r} "
                       f"with code {raw.get('code')!r}, {len(frames[0])} header bytes",
                       self._culprit(raw.get("reply_to")), fatal=False,
                       signature=f"undecodable:{route}:{exc.code}:{raw.get('code')}")
            return
        code = getattr(msg, "code", None)
        answer = "reply" if msg.kind == "reply" else code if msg.kind == "error" \
            else f"kind:{msg.kind}"
        self.report.answers[answer] += 1
        asked = self._culprit(getattr(msg, "reply_to", None))
        self.report.by_kind[(asked.kind if asked else "?", str(answer))] += 1
        if msg.kind == "reply":
            return
        if msg.kind != "error" or code not in ERROR_CODES:
            self._fail(f"untyped answer on {route}: {msg!r}", asked, fatal=False,
                       signature=f"untyped:{route}:{msg.kind}:{code}")

    def _honest_run(self) -> None:
        x = self.rng.standard_normal(int(self.rng.integers(1, 64))).astype(np.float32)
        try:
            out = self.client.run("chain", {"x": x}, timeout_s=self.run_timeout_s)
        except Exception as exc:
            self.report.honest_failed += 1
            self._fail(f"an honest run failed: {type(exc).__name__}: {exc}")
            return
        self._check_honest(out, x)

    def _check_honest(self, out: RunResult, x: np.ndarray) -> None:
        if not np.array_equal(out["y"], expected_y(x)):
            self.report.honest_failed += 1
            self._fail(f"an honest run returned wrong values: {out['y'][:4]} for x={x[:4]}")
        self.report.honest_ok += 1

    def check(self) -> None:
        """Between batches: every process alive, every answer typed, honest runs right."""
        self.report.batches += 1
        for name, proc in self.processes().items():
            if proc.poll() is not None:
                self._fail(f"{name} exited with code {proc.returncode}:\n"
                           f"{self.cluster.log_tail(name, 15)}")
        self._drain(50)
        pending, self.honest = self.honest, []
        for fut, x in pending:
            try:
                out = fut.result(timeout=self.run_timeout_s + 5)
            except Exception as exc:
                self.report.honest_failed += 1
                self._fail(f"an honest run submitted during the batch failed: "
                           f"{type(exc).__name__}: {exc}")
            self._check_honest(out, x)
        self._honest_run()
        self._drain(0)
        self.previous_batch, self.batch = self.batch, []
        self.report.rss_samples.append((self.report.messages, self.measure_rss()))

    def finish(self) -> Report:
        """The last checks, and RSS after."""
        if not self.stopped:
            try:
                self.check()
            except StopFuzz:
                pass
        self.report.elapsed_s = time.monotonic() - self.started
        self.report.rss_after = self.measure_rss()
        return self.report

    def close(self) -> None:
        self.client.close()
        for sock in self.sockets.values():
            sock.close(0)


def fuzz(session: FuzzSession, count: int, *, seed: int | None = None,
         derandomize: bool = False, strategy: SearchStrategy[FuzzMessage] | None = None
         ) -> Report:
    """Send ``count`` drawn messages through ``session`` (a @given loop, generation only:
    no shrinking, no replay, no example database) and return its report."""
    strategy = strategy or messages(session.pools)

    @settings(max_examples=count, database=None, deadline=None, derandomize=derandomize,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck),
              print_blob=False)
    @given(strategy)
    def send_one(msg: FuzzMessage) -> None:
        session.send(msg)

    if seed is not None and not derandomize:
        send_one = hypothesis_seed(seed)(send_one)
    session.warm_up()
    try:
        send_one()
    except StopFuzz:
        pass
    return session.finish()


# --- replay and minimization (bench only) -------------------------------------------------

def replay(batch: Sequence[FuzzMessage], *, forward_privileged: bool = False) -> str | None:
    """Send ``batch`` to a fresh cluster; the failure it causes, or None."""
    with LocalCluster(cluster_spec()) as cluster:
        with cluster.client() as c:
            c.register(honest_graph())
        session = FuzzSession(cluster, batch=len(batch) + 1, honest_every=1 << 30,
                              forward_privileged=forward_privileged)
        try:
            for msg in batch:
                session.send(FuzzMessage(msg.route, msg.header, msg.buffers, msg.tensors))
            time.sleep(1.0)  # let a dying process die
            session.check()
        except StopFuzz:
            pass
        finally:
            session.close()
        return session.report.failures[0].what if session.report.failures else None


def minimize(batch: list[FuzzMessage], *, forward_privileged: bool = False,
             log: Callable[[str], None] = print) -> list[FuzzMessage]:
    """Delta debugging over the failing batch, one fresh cluster per try."""
    def reproduces(part: Sequence[FuzzMessage]) -> str | None:
        return replay(part, forward_privileged=forward_privileged)

    current = list(batch)
    if reproduces(current) is None:
        log("the failing batch does not reproduce on a fresh cluster (it needs earlier state)")
        return current
    chunks = 2
    while len(current) > 1:
        size = math.ceil(len(current) / chunks)
        parts = [current[i:i + size] for i in range(0, len(current), size)]
        for i, part in enumerate(parts):
            rest = [m for j, p in enumerate(parts) if j != i for m in p]
            if reproduces(part):
                current, chunks = part, 2
                break
            if chunks > 2 and reproduces(rest):
                current, chunks = rest, max(chunks - 1, 2)
                break
        else:
            if chunks >= len(current):
                break
            chunks = min(len(current), chunks * 2)
        log(f"  minimizing: {len(current)} message(s) left")
    return current


# --- command line -------------------------------------------------------------------------

def parse(argv: Iterable[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.fuzz_handlers", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=20_000, help="fuzz messages (default 20000)")
    ap.add_argument("--batch", type=int, default=200, help="messages between checks (200)")
    ap.add_argument("--honest-every", type=int, default=25,
                    help="an honest run submitted every N fuzz messages (25)")
    ap.add_argument("--seed", type=int, help="Hypothesis seed (default: random)")
    ap.add_argument("--forward-privileged", action="store_true",
                    help="send coordinator-only CONTROL/PARAM to real workers through the "
                         "coordinator too (the known finding: a client key stops a worker)")
    ap.add_argument("--stop-at-first", action="store_true",
                    help="stop at the first untyped answer too (default: count them and go "
                         "on; a dead or wedged process or a wrong honest run always stops)")
    ap.add_argument("--no-minimize", action="store_true",
                    help="on a fatal failure, do not replay the batch on fresh clusters to "
                         "find the messages that cause it")
    ap.add_argument("--dump", type=Path, default=ROOT / ".bench-results" / "fuzz-failures.json",
                    help="where the failures and their batches are written")
    return ap.parse_args(None if argv is None else list(argv))


def main(argv: Iterable[str] | None = None) -> int:
    args = parse(argv)
    with LocalCluster(cluster_spec()) as cluster:
        with cluster.client() as c:
            c.register(honest_graph())
        session = FuzzSession(cluster, batch=args.batch, honest_every=args.honest_every,
                              forward_privileged=args.forward_privileged,
                              keep_going=not args.stop_at_first)
        try:
            report = fuzz(session, args.messages, seed=args.seed)
        finally:
            session.close()
    print(report.table())
    if not report.failures:
        return 0
    args.dump.parent.mkdir(parents=True, exist_ok=True)
    args.dump.write_text(json.dumps([{
        "failure": f.what, "count": f.count, "fatal": f.fatal,
        "culprit": f.culprit.to_json() if f.culprit else None,
        "batch": [m.to_json() for m in f.batch]} for f in report.failures], indent=1))
    print(f"\nthe failures and their batches are in {args.dump}")
    fatal = next((f for f in report.failures if f.fatal and f.culprit is None), None)
    if fatal is not None and fatal.batch and not args.no_minimize:
        print(f"minimizing on fresh clusters: {fatal.what.splitlines()[0]}")
        for msg in minimize(fatal.batch, forward_privileged=args.forward_privileged):
            print(f"  {msg.describe()}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
