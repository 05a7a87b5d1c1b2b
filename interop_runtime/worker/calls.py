"""Calling one plugin function, checked against its signature on the way in and out: a
missing or misfitting input, a raising plugin and a missing output are typed errors."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from interop_runtime.graph.signatures import check_array
from interop_runtime.wire.errors import FunctionFailedError, InteropError, UnknownFunctionError
from interop_runtime.wire.messages import FunctionSpec
from interop_runtime.worker.plugin import WorkerPlugin
from interop_runtime.worker.replies import to_host_array

log = logging.getLogger("interop.worker")


def call_function(plugin: WorkerPlugin, functions: Mapping[str, FunctionSpec], function: str,
                  inputs: Mapping[str, np.ndarray], args: Mapping[str, Any], *,
                  node: str | None, worker: str) -> dict[str, np.ndarray]:
    spec = functions.get(function)
    if spec is None:
        raise UnknownFunctionError(f"worker {worker!r} has no function {function!r} "
                                   f"(it offers: {', '.join(functions) or 'none'})",
                                   field="function", node=node, worker=worker)
    for s in spec.inputs:
        if s.name not in inputs:
            raise FunctionFailedError(f"{function}: missing input {s.name!r}", field=s.name,
                                      node=node, worker=worker)
        check_array(s, inputs[s.name], where=f"{function} input {s.name!r}", node=node)
    try:
        raw = plugin.call(function, inputs, args)
    except InteropError:
        raise
    except Exception as exc:  # the plugin's own failure, reported not raised
        log.exception("function %s failed", function)
        raise FunctionFailedError(f"{function} raised {type(exc).__name__}: {exc}",
                                  node=node, worker=worker) from exc
    outputs = {k: to_host_array(v) for k, v in raw.items()}
    missing = [s.name for s in spec.outputs if s.name not in outputs]
    if missing:
        raise FunctionFailedError(f"{function} did not return output(s) {', '.join(missing)}",
                                  node=node, worker=worker)
    return outputs
