"""Turn the sections' results into tables, ratios and definitions (markdown, for a README)."""

from __future__ import annotations

import re
from typing import Any

from .common import fmt

DEFINITIONS = """\
Definitions
- Payloads: 1 KiB = 256 float32; 64 MiB = 16 Mi float32. Latency = wall time of one request in
  the calling thread (median and p99 over the timed iterations, after untimed warm-up).
- Socket hop = one message crossing between two processes over ZeroMQ (or Ray's transport).
  Our chain client -> coordinator -> w1.identity -> w2.identity -> coordinator -> client has
  5 such hops carrying the tensor (client->coord RUN, coord->w1 DATA, w1->w2 DATA,
  w2->coord DONE+output, coord->client REPLY); w1's small DONE to the coordinator is off the
  path. One worker (client -> coord -> w1 -> coord -> client) and Client.call are 4 hops.
  A raw zmq round trip is 2 hops; a Ray actor call 2; a Ray chain of two actors 3 (logical:
  driver -> a -> b -> driver); a Compiled Graph chain 3 (shared-memory channels).
  Per hop = end-to-end time / hops (includes each process's handling, not only the wire).
- GB/s end to end = payload bytes / median time of one transfer; GB/s per hop = payload
  bytes x hops / median time (the bytes every hop carried, summed). GB = 1e9 bytes.
- Raw zmq: DEALER/ROUTER between two processes. "bare" = one 1 KiB frame (copy=True recv);
  "hdr+frame" = msgpack header + raw 1 KiB frame, copy=False both ways, np.frombuffer on
  arrival (the least each hop of our runtime does). 64 MiB one way = frame + header there and
  a small ack back, one message in flight; 64 MiB round trip = echoed back (copy=False).
- memcpy: numpy copy of 64 MiB in one process, into a fresh buffer (allocation + page faults
  + copy) and into a reused buffer (copy only).
- malloc-keep: the same 64 MiB runs with glibc told to keep freed memory (MALLOC_ARENA_MAX=1,
  MALLOC_MMAP_MAX_=0, MALLOC_TRIM_THRESHOLD_=4 GiB, MALLOC_TOP_PAD_=128 MiB), so receive
  buffers land on pages that are already mapped: shows what page faults cost.
- malloc THP: the same with GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (glibc >= 2.35): malloc
  madvises its big mmapped blocks for transparent huge pages, so a fresh 64 MiB receive
  buffer takes 32 faults of 2 MiB instead of 16384 of 4 KiB (THP here: "madvise" mode).
- other load = CPU-seconds used by processes that are not this benchmark's, over the
  CPU-seconds available while the section ran (approximate); high values mean noisy figures."""


def _short(fn: str) -> str:
    """'~:0(<method 'execute' of 'sqlite3.Connection' objects>)' -> 'sqlite3.Connection.execute'."""
    m = re.match(r"~:0\(<(?:method|built-in method) '?([\w.]+)'?(?: of '([\w.]+)' objects)?>\)",
                 fn)
    if m:
        return f"{m.group(2)}.{m.group(1)}" if m.group(2) else m.group(1)
    return fn


def _get(rep: dict[str, Any], section: str, key: str) -> dict[str, Any] | None:
    v = rep["sections"].get(section, {}).get("results", {}).get(key)
    return v if isinstance(v, dict) and v.get("n") else None


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def _x(r: float | None, digits: int = 2) -> str:
    return "-" if r is None else f"{r:.{digits}f}x"


def latency_rows(rep: dict[str, Any]) -> list[tuple[str, str, dict[str, Any] | None]]:
    trs = rep["config"]["transports"].split(",")
    rows: list[tuple[str, str, dict[str, Any] | None]] = []
    for t in [t for t in trs if t in ("tcp", "ipc")]:
        rows.append(("raw pyzmq round trip, bare frame", t, _get(rep, "zmq", f"{t}.rt_bare_1k")))
        rows.append(("raw pyzmq round trip, hdr+frame", t, _get(rep, "zmq", f"{t}.rt_hdr_1k")))
    for t in [t for t in trs if t in ("tcp", "ipc")]:
        rows.append(("  interleaved: raw hdr+frame", t,
                     _get(rep, "overhead", f"{t}.raw_hdr_rt_1k")))
        rows.append(("  interleaved: + interop codec", t,
                     _get(rep, "overhead", f"{t}.dealer_codec_rt_1k")))
        rows.append(("  interleaved: + Client (I/O thread)", t,
                     _get(rep, "overhead", f"{t}.client_request_rt_1k")))
    for t in trs:
        rows.append(("**ours: chain w1 -> w2**", t, _get(rep, "runtime", f"{t}.lat_chain_1k")))
        rows.append(("ours: one worker", t, _get(rep, "runtime", f"{t}.lat_one_1k")))
        rows.append(("ours: Client.call (CONTROL invoke)", t,
                     _get(rep, "runtime", f"{t}.lat_call_1k")))
    rows.append(("Ray actor call (echo)", "ray", _get(rep, "ray-core", "echo_1k")))
    rows.append(("**Ray chain of two actors**", "ray", _get(rep, "ray-core", "chain_1k")))
    rows.append(("**Ray Compiled Graph, two actors**", "ray shm",
                 _get(rep, "ray-cgraph", "chain_1k")))
    return rows


# our 64 MiB rows per transport: (label, bench section, result key after "<transport>.")
OURS_64M = (
    ("**ours: chain w1 -> w2**", "runtime", "tput_chain_64m"),
    ("ours: one worker", "runtime", "tput_one_64m"),
    ("**ours: chain, zero-copy outputs**", "runtime", "tput_chain_64m_zerocopy"),
    ("ours: one worker, zero-copy outputs", "runtime", "tput_one_64m_zerocopy"),
    ("ours: chain, shared input array + zero-copy outputs", "runtime", "tput_chain_64m_shared"),
    ("ours: chain, malloc-keep", "runtime-malloc", "tput_chain_64m"),
    ("ours: one worker, malloc-keep", "runtime-malloc", "tput_one_64m"),
    ("ours: chain, malloc THP", "runtime-thp", "tput_chain_64m"),
    ("ours: one worker, malloc THP", "runtime-thp", "tput_one_64m"),
)


def throughput_rows(rep: dict[str, Any]) -> list[tuple[str, str, dict[str, Any] | None]]:
    trs = rep["config"]["transports"].split(",")
    rows: list[tuple[str, str, dict[str, Any] | None]] = [
        ("memcpy, fresh buffer", "1 process", _get(rep, "memcpy", "fresh")),
        ("memcpy, reused buffer", "1 process", _get(rep, "memcpy", "reused"))]
    for t in [t for t in trs if t in ("tcp", "ipc")]:
        rows.append(("raw pyzmq one way (+ack)", t, _get(rep, "zmq", f"{t}.oneway_64m")))
        rows.append(("raw pyzmq round trip", t, _get(rep, "zmq", f"{t}.rt_64m")))
        rows.append(("raw pyzmq one way, malloc-keep", t,
                     _get(rep, "zmq-malloc", f"{t}.oneway_64m")))
        rows.append(("raw pyzmq one way, malloc THP", t, _get(rep, "zmq-thp", f"{t}.oneway_64m")))
        rows.append(("raw pyzmq round trip, malloc THP", t, _get(rep, "zmq-thp", f"{t}.rt_64m")))
    for t in trs:
        rows += [(label, t, _get(rep, section, f"{t}.{key}")) for label, section, key in OURS_64M]
    rows.append(("Ray actor call (echo)", "ray", _get(rep, "ray-core", "echo_64m")))
    rows.append(("**Ray chain of two actors**", "ray", _get(rep, "ray-core", "chain_64m")))
    rows.append(("**Ray Compiled Graph, two actors**", "ray shm",
                 _get(rep, "ray-cgraph", "chain_64m")))
    return rows


def render(rep: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    m = rep["machine"]
    c = rep["config"]
    out: list[str] = []
    derived: dict[str, Any] = {}
    ray_version = rep["sections"].get("ray-core", {}).get("results", {}).get("ray_version", "-")
    out.append(f"## interop-runtime benchmark ({'quick' if c['quick'] else 'full'})\n")
    out.append(f"Machine: {m.get('cpus')} vCPUs ({m.get('cpu_model', '?')}), "
               f"{m.get('mem_gib', '?')} GiB, {m.get('platform')}, Python {m.get('python')}, "
               f"pyzmq {m.get('pyzmq')} / libzmq {m.get('libzmq')}, numpy {m.get('numpy')}, "
               f"Ray {ray_version}; git {m.get('git_head', '?')} with "
               f"{m.get('interop_runtime_uncommitted_files', '?')} uncommitted file(s) in "
               f"interop_runtime/.")
    noisy = {n: d["run"]["machine"]["other_cpu_frac"] for n, d in rep["sections"].items()
             if d.get("run", {}).get("machine", {}).get("other_cpu_frac", 0) > 0.2}
    if noisy:
        out.append("**Warning: other processes used a large share of the CPUs during "
                   + ", ".join(f"{n} ({v:.0%})" for n, v in noisy.items())
                   + "; those figures are skewed.**\n")
    out.append(f"Iterations: {c['iters']} x 1 KiB (after {c['warmup']} warm-up), Ray "
               f"{c['ray_iters']}; {c['tput_iters']} x {c['size_mib']} MiB.\n")

    out.append(f"### Latency, {c['small_bytes']} B float32 (microseconds)\n")
    out.append("| path | transport | hops | median | p99 | median / hop | p99 / hop |")
    out.append("|---|---|---:|---:|---:|---:|---:|")
    for label, t, r in latency_rows(rep):
        if r is None:
            continue
        h = r.get("hops", 1)
        out.append(f"| {label} | {t} | {h} | {fmt(r['median_us'])} | {fmt(r['p99_us'])} | "
                   f"{fmt(r['median_us'] / h)} | {fmt(r['p99_us'] / h)} |")

    out.append(f"\n### Throughput, {c['size_mib']} MiB float32\n")
    out.append("| path | transport | hops | median ms | GB/s end to end | GB/s per hop |")
    out.append("|---|---|---:|---:|---:|---:|")
    for label, t, r in throughput_rows(rep):
        if r is None:
            continue
        out.append(f"| {label} | {t} | {r['hops']} | {fmt(r['median_ms'])} | "
                   f"{fmt(r['gbps_e2e'], 2)} | {fmt(r['gbps_per_hop'], 2)} |")

    out.append("\n### Ratios\n")
    ratios = _ratios(rep)
    derived["ratios"] = ratios
    for line in ratios.pop("_lines"):
        out.append(f"- {line}")

    goals = _goals(rep)
    if goals:
        derived["goals"] = goals
        out.append("\n### Data-plane goals (issue 10), measured in this run\n")
        out.append("| goal | ours | reference | ratio | target | result |")
        out.append("|---|---:|---:|---:|---|---|")
        for g in goals:
            out.append(f"| {g['goal']} | {fmt(g['ours'])} | {fmt(g['reference'])} | "
                       f"{_x(g['ratio'])} | {g['target']} | "
                       f"{'**pass**' if g['passed'] else 'fail'} |")

    out.append("\n### Where a small run's time goes (ours, chain, 1 KiB)\n")
    for line in _breakdown(rep, derived):
        out.append(f"- {line}")

    prof = rep["sections"].get("profile", {}).get("results", {})
    if any(isinstance(prof.get(n), dict) for n in ("coordinator", "w1", "w2")):
        out.append("\n### CPU profile of the daemons' main threads (chain, 1 KiB, tcp; "
                   "cProfile on a CPU clock: shares matter, absolute figures are inflated)\n")
        out.append("| process | CPU us/run | top functions by own CPU (us/run) |")
        out.append("|---|---:|---|")
        for n in ("coordinator", "w1", "w2"):
            p = prof.get(n)
            if isinstance(p, dict):
                top = ", ".join(f"{_short(t['fn'])} {fmt(t['own_us_per_run'])}"
                                for t in p["top_own_time"][:8])
                out.append(f"| {n} | {fmt(p['main_thread_cpu_us_per_run'])} | {top} |")
    from .serving_bench import report_lines  # dynamic batching, beside Ray Serve

    out += report_lines(rep["sections"].get("serving", {}).get("results", {}))
    from .pools_bench import report_lines as pool_lines  # replica pools, 32 clients

    out += pool_lines(rep["sections"].get("pools", {}).get("results", {}))
    out.append("\n### Sections\n")
    out.append("| section | wall s | other load | result |")
    out.append("|---|---:|---:|---|")
    for name, data in rep["sections"].items():
        run = data.get("run", {})
        mach = run.get("machine", {})
        errs = data.get("errors", {})
        status = "ok" if not errs else "; ".join(
            f"{k}: {v.get('error', v)}"[:200] for k, v in errs.items())
        out.append(f"| {name} | {fmt(run.get('wall_s'))} | "
                   f"{fmt(100 * mach['other_cpu_frac'], 0) + '%' if mach else '-'} | {status} |")
        for note in data.get("notes", []):
            out.append(f"|  |  |  | note: {note} |")
    teardown = {k: v for k, v in rep["sections"].get("ray-cgraph", {}).get("results", {}).items()
                if k.startswith(("teardown", "compile"))}
    if teardown:
        out.append(f"\nRay Compiled Graph set-up/teardown: {teardown}")
    out.append("\n" + DEFINITIONS)
    return "\n".join(out), derived


def _ratios(rep: dict[str, Any]) -> dict[str, Any]:
    trs = rep["config"]["transports"].split(",")
    r: dict[str, Any] = {}
    lines: list[str] = []
    ray_chain = _get(rep, "ray-core", "chain_1k")
    cg_chain = _get(rep, "ray-cgraph", "chain_1k")
    for t in trs:
        chain = _get(rep, "runtime", f"{t}.lat_chain_1k")
        if chain is None:
            continue
        raw = _get(rep, "zmq", f"{t}.rt_hdr_1k") or _get(rep, "zmq", "tcp.rt_hdr_1k")
        bare = _get(rep, "zmq", f"{t}.rt_bare_1k") or _get(rep, "zmq", "tcp.rt_bare_1k")
        ours_hop = chain["median_us"] / chain["hops"]
        if raw:
            x = _ratio(ours_hop, raw["median_us"] / 2)
            x99 = _ratio(chain["p99_us"] / chain["hops"], raw["p99_us"] / 2)
            r[f"{t}.latency_per_hop_vs_raw_hdr"] = x
            lines.append(f"latency overhead per hop, ours vs raw zmq hdr+frame ({t}): "
                         f"{fmt(ours_hop)} vs {fmt(raw['median_us'] / 2)} us = **{_x(x)}** "
                         f"(p99 {_x(x99)})"
                         + (f"; vs bare frame {_x(_ratio(ours_hop, bare['median_us'] / 2))}"
                            if bare else ""))
        for name, other in (("Ray actor chain", ray_chain), ("Ray Compiled Graph chain",
                                                             cg_chain)):
            if other:
                x = _ratio(chain["median_us"], other["median_us"])
                r[f"{t}.chain_latency_vs_{name.replace(' ', '_')}"] = x
                lines.append(f"chain 1 KiB end to end, ours ({t}) vs {name}: "
                             f"{fmt(chain['median_us'])} vs {fmt(other['median_us'])} us = "
                             f"**{_x(x)}** ({'ours faster' if x and x < 1 else 'ours slower'}; "
                             f"p99 {_x(_ratio(chain['p99_us'], other['p99_us']))})")
    fresh, reused = _get(rep, "memcpy", "fresh"), _get(rep, "memcpy", "reused")
    ray_big = _get(rep, "ray-core", "chain_64m")
    cg_big = _get(rep, "ray-cgraph", "chain_64m")
    for t in trs:
        big = _get(rep, "runtime", f"{t}.tput_chain_64m")
        if big is None:
            continue
        parts = []
        for name, ref in (("memcpy fresh", fresh), ("memcpy reused", reused)):
            if ref:
                x = _ratio(big["gbps_per_hop"], ref["gbps_e2e"])
                r[f"{t}.tput_per_hop_vs_{name.replace(' ', '_')}"] = x
                parts.append(f"{name} {fmt(ref['gbps_e2e'], 2)} GB/s -> {_x(x)}")
        raw1 = _get(rep, "zmq", f"{t}.oneway_64m") or _get(rep, "zmq", "tcp.oneway_64m")
        if raw1:
            x = _ratio(big["gbps_per_hop"], raw1["gbps_e2e"])
            r[f"{t}.tput_per_hop_vs_raw_oneway"] = x
            parts.append(f"raw zmq one way {fmt(raw1['gbps_e2e'], 2)} GB/s -> {_x(x)}")
        lines.append(f"64 MiB per hop, ours chain ({t}) {fmt(big['gbps_per_hop'], 2)} GB/s vs "
                     + "; ".join(parts))
        for name, other in (("Ray actor chain", ray_big), ("Ray Compiled Graph chain", cg_big)):
            if other:
                x = _ratio(big["median_ms"], other["median_ms"])
                r[f"{t}.chain_64m_time_vs_{name.replace(' ', '_')}"] = x
                lines.append(f"chain 64 MiB end to end, ours ({t}) vs {name}: "
                             f"{fmt(big['median_ms'])} vs {fmt(other['median_ms'])} ms = "
                             f"**{_x(x)}** ({'ours faster' if x and x < 1 else 'ours slower'})")
        for sec, what in (("runtime-malloc", "glibc keeping freed memory (malloc-keep)"),
                          ("runtime-thp", "glibc asking for huge pages (malloc THP)")):
            alt = _get(rep, sec, f"{t}.tput_chain_64m")
            if alt:
                x = _ratio(big["median_ms"], alt["median_ms"])
                r[f"{t}.chain_64m_default_vs_{sec}"] = x
                why = ("first-touch page faults on fresh receive buffers are a large part of "
                       "each hop" if x and x > 1.3 else "no clear effect in this run")
                lines.append(f"64 MiB chain ({t}) with {what}: {fmt(alt['median_ms'])} ms "
                             f"instead of {fmt(big['median_ms'])} ms (speed-up **{_x(x)}**): "
                             f"{why}")
    lines += _secure_cost(rep, r)
    cells = [(w, n, _get(rep, "scale", f"workers_{w}.nodes_{n}"))
             for w in (10, 100, 1000) for n in (10, 100, 1000)]
    if all(c for _, _, c in cells):
        lines.append("coordinator state machine, CPU per node completed (us) for 10 / 100 / 1,000 "
                     "nodes, and table memory (MiB): " + "; ".join(
                         f"{w} workers " + " / ".join(fmt(c["cpu_us_per_node"]) for ww, _, c in
                                                      cells if ww == w and c)
                         + f" ({fmt(max(c['tables_mib'] for ww, _, c in cells if ww == w and c), 1)}"
                           f" MiB)" for w in (10, 100, 1000)))
    for mode in ("tcp", "curve"):
        rates = [(w, _get(rep, "pipeline", f"{mode}.window_{w}")) for w in (1, 4, 16, 64)]
        if all(v for _, v in rates):
            lines.append(f"pipelined 1 KiB chain ({mode}), runs/s with 1 / 4 / 16 / 64 in flight: "
                         + " / ".join(fmt(v["runs_per_s"]) for _, v in rates if v))
    cg = [(w, _get(rep, "ray-cgraph", f"pipelined_{w}")) for w in (1, 4, 8)]
    if any(v for _, v in cg):
        lines.append("pipelined Ray Compiled Graph chain, runs/s with 1 / 4 / 8 in flight "
                     "(it caps runs in flight at 10): "
                     + " / ".join(fmt(v["runs_per_s"]) if v else "-" for _, v in cg))
    ours, ray = _get(rep, "idle", "ours"), _get(rep, "idle", "ray")
    if ours:
        lines.append(f"idle: our coordinator {fmt(ours['coordinator_mib'])} MiB, a NumPy worker "
                     f"{fmt(ours['worker_mib'])} MiB, coordinator + 3 workers "
                     f"{fmt(ours['cluster_mib'])} MiB, started in {fmt(ours['start_s'], 2)} s"
                     + (f"; Ray with 3 idle actors {fmt(ray['cluster_mib'])} MiB over "
                        f"{ray['processes']} processes, started in {fmt(ray['start_s'], 2)} s"
                        if ray else "") + " (RSS)")
    if ours and "coordinator_pss_mib" in ours:  # PSS: shared library pages split, not repeated
        floor = _get(rep, "idle", "floor")
        lines.append(f"idle PSS: coordinator {fmt(ours['coordinator_pss_mib'])} MiB, a worker "
                     f"{fmt(ours['worker_pss_mib'])} MiB, coordinator + 3 workers "
                     f"{fmt(ours['cluster_pss_mib'])} MiB"
                     + (f"; Ray {fmt(ray['cluster_pss_mib'])} MiB" if ray else "")
                     + (f"; a bare Python with zmq, msgspec and numpy (a worker's floor): RSS "
                        f"{fmt(floor['rss_mib'])} MiB, PSS {fmt(floor['pss_mib'])} MiB"
                        if floor else ""))
    r["_lines"] = lines
    return r


def _goals(rep: dict[str, Any]) -> list[dict[str, Any]]:
    """The goals that this run's sections can judge, each as ours / reference with the
    target ratio, in the default secure mode where it differs ("curve") and plain tcp."""
    goals: list[dict[str, Any]] = []

    def add(goal: str, ours: float | None, ref: float | None, target: str, ok: bool) -> None:
        if ours is not None and ref:
            goals.append({"goal": goal, "ours": ours, "reference": ref, "ratio": ours / ref,
                          "target": target, "passed": ok})

    cg1 = _get(rep, "ray-cgraph", "chain_1k")
    cg64 = _get(rep, "ray-cgraph", "chain_64m")
    raw = _get(rep, "zmq", "tcp.rt_hdr_1k")
    raw64 = _get(rep, "zmq", "tcp.oneway_64m")
    for t in ("tcp", "curve"):
        chain = _get(rep, "runtime", f"{t}.lat_chain_1k")
        big = _get(rep, "runtime", f"{t}.tput_chain_64m")
        zero = _get(rep, "runtime", f"{t}.tput_chain_64m_zerocopy")
        if chain and cg1:
            for stat in ("median_us", "p99_us"):
                add(f"1. 1 KiB chain ({t}) vs Ray Compiled Graph, {stat.split('_')[0]} (us)",
                    chain[stat], cg1[stat], "<= 1x", chain[stat] <= cg1[stat])
        if chain and raw:
            add(f"1. stretch: 1 KiB chain ({t}) vs two raw zmq round trips (us)",
                chain["median_us"], 2 * raw["median_us"], "<= 1.3x",
                chain["median_us"] <= 1.3 * 2 * raw["median_us"])
        if big and cg64:
            add(f"2. 64 MiB chain ({t}) vs Ray Compiled Graph (ms)", big["median_ms"],
                cg64["median_ms"], "<= 1x", big["median_ms"] <= cg64["median_ms"])
        if big:
            add(f"2. 64 MiB chain ({t}), GB/s per hop vs 8 GB/s", big["gbps_per_hop"], 8.0,
                ">= 1x", big["gbps_per_hop"] >= 8.0)
        if zero and cg64:
            add(f"2. 64 MiB chain ({t}), zero-copy outputs, vs Ray Compiled Graph (ms)",
                zero["median_ms"], cg64["median_ms"], "<= 1x",
                zero["median_ms"] <= cg64["median_ms"])
        if zero:
            add(f"2. 64 MiB chain ({t}), zero-copy outputs, GB/s per hop vs 8 GB/s",
                zero["gbps_per_hop"], 8.0, ">= 1x", zero["gbps_per_hop"] >= 8.0)
    for mode in ("tcp", "curve"):
        rates = {w: _get(rep, "pipeline", f"{mode}.window_{w}") for w in (1, 4, 16, 64)}
        if all(rates.values()):
            r = {w: v["runs_per_s"] for w, v in rates.items() if v}
            add(f"4. runs/s ({mode}) with 64 vs 1 in flight (rises until a CPU saturates)",
                max(r[16], r[64]), r[1], "> 1x", r[4] > r[1] and max(r[16], r[64]) >= r[4])
            cg = [_get(rep, "ray-cgraph", f"pipelined_{w}") for w in (1, 4, 8)]
            best = max((c["runs_per_s"] for c in cg if c), default=None)
            if best:
                add(f"4. (beside) our best runs/s ({mode}) vs Ray Compiled Graph's best with "
                    f"1-8 in flight", max(r.values()), best, "report", max(r.values()) >= best)
    small, big = _get(rep, "scale", "workers_10.nodes_100"), _get(rep, "scale",
                                                                  "workers_1000.nodes_100")
    if small and big:
        add("5. coordinator CPU per node, 1,000 vs 10 idle workers (100-node graph, us)",
            big["cpu_us_per_node"], small["cpu_us_per_node"], "<= 1.5x (flat)",
            big["cpu_us_per_node"] <= 1.5 * small["cpu_us_per_node"])
    ours, ray = _get(rep, "idle", "ours"), _get(rep, "idle", "ray")
    if ours and ray:
        add("6. idle memory (RSS), coordinator + one worker vs 10% of Ray's idle cluster (MiB)",
            ours["coordinator_plus_one_worker_mib"], 0.1 * ray["cluster_mib"], "<= 1x",
            ours["coordinator_plus_one_worker_mib"] <= 0.1 * ray["cluster_mib"])
        if "cluster_pss_mib" in ray and "coordinator_plus_one_worker_pss_mib" in ours:
            pss, ref = ours["coordinator_plus_one_worker_pss_mib"], 0.1 * ray["cluster_pss_mib"]
            add("6. (beside) the same in PSS, shared pages split (MiB)", pss, ref, "report",
                pss <= ref)
        add("6. start-up, coordinator + 3 workers vs Ray with 3 actors (s)", ours["start_s"],
            ray["start_s"], "<= 1x", ours["start_s"] <= ray["start_s"])
    one = _get(rep, "runtime", "noshm.tput_one_64m")
    if one and raw64:
        add("3. 64 MiB hop over tcp vs raw zmq one way (GB/s per hop)", one["gbps_per_hop"],
            raw64["gbps_e2e"], ">= 0.9x", one["gbps_per_hop"] >= 0.9 * raw64["gbps_e2e"])
    return goals


def _secure_cost(rep: dict[str, Any], r: dict[str, Any]) -> list[str]:
    """The default secure mode (CURVE, roles) next to plain text, same machine, same run."""
    lines = []
    for key, unit, label in (("lat_chain_1k", "median_us", "1 KiB chain latency"),
                             ("tput_chain_64m", "median_ms", "64 MiB chain time")):
        secure, plain = _get(rep, "runtime", f"curve.{key}"), _get(rep, "runtime", f"tcp.{key}")
        if secure and plain:
            x = _ratio(secure[unit], plain[unit])
            r[f"secure_vs_insecure.{key}"] = x
            lines.append(f"{label}, default secure (CURVE) vs --insecure (tcp): "
                         f"{fmt(secure[unit])} vs {fmt(plain[unit])} {unit.split('_')[1]} = "
                         f"**{_x(x)}**")
    return lines


def _breakdown(rep: dict[str, Any], derived: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    res = rep["sections"].get("runtime", {}).get("results", {})
    for t in rep["config"]["transports"].split(","):
        ch = res.get(f"{t}.lat_chain_1k")
        if not isinstance(ch, dict) or "coordinator_elapsed_median_us" not in ch:
            continue
        if ch.get("hops") == 3:  # a direct run: node ends by the workers' clocks
            lines.append(
                f"{t} (direct): end to end {fmt(ch['median_us'])} us; w1's node ended "
                f"{fmt(ch.get('done_a_median_us'))} us and w2's {fmt(ch.get('done_b_median_us'))}"
                f" us after the client started the run (workers' clocks)")
        else:
            lines.append(
            f"{t}: end to end {fmt(ch['median_us'])} us; inside the coordinator (RUN handled -> "
            f"last DONE handled) {fmt(ch['coordinator_elapsed_median_us'])} us, of which "
            f"w1's DONE came back at {fmt(ch.get('done_a_median_us'))} us and w2's at "
            f"{fmt(ch.get('done_b_median_us'))} us; outside it (client <-> coordinator hops, "
            f"client threads, RUN decode, REPLY encode) {fmt(ch['outside_coordinator_median_us'])}"
            f" us")
        sched = ch.get("per_run_sched") or {}
        if sched:
            total = sum(v["cpu_us"] for v in sched.values())
            woken = sum(v["scheduled"] for v in sched.values())
            per = ", ".join(f"{k} {fmt(v['cpu_us'])} us / {fmt(v['scheduled'])}x"
                            for k, v in sched.items())
            lines.append(f"{t}: CPU per run, all threads: {fmt(total)} us in total, "
                         f"{fmt(woken)} thread wake-ups ({per})")
            derived[f"{t}.chain_cpu_us_per_run"] = total
    z = rep["sections"].get("zmq", {}).get("results", {}).get("tcp.rt_hdr_1k")
    if isinstance(z, dict) and z.get("per_rt_sched"):
        s = z["per_rt_sched"]
        lines.append("raw zmq hdr+frame round trip (tcp), for scale: CPU "
                     + ", ".join(f"{k} {fmt(v['cpu_us'])} us / {fmt(v['scheduled'])}x"
                                 for k, v in s.items()))
    o = rep["sections"].get("overhead", {}).get("results", {})
    micro = {k: o[k]["us"] for k in ("msgpack_small", "new_datamsg", "encode_data_1k",
                                     "decode_data_1k", "encode_reply_timings", "store_run")
             if isinstance(o.get(k), dict)}
    if micro:
        lines.append("CPU per call in one process: " + ", ".join(
            f"{k} {fmt(v)} us" for k, v in micro.items()))
        if "encode_data_1k" in micro and "decode_data_1k" in micro:
            est = 6 * (micro["encode_data_1k"] + micro["decode_data_1k"]) + micro.get(
                "store_run", 0)
            derived["codec_store_cpu_us_per_chain_run"] = est
            lines.append(f"a chain run through the coordinator sends 6 messages (RUN, 2 DATA, "
                         f"2 DONE, REPLY; a direct one: 3 DATA, RUN, 1 DONE): about "
                         f"{fmt(est)} us of encode/decode + SQLite CPU per run, spread over "
                         f"4 processes")
    for t in ("tcp", "ipc"):
        raw, dc, cl = (o.get(f"{t}.{k}") for k in ("raw_hdr_rt_1k", "dealer_codec_rt_1k",
                                                     "client_request_rt_1k"))
        if all(isinstance(v, dict) for v in (raw, dc, cl)):
            lines.append(f"{t}, interleaved round trips: the typed codec adds "
                         f"{fmt(dc['median_us'] - raw['median_us'])} us per round trip, the "
                         f"Client's I/O thread + Future another "
                         f"{fmt(cl['median_us'] - dc['median_us'])} us")
            if all("cpu_us_per_rt" in v for v in (raw, dc, cl)):
                lines.append(f"{t}, CPU per round trip (client process + server process): " +
                             "; ".join(f"{name} {fmt(v['cpu_us_per_rt']['client'])} + "
                                       f"{fmt(v['cpu_us_per_rt']['server'])} us"
                                       for name, v in (("raw", raw), ("codec", dc),
                                                       ("Client", cl))))
    return lines
