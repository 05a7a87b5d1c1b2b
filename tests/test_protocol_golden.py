"""The Python codec against the golden vectors in protocol/golden/, plus codec edge cases.

A valid vector must decode to its header and tensor values and re-encode to the
very same bytes; an invalid one must be refused with its error code. Other
implementations run the same checks against the same files (protocol/SPEC.md).
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import ml_dtypes
import msgpack
import numpy as np
import pytest
import zmq

from interop_runtime.wire.codec import decode, encode
from interop_runtime.wire.dtypes import DTYPE_NAMES, to_numpy_dtype, wire_dtype
from interop_runtime.wire.errors import ProtocolError, error_class
from interop_runtime.wire.messages import KINDS, PROTOCOL_VERSION, DataMsg

PROTOCOL = Path(__file__).resolve().parent.parent / "protocol"
GOLDEN = PROTOCOL / "golden"
VALID = sorted(GOLDEN.glob("*.json"))
INVALID = sorted((GOLDEN / "invalid").glob("*.json"))


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def frames_of(vec: dict[str, Any]) -> list[bytes]:
    return [bytes.fromhex(h) for h in vec["frames"]]


def _float(x: Any) -> float:
    return float(x)  # float() reads "nan", "inf", "-inf" as well as numbers


def expected_array(t: dict[str, Any]) -> np.ndarray:
    """The tensor a vector's exact ``values`` describe, in its wire dtype."""
    dtype = to_numpy_dtype(t["dtype"])
    values = t["values"]
    if t["dtype"] == "string":  # JSON strings, nested like the shape (bare for 0-d)
        out = np.empty(t["shape"], dtype=object)
        out[...] = np.array(values, dtype=object)
        return out
    if t["dtype"] == "bool" or t["dtype"].startswith(("int", "uint")):
        return np.array(values, dtype=dtype).reshape(t["shape"])
    flat = np.vectorize(_float, otypes=[np.float64])(np.array(values, dtype=object))
    if t["dtype"].startswith("complex"):  # innermost [re, im]; no arithmetic, 1j * inf is nan
        pairs = flat
        flat = np.empty(pairs.shape[:-1], np.complex128)
        flat.real, flat.imag = pairs[..., 0], pairs[..., 1]
    # every value is exact in float64, so this cast is exact too
    return np.asarray(flat).astype(dtype).reshape(t["shape"])


def assert_same_elements(got: np.ndarray, want: np.ndarray) -> None:
    """Bit-for-bit, except that any NaN equals any NaN."""
    assert got.dtype == want.dtype and got.shape == want.shape
    if got.dtype.kind == "O":  # strings: every element a str, equal to the vector's
        assert all(type(g) is str for g in got.reshape(-1)) and got.tolist() == want.tolist()
        return
    if got.dtype.kind in "biu":
        assert np.array_equal(got, want)
        return
    parts = [(got.real, want.real), (got.imag, want.imag)] if got.dtype.kind == "c" \
        else [(got.astype(np.float64), want.astype(np.float64))]
    for g, w in parts:
        g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
        assert np.array_equal(g, w, equal_nan=True)
        assert np.array_equal(np.signbit(g) | np.isnan(g), np.signbit(w) | np.isnan(w))


# --- valid vectors ------------------------------------------------------------------------

@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_golden_vector_decodes(path: Path) -> None:
    vec = load(path)
    frames = frames_of(vec)
    assert msgpack.unpackb(frames[0], raw=False) == vec["header"]
    env = decode(frames)
    # the validated model says the same as the raw header (the encoding is canonical)
    assert json.loads(json.dumps(env.msg.model_dump(exclude_none=True))) == vec["header"]
    assert list(env.arrays) == list(vec["tensors"])
    assert {n: {"dtype": m.dtype, "shape": m.shape, "shm": m.shm.model_dump() if m.shm else None}
            for n, m in env.shared.items()} == vec.get("shared", {})
    for name, t in vec["tensors"].items():
        got = env.arrays[name]
        assert wire_dtype(got.dtype) == t["dtype"]
        assert list(got.shape) == t["shape"]
        assert_same_elements(got, expected_array(t))


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_golden_vector_reencodes_byte_exact(path: Path) -> None:
    vec = load(path)
    env = decode(frames_of(vec))
    metas = env.msg.tensors
    frames = encode(env.msg, env.arrays,
                    layouts={m.name: m.layout for m in metas if m.layout},
                    devices={m.name: m.device for m in metas if m.device},
                    shared={n: (m.dtype, m.shape, m.shm.model_dump())
                            for n, m in env.shared.items() if m.shm})
    assert [bytes(f).hex() for f in frames] == vec["frames"]


def test_golden_set_covers_every_kind_and_dtype() -> None:
    vectors = [load(p) for p in VALID]
    kinds = {v["header"]["kind"] for v in vectors}
    assert set(KINDS) <= kinds, f"no golden vector for {set(KINDS) - kinds}"
    tensors = [t for v in vectors for t in v["tensors"].values()]
    dtypes = {t["dtype"] for t in tensors}
    assert set(DTYPE_NAMES) <= dtypes, f"no golden vector for {set(DTYPE_NAMES) - dtypes}"
    assert any(t["shape"] == [] for t in tensors), "no 0-d tensor"
    assert any(0 in t["shape"] for t in tensors), "no empty tensor"
    assert any(len(v["tensors"]) > 1 for v in vectors), "no multi-tensor message"
    assert sum(v["header"]["kind"] == "error" for v in vectors) >= 3
    assert all(v["header"]["v"] == PROTOCOL_VERSION for v in vectors)


def _make_golden() -> Any:
    spec = importlib.util.spec_from_file_location("make_golden", PROTOCOL / "make_golden.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_golden_files_are_current() -> None:
    mg = _make_golden()
    stale = mg.stale_files(mg.expected_files())
    assert not stale, ("golden vectors differ from what protocol/make_golden.py writes: "
                       f"{[p.name for p in stale]}; if the change is intended, run "
                       "`.venv/bin/python protocol/make_golden.py` and review the diff")


# --- invalid vectors ----------------------------------------------------------------------

@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_vector_is_refused_with_its_code(path: Path) -> None:
    vec = load(path)
    kwargs = {"max_bytes": vec["max_message_bytes"]} if "max_message_bytes" in vec else {}
    cls = error_class(vec["code"])
    assert cls.code.value == vec["code"]
    with pytest.raises(cls) as info:
        decode(frames_of(vec), **kwargs)
    assert isinstance(info.value, ProtocolError)
    assert info.value.code.value == vec["code"]


def test_invalid_set_covers_every_protocol_code() -> None:
    codes = {load(p)["code"] for p in INVALID}
    assert codes == {"bad_frame", "bad_header", "version", "unknown_kind", "bad_tensor",
                     "too_large"}


# --- codec edge cases ---------------------------------------------------------------------

def _data() -> DataMsg:
    return DataMsg(v=PROTOCOL_VERSION, id="t-1", graph="g", run="r", node="n")


def _roundtrip(arrays: dict[str, Any]) -> tuple[list[Any], dict[str, np.ndarray]]:
    frames = encode(_data(), arrays)
    return frames, decode([bytes(f) for f in frames]).arrays


@pytest.mark.parametrize("make", [
    lambda a: a[:, ::2],  # strided
    lambda a: a.T,  # Fortran order
    lambda a: a[::-1],  # negative stride
], ids=["strided", "transposed", "reversed"])
def test_non_contiguous_input_is_sent_in_c_order(make: Any) -> None:
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    a = make(base)
    assert not a.flags.c_contiguous
    frames, out = _roundtrip({"a": a})
    assert bytes(frames[1]) == np.ascontiguousarray(a).tobytes()
    assert np.array_equal(out["a"], a)


@pytest.mark.parametrize("dtype", [">f4", ">i8", ">u2", ">c16", ">f2", ">f8"])
def test_big_endian_input_is_sent_little_endian(dtype: str) -> None:
    a = np.arange(6).reshape(2, 3).astype(dtype)
    frames, out = _roundtrip({"a": a})
    little = dtype.replace(">", "<")
    assert msgpack.unpackb(frames[0])["tensors"][0]["dtype"] == wire_dtype(little)
    assert bytes(frames[1]) == a.astype(little).tobytes()
    assert np.array_equal(out["a"], a)


def test_big_endian_0d_stays_0d() -> None:
    frames, out = _roundtrip({"s": np.array(2.5, dtype=">f8")})
    assert out["s"].shape == () and out["s"][()] == 2.5
    assert bytes(frames[1]) == np.array(2.5, "<f8").tobytes()


def test_encode_does_not_copy_contiguous_arrays() -> None:
    a = np.arange(1000, dtype=np.float64)
    frames = encode(_data(), {"a": a})
    assert np.shares_memory(np.frombuffer(frames[1], np.uint8), a)


@pytest.mark.parametrize("make_frame", [bytes, bytearray], ids=["bytes", "bytearray"])
def test_decoded_arrays_are_read_only_views_of_the_frames(make_frame: Any) -> None:
    frames = [make_frame(f) for f in encode(_data(), {"a": np.arange(8, dtype=np.int32)})]
    a = decode(frames).arrays["a"]
    assert np.shares_memory(a, np.frombuffer(frames[1], np.uint8))
    assert not a.flags.writeable
    with pytest.raises(ValueError):
        a[0] = 1


def test_decoded_arrays_do_not_alias_the_sender_writably_over_inproc() -> None:
    ctx = zmq.Context()
    tx, rx = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    try:
        tx.bind("inproc://golden-alias")
        rx.connect("inproc://golden-alias")
        src = np.zeros(100_000, dtype=np.float32)  # large: zero-copy all the way
        tx.send_multipart(encode(_data(), {"a": src}), copy=False)
        got = decode(rx.recv_multipart(copy=False)).arrays["a"]
        assert not got.flags.writeable  # a plugin's in-place op must not reach the sender
    finally:
        tx.close(0)
        rx.close(0)
        ctx.term()


def test_bfloat16_round_trip_is_the_upper_half_of_float32() -> None:
    f32 = np.array([1.0, -2.0, 0.5, 1 / 3, -0.0, np.inf, -np.inf, 3.0e38], dtype=np.float32)
    bf = f32.astype(ml_dtypes.bfloat16)
    frames, out = _roundtrip({"b": bf})
    assert msgpack.unpackb(frames[0])["tensors"][0]["dtype"] == "bfloat16"
    rounded = bf.astype(np.float32)  # exact: bfloat16 is a truncated float32
    assert bytes(frames[1]) == (rounded.view("<u4") >> 16).astype("<u2").tobytes()
    assert out["b"].dtype == np.dtype(ml_dtypes.bfloat16)
    assert np.array_equal(out["b"].astype(np.float32), rounded)
    nan = _roundtrip({"b": np.array([np.nan], dtype=ml_dtypes.bfloat16)})[1]["b"]
    assert math.isnan(float(nan[0]))


def test_0d_and_empty_tensors() -> None:
    frames, out = _roundtrip({"s": np.int16(-3), "e": np.zeros((3, 0, 2), np.float64)})
    assert out["s"].shape == () and out["s"][()] == -3 and len(bytes(frames[1])) == 2
    assert out["e"].shape == (3, 0, 2) and len(bytes(frames[2])) == 0


def test_bool_is_one_byte_zero_or_one() -> None:
    frames, _ = _roundtrip({"m": np.array([True, False, True])})
    assert bytes(frames[1]) == b"\x01\x00\x01"


def test_strings_that_look_like_numbers_are_refused() -> None:
    header = msgpack.unpackb(bytes(encode(_data(), {"a": np.zeros(2, np.uint8)})[0]))
    header["tensors"][0]["frame"] = "1"
    with pytest.raises(error_class("bad_header")):
        decode([msgpack.packb(header), b"\x00\x00"])


def test_unknown_fields_are_ignored() -> None:
    header = msgpack.unpackb(bytes(encode(_data())[0]))
    header["future_field"] = {"x": 1}
    header["tensors"] = []
    assert decode([msgpack.packb(header)]).msg.node == "n"
