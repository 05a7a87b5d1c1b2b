"""Where a small run's time goes, piece by piece (evidence for the runtime's per-hop cost).

In one process (CPU cost per call, microseconds):
  msgpack_small        msgpack packb + unpackb of a header-sized dict (the floor for a header)
  encode_data_1k       interop codec.encode(DataMsg, {x: 1 KiB}) (msgspec to_builtins, nil fields out, msgpack)
  decode_data_1k       interop codec.decode of those frames (msgpack + msgspec validation)
  new_datamsg          constructing a DataMsg (a msgspec struct: no check until decoded)
  encode_reply_timings encode of a run's final ReplyMsg (body with two nodes' timings)
  store_run            coordinator Store: run_started + run_finished(timings) + commit
Over a socket, 1 KiB round trips to another process, interleaved in blocks of 100:
  raw_hdr_rt_1k        DEALER -> bench.zmq_bench echo server: msgpack header + raw frame
  dealer_codec_rt_1k   DEALER -> a codec echo server (a ROUTER that decodes with the interop
                       codec and answers a ReplyMsg carrying the same tensor): encode, send,
                       recv, decode in the calling thread
  client_request_rt_1k the same request through Client.request (its I/O thread + a Future)
codec - raw is what the typed codec costs per round trip (4 encodes/decodes);
client - codec is what the Client's thread hand-offs cost per request.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
import tempfile
import time

import msgpack
import numpy as np
import zmq

from interop_runtime import Client, decode, encode
from interop_runtime.coordinator.store import Store
from interop_runtime.wire.codec import new_id
from interop_runtime.wire.messages import PROTOCOL_VERSION, ControlMsg, DataMsg, ReplyMsg

from .common import (
    ResultFile,
    schedstat,
    section_parser,
    serve_or_parse,
    sigterm_raises,
    summarize_ns,
    time_loop,
)


def per_call_us(fn, n: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    samples = []
    for _ in range(5):  # best of 5 batches: the CPU cost, not the scheduler's
        t0 = time.perf_counter_ns()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter_ns() - t0) / n / 1e3)
    return {"us": float(min(samples)), "us_median_batch": float(np.median(samples)), "n": n}


def microbench(res: ResultFile, n: int, small_bytes: int) -> None:
    x = np.arange(small_bytes // 4, dtype=np.float32)
    hdr = {"v": 1, "kind": "data", "id": "abcdef0123", "src": "w1", "graph": "bench-chain",
           "run": "abcdef0124", "node": "b",
           "tensors": [{"name": "x", "dtype": "float32", "shape": [256], "frame": 1}]}
    res.guarded("msgpack_small", lambda: per_call_us(
        lambda: msgpack.unpackb(msgpack.packb(hdr)), n))

    def mk() -> DataMsg:
        return DataMsg(v=PROTOCOL_VERSION, id=new_id(), src="w1", graph="bench-chain",
                       run="r", node="b")
    res.guarded("new_datamsg", lambda: per_call_us(mk, n))
    msg = mk()
    frames = encode(msg, {"x": x})
    res.guarded("encode_data_1k", lambda: per_call_us(lambda: encode(msg, {"x": x}), n))
    res.guarded("decode_data_1k", lambda: per_call_us(lambda: decode(frames), n))
    timings = {node: {"worker": w, "compute_us": 3, "wait_us": 0, "bytes_out": 1024,
                      "done_us": 600} for node, w in (("a", "w1"), ("b", "w2"))}
    reply = ReplyMsg(v=PROTOCOL_VERSION, id=new_id(), src="coordinator", reply_to="abc",
                     body={"run": "r", "graph": "bench-chain", "elapsed_us": 700,
                           "timings": timings})
    res.guarded("encode_reply_timings", lambda: per_call_us(
        lambda: encode(reply, {"out": x}), n))
    store = Store(":memory:")
    counter = iter(range(1 << 62))

    def run_rows() -> None:
        run = f"run{next(counter)}"
        store.run_started(run, "bench-chain", time.time())
        store.run_finished(run, "done", timings=timings)
        store.commit()
    res.guarded("store_run", lambda: per_call_us(run_rows, max(1, n // 4)))


def serve(bind: str) -> None:
    """A ROUTER that answers every interop message with a ReplyMsg carrying its tensors."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(bind)
    print(sock.getsockopt_string(zmq.LAST_ENDPOINT), flush=True)
    parent = os.getppid()
    while True:
        if not sock.poll(1000):
            if os.getppid() != parent:
                break
            continue
        ident, *frames = sock.recv_multipart(copy=False)
        env = decode(frames)
        out = encode(ReplyMsg(v=PROTOCOL_VERSION, id=new_id(), src="echo", reply_to=env.msg.id),
                     env.arrays)
        sock.send_multipart([ident, *out], copy=False)
    sock.close(0)


def start_server(module: str, bind: str) -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen([sys.executable, "-m", module, "serve", "--bind", bind],
                            stdout=subprocess.PIPE)
    assert proc.stdout is not None
    if not select.select([proc.stdout], [], [], 20)[0]:
        proc.kill()
        raise TimeoutError(f"{module} server did not start in 20s")
    return proc, proc.stdout.readline().decode().strip()


def socket_bench(res: ResultFile, transport: str, iters: int, warmup: int, block: int,
                 small_bytes: int) -> None:
    """Three round trips, interleaved in blocks so that drift in machine load hits all alike."""
    tmp = tempfile.mkdtemp(prefix="ibo-", dir="/tmp")
    procs: list[subprocess.Popen[bytes]] = []
    ctx = zmq.Context()
    socks: list[zmq.Socket] = []
    client = None
    try:
        eps = {}
        for module, name in (("bench.zmq_bench", "raw"), ("bench.overhead_bench", "codec")):
            bind = "tcp://127.0.0.1:*" if transport == "tcp" else f"ipc://{tmp}/{name}.sock"
            proc, eps[name] = start_server(module, bind)
            procs.append(proc)
        for name in ("raw", "codec"):
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVTIMEO, 10_000)
            sock.connect(eps[name])
            socks.append(sock)
        raw, codec = socks
        client = Client(eps["codec"], timeout_s=10)
        x = np.arange(small_bytes // 4, dtype=np.float32)
        packb, unpackb = msgpack.packb, msgpack.unpackb

        def hdr() -> ControlMsg:
            return ControlMsg(v=PROTOCOL_VERSION, id=new_id(), src="client", dst="w1",
                              action="invoke", function="identity")

        def raw_rt() -> None:
            raw.send_multipart([packb({"op": "echo", "id": 1}), x.data], copy=False)
            h, payload = raw.recv_multipart(copy=False)
            unpackb(h.buffer)
            np.frombuffer(payload.buffer, dtype=np.float32)

        def dealer_rt() -> None:
            msg = hdr()
            codec.send_multipart(encode(msg, {"x": x}), copy=False)
            env = decode(codec.recv_multipart(copy=False))
            assert env.msg.reply_to == msg.id

        def client_rt() -> None:
            client.request(hdr(), {"x": x})

        variants = {"raw_hdr_rt_1k": raw_rt, "dealer_codec_rt_1k": dealer_rt,
                    "client_request_rt_1k": client_rt}
        server_of = {"raw_hdr_rt_1k": procs[0].pid, "dealer_codec_rt_1k": procs[1].pid,
                     "client_request_rt_1k": procs[1].pid}
        samples: dict[str, list[int]] = {k: [] for k in variants}
        cpu: dict[str, list[float]] = {k: [0.0, 0.0] for k in variants}  # client, server ns
        for fn in variants.values():
            time_loop(fn, 0, warmup)
        me = os.getpid()
        for _ in range(max(1, iters // block)):
            for key, fn in variants.items():
                time_loop(fn, 0, 5)
                before = schedstat([me, server_of[key]])
                samples[key] += time_loop(fn, block, 0)
                after = schedstat([me, server_of[key]])
                cpu[key][0] += after[me][0] - before[me][0]
                cpu[key][1] += after[server_of[key]][0] - before[server_of[key]][0]
        for key, vals in samples.items():
            n = len(vals)
            res.put(f"{transport}.{key}", {
                **summarize_ns(vals), "hops": 2,
                "cpu_us_per_rt": {"client": cpu[key][0] / n / 1e3,
                                  "server": cpu[key][1] / n / 1e3}})
    finally:
        if client is not None:
            client.close()
        for sock in socks:
            sock.close(0)
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    ap = section_parser(large=False)
    ap.add_argument("--micro-n", type=int, default=2000)
    ap.add_argument("--block", type=int, default=100)
    args = serve_or_parse(sys.argv[1:] if argv is None else argv, serve, ap)
    if args is None:
        return
    sigterm_raises()
    res = ResultFile(args.out)
    try:
        microbench(res, args.micro_n, args.small_bytes)
    except Exception as exc:
        res.error("micro", exc)
    for transport in args.transports.split(","):
        try:
            socket_bench(res, transport, args.iters, args.warmup, args.block,
                         args.small_bytes)
        except Exception as exc:
            res.error(transport, exc)


if __name__ == "__main__":
    main()
