"""Draw a ModelGraph for a person: Mermaid (Markdown-friendly) or Graphviz DOT.

One box per op (name, normalized type, parameter count), one edge per tensor
with its shape; model inputs and outputs as ovals. See render.py for graph specs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from interop_runtime.ops.compat.modelgraph import ModelGraph


def _id(name: str) -> str:
    return "t_" + "".join(c if c.isalnum() else "_" for c in name)


def _label(text: str) -> str:
    return text.replace('"', "'")


def _edges(g: ModelGraph) -> list[tuple[str, str, str]]:
    """(from id, to id, tensor label) for every tensor an op or a model output reads."""
    producers = {t: _id("op " + o.name) for o in g.ops for t in o.outputs}
    producers.update({t.name: _id("in " + t.name) for t in g.inputs})

    def label(tensor: str) -> str:
        info = g.tensors.get(tensor)
        shape = "" if info is None or info.shape is None else \
            "×".join("?" if d is None else str(d) for d in info.shape)
        return _label(f"{tensor} {shape}".strip())

    edges = [(producers[t], _id("op " + o.name), label(t))
             for o in g.ops for t in o.inputs if t in producers]
    edges += [(producers[t.name], _id("out " + t.name), label(t.name))
              for t in g.outputs if t.name in producers and producers[t.name] != _id("in " + t.name)]
    return edges


def _op_text(g: ModelGraph, sep: str) -> dict[str, str]:
    sizes = {p.name: _size(p.shape) for p in g.params}
    out = {}
    for o in g.ops:
        count = sum(sizes.get(p, 0) for p in o.params)
        extra = f"{sep}{count} params" if count else ""
        out[_id("op " + o.name)] = _label(f"{o.name}{sep}{o.type}{extra}")
    return out


def _size(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def to_mermaid(graph: ModelGraph | Mapping[str, Any]) -> str:
    g = graph if isinstance(graph, ModelGraph) else ModelGraph.model_validate(graph)
    lines = ["flowchart TD"]
    lines += [f'    {_id("in " + t.name)}(["input {_label(t.name)}"])' for t in g.inputs]
    lines += [f'    {i}["{text}"]' for i, text in _op_text(g, "<br/>").items()]
    lines += [f'    {_id("out " + t.name)}(["output {_label(t.name)}"])' for t in g.outputs]
    lines += [f'    {a} -- "{lbl}" --> {b}' for a, b, lbl in _edges(g)]
    return "\n".join(lines) + "\n"


def to_dot(graph: ModelGraph | Mapping[str, Any]) -> str:
    g = graph if isinstance(graph, ModelGraph) else ModelGraph.model_validate(graph)
    lines = [f'digraph "{_label(g.name or g.framework)}" {{', "    rankdir=TB;",
             "    node [shape=box];"]
    lines += [f'    {_id("in " + t.name)} [label="input {_label(t.name)}", shape=oval];'
              for t in g.inputs]
    lines += [f'    {i} [label="{text}"];' for i, text in _op_text(g, "\\n").items()]
    lines += [f'    {_id("out " + t.name)} [label="output {_label(t.name)}", shape=oval];'
              for t in g.outputs]
    lines += [f'    {a} -> {b} [label="{lbl}"];' for a, b, lbl in _edges(g)]
    return "\n".join([*lines, "}"]) + "\n"
