"""Draw a graph spec for a person: Mermaid (Markdown-friendly) or Graphviz DOT."""

from __future__ import annotations

from interop_runtime.wire.payloads import GraphSpec, split_port


def _id(name: str) -> str:
    return "n_" + "".join(c if c.isalnum() else "_" for c in name)


def to_mermaid(spec: GraphSpec) -> str:
    lines = ["flowchart LR"]
    for gin in spec.inputs:
        lines.append(f'    {_id("in " + gin)}(["input {gin}"])')
    for name, node_spec in spec.nodes.items():
        lines.append(f'    {_id(name)}["{name}<br/>{node_spec.target}.{node_spec.function}"]')
    for gout in spec.outputs:
        lines.append(f'    {_id("out " + gout)}(["output {gout}"])')
    for gin, targets in spec.inputs.items():
        for ref in targets:
            node, port = split_port(ref, what="input")
            lines.append(f'    {_id("in " + gin)} -- "{port}" --> {_id(node)}')
    for edge in spec.edges:
        src, out = split_port(edge.src, what="edge")
        dst, inp = split_port(edge.dst, what="edge")
        lines.append(f'    {_id(src)} -- "{out} → {inp}" --> {_id(dst)}')
    for gout, ref in spec.outputs.items():
        node, port = split_port(ref, what="output")
        lines.append(f'    {_id(node)} -- "{port}" --> {_id("out " + gout)}')
    return "\n".join(lines) + "\n"


def to_dot(spec: GraphSpec) -> str:
    lines = [f'digraph "{spec.name}" {{', "    rankdir=LR;", "    node [shape=box];"]
    for gin in spec.inputs:
        lines.append(f'    {_id("in " + gin)} [label="input {gin}", shape=oval];')
    for name, node_spec in spec.nodes.items():
        lines.append(f'    {_id(name)} [label="{name}\\n{node_spec.target}.{node_spec.function}"];')
    for gout in spec.outputs:
        lines.append(f'    {_id("out " + gout)} [label="output {gout}", shape=oval];')
    for gin, targets in spec.inputs.items():
        for ref in targets:
            node, port = split_port(ref, what="input")
            lines.append(f'    {_id("in " + gin)} -> {_id(node)} [label="{port}"];')
    for edge in spec.edges:
        src, out = split_port(edge.src, what="edge")
        dst, inp = split_port(edge.dst, what="edge")
        lines.append(f'    {_id(src)} -> {_id(dst)} [label="{out} → {inp}"];')
    for gout, ref in spec.outputs.items():
        node, port = split_port(ref, what="output")
        lines.append(f'    {_id(node)} -> {_id("out " + gout)} [label="{port}"];')
    return "\n".join([*lines, "}"]) + "\n"
