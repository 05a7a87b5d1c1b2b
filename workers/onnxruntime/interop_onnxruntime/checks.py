"""Checks on a model file before onnxruntime opens it.

A model that came over the wire (``interop migrate`` writes the bytes another worker
exported) is data, but an ONNX tensor may keep its bytes in an external file named by
a relative or absolute path, which would let the model read any file the worker can
and hand it back through get_params or the outputs. ``self_contained: true`` in the
worker config refuses such models: every tensor must be inside the .onnx file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

EXTERNAL = 1  # TensorProto.EXTERNAL


def refuse_external_data(path: Path) -> None:
    """ValueError naming the first tensor whose data lives outside ``path``."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    functions = (t for f in model.functions for t in _node_tensors(f.node))
    for tensor in [*_tensors(model.graph), *functions]:
        if tensor.data_location == EXTERNAL:
            where = next((e.value for e in tensor.external_data if e.key == "location"), "?")
            raise ValueError(f"model {path.name}: tensor {tensor.name!r} keeps its data in an "
                             f"external file ({where!r}), refused by self_contained: true")


def _tensors(graph: Any) -> Iterator[Any]:
    """Initializers, Constant attributes and sparse initializers, subgraphs included."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    yield from _node_tensors(graph.node)


def _node_tensors(nodes: Any) -> Iterator[Any]:
    for node in nodes:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _tensors(attr.g)
            for sub in attr.graphs:
                yield from _tensors(sub)
