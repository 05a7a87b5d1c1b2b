"""Fuzz the decoder: no crash, no hang, and every bad input gets a typed error.

CI runs a quick profile; `INTEROP_FUZZ_EXAMPLES=100000 ./run test tests/test_fuzz_decoder.py`
is the dedicated long run.
"""

from __future__ import annotations

import os
from typing import Any

import msgpack
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interop_runtime import WIRE_DTYPES, ProtocolError
from interop_runtime.wire import codec
from interop_runtime.wire.codec import decode, encode
from interop_runtime.wire.messages import KINDS, PROTOCOL_VERSION, DataMsg

EXAMPLES = int(os.environ.get("INTEROP_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=not os.environ.get(
    "INTEROP_FUZZ_RANDOM"), suppress_health_check=list(HealthCheck))

msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats() | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8),
                                                                       children, max_size=4),
    max_leaves=12)

tensor_meta = st.fixed_dictionaries({
    "name": st.text(min_size=0, max_size=5), "dtype": st.sampled_from([*WIRE_DTYPES, "x", 3]),
    "shape": st.lists(st.integers(-2, 5), max_size=3), "frame": st.integers(-1, 4)})

headers = st.fixed_dictionaries(
    {"v": st.sampled_from([PROTOCOL_VERSION, PROTOCOL_VERSION, 0, 2, "1"]),
     "kind": st.sampled_from([*KINDS, "bogus"]), "id": st.text(max_size=10)},
    optional={"graph": msgpack_values, "run": msgpack_values, "node": msgpack_values,
              "tensors": st.lists(tensor_meta, max_size=3), "action": msgpack_values,
              "op": msgpack_values, "what": msgpack_values, "name": msgpack_values,
              "endpoint": msgpack_values, "plugin": msgpack_values, "reply_to": msgpack_values,
              "code": msgpack_values, "message": msgpack_values, "spec": msgpack_values})


def _decode_or_typed_error(frames: list[bytes]) -> None:
    try:
        env = decode(frames, max_bytes=1 << 20)
    except ProtocolError as exc:
        assert exc.code and exc.message
        return
    for arr in env.arrays.values():  # whatever decodes is a well-formed array
        assert isinstance(arr, np.ndarray)


@FUZZ
@given(st.lists(st.binary(max_size=64), min_size=0, max_size=4))
def test_random_bytes(frames: list[bytes]) -> None:
    _decode_or_typed_error(frames)


@FUZZ
@given(headers, st.lists(st.binary(max_size=40), max_size=4))
def test_structured_headers(header: dict, buffers: list[bytes]) -> None:
    """A typed error or a message, and the same from both decoders (below)."""
    frames = [msgpack.packb(header, use_bin_type=True), *buffers]
    _decode_or_typed_error(frames)
    _same_either_way(frames)


@FUZZ
@given(st.integers(0, 200), st.binary(min_size=1, max_size=8))
def test_mutated_valid_message(position: int, garbage: bytes) -> None:
    frames = [bytes(f) for f in encode(DataMsg(v=PROTOCOL_VERSION, id="m", graph="g", run="r",
                                               node="n"), {"x": np.arange(6, dtype=np.float32)})]
    head = bytearray(frames[0])
    pos = position % len(head)
    head[pos:pos + len(garbage)] = garbage
    _decode_or_typed_error([bytes(head), *frames[1:]])


# --- the one-call decoder against the checked one ------------------------------------------
# codec._typed takes plain headers in one call into msgspec and leaves the rest to
# codec._checked. Whatever it takes must come out exactly as the checked way gives it, and
# what it leaves must be refused (or accepted) as before: same code, same field.

def _outcome(frames: list[bytes], *, typed: bool) -> tuple[Any, ...]:
    saved = codec._typed
    if not typed:
        codec._typed = lambda head: None  # type: ignore[assignment]
    try:
        env = decode(frames, max_bytes=1 << 20)
    except ProtocolError as exc:
        return ("refused", exc.code, exc.field)
    finally:
        codec._typed = saved
    return ("accepted", env.msg, {n: (a.dtype, a.shape, a.tobytes())
                                  for n, a in env.arrays.items()}, env.shared)


def _same_either_way(frames: list[bytes]) -> None:
    assert _outcome(frames, typed=True) == _outcome(frames, typed=False)


data_like = st.fixed_dictionaries(
    {"v": st.just(PROTOCOL_VERSION), "kind": st.sampled_from(["data", "control", "done", "run"]),
     "id": st.text(min_size=1, max_size=4), "graph": st.sampled_from(["g", 3, None]),
     "run": st.just("r"), "node": st.just("n")},
    optional={"tensors": st.lists(tensor_meta, max_size=2), "action": st.sampled_from(
        ["ping", "bogus", None]), "args": msgpack_values, "client": st.sampled_from(
        ["ab", "AB", None, 1]), "timings": msgpack_values, "place": msgpack_values,
        "unknown": msgpack_values, "ok": st.sampled_from([True, None, 1])})


@FUZZ
@given(data_like, st.lists(st.binary(max_size=24), max_size=3))
def test_both_decoders_agree_on_nearly_valid_headers(header: dict, buffers: list[bytes]) -> None:
    _same_either_way([msgpack.packb(header, use_bin_type=True), *buffers])


@FUZZ
@given(st.integers(0, 400), st.binary(min_size=1, max_size=8))
def test_both_decoders_agree_on_mutated_messages(position: int, garbage: bytes) -> None:
    frames = [bytes(f) for f in encode(DataMsg(
        v=PROTOCOL_VERSION, id="m", graph="g", run="r", node="n", client="ab",
        timings={"a": {"worker": "w", "compute_us": 3}}, place={"p": "w"}),
        {"x": np.arange(6, dtype=np.float32)})]
    head = bytearray(frames[0])
    pos = position % len(head)
    head[pos:pos + len(garbage)] = garbage
    _same_either_way([bytes(head), *frames[1:]])


def test_the_one_call_decoder_takes_the_hot_headers() -> None:
    """Else the fast path would be dead code, and every hop paid for the checked one."""
    frames = encode(DataMsg(v=PROTOCOL_VERSION, id="m", graph="g", run="r", node="n"),
                    {"x": np.arange(6, dtype=np.float32)})
    assert isinstance(codec._typed(memoryview(frames[0])), DataMsg)
    odd = msgpack.packb({**msgpack.unpackb(frames[0]), "x-extension": 1})
    assert codec._typed(memoryview(odd)) is None  # an unknown field: the checked way
    assert decode([odd, *frames[1:]]).msg == decode(frames).msg
