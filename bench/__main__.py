"""``python -m bench``: our runtime against raw ZeroMQ, memcpy and Ray, in one run on one machine.

Each section runs in its own bounded subprocess (see common.run_bounded); a section that
fails, hangs or times out is reported and the next one runs. Results: a table on stdout,
JSON in .bench-results/latest.json (plus a timestamped copy), section logs in
.bench-results/logs/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .common import run_bounded, wait_quiet
from .report import render

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SECTIONS = ["memcpy", "zmq", "zmq-malloc", "zmq-thp", "runtime", "runtime-malloc",
                    "runtime-thp", "overhead", "ray-core", "ray-cgraph", "idle",
                    "pipeline", "scale", "serving", "pools"]
NOISY = 0.2  # other processes' share of the CPUs above which a section's figures are skewed
ALL_SECTIONS = [*DEFAULT_SECTIONS, "profile"]  # profile: opt-in (cProfile of the daemons)
# glibc: keep freed memory instead of returning 64 MiB blocks to the kernel (no mmap for big
# blocks, one arena, no trimming), so a receive buffer reuses pages that are already mapped
MALLOC_KEEP = {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_MAX_": "0",
               "MALLOC_TRIM_THRESHOLD_": str(4 << 30), "MALLOC_TOP_PAD_": str(128 << 20)}
# glibc >= 2.35: malloc asks for transparent huge pages on the blocks it mmaps (with THP in
# "madvise" mode, numpy's big arrays get huge pages but libzmq's receive buffers do not)
MALLOC_THP = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
ENVS = {"malloc": MALLOC_KEEP, "thp": MALLOC_THP}


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="fewer iterations (about 4-5 minutes in all on 2 vCPUs)")
    ap.add_argument("--iters", type=int, help="timed 1 KiB round trips per measurement "
                                              "(default 2000; --quick 300)")
    ap.add_argument("--warmup", type=int, help="untimed round trips first (default 200; quick 50)")
    ap.add_argument("--tput-iters", type=int, help="timed 64 MiB transfers per measurement "
                                                   "(default 10; quick 3)")
    ap.add_argument("--ray-iters", type=int, help="1 KiB iterations for Ray (default: --iters)")
    ap.add_argument("--size-mib", type=int, default=64, help="large payload, MiB (default 64)")
    ap.add_argument("--small-bytes", type=int, default=1024, help="small payload (default 1024)")
    ap.add_argument("--transports", default="tcp,curve,noshm,curvenoshm,viacoord",
                    help="for raw zmq and our runtime: tcp, ipc (plain text, --insecure); the "
                         "runtime also takes curve (tcp with the default secure set-up), "
                         "noshm (workers without shared memory, as across hosts) and viacoord "
                         "(every tensor through the coordinator) (default "
                         "tcp,curve,noshm,curvenoshm,viacoord)")
    ap.add_argument("--sections", default=",".join(DEFAULT_SECTIONS),
                    help=f"which sections, in order (default: {','.join(DEFAULT_SECTIONS)}; "
                         f"also: profile, a CPU profile of the coordinator and workers)")
    ap.add_argument("--skip", default="", help="sections to leave out, e.g. ray-core,ray-cgraph")
    ap.add_argument("--timeout-scale", type=float, default=1.0,
                    help="multiply every section's deadline")
    ap.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                    help="before each section wait up to S seconds for the machine to be idle "
                         "(other users' load skews latency)")
    ap.add_argument("--retry-noisy", type=int, default=0, metavar="N",
                    help=f"run a section up to N more times while other processes used over "
                         f"{NOISY * 100:.0f}%% of the CPUs during it, and keep the quietest run")
    ap.add_argument("--out", default=str(ROOT / ".bench-results" / "latest.json"))
    args = ap.parse_args(argv)
    q = args.quick
    args.iters = args.iters or (300 if q else 2000)
    args.warmup = args.warmup if args.warmup is not None else (50 if q else 200)
    args.tput_iters = args.tput_iters or (3 if q else 10)
    args.ray_iters = args.ray_iters or args.iters
    skip = {s for s in args.skip.split(",") if s}
    args.section_list = [s for s in args.sections.split(",") if s and s not in skip]
    unknown = set(args.section_list) - set(ALL_SECTIONS)
    if unknown:
        ap.error(f"unknown section(s): {', '.join(sorted(unknown))}")
    return args


def section_plan(name: str, a: argparse.Namespace, out: Path
                 ) -> tuple[list[str], float, dict[str, str]]:
    """argv, deadline (s) and extra environment for one section."""
    py = [sys.executable, "-m"]
    sizes = ["--size-mib", str(a.size_mib)]
    lat = ["--iters", str(a.iters), "--warmup", str(a.warmup), "--small-bytes",
           str(a.small_bytes)]
    tput = ["--tput-iters", str(a.tput_iters)]
    n_lat = a.iters + a.warmup
    n_tr = len(a.transports.split(","))
    zmq_tr = ",".join(t for t in a.transports.split(",") if t in ("tcp", "ipc")) or "tcp"
    o = ["--out", str(out)]
    if name == "memcpy":
        return [*py, "bench.memcpy_bench", *o, *sizes, "--iters", str(max(5, a.tput_iters * 2))
                ], 60, {}
    base, _, variant = name.partition("-")
    env = ENVS.get(variant, {})
    extra = ["--no-latency"] if variant in ENVS else []  # variants: the 64 MiB part only
    if base == "zmq":
        t = 30 + n_tr * (n_lat * 2 * 0.002 + (a.tput_iters + 3) * 2 * 0.5)
        return ([*py, "bench.zmq_bench", *o, "--transports", zmq_tr, *lat, *tput, *sizes, *extra],
                t, env)
    if base == "runtime":
        t = 30 + n_tr * (25 + n_lat * 3 * 0.006 + (a.tput_iters + 2) * 2 * 1.5)
        return ([*py, "bench.runtime_bench", *o, "--transports", a.transports, *lat, *tput,
                 *sizes, *extra], t, env)
    if name == "overhead":
        t = 40 + 2 * (n_lat * 3 * 0.004)
        return ([*py, "bench.overhead_bench", *o, "--transports", zmq_tr, *lat,
                 "--micro-n", "500" if a.quick else "2000"], t, {})
    if name == "profile":
        return ([*py, "bench.profile_runtime", *o, *lat], 60 + n_lat * 0.02, {})
    if name == "idle":  # idle memory and start-up, ours beside Ray's
        return [*py, "bench.idle_bench", *o], 180, {}
    if name == "scale":  # the coordinator's state machine with 10..1000 workers and nodes
        return [*py, "bench.scale_bench", *o, "--work", "5000" if a.quick else "20000"], 300, {}
    if name == "serving":  # dynamic batching against none, and Ray Serve's @serve.batch
        return [*py, "bench.serving_bench", *o, *(["--quick"] if a.quick else [])], \
            300 if a.quick else 900, {}
    if name == "pools":  # a CPU-bound torch model on 1, 2, 4 replicas, 32 clients
        return [*py, "bench.pools_bench", *o, *(["--quick"] if a.quick else [])], 300, {}
    if name == "pipeline":  # runs/s with 1, 4, 16, 64 runs in flight
        secs = "1" if a.quick else "3"
        return [*py, "bench.pipeline_bench", *o, "--seconds", secs], 120, {}
    part = name.split("-")[1]
    ray_lat = ["--iters", str(a.ray_iters), "--warmup", str(min(a.warmup, a.ray_iters)),
               "--small-bytes", str(a.small_bytes)]
    n_ray = a.ray_iters + a.warmup
    t = 90 + n_ray * (0.012 if part == "core" else 0.004) + (a.tput_iters + 2) * 2 * 3
    teardown = ["--teardown-s", "5" if a.quick else "10"]  # a hung teardown waits this long
    return [*py, "bench.ray_bench", *o, "--part", part, *ray_lat, *tput, *sizes, *teardown], t, {}


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {"cpus": os.cpu_count(), "platform": platform.platform(),
                            "python": platform.python_version()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split()
        info["mem_gib"] = round(int(mem[1]) / (1 << 20), 1)
    except OSError:
        pass
    try:
        import msgpack
        import numpy
        import zmq

        info.update(numpy=numpy.__version__, pyzmq=zmq.__version__, libzmq=zmq.zmq_version(),
                    msgpack=".".join(map(str, msgpack.version)))
    except ImportError:
        pass
    try:
        info["git_head"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                          capture_output=True, text=True, timeout=10,
                                          check=False).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "interop_runtime"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10, check=False).stdout
        info["interop_runtime_uncommitted_files"] = len(dirty.splitlines())
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def run_section(name: str, a: argparse.Namespace, logs: Path) -> dict[str, Any]:
    """Run one section in its bounded subprocess; its results, errors and run record."""
    part_file = logs / f"{name}.json"
    part_file.unlink(missing_ok=True)
    argv_s, timeout, env = section_plan(name, a, part_file)
    timeout *= a.timeout_scale
    quiet = wait_quiet(a.wait_quiet) if a.wait_quiet > 0 else None
    print(f"[bench] {name}: running (deadline {timeout:.0f}s)", file=sys.stderr, flush=True)
    try:
        run = run_bounded(argv_s, timeout_s=timeout, env=env, cwd=str(ROOT),
                          log_path=logs / f"{name}.log")
    except Exception as exc:
        run = {"rc": None, "timed_out": False, "error": f"{type(exc).__name__}: {exc}"}
    try:
        data = json.loads(part_file.read_text())
    except (OSError, ValueError):
        data = {"results": {}, "errors": {}, "notes": []}
    if run.get("rc") not in (0, None) or run.get("timed_out") or run.get("error"):
        why = ("timed out" if run.get("timed_out") else run.get("error")
               or f"exited with code {run.get('rc')}")
        data["errors"]["section"] = {"error": f"section {why} after {run.get('wall_s', 0):.1f}s;"
                                              f" see {logs / (name + '.log')}"}
    data["run"] = run
    data["env"] = env
    temp_dir = data.get("results", {}).get("temp_dir")
    if isinstance(temp_dir, str) and temp_dir.startswith("/tmp/ibray-"):
        shutil.rmtree(temp_dir, ignore_errors=True)  # Ray's session files, ours only
    if quiet:
        data["waited_for_quiet"] = quiet
    status = "ok" if not data["errors"] else f"{len(data['errors'])} error(s)"
    print(f"[bench] {name}: {status} in {run.get('wall_s', 0):.1f}s "
          f"(other load {run.get('machine', {}).get('other_cpu_frac', 0):.0%} of the CPUs)",
          file=sys.stderr, flush=True)
    return data


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    out_path = Path(a.out)
    out_dir = out_path.parent
    logs = out_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    config = {k: v for k, v in vars(a).items() if k != "out"}
    report: dict[str, Any] = {"started": stamp, "machine": machine_info(), "config": config,
                              "sections": {}}
    t_all = time.monotonic()
    for name in a.section_list:
        attempts = []
        for attempt in range(1 + max(0, a.retry_noisy)):
            data = run_section(name, a, logs)
            attempts.append(data)
            other = data.get("run", {}).get("machine", {}).get("other_cpu_frac", 0)
            if other <= NOISY or data.get("errors"):
                break
            if attempt < a.retry_noisy:
                print(f"[bench] {name}: other load {other:.0%}, running it again",
                      file=sys.stderr, flush=True)
        # keep the quietest attempt that has no more errors than the others
        best = min(attempts, key=lambda d: (len(d.get("errors", {})), d.get("run", {}).get(
            "machine", {}).get("other_cpu_frac", 1.0)))
        if len(attempts) > 1:
            best["attempts_other_load"] = [d.get("run", {}).get("machine", {}).get(
                "other_cpu_frac") for d in attempts]
        report["sections"][name] = best
    report["wall_s"] = time.monotonic() - t_all
    text, derived = render(report)
    report["derived"] = derived
    print(text)
    out_dir.mkdir(parents=True, exist_ok=True)
    blob = json.dumps(report, indent=1, default=str)
    tmp = out_path.with_suffix(".tmp")
    tmp.write_text(blob)
    os.replace(tmp, out_path)
    (out_dir / f"run-{stamp}{'-quick' if a.quick else ''}.json").write_text(blob)
    print(f"\nJSON: {out_path}  (total {report['wall_s']:.0f}s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
