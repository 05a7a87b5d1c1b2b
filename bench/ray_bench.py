"""Ray on the same machine: actor calls and a Compiled Graph, for comparison.

Run as ``python -m bench.ray_bench --part core|cgraph --out FILE``, always under
common.run_bounded (a hard deadline, the process group killed after): a compiled graph that
carried 64 MiB tensors has been seen not to tear down, so this process writes each result
as soon as it has it, and tears down with a bounded wait.

core:   echo       driver -> actor -> driver; ray.get(a.echo.remote(x))            2 hops
        chain      ray.get(b.echo.remote(a.echo.remote(x)))                         3 hops
                   (logical hops; for small values Ray returns a's result to its
                   owner, the driver, which then sends it to b, so 4 messages move)
cgraph: chain      with InputNode() as i: dag = b.echo.bind(a.echo.bind(i));
                   dag.experimental_compile(); ray.get(cdag.execute(x))             3 hops
                   (shared-memory channels driver -> a -> b -> driver)
All actors are created with num_cpus=0 so that none waits for a CPU slot (num_cpus=2).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import threading
import time
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

import numpy as np

from .common import (
    MIB,
    ResultFile,
    sigterm_raises,
    summarize_ns,
    summarize_transfer,
    time_loop,
)


def init_ray(store_mib: int, res: ResultFile) -> Any:
    import ray

    # its own session directory, which the parent removes after this process has ended
    temp_dir = tempfile.mkdtemp(prefix="ibray-", dir="/tmp")
    res.put("temp_dir", temp_dir)
    t0 = time.monotonic()
    ray.init(num_cpus=2, object_store_memory=store_mib * MIB, include_dashboard=False,
             log_to_driver=False, configure_logging=False, _temp_dir=temp_dir)
    return ray, time.monotonic() - t0


def make_actor_class(ray: Any) -> Any:
    @ray.remote(num_cpus=0)
    class Echo:
        def echo(self, x: Any) -> Any:
            return x

        def ready(self) -> bool:
            return True

    return Echo


def core(res: ResultFile, args: argparse.Namespace) -> None:
    ray, init_s = init_ray(args.store_mib, res)
    res.put("init_s", init_s)
    res.put("ray_version", ray.__version__)
    try:
        Echo = make_actor_class(ray)
        a, b = Echo.remote(), Echo.remote()
        ray.get([a.ready.remote(), b.ready.remote()], timeout=60)
        small = np.arange(args.small_bytes // 4, dtype=np.float32)
        assert np.array_equal(ray.get(b.echo.remote(a.echo.remote(small))), small)

        def echo() -> None:
            ray.get(a.echo.remote(small))

        def chain() -> None:
            ray.get(b.echo.remote(a.echo.remote(small)))

        res.guarded("echo_1k", lambda: {**summarize_ns(time_loop(echo, args.iters, args.warmup)),
                                        "hops": 2})
        res.guarded("chain_1k", lambda: {**summarize_ns(time_loop(chain, args.iters,
                                                                  args.warmup)), "hops": 3})
        big = np.arange(args.size_mib * MIB // 4, dtype=np.float32)
        assert np.array_equal(ray.get(b.echo.remote(a.echo.remote(big))), big)

        def echo_big() -> None:
            out = ray.get(a.echo.remote(big))
            del out

        def chain_big() -> None:
            out = ray.get(b.echo.remote(a.echo.remote(big)))
            del out

        res.guarded("echo_64m", lambda: summarize_transfer(
            time_loop(echo_big, args.tput_iters, 2), big.nbytes, 2))
        res.guarded("chain_64m", lambda: summarize_transfer(
            time_loop(chain_big, args.tput_iters, 2), big.nbytes, 3))
    finally:
        t0 = time.monotonic()
        bounded(ray.shutdown, 30, res, "shutdown")
        res.put("shutdown_s", time.monotonic() - t0)


def cgraph(res: ResultFile, args: argparse.Namespace) -> None:
    ray, init_s = init_ray(args.store_mib, res)
    res.put("init_s", init_s)
    res.put("ray_version", ray.__version__)
    try:
        from ray.dag import InputNode

        Echo = make_actor_class(ray)
        a, b = Echo.remote(), Echo.remote()
        ray.get([a.ready.remote(), b.ready.remote()], timeout=60)

        def two_actor_dag() -> Any:  # a DAG object can be compiled once only
            with InputNode() as inp:
                return b.echo.bind(a.echo.bind(inp))

        def execute(cdag: Any, x: np.ndarray) -> None:
            out = ray.get(cdag.execute(x), timeout=60)
            del out  # a zero-copy result kept alive would block the next execution

        small = np.arange(args.small_bytes // 4, dtype=np.float32)
        with compiled(two_actor_dag(), res, "small", args.teardown_s) as cdag:
            assert np.array_equal(ray.get(cdag.execute(small), timeout=30), small)
            res.guarded("chain_1k", lambda: {**summarize_ns(time_loop(
                lambda: execute(cdag, small), args.iters, args.warmup)), "hops": 3})
            # pipelined, as the pipeline section measures ours: a window of executions in
            # flight, refilled as the oldest finishes; the graph caps the window at its
            # _max_inflight_executions (10 by default)
            for window in (1, 4, 8):
                res.guarded(f"pipelined_{window}", lambda w=window: pipelined(
                    ray, cdag, small, w, max(200, args.iters)))
        if args.big:
            big = np.arange(args.size_mib * MIB // 4, dtype=np.float32)
            # Each channel holds _max_inflight_executions buffers (10 by default) that start at
            # 1 MB and each grow on its first large write (hundreds of ms apiece here), so
            # with the defaults the first 10 executions measure resizing. We run one at a
            # time anyway: one buffer per channel, grown by the untimed first execution.
            # Its own graph, compiled after the small one is torn down (an actor can be in
            # one compiled graph at a time; a DAG object compiles once).
            kw = {"_max_inflight_executions": 1} if args.one_buffer else {}
            with compiled(two_actor_dag(), res, "big", args.teardown_s, **kw) as cdag:
                t0 = time.monotonic()
                assert np.array_equal(ray.get(cdag.execute(big), timeout=120), big)
                res.put("first_execute_64m_s", time.monotonic() - t0)
                res.guarded("chain_64m", lambda: {**summarize_transfer(time_loop(
                    lambda: execute(cdag, big), args.tput_iters, 2), big.nbytes, 3),
                    "compile_options": kw})
    finally:
        t0 = time.monotonic()
        bounded(ray.shutdown, 30, res, "shutdown")
        res.put("shutdown_s", time.monotonic() - t0)


def pipelined(ray: Any, cdag: Any, x: np.ndarray, window: int, runs: int) -> dict[str, Any]:
    """Runs/s with ``window`` executions in flight."""
    inflight: list[Any] = []
    t0 = time.perf_counter()
    for _ in range(runs):
        if len(inflight) >= window:
            ray.get(inflight.pop(0), timeout=60)
        inflight.append(cdag.execute(x))
    for ref in inflight:
        ray.get(ref, timeout=60)
    return {"runs_per_s": runs / (time.perf_counter() - t0), "window": window, "n": runs}


@contextlib.contextmanager
def compiled(dag: Any, res: ResultFile, name: str, teardown_s: float, **kw: Any) -> Any:
    t0 = time.monotonic()
    cdag = dag.experimental_compile(**{k: v for k, v in kw.items() if v is not None})
    res.put(f"compile_{name}_s", time.monotonic() - t0)
    try:
        yield cdag
    except Exception as exc:  # recorded now: a hung teardown below ends this process
        res.error(f"graph_{name}", exc)
        raise
    finally:
        t0 = time.monotonic()
        ok = bounded(cdag.teardown, teardown_s, res, f"teardown_{name}", hang_is_error=False)
        res.put(f"teardown_{name}", {"ok": ok, "s": time.monotonic() - t0})
        if not ok:
            res.note(f"Ray Compiled Graph ({name}) teardown did not finish in {teardown_s}s "
                     "(seen on this machine after 64 MiB tensors); this process exits and the "
                     "parent kills what Ray left running")
            os._exit(0)  # results are written; run_bounded ends the Ray processes it recorded


def bounded(fn: Any, timeout_s: float, res: ResultFile, key: str, *, hang_is_error: bool = True
            ) -> bool:
    """Run fn in a daemon thread; False if it is not done in time (recorded as an error,
    or, with hang_is_error=False, left to the caller to note)."""
    err: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as exc:
            err.append(exc)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout_s)
    if t.is_alive():
        if hang_is_error:
            res.error(key, f"did not finish within {timeout_s}s")
        return False
    if err:
        res.error(key, f"{type(err[0]).__name__}: {err[0]}")
    return not err


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--part", choices=["core", "cgraph"], required=True)
    ap.add_argument("--iters", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--tput-iters", type=int, default=10)
    ap.add_argument("--size-mib", type=int, default=64)
    ap.add_argument("--small-bytes", type=int, default=1024)
    ap.add_argument("--store-mib", type=int, default=512)
    ap.add_argument("--teardown-s", type=float, default=10.0)
    ap.add_argument("--no-big", dest="big", action="store_false")
    ap.add_argument("--inflight-default", dest="one_buffer", action="store_false",
                    help="compiled graph, 64 MiB: keep Ray's default _max_inflight_executions")
    args = ap.parse_args(argv)
    sigterm_raises()
    res = ResultFile(args.out)
    try:
        (core if args.part == "core" else cgraph)(res, args)
    except Exception as exc:
        res.error(args.part, exc)


if __name__ == "__main__":
    main()
