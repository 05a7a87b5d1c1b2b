"""String tensors (protocol/SPEC.md section 3.4): the codec, refusals on a live worker, a
2-worker chain, and the onnx package's StringNormalizer test models in onnxruntime workers.

Two clusters serve the module: ``cluster`` (w1, w2: NumPy) and ``ort_cluster`` (two
StringNormalizer models and a NumPy worker). StringNormalizer defaults to the locale
en_US.UTF-8; a host without it gets one built with ``localedef`` into a temporary LOCPATH.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from interop_runtime import (
    BadTensorError,
    BusyError,
    ClusterSpec,
    DTypeMismatchError,
    ErrorCode,
    Graph,
    LocalCluster,
    ProtocolError,
    TooLargeError,
)
from interop_runtime.client.testing import dial, inbox, numpy_worker
from interop_runtime.coordinator.store import pack_tensors, unpack_tensors
from interop_runtime.transport.shm import SHM_MIN_BYTES, frames_only
from interop_runtime.wire.codec import decode, encode
from interop_runtime.wire.dtypes import DTYPE_NAMES, STRING, itemsize, to_numpy_dtype, wire_dtype
from interop_runtime.wire.messages import PROTOCOL_VERSION, ControlMsg, DataMsg

STRINGS = np.array([["", "héllo"], ["日本語", "naïve 🙂 ok"]], dtype=object)
HANDLE = {"token": "2e9a7c4b1d0f38a6e5b4c3d2f1a09e8d", "pid": 4242, "fd": 17, "off": 64,
          "len": 16, "gen": 3}


def data_msg(node: str = "n", graph: str = "g") -> DataMsg:
    return DataMsg(v=PROTOCOL_VERSION, id="s-1", graph=graph, run="r", node=node)


def roundtrip(arrays: dict[str, Any]) -> dict[str, np.ndarray]:
    return decode([bytes(f) for f in encode(data_msg(), arrays)]).arrays


def frame(offsets: list[int], data: bytes) -> bytes:
    return np.array(offsets, "<i8").tobytes() + data


def string_frames(shape: list[int], body: bytes, *, name: str = "x", node: str = "n",
                  graph: str = "g") -> list[bytes]:
    head = msgpack.unpackb(bytes(encode(data_msg(node, graph))[0]))
    head["tensors"] = [{"name": name, "dtype": STRING, "shape": shape, "frame": 1}]
    return [msgpack.packb(head), body]


# --- the codec ---------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda: STRINGS,
    lambda: STRINGS.astype(str),  # <U
    lambda: STRINGS.astype(np.dtypes.StringDType()),
    lambda: STRINGS.T,  # not C-contiguous: sent in C order of the transposed view
    lambda: np.array("ß", dtype=object),  # 0-d
    lambda: np.zeros((3, 0), dtype=object),  # empty
    lambda: np.array(["nul\x00inside", "\U0010ffff"], dtype=object),
], ids=["object", "unicode", "stringdtype", "transposed", "0d", "empty", "nul-and-max"])
def test_round_trip_gives_a_read_only_object_array_of_str(make: Callable[[], np.ndarray]
                                                          ) -> None:
    a = make()
    got = roundtrip({"s": a})["s"]
    assert got.dtype == np.dtype(object) and got.shape == a.shape
    assert all(type(x) is str for x in got.reshape(-1))
    assert got.tolist() == a.astype(object).tolist()
    assert not got.flags.writeable


def test_frame_is_int64_offsets_then_utf8() -> None:
    frames = encode(data_msg(), {"s": STRINGS})
    data = "".join(STRINGS.reshape(-1)).encode()
    assert bytes(frames[1]) == frame([0, 0, 6, 15, len(data)], data)
    assert msgpack.unpackb(bytes(frames[0]))["tensors"][0]["dtype"] == "string"
    assert bytes(encode(data_msg(), {"e": np.zeros(0, object)})[1]) == frame([0], b"")


def test_dtype_names() -> None:
    assert STRING in DTYPE_NAMES
    for dt in (np.dtype(object), np.dtype("<U3"), np.dtypes.StringDType()):
        assert wire_dtype(dt) == "string"
    assert to_numpy_dtype("string") == np.dtype(object)
    with pytest.raises(BadTensorError):
        itemsize("string")
    with pytest.raises(BadTensorError, match="cannot travel"):
        wire_dtype(np.dtype("S3"))  # bytes are not text


@pytest.mark.parametrize("bad", [
    np.array(["ok", b"bytes"], dtype=object),
    np.array(["ok", None], dtype=object),
    np.array([1, "x"], dtype=object),
    np.array(["ok", "\udcff"], dtype=object),  # a lone surrogate has no UTF-8
    np.array(["ok", np.nan], dtype=np.dtypes.StringDType(na_object=np.nan)),
], ids=["bytes", "none", "int", "surrogate", "stringdtype-na"])
def test_encode_refuses_an_element_that_is_not_text(bad: np.ndarray) -> None:
    with pytest.raises(BadTensorError, match="tensor 'words': element"):
        encode(data_msg(), {"words": bad})


BAD_FRAMES: dict[str, tuple[list[int], bytes, str]] = {
    "invalid utf-8": ([2], frame([0, 2, 3], b"ok\xff"), "element 1 is not valid UTF-8"),
    "overlong utf-8": ([1], frame([0, 2], b"\xc0\xaf"), "not valid UTF-8"),
    "surrogate utf-8": ([1], frame([0, 3], b"\xed\xa0\x80"), "not valid UTF-8"),
    "offset splits a character": ([2], frame([0, 1, 2], "é".encode()), "not valid UTF-8"),
    "first offset not 0": ([2], frame([1, 2, 3], b"abc"), "first offset is 1"),
    "decreasing": ([3], frame([0, 3, 1, 4], b"abcd"), "decrease at element 1"),
    "negative": ([2], frame([0, -1, 2], b"ab"), "offset 1 is -1"),
    "overflowing": ([3], frame([0, (1 << 63) - 1, -(1 << 63), 1], b"a"), "outside"),
    "beyond the data": ([2], frame([0, 2, 9], b"abcd"), "offset 2 is 9, outside"),
    "last short of the data": ([2], frame([0, 2, 3], b"abcd"), "last offset is 3"),
    "shorter than its offsets": ([4], frame([0, 1, 2], b"ab"), "need 40 bytes of offsets"),
    "count not the shape's": ([3], frame([0, 1, 2], b"abcdefgh"), "tensor 'x'"),
}


@pytest.mark.parametrize("case", list(BAD_FRAMES))
def test_decode_refuses_a_bad_string_frame_naming_the_tensor(case: str) -> None:
    shape, body, message = BAD_FRAMES[case]
    with pytest.raises(BadTensorError, match=message) as err:
        decode(string_frames(shape, body))
    assert "tensor 'x'" in err.value.message and err.value.field == "tensors.0"


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.integers(0, 3), max_size=3),
       st.lists(st.integers(-(1 << 63), (1 << 63) - 1), max_size=6), st.binary(max_size=12))
def test_any_string_frame_decodes_or_is_refused_typed(shape: list[int], offsets: list[int],
                                                      data: bytes) -> None:
    try:
        got = decode(string_frames(shape, frame(offsets, data))).arrays["x"]
    except ProtocolError:
        return
    assert got.shape == tuple(shape) and all(type(x) is str for x in got.reshape(-1))
    assert "".join(got.reshape(-1)).encode() == data  # the elements are the data, in order


def test_decode_refuses_oversize_and_shared_memory() -> None:
    with pytest.raises(TooLargeError, match="bytes of offsets"):
        decode(string_frames([10_000], frame([0], b"")), max_bytes=4096)
    head = msgpack.unpackb(string_frames([2], b"")[0])
    head["tensors"][0].update(frame=0, shm=HANDLE)
    with pytest.raises(BadTensorError, match="never in shared memory"):
        decode([msgpack.packb(head)])


def test_strings_never_go_to_shared_memory_and_survive_the_store() -> None:
    big = np.array([f"word {i}" for i in range(SHM_MIN_BYTES)], dtype=object)
    assert big.nbytes >= SHM_MIN_BYTES and frames_only(big)
    assert not frames_only(np.zeros(SHM_MIN_BYTES, np.uint8))
    stored = unpack_tensors(pack_tensors({"s": STRINGS, "f": np.ones(2, np.float32)}))
    assert stored["s"].tolist() == STRINGS.tolist() and stored["f"].tolist() == [1.0, 1.0]


# --- real processes: refusals, a chain ---------------------------------------------------------

@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    spec = ClusterSpec.model_validate({"coordinator": {"heartbeat_s": 0.5}, "workers": [
        numpy_worker("w1", "upper", "scale", "identity"),
        numpy_worker("w2", "identity", "str_len")]})
    with LocalCluster(spec) as lc:
        with lc.client() as c:
            g = Graph("chain").node("a", "w1", "upper").node("b", "w2", "identity")
            g.edge("a.y", "b.x").input("x", "a.x").output("y", "b.y")
            c.register(g)
            lengths = Graph("lengths").node("a", "w1", "upper").node("b", "w2", "str_len")
            lengths.edge("a.y", "b.x").input("x", "a.x").output("n", "b.n")
            c.register(lengths)
        yield lc


@pytest.fixture
def w1_inbox(cluster: LocalCluster) -> Iterator[zmq.Socket]:
    sock = dial(cluster, inbox(cluster, "w1"), server="w1")
    yield sock
    sock.close(0)


def exchange(sock: zmq.Socket, frames: list[Any]) -> Any:
    sock.send_multipart(frames)
    assert sock.poll(10_000), "no reply within 10 s"
    return decode(sock.recv_multipart()).msg


@pytest.mark.parametrize("case", ["invalid utf-8", "decreasing", "beyond the data",
                                  "shorter than its offsets"])
def test_worker_refuses_a_bad_string_tensor_and_serves_on(w1_inbox: zmq.Socket, case: str
                                                          ) -> None:
    shape, body, _ = BAD_FRAMES[case]
    reply = exchange(w1_inbox, string_frames(shape, body, node="a", graph="chain"))
    assert reply.kind == "error" and reply.code == ErrorCode.BAD_TENSOR, reply
    assert "tensor 'x'" in reply.message and reply.field == "tensors.0"
    ping = ControlMsg(v=PROTOCOL_VERSION, id="p", action="ping")
    assert exchange(w1_inbox, encode(ping)).body["name"] == "w1"


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "via-coordinator"])
def test_strings_through_a_two_worker_chain(cluster: LocalCluster, direct: bool) -> None:
    big = np.array([f"wörd {i} 🙂" for i in range(20_000)], dtype=object)  # > SHM_MIN_BYTES
    with cluster.client(direct=direct) as c:
        for x in (STRINGS, big, np.array(["a", "bc"]), np.array("0-d", dtype=object)):
            y = c.run("chain", {"x": x}, timeout_s=30)["y"]
            assert y.dtype == np.dtype(object) and y.shape == x.shape
            assert y.tolist() == np.strings.upper(x.astype(np.dtypes.StringDType())).tolist()
        n = c.run("lengths", {"x": STRINGS}, timeout_s=30)["n"]
        assert n.dtype == np.int64 and n.tolist() == [[0, 5], [3, 10]]


def test_a_detached_run_keeps_its_strings(cluster: LocalCluster) -> None:
    # the coordinator keeps a detached run's outputs in its store until they are collected
    with cluster.client() as c:
        run = c.start("chain", {"x": STRINGS}, timeout_s=30)
        deadline = time.monotonic() + 30
        while True:
            try:
                y = c.result(run)["y"]
                break
            except BusyError:  # still running
                assert time.monotonic() < deadline, "the detached run never finished"
                time.sleep(0.05)
        assert y.tolist() == [["", "HÉLLO"], ["日本語", "NAÏVE 🙂 OK"]]


def test_string_and_float_do_not_meet(cluster: LocalCluster) -> None:
    with cluster.client() as c:
        bad = Graph("str-to-float").node("a", "w1", "upper").node("b", "w1", "scale")
        bad.edge("a.y", "b.x")
        with pytest.raises(DTypeMismatchError, match=r"a\.y -> b\.x.*string.*float32"):
            c.validate(bad)
        with pytest.raises(DTypeMismatchError, match="graph input 'x'.*float32"):
            c.run("chain", {"x": np.ones(2, np.float32)}, timeout_s=30)
        with pytest.raises(BadTensorError, match="tensor 'x': element 1 is bytes"):
            c.run("chain", {"x": np.array(["ok", b"no"], dtype=object)}, timeout_s=30)
        assert c.run("chain", {"x": np.array(["still up"])}, timeout_s=30)["y"].tolist() == \
            ["STILL UP"]


# --- onnxruntime: the onnx package's StringNormalizer test models -------------------------------

def _stringnormalizer_cases() -> dict[str, tuple[dict[str, Any], np.ndarray, np.ndarray]]:
    """name -> (node attributes, input, expected output), as in the onnx package's
    onnx/backend/test/case/node/stringnormalizer.py."""
    days = np.array(["monday", "tuesday", "wednesday", "thursday"]).astype(object)
    rest = np.array(["tuesday", "wednesday", "thursday"]).astype(object)
    twodim = np.array(["Monday", "tuesday", "wednesday", "Monday", "tuesday", "wednesday"]
                      ).astype(object).reshape([1, 6])
    return {
        "nostopwords_nochangecase": ({"is_case_sensitive": 1},
                                     np.array(["monday", "tuesday"]).astype(object),
                                     np.array(["monday", "tuesday"]).astype(object)),
        "monday_casesensintive_nochangecase": ({"is_case_sensitive": 1, "stopwords": ["monday"]},
                                               days, rest),
        "monday_casesensintive_lower": ({"case_change_action": "LOWER", "is_case_sensitive": 1,
                                         "stopwords": ["monday"]}, days, rest),
        "monday_casesensintive_upper": ({"case_change_action": "UPPER", "is_case_sensitive": 1,
                                         "stopwords": ["monday"]}, days,
                                        np.array(["TUESDAY", "WEDNESDAY", "THURSDAY"]).astype(
                                            object)),
        "monday_empty_output": ({"case_change_action": "UPPER", "is_case_sensitive": 1,
                                 "stopwords": ["monday"]},
                                np.array(["monday", "monday"]).astype(object),
                                np.array([""]).astype(object)),
        "monday_insensintive_upper_twodim": ({"case_change_action": "UPPER",
                                              "stopwords": ["monday"]}, twodim,
                                             np.array(["TUESDAY", "WEDNESDAY", "TUESDAY",
                                                       "WEDNESDAY"]).astype(object).reshape(
                                                 [1, 4])),
    }


CASES = _stringnormalizer_cases()
IN_WORKERS = ("monday_casesensintive_upper", "monday_casesensintive_lower")


def _save_model(name: str, folder: Path) -> Path:
    """What onnx's ``expect()`` builds: one node, value infos from the arrays, opset 10."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    attrs, x, y = CASES[name]
    node = helper.make_node("StringNormalizer", inputs=["x"], outputs=["y"], **attrs)
    graph = helper.make_graph(
        [node], f"test_strnormalizer_{name}",
        [helper.make_tensor_value_info("x", TensorProto.STRING, x.shape)],
        [helper.make_tensor_value_info("y", TensorProto.STRING, y.shape)])
    model = helper.make_model(graph, producer_name="backend-test",
                              opset_imports=[helper.make_operatorsetid("", 10)])
    path = folder / f"{name}.onnx"
    onnx.save(model, str(path))
    return path


def _ort_run(path: Path, x: np.ndarray) -> np.ndarray:
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["y"], {"x": x})[0]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The models on disk, and the environment their workers need for the locale."""
    pytest.importorskip("interop_onnxruntime")
    folder = tmp_path_factory.mktemp("strnorm")
    paths = {name: _save_model(name, folder) for name in CASES}
    env: dict[str, str] = {}
    with pytest.MonkeyPatch.context() as mp:
        try:
            _ort_run(paths[IN_WORKERS[0]], CASES[IN_WORKERS[0]][1])
        except Exception as exc:
            if "locale" not in str(exc) or not shutil.which("localedef"):
                raise
            locales = folder / "locales"
            locales.mkdir()
            subprocess.run(["localedef", "-i", "en_US", "-f", "UTF-8",
                            str(locales / "en_US.UTF-8")], capture_output=True, timeout=120)
            if not (locales / "en_US.UTF-8").is_dir():
                pytest.skip("StringNormalizer needs locale en_US.UTF-8 and localedef failed")
            env = {"LOCPATH": str(locales)}
            mp.setenv("LOCPATH", str(locales))
        yield {"paths": paths, "env": env}


@pytest.mark.parametrize("name", list(CASES))
def test_stringnormalizer_models_in_the_plugin(models: dict[str, Any], name: str) -> None:
    from interop_onnxruntime import OnnxRuntimePlugin

    path, (_, x, want) = models["paths"][name], CASES[name]
    plugin = OnnxRuntimePlugin()
    plugin.load({"model": str(path)}, "cpu")
    [fn] = plugin.describe()
    assert [(s.name, s.dtype, s.shape) for s in fn.inputs] == [("x", "string", list(x.shape))]
    assert [(s.name, s.dtype, s.shape) for s in fn.outputs] == [("y", "string", list(want.shape))]
    # as the codec hands them over (read-only object), and as StringDType
    for fed in (roundtrip({"x": x})["x"], x.astype(np.dtypes.StringDType())):
        got = plugin.call("run", {"x": fed}, {})["y"]
        assert got.dtype == np.dtype(object) and got.tolist() == want.tolist()


def test_a_missing_locale_is_named_in_one_line(models: dict[str, Any],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from interop_onnxruntime import OnnxRuntimePlugin

    if not models["env"]:
        pytest.skip("this host has en_US.UTF-8 installed")
    monkeypatch.delenv("LOCPATH")
    with pytest.raises(ValueError, match="needs locale 'en_US.UTF-8', which this host lacks"):
        OnnxRuntimePlugin().load({"model": str(models["paths"][IN_WORKERS[0]])}, "cpu")


@pytest.fixture(scope="module")
def ort_cluster(models: dict[str, Any]) -> Iterator[LocalCluster]:
    workers = [{"name": name.rsplit("_", 1)[1], "plugin": "onnxruntime", "env": models["env"],
                "config": {"model": str(models["paths"][name])}} for name in IN_WORKERS]
    spec = ClusterSpec.model_validate({"coordinator": {"heartbeat_s": 0.5},
                                       "workers": [*workers, numpy_worker("np", "upper")]})
    with LocalCluster(spec) as lc:
        yield lc


@pytest.mark.parametrize("name", IN_WORKERS)
def test_stringnormalizer_in_a_worker_matches_onnxruntime(ort_cluster: LocalCluster,
                                                          models: dict[str, Any],
                                                          name: str) -> None:
    worker = name.rsplit("_", 1)[1]
    x, want = CASES[name][1], CASES[name][2]
    g = Graph(f"sn-{worker}").node("a", worker, "run").input("x", "a.x").output("y", "a.y")
    with ort_cluster.client() as c:
        y = c.run(g, {"x": x}, timeout_s=60)["y"]
    assert y.tolist() == _ort_run(models["paths"][name], x).tolist() == want.tolist()


def test_numpy_upper_then_onnx_lower(ort_cluster: LocalCluster, models: dict[str, Any]) -> None:
    # "MONDAY" is not the case-sensitive stopword "monday": all four come through, lowered
    x = np.array(["monday", "Tuesday", "wednesday", "Thursday"], dtype=object)
    g = Graph("np-onnx").node("a", "np", "upper").node("b", "lower", "run")
    g.edge("a.y", "b.x").input("x", "a.x").output("y", "b.y")
    with ort_cluster.client() as c:
        y = c.run(g, {"x": x}, timeout_s=60)["y"]
    upper = np.strings.upper(x.astype(np.dtypes.StringDType())).astype(object)
    want = _ort_run(models["paths"]["monday_casesensintive_lower"], upper)
    assert y.tolist() == want.tolist() == ["monday", "tuesday", "wednesday", "thursday"]
