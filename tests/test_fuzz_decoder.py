"""Fuzz the decoder: no crash, no hang, and every bad input gets a typed error.

CI runs a quick profile; `INTEROP_FUZZ_EXAMPLES=100000 ./run test tests/test_fuzz_decoder.py`
is the dedicated long run.
"""

from __future__ import annotations

import os

import msgpack
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interop_runtime import WIRE_DTYPES, ProtocolError
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
    _decode_or_typed_error([msgpack.packb(header, use_bin_type=True), *buffers])


@FUZZ
@given(st.integers(0, 200), st.binary(min_size=1, max_size=8))
def test_mutated_valid_message(position: int, garbage: bytes) -> None:
    frames = [bytes(f) for f in encode(DataMsg(v=PROTOCOL_VERSION, id="m", graph="g", run="r",
                                               node="n"), {"x": np.arange(6, dtype=np.float32)})]
    head = bytearray(frames[0])
    pos = position % len(head)
    head[pos:pos + len(garbage)] = garbage
    _decode_or_typed_error([bytes(head), *frames[1:]])
