"""Shared helpers: statistics, result files, bounded subprocesses that clean up after themselves.

Every benchmark section runs as its own subprocess (``python -m bench.<module> --out FILE``)
so that a hang, a crash or a leaked process in one section cannot stall or skew another.
A section writes its results to FILE after every measurement (atomically), so whatever it
measured before a hang or a kill still comes back.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

MIB = 1 << 20
GB = 1e9  # throughput is reported in decimal GB/s (1e9 bytes per second)


# --- statistics ------------------------------------------------------------------------------

def summarize_ns(samples_ns: Sequence[int] | np.ndarray) -> dict[str, float]:
    """Latency samples in nanoseconds -> microseconds: median, p99, mean, min, max, n."""
    a = np.asarray(samples_ns, dtype=np.float64) / 1e3
    if a.size == 0:
        return {"n": 0}
    return {"n": int(a.size), "median_us": float(np.median(a)),
            "p99_us": float(np.percentile(a, 99)), "p90_us": float(np.percentile(a, 90)),
            "mean_us": float(a.mean()), "min_us": float(a.min()), "max_us": float(a.max())}


def summarize_transfer(samples_ns: Sequence[int], nbytes: int, hops: int) -> dict[str, float]:
    """Times of operations that each move ``nbytes`` end to end over ``hops`` socket hops.

    GB/s end to end = nbytes / median time; GB/s per hop = nbytes * hops / median time
    (the bytes every hop carried, summed, over the wall time)."""
    a = np.asarray(samples_ns, dtype=np.float64)
    if a.size == 0:
        return {"n": 0}
    med_s = float(np.median(a)) / 1e9
    best_s = float(a.min()) / 1e9
    return {"n": int(a.size), "nbytes": nbytes, "hops": hops,
            "median_ms": med_s * 1e3, "min_ms": best_s * 1e3, "max_ms": float(a.max()) / 1e6,
            "gbps_e2e": nbytes / med_s / GB, "gbps_per_hop": nbytes * hops / med_s / GB,
            "gbps_e2e_best": nbytes / best_s / GB}


def time_loop(fn: Callable[[], Any], iters: int, warmup: int) -> list[int]:
    """Call fn() warmup times untimed, then iters times; return per-call nanoseconds."""
    for _ in range(warmup):
        fn()
    out = []
    pc = time.perf_counter_ns
    for _ in range(iters):
        t0 = pc()
        fn()
        out.append(pc() - t0)
    return out


# --- results written by a section process ---------------------------------------------------

class ResultFile:
    """A section's results, rewritten atomically after every ``put``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.data: dict[str, Any] = {"results": {}, "errors": {}, "notes": []}

    def put(self, key: str, value: Any) -> None:
        self.data["results"][key] = value
        self.flush()

    def error(self, key: str, exc: BaseException | str) -> None:
        if isinstance(exc, BaseException):
            text = f"{type(exc).__name__}: {exc}"
            tb = traceback.format_exc(limit=6)
            self.data["errors"][key] = {"error": text, "traceback": tb}
        else:
            self.data["errors"][key] = {"error": exc}
        self.flush()

    def note(self, text: str) -> None:
        self.data["notes"].append(text)
        self.flush()

    def flush(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=_jsonable))
        os.replace(tmp, self.path)

    def guarded(self, key: str, fn: Callable[[], Any]) -> Any:
        """Run one measurement; a failure is recorded under ``key`` and does not propagate."""
        try:
            value = fn()
        except Exception as exc:
            self.error(key, exc)
            return None
        if value is not None:
            self.put(key, value)
        return value


def _jsonable(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def section_parser(*, large: bool = True) -> argparse.ArgumentParser:
    """The options every measuring section takes (its own extras are added after)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--transports", default="tcp,ipc")
    ap.add_argument("--iters", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--small-bytes", type=int, default=1024)
    if large:
        ap.add_argument("--tput-iters", type=int, default=10)
        ap.add_argument("--size-mib", type=int, default=64)
        ap.add_argument("--no-latency", dest="latency", action="store_false")
    return ap


def serve_or_parse(argv: list[str], serve: Callable[[str], None], ap: argparse.ArgumentParser
                   ) -> argparse.Namespace | None:
    """``serve --bind ADDR`` runs the echo peer and returns None; else parse the options."""
    if argv and argv[0] == "serve":
        peer = argparse.ArgumentParser()
        peer.add_argument("--bind", required=True)
        serve(peer.parse_args(argv[1:]).bind)
        return None
    return ap.parse_args(argv)


def malloc_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(("MALLOC_", "GLIBC_"))}


def sigterm_raises() -> None:
    """In a section process: SIGTERM unwinds (finally blocks run, clusters stop)."""
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, handler)


# --- bounded subprocesses -------------------------------------------------------------------

def _proc_children() -> dict[int, list[int]]:
    """ppid -> [pid] for every process visible in /proc."""
    kids: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        kids.setdefault(int(fields[1]), []).append(int(entry.name))
    return kids


def start_time(pid: int) -> int | None:
    """The process start time in clock ticks (to tell a pid from a reused one)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rfind(")") + 2:].split()[19])


def cpu_seconds(pid: int) -> float:
    """The process's own user + system CPU seconds (0 if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    f = stat[stat.rfind(")") + 2:].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> dict[int, int]:
    """pid -> start time for every live descendant of ``pid``."""
    kids = _proc_children()
    out: dict[int, int] = {}
    todo = list(kids.get(pid, []))
    while todo:
        p = todo.pop()
        st = start_time(p)
        if st is not None and p not in out:
            out[p] = st
            todo.extend(kids.get(p, []))
    return out


def kill_recorded(procs: dict[int, int], sig: int = signal.SIGKILL) -> list[int]:
    """Signal each recorded pid that is still the same process; returns those signalled."""
    hit = []
    for pid, st in procs.items():
        if start_time(pid) == st:
            try:
                os.kill(pid, sig)
                hit.append(pid)
            except ProcessLookupError:
                pass
    return hit


def run_bounded(argv: Sequence[str], *, timeout_s: float, env: dict[str, str] | None = None,
                log_path: str | Path | None = None, cwd: str | None = None) -> dict[str, Any]:
    """Run argv in its own session with a hard deadline; every process it started is ended.

    While it runs, its descendants are recorded (pid + start time), so that ones which
    left its process group (a LocalCluster starts its daemons in new sessions) or were
    orphaned are still found and ended afterwards, by pid, never by name."""
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL
    stat0, ours0, self0 = cpu_stat(), _children_cpu_s(), _self_cpu_s()
    t0 = time.monotonic()
    proc = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True)
    seen: dict[int, int] = {}
    cpu_seen: dict[tuple[int, int], float] = {}  # (pid, start) -> CPU s when last looked at
    timed_out = False
    try:
        own_start = start_time(proc.pid)
        while proc.poll() is None:
            seen.update(descendants(proc.pid))
            if own_start is not None:
                cpu_seen[(proc.pid, own_start)] = cpu_seconds(proc.pid)
            for p, st in seen.items():
                if start_time(p) == st:
                    cpu_seen[(p, st)] = max(cpu_seen.get((p, st), 0.0), cpu_seconds(p))
            if time.monotonic() - t0 > timeout_s:
                timed_out = True
                break
            time.sleep(0.5)  # a /proc scan costs a few ms of CPU; do not crowd the sections
        if timed_out:
            seen.update(descendants(proc.pid))
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=8)
            except subprocess.TimeoutExpired:
                pass
            _signal_group(proc.pid, signal.SIGKILL)
            proc.kill()
            proc.wait(timeout=10)
    finally:
        if proc.poll() is None:  # interrupted (Ctrl-C): do not leave it behind
            seen.update(descendants(proc.pid))
            _signal_group(proc.pid, signal.SIGKILL)
            proc.kill()
            proc.wait(timeout=10)
        leftovers = _end_leftovers(seen)
        if log is not subprocess.DEVNULL:
            log.close()
    wall = time.monotonic() - t0
    # our CPU: this process's, plus what the reaped subprocesses report or, if more, the CPU
    # last seen of the section process and every descendant (Ray's processes that are killed
    # or left to init never show up in rusage; sampling misses each one's last 0.5 s)
    ours = (_self_cpu_s() - self0) + max(_children_cpu_s() - ours0, sum(cpu_seen.values()))
    return {"rc": proc.returncode, "timed_out": timed_out, "wall_s": wall,
            "leftovers_killed": leftovers,
            "machine": load_during(stat0, cpu_stat(), ours, wall)}


def cpu_stat() -> dict[str, float]:
    """Machine-wide CPU seconds from /proc/stat: busy (not idle/iowait) and steal."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    v = [int(x) / os.sysconf("SC_CLK_TCK") for x in fields]
    total = sum(v[:8])
    return {"busy": total - v[3] - v[4], "steal": v[7], "total": total}


def _self_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def _children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def load_during(before: dict[str, float], after: dict[str, float], ours_cpu_s: float,
                wall_s: float) -> dict[str, float]:
    """How busy the machine was with work that was not ours (other users' processes).

    other_cpu_frac: (machine busy CPU-seconds - CPU-seconds of our finished subprocesses)
    over the CPU-seconds available; approximate (processes our children did not reap are
    not counted as ours)."""
    ncpu = os.cpu_count() or 1
    busy = after["busy"] - before["busy"]
    other = max(0.0, busy - ours_cpu_s)
    return {"busy_cpu_s": busy, "ours_cpu_s": ours_cpu_s, "other_cpu_s": other,
            "other_cpu_frac": other / max(wall_s * ncpu, 1e-9),
            "steal_frac": (after["steal"] - before["steal"]) / max(wall_s * ncpu, 1e-9),
            "loadavg_1m_end": os.getloadavg()[0]}


def wait_quiet(max_wait_s: float, threshold: float = 0.25, window_s: float = 1.0
               ) -> dict[str, float]:
    """Wait (at most max_wait_s) for a window in which the machine is nearly idle.

    Idle means busy CPU under ``threshold`` of one CPU; returns how long it waited and
    the busy fraction it last saw."""
    t0 = time.monotonic()
    frac = 0.0
    while True:
        a = cpu_stat()
        time.sleep(window_s)
        b = cpu_stat()
        frac = (b["busy"] - a["busy"]) / window_s
        if frac < threshold or time.monotonic() - t0 >= max_wait_s:
            return {"waited_s": time.monotonic() - t0, "busy_cpus": frac}


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _end_leftovers(seen: dict[int, int]) -> list[int]:
    """TERM, then KILL, the recorded descendants still alive."""
    alive = kill_recorded(seen, signal.SIGTERM)
    if not alive:
        return []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(start_time(p) == seen[p] and not _zombie(p)
                                              for p in alive):
        time.sleep(0.1)
    kill_recorded({p: seen[p] for p in alive if not _zombie(p)}, signal.SIGKILL)
    return alive


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2] == "Z"


def schedstat(pids: Iterable[int]) -> dict[int, tuple[int, int, int]]:
    """pid -> (cpu ns, run-queue wait ns, times scheduled), summed over the process's threads.

    From /proc/PID/task/*/schedstat; "times scheduled" counts every time a thread got a CPU,
    so across a loop it is about the number of wake-ups."""
    out = {}
    for pid in pids:
        tot = [0, 0, 0]
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                try:
                    vals = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
                except OSError:
                    continue
                for i in range(3):
                    tot[i] += int(vals[i])
        except OSError:
            continue
        out[pid] = (tot[0], tot[1], tot[2])
    return out


def sched_delta(before: dict[int, tuple[int, int, int]], after: dict[int, tuple[int, int, int]],
                names: dict[int, str], ops: int) -> dict[str, dict[str, float]]:
    """Per operation, per process: CPU us, run-queue wait us, times scheduled."""
    out = {}
    for pid, name in names.items():
        if pid in before and pid in after:
            b, a = before[pid], after[pid]
            out[name] = {"cpu_us": (a[0] - b[0]) / ops / 1e3,
                         "runq_wait_us": (a[1] - b[1]) / ops / 1e3,
                         "scheduled": (a[2] - b[2]) / ops}
    return out


def fmt(x: float | None, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "-"
    return f"{x:,.{digits}f}"


def rss_bytes(pid: int) -> int:
    """VmRSS of a process (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
