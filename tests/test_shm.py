"""Same-host shared memory: a producer's SegmentPool and a consumer's SegmentMaps, with
the consumer (or the producer) in a real separate process wherever a second party matters."""

from __future__ import annotations

import hashlib
import json
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from interop_runtime.transport.shm import HEADER_BYTES, SegmentPool, ShmHandle, host_key
from interop_runtime.transport.shm_maps import SegmentMaps
from interop_runtime.wire.errors import BadHandleError, BusyError

pytestmark = pytest.mark.skipif(host_key() is None, reason="needs Linux memfd_create")

MIB = 1 << 20

# Maps each (wire handle, dtype, shape) in argv[1]; prints one result per case.
CONSUMER = """
import hashlib, json, sys
import numpy as np
from interop_runtime.transport.shm import ShmHandle
from interop_runtime.transport.shm_maps import SegmentMaps
from interop_runtime.wire.errors import InteropError
maps = SegmentMaps()
out = []
for wire, dtype, shape in json.loads(sys.argv[1]):
    try:
        view = maps.view(ShmHandle.from_wire(wire), np.dtype(dtype), tuple(shape))
    except InteropError as e:
        out.append({"error": e.code.value, "message": str(e)})
        continue
    try:
        view[...] = 0
        writable = True
    except ValueError:
        writable = False
    out.append({"sha": hashlib.sha256(view.tobytes()).hexdigest(), "writable": writable})
print(json.dumps(out))
"""

# Maps the handle in argv[1], says so, then holds the map until killed.
HOLDER = """
import json, sys, time
import numpy as np
from interop_runtime.transport.shm import ShmHandle
from interop_runtime.transport.shm_maps import SegmentMaps
view = SegmentMaps().view(ShmHandle.from_wire(json.loads(sys.argv[1])), np.uint8, (16,))
print("mapped", int(view.sum()), flush=True)
time.sleep(60)
"""

# Writes arange(1000) into its own pool, prints the handle, then waits to be killed.
PRODUCER = """
import json, time
import numpy as np
from interop_runtime.transport.shm import SegmentPool
pool = SegmentPool()
handle = pool.write(np.arange(1000, dtype=np.float32), "parent")
print(json.dumps(handle.to_wire()), flush=True)
time.sleep(60)
"""


def sha(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def consume(*cases: tuple[ShmHandle | dict[str, Any], str, tuple[int, ...]]) -> list[dict[str, Any]]:
    """Run CONSUMER in a fresh process over these cases."""
    wire = [[h.to_wire() if isinstance(h, ShmHandle) else h, dtype, list(shape)]
            for h, dtype, shape in cases]
    done = subprocess.run([sys.executable, "-c", CONSUMER, json.dumps(wire)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    result: list[dict[str, Any]] = json.loads(done.stdout)
    return result


def start(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    proc.stderr.close()


@pytest.fixture
def pool() -> Iterator[SegmentPool]:
    with SegmentPool(max_bytes=8 * MIB) as p:
        yield p


def test_host_key_is_shared_with_a_child_process() -> None:
    done = subprocess.run(
        [sys.executable, "-c",
         "from interop_runtime.transport.shm import host_key; print(host_key())"],
        capture_output=True, text=True, timeout=30, check=True)
    assert done.stdout.strip() == host_key()


def test_round_trip_to_a_child_is_exact_and_read_only(pool: SegmentPool) -> None:
    array = np.random.default_rng(0).standard_normal((256, 33)).astype(np.float32)
    handle = pool.write(array, holder="child")
    [result] = consume((handle, "float32", array.shape))
    assert result == {"sha": sha(array), "writable": False}
    assert pool.leased_count == 1


def test_reuse_bumps_generation_and_the_stale_handle_is_refused(pool: SegmentPool) -> None:
    first, _ = pool.lease(4096, holder="a")
    pool.release(first, holder="a")
    second, view = pool.lease(4096, holder="a")
    assert (second.token, second.gen) == (first.token, first.gen + 1)
    assert pool.segment_count == 1
    view[:] = 7
    stale, fresh = consume((first, "uint8", (4096,)), (second, "uint8", (4096,)))
    assert stale["error"] == "bad_handle" and "stale" in stale["message"]
    assert first.token not in stale["message"]
    assert fresh["sha"] == sha(np.full(4096, 7, np.uint8))


def test_bad_releases_are_refused_and_change_nothing(pool: SegmentPool) -> None:
    handle = pool.write(np.arange(10), holder="a")
    with pytest.raises(BadHandleError):
        pool.release(handle, holder="b")
    with pytest.raises(BadHandleError):
        pool.release(replace(handle, gen=handle.gen + 1), holder="a")
    with pytest.raises(BadHandleError):
        pool.release(replace(handle, token=secrets.token_hex(16)), holder="a")
    assert pool.leased_count == 1
    pool.release(handle, holder="a")
    with pytest.raises(BadHandleError) as twice:
        pool.release(handle, holder="a")
    assert handle.token not in str(twice.value)
    again, _ = pool.lease(10, holder="c")
    assert (again.token, again.gen) == (handle.token, handle.gen + 1)


def test_forged_handles_are_refused_by_the_consumer(pool: SegmentPool) -> None:
    real = pool.write(np.arange(256, dtype=np.float32), holder="child")
    with tempfile.NamedTemporaryFile() as model_file:
        model_file.write(b"\0" * 4096)
        model_file.flush()
        # a real fd of ours that is a regular file, with the real segment's token
        other_fd = replace(real, fd=model_file.fileno())
        results = consume(
            (replace(real, token=secrets.token_hex(16)), "float32", (256,)),
            (other_fd, "float32", (256,)),
            (replace(real, fd=65000), "float32", (256,)),  # no such fd
            (replace(real, off=HEADER_BYTES + MIB - 4, len=8), "float32", (2,)),
            (replace(real, off=0, len=64), "float32", (16,)),  # the header
            (real, "float32", (255,)),  # len disagrees with the shape
            (real, "float32", (256,)),
        )
    *refused, good = results
    reasons = ["does not name a segment", "does not name a segment", "gone",
               "outside the segment", "outside the segment", "disagrees with dtype"]
    for result, reason in zip(refused, reasons, strict=True):
        assert result["error"] == "bad_handle" and reason in result["message"], result
        assert real.token not in result["message"]
    assert good["sha"] == sha(np.arange(256, dtype=np.float32))


TOKEN = "0123456789abcdef" * 2
VALID: dict[str, Any] = {"token": TOKEN, "pid": 1, "fd": 3, "off": 64, "len": 8, "gen": 1}


@pytest.mark.parametrize("wire", [
    {k: v for k, v in VALID.items() if k != "gen"},
    {**VALID, "extra": 1},
    {**VALID, "pid": True},
    {**VALID, "off": -1},
    {**VALID, "len": 1 << 63},
    {**VALID, "gen": 1.0},
    {**VALID, "token": TOKEN.upper()},
    {**VALID, "token": "abc"},
    {**VALID, "token": "zz" * 16},
    {**VALID, "token": 5},
    list(VALID.values()),
    None,
])
def test_from_wire_refuses_bad_shapes(wire: object) -> None:
    with pytest.raises(BadHandleError) as refused:
        ShmHandle.from_wire(wire)
    assert refused.value.field == "shm"
    assert TOKEN not in str(refused.value)


def test_from_wire_accepts_its_own_output() -> None:
    assert ShmHandle.from_wire(VALID).to_wire() == VALID


def test_exhausted_pool_is_busy_and_keeps_held_data_intact() -> None:
    with SegmentPool(max_bytes=2 * MIB, min_segment=MIB) as pool:
        first = pool.write(np.full(MIB, 0xA5, np.uint8), holder="a")
        second = pool.write(np.full(1000, 0x5A, np.uint8), holder="b")
        with pytest.raises(BusyError, match="exhausted"):
            pool.lease(1, holder="c")
        with pytest.raises(BusyError):
            pool.lease(3 * MIB, holder="c")
        assert (pool.segment_count, pool.capacity_bytes) == (2, 2 * MIB)
        one, two = consume((first, "uint8", (MIB,)), (second, "uint8", (1000,)))
    assert one["sha"] == sha(np.full(MIB, 0xA5, np.uint8))
    assert two["sha"] == sha(np.full(1000, 0x5A, np.uint8))


def test_free_segments_make_room_for_a_larger_lease() -> None:
    with SegmentPool(max_bytes=4 * MIB, min_segment=MIB) as pool:
        for holder in ("a", "b"):
            handle, _ = pool.lease(MIB, holder)
            pool.release(handle, holder)
        pool.lease(3 * MIB, holder="c")
        assert (pool.segment_count, pool.capacity_bytes) == (1, 4 * MIB)


def test_killed_consumer_is_reclaimed_and_its_segment_never_written_again() -> None:
    with SegmentPool(max_bytes=MIB, min_segment=MIB) as pool:
        handle = pool.write(np.ones(16, np.uint8), holder="child-1")
        child = start(HOLDER, json.dumps(handle.to_wire()))
        try:
            assert child.stdout is not None
            assert child.stdout.readline().split() == ["mapped", "16"]
            with pytest.raises(BusyError):  # a held segment is never handed out twice
                pool.lease(16, holder="child-2")
        finally:
            kill(child)
        assert pool.reclaim("child-1") == 1
        assert pool.reclaim("child-1") == 0
        # the room comes back, the segment does not: a consumer reclaimed while alive
        # (a run that failed, a lease too old) may still be reading it
        again, _ = pool.lease(16, holder="child-2")
        assert again.token != handle.token and pool.segment_count == 1


def test_killed_producer_cannot_be_mapped_but_mapped_views_stay_readable() -> None:
    child = start(PRODUCER)
    try:
        assert child.stdout is not None
        handle = ShmHandle.from_wire(json.loads(child.stdout.readline()))
        with SegmentMaps() as early:
            view = early.view(handle, np.float32, (1000,))
            kill(child)
            with SegmentMaps() as late, pytest.raises(BadHandleError, match="gone"):
                late.view(handle, np.float32, (1000,))
            assert np.array_equal(view, np.arange(1000, dtype=np.float32))
    finally:
        if child.returncode is None:
            kill(child)


def test_repr_hides_the_token() -> None:
    handle = ShmHandle.from_wire(VALID)
    assert TOKEN not in repr(handle)
    assert TOKEN not in str(handle)
    assert "len=8" in repr(handle)


def test_locate_finds_slices_of_mapped_segments(pool: SegmentPool) -> None:
    handle = pool.write(np.arange(100, dtype=np.float32), holder="self")
    with SegmentMaps() as maps:
        view = maps.view(handle, np.float32, (100,))
        part = view[10:20]
        found = maps.locate(part)
        assert found is not None
        assert (found.off, found.len) == (handle.off + 40, 40)
        assert (found.token, found.pid, found.fd, found.gen) == (
            handle.token, handle.pid, handle.fd, handle.gen)
        assert np.array_equal(maps.view(found, np.float32, (10,)), part)
        row = maps.locate(view.reshape(10, 10)[3])
        assert row is not None and (row.off, row.len) == (handle.off + 120, 40)
        assert maps.locate(view[::2]) is None
        assert maps.locate(np.arange(10, dtype=np.float32)) is None


def test_expire_frees_old_leases(pool: SegmentPool) -> None:
    handle, _ = pool.lease(10, holder="a")
    assert pool.expire(time.monotonic(), lease_s=60) == 0
    assert pool.expire(time.monotonic() + 61, lease_s=60) == 1
    assert pool.leased_count == 0
    with pytest.raises(BadHandleError):
        pool.release(handle, holder="a")


def test_a_lease_taken_back_is_never_overwritten_under_its_reader(pool: SegmentPool) -> None:
    handle = pool.write(np.full(1000, 7, np.int32), holder="slow")
    with SegmentMaps() as maps:
        view = maps.view(handle, np.int32, (1000,))
        assert pool.expire(time.monotonic() + 1e6, lease_s=60) == 1
        for i in range(5):  # every later lease gets another segment
            new = pool.write(np.full(1000, i, np.int32), holder=f"next-{i}")
            assert new.token != handle.token
            pool.release(new, holder=f"next-{i}")
        assert (view == 7).all()


def test_map_cache_is_bounded_and_evicted_views_stay_valid(pool: SegmentPool) -> None:
    handles = [pool.write(np.full(8, i, np.uint8), holder=i) for i in range(3)]
    with SegmentMaps(max_maps=2) as maps:
        views = [maps.view(h, np.uint8, (8,)) for h in handles]
        assert maps.map_count == 2
        assert [int(v[0]) for v in views] == [0, 1, 2]
    assert pool.trim(0) == 0  # all leased: nothing to trim
    for i, handle in enumerate(handles):
        pool.release(handle, holder=i)
    assert pool.trim(MIB) == 2 and pool.segment_count == 1


def test_shared_input_arrays_are_lent_once_and_closed_when_dropped() -> None:
    from interop_runtime.client.shared_inputs import SharedArrays

    shared = SharedArrays(max_bytes=2 * MIB)
    a = shared.new((1000,), np.float32)
    a[:] = 3.0
    first = shared.lend(a, holder=("w1", "run1"))
    assert first is not None and first.len == a.nbytes
    assert shared.lend(a, holder=("w2", "run1")) is None  # one consumer at a time
    assert shared.lend(a[1:], holder=("w1", "run2")) is None  # a part is copied, not lent
    with SegmentMaps() as maps:
        np.testing.assert_array_equal(maps.view(first, np.float32, (1000,)), a)
    with pytest.raises(BadHandleError):
        shared.release(first, holder=("w2", "run1"))  # not lent to w2
    shared.release(first, holder=("w1", "run1"))
    second = shared.lend(a, holder=("w1", "run2"))
    assert second is not None and second.gen == first.gen + 1  # the first one is stale now
    with SegmentMaps() as maps, pytest.raises(BadHandleError, match="stale"):
        maps.view(first, np.float32, (1000,))
    with pytest.raises(BusyError):
        shared.new((MIB,), np.float32)  # 4 MiB more is over the bound
    token = second.token
    del a
    shared.forget(set())  # collects what was dropped
    assert shared.owns(token)  # still lent: it stays
    shared.forget({("w1", "run2")})
    assert not shared.owns(token)  # dropped and free: closed
    shared.close()


def test_a_release_is_checked_whole_and_only_its_holder_may_send_it() -> None:
    from interop_runtime.worker.dataplane import DataPlane

    host = host_key()
    plane = DataPlane(host, pool_bytes=8 * MIB)
    assert plane.pool is not None and plane.maps is not None
    own = plane.pool.write(np.ones(16, np.uint8), holder=("c", "r"))
    forged = {**own.to_wire(), "token": "0" * 32}
    for handles in ([own.to_wire(), forged], [own.to_wire(), own.to_wire()]):
        with pytest.raises(BadHandleError):  # one bad handle, or one twice: nothing freed
            plane.released(handles, ("c", "r"))
        assert plane.pool.leased_count == 1
    with SegmentPool(max_bytes=MIB, min_segment=MIB) as sender:  # a segment we received
        got = sender.write(np.arange(1 << 16, dtype=np.float32), holder="plane")  # 256 KiB
        view = plane.maps.view(got, np.float32, (1 << 16,))
        _, shared = plane.split({"y": view}, host, ("d", "r"), [(b"s", got)])
        assert shared["y"][2]["token"] == got.token  # forwarded, not copied
        with pytest.raises(BadHandleError, match="not forwarded to this peer"):
            plane.released([got.to_wire()], ("e", "r"))  # a stranger that knows the handle
        assert plane.released([got.to_wire()], ("d", "r")) == {b"s": [got]}
        assert plane.forwards == {}
    plane.released([own.to_wire()], ("c", "r"))
    assert plane.pool.leased_count == 0
    plane.close()
