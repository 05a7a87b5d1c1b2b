"""Fuzz the message handlers of a live cluster: the quick CI profile of
``bench/fuzz_handlers.py`` (which holds the generator and the loop; nothing is duplicated
here), plus checks of the generator itself and the minimal messages of what it found.

A rogue holding the client's key (and w1's, on w2's inbox) sends about 2,000 schema-drawn
headers of every kind with adversarial values and tensors; after every batch every process
must be alive, every answer a typed REPLY or ERROR, and the honest client's runs of graph
``chain`` right. ``INTEROP_FUZZ_HANDLER_MESSAGES=20000`` runs longer;
``INTEROP_FUZZ_RANDOM=1`` draws new examples (by default every run draws the same ones).
The long run is ``python -m bench.fuzz_handlers --messages 100000``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

# bench/ is a top-level package of the repository, not of the installed interop_runtime
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.fuzz_handlers import (
    ERROR_CODES,
    ROUTES,
    FuzzSession,
    Pools,
    Tensors,
    cluster_spec,
    consistent_tensors,
    expected_y,
    fuzz,
    honest_graph,
    inconsistent_tensors,
)
from interop_runtime import PROTOCOL_VERSION, LocalCluster, ProtocolError
from interop_runtime.client.testing import dial
from interop_runtime.wire.codec import decode
from interop_runtime.wire.strings import encode_strings

MESSAGES = int(os.environ.get("INTEROP_FUZZ_HANDLER_MESSAGES", "2000"))
RSS_GROWTH_BOUND = 150 << 20  # generous: the point is "not without bound"
QUICK = settings(max_examples=200, deadline=None, database=None,
                 suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(cluster_spec()) as lc:
        with lc.client() as c:
            c.register(honest_graph())
        yield lc


def test_fuzzed_messages_get_typed_answers_and_the_cluster_serves_on(
        cluster: LocalCluster) -> None:
    # keep_going: collect every kind of untyped answer in one run; fatal ones stop at once
    session = FuzzSession(cluster, batch=200, keep_going=True)
    try:
        report = fuzz(session, MESSAGES, derandomize=not os.environ.get("INTEROP_FUZZ_RANDOM"))
    finally:
        session.close()
    print(report.table())
    failures = "\n\n".join(f.text() for f in report.failures)
    assert not [f for f in report.failures if f.fatal], failures
    assert report.honest_failed == 0 and report.honest_ok >= MESSAGES // 25, report.table()
    assert report.untyped == 0 and not report.failures, failures
    for proc, growth in report.rss_growth().items():
        assert growth < RSS_GROWTH_BOUND, f"{proc} grew by {growth >> 20} MiB\n{report.table()}"
    # the generator reached everything it is meant to reach
    assert len(report.sent) == 12 and set(report.routes) == set(ROUTES), report.table()
    assert report.tensor_modes["consistent"] > MESSAGES // 5, report.table()
    assert report.answers["reply"] > 0 and len(report.answers) > 8, report.table()


# --- the generator keeps its promises ------------------------------------------------------

def _data_frames(t: Tensors) -> list[bytes]:
    header = {"kind": "data", "v": PROTOCOL_VERSION, "id": "m1", "graph": "g", "run": "r", "node": "n",
              "tensors": t.metas}
    return [msgpack.packb(header), *t.buffers]


@QUICK
@given(consistent_tensors(Pools()))
def test_consistent_tensors_match_their_frames(t: Tensors) -> None:
    env = decode(_data_frames(t))
    assert sum(len(b) for b in t.buffers) <= 64 << 10
    for meta in t.metas:
        arr = env.arrays[meta["name"]]
        frame = t.buffers[meta["frame"] - 1]
        assert list(arr.shape) == meta["shape"]
        if meta["dtype"] == "string":  # offsets then UTF-8: the frame re-encodes to itself
            assert encode_strings(arr, meta["name"]) == frame
        else:
            assert arr.nbytes == len(frame)


@QUICK
@given(inconsistent_tensors(Pools()))
def test_inconsistent_tensors_are_refused(t: Tensors) -> None:
    with pytest.raises(ProtocolError) as refused:
        decode(_data_frames(t))
    assert refused.value.code in ERROR_CODES


# --- what the fuzzer found: minimal messages, failing until the runtime is fixed -----------

def test_an_error_about_a_long_name_still_fits_in_a_header(cluster: LocalCluster) -> None:
    """Found by the fuzzer: the coordinator echoed ``dst`` twice (``message`` and
    ``worker``) in its unknown_target ERROR, so a 600 KB header got a 1.2 MB answer, over
    the 1 MiB every receiver refuses (SPEC section 12): an answer nobody can read."""
    sock = dial(cluster)
    try:
        sock.send_multipart([msgpack.packb({"kind": "param", "v": PROTOCOL_VERSION, "id": "m1", "op": "list",
                                            "dst": "x" * 600_000})])
        assert sock.poll(10_000), "no answer within 10 s"
        frames = sock.recv_multipart()
        try:
            answer = decode(frames).msg
        except ProtocolError as exc:
            pytest.fail(f"the coordinator's answer ({len(frames[0])} header bytes) cannot be "
                        f"decoded: {exc}")
        assert answer.kind == "error" and answer.code in ERROR_CODES, answer
    finally:
        sock.close(0)


def test_client_key_cannot_stop_a_worker_through_the_coordinator() -> None:
    """SPEC 13.1: an attacker with a stolen client key must not stop a worker; 13.3:
    ``shutdown`` (like plan, load, unload, pause, resume, cancel and PARAM set) is for the
    coordinator only. The coordinator forwards it for any client key, on the worker's own
    (trusted) connection, and the worker exits."""
    with LocalCluster(cluster_spec()) as lc:
        with lc.client() as c:
            c.register(honest_graph())
        sock = dial(lc)
        try:
            sock.send_multipart([msgpack.packb({"kind": "control", "v": PROTOCOL_VERSION, "id": "m1",
                                                "dst": "w2", "action": "shutdown"})])
            assert sock.poll(10_000), "no answer within 10 s"
            answer = decode(sock.recv_multipart()).msg
        finally:
            sock.close(0)
        time.sleep(1.0)  # a worker that obeys replies first, then stops
        assert lc.workers["w2"].poll() is None, (
            f"w2 exited (code {lc.workers['w2'].returncode}) on a client's CONTROL shutdown "
            f"through the coordinator; the answer was {answer!r}")
        with lc.client() as c:
            x = np.arange(4, dtype=np.float32)
            np.testing.assert_array_equal(c.run("chain", {"x": x}, timeout_s=10)["y"],
                                          expected_y(x))
