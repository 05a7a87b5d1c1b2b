"""What a worker's inbox takes, and from whom (protocol/SPEC.md section 13.3), and the
PARAM requests with what a parameter write may change. The coordinator's own connection is trusted and not checked
here: everything the coordinator sends arrives on the worker's DEALER to it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from interop_runtime.transport.security import Security
from interop_runtime.wire.dtypes import wire_dtype
from interop_runtime.wire.errors import (
    DTypeMismatchError,
    ShapeMismatchError,
    UnauthorizedError,
    UnknownTargetError,
    UnsupportedError,
)
from interop_runtime.wire.messages import ControlMsg, DataMsg, ParamMsg
from interop_runtime.worker.plugin import WorkerPlugin
from interop_runtime.worker.replies import to_host_array
from interop_runtime.worker.state import WorkerState

# what a client may ask on a worker's inbox; everything else (plans, load/unload, shutdown,
# pause, cancel, PARAM set) comes only from the coordinator, on the worker's own connection
INBOX_ACTIONS = frozenset({"invoke", "describe", "ping", "model", "release"})
INBOX_PARAM_OPS = frozenset({"list", "get"})


def check_inbox(security: Security | None, state: WorkerState, msg: Any,
                arrays: Mapping[str, object], key: str | None) -> None:
    """What the inbox takes, and from whom (protocol/SPEC.md section 13): DATA from the
    producers the plan names for each input; a client's invoke, describe, ping, model
    and PARAM list/get; in a direct run, a client's graph inputs and its releases of the
    outputs it was sent in shared memory. Without CURVE there are no keys to check: every local process is
    trusted, and only the kinds are restricted."""
    role = security.role_of(key) if security else None
    roles_known = security is not None and security.roles is not None
    if isinstance(msg, DataMsg):
        if security is None:
            return
        plan = state.plan_node(msg.graph, msg.node)
        if not arrays:
            raise UnauthorizedError("only the coordinator triggers a node without inputs",
                                    node=msg.node)
        if set(arrays) <= set(plan.client_inputs):  # a direct run's inputs, from its client
            if roles_known and (role is None or role.kind != "client"):
                raise UnauthorizedError(f"graph inputs of {msg.node} come from clients",
                                        node=msg.node, field=next(iter(arrays)))
            return
        for name in arrays:
            if not any(f.public_key == key for f in plan.feeders.get(name, ())):
                raise UnauthorizedError(f"this key does not feed input {msg.node}.{name} "
                                        f"in the installed plan", node=msg.node, field=name)
    elif isinstance(msg, ControlMsg):
        if msg.action not in INBOX_ACTIONS:
            raise UnauthorizedError(f"only the coordinator may ask for {msg.action!r}",
                                    field="action")
        # a ping is for anyone who may connect: peers ask one for a lane (SPEC section 20)
        if roles_known and msg.action != "ping" and (role is None or role.kind != "client"):
            raise UnauthorizedError(f"CONTROL {msg.action} on an inbox is for clients",
                                    field="action")
    elif isinstance(msg, ParamMsg):
        if msg.op not in INBOX_PARAM_OPS:
            raise UnauthorizedError(f"only the coordinator may PARAM {msg.op}", field="op")
        if roles_known and (role is None or role.kind != "client"):
            raise UnauthorizedError(f"PARAM {msg.op} on an inbox is for clients", field="op")


def check_param_write(plugin: WorkerPlugin, arrays: dict[str, np.ndarray]) -> None:
    """A write may only replace existing parameters with the same dtype and shape."""
    current = plugin.get_params(list(arrays)) if arrays else {}
    for name, new in arrays.items():
        if name not in current:
            raise UnknownTargetError(f"the model has no parameter {name!r}", field=name)
        old = to_host_array(current[name])
        if wire_dtype(old.dtype) != wire_dtype(new.dtype):
            raise DTypeMismatchError(f"parameter {name!r} is {wire_dtype(old.dtype)}, the "
                                     f"write is {wire_dtype(new.dtype)}", field=name)
        if tuple(old.shape) != tuple(new.shape):
            raise ShapeMismatchError(f"parameter {name!r} has shape {tuple(old.shape)}, the "
                                     f"write has {tuple(new.shape)}", field=name)


def param_request(plugin: WorkerPlugin, version: int, msg: ParamMsg,
                  arrays: dict[str, np.ndarray]
                  ) -> tuple[dict[str, Any], dict[str, np.ndarray] | None, int]:
    """PARAM list/get/set on ``plugin`` at parameter ``version``: the reply body, its tensors,
    and the version after the request (a write bumps it)."""
    if msg.op == "list":
        params = plugin.get_params(None)
        return {"version": version, "params": {
            n: {"dtype": wire_dtype(a.dtype), "shape": list(a.shape)}
            for n, a in params.items()}}, None, version
    if msg.op == "get":
        got = plugin.get_params(msg.names)
        return {"version": version}, {n: to_host_array(a) for n, a in got.items()}, version
    if msg.version is not None and msg.version != version:  # set
        raise UnsupportedError(f"parameters are at version {version}, the write expected "
                               f"{msg.version}", field="version")
    check_param_write(plugin, arrays)
    plugin.set_params(arrays)
    return {"version": version + 1, "names": list(arrays)}, None, version + 1
