"""Wire message models: the msgpack header of every message, one model per kind.

A message on the wire is ``[header, buffer_0, buffer_1, ...]``; the header is a
msgpack map validated here, and each ``TensorMeta.frame`` indexes a raw buffer
frame (1-based: frame 0 is the header). The language-neutral definition of all
of this is ``protocol/SPEC.md``; ``protocol/schema.json`` is generated from
these models and a test keeps the two in step.

The models are msgspec structs (wire/model.py): the codec validates every header
against them, types and constraints, in strict mode. Receivers ignore unknown fields
so that minor additions stay compatible; a new *kind* or a changed meaning bumps
``PROTOCOL_VERSION``.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any, ClassVar, Literal

from msgspec import Meta

from interop_runtime.wire.dtypes import DTYPE_NAMES
from interop_runtime.wire.model import WireModel

PROTOCOL_VERSION = 4

MAX_NDIM = 32  # dimensions of one tensor
MAX_DIM = (1 << 63) - 1  # a dimension, and a tensor's element count, stay below 2**63
MAX_TIMEOUT_S = 7 * 24 * 3600.0

Name = Annotated[str, Meta(min_length=1, max_length=256)]
Ref = Annotated[str, Meta(max_length=256)]  # a name that refers to something (may be empty)
DTypeName = Literal[DTYPE_NAMES]  # type: ignore[valid-type]
# node -> {worker, compute_us, wait_us, bytes_out, start_unix_us, end_unix_us}: typed, so that validation
# (not a walk in Python) keeps it to plain strings and integers
Timings = Annotated[dict[Name, dict[Name, int | str]], Meta(max_length=10_000)]
# a run's replica placement (SPEC section 19): pool node -> the worker that runs it
Placement = Annotated[dict[Name, Name], Meta(max_length=10_000)]
Dim = Annotated[int, Meta(ge=0, le=MAX_DIM)]
# finite and at most a week: a NaN or infinite deadline would make a run that never ends
Timeout = Annotated[float, Meta(gt=0, le=MAX_TIMEOUT_S)]
Finite = Annotated[float, Meta(ge=-sys.float_info.max, le=sys.float_info.max)]  # no NaN, no inf


def hex_pattern(digits: str) -> str:
    """Only hex digits, to the end: ``(?!\n)`` because Python's ``$`` also matches before a
    final newline, which JSON Schema's (ECMA-262) does not."""
    return rf"^[0-9a-f]{digits}(?!\n)$"


class ShmHandleModel(WireModel, kw_only=True, forbid_unknown_fields=True):
    """Where a tensor's bytes are in a same-host shared-memory segment (SPEC section 17):
    the producer's segment ``token``, opened as ``/proc/<pid>/fd/<fd>``, ``len`` bytes at
    ``off``, valid while the segment's header holds generation ``gen``."""

    token: Annotated[str, Meta(pattern=hex_pattern("{32}"))]
    pid: Annotated[int, Meta(ge=1, le=MAX_DIM)]
    fd: Dim
    off: Dim
    len: Dim
    gen: Dim


# Headers and TensorMetas refuse unknown fields *as models*, so that the codec's one-call
# decoder (wire/codec.py) can tell a header it must look at more closely; on the wire
# unknown fields are still ignored (SPEC section 4): the codec drops them before it converts.
class TensorMeta(WireModel, kw_only=True, forbid_unknown_fields=True):
    """Where one tensor's bytes are and how to read them: buffer frame ``frame`` (1-based),
    or, with ``frame`` 0, the shared-memory segment that ``shm`` names."""

    name: Name
    dtype: DTypeName
    shape: Annotated[list[Dim], Meta(max_length=MAX_NDIM)]
    frame: Annotated[int, Meta(ge=0, le=1 << 20)]
    shm: ShmHandleModel | None = None
    device: str | None = None  # the device it came from, a hint ("cpu", "cuda:0")
    layout: str | None = None  # "NCHW", "NHWC", ... a hint for the consumer


class TensorSpec(WireModel, kw_only=True):
    """What a function accepts or returns: None dtype = any, None shape = any rank,
    a None entry in shape = a dynamic dimension."""

    name: Name
    dtype: DTypeName | None = None
    shape: list[int | None] | None = None
    layout: str | None = None
    # [lo, hi], inclusive: the values the model accepts where it states them (token ids
    # below an embedding's rows, a mask's 0/1); a hint for input generators, never enforced
    range: Annotated[list[int | Finite], Meta(min_length=2, max_length=2)] | None = None


MAX_BATCH = 4096  # rows in one batched call
MAX_FUNCTIONS = 4_096  # functions one worker may announce
MAX_BATCH_DELAY_MS = 1000.0


class BatchingSpec(WireModel, kw_only=True):
    """A function's dynamic batching (SPEC "Dynamic batching"): the worker stacks concurrent
    runs' inputs along ``dim``, up to ``max_batch`` rows, waiting at most ``max_delay_ms``
    after the first. Informative for peers: only timing changes."""

    max_batch: Annotated[int, Meta(ge=1, le=MAX_BATCH)]
    max_delay_ms: Annotated[float, Meta(ge=0, le=MAX_BATCH_DELAY_MS)] = 2.0
    dim: Annotated[int, Meta(ge=0, lt=MAX_NDIM)] = 0


class FunctionSpec(WireModel, kw_only=True):
    name: Name
    inputs: list[TensorSpec] = []
    outputs: list[TensorSpec] = []
    doc: str | None = None
    batching: BatchingSpec | None = None  # absent: one run per call


class Header(WireModel, kw_only=True, tag_field="kind", forbid_unknown_fields=True):
    kind: ClassVar[str]  # the tag: what the header's "kind" says, one value per model
    v: int
    id: Annotated[str, Meta(min_length=1, max_length=128)]
    src: Ref | None = None
    dst: Ref | None = None
    tensors: list[TensorMeta] = []


# --- the three message kinds of the design -------------------------------------------

class DataMsg(Header, kw_only=True, tag="data"):
    """Tensors for a target node of a run (client inputs, worker-to-worker edges), or a
    direct run's graph outputs on their way to the client (``node`` = the producer)."""

    kind: ClassVar[str] = "data"
    graph: Ref
    run: Ref
    node: Ref
    # a direct run (SPEC section 16): the client's routing id (hex) that graph outputs go
    # back to, and its host key (shared memory is used only on the same host)
    client: Annotated[str, Meta(pattern=hex_pattern("{2,64}"))] | None = None
    client_host: Ref | None = None
    # a direct run: what the nodes upstream of this tensor cost, node -> timing map
    timings: Timings | None = None
    # which replica runs each pool node of this run (SPEC section 19); travels downstream
    place: Placement | None = None


ControlAction = Literal[
    "invoke", "load", "unload", "pause", "resume", "cancel", "shutdown", "plan", "describe", "ping",
    "model", "release", "drain",
    "functions",  # a worker's new function table, to the coordinator (SPEC 9.4)
]


class ControlMsg(Header, kw_only=True, tag="control"):
    """A signal for a target: invoke a function with arguments, or change state.

    ``dst`` names the worker; ``node`` the graph node where it applies; ``run``
    the run for ``cancel``. ``args`` is a free msgpack map for the action."""

    kind: ClassVar[str] = "control"
    action: ControlAction
    function: Ref | None = None
    node: Ref | None = None
    graph: Ref | None = None
    run: Ref | None = None
    args: dict[str, Any] = {}
    # how long the sender waits for the answer: the coordinator keeps a forwarded request
    # open that long (default: its own request timeout, 30 s)
    timeout_s: Timeout | None = None


ParamOp = Literal["list", "get", "set"]


class ParamMsg(Header, kw_only=True, tag="param"):
    """Read or write named parameter tensors of a worker's model."""

    kind: ClassVar[str] = "param"
    op: ParamOp
    names: list[str] | None = None  # None = all (for get)
    version: int | None = None  # on set: expected current version (optimistic), optional
    timeout_s: Timeout | None = None


# --- replies ------------------------------------------------------------------------

class ReplyMsg(Header, kw_only=True, tag="reply"):
    """Success reply to any request; ``body`` is a request-specific map."""

    kind: ClassVar[str] = "reply"
    reply_to: str
    body: dict[str, Any] = {}


class ErrorMsg(Header, kw_only=True, tag="error"):
    """Typed failure reply; ``code`` is from the closed list in errors.ErrorCode."""

    kind: ClassVar[str] = "error"
    reply_to: str | None = None
    code: str
    message: str
    field: str | None = None
    node: str | None = None
    edge: str | None = None
    worker: str | None = None
    run: str | None = None


# --- worker <-> coordinator --------------------------------------------------------

class RegisterMsg(Header, kw_only=True, tag="register"):
    kind: ClassVar[str] = "register"
    name: Name
    plugin: str
    device: str = "cpu"
    endpoint: str  # the worker's inbox, where peers send DATA
    public_key: str | None = None  # the inbox's CURVE public key (Z85), when CURVE is on
    functions: Annotated[list[FunctionSpec], Meta(max_length=MAX_FUNCTIONS)] = []
    pid: int | None = None
    info: dict[str, Any] = {}
    # the host key of processes that can map this worker's shared memory (SPEC section
    # 17); absent: the worker declines shared memory and gets frames only
    host: Ref | None = None
    # the replica pool this worker serves in (SPEC section 19); graph nodes may name it
    pool: Name | None = None


Count = Dim
MAX_STATS_FUNCTIONS = 256  # functions one heartbeat reports on


class FunctionStats(WireModel, kw_only=True):
    """One function's totals since the worker started."""

    calls: Count = 0
    errors: Count = 0
    compute_us: Count = 0
    # a batched function only: calls its batcher made, and the runs they served
    batches: Count | None = None
    batched_runs: Count | None = None


class WorkerStats(WireModel, kw_only=True):
    """A worker's own metrics, on its heartbeat (SPEC section 5.2): totals since it
    started, and current levels. Typed and bounded, so a hostile map is refused whole."""

    functions: Annotated[dict[Name, FunctionStats], Meta(max_length=MAX_STATS_FUNCTIONS)] = {}
    pending: Count = 0  # (run, node) entries waiting for inputs
    bytes_in: Count = 0  # tensor bytes received
    bytes_out: Count = 0  # tensor bytes sent to other processes
    rss_bytes: Count | None = None
    device_bytes: Count | None = None  # device memory in use, when the plugin can tell


class HeartbeatMsg(Header, kw_only=True, tag="heartbeat"):
    kind: ClassVar[str] = "heartbeat"
    name: Name
    busy: bool = False
    # the token of the REGISTER reply: heartbeats travel on their own connection, so this,
    # not the connection, says they come from the worker that registered
    session: str | None = None
    stats: WorkerStats | None = None


class DeregisterMsg(Header, kw_only=True, tag="deregister"):
    kind: ClassVar[str] = "deregister"
    name: Name
    reason: str | None = None


class DoneMsg(Header, kw_only=True, tag="done"):
    """A worker finished (or failed) one node of one run. Carries only the tensors
    that are graph outputs; everything else went straight to the consumers."""

    kind: ClassVar[str] = "done"
    graph: Ref
    run: Ref
    node: Ref
    ok: bool = True
    code: str | None = None
    message: str | None = None
    compute_us: int = 0  # time inside the plugin
    wait_us: int = 0  # first input arrived -> last input arrived
    bytes_out: int = 0  # bytes sent to other workers
    # a direct run: the timings of the nodes upstream of this one, which send no DONE
    timings: Timings | None = None
    # the worker's wall clock (unix microseconds) when the node started and finished
    start_unix_us: Count | None = None
    end_unix_us: Count | None = None


# --- client <-> coordinator ---------------------------------------------------------

class GraphMsg(Header, kw_only=True, tag="graph"):
    """Validate or register a graph spec (see graph.GraphSpec for ``spec``)."""

    kind: ClassVar[str] = "graph"
    op: Literal["validate", "register", "drop"]
    spec: dict[str, Any] = {}
    graph: Ref | None = None


class RunMsg(Header, kw_only=True, tag="run"):
    """Run a registered graph once; tensors are the graph's named inputs."""

    kind: ClassVar[str] = "run"
    graph: Ref
    run: Annotated[str, Meta(min_length=1, max_length=128)]
    timeout_s: Timeout | None = None
    detach: bool = False  # true: reply at once, collect later with query "result"
    # a direct run: no tensors here; the client sends them to the workers itself and
    # declares their total size for admission (SPEC section 16)
    direct: bool = False
    input_bytes: Dim = 0
    routes: Ref | None = None  # the ``routes_id`` of the QUERY routes answer it used
    place: Placement | None = None  # a direct run: the replicas its client chose


class QueryMsg(Header, kw_only=True, tag="query"):
    """Ask the coordinator about its state: workers, graphs, runs, a result."""

    kind: ClassVar[str] = "query"
    what: Literal["workers", "graphs", "runs", "result", "status", "routes"]
    run: Ref | None = None
    graph: Ref | None = None
    # for ``result``: the coordinator epoch the run was started under; a run of an earlier
    # epoch that left no result ends with ``coordinator_restarted``
    epoch: Ref | None = None


# one of the kinds, chosen by the header's "kind"
Message = (DataMsg | ControlMsg | ParamMsg | ReplyMsg | ErrorMsg | RegisterMsg | HeartbeatMsg
           | DeregisterMsg | DoneMsg | GraphMsg | RunMsg | QueryMsg)

KINDS: tuple[str, ...] = (
    "data", "control", "param", "reply", "error", "register", "heartbeat", "deregister",
    "done", "graph", "run", "query",
)
MESSAGE_MODELS: tuple[type[Header], ...] = (
    DataMsg, ControlMsg, ParamMsg, ReplyMsg, ErrorMsg, RegisterMsg, HeartbeatMsg, DeregisterMsg,
    DoneMsg, GraphMsg, RunMsg, QueryMsg,
)  # in the order of KINDS
