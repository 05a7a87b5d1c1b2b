"""What the coordinator keeps: one record per worker, per run and per pending request,
and the ``Send`` instruction its handlers return."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from interop_runtime.wire.codec import new_id
from interop_runtime.wire.errors import MAX_LOCATION_CHARS, InteropError, cut_text
from interop_runtime.wire.messages import (
    PROTOCOL_VERSION,
    ControlMsg,
    ErrorMsg,
    FunctionSpec,
    Header,
    ReplyMsg,
)

if TYPE_CHECKING:
    import numpy as np

NAME = "coordinator"


@dataclass
class Send:
    """Instruction: send ``msg`` (with ``arrays``) to the peer with ROUTER identity ``peer``."""

    peer: bytes
    msg: Header
    arrays: dict[str, np.ndarray] | None = None
    run: str | None = None  # set on a run's final reply: if undeliverable, keep the result
    owner: str | None = None  # ... for the client key that started it
    graph: str = ""


@dataclass
class WorkerRecord:
    name: str
    identity: bytes
    endpoint: str
    plugin: str
    device: str
    functions: dict[str, FunctionSpec]
    pid: int | None
    last_seen: float
    alive: bool = True
    info: dict[str, Any] = field(default_factory=dict)
    public_key: str | None = None  # what it announced for its inbox
    host: str | None = None  # its shared-memory host key; None: frames only
    key: str | None = None  # the CURVE key it registered with (authenticated)
    session: str = ""  # the token its heartbeats must carry
    lost_at: float | None = None  # when it was declared lost; pruned after a grace period
    pool: str | None = None  # the replica pool it serves in
    draining_since: float | None = None  # asked to drain: no new runs, shut down when idle

    def public(self, now: float) -> dict[str, Any]:
        return {"name": self.name, "plugin": self.plugin, "device": self.device,
                "endpoint": self.endpoint, "alive": self.alive, "pid": self.pid,
                "last_seen_s": round(now - self.last_seen, 3), "info": self.info,
                "pool": self.pool, "draining": self.draining_since is not None,
                "functions": [f.model_dump(exclude_none=True) for f in self.functions.values()]}


@dataclass
class RunRecord:
    run: str
    graph: str
    client: bytes
    client_msg: str
    started: float
    deadline: float
    detach: bool
    outstanding: dict[str, str]  # node -> worker
    workers: set[str]
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    timings: dict[str, dict[str, Any]] = field(default_factory=dict)
    inputs: dict[str, np.ndarray] = field(default_factory=dict)  # kept for retries
    attempt: int = 0
    waiting_for: str | None = None  # a lost worker this run waits for, to retry
    owner: str | None = None  # the starting client's CURVE key; None without CURVE
    input_bytes: int = 0  # counted by admission while the run is in flight
    direct: bool = False  # the client feeds the workers and gets the outputs itself
    started_unix_us: int = 0  # our wall clock at RUN: nodes' unix times are relative to it
    placement: dict[str, str] = field(default_factory=dict)  # node -> the worker running it

    @property
    def wire_run(self) -> str:
        """The run id on the wire for this attempt: workers drop a cancelled id for good."""
        return self.run if self.attempt == 0 else f"{self.run}~{self.attempt}"


@dataclass
class PendingOp:
    """A client request waiting on workers: plan acks, or a forwarded CONTROL/PARAM."""

    client: bytes
    client_msg: str
    deadline: float
    waiting: set[str]
    body: dict[str, Any] = field(default_factory=dict)
    forwarded_to: str | None = None
    # id of each message we sent -> the ROUTER identity whose reply we accept: a reply from
    # any other connection is dropped, however well it guessed the id
    responders: dict[str, bytes] = field(default_factory=dict)
def plan_msg(worker: str, graph: str, plan: dict[str, Any]) -> ControlMsg:
    """``CONTROL plan``: a worker's plan for one graph (SPEC section 8.2)."""
    return ControlMsg(v=PROTOCOL_VERSION, id=new_id(), src=NAME, dst=worker, action="plan",
                      graph=graph, args={"plan": plan})


def reply(to: Header, body: dict[str, Any] | None = None) -> ReplyMsg:
    return ReplyMsg(v=PROTOCOL_VERSION, id=new_id(), src=NAME, reply_to=to.id, body=body or {})


def error_reply(exc: InteropError, reply_to: str | None, run: str | None = None) -> ErrorMsg:
    return ErrorMsg(v=PROTOCOL_VERSION, id=new_id(), src=NAME, reply_to=reply_to,
                    code=exc.code.value, message=exc.message, run=cut_text(run, MAX_LOCATION_CHARS),
                    **exc.details())
