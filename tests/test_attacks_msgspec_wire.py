"""A rogue peer attacks the msgspec header validation on real sockets (plain-text loopback).

The wire models are msgspec structs (interop_runtime/wire/model.py,
messages.py, payloads.py, codec.py). Every test here sends hand-made msgpack headers,
through a raw DEALER, to the coordinator's ROUTER or to a worker's inbox, and checks the
rules of protocol/SPEC.md: section 4 (strict types, no bin/ext anywhere, string map keys,
bounded free-form values), section 7 (the error codes) and section 6 (the validation order,
with its `field`). Where the refusal happens in the decoder, the same frames are decoded
in-process with ``interop_runtime.wire.codec.decode`` and the daemon's code and field must
be the ones the codec gives. After every test, each process must still be alive and the
honest client's run of graph ``chain`` (y = 2x + 1) must still be right.

One insecure cluster serves the module: w1 hosts ``scale``, w2 ``add_const``.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterator
from typing import Any

import msgpack
import numpy as np
import pytest

from interop_runtime import ClusterSpec, Graph, LocalCluster
from interop_runtime.client.testing import dial, inbox, numpy_worker
from interop_runtime.wire.codec import decode, encode, new_id
from interop_runtime.wire.errors import InteropError
from interop_runtime.wire.messages import (
    PROTOCOL_VERSION,
    ErrorMsg,
    FunctionSpec,
    ReplyMsg,
    RunMsg,
    TensorSpec,
)

V = PROTOCOL_VERSION
X = np.arange(4, dtype=np.float32)
ANSWER_MS = 5_000
U64 = (1 << 64) - 1
I64_MIN = -(1 << 63)
NOWHERE = "tcp://127.0.0.1:9"
_names = itertools.count()


# --- the cluster and the rogue's tools ---------------------------------------------------

@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    spec = ClusterSpec.model_validate({
        "coordinator": {"heartbeat_s": 0.5, "curve": False},
        "workers": [numpy_worker("w1", "scale"), numpy_worker("w2", "add_const")]})
    with LocalCluster(spec) as lc:
        with lc.client() as c:
            g = Graph("chain").node("a", "w1", "scale").node("b", "w2", "add_const")
            c.register(g.edge("a.y", "b.x").input("x", "a.x").output("y", "b.y"))
        yield lc


@pytest.fixture(scope="module")
def w2_inbox(cluster: LocalCluster) -> str:
    return inbox(cluster, "w2")


@pytest.fixture
def coord(cluster: LocalCluster) -> Iterator[Any]:
    sock = dial(cluster)
    yield sock
    sock.close(0)


@pytest.fixture
def worker_sock(cluster: LocalCluster, w2_inbox: str) -> Iterator[Any]:
    sock = dial(cluster, w2_inbox)
    yield sock
    sock.close(0)


@pytest.fixture(autouse=True)
def still_right(cluster: LocalCluster) -> Iterator[None]:
    """After each attack: every process alive, and the honest run right."""
    yield
    for name, proc in [("coordinator", cluster.coordinator), *cluster.workers.items()]:
        assert proc is not None and proc.poll() is None, f"{name} exited ({proc and proc.poll()})"
    with cluster.client() as c:
        np.testing.assert_array_equal(c.run("chain", {"x": X}, timeout_s=20)["y"], 2 * X + 1)


def h(kind: str, **fields: Any) -> dict[str, Any]:
    return {"kind": kind, "v": V, "id": new_id(), "src": "rogue", **fields}


def pack(header: dict[Any, Any] | bytes) -> bytes:
    return header if isinstance(header, bytes) else msgpack.packb(header, use_bin_type=True)


def with_field(header: dict[str, Any], key: str, value_bytes: bytes) -> bytes:
    """``header`` packed with one more entry whose value is raw msgpack (deep nesting that
    msgpack's own packer refuses to build)."""
    body = msgpack.packb(header, use_bin_type=True)
    assert body[0] & 0xF0 == 0x80 and len(header) < 15  # a fixmap
    return bytes([body[0] + 1]) + body[1:] + msgpack.packb(key) + value_bytes


def send(sock: Any, frames: list[bytes]) -> Any | None:
    """Send raw frames; the decoded answer, or None after ANSWER_MS of silence."""
    sock.send_multipart(frames)
    if not sock.poll(ANSWER_MS):
        return None
    return decode(sock.recv_multipart()).msg


def serves_next(sock: Any) -> None:
    """The daemon behind ``sock`` answers an honest ping right after the attack."""
    ping = h("control", action="ping")
    answer = send(sock, [pack(ping)])
    assert isinstance(answer, ReplyMsg) and answer.reply_to == ping["id"], answer


def local(frames: list[bytes]) -> InteropError | None:
    try:
        decode(frames)
    except InteropError as exc:
        return exc
    return None


def refused(sock: Any, header: dict[Any, Any] | bytes, code: str, field: str | None = None,
            *, extra_frames: tuple[bytes, ...] = (), same_as_codec: bool = True) -> ErrorMsg:
    """Send ``header``: a typed ERROR with ``code`` (and ``field``) must come back, the
    in-process decoder must refuse the same frames with the same code and field, and the
    daemon must serve the next message."""
    frames = [pack(header), *extra_frames]
    answer = send(sock, frames)
    assert answer is not None, f"no answer in {ANSWER_MS} ms (expected {code} {field})"
    assert isinstance(answer, ErrorMsg), f"accepted, answered {answer!r}; expected {code}"
    assert answer.code == code, answer
    if field is not None:
        assert answer.field == field, answer
    if same_as_codec:
        exc = local(frames)
        assert exc is not None, f"the in-process decoder accepts what the daemon refused: {answer}"
        assert (exc.code.value, exc.field) == (answer.code, answer.field), (exc, answer)
    serves_next(sock)
    return answer


# --- integers, floats, bools (SPEC section 4) ---------------------------------------------

def _data(**tensor: Any) -> dict[str, Any]:
    meta = {"name": "t", "dtype": "uint8", "shape": [1], "frame": 1, **tensor}
    return h("data", graph="chain", run=new_id(), node="a", tensors=[meta])


INTEGER_ATTACKS = {
    "v-float": ({**h("query", what="status"), "v": float(V)}, "bad_header", "v"),
    "v-bool": ({**h("query", what="status"), "v": True}, "bad_header", "v"),
    "v-uint64-max": ({**h("query", what="status"), "v": U64}, "version", "v"),
    "v-int64-min": ({**h("query", what="status"), "v": I64_MIN}, "version", "v"),
    "input_bytes-float": (h("run", graph="chain", run=new_id(), input_bytes=1.0),
                          "bad_header", "input_bytes"),
    "input_bytes-bool": (h("run", graph="chain", run=new_id(), input_bytes=True),
                         "bad_header", "input_bytes"),
    "input_bytes-uint64-max": (h("run", graph="chain", run=new_id(), input_bytes=U64),
                               "bad_header", "input_bytes"),
    "input_bytes-int64-min": (h("run", graph="chain", run=new_id(), input_bytes=I64_MIN),
                              "bad_header", "input_bytes"),
    "param-version-float": (h("param", op="list", dst="w1", version=1.0),
                            "bad_header", "version"),
    "param-version-bool": (h("param", op="list", dst="w1", version=False),
                           "bad_header", "version"),
    "register-pid-float": (h("register", name="w1", plugin="numpy", endpoint=NOWHERE, pid=7.0),
                           "bad_header", "pid"),
    "done-compute_us-float": (h("done", graph="chain", run="r", node="a", compute_us=1.0),
                              "bad_header", "compute_us"),
    "busy-int": (h("heartbeat", name="w1", busy=1), "bad_header", "busy"),
    "ok-int": (h("done", graph="chain", run="r", node="a", ok=0), "bad_header", "ok"),
    "shape-uint64-max": (_data(shape=[U64]), "bad_header", "tensors.0.shape.0"),
    "shape-2**63": (_data(shape=[1 << 63]), "bad_header", "tensors.0.shape.0"),
    "shape-negative": (_data(shape=[-1]), "bad_header", "tensors.0.shape.0"),
    "shape-int64-min": (_data(shape=[1, I64_MIN]), "bad_header", "tensors.0.shape.1"),
    "shape-float": (_data(shape=[1.0]), "bad_header", "tensors.0.shape.0"),
    "shape-bool": (_data(shape=[True]), "bad_header", "tensors.0.shape.0"),
    "shape-string": (_data(shape=["1"]), "bad_header", "tensors.0.shape.0"),
    "shape-33-dims": (_data(shape=[1] * 33), "bad_header", "tensors.0.shape"),
    "count-2**63": (_data(shape=[1 << 62, 2]), "bad_header", "tensors.0"),
    "frame-float": (_data(frame=1.0), "bad_header", "tensors.0.frame"),
    "frame-over-2**20": (_data(frame=(1 << 20) + 1), "bad_header", "tensors.0.frame"),
}


@pytest.mark.parametrize("case", INTEGER_ATTACKS, ids=str)
def test_integer_fields_refuse_floats_bools_and_out_of_range(coord: Any, case: str) -> None:
    header, code, field = INTEGER_ATTACKS[case]
    refused(coord, header, code, field, extra_frames=(b"\x00",) if header["kind"] == "data"
            else ())


def _run_frames(**changes: Any) -> tuple[list[bytes], str]:
    msg = RunMsg(v=V, id=new_id(), src="rogue", graph="chain", run=new_id())
    frames = [bytes(memoryview(f)) for f in encode(msg, {"x": X})]
    header = msgpack.unpackb(frames[0])
    header.update(changes)
    return [pack(header), *frames[1:]], msg.id


@pytest.mark.parametrize("packer", ["int", "float32", "float64"])
def test_float_fields_accept_integers_and_either_width(coord: Any, packer: str) -> None:
    """SPEC 4: a float field accepts a msgpack integer, and floats of either width."""
    frames, msg_id = _run_frames(timeout_s=20 if packer == "int" else 20.0)
    if packer == "float32":
        frames[0] = msgpack.packb(msgpack.unpackb(frames[0]), use_single_float=True)
        assert b"\xca" in frames[0]
    answer = send(coord, frames)
    assert isinstance(answer, ReplyMsg) and answer.reply_to == msg_id, answer
    ping = h("control", action="ping", timeout_s=5)  # an int timeout on CONTROL too
    answer = send(coord, [pack(ping)])
    assert isinstance(answer, ReplyMsg) and answer.reply_to == ping["id"], answer


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 0, 0.0, -1, 604_801, U64],
                         ids=repr)
def test_timeouts_must_be_finite_positive_and_at_most_a_week(coord: Any, value: Any) -> None:
    frames, _ = _run_frames(timeout_s=value)
    refused(coord, frames[0], "bad_header", "timeout_s", extra_frames=tuple(frames[1:]))
    refused(coord, h("control", action="ping", timeout_s=value), "bad_header", "timeout_s")
    refused(coord, h("param", op="list", dst="w1", timeout_s=value), "bad_header", "timeout_s")


def _register(name: str = "w1", **fn: Any) -> dict[str, Any]:
    """A REGISTER for live name w1 by default: accepted, it gets ``busy`` (field name)."""
    return h("register", name=name, plugin="numpy", endpoint=NOWHERE,
             functions=[{"name": "f", "inputs": [{"name": "x", **fn}]}])


@pytest.mark.parametrize("bounds", [[0, math.nan], [-math.inf, 1], [0, math.inf]], ids=repr)
def test_tensor_spec_range_must_be_finite(coord: Any, bounds: list[float]) -> None:
    answer = refused(coord, _register(range=bounds), "bad_header")
    assert answer.field and answer.field.startswith("functions.0.inputs.0"), answer


@pytest.mark.parametrize("bounds", [[0, math.nan], [-math.inf, 1]], ids=repr)
def test_tensor_spec_range_fault_names_range(coord: Any, bounds: list[float]) -> None:
    """SPEC 6 row 9: ``field`` is the path of the fault; the fault is in ``range``.
    msgspec's __post_init__ error points only at the enclosing TensorSpec."""
    answer = refused(coord, _register(range=bounds), "bad_header")
    assert answer.field and answer.field.startswith("functions.0.inputs.0.range"), answer


def test_tensor_spec_values_that_must_be_accepted(coord: Any) -> None:
    """Integer and mixed ranges, uint64 bounds, dynamic dims: a valid REGISTER (for a live
    name held by another connection: ``busy``, which only a decoded header can get)."""
    for fn in ({"range": [0, 10]}, {"range": [-0.5, 1]}, {"range": [I64_MIN, U64]},
               {"shape": [None, 3], "dtype": "float32"}):
        answer = send(coord, [pack(_register(**fn))])
        assert isinstance(answer, ErrorMsg) and (answer.code, answer.field) == ("busy", "name"), \
            (fn, answer)
    for fn, field in (({"range": [False, True]}, "functions.0.inputs.0.range.0"),
                      ({"range": [0, 1, 2]}, "functions.0.inputs.0.range"),
                      ({"shape": [1.0]}, "functions.0.inputs.0.shape.0"),
                      ({"dtype": "float128"}, "functions.0.inputs.0.dtype")):
        refused(coord, _register(**fn), "bad_header", field)


# --- kinds --------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", [1, ["query"], {"query": 1}, b"query", None, "QUERY", "nope",
                                  True, 1.5], ids=repr)
def test_kind_must_be_a_listed_string(coord: Any, worker_sock: Any, kind: Any) -> None:
    for sock in (coord, worker_sock):
        refused(sock, {**h("query", what="status"), "kind": kind}, "unknown_kind", "kind")


def test_missing_kind_and_kinds_a_daemon_does_not_take(coord: Any, worker_sock: Any) -> None:
    header = h("query", what="status")
    del header["kind"]
    refused(coord, header, "unknown_kind", "kind")
    # decoded fine, refused by the worker's handler: the codec accepts it
    refused(worker_sock, h("register", name="x", plugin="numpy", endpoint=NOWHERE),
            "unknown_kind", "kind", same_as_codec=False)


def test_fields_of_another_kind_are_ignored(coord: Any, worker_sock: Any) -> None:
    query = h("query", what="status", op="register", spec={"name": "evil"}, action="shutdown",
              names=["w"], reply_to="x", code="internal")
    answer = send(coord, [pack(query)])
    assert isinstance(answer, ReplyMsg) and answer.reply_to == query["id"], answer
    ping = h("control", action="ping", op="set", what="routes", graph="chain", spec={})
    answer = send(worker_sock, [pack(ping)])
    assert isinstance(answer, ReplyMsg) and answer.reply_to == ping["id"], answer


# --- bin and ext values, anywhere (SPEC section 4) -----------------------------------------

STAMP = msgpack.Timestamp(1_700_000_000, 0)
EXT = msgpack.ExtType(7, b"\x00\x01")

TOP_LEVEL_BIN = {
    "unknown-bin": ({"junk": b"\x00"}, "junk"),
    "unknown-ext": ({"junk": EXT}, "junk"),
    "unknown-timestamp": ({"junk": STAMP}, "junk"),
    "unknown-nested-bin": ({"junk": {"a": [1, {"b": b"x"}]}}, "junk.a.1.b"),
    "args-bin": ({"args": {"blob": b"x"}}, "args.blob"),
    "args-nested-ext": ({"args": {"a": [0, [EXT]]}}, "args.a.1.0"),
    "known-field-bin": ({"function": b"scale"}, "function"),
}


@pytest.mark.parametrize("case", TOP_LEVEL_BIN, ids=str)
def test_bin_and_ext_at_the_top_level_are_refused(coord: Any, worker_sock: Any,
                                                  case: str) -> None:
    extra, field = TOP_LEVEL_BIN[case]
    for sock in (coord, worker_sock):
        refused(sock, h("control", action="ping", **extra), "bad_header", field)


def test_bin_in_an_unknown_tensor_field_is_refused(worker_sock: Any) -> None:
    refused(worker_sock, _data(junk=b"\x00"), "bad_header", "tensors.0.junk",
            extra_frames=(b"\x00",))


NESTED_BIN = {
    # unknown fields inside typed maps are ignored (SPEC 4), but they too may not hold bin/ext
    "function-spec-bin": (_register(), ("functions", 0), "junk", b"\x00",
                          {"functions.0.junk"}),
    "tensor-spec-ext": (_register(), ("functions", 0, "inputs", 0), "junk", EXT,
                        {"functions.0.inputs.0.junk"}),
    "batching-bin": ({**_register(), "functions": [{"name": "f", "inputs": [
                         {"name": "x", "shape": [None]}], "batching": {"max_batch": 2}}]},
                     ("functions", 0, "batching"), "junk", b"\x00",
                     {"functions.0.batching.junk"}),
    "stats-bin": (h("heartbeat", name="w1", stats={}), ("stats",), "junk", b"\x00",
                  {"stats.junk"}),
    "function-stats-timestamp": (h("heartbeat", name="w1", stats={"functions": {"f": {}}}),
                                 ("stats", "functions", "f"), "junk", STAMP,
                                 {"stats.functions.f.junk", "stats.functions.*.junk"}),
}


@pytest.mark.parametrize("case", NESTED_BIN, ids=str)
def test_bin_and_ext_nested_in_typed_maps_are_refused(coord: Any, case: str) -> None:
    """SPEC 4: "A sender MUST NOT put bin or ext values ... anywhere in a header, and a
    receiver MUST refuse them: bad_header, with field the path of the value". The codec
    walks unknown fields only at the top level and in TensorMeta; msgspec drops unknown
    fields of FunctionSpec, TensorSpec, BatchingSpec, WorkerStats, FunctionStats unchecked.
    (If accepted: REGISTER for live w1 is answered ``busy``, a HEARTBEAT ``unauthorized``.)"""
    header, path, key, value, fields = NESTED_BIN[case]
    target: Any = header
    for step in path:
        target = target[step]
    target[key] = value
    answer = refused(coord, header, "bad_header", same_as_codec=False)
    assert answer.field in fields, answer
    assert local([pack(header)]) is not None, "the in-process decoder accepts it"


@pytest.mark.parametrize("key", ["k" * 500_000, "a`b - at `$.x`", "zz` - at `$.evil`"],
                         ids=["500k-chars", "backticks", "fake-path"])
def test_errors_quoting_odd_field_names_fit_and_point_at_their_map(worker_sock: Any,
                                                                 key: str) -> None:
    """msgspec's error text quotes an unknown field's name; error_location parses it with
    regexes. A hostile name must neither break the parse nor blow up the ERROR."""
    answer = refused(worker_sock, h("control", action="ping", **{key: b"x"}), "bad_header")
    assert answer.field is not None and len(answer.field) <= 300 and len(answer.message) <= 2000
    shm = {"token": TOKEN, "pid": 1, "fd": 3, "off": 64, "len": 4, "gen": 1, key: 1}
    answer = refused(worker_sock, _data(shape=[4], frame=0, shm=shm), "bad_header")
    assert answer.field is not None and answer.field.startswith("tensors.0.shm."), answer
    assert len(answer.field) <= 300 and len(answer.message) <= 2000, answer


# --- map keys (SPEC section 4, section 6 row 4) --------------------------------------------

def test_int_map_keys_are_bad_frames(coord: Any, worker_sock: Any) -> None:
    for sock in (coord, worker_sock):
        refused(sock, {**h("control", action="ping"), 1: 2}, "bad_frame", "header")
        refused(sock, h("control", action="ping", args={1: 2}), "bad_frame", "header")
        refused(sock, h("control", action="ping", args={"a": {None: 1}}), "bad_frame", "header")


@pytest.mark.parametrize("where", ["header", "tensor-meta"])
def test_bin_map_keys_are_answered_like_int_map_keys(worker_sock: Any, where: str) -> None:
    """SPEC 6 row 4: frame 0 must be one msgpack value "with string map keys", else
    ``bad_frame`` (field ``header``), as an int key gets. msgpack lets bin keys through, so
    the codec refuses them itself in the header map and in each TensorMeta."""
    header = h("control", action="ping") if where == "header" else _data()
    if where == "header":
        header[b"junk"] = 1
    else:
        header["tensors"][0][b"junk"] = 1
    refused(worker_sock, header, "bad_frame", "header",
            extra_frames=(b"\x00",) if where == "tensor-meta" else ())


BIN_KEYS = {
    "args": h("control", action="ping", args={b"k": 1}),
    "args-nested": h("control", action="ping", args={"a": [{b"k": 1}]}),
    "info": h("register", name="w1", plugin="numpy", endpoint=NOWHERE, info={b"k": 1}),
    "spec": h("graph", op="validate", spec={b"name": "g"}),
    "node-args": h("graph", op="validate", spec={"name": "g", "nodes": {
        "a": {"worker": "w1", "function": "scale", "args": {b"k": 1}}}}),
    "body": h("reply", reply_to=new_id(), body={b"k": 1}),
    "timings": h("done", graph="chain", run="r", node="a", timings={b"a": {"compute_us": 1}}),
    "timings-inner": h("done", graph="chain", run="r", node="a", timings={"a": {b"x": 1}}),
    "place": h("run", graph="chain", run=new_id(), place={b"a": "w1"}),
    "stats-functions": h("heartbeat", name="w1", stats={"functions": {b"f": {}}}),
    "unknown-field": h("control", action="ping", junk={b"k": 1}),
}


@pytest.mark.parametrize("case", BIN_KEYS, ids=str)
def test_bin_map_keys_anywhere_are_refused(coord: Any, case: str) -> None:
    answer = send(coord, [pack(BIN_KEYS[case])])
    assert isinstance(answer, ErrorMsg) and answer.code in ("bad_frame", "bad_header"), answer
    exc = local([pack(BIN_KEYS[case])])
    assert exc is not None and (exc.code.value, exc.field) == (answer.code, answer.field)
    serves_next(coord)


# --- nesting --------------------------------------------------------------------------------

def test_free_form_nesting_is_bounded(coord: Any, worker_sock: Any) -> None:
    ping = h("control", action="ping")
    for sock in (coord, worker_sock):
        # 33 levels inside args: bad_header at the path of the 33rd level
        answer = refused(sock, with_field(ping, "args", b"\x81\xa1a" + b"\x91" * 33 + b"\x01"),
                         "bad_header")
        assert answer.field and answer.field.startswith("args.a.0.0.0"), answer
        # ... in an unknown top-level field, and in REGISTER info / REPLY body
        answer = refused(sock, with_field(ping, "junk", b"\x91" * 40 + b"\x01"), "bad_header")
        assert answer.field and answer.field.startswith("junk.0"), answer
        # deeper than msgpack's own stack: not readable at all
        refused(sock, with_field(ping, "args", b"\x81\xa1a" + b"\x91" * 5000 + b"\x01"),
                "bad_frame", "header")
        refused(sock, with_field(ping, "junk", b"\x81\xa1a" * 100_000 + b"\xc0"),
                "bad_frame", "header")
    reg = h("register", name="w1", plugin="numpy", endpoint=NOWHERE)
    answer = refused(coord, with_field(reg, "info", b"\x81\xa1a" + b"\x91" * 40 + b"\x01"),
                     "bad_header")
    assert answer.field and answer.field.startswith("info.a.0"), answer


def test_free_form_value_count_is_bounded(coord: Any) -> None:
    refused(coord, h("control", action="ping", args={"a": [0] * 100_001}), "bad_header", "args")
    refused(coord, h("graph", op="validate", spec={"name": "g", "x": [0] * 100_001}),
            "bad_header", "spec")


# --- strings ---------------------------------------------------------------------------------

def _raw_ping(id_bytes: bytes, key: bytes = b"id") -> bytes:
    """A CONTROL ping whose ``id`` (or key) is the raw str payload ``id_bytes``."""
    return (b"\x84" + msgpack.packb("kind") + msgpack.packb("control") + msgpack.packb("v")
            + msgpack.packb(V) + msgpack.packb("action") + msgpack.packb("ping")
            + bytes([0xA0 | len(key)]) + key + bytes([0xA0 | len(id_bytes)]) + id_bytes)


@pytest.mark.parametrize("raw", [
    _raw_ping(b"ab\xff"),                 # invalid UTF-8
    _raw_ping(b"\xed\xa0\x80x"),          # a lone surrogate, CESU-style
    _raw_ping(b"\xc0\xafx"),              # an overlong "/"
    _raw_ping(b"\xf4\x90\x80\x80"),       # above U+10FFFF
    _raw_ping(b"abc", key=b"i\xffd"),     # invalid UTF-8 in a key
], ids=["invalid", "surrogate", "overlong", "above-max", "in-key"])
def test_strings_must_be_valid_utf8(coord: Any, worker_sock: Any, raw: bytes) -> None:
    for sock in (coord, worker_sock):
        refused(sock, raw, "bad_frame", "header")


STRING_LIMITS = {
    "id-empty": ({**h("query", what="status"), "id": ""}, "id"),
    "id-129": ({**h("query", what="status"), "id": "x" * 129}, "id"),
    "src-257": (h("query", what="status", src="x" * 257), "src"),
    "dst-257": (h("param", op="list", dst="x" * 257), "dst"),
    "heartbeat-name-257": (h("heartbeat", name="n" * 257), "name"),
    "heartbeat-name-empty": (h("heartbeat", name=""), "name"),
    "run-id-empty": (h("run", graph="chain", run=""), "run"),
    "run-graph-257": (h("run", graph="g" * 257, run=new_id()), "graph"),
    "register-pool-257": (h("register", name="w1", plugin="numpy", endpoint=NOWHERE,
                            pool="p" * 257), "pool"),
    "function-name-empty": (_register() | {"functions": [{"name": ""}]}, "functions.0.name"),
    "place-key-empty": (h("run", graph="chain", run=new_id(), place={"": "w1"}), "place"),
}


@pytest.mark.parametrize("case", STRING_LIMITS, ids=str)
def test_string_length_limits(coord: Any, case: str) -> None:
    header, field = STRING_LIMITS[case]
    refused(coord, header, "bad_header", field)


def test_lengths_count_characters_not_bytes(coord: Any) -> None:
    """256 astral characters (1,024 UTF-8 bytes) is a valid name: the HEARTBEAT decodes
    and reaches the registry (no such worker: unknown_target)."""
    answer = send(coord, [pack(h("heartbeat", name="\U0001F600" * 256))])
    assert isinstance(answer, ErrorMsg) and (answer.code, answer.field) == \
        ("unknown_target", "name"), answer


# --- patterns: msgspec's regex `$` matches before a trailing newline ----------------------------

TOKEN = "0123456789abcdef" * 2


def _shm_data(token: str) -> dict[str, Any]:
    return _data(shape=[4], frame=0, shm={"token": token, "pid": 1, "fd": 3, "off": 64,
                                          "len": 4, "gen": 1})


@pytest.mark.parametrize("value", ["AB", "a", "ab cd", "x" * 65], ids=repr)
def test_client_must_be_hex(worker_sock: Any, value: str) -> None:
    refused(worker_sock, h("data", graph="chain", run=new_id(), node="a", client=value),
            "bad_header", "client")


def test_client_with_a_trailing_newline_is_not_hex(worker_sock: Any) -> None:
    """SPEC 5.2 / schema.json: ``client`` is 2..64 hex digits, pattern ^[0-9a-f]{2,64}$.
    Python's `$` also matches before a final newline, JSON Schema's (ECMA) does not: the
    pattern says ``(?!\\n)`` so that both refuse "ab\\n"."""
    refused(worker_sock, h("data", graph="chain", run=new_id(), node="a", client="ab\n"),
            "bad_header", "client")


@pytest.mark.parametrize("token", ["../../etc/passwd", "X" * 32, TOKEN[:-1]], ids=repr)
def test_shm_token_must_be_32_hex(worker_sock: Any, token: str) -> None:
    refused(worker_sock, _shm_data(token), "bad_header", "tensors.0.shm.token")


def test_shm_token_with_a_trailing_newline_is_a_bad_header(worker_sock: Any) -> None:
    """golden/invalid/shm_bad_token: a token that is not 32 lowercase hex digits is
    ``bad_header`` (schema pattern, row 9). TOKEN + "\\n" passes the msgspec pattern and is
    caught later by the shm layer's fullmatch, as ``bad_handle``."""
    refused(worker_sock, _shm_data(TOKEN + "\n"), "bad_header", "tensors.0.shm.token")


# --- free-form maps: what they may hold ------------------------------------------------------

def test_non_finite_numbers_in_json_maps(coord: Any) -> None:
    refused(coord, h("control", action="ping", args={"a": [1, math.nan]}), "bad_header",
            "args.a.1")
    refused(coord, h("graph", op="validate", spec={"name": "g", "nodes": {"a": {
        "worker": "w1", "function": "scale", "args": {"k": -math.inf}}}}),
        "bad_header", "spec.nodes.a.args.k")
    # REGISTER info and REPLY body are not JSON: NaN is a plain value there
    answer = send(coord, [pack(h("register", name="w1", plugin="numpy", endpoint=NOWHERE,
                                 info={"x": math.nan}))])
    assert isinstance(answer, ErrorMsg) and answer.code == "busy", answer


# --- GRAPH: hostile specs --------------------------------------------------------------------

def _spec(**changes: Any) -> dict[str, Any]:
    spec = {"name": f"evil{next(_names)}", "nodes": {"a": {"worker": "w1", "function": "scale"}},
            "inputs": {"x": "a.x"}, "outputs": {"y": "a.y"}}
    spec.update(changes)
    return spec


HOSTILE_SPECS = {
    "node-unknown-field": (_spec(nodes={"a": {"worker": "w1", "function": "scale", "x": 1}}),
                           "bad_header", "spec"),
    "node-both-worker-and-pool": (_spec(nodes={"a": {"worker": "w1", "pool": "p",
                                                     "function": "scale"}}),
                                  "bad_header", "spec"),
    "node-neither": (_spec(nodes={"a": {"function": "scale"}}), "bad_header", "spec"),
    "nodes-a-list": (_spec(nodes=[{"worker": "w1", "function": "scale"}]), "bad_header", "spec"),
    "node-a-string": (_spec(nodes={"a": "w1.scale"}), "bad_header", "spec"),
    "retries-11": (_spec(nodes={"a": {"worker": "w1", "function": "scale", "retries": 11}}),
                   "bad_header", "spec"),
    "retries-bool": (_spec(nodes={"a": {"worker": "w1", "function": "scale", "retries": True}}),
                     "bad_header", "spec"),
    "edge-not-an-arrow": (_spec(edges=["nonsense"]), "bad_header", "spec"),
    "edges-a-string": (_spec(edges="a.y -> a.x"), "bad_header", "spec"),
    "edge-unknown-field": (_spec(edges=[{"src": "a.y", "dst": "a.x", "w": 1}]),
                           "bad_header", "spec"),
    "edge-two-arrows": (_spec(edges=["a.y -> a.x -> a.z"]), None, None),
    "inputs-a-string": (_spec(inputs="a.x"), "bad_header", "spec"),
    "inputs-int-target": (_spec(inputs={"x": 5}), "bad_header", "spec"),
    "outputs-list": (_spec(outputs=["a.y"]), "bad_header", "spec"),
    "spec-unknown-field": (_spec(extra={"k": 1}), "bad_header", "spec"),
    "name-int": (_spec(name=5), "bad_header", "spec"),
    "node-name-bad": (_spec(nodes={"a.b": {"worker": "w1", "function": "scale"}},
                            inputs={"x": "a.b.x"}, outputs={"y": "a.b.y"}), None, None),
    "empty-spec": ({}, "bad_header", "spec"),
}


@pytest.mark.parametrize("op", ["validate", "register"])
@pytest.mark.parametrize("case", HOSTILE_SPECS, ids=str)
def test_hostile_graph_specs_get_typed_answers(coord: Any, case: str, op: str) -> None:
    spec, code, field = HOSTILE_SPECS[case]
    msg = h("graph", op=op, spec=spec)
    answer = send(coord, [pack(msg)])
    assert isinstance(answer, ErrorMsg) and answer.reply_to == msg["id"], answer
    if code is None:  # refused for the graph itself, not its shape
        assert answer.code in ("invalid_graph", "unknown_target"), answer
    else:
        assert (answer.code, answer.field) == (code, field), answer
    assert local([pack(msg)]) is None  # a request-level refusal: the header is valid
    serves_next(coord)


@pytest.mark.parametrize("retries", ["3", "1e1", 2.0], ids=repr)
def test_graph_spec_integer_fields_are_strict(coord: Any, retries: Any) -> None:
    """SPEC 4: "Integer fields MUST be msgpack integers ... "3" is not an integer", and the
    structures of section 10 (NodeSpec) are typed maps: "3", 2.0 and "1e1" are not a
    ``retries``."""
    msg = h("graph", op="validate", spec=_spec(nodes={"a": {"worker": "w1", "function": "scale",
                                                            "retries": retries}}))
    answer = send(coord, [pack(msg)])
    assert isinstance(answer, ErrorMsg), f"accepted: {answer!r}"
    assert (answer.code, answer.field) == ("bad_header", "spec"), answer
    serves_next(coord)


def test_a_graph_input_fanning_out_costs_one_check_per_target(monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    """A graph input feeding n nodes is checked once per target, not once per pair: with
    every target compared to every earlier one, a 4,000-node spec (160 KB, far under the
    1 MiB header limit) held the coordinator's only thread for 3 s, and one at the header
    limit (~26,000 nodes) would for minutes. Counted, not timed. A conflict is still found:
    the last target takes another shape than what the first ones accept together."""
    from interop_runtime.graph import validate as validation
    from interop_runtime.graph.signatures import check_edge
    from interop_runtime.wire.payloads import GraphSpec

    calls = []
    monkeypatch.setattr(validation, "check_edge",
                        lambda *a, **k: calls.append(1) or check_edge(*a, **k))
    n = 4000
    fns = {"w1": {"f": FunctionSpec(name="f", inputs=[TensorSpec(name="x", shape=[None, 3])],
                                    outputs=[TensorSpec(name="y")]),
                  "g": FunctionSpec(name="g", inputs=[TensorSpec(name="x", shape=[2, None])],
                                    outputs=[TensorSpec(name="y")]),
                  "h": FunctionSpec(name="h", inputs=[TensorSpec(name="x", shape=[2, 4])],
                                    outputs=[TensorSpec(name="y")])}}
    nodes = {f"a{i}": {"worker": "w1", "function": "fg"[i % 2]} for i in range(n)}
    nodes["last"] = {"worker": "w1", "function": "h"}
    spec = GraphSpec.model_validate({"name": "huge", "nodes": nodes, "outputs": {"y": "a0.y"},
                                     "inputs": {"x": [*(f"a{i}.x" for i in range(n)),
                                                      "last.x"]}})
    with pytest.raises(InteropError, match="last.x"):
        validation.validate(spec, fns)
    assert len(calls) <= n + 1


def test_a_big_graph_is_validated_and_the_coordinator_serves_on(coord: Any) -> None:
    """The same fan-out over the wire: the validate is answered, and so is a ping behind it."""
    n = 4000
    spec = {"name": "huge", "nodes": {f"a{i}": {"worker": "w1", "function": "scale"}
                                      for i in range(n)},
            "inputs": {"x": [f"a{i}.x" for i in range(n)]}, "outputs": {"y": "a0.y"}}
    big = h("graph", op="validate", spec=spec)
    ping = h("control", action="ping")
    started = time.monotonic()
    coord.send_multipart([pack(big)])
    coord.send_multipart([pack(ping)])
    answers: dict[str, float] = {}
    while len(answers) < 2 and time.monotonic() - started < 60:
        if coord.poll(1000):
            msg = decode(coord.recv_multipart()).msg
            answers[msg.reply_to] = time.monotonic() - started
    assert big["id"] in answers and ping["id"] in answers, answers


# --- HEARTBEAT: hostile stats ------------------------------------------------------------------

STATS = {
    "257-functions": ({"functions": {f"f{i}": {} for i in range(257)}}, "stats.functions"),
    "negative-pending": ({"pending": -1}, "stats.pending"),
    "float-bytes_in": ({"bytes_in": 1.0}, "stats.bytes_in"),
    "bool-bytes_out": ({"bytes_out": True}, "stats.bytes_out"),
    "uint64-rss": ({"rss_bytes": U64}, "stats.rss_bytes"),
    "negative-calls": ({"functions": {"scale": {"calls": -1}}}, "stats.functions.*.calls"),
    "2**63-compute": ({"functions": {"scale": {"compute_us": 1 << 63}}},
                      "stats.functions.*.compute_us"),
    "empty-function-name": ({"functions": {"": {}}}, "stats.functions"),
    "long-function-name": ({"functions": {"f" * 257: {}}}, "stats.functions"),
    "functions-a-list": ({"functions": [{"calls": 1}]}, "stats.functions"),
    "stats-a-list": ([1, 2], "stats"),
    "stats-a-string": ("lots", "stats"),
}


@pytest.mark.parametrize("case", STATS, ids=str)
def test_hostile_heartbeat_stats_are_bad_headers(coord: Any, case: str) -> None:
    stats, field = STATS[case]
    refused(coord, h("heartbeat", name="w1", session="guess", stats=stats), "bad_header", field)


def test_valid_stats_reach_the_session_check(coord: Any) -> None:
    stats = {"functions": {f"f{i}": {"calls": 1} for i in range(256)}, "pending": 0,
             "rss_bytes": (1 << 63) - 1}
    answer = send(coord, [pack(h("heartbeat", name="w1", session="guess", stats=stats))])
    assert isinstance(answer, ErrorMsg) and (answer.code, answer.field) == \
        ("unauthorized", "session"), answer


# --- a rogue worker: REGISTER, then CONTROL functions with hostile specs --------------------------

def _rogue_worker(sock: Any) -> tuple[str, str]:
    name = f"rogue{next(_names)}"
    reg = h("register", name=name, plugin="numpy", endpoint=NOWHERE,
            functions=[{"name": "f"}])
    answer = send(sock, [pack(reg)])
    assert isinstance(answer, ReplyMsg), answer
    return name, answer.body["session"]


def _functions(name: str, session: str, functions: Any) -> list[dict[str, Any]]:
    return [h("heartbeat", name=name, src=name, session=session),  # keep it alive
            h("control", action="functions", src=name, args={"functions": functions})]


HOSTILE_FUNCTIONS = {
    "4097-specs": ([{"name": f"f{i}"} for i in range(4097)], "args.functions"),
    "not-a-list": ({"name": "f"}, "args.functions"),
    "name-257": ([{"name": "f" * 257}], "args.functions"),
    "name-empty": ([{"name": ""}], "args.functions"),
    "shape-float": ([{"name": "f", "inputs": [{"name": "x", "shape": [1.0]}]}],
                    "args.functions"),
    "shape-string": ([{"name": "f", "inputs": [{"name": "x", "shape": ["1"]}]}],
                     "args.functions"),
    "dtype-unknown": ([{"name": "f", "inputs": [{"name": "x", "dtype": "float8"}]}],
                      "args.functions"),
    "range-nan": ([{"name": "f", "inputs": [{"name": "x", "range": [0, math.nan]}]}],
                  "args.functions.0.inputs.0.range.1"),
    "batching-zero": ([{"name": "f", "batching": {"max_batch": 0}}], "args.functions"),
    # a batched function whose input has no room for a batch dimension: REGISTER refused
    # it, and a new function table must too
    "batching-no-room": ([{"name": "f", "inputs": [{"name": "x", "shape": [4, 3]}],
                           "batching": {"max_batch": 8}}], "args.functions"),
    "spec-a-string": (["f"], "args.functions"),
    "bin-inside": ([{"name": "f", "doc": b"x"}], "args.functions.0.doc"),
}


@pytest.mark.parametrize("case", HOSTILE_FUNCTIONS, ids=str)
def test_rogue_worker_function_tables_are_checked(coord: Any, case: str) -> None:
    functions, field = HOSTILE_FUNCTIONS[case]
    name, session = _rogue_worker(coord)
    beat, msg = _functions(name, session, functions)
    coord.send_multipart([pack(beat)])
    answer = send(coord, [pack(msg)])
    assert isinstance(answer, ErrorMsg), f"accepted: {answer!r}"
    assert (answer.code, answer.field) == ("bad_header", field), answer
    serves_next(coord)
    # the table it had is untouched, and a valid one is taken
    beat, ok = _functions(name, session, [{"name": "g", "inputs": [
        {"name": "x", "shape": [None, 2], "range": [0, 1]}]}])
    coord.send_multipart([pack(beat)])
    answer = send(coord, [pack(ok)])
    assert isinstance(answer, ReplyMsg) and answer.body["functions"] == 1, answer


# --- the worker inbox, and the codec, agree on the same attacks ---------------------------------

INBOX_ATTACKS = {
    "shape-uint64": (_data(shape=[U64]), "bad_header", "tensors.0.shape.0"),
    "shape-float": (_data(shape=[1.0]), "bad_header", "tensors.0.shape.0"),
    "frame-bool": (_data(frame=True), "bad_header", "tensors.0.frame"),
    "dtype-unknown": (_data(dtype="float8"), "bad_tensor", "tensors.0.dtype"),
    "dtype-int": (_data(dtype=8), "bad_tensor", "tensors.0.dtype"),
    "timings-float": (h("data", graph="chain", run=new_id(), node="a",
                        timings={"a": {"compute_us": 1.5}}), "bad_header", "timings.*.*"),
    "timings-key-257": (h("data", graph="chain", run=new_id(), node="a",
                          timings={"a" * 257: {}}), "bad_header", "timings"),
    "place-value-int": (h("data", graph="chain", run=new_id(), node="a", place={"a": 1}),
                        "bad_header", "place.*"),
    "timeout-nan": (h("control", action="ping", timeout_s=math.nan), "bad_header", "timeout_s"),
    "action-int": (h("control", action=1), "bad_header", "action"),
    "names-bin": (h("param", op="get", names=[b"w"]), "bad_header", "names.0"),
    "args-list": (h("control", action="ping", args=[1]), "bad_header", "args"),
    "id-int": ({**h("control", action="ping"), "id": 5}, "bad_header", "id"),
    "missing-action": (h("control"), "bad_header", "action"),
}


@pytest.mark.parametrize("case", INBOX_ATTACKS, ids=str)
def test_worker_inbox_answers_like_the_codec(worker_sock: Any, case: str) -> None:
    header, code, field = INBOX_ATTACKS[case]
    refused(worker_sock, header, code, field,
            extra_frames=(b"\x00",) if header.get("tensors") else ())


def test_nil_for_optional_fields_means_absent(coord: Any) -> None:
    """SPEC 4: a receiver MUST accept "nil for an optional field (same as absent)", and "in a
    typed map, nil means absent". ``tensors`` (default []) and ``args`` (default {}) are
    optional, though their types have no nil: the codec drops nil fields before checking."""
    ping = h("control", action="ping", tensors=None, args=None, timeout_s=None, dst=None)
    answer = send(coord, [pack(ping)])
    assert isinstance(answer, ReplyMsg) and answer.reply_to == ping["id"], answer
