"""What a transformer's structure says, read from a ModelGraph without any config.

``structural_keys`` names each parameter-holding op by the part it plays, so that two
models pair by role rather than by position: ``embed.token``, ``embed.position``,
``block0.attn.q`` (or ``block0.attn.qkv`` when fused), ``block0.attn.out``,
``block0.mlp.0``, ``block0.norm.pre_attn`` / ``block0.norm.post_attn``, ``final.norm``,
``head.0``. Blocks are found from the attention ops; norms are pre- or post-norm by
where the residual stream runs (a pre-norm's input also feeds the residual add).

``profile`` sums a graph up: vocabulary (token embedding rows), hidden size, depth,
heads, position scheme, norm placement. Pure data; no framework.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel

from interop_runtime.ops.compat.modelgraph import ModelGraph, OpInfo

_NORMS = ("layernorm", "batchnorm")
_MAX_WALK = 64  # ops visited walking back or forward through bookkeeping: bounds odd graphs


class Profile(BaseModel):
    """What the structure says; None where it cannot be read."""

    transformer: bool = False
    vocabulary: int | None = None
    hidden: int | None = None
    depth: int | None = None  # attention blocks
    heads: int | None = None
    heads_note: str | None = None  # how heads were read, or why they could not be
    position: str | None = None  # "learned absolute (N positions)" or "none or other"
    norm: str | None = None  # "pre-norm" / "post-norm"
    fused_qkv: bool | None = None
    mlp: int | None = None  # inner width of the first block's MLP


def _walk(g: ModelGraph, start: Iterable[str], back: bool, want: str) -> OpInfo | None:
    """The nearest op of type ``want`` through ops without learned parameters."""
    seen: set[str] = set()
    todo = list(start)
    for _ in range(_MAX_WALK):
        if not todo:
            return None
        tensor = todo.pop(0)
        ops = [p] if back and (p := g.producer(tensor)) else ([] if back else g.consumers(tensor))
        for op in ops:
            if op.name in seen:
                continue
            seen.add(op.name)
            if op.type == want:
                return op
            if op.type in ("attention", *_NORMS) or (op.params and op.type != "other:slice"):
                continue  # another computing block: stop there
            todo += op.inputs if back else op.outputs
    return None


def _embedding_role(g: ModelGraph, op: OpInfo) -> str:
    """token, position, segment or other: from the names where they say it, else from
    where the indices come from (a model input: tokens; an arange: positions)."""
    text = " ".join([op.name, *op.params]).lower()
    if "position" in text or "wpe" in text or "pos_emb" in text:
        return "position"
    if "token_type" in text or "segment" in text:
        return "segment"
    inputs = {t.name for t in g.inputs}
    todo, seen, found = list(op.inputs[:1]), set(), False
    for _ in range(_MAX_WALK):
        if not todo:
            break
        t = todo.pop(0)
        found = found or t in inputs
        src = g.producer(t)
        if src is None or src.name in seen:
            continue
        seen.add(src.name)
        if "arange" in src.type:
            return "position"
        if src.params:  # the first buffer on the way decides (position ids, token type ids)
            return "position" if any("position" in n for n in src.params) else "other"
        todo += src.inputs
    return "token" if found else "other"


def structural_keys(g: ModelGraph) -> dict[str, str]:
    """op name -> its role in a transformer; {} for a graph without attention."""
    attn = [o for o in g.ops if o.type == "attention"]
    if not attn:
        return {}
    keys: dict[str, str] = {}
    for k, a in enumerate(attn):
        sources = [_walk(g, [t], True, "linear") for t in a.inputs[:3]]
        names = {s.name for s in sources if s is not None}
        if len(names) == 1 and len(sources) == 3 and None not in sources:
            keys[names.pop()] = f"block{k}.attn.qkv"
        else:
            for letter, src in zip("qkv", sources):
                if src is not None:
                    keys.setdefault(src.name, f"block{k}.attn.{letter}")
        out = _walk(g, a.outputs, False, "linear")
        if out is not None:
            keys.setdefault(out.name, f"block{k}.attn.out")
    pre = _pre_norm(g)
    order = [o for o in g.ops if o.params or o.type == "attention"]
    block, phase, mlp_i, head_i, extra = -1, "embed", 0, 0, 0
    for i, op in enumerate(order):
        key = keys.get(op.name)
        if op.type == "attention":
            block, phase = block + 1, "attn"
        elif key is not None:
            phase = "post_attn" if key.endswith(".out") else phase
            mlp_i = 0 if key.endswith(".out") else mlp_i
        elif op.type == "embedding":
            key = f"embed.{_embedding_role(g, op)}"
            if key in keys.values():
                key, extra = f"embed.other{extra}", extra + 1
            keys[op.name] = key
        elif op.type in _NORMS:
            keys[op.name], phase = _norm_key(order[i + 1:], keys, block, phase, pre)
        elif phase in ("post_attn", "mlp"):
            keys[op.name], mlp_i, phase = f"block{block}.mlp.{mlp_i}", mlp_i + 1, "mlp"
        elif any(p for p in op.params if not p.endswith(("position_ids", "token_type_ids"))):
            keys[op.name], head_i = f"{'head' if block >= 0 else 'embed'}.{head_i}", head_i + 1
    return keys


def _pre_norm(g: ModelGraph) -> bool:
    """Pre-norm when most norms read a tensor that something else (the residual) reads too."""
    norms = [o for o in g.ops if o.type in _NORMS and o.inputs]
    pre = sum(len(g.consumers(o.inputs[0])) > 1 for o in norms)
    return pre * 2 > len(norms)


def _norm_key(rest: list[OpInfo], keys: dict[str, str], block: int, phase: str, pre: bool
              ) -> tuple[str, str]:
    nxt = next((o for o in rest if o.type == "attention" or o.params), None)
    attn_next = nxt is not None and (nxt.type == "attention" or ".attn." in keys.get(nxt.name, ""))
    if pre:
        if attn_next:
            return f"block{block + 1}.norm.pre_attn", phase
        if phase == "post_attn":
            return f"block{block}.norm.pre_mlp", phase
        return "final.norm", "after_mlp"
    if phase == "embed":
        return "embed.norm", phase
    if phase == "post_attn":
        return f"block{block}.norm.post_attn", phase
    if phase == "mlp":
        return f"block{block}.norm.post_mlp", "after_mlp"
    return "final.norm", phase


def profile(g: ModelGraph, keys: dict[str, str] | None = None) -> Profile:
    keys = structural_keys(g) if keys is None else keys
    attn = [o for o in g.ops if o.type == "attention"]
    if not attn:
        return Profile()
    by_key = {k: g.op(name) for name, k in keys.items()}
    token, position = by_key.get("embed.token"), by_key.get("embed.position")
    out_proj = by_key.get("block0.attn.out")
    hidden = (token.attrs.get("embedding_dim") if token else None) or \
        (out_proj.attrs.get("out_features") if out_proj else None)
    heads, note = attn[0].attrs.get("heads"), "from the attention's query shape"
    dim = attn[0].attrs.get("head_dim")
    if heads is None and dim and hidden and hidden % dim == 0:
        heads, note = hidden // dim, f"hidden {hidden} / head size {dim} (from the query reshape)"
    elif heads is None:
        note = "the structure does not show the heads"
    mlp = by_key.get("block0.mlp.0")
    norms = [k for k in keys.values() if ".norm." in k]
    return Profile(
        transformer=True, vocabulary=token.attrs.get("num_embeddings") if token else None,
        hidden=hidden, depth=len(attn), heads=heads, heads_note=note,
        position=(f"learned absolute ({position.attrs.get('num_embeddings')} positions)"
                  if position else "none or other (no position embedding)"),
        norm=("pre-norm" if any(".pre_" in k for k in norms) else "post-norm") if norms else None,
        fused_qkv="block0.attn.qkv" in keys.values(),
        mlp=mlp.attrs.get("out_features") if mlp else None)
