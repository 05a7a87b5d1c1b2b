"""Raw pyzmq DEALER/ROUTER between two processes: the floor our runtime's hops stand on.

Server (``python -m bench.zmq_bench serve --bind ADDR``): a ROUTER that answers every message:
  1 frame                  -> echoes it (bare round trip)
  [msgpack header, frame]  -> unpacks the header; op "ack" -> replies [header] only,
                              op "echo" -> replies [new header, the same frame] (copy=False)
Client (this process): a DEALER, measuring
  rt_bare_1k      1 KiB, one frame, recv with copy=True (the cheapest possible round trip)
  rt_hdr_1k       msgpack header + 1 KiB raw frame, send/recv copy=False, np.frombuffer on
                  arrival (what each hop of the runtime does at the least)
  oneway_64m      64 MiB frame + header one way, then a small ack (1 message in flight)
  rt_64m          64 MiB there and back (the server re-sends the frame it got, copy=False)
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import tempfile
import time

import msgpack
import numpy as np
import zmq

from .common import (
    MIB,
    ResultFile,
    malloc_env,
    sched_delta,
    schedstat,
    section_parser,
    serve_or_parse,
    sigterm_raises,
    summarize_ns,
    summarize_transfer,
    time_loop,
)


def serve(bind: str) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(bind)
    print(sock.getsockopt_string(zmq.LAST_ENDPOINT), flush=True)
    parent = os.getppid()
    packb, unpackb = msgpack.packb, msgpack.unpackb
    while True:
        if not sock.poll(1000):
            if os.getppid() != parent:  # our client is gone
                break
            continue
        ident, *frames = sock.recv_multipart(copy=False)
        if len(frames) == 1:
            sock.send_multipart([ident, frames[0]], copy=False)
            continue
        hdr = unpackb(frames[0].buffer)
        if hdr.get("op") == "ack":
            sock.send_multipart([ident, packb({"op": "ack", "id": hdr["id"]})])
        else:
            payload = frames[1]
            np.frombuffer(payload.buffer, dtype=np.uint8)  # what a receiver does: wrap, no copy
            sock.send_multipart([ident, packb({"op": "reply", "id": hdr["id"],
                                               "n": len(payload)}), payload], copy=False)
    sock.close(0)
    ctx.term()


def start_server(bind: str, timeout_s: float = 20.0) -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen([sys.executable, "-m", "bench.zmq_bench", "serve", "--bind", bind],
                            stdout=subprocess.PIPE)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
    if not ready:
        proc.kill()
        raise TimeoutError(f"zmq echo server did not start within {timeout_s}s")
    endpoint = proc.stdout.readline().decode().strip()
    if not endpoint:
        proc.wait(5)
        raise RuntimeError(f"zmq echo server exited with {proc.returncode}")
    return proc, endpoint


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def measure(res: ResultFile, transport: str, *, iters: int, warmup: int, tput_iters: int,
            size_mib: int, small_bytes: int, latency: bool = True) -> None:
    tmp = tempfile.mkdtemp(prefix="ibz-", dir="/tmp")
    bind = "tcp://127.0.0.1:*" if transport == "tcp" else f"ipc://{tmp}/echo.sock"
    proc, endpoint = start_server(bind)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 30_000)  # nothing here waits forever
    sock.setsockopt(zmq.SNDTIMEO, 30_000)
    sock.connect(endpoint)
    packb, unpackb = msgpack.packb, msgpack.unpackb
    try:
        small = np.arange(small_bytes // 4, dtype=np.float32)
        small_bytes_obj = small.tobytes()
        counter = iter(range(1 << 62))

        def rt_bare() -> None:
            sock.send(small_bytes_obj)
            sock.recv()

        def rt_hdr() -> None:
            i = next(counter)
            hdr = {"op": "echo", "id": i, "dtype": "float32", "shape": [small.size]}
            sock.send_multipart([packb(hdr), small.data], copy=False)
            h, payload = sock.recv_multipart(copy=False)
            assert unpackb(h.buffer)["id"] == i
            np.frombuffer(payload.buffer, dtype=np.float32)

        procs = {os.getpid(): "client", proc.pid: "server"}

        def lat(fn):  # type: ignore[no-untyped-def]
            for _ in range(warmup):
                fn()
            before = schedstat(procs)
            samples = time_loop(fn, iters, 0)
            return {**summarize_ns(samples), "hops": 2,
                    "per_rt_sched": sched_delta(before, schedstat(procs), procs, iters)}

        if latency:
            res.guarded(f"{transport}.rt_bare_1k", lambda: lat(rt_bare))
            res.guarded(f"{transport}.rt_hdr_1k", lambda: lat(rt_hdr))

        big = np.arange(size_mib * MIB // 4, dtype=np.float32)  # written once: sender pages warm

        def oneway() -> None:
            i = next(counter)
            sock.send_multipart([packb({"op": "ack", "id": i}), big.data], copy=False)
            assert unpackb(sock.recv())["id"] == i

        def rt_big() -> None:
            i = next(counter)
            sock.send_multipart([packb({"op": "echo", "id": i}), big.data], copy=False)
            h, payload = sock.recv_multipart(copy=False)
            assert unpackb(h.buffer)["id"] == i and len(payload) == big.nbytes
            del payload

        # check the bytes once, outside the timed loops
        sock.send_multipart([packb({"op": "echo", "id": -1}), big.data], copy=False)
        _, back = sock.recv_multipart(copy=False)
        assert np.array_equal(np.frombuffer(back.buffer, dtype=np.float32), big)
        del back
        res.guarded(f"{transport}.oneway_64m", lambda: summarize_transfer(
            time_loop(oneway, tput_iters, 2), big.nbytes, 1))
        res.guarded(f"{transport}.rt_64m", lambda: summarize_transfer(
            time_loop(rt_big, tput_iters, 2), big.nbytes, 2))
    finally:
        sock.close(0)
        ctx.term()
        stop_server(proc)
        for name in os.listdir(tmp):
            os.unlink(os.path.join(tmp, name))
        os.rmdir(tmp)


def main(argv: list[str] | None = None) -> None:
    args = serve_or_parse(sys.argv[1:] if argv is None else argv, serve, section_parser())
    if args is None:
        return
    sigterm_raises()
    res = ResultFile(args.out)
    res.data["malloc_env"] = malloc_env()
    for transport in args.transports.split(","):
        t0 = time.monotonic()
        try:
            measure(res, transport, iters=args.iters, warmup=args.warmup,
                    tput_iters=args.tput_iters, size_mib=args.size_mib,
                    small_bytes=args.small_bytes, latency=args.latency)
        except Exception as exc:
            res.error(transport, exc)
        res.put(f"{transport}.wall_s", time.monotonic() - t0)


if __name__ == "__main__":
    main()
