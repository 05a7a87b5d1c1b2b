"""A worker's CONTROL and PARAM handlers (protocol/SPEC.md sections 9.2-9.4): plans,
cancels, describe, ping, pause/resume, models loaded and unloaded, parameters.

A mixin of WorkerHost, which owns the sockets and the run path; the attributes and methods
declared below are the host's.
"""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from interop_runtime.transport.sockets import send_msg
from interop_runtime.wire.codec import new_id
from interop_runtime.wire.errors import UnknownFunctionError, UnsupportedError
from interop_runtime.wire.messages import (
    PROTOCOL_VERSION,
    ControlMsg,
    DataMsg,
    FunctionSpec,
    ParamMsg,
    ReplyMsg,
)
from interop_runtime.wire.payloads import WorkerPlan
from interop_runtime.worker.authority import param_request
from interop_runtime.worker.dataplane import DataPlane
from interop_runtime.worker.lanes import WorkerLanes
from interop_runtime.worker.models import ModelTable, model_request
from interop_runtime.worker.outbox import Local
from interop_runtime.worker.peers import PeerSockets
from interop_runtime.worker.repository import ModelRepository
from interop_runtime.worker.state import Ready, RunMeta, WorkerState


class ControlHandlers:
    name: str
    plugin: ModelTable
    plugin_name: str
    device: str
    endpoint: str
    functions: dict[str, FunctionSpec]
    coord: zmq.Socket[bytes]
    state: WorkerState
    peers: PeerSockets
    plane: DataPlane
    lanes: WorkerLanes
    inbox: zmq.Socket[bytes]
    _caller_key: str | None
    held: deque[Ready]
    paused: bool
    param_version: int
    repository: ModelRepository | None

    # --- the host's, used here
    def _reply(self, sock: zmq.Socket[bytes], peer: bytes | None, msg: Any,
               arrays: Any = None) -> None:
        raise NotImplementedError

    def _call(self, function: str, inputs: Any, args: Any, *, node: str | None = None
              ) -> tuple[dict[str, np.ndarray], int]:
        raise NotImplementedError

    def _execute(self, ready: Ready) -> list[Local]:
        raise NotImplementedError

    def _on_data(self, msg: DataMsg, arrays: dict[str, np.ndarray],
                 meta: RunMeta | None = None) -> None:
        raise NotImplementedError

    def _on_release(self, msg: ControlMsg, holder: tuple[str, str]) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def _ok(self, sock: zmq.Socket[bytes], peer: bytes | None, msg: Any, body: dict[str, Any] | None = None,
            arrays: Any = None) -> None:
        self._reply(sock, peer, ReplyMsg(v=PROTOCOL_VERSION, id=new_id(), src=self.name,
                                         reply_to=msg.id, body=body or {}), arrays)

    def _on_control(self, sock: zmq.Socket[bytes], peer: bytes | None, msg: ControlMsg,
                    arrays: dict[str, np.ndarray]) -> None:
        action = msg.action
        if action == "invoke":
            if not msg.function:
                raise UnknownFunctionError("invoke needs a function name", field="function")
            outputs, compute_us = self._call(msg.function, arrays, msg.args, node=msg.node)
            self._ok(sock, peer, msg, {"compute_us": compute_us}, outputs)
        elif action == "plan":
            plan = WorkerPlan.model_validate(msg.args.get("plan", {}))
            self.state.install(plan)
            self.peers.learn(plan)
            self._ok(sock, peer, msg, {"graph": plan.graph, "version": plan.version})
        elif action == "cancel":
            if msg.run:
                dropped = self.state.cancel(msg.run, time.monotonic())
                self.plane.cancel(msg.run)
                self.held = deque(r for r in self.held if r.run != msg.run)
            elif msg.graph:
                self.state.drop_graph(msg.graph)
                dropped = 0
            else:
                raise UnsupportedError("cancel needs a run or a graph", field="run")
            self._ok(sock, peer, msg, {"dropped": dropped})
        elif action == "describe":
            self._ok(sock, peer, msg, {"name": self.name, "plugin": self.plugin_name,
                                       "device": self.device, "endpoint": self.endpoint,
                                       "functions": [f.model_dump(exclude_none=True)
                                                     for f in self.functions.values()],
                                       "models": self.plugin.infos()})
        elif action == "model":  # the model as a neutral graph, for compatibility reports
            self._ok(sock, peer, msg, {"graph": self.plugin.model_graph()})
        elif action == "release":  # a client hands back outputs we sent it
            self._on_release(msg, (peer.hex() if peer else "", msg.run or ""))
        elif action == "ping":
            body = {"name": self.name, "pending": len(self.state.pending),
                    "shm": self.plane.stats(), "lanes": self.lanes.stats()}
            if msg.args.get("lane") is True and sock is self.inbox:  # SPEC section 20
                offer = self.lanes.offer(peer, self._caller_key)
                if offer is not None:
                    body["lane"] = offer
            self._ok(sock, peer, msg, body)
        elif action == "pause":
            self.paused = True
            self._ok(sock, peer, msg, {"paused": True})
        elif action == "resume":
            self.paused = False
            self._ok(sock, peer, msg, {"paused": False})
            while self.held and not self.paused:
                for graph, run, node, ins, meta in self._execute(self.held.popleft()):
                    self._on_data(DataMsg(v=PROTOCOL_VERSION, id=new_id(), graph=graph, run=run,
                                          node=node), ins, meta)
        elif action in ("load", "unload"):
            body = model_request(self.plugin, action, msg.args)
            self._models_changed()  # before the reply, on the same connection: in order
            self._ok(sock, peer, msg, body)
        elif action == "shutdown":
            self._ok(sock, peer, msg, {"stopping": True})
            self.stop()

    def watch(self, folder: str) -> None:
        """Load, replace and unload models as files come and go in ``folder`` (which is
        then also a model root: a client may load the files it holds by path)."""
        self.repository = ModelRepository(folder, self.plugin)
        self.plugin.roots = (*self.plugin.roots, Path(folder).expanduser().resolve())

    def _models_changed(self) -> None:
        """Tell the coordinator our whole new function table (CONTROL functions); the
        start-up model's functions keep their batching."""
        old = self.functions
        self.functions = {n: f.model_copy(update={"batching": old[n].batching})
                          if n in old and old[n].batching else f
                          for n, f in self.plugin.functions().items()}
        send_msg(self.coord, ControlMsg(
            v=PROTOCOL_VERSION, id=new_id(), src=self.name, action="functions",
            args={"functions": [f.model_dump(exclude_none=True) for f in self.functions.values()],
                  "models": self.plugin.infos()}))

    def _on_param(self, sock: zmq.Socket[bytes], peer: bytes | None, msg: ParamMsg,
                  arrays: dict[str, np.ndarray]) -> None:
        body, out, self.param_version = param_request(self.plugin, self.param_version, msg,
                                                      arrays)
        self._ok(sock, peer, msg, body, out)
