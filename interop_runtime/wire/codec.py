"""Encode messages to ZeroMQ frames and decode frames back, without copying tensors.

``encode(msg, arrays)`` returns ``[header, buf_1, ...]``: the header is msgpack,
each buffer a memoryview of a C-contiguous little-endian array (no join, no copy).
``decode(frames)`` validates the header and wraps each buffer frame with
``np.frombuffer`` (no copy; the arrays are read-only views of the frames). String
tensors are the exception both ways: their frame is built on encode, and decoded into a
read-only numpy object array of str (wire/strings.py).

Decoding never executes anything from the wire: msgpack maps, msgspec structs and
raw bytes only. Every failure raises a ProtocolError subclass naming the fault. A plain
header (the hot kinds, nothing unknown or nil in it) is decoded in one call into msgspec;
any other goes through the checked way, which accepts what the first would and names what
is wrong with the rest (tests/test_fuzz_decoder.py holds the two to the same answers).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union

import msgpack
import msgspec

from interop_runtime.wire.dtypes import STRING, itemsize, to_numpy_dtype, wire_dtype
from interop_runtime.wire.errors import (
    BadFrameError,
    BadHeaderError,
    BadTensorError,
    TooLargeError,
    UnknownKindError,
    VersionError,
)
from interop_runtime.wire.messages import (
    KINDS,
    MAX_DIM,
    MESSAGE_MODELS,
    PROTOCOL_VERSION,
    ControlMsg,
    GraphMsg,
    Header,
    RegisterMsg,
    ReplyMsg,
    ShmHandleModel,
    TensorMeta,
)
from interop_runtime.wire.model import error_location, without_nones
from interop_runtime.wire.strings import (
    check_size,
    decode_strings,
    encode_strings,
    is_string_array,
)
from interop_runtime.wire.values import check_plain

if TYPE_CHECKING:
    import numpy as np

DEFAULT_MAX_MESSAGE_BYTES = 1 << 31  # 2 GiB; receivers configure their own
MAX_HEADER_BYTES = 1 << 20  # a header is metadata; 1 MiB is generous

Frame = bytes | bytearray | memoryview | Any  # anything with the buffer protocol (zmq.Frame)



def new_id() -> str:
    """128 random bits as 32 hex digits: message ids, run ids, session tokens and epochs are
    trusted to be unguessable, so a peer cannot forge the reply to someone else's request."""
    return secrets.token_hex(16)


@dataclass
class Envelope:
    """A decoded message and its tensors (read-only numpy views of the frames). Tensors
    that live in shared memory are in ``shared`` by name, their metadata checked; the
    transport layer maps them (transport/shm.py)."""

    msg: Any
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    nbytes: int = 0
    shared: dict[str, TensorMeta] = field(default_factory=dict)


def _as_wire_array(arr: Any) -> np.ndarray:
    import numpy as np

    a = np.asarray(arr)
    if is_string_array(a):  # laid out by encode_strings, whatever the strides
        return a
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    # ascontiguousarray would turn a 0-d array into 1-d, so only call it when needed
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def header_bytes(msg: Header) -> bytes:
    """The canonical msgpack header: fields in declared order, null optionals left out."""
    return msgpack.packb(without_nones(msg), use_bin_type=True)


def encode(
    msg: Header,
    arrays: Mapping[str, Any] | None = None,
    *,
    layouts: Mapping[str, str] | None = None,
    devices: Mapping[str, str] | None = None,
    shared: Mapping[str, tuple[str, list[int], Mapping[str, Any]]] | None = None,
) -> list[Frame]:
    """Frames for ``msg`` carrying ``arrays`` by name; sets ``msg.tensors``. ``shared``
    names tensors already in shared memory: name -> (wire dtype, shape, handle)."""
    frames: list[Frame] = [b""]
    metas: list[TensorMeta] = [
        TensorMeta(name=name, dtype=dtype, shape=list(shape), frame=0,
                   shm=ShmHandleModel(**handle))
        for name, (dtype, shape, handle) in (shared or {}).items()]
    for name, value in (arrays or {}).items():
        a = _as_wire_array(value)
        dtype = wire_dtype(a.dtype)
        metas.append(
            TensorMeta(
                name=name,
                dtype=dtype,
                shape=list(a.shape),
                frame=len(frames),
                device=(devices or {}).get(name),
                layout=(layouts or {}).get(name),
            )
        )
        if dtype == STRING:
            frames.append(encode_strings(a, name))
        else:
            frames.append(a.reshape(-1).view("u1").data if a.size else b"")
    msg.tensors = metas
    frames[0] = header_bytes(msg)
    return frames


def _nbytes(frame: Frame) -> int:
    return memoryview(frame).nbytes


def decode(frames: Sequence[Frame], *, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Envelope:
    """Validate frames and return the message with its tensors; raises ProtocolError and
    nothing else, whatever the bytes."""
    try:
        return _decode(frames, max_bytes)
    except (BadFrameError, BadHeaderError, BadTensorError, TooLargeError, UnknownKindError,
            VersionError):
        raise
    except Exception as exc:  # a check this module missed must still be a typed refusal
        raise BadFrameError(f"message could not be decoded: {type(exc).__name__}") from None


def _decode(frames: Sequence[Frame], max_bytes: int) -> Envelope:
    if not frames:
        raise BadFrameError("empty message: expected a header frame")
    total = sum(_nbytes(f) for f in frames)
    if total > max_bytes:
        raise TooLargeError(f"message of {total} bytes is over this receiver's limit of {max_bytes}",
                            field="frames")
    head = memoryview(frames[0])
    if head.nbytes > MAX_HEADER_BYTES:
        raise TooLargeError(f"header of {head.nbytes} bytes is over {MAX_HEADER_BYTES}", field="header")
    msg = _typed(head)
    if msg is None:
        msg = _checked(head)
    return _with_tensors(msg, frames, max_bytes, total)


def _typed(head: memoryview) -> Header | None:
    """The header in one call into msgspec, when it is a plain one: the right version, a
    kind without nested models of its own, no unknown field, no nil for a field that has a
    default. None otherwise: ``_checked`` then looks at it field by field, and either
    accepts it as this would have (the same message) or says what is wrong. Half the CPU
    per header of the checked way, on the cold caches every hop of a run wakes with."""
    try:
        msg = _TYPED.decode(head)
        if msg.v != PROTOCOL_VERSION:
            return None
        # msgspec lets free-form maps hold keys msgpack's strict_map_key refuses (nil, int):
        # anything odd in them and the checked way answers as the spec says
        _check_free_form(msg)
    except Exception:  # whatever it is, the checked way names it
        return None
    return msg


def _checked(head: memoryview) -> Header:
    """The header checked step by step: every refusal named (SPEC section 6's order)."""
    try:
        raw = msgpack.unpackb(head, raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise BadFrameError(f"header frame is not valid msgpack: {type(exc).__name__}",
                            field="header") from None
    if not isinstance(raw, dict):
        raise BadFrameError(f"header must be a msgpack map, got {type(raw).__name__}", field="header")
    _check_keys(raw)
    version = raw.get("v")
    if not isinstance(version, int) or isinstance(version, bool):
        raise BadHeaderError("header has no integer protocol version 'v'", field="v")
    if version != PROTOCOL_VERSION:
        raise VersionError(f"protocol version {version} is not supported; this side speaks "
                           f"{PROTOCOL_VERSION}", field="v")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise UnknownKindError(f"unknown message kind {kind!r}; expected one of {', '.join(KINDS)}",
                               field="kind")
    _check_unknown_fields(raw, kind)
    raw = _known_fields_only(_nil_is_absent(raw), kind)
    try:
        # strict: a header must carry the types of protocol/schema.json, not strings
        # that merely parse as numbers, so every implementation accepts the same headers
        msg = msgspec.convert(raw, _MODELS[kind], strict=True)  # a union would cost 9x
    except msgspec.ValidationError as exc:
        loc, problem = error_location(exc)
        # the closed list (errors.py) files an unknown dtype under bad_tensor
        error = BadTensorError if _is_tensor_dtype(loc) else BadHeaderError
        raise error(f"{kind} header is invalid at {loc or 'header'}: {problem[:200]}",
                    field=loc or "header") from None
    _check_free_form(msg)
    for key in _NESTED_MODELS.get(kind, ()):  # their own unknown fields are plain values too
        if key in raw:
            check_plain(raw[key], key, max_items=MAX_HEADER_BYTES)
    return msg


def _with_tensors(msg: Header, frames: Sequence[Frame], max_bytes: int, total: int) -> Envelope:
    """The tensors checked and wrapped: the same for either decoder."""
    shared: dict[str, TensorMeta] = {}
    for i, meta in enumerate(msg.tensors):
        if meta.frame == 0:
            _check_shared(meta, f"tensors.{i}", max_bytes, seen=shared)
            shared[meta.name] = meta
        elif meta.shm is not None:
            raise BadHeaderError(f"tensor {meta.name!r} names both a frame and shared memory",
                                 field=f"tensors.{i}")
    framed = [m for m in msg.tensors if m.frame != 0] if shared else msg.tensors
    arrays = _wrap_tensors(framed, frames, max_bytes)
    if len(shared) + len(arrays) != len(msg.tensors):
        raise BadHeaderError("a tensor name appears twice", field="tensors")
    return Envelope(msg=msg, arrays=arrays, nbytes=total, shared=shared)


def _element_count(meta: TensorMeta, where: str) -> int:
    count = 1
    for dim in meta.shape:  # Python ints: no overflow; stop as soon as it is too big
        count *= dim
        if count > MAX_DIM:
            raise BadHeaderError(f"tensor {meta.name!r} has 2**63 elements or more", field=where)
    return count


def _check_shared(meta: TensorMeta, where: str, max_bytes: int,
                  seen: Mapping[str, Any]) -> None:
    """A tensor in shared memory: the handle's length must be what dtype x shape needs."""
    if meta.shm is None:
        raise BadHeaderError(f"tensor {meta.name!r} has frame 0 but no shared-memory handle",
                             field=where)
    if meta.dtype == STRING:
        raise BadTensorError(f"tensor {meta.name!r}: string tensors travel as frames, never in "
                             f"shared memory", field=where)
    if meta.name in seen:
        raise BadHeaderError(f"tensor name {meta.name!r} appears twice", field=where)
    need = _element_count(meta, where) * itemsize(meta.dtype)
    if need > max_bytes:
        raise TooLargeError(f"tensor {meta.name!r} would need {need} bytes, over this "
                            f"receiver's limit of {max_bytes}", field=where)
    if meta.shm.len != need:
        raise BadTensorError(f"tensor {meta.name!r}: its shared memory holds {meta.shm.len} "
                             f"bytes but {meta.dtype} x {tuple(meta.shape)} needs {need}",
                             field=where)


_MODELS: dict[str, type[Header]] = dict(zip(KINDS, MESSAGE_MODELS, strict=True))
_FIELDS: dict[str, frozenset[str]] = {
    kind: frozenset({"kind", *model.__struct_fields__}) for kind, model in _MODELS.items()}
_TENSOR_FIELDS = frozenset(TensorMeta.__struct_fields__)


# kinds whose fields hold models of their own (FunctionSpec, WorkerStats): whatever unknown
# fields those carry is checked as free-form values are
_NESTED_MODELS = {"register": ("functions",), "heartbeat": ("stats",)}
# the kinds _typed decodes: msgspec would drop unknown fields inside nested models unseen
_TYPED = msgspec.msgpack.Decoder(Union[tuple(  # noqa: UP007 (a runtime union of classes)
    m for k, m in _MODELS.items() if k not in _NESTED_MODELS)])


def _check_keys(raw: dict[str, Any]) -> None:
    """Map keys are strings (SPEC section 6, row 4): msgpack's strict_map_key already refuses
    other types but lets bin keys through, here refused where the header's own fields are."""
    tensors = raw.get("tensors")
    metas = [m for m in tensors if isinstance(m, dict)] if isinstance(tensors, list) else []
    for m in (raw, *metas):
        for key in m:
            if not isinstance(key, str):
                raise BadFrameError("header has a map key that is not a string", field="header")


def _nil_is_absent(raw: dict[str, Any]) -> dict[str, Any]:
    """nil for a field means absent (SPEC section 4): its default, in the header and in each
    TensorMeta."""
    if None in raw.values():
        raw = {k: v for k, v in raw.items() if v is not None}
    tensors = raw.get("tensors")
    if isinstance(tensors, list) and any(isinstance(m, dict) and None in m.values()
                                         for m in tensors):
        raw["tensors"] = [{k: v for k, v in m.items() if v is not None}
                          if isinstance(m, dict) else m for m in tensors]
    return raw


def _known_fields_only(raw: dict[str, Any], kind: str) -> dict[str, Any]:
    """The header without its unknown fields, which the spec ignores and the models refuse
    (so that _typed can tell a header that has some)."""
    if not raw.keys() <= _FIELDS[kind]:
        raw = {k: v for k, v in raw.items() if k in _FIELDS[kind]}
    tensors = raw.get("tensors")
    if isinstance(tensors, list) and any(isinstance(m, dict) and not m.keys() <= _TENSOR_FIELDS
                                         for m in tensors):
        raw["tensors"] = [{k: v for k, v in m.items() if k in _TENSOR_FIELDS}
                          if isinstance(m, dict) else m for m in tensors]
    return raw


def _check_unknown_fields(raw: dict[str, Any], kind: str) -> None:
    """Unknown fields are ignored, but they too may hold only plain values (no bin, no ext):
    the one rule about extension types holds for the whole header."""
    for key in raw.keys() - _FIELDS[kind]:
        check_plain(raw[key], str(key))
    tensors = raw.get("tensors")
    if isinstance(tensors, list):
        for i, meta in enumerate(tensors):
            if isinstance(meta, dict):
                for key in meta.keys() - _TENSOR_FIELDS:
                    check_plain(meta[key], f"tensors.{i}.{key}")


def _check_free_form(msg: Header) -> None:
    """The maps the schema leaves open hold plain values only (wire/values.py); CONTROL
    ``args`` and a GRAPH ``spec`` are also JSON: finite numbers only."""
    if isinstance(msg, ControlMsg):
        check_plain(msg.args, "args", finite=True)
    elif isinstance(msg, GraphMsg):
        check_plain(msg.spec, "spec", finite=True)
    elif isinstance(msg, ReplyMsg):
        check_plain(msg.body, "body")
    elif isinstance(msg, RegisterMsg):
        check_plain(msg.info, "info")


def is_error_message(frames: Sequence[Frame]) -> bool:
    """Whether an undecodable message claims to be an ERROR: never answer one with
    another, or two peers that disagree (say, on the version) would bounce errors forever."""
    try:
        raw = msgpack.unpackb(memoryview(frames[0]), raw=False) if frames else None
    except Exception:  # garbage is not an error message
        return False
    return isinstance(raw, dict) and raw.get("kind") == "error"


def _is_tensor_dtype(loc: str) -> bool:
    """True for a validation error at ``tensors.<i>.dtype``."""
    parts = loc.split(".")
    return len(parts) == 3 and parts[0] == "tensors" and parts[2] == "dtype"


def _wrap_tensors(metas: list[TensorMeta], frames: Sequence[Frame], max_bytes: int
                  ) -> dict[str, np.ndarray]:
    if not metas:  # a control message: numpy stays unloaded where only those pass
        return {}
    import numpy as np

    arrays: dict[str, np.ndarray] = {}
    used: set[int] = set()
    for i, meta in enumerate(metas):
        where = f"tensors.{i}"
        if meta.frame >= len(frames):
            raise BadFrameError(f"tensor {meta.name!r} points at frame {meta.frame} but the message "
                                f"has only {len(frames)} frames (truncated?)", field=where)
        if meta.frame in used:
            raise BadHeaderError(f"frame {meta.frame} is referenced by two tensors", field=where)
        if meta.name in arrays:
            raise BadHeaderError(f"tensor name {meta.name!r} appears twice", field=where)
        used.add(meta.frame)
        count = _element_count(meta, where)
        if meta.dtype == STRING:
            check_size(count, meta.name, where, max_bytes)
            arrays[meta.name] = decode_strings(frames[meta.frame], meta.shape, meta.name, where)
            continue
        dtype = to_numpy_dtype(meta.dtype)
        if count * dtype.itemsize > max_bytes:
            raise TooLargeError(f"tensor {meta.name!r} would need {count * dtype.itemsize} bytes, "
                                f"over this receiver's limit of {max_bytes}", field=where)
        buf = memoryview(frames[meta.frame])
        if buf.nbytes != count * dtype.itemsize:
            raise BadTensorError(
                f"tensor {meta.name!r}: frame has {buf.nbytes} bytes but {meta.dtype} x "
                f"{tuple(meta.shape)} needs {count * dtype.itemsize}", field=where)
        arr = np.frombuffer(buf, dtype=dtype, count=count).reshape(meta.shape)
        # zmq frames are writable, and over inproc they are the sender's own memory
        arr.flags.writeable = False
        arrays[meta.name] = arr
    if len(used) != len(frames) - 1:
        raise BadFrameError(f"message has {len(frames) - 1} buffer frames but the header "
                            f"references {len(used)}", field="frames")
    return arrays
