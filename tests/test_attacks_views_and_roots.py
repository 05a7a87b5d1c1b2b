"""Zero-copy client outputs (SPEC 17.4) and model roots (wire loads), as an attacker tries
them: each test states a guarantee and tries to break it on real processes. Written by a
review that found four bugs (a bfloat16 view, a stranger's release of a forwarded segment,
held views starving another client's edges, a newline in a path); all are fixed.
One plain-text cluster serves the module (a raw DEALER speaks the wire by hand on it):
w1 (identity, scale) and w2 (add_const) for direct runs through shared memory; ``tiny``
with a 1 MiB pool; ``onnx``, an onnxruntime worker without a start-up model whose only
model root is a temporary folder.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import pytest
import zmq
from onnx import TensorProto, helper

from interop_runtime import ClusterSpec, ErrorCode, Graph, LocalCluster
from interop_runtime.client.testing import dial, inbox, numpy_worker
from interop_runtime.transport.shm import host_key
from interop_runtime.wire.codec import decode, encode, new_id
from interop_runtime.wire.errors import InteropError, UnauthorizedError
from interop_runtime.wire.messages import PROTOCOL_VERSION, ControlMsg, ErrorMsg

pytestmark = pytest.mark.skipif(host_key() is None, reason="needs Linux memfd_create")

MIB_4 = 1 << 20  # float32 elements in 4 MiB


def tiny_model(path: Path) -> Path:
    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [3])], [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                                       [3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def wait_for(predicate, what: str, timeout_s: float = 10.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.05)
    return value


def shm(c, worker: str) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return c.control(worker, "ping")["shm"]


def recv(sock: zmq.Socket, timeout_s: float) -> object | None:
    if not sock.poll(int(timeout_s * 1000)):
        return None
    return decode(sock.recv_multipart()).msg


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("roots") / "models"
    folder.mkdir()
    tiny_model(folder / "ok.onnx")
    return folder


@pytest.fixture(scope="module")
def lc(root: Path) -> Iterator[LocalCluster]:
    spec = ClusterSpec.model_validate({
        "coordinator": {"heartbeat_s": 0.5, "curve": False},
        "workers": [numpy_worker("w1", "identity", "scale"),
                    numpy_worker("w2", "add_const"),
                    numpy_worker("tiny", "scale", shm_pool_mib=1),
                    numpy_worker("quad", "scale", shm_pool_mib=4),
                    {"name": "onnx", "plugin": "onnxruntime", "config": {},
                     "model_root": str(root)}]})
    with LocalCluster(spec) as cluster:
        with cluster.client() as c:
            c.register(Graph("echo").node("a", "w1", "identity").input("x", "a.x")
                       .output("y", "a.y"))
            c.register(Graph("tiny_out").node("a", "tiny", "scale").input("x", "a.x")
                       .output("y", "a.y"))
            c.register(Graph("tiny_chain").node("a", "tiny", "scale").node("b", "w2", "add_const")
                       .edge("a.y", "b.x").input("x", "a.x").output("y", "b.y"))
            c.register(Graph("quad_out").node("a", "quad", "scale").input("x", "a.x")
                       .output("y", "a.y"))
            c.register(Graph("quad_chain").node("a", "quad", "scale").node("b", "w2", "add_const")
                       .edge("a.y", "b.x").input("x", "a.x").output("y", "b.y"))
        yield cluster


# --- zero-copy outputs ---------------------------------------------------------------------------

def test_a_zero_copy_bfloat16_output_keeps_its_dtype(lc: LocalCluster) -> None:
    """A view is the array the worker sent, dtype included (__array_interface__ spells
    ml_dtypes' bfloat16 as raw '<V2' bytes)."""
    x = np.arange(64 * 1024, dtype=np.float32).astype(ml_dtypes.bfloat16)  # 128 KiB: shm
    with lc.client() as c:
        copied = c.run("echo", {"x": x}, timeout_s=30)["y"]
        assert copied.dtype == x.dtype  # the copying path is right
        y = c.run("echo", {"x": x}, timeout_s=30, copy=False)["y"]
        assert y.dtype == x.dtype, f"zero-copy output came back as {y.dtype}, not bfloat16"
        np.testing.assert_array_equal(y.astype(np.float32), x.astype(np.float32))


def test_a_stranger_cannot_release_a_forwarded_segment_under_a_held_view(
        lc: LocalCluster) -> None:
    """SPEC 13.3/17.4: a release is honoured only from the connection the handle was leased
    (or forwarded) to, else bad_handle and nothing is freed: a peer that knows the handle
    (every co-consumer of a fan-out does) cannot free it under the holder's view."""
    endpoint = inbox(lc, "w1")
    stranger = dial(lc, endpoint)
    try:
        with lc.client() as c:
            out = c.run("echo", {"x": np.full(MIB_4, 1.0, np.float32)}, timeout_s=30,
                        copy=False)
            y = out["y"]  # w1's identity forwarded our own input segment back to us
            assert y[0] == 1.0 and shm(c, "w1")["forwarded"] >= 1
            handle = c._sync._direct.memory.maps.locate(y)  # what a co-consumer would have been sent
            assert handle is not None
            stranger.send_multipart(encode(ControlMsg(
                v=PROTOCOL_VERSION, id=new_id(), src="rogue", action="release", run=out.run,
                args={"handles": [handle.to_wire()]})))
            answer = recv(stranger, 3.0)
            time.sleep(0.5)  # w1's upstream release, if any, reaches our client
            # a later run of ours writes its input into a segment of our pool
            c.run("echo", {"x": np.full(MIB_4, 7.0, np.float32)}, timeout_s=30)
            refused = isinstance(answer, ErrorMsg) and answer.code == ErrorCode.BAD_HANDLE
            assert y[0] == 1.0, (f"the held view changed to {y[0]} after a stranger's release "
                                 f"(stranger refused: {refused}; answer {answer!r})")
            assert refused, f"a stranger's release was not refused: {answer!r}"
            del y, out
            gc.collect()
            c.run("echo", {"x": np.zeros(4, np.float32)}, timeout_s=30)
    finally:
        stranger.close(0)


def test_held_zero_copy_outputs_do_not_fail_another_clients_runs(lc: LocalCluster) -> None:
    """Views held by one client pin segments of the worker's pool. Outputs to clients may
    take half of it (worker/dataplane.py CLIENT_SHARE); beyond, they go as frames, so a
    worker-to-worker edge of the same worker, for another client's run, still finds room."""
    half = np.arange(128 * 1024, dtype=np.float32)  # 512 KiB: a 1 MiB segment of quad's 4
    big = np.arange(384 * 1024, dtype=np.float32)  # 1.5 MiB: a 2 MiB segment on the edge
    with lc.client() as holder, lc.client() as victim:
        held = [holder.run("quad_out", {"x": half + i}, timeout_s=30, copy=False)["y"]
                for i in range(3)]
        assert shm(holder, "quad")["leased"] == 2  # the third came as frames
        for _ in range(2):
            np.testing.assert_array_equal(victim.run("quad_chain", {"x": big}, timeout_s=30)["y"],
                                          big * 2 + 1)
        for i, y in enumerate(held):
            np.testing.assert_array_equal(y, (half + i) * 2)
        del held, y
        gc.collect()
        holder.run("quad_out", {"x": np.zeros(4, np.float32)}, timeout_s=30)  # releases
        wait_for(lambda: shm(holder, "quad")["leased"] == 0, "quad's segments back")


def test_a_view_dropped_before_close_is_released_by_close(lc: LocalCluster) -> None:
    """close() flushes the queued releases, then closes the sockets with LINGER 0: the
    releases must still reach the worker, or its segments stay leased for 600 s."""
    with lc.client() as probe:
        for _ in range(8):
            with lc.client() as c:
                y = c.run("tiny_out", {"x": np.arange(192 * 1024, dtype=np.float32)},
                          timeout_s=30, copy=False)["y"]
                del y
                gc.collect()
            wait_for(lambda: shm(probe, "tiny")["leased"] == 0,
                     "the release that close() flushed", timeout_s=5.0)


def test_hostile_release_messages_do_not_wedge_a_worker(lc: LocalCluster) -> None:
    """Garbage handles, wrong types, 1025 handles, a release with no run: typed refusals,
    and the worker serves on."""
    stranger = dial(lc, inbox(lc, "w1"))
    good = {"token": "0" * 32, "pid": 1, "fd": 3, "off": 64, "len": 8, "gen": 1}
    try:
        for args in ({"handles": "x"}, {"handles": [good] * 1025}, {"handles": [1, None]},
                     {"handles": [{**good, "gen": True}]}, {"handles": [{**good, "pid": -1}]},
                     {"handles": [good]}, {}):
            stranger.send_multipart(encode(ControlMsg(
                v=PROTOCOL_VERSION, id=new_id(), src="rogue", action="release", run="r",
                args=args)))
            answer = recv(stranger, 3.0)
            assert isinstance(answer, ErrorMsg) and answer.code == ErrorCode.BAD_HANDLE, answer
        with lc.client() as c:
            np.testing.assert_array_equal(c.run("echo", {"x": np.ones(MIB_4, np.float32)},
                                                timeout_s=30)["y"], 1.0)
    finally:
        stranger.close(0)


# --- model roots ---------------------------------------------------------------------------------

def test_a_path_with_a_newline_is_still_confined_to_the_model_roots(
        lc: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> None:
    """A file outside the roots whose name holds a newline (any local user can make one in
    /tmp) is refused like any other."""
    outside = tmp_path_factory.mktemp("outside")
    evil = tiny_model(outside / "evil\nmodel.onnx")
    with lc.client() as c:
        try:
            loaded = c.load_model("onnx", "nl", {"model": str(evil)})
        except UnauthorizedError:
            return  # confined, as it should be
        c.unload_model("onnx", "nl")
        pytest.fail(f"{str(evil)!r}, outside the model roots, was loaded: {loaded}")


@pytest.mark.parametrize("value", ["/etc/\x00passwd", "~no_such_user_here/x.onnx",
                                   "a" * 5000 + ".onnx", "/" + "x/" * 3000 + "m.onnx"])
def test_odd_paths_are_refused_with_a_typed_error(lc: LocalCluster, value: str) -> None:
    with lc.client() as c:
        with pytest.raises(InteropError) as err:
            c.load_model("onnx", "odd", {"model": value})
        assert "Traceback" not in str(err.value), err.value
        assert "odd/run" not in c.functions("onnx")
        assert c.control("onnx", "ping")["name"] == "onnx"  # the worker serves on


def test_paths_in_lists_nested_maps_and_dot_forms_are_confined(lc: LocalCluster, root: Path
                                                               ) -> None:
    with lc.client() as c:
        for config in ({"model": "ok.onnx", "x": {"y": [{"z": "/etc/hostname"}]}},
                       {"model": "./../../../../etc/hostname"},
                       {"model": "~/.bashrc"},
                       {"model": str(root) + "/../" + root.name + "-evil/ok.onnx"}):
            with pytest.raises(UnauthorizedError):
                c.load_model("onnx", "esc", config)
        assert c.load_model("onnx", "fine", {"model": "./ok.onnx"})["functions"] == ["fine/run"]
        c.unload_model("onnx", "fine")


def test_a_zero_copy_view_outlives_its_client(lc: LocalCluster) -> None:
    """Last in the module: the view's lease stays with the worker until it expires."""
    x = np.arange(128 * 1024, dtype=np.float32)
    with lc.client() as gone:
        kept = gone.run("quad_out", {"x": x}, timeout_s=30, copy=False)["y"]
    with lc.client() as c:
        assert shm(c, "quad")["leased"] == 1
        np.testing.assert_array_equal(c.run("quad_out", {"x": x + 1}, timeout_s=30)["y"],
                                      (x + 1) * 2)
    np.testing.assert_array_equal(kept, x * 2)
