"""Write the golden vectors in protocol/golden/ from the Python codec.

    .venv/bin/python protocol/make_golden.py          # (re)write the files
    .venv/bin/python protocol/make_golden.py --check  # exit 1 if any file is stale

Every vector is built with fixed ids and fixed values, so the bytes never change
unless the encoding does. The file format is described in SPEC.md ("Golden
vectors"); tests/test_protocol_golden.py checks the Python codec against it.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_dtypes
import msgpack
import numpy as np

from interop_runtime.graph.compile import compile_graph
from interop_runtime.wire.codec import encode
from interop_runtime.wire.dtypes import STRING, WIRE_DTYPES, to_numpy_dtype, wire_dtype
from interop_runtime.wire.messages import (
    PROTOCOL_VERSION,
    BatchingSpec,
    ControlMsg,
    DataMsg,
    DeregisterMsg,
    DoneMsg,
    ErrorMsg,
    FunctionSpec,
    FunctionStats,
    GraphMsg,
    Header,
    HeartbeatMsg,
    ParamMsg,
    QueryMsg,
    RegisterMsg,
    ReplyMsg,
    RunMsg,
    TensorSpec,
    WorkerStats,
)
from interop_runtime.wire.payloads import GraphSpec
from interop_runtime.wire.strings import decode_strings

GOLDEN = Path(__file__).resolve().parent / "golden"
INVALID = GOLDEN / "invalid"
V = PROTOCOL_VERSION
CO = "coordinator"
W1_INBOX, W2_INBOX = "tcp://127.0.0.1:6001", "tcp://127.0.0.1:6002"
BF16 = ml_dtypes.bfloat16
CURVE_KEY = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"


# --- exact JSON for tensor values ------------------------------------------------------------

def _scalar(x: Any, name: str) -> Any:
    if name == STRING:
        return str(x)  # JSON strings are Unicode; the frame holds their UTF-8
    if name == "bool":
        return bool(x)
    if name.startswith(("int", "uint")):
        return int(x)  # JSON integers are exact here; readers limited to doubles use the frame
    f = float(x)  # exact: every wire float type is a subset of float64
    if math.isnan(f):
        return "nan"
    if math.isinf(f):
        return "inf" if f > 0 else "-inf"
    return f  # json writes the shortest decimal that reads back as this very double


def tensor_values(a: np.ndarray) -> Any:
    """Nested lists in C order; complex elements as [re, im]; non-finite as strings."""
    name = wire_dtype(a.dtype)
    if name.startswith("complex"):
        a = np.stack([a.real, a.imag], axis=-1)
    return np.frompyfunc(lambda x: _scalar(x, name), 1, 1)(a).tolist() if a.ndim else \
        _scalar(a[()], name)


# --- building vectors ------------------------------------------------------------------------

def vector(name: str, description: str, msg: Header, arrays: Mapping[str, Any] | None = None, *,
           layouts: Mapping[str, str] | None = None, devices: Mapping[str, str] | None = None,
           shared: Mapping[str, Any] | None = None) -> dict[str, Any]:
    frames = [bytes(f) for f in encode(msg, arrays, layouts=layouts, devices=devices,
                                       shared=shared)]
    tensors, in_shm = {}, {}
    for meta in msg.tensors:
        if meta.frame == 0:  # in shared memory: the header says where, no frame
            in_shm[meta.name] = {"dtype": meta.dtype, "shape": meta.shape,
                                 "shm": meta.shm.model_dump() if meta.shm else None}
            continue
        a = decode_strings(frames[meta.frame], meta.shape, meta.name, meta.name) \
            if meta.dtype == STRING else \
            np.frombuffer(frames[meta.frame], to_numpy_dtype(meta.dtype)).reshape(meta.shape)
        tensors[meta.name] = {"dtype": meta.dtype, "shape": meta.shape, "values": tensor_values(a)}
    out = {"name": name, "description": description, "frames": [f.hex() for f in frames],
           "header": msgpack.unpackb(frames[0], raw=False), "tensors": tensors}
    if in_shm:
        out["shared"] = in_shm
    return out


def invalid(name: str, description: str, frames: Sequence[bytes], code: str,
            **extra: Any) -> dict[str, Any]:
    return {"name": name, "description": description, "frames": [f.hex() for f in frames],
            "code": code, **extra}


def f32(*shape: int, start: float = 0.0, step: float = 0.5) -> np.ndarray:
    n = math.prod(shape)
    return (start + step * np.arange(n, dtype=np.float32)).reshape(shape)


# --- the example deployment the flow vectors share -------------------------------------------

def _fn(name: str, doc: str) -> FunctionSpec:
    return FunctionSpec(name=name, inputs=[TensorSpec(name="x", dtype="float32", shape=[None, 4])],
                        outputs=[TensorSpec(name="y", dtype="float32", shape=[None, 4])], doc=doc)


SCALE = _fn("scale", "Multiply by a constant factor.")
ADD_CONST = _fn("add_const", "Add a constant.")
PIPE = GraphSpec.model_validate({
    "name": "pipe",
    "nodes": {"a": {"worker": "w1", "function": "scale", "args": {"factor": 2.0}, "retries": 1},
              "b": {"worker": "w2", "function": "add_const", "args": {"value": 1.0}}},
    "edges": [{"src": "a.y", "dst": "b.x"}],
    "inputs": {"x": ["a.x"]},
    "outputs": {"y": "b.y"},
})
COMPILED = compile_graph(PIPE, {"w1": {"scale": SCALE}, "w2": {"add_const": ADD_CONST}},
                         {"w1": W1_INBOX, "w2": W2_INBOX}, version=1)
X = f32(2, 4)  # the run's input
A_OUT = X * 2.0
Y = A_OUT + 1.0


SESSION = "5f0c6d9e2a1b47c3a8e4f1d2b3c4a5e6"  # in real traffic: 128 random bits, hex
EPOCH = "0d1e2f3a4b5c6d7e8f90a1b2c3d4e5f6"


def worker_flow() -> list[dict[str, Any]]:
    return [
        vector("register", "A worker announces itself on its coordinator DEALER: its name, plugin, "
               "device, the inbox endpoint peers send DATA to, and its function signatures "
               "(a null shape entry is a dynamic dimension).",
               RegisterMsg(v=V, id="w1-0001", src="w1", name="w1", plugin="numpy", device="cpu",
                           endpoint=W1_INBOX, functions=[SCALE], pid=4242,
                           info={"python_version": "3.11.9"})),
        vector("register_curve", "A worker on a CURVE-secured cluster also announces its inbox's "
               "public key (Z85; this is the example key of the CurveZMQ documentation), which "
               "the coordinator hands to the workers that send it DATA.",
               RegisterMsg(v=V, id="w2-0001", src="w2", name="w2", plugin="torch",
                           device="cuda:0", endpoint=W2_INBOX, public_key=CURVE_KEY,
                           functions=[ADD_CONST], pid=4243)),
        vector("reply_register", "The coordinator accepts the registration. 'session' is the "
               "token every heartbeat of this worker must carry; 'heartbeat_s' and "
               "'dead_after_s' say how often to beat and when the worker counts as lost; "
               "'epoch' names this coordinator process (it changes on a restart).",
               ReplyMsg(v=V, id="co-0001", src=CO, reply_to="w1-0001",
                        body={"name": "w1", "session": SESSION, "heartbeat_s": 1.0,
                              "dead_after_s": 2.0, "epoch": EPOCH})),
        vector("heartbeat", "Liveness, sent every heartbeat interval on the worker's separate "
               "heartbeat DEALER with the session of its REGISTER reply; no reply when the "
               "worker is known and the session is right.",
               HeartbeatMsg(v=V, id="w1-0002", src="w1", name="w1", session=SESSION)),
        vector("heartbeat_busy", "A heartbeat from a worker that is computing.",
               HeartbeatMsg(v=V, id="w1-0003", src="w1", name="w1", busy=True, session=SESSION)),
        vector("heartbeat_stats", "A heartbeat with the worker's own metrics: totals per "
               "function since it started, and current levels (the coordinator exposes them "
               "as interop_worker_* series).",
               HeartbeatMsg(v=V, id="w1-0004", src="w1", name="w1", session=SESSION,
                            stats=WorkerStats(functions={"scale": FunctionStats(
                                calls=120, errors=1, compute_us=5400)}, pending=2,
                                bytes_in=983040, bytes_out=491520, rss_bytes=64487424))),
        vector("error_unauthorized_heartbeat", "A heartbeat for w1 whose session is not w1's "
               "(from another process): refused, and w1's liveness is not renewed.",
               ErrorMsg(v=V, id="co-0003", src=CO, reply_to="x-0002", code="unauthorized",
                        message="heartbeat for worker 'w1' without its session",
                        field="session", worker="w1")),
        vector("error_unknown_target_heartbeat", "The coordinator does not know this worker (it "
               "restarted or declared the worker lost): field 'name' tells the worker to REGISTER "
               "again.",
               ErrorMsg(v=V, id="co-0002", src=CO, reply_to="w1-0002", code="unknown_target",
                        message="worker 'w1' is not registered here; register again",
                        field="name", worker="w1")),
        vector("deregister", "A worker leaving cleanly; no reply.",
               DeregisterMsg(v=V, id="w1-0009", src="w1", name="w1", reason="shutdown")),
    ]


def graph_flow() -> list[dict[str, Any]]:
    plan = COMPILED.plans["w1"]
    return [
        vector("graph_register", "A client registers graph 'pipe': x -> a (w1.scale) -> b "
               "(w2.add_const) -> y.",
               GraphMsg(v=V, id="c-0001", src="client", op="register", spec=PIPE.model_dump())),
        vector("control_plan", "The coordinator installs w1's part of the graph; args.plan is a "
               "WorkerPlan (routes name the consumer's inbox endpoint).",
               ControlMsg(v=V, id="co-0003", src=CO, dst="w1", action="plan", graph="pipe",
                          args={"plan": plan.model_dump()})),
        vector("reply_plan", "w1 acknowledges the plan.",
               ReplyMsg(v=V, id="w1-0004", src="w1", reply_to="co-0003",
                        body={"graph": "pipe", "version": 1})),
        vector("reply_graph_registered", "Every worker acknowledged: the coordinator answers the "
               "client's GRAPH.",
               ReplyMsg(v=V, id="co-0005", src=CO, reply_to="c-0001",
                        body={"graph": "pipe", "version": 1, "order": COMPILED.order,
                              "workers": sorted(COMPILED.plans)})),
        vector("graph_validate", "Check a graph against the live workers without installing it.",
               GraphMsg(v=V, id="c-0009", src="client", op="validate", spec=PIPE.model_dump())),
        vector("graph_drop", "Drop a registered graph by name.",
               GraphMsg(v=V, id="c-0010", src="client", op="drop", graph="pipe")),
    ]


def run_flow() -> list[dict[str, Any]]:
    timings = {"a": {"worker": "w1", "compute_us": 12, "wait_us": 0, "bytes_out": 32,
                     "done_us": 240},
               "b": {"worker": "w2", "compute_us": 9, "wait_us": 0, "bytes_out": 0,
                     "done_us": 410}}
    return [
        vector("run", "A client runs 'pipe' once; tensors are the graph inputs by name.",
               RunMsg(v=V, id="c-0002", src="client", graph="pipe", run="run-0001",
                      timeout_s=30.0), {"x": X}),
        vector("data_input", "The coordinator hands node a its input (named by the node's input, "
               "not the graph's).",
               DataMsg(v=V, id="co-0006", src=CO, dst="w1", graph="pipe", run="run-0001",
                       node="a"), {"x": X}),
        vector("data_edge", "w1 sends a's output straight to w2's inbox for node b: edges never "
               "pass through the coordinator.",
               DataMsg(v=V, id="w1-0005", src="w1", graph="pipe", run="run-0001", node="b"),
               {"x": A_OUT}),
        vector("done", "w1 finished node a; a produces no graph output, so no tensors.",
               DoneMsg(v=V, id="w1-0006", src="w1", graph="pipe", run="run-0001", node="a",
                       compute_us=12, wait_us=0, bytes_out=32)),
        vector("done_outputs", "w2 finished node b and carries the graph output y.",
               DoneMsg(v=V, id="w2-0002", src="w2", graph="pipe", run="run-0001", node="b",
                       compute_us=9), {"y": Y}),
        vector("reply_run", "All nodes done: the coordinator answers the RUN with the outputs.",
               ReplyMsg(v=V, id="co-0007", src=CO, reply_to="c-0002",
                        body={"run": "run-0001", "graph": "pipe", "elapsed_us": 415,
                              "timings": timings}), {"y": Y}),
        vector("done_failed", "Node b failed in the plugin.",
               DoneMsg(v=V, id="w2-0003", src="w2", graph="pipe", run="run-0002", node="b",
                       ok=False, code="function_failed",
                       message="add_const raised ValueError: bad value")),
        vector("error_function_failed", "The coordinator fails run-0002 for its client.",
               ErrorMsg(v=V, id="co-0008", src=CO, reply_to="c-0003", code="function_failed",
                        message="node 'b' on worker 'w2' failed: add_const raised ValueError: "
                                "bad value", node="b", worker="w2", run="run-0002")),
        vector("control_cancel", "After a failure the coordinator tells the run's workers to drop "
               "its pending inputs.",
               ControlMsg(v=V, id="co-0009", src=CO, action="cancel", run="run-0002")),
        vector("run_detached", "A detached run: the coordinator replies at once; collect the "
               "outputs later with QUERY result.",
               RunMsg(v=V, id="c-0011", src="client", graph="pipe", run="run-0003", detach=True),
               {"x": X}),
        vector("query_result", "Collect a detached run's outputs (once).",
               QueryMsg(v=V, id="c-0012", src="client", what="result", run="run-0003")),
        vector("error_busy", "QUERY result for a run that is still running.",
               ErrorMsg(v=V, id="co-0012", src=CO, reply_to="c-0012", code="busy",
                        message="run run-0003 is still running", field="run")),
    ]


def control_param_flow() -> list[dict[str, Any]]:
    w = np.array([[1.0, -1.0], [0.25, 8.0]], dtype=np.float32)
    return [
        vector("control_invoke", "A client calls one function on worker w1 through the coordinator "
               "(which forwards it with a new id and relays the reply).",
               ControlMsg(v=V, id="c-0004", src="client", dst="w1", action="invoke",
                          function="scale", args={"factor": 3.0}), {"x": X}),
        vector("reply_invoke", "The relayed reply: src stays the worker, reply_to is the client's "
               "id, tensors are the function's outputs.",
               ReplyMsg(v=V, id="co-0011", src="w1", reply_to="c-0004", body={"compute_us": 15}),
               {"y": X * 3.0}),
        vector("param_get", "Read named parameter tensors of w1's model.",
               ParamMsg(v=V, id="c-0005", src="client", dst="w1", op="get", names=["w"])),
        vector("reply_param_get", "The parameters and the version they were read at.",
               ReplyMsg(v=V, id="co-0013", src="w1", reply_to="c-0005", body={"version": 0}),
               {"w": w}),
        vector("param_set", "Write a parameter, expecting the worker to be at version 0.",
               ParamMsg(v=V, id="c-0006", src="client", dst="w1", op="set", version=0),
               {"w": w * 2}),
        vector("reply_param_set", "The new parameter version.",
               ReplyMsg(v=V, id="co-0014", src="w1", reply_to="c-0006",
                        body={"version": 1, "names": ["w"]})),
        vector("query", "Ask the coordinator for its workers.",
               QueryMsg(v=V, id="c-0007", src="client", what="workers")),
        vector("reply_query_workers", "The coordinator's view of its workers (null is a real "
               "msgpack nil inside a free-form body).",
               ReplyMsg(v=V, id="co-0015", src=CO, reply_to="c-0007", body={"workers": [
                   {"name": "w1", "plugin": "numpy", "device": "cpu", "endpoint": W1_INBOX,
                    "alive": True, "pid": None, "last_seen_s": 0.25,
                    "info": {"python_version": "3.11.9"},
                    "functions": [SCALE.model_dump(exclude_none=True)]}]})),
    ]


def error_examples() -> list[dict[str, Any]]:
    return [
        vector("error_bad_header", "The answer to a header that failed validation; there is no "
               "reply_to because the request's id could not be trusted.",
               ErrorMsg(v=V, id="co-0016", src=CO, code="bad_header",
                        message="data header is invalid at graph: Field required", field="graph")),
        vector("error_version", "The answer to a header with an unsupported protocol version.",
               ErrorMsg(v=V, id="co-0017", src=CO, code="version",
                        message="protocol version 2 is not supported; this side speaks 1",
                        field="v")),
        vector("error_shape_mismatch", "GRAPH validate found an edge whose shapes do not fit.",
               ErrorMsg(v=V, id="co-0018", src=CO, reply_to="c-0013", code="shape_mismatch",
                        message="edge a.y -> b.x: a.y has shape [None, 4] but b.x wants [None, 3]",
                        node="b", edge="a.y -> b.x")),
        vector("error_worker_lost", "A worker stopped heartbeating while a node of the run was on "
               "it.",
               ErrorMsg(v=V, id="co-0019", src=CO, reply_to="c-0014", code="worker_lost",
                        message="worker 'w2' was lost (no heartbeat for 3.2s) while node(s) b of "
                                "run run-0004 were outstanding",
                        node="b", worker="w2", run="run-0004")),
        vector("error_unknown_target_dst", "CONTROL/PARAM named a worker the coordinator does not "
               "know.",
               ErrorMsg(v=V, id="co-0020", src=CO, reply_to="c-0015", code="unknown_target",
                        message="no worker named 'w9' (workers: w1, w2)", field="dst",
                        worker="w9")),
        vector("error_timeout", "A run passed its deadline.",
               ErrorMsg(v=V, id="co-0021", src=CO, reply_to="c-0016", code="timeout",
                        message="run run-0005 passed its deadline with nodes outstanding: b on w2",
                        node="b", run="run-0005")),
    ]


# --- tensors: every dtype, 0-d, empty, several ---------------------------------------------------

def _ints(name: str) -> np.ndarray:
    """Signed: min, -1, 0, max; unsigned: 0, 1, only the top bit set, max."""
    dtype = to_numpy_dtype(name)
    info = np.iinfo(dtype)
    values = [info.min, -1, 0, info.max] if info.min else [0, 1, 1 << (info.bits - 1), info.max]
    return np.array(values, dtype=dtype)


def dtype_examples() -> dict[str, np.ndarray]:
    nan, inf = float("nan"), float("inf")
    ex: dict[str, np.ndarray] = {"bool": np.array([[True, False], [False, True]])}
    for name in WIRE_DTYPES:
        if name.startswith(("int", "uint")):
            ex[name] = _ints(name)
    ex["float16"] = np.array([[0.0, -0.0, 1.0, -2.5], [65504.0, 2.0 ** -24, inf, nan]], "<f2")
    ex["bfloat16"] = np.array([[1.0, -0.0, 3.140625, 1 / 3],
                               [3.3895313892515355e38, 2.0 ** -133, -inf, nan]]).astype(BF16)
    ex["float32"] = np.array([[0.1, -0.0, 3.4028234663852886e38, 2.0 ** -149],
                              [1.0, inf, -inf, nan]], "<f4")
    ex["float64"] = np.array([[0.1, -0.0, 1.7976931348623157e308, 5e-324],
                              [1 / 3, inf, -inf, nan]], "<f8")
    ex["complex64"] = np.array([1 + 2j, complex(-0.5, -0.0), 0.1 + 1e-3j, complex(inf, nan)], "<c8")
    ex["complex128"] = np.array([1 + 2j, complex(-0.5, -0.0), 0.1 + 1e-3j, complex(-inf, 0.0)],
                                "<c16")
    return ex


_DTYPE_NOTES = {
    "bool": "one byte per element, 0 or 1",
    "float16": "IEEE binary16: zeros, the max 65504, the smallest subnormal, inf, nan",
    "bfloat16": "the upper 16 bits of the IEEE float32: 1/3 rounds to 0.333984375; max, smallest "
                "subnormal 2^-133, -inf, nan",
    "float32": "0.1 as float32 is 0.100000001490116119384765625 (written as the shortest decimal "
               "that round-trips); max, smallest subnormal, infinities, nan",
    "float64": "max, smallest subnormal 5e-324, infinities, nan",
    "complex64": "pairs of little-endian float32 (real, imaginary); values as [re, im]",
    "complex128": "pairs of little-endian float64 (real, imaginary); values as [re, im]",
}


def tensor_vectors() -> list[dict[str, Any]]:
    out = []
    for i, (name, a) in enumerate(dtype_examples().items(), start=1):
        note = _DTYPE_NOTES.get(name, "two's complement: min, -1, 0, max" if name[0] == "i"
                                else "0, 1, the top bit alone, max")
        out.append(vector(f"dtype_{name}", f"A {name} tensor: {note}.",
                          DataMsg(v=V, id=f"w1-1{i:03d}", src="w1", graph="dtypes", run="run-d",
                                  node="sink"), {"t": a}))
    out += [
        vector("tensor_0d", "0-d tensors: shape [] and exactly one element.",
               DataMsg(v=V, id="w1-2001", src="w1", graph="g", run="run-s", node="n"),
               {"s": np.float64(3.5), "k": np.array(-7, dtype=np.int64)}),
        vector("tensor_empty", "Empty tensors: a zero in the shape, a zero-length frame.",
               DataMsg(v=V, id="w1-2002", src="w1", graph="g", run="run-e", node="n"),
               {"e": np.zeros((0, 3), np.float32), "f": np.zeros((2, 0), np.int32)}),
        vector("multi_tensor", "Several tensors of different dtypes in one message, with the "
               "optional device and layout hints.",
               DataMsg(v=V, id="w1-2003", src="w1", dst="w2", graph="g", run="run-m", node="n"),
               {"image": np.arange(12, dtype=np.uint8).reshape(1, 3, 2, 2),
                "mask": np.array([[True, False], [True, True]]),
                "scale": np.float32(0.5)},
               layouts={"image": "NCHW"}, devices={"image": "cuda:0", "scale": "cpu"}),
    ]
    return out


HOST = "8f3c2a1e-5b7d-4e90-a1c2-3d4e5f607182:4026531836:1000"  # boot_id:pidns:uid
CLIENT_ID = "a3f1c2d4e5b60718293a4b5c6d7e8f90"  # the client's routing id, hex
ROUTES_ID = "6b1f0e2d3c4a59687f8e9d0c1b2a3948"
HANDLE = {"token": "2e9a7c4b1d0f38a6e5b4c3d2f1a09e8d", "pid": 4242, "fd": 17, "off": 64,
          "len": 64 << 20, "gen": 3}


def direct_flow() -> list[dict[str, Any]]:
    """Section 16 and 17: a direct run of a graph 'chain' (x -> a on w1 -> b on w2 -> y, no
    retries), and a tensor in shared memory."""
    worker = {"endpoint": W1_INBOX, "public_key": CURVE_KEY, "host": HOST}
    t_a = {"worker": "w1", "compute_us": 11, "wait_us": 0, "bytes_out": 32,
           "end_unix_us": 1764590400000120}
    t_b = {"worker": "w2", "compute_us": 8, "wait_us": 0, "bytes_out": 0,
           "end_unix_us": 1764590400000260}
    return [
        vector("register_shm", "A worker that takes shared memory announces its host key "
               "(boot id, pid namespace, user id).",
               RegisterMsg(v=V, id="w1-0011", src="w1", name="w1", plugin="numpy",
                           endpoint=W1_INBOX, functions=[SCALE], pid=4242, host=HOST)),
        vector("query_routes", "A client asks where a direct run of 'chain' sends its inputs "
               "and who sends back its outputs.",
               QueryMsg(v=V, id="c-0101", src="client", what="routes", graph="chain")),
        vector("reply_routes", "The routes: graph input x goes to node a's input x on w1's "
               "inbox; output y comes from w2. routes_id names this compilation.",
               ReplyMsg(v=V, id="co-0101", src=CO, reply_to="c-0101", body={
                   "graph": "chain", "version": 1, "direct": True, "epoch": EPOCH,
                   "routes_id": ROUTES_ID,
                   "inputs": {"x": [{"worker": "w1", **worker, "node": "a", "input": "x"}]},
                   "input_specs": {"x": {"name": "x", "dtype": "float32", "shape": [None, 4]}},
                   "outputs": {"y": {"worker": "w2", "endpoint": W2_INBOX,
                                     "public_key": CURVE_KEY, "host": HOST}}})),
        vector("run_direct", "The run's record for the coordinator: no tensors, their size for "
               "admission, and the routes it used.",
               RunMsg(v=V, id="c-0102", src="client", graph="chain", run="run-0003",
                      timeout_s=30.0, direct=True, input_bytes=32, routes=ROUTES_ID)),
        vector("data_direct_input", "At the same time, the client sends node a its input, on "
               "w1's inbox (w1 learns the client's routing id from the connection).",
               DataMsg(v=V, id="c-0103", src="client", graph="chain", run="run-0003", node="a",
                       client_host=HOST), {"x": X}),
        vector("data_direct_edge", "w1 to w2: the edge, with the client's routing id and host "
               "key, and node a's timing.",
               DataMsg(v=V, id="w1-0103", src="w1", graph="chain", run="run-0003", node="b",
                       client=CLIENT_ID, client_host=HOST, timings={"a": t_a}), {"x": A_OUT}),
        vector("data_direct_output", "w2 to the client, on w2's inbox to the client's routing "
               "id: graph output y, with the timings of the nodes upstream of it.",
               DataMsg(v=V, id="w2-0103", src="w2", graph="chain", run="run-0003", node="b",
                       timings={"a": t_a, "b": t_b}), {"y": Y}),
        vector("data_shm", "A 64 MiB tensor between two processes with the same host key: "
               "frame 0 and a handle to segment 2e9a... of process 4242 at generation 3. The "
               "message has no buffer frame.",
               DataMsg(v=V, id="w1-0104", src="w1", graph="chain", run="run-0004", node="b",
                       client=CLIENT_ID, client_host=HOST),
               shared={"x": ("float32", [4096, 4096], HANDLE)}),
        vector("control_release", "w2 has run node b: it hands the segment back, on its inbox "
               "to the connection the handle came on. No reply.",
               ControlMsg(v=V, id="w2-0104", src="w2", action="release", run="run-0004",
                          args={"handles": [HANDLE]})),
        vector("error_bad_handle", "A handle that does not open a live segment at its "
               "generation: refused, without quoting it.",
               ErrorMsg(v=V, id="w2-0105", src="w2", reply_to="x-0104", code="bad_handle",
                        message="stale shared-memory handle: the segment was reused",
                        field="tensors", run="run-0005")),
    ]


def valid_vectors() -> list[dict[str, Any]]:
    groups: list[Callable[[], list[dict[str, Any]]]] = [
        worker_flow, graph_flow, run_flow, control_param_flow, error_examples, tensor_vectors,
        direct_flow, string_vectors, range_vectors, batching_vectors, pool_vectors,
        model_vectors]
    return [v for g in groups for v in g()]


def batching_vectors() -> list[dict[str, Any]]:
    """v4: dynamic batching (section 8.6): FunctionSpec.batching, batch counts in stats."""
    batched = SCALE.model_copy(update={"batching": BatchingSpec(max_batch=32, max_delay_ms=2.0)})
    stats = WorkerStats(functions={"scale": FunctionStats(
        calls=40, errors=0, compute_us=8100, batches=40, batched_runs=512)}, pending=0)
    return [vector("register_batching", "A worker that batches concurrent runs of 'scale': up to "
                   "32 rows along dim 0, the first waiting at most 2 ms (informative: peers see "
                   "only timing change).",
                   RegisterMsg(v=V, id="w1-5001", src="w1", name="w1", plugin="numpy",
                               endpoint=W1_INBOX, functions=[batched], pid=4242)),
            vector("heartbeat_batching", "Its stats: 40 calls served 512 runs (a mean batch "
                   "of 12.8 runs).",
                   HeartbeatMsg(v=V, id="w1-5002", src="w1", name="w1", session=SESSION,
                                stats=stats))]


def pool_vectors() -> list[dict[str, Any]]:
    """v4: replica pools (section 19): a replica joins, a run placed on one, a drain."""
    graph = GraphSpec.model_validate({
        "name": "pooled", "nodes": {"a": {"worker": "w1", "function": "scale"},
                                    "p": {"pool": "rep", "function": "scale"}},
        "edges": ["a.y -> p.x"], "inputs": {"x": "a.x"}, "outputs": {"y": "p.y"}})
    return [
        vector("register_pool", "A replica of pool 'rep' joins (under CURVE its key's role "
               "must grant the pool).",
               RegisterMsg(v=V, id="r1-0001", src="rep-1", name="rep-1", plugin="numpy",
                           endpoint=W2_INBOX, functions=[SCALE], pid=4343, host=HOST,
                           pool="rep")),
        vector("graph_register_pool", "A graph whose node p runs on any replica of 'rep'.",
               GraphMsg(v=V, id="c-0201", src="client", op="register",
                        spec=graph.model_dump(exclude_defaults=True))),
        vector("run_direct_placed", "A direct run the client placed: node p on rep-1.",
               RunMsg(v=V, id="c-0202", src="client", graph="pooled", run="run-0201",
                      direct=True, input_bytes=32, routes=ROUTES_ID, place={"p": "rep-1"})),
        vector("data_placed_edge", "w1 to rep-1, the replica the run's placement names; the "
               "placement travels downstream with the run.",
               DataMsg(v=V, id="w1-0201", src="w1", graph="pooled", run="run-0201", node="p",
                       client=CLIENT_ID, client_host=HOST, place={"p": "rep-1"}),
               {"x": A_OUT}),
        vector("control_drain", "A client asks the coordinator to drain rep-1: no new runs; "
               "it is shut down once its runs are done.",
               ControlMsg(v=V, id="c-0203", src="client", action="drain",
                          args={"worker": "rep-1"})),
    ]


def model_vectors() -> list[dict[str, Any]]:
    """v4: models in running workers (section 9.4): a client's load, the worker's new
    function table, a run of a graph that no longer fits."""
    resnet = SCALE.model_copy(update={"name": "resnet/run"})
    return [
        vector("control_load_model", "A client asks the coordinator to load model resnet, "
               "version 2, into w1 (a file path only); the coordinator sends w1 its own load.",
               ControlMsg(v=V, id="c-0301", src="client", action="load",
                          args={"worker": "w1", "model": "resnet", "version": "2",
                                "config": {"model": "/models/resnet/2/model.onnx"}})),
        vector("control_functions", "w1's whole new function table, on its own registration "
               "connection, before it replies to the load.",
               ControlMsg(v=V, id="w1-0301", src="w1", action="functions",
                          args={"functions": [SCALE.model_dump(exclude_none=True),
                                              resnet.model_dump(exclude_none=True)]})),
        vector("error_graph_invalid", "A run of a graph whose edge no longer fits after w1 "
               "replaced a model.",
               ErrorMsg(v=V, id="co-0301", src=CO, reply_to="c-0302", code="graph_invalid",
                        message="graph 'chain' no longer fits the functions of worker 'w1': "
                                "edge 'a.y -> b.x': shape [1, 2] does not fit [7]",
                        edge="a.y -> b.x", worker="w1")),
    ]


def range_vectors() -> list[dict[str, Any]]:
    """v4: TensorSpec.range, the values an input accepts (section 5.2, REGISTER)."""
    encode_fn = FunctionSpec(name="forward", doc="a text encoder", inputs=[
        TensorSpec(name="input_ids", dtype="int64", shape=[None, 16], range=[0, 30521]),
        TensorSpec(name="attention_mask", dtype="int64", shape=[None, 16], range=[0, 1])],
        outputs=[TensorSpec(name="logits", dtype="float32", shape=[None, 2])])
    return [vector("register_input_ranges", "A worker whose function states the values its "
                   "inputs accept: token ids below the embedding's 30522 rows, a 0/1 mask.",
                   RegisterMsg(v=V, id="w1-4001", src="w1", name="w1", plugin="torch",
                               endpoint=W1_INBOX, functions=[encode_fn], pid=4242))]


# --- invalid messages -------------------------------------------------------------------------

def _pack(header: dict[str, Any]) -> bytes:
    return msgpack.packb(header, use_bin_type=True)


def _data(**fields: Any) -> dict[str, Any]:
    return {"kind": "data", "v": V, "id": "x-0001", "src": "w1", **fields,
            "graph": "g", "run": "r", "node": "n"}


def _t(name: str, dtype: str, shape: list[Any], frame: Any) -> dict[str, Any]:
    return {"name": name, "dtype": dtype, "shape": shape, "frame": frame}


def _nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def invalid_vectors() -> list[dict[str, Any]]:
    four = np.arange(4, dtype="<f4").tobytes()
    two = _pack(_data(tensors=[_t("a", "float32", [4], 1), _t("b", "float32", [4], 2)]))
    ok = _pack(_data(tensors=[_t("a", "float32", [4], 1)]))
    no_graph = {k: v for k, v in _data().items() if k != "graph"}
    return [
        invalid("empty_message", "A message with no frames at all.", [], "bad_frame"),
        invalid("garbage_header", "Frame 0 is not msgpack (0xc1 is never used in msgpack).",
                [b"\xc1\xff\x00garbage"], "bad_frame"),
        invalid("truncated_header", "Frame 0 is a msgpack map cut short.", [ok[:20]], "bad_frame"),
        invalid("header_not_a_map", "Frame 0 is valid msgpack but an array, not a map.",
                [_pack(["data", 1, "x-0001"])], "bad_frame"),
        invalid("invalid_utf8", "A header string that is not UTF-8.",
                [ok.replace(b"\xa2w1", b"\xa2\xff\xfe")], "bad_frame"),
        invalid("truncated_multipart", "The header references frames 1 and 2; frame 2 is missing.",
                [two, four], "bad_frame"),
        invalid("unreferenced_frame", "A buffer frame that no tensor references.",
                [ok, four, four], "bad_frame"),
        invalid("wrong_version", f"v is 1; this is protocol version {V}.",
                [_pack({**_data(), "v": 1})], "version"),
        invalid("missing_version", "No v field.",
                [_pack({k: v for k, v in _data().items() if k != "v"})], "bad_header"),
        invalid("unknown_kind", "kind 'stream' is not in the closed list.",
                [_pack({**_data(), "kind": "stream"})], "unknown_kind"),
        invalid("missing_kind", "No kind field.",
                [_pack({k: v for k, v in _data().items() if k != "kind"})], "unknown_kind"),
        invalid("missing_required_field", "A DATA header without its graph.",
                [_pack(no_graph)], "bad_header"),
        invalid("wrong_field_type", "A shape entry that is a string, not an integer.",
                [_pack(_data(tensors=[_t("a", "float32", ["4"], 1)])), four], "bad_header"),
        invalid("negative_dimension", "A shape entry below zero.",
                [_pack(_data(tensors=[_t("a", "float32", [-4], 1)])), four], "bad_header"),
        invalid("frame_zero", "A tensor pointing at frame 0 (the header) without a "
                "shared-memory handle.",
                [_pack(_data(tensors=[_t("a", "float32", [4], 0)])), four], "bad_header"),
        invalid("shm_and_frame", "A tensor that names both a buffer frame and a shared-memory "
                "handle.",
                [_pack(_data(tensors=[{**_t("a", "float32", [4], 1), "shm": {**HANDLE,
                                                                           "len": 16}}])),
                 four], "bad_header"),
        invalid("shm_length_mismatch", "A shared-memory handle whose length is not dtype x "
                "shape.",
                [_pack(_data(tensors=[{**_t("a", "float32", [4], 0), "shm": {**HANDLE,
                                                                           "len": 15}}]))],
                "bad_tensor"),
        invalid("shm_bad_token", "A handle whose token is not 32 lowercase hex digits.",
                [_pack(_data(tensors=[{**_t("a", "float32", [4], 0), "shm": {
                    **HANDLE, "token": "../../etc/passwd", "len": 16}}]))], "bad_header"),
        invalid("frame_referenced_twice", "Two tensors share one buffer frame.",
                [_pack(_data(tensors=[_t("a", "float32", [4], 1), _t("b", "float32", [4], 1)])),
                 four], "bad_header"),
        invalid("duplicate_tensor_name", "Two tensors with the same name.",
                [_pack(_data(tensors=[_t("a", "float32", [4], 1), _t("a", "float32", [4], 2)])),
                 four, four], "bad_header"),
        invalid("unknown_dtype", "A tensor dtype not in the table.",
                [_pack(_data(tensors=[_t("a", "float8", [4], 1)])), four], "bad_tensor"),
        invalid("byte_length_mismatch", "float32 x [4] needs 16 bytes; the frame has 12.",
                [ok, four[:12]], "bad_tensor"),
        invalid("too_many_dimensions", "A tensor with 33 dimensions (at most 32).",
                [_pack(_data(tensors=[_t("a", "float32", [1] * 33, 1)])), four[:4]],
                "bad_header"),
        invalid("dimension_too_big", "A dimension of 2**63 (each must be below 2**63).",
                [_pack(_data(tensors=[_t("a", "uint8", [1 << 63], 1)])), b""], "bad_header"),
        invalid("element_count_too_big", "Dimensions whose product is 2**64: the element count "
                "must stay below 2**63, checked before any arithmetic on it.",
                [_pack(_data(tensors=[_t("a", "uint8", [1 << 32, 1 << 32], 1)])), b""],
                "bad_header"),
        invalid("bin_in_args", "A msgpack bin value inside CONTROL args: headers carry no bytes.",
                [_pack({"kind": "control", "v": V, "id": "x-0003", "action": "invoke",
                        "function": "f", "args": {"blob": b"\x00\x01"}})], "bad_header"),
        invalid("ext_in_spec", "A msgpack ext value inside a GRAPH spec.",
                [_pack({"kind": "graph", "v": V, "id": "x-0004", "op": "validate",
                        "spec": {"name": msgpack.ExtType(7, b"x")}})], "bad_header"),
        invalid("nested_too_deep", "CONTROL args nested 40 levels deep (at most 32).",
                [_pack({"kind": "control", "v": V, "id": "x-0005", "action": "invoke",
                        "function": "f", "args": {"a": _nested(40)}})], "bad_header"),
        invalid("nan_in_args", "A NaN inside CONTROL args: args are JSON, finite numbers only.",
                [_pack({"kind": "control", "v": V, "id": "x-0006", "action": "invoke",
                        "function": "f", "args": {"scale": float("nan")}})], "bad_header"),
        invalid("nan_timeout", "A RUN whose timeout_s is NaN: a deadline is a finite number of "
                "seconds, above 0 and at most a week.",
                [_pack({"kind": "run", "v": V, "id": "x-0007", "graph": "g", "run": "r",
                        "timeout_s": float("nan")})], "bad_header"),
        invalid("too_large", "32 float32 (128 bytes) plus the header, sent to a receiver that "
                "accepts at most 128 bytes in all.",
                [_pack(_data(tensors=[_t("a", "float32", [32], 1)])), bytes(128)], "too_large",
                max_message_bytes=128),
        *invalid_string_vectors(),
    ]


# --- string tensors (SPEC section 3.4) -----------------------------------------------------------

def string_vectors() -> list[dict[str, Any]]:
    return [
        vector("dtype_string", "A 2x2 string tensor: one frame of 5 int64 offsets [0, 0, 6, 15, "
               "29] then the UTF-8 data; an empty string, 2-, 3- and 4-byte UTF-8 characters.",
               DataMsg(v=V, id="w1-3001", src="w1", graph="g", run="run-t", node="n"),
               {"t": np.array([["", "héllo"], ["日本語", "naïve 🙂 ok"]], dtype=object)}),
        vector("string_0d_and_empty", "A 0-d string tensor (one offset pair) and an empty one "
               "(shape [0]: the frame is the single offset 0, 8 bytes, never zero-length).",
               DataMsg(v=V, id="w1-3002", src="w1", graph="g", run="run-t", node="n"),
               {"s": np.array("ß", dtype=object), "e": np.zeros(0, dtype=object)}),
    ]


def _strings_frame(offsets: Sequence[int], data: bytes) -> bytes:
    return np.array(offsets, "<i8").tobytes() + data


def invalid_string_vectors() -> list[dict[str, Any]]:
    def bad(name: str, description: str, shape: list[int], frame: bytes,
            code: str = "bad_tensor", **extra: Any) -> dict[str, Any]:
        head = _pack(_data(tensors=[_t("s", STRING, shape, 1)]))
        return invalid(name, description, [head, frame], code, **extra)
    return [
        bad("string_invalid_utf8", "Element 1 is the byte 0xff, never valid in UTF-8.", [2],
            _strings_frame([0, 2, 3], b"ok\xff")),
        bad("string_overlong_utf8", "Element 0 is c0 af, an overlong '/': refused like any "
            "invalid UTF-8 (RFC 3629).", [1], _strings_frame([0, 2], b"\xc0\xaf")),
        bad("string_surrogate_utf8", "Element 0 is ed a0 80, the UTF-8 form of the surrogate "
            "U+D800, which UTF-8 excludes.", [1], _strings_frame([0, 3], b"\xed\xa0\x80")),
        bad("string_split_character", "The data as a whole is valid UTF-8 ('é' is c3 a9) but an "
            "offset falls inside the character: each element is checked on its own.", [2],
            _strings_frame([0, 1, 2], "é".encode())),
        bad("string_offsets_not_from_zero", "The first offset is 1, not 0.", [2],
            _strings_frame([1, 2, 3], b"abc")),
        bad("string_offsets_decreasing", "Offsets 0, 3, 1, 4: element 1 would end before it "
            "starts.", [3], _strings_frame([0, 3, 1, 4], b"abcd")),
        bad("string_offsets_beyond_data", "The last offset is 9 but the data has 4 bytes.", [2],
            _strings_frame([0, 2, 9], b"abcd")),
        bad("string_offsets_short_of_data", "The last offset is 3 but the data has 4 bytes: "
            "trailing bytes no element owns.", [2], _strings_frame([0, 2, 3], b"abcd")),
        bad("string_frame_shorter_than_offsets", "Shape [4] needs 5 offsets (40 bytes); the frame "
            "has only 3 offsets and 2 data bytes.", [4], _strings_frame([0, 1, 2], b"ab")),
        bad("string_offsets_too_large", "Shape [1000] would need 8008 bytes of offsets, over a "
            "receiver that accepts at most 256 bytes in all.", [1000], _strings_frame([0], b""),
            code="too_large", max_message_bytes=256),
        invalid("string_in_shared_memory", "A string tensor with frame 0 and a shared-memory "
                "handle: strings travel as frames only.",
                [_pack(_data(tensors=[{**_t("s", STRING, [2], 0),
                                       "shm": {**HANDLE, "len": 16}}]))], "bad_tensor"),
    ]


# --- files ---------------------------------------------------------------------------------------

def _json(obj: Any, indent: int = 0, width: int = 100) -> str:
    """Indented JSON that keeps any list or map fitting in ``width`` on one line."""
    flat = json.dumps(obj, ensure_ascii=False, allow_nan=False)
    if not isinstance(obj, (list, dict)) or not obj or indent + len(flat) <= width:
        return flat
    pad = " " * (indent + 2)
    if isinstance(obj, list):
        items = [pad + _json(x, indent + 2, width) for x in obj]
        return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"
    items = [f"{pad}{json.dumps(k, ensure_ascii=False)}: {_json(v, indent + 2, width)}"
             for k, v in obj.items()]
    return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"


def render(vec: Mapping[str, Any]) -> str:
    return _json(vec) + "\n"


def expected_files() -> dict[Path, str]:
    files: dict[Path, str] = {}
    for folder, vectors in ((GOLDEN, valid_vectors()), (INVALID, invalid_vectors())):
        for vec in vectors:
            path = folder / f"{vec['name']}.json"
            if path in files:
                raise RuntimeError(f"two vectors are named {vec['name']!r}")
            files[path] = render(vec)
    return files


def stale_files(files: Mapping[Path, str]) -> list[Path]:
    """Files that differ from what would be written, or should not be there at all."""
    present = set(GOLDEN.glob("*.json")) | set(INVALID.glob("*.json"))
    changed = [p for p, text in files.items()
               if not p.exists() or p.read_text(encoding="utf-8") != text]
    return sorted(changed + [p for p in present if p not in files])


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    files = expected_files()
    stale = stale_files(files)
    if "--check" in args:
        for p in stale:
            print(f"stale: {p}")
        return 1 if stale else 0
    INVALID.mkdir(parents=True, exist_ok=True)
    for path in stale:
        if path in files:
            path.write_text(files[path], encoding="utf-8")
        else:
            path.unlink()
    print(f"{len(files)} vectors in {GOLDEN}; {len(stale)} written or removed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
