// The interop dashboard: polls /api/snapshot every second and draws it.
// Every string comes from peers, so the DOM is built with textContent only (never innerHTML).
"use strict";
(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const token = new URLSearchParams(location.search).get("token");
  const api = "/api/snapshot" + (token ? "?token=" + encodeURIComponent(token) : "");
  let selected = null; // the run whose timeline is shown
  let lastText = null;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v; else if (k === "onclick") node.addEventListener("click", v);
      else node.setAttribute(k, String(v));
    }
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
    return node;
  }
  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text != null) node.textContent = String(text);
    return node;
  }
  function fill(id, ...children) { document.getElementById(id).replaceChildren(...children); }
  function empty(text) { return el("div", { class: "empty" }, text); }
  function table(heads, rows) {
    const head = el("tr", {}, ...heads.map(h => el("th", { class: h.endsWith(" ") ? "num" : "" }, h.trim())));
    return el("table", {}, el("thead", {}, head), el("tbody", {}, ...rows));
  }
  function td(value, cls) { return el("td", cls ? { class: cls } : {}, value); }
  function us(v) {
    if (v == null) return "";
    if (v < 1000) return v + " µs";
    if (v < 1e6) return (v / 1000).toFixed(2) + " ms";
    return (v / 1e6).toFixed(2) + " s";
  }
  function bytes(v) {
    if (v == null) return "";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return (i ? v.toFixed(1) : v) + " " + units[i];
  }
  function ago(s) { return s < 1 ? "now" : s < 120 ? s.toFixed(0) + " s ago" : (s / 60).toFixed(0) + " min ago"; }
  function clip(text, n) { text = String(text); return text.length > n ? text.slice(0, n - 1) + "…" : text; }

  function workers(list) {
    if (!list.length) return empty("no workers registered");
    const anyStats = list.some(w => w.stats);
    const heads = ["name", "plugin", "device", "state", "last seen", "pid", "functions"];
    if (anyStats) heads.push("pending ", "calls ", "errors ", "RSS ", "device mem ");
    return table(heads, list.map(w => {
      const row = el("tr", {}, td(w.name), td(w.plugin), td(w.device),
        td(w.alive ? "alive" : "dead", w.alive ? "alive" : "dead"), td(ago(w.last_seen_s)),
        td(w.pid), td(w.functions.join(", "), "wrap"));
      if (anyStats) {
        const s = w.stats || {};
        for (const [v, f] of [[s.pending, String], [s.calls, String], [s.errors, String],
                              [s.rss_bytes, bytes], [s.device_bytes, bytes]])
          row.append(td(v == null ? "" : f(v), "num"));
      }
      return row;
    }));
  }

  // Topological layers left to right: a node sits one layer after its deepest producer.
  function layers(g) {
    const names = g.nodes.map(n => n.name), preds = {};
    for (const n of names) preds[n] = new Set();
    for (const e of g.edges) {
      const s = e.src.split(".")[0], d = e.dst.split(".")[0];
      if (s in preds && d in preds && s !== d) preds[d].add(s);
    }
    const depth = {};
    const visit = (n, seen) => {
      if (n in depth) return depth[n];
      if (seen.has(n)) return 0; // a cycle cannot be registered; never loop on one anyway
      seen.add(n);
      let d = 0;
      for (const p of preds[n]) d = Math.max(d, visit(p, seen) + 1);
      return (depth[n] = d);
    };
    for (const n of names) visit(n, new Set());
    return depth;
  }

  function drawGraph(g) {
    const W = 190, H = 40, GX = 60, GY = 16, PAD = 10;
    const depth = layers(g), cols = {}, pos = {};
    for (const n of g.nodes) (cols[depth[n.name]] = cols[depth[n.name]] || []).push(n);
    let width = 0, height = 0;
    for (const [c, nodes] of Object.entries(cols)) {
      nodes.forEach((n, i) => {
        const x = PAD + c * (W + GX), y = PAD + i * (H + GY);
        pos[n.name] = { x, y };
        width = Math.max(width, x + W + PAD); height = Math.max(height, y + H + PAD);
      });
    }
    const root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img" });
    const defs = svg("defs");
    const marker = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5,
                                   markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" });
    marker.append(svg("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#7d8795" }));
    defs.append(marker); root.append(defs);
    for (const e of g.edges) {
      const a = pos[e.src.split(".")[0]], b = pos[e.dst.split(".")[0]];
      if (!a || !b) continue;
      const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2, mx = (x1 + x2) / 2;
      const path = svg("path", { class: "edge", d: `M ${x1} ${y1} C ${mx} ${y1}, ${mx} ${y2}, ${x2} ${y2}`,
                                 "marker-end": "url(#arrow)" });
      path.append(svg("title", {}, `${e.src} -> ${e.dst}`));
      root.append(path);
    }
    for (const n of g.nodes) {
      const p = pos[n.name], grp = svg("g", { class: "node", transform: `translate(${p.x},${p.y})` });
      grp.append(svg("title", {}, `${n.name} / ${n.worker}.${n.function}`));
      grp.append(svg("rect", { width: W, height: H, rx: 4 }));
      grp.append(svg("text", { x: 8, y: 16 }, clip(n.name, 28)));
      grp.append(svg("text", { x: 8, y: 31, class: "sub" }, clip(`${n.worker}.${n.function}`, 30)));
      root.append(grp);
    }
    const io = [];
    for (const [k, refs] of Object.entries(g.inputs)) io.push(`in ${k} → ${refs.join(", ")}`);
    for (const [k, ref] of Object.entries(g.outputs)) io.push(`out ${k} ← ${ref}`);
    return el("div", { class: "graph" },
      el("h3", {}, `${g.name} (v${g.version}${g.ready ? "" : ", waiting for workers"}${g.truncated ? ", first nodes only" : ""})`),
      root, el("div", { class: "io" }, io.join("   ")));
  }

  function active(list) {
    if (!list.length) return empty("no runs in flight");
    return table(["run", "graph", "age ", "outstanding"], list.map(r => el("tr", {},
      td(r.run, "id"), td(r.graph), td(r.age_s.toFixed(1) + " s", "num"),
      td(r.outstanding.map(o => `${o.node} on ${o.worker}`).join(", ") +
         (r.waiting_for ? ` (waiting for ${r.waiting_for})` : ""), "wrap"))));
  }

  function failures(list) {
    if (!list.length) return empty("no failures");
    // the message names the node and worker; where it does not, the title still does
    return table(["run", "graph", "code", "message"], list.map(r => {
      const e = r.error || {};
      const where = [e.node && "node " + e.node, e.worker && "worker " + e.worker].filter(Boolean).join(", ");
      return el("tr", { class: "click", onclick: () => select(r.run), title: where },
        td(r.run, "id"), td(r.graph), td(e.code || r.state, "code"), td(e.message || "", "wrap"));
    }));
  }

  function recent(list) {
    if (!list.length) return empty("no finished runs yet");
    return table(["run", "graph", "state", "took ", "started"], list.slice(0, 15).map(r => el("tr", {
      class: "click" + (r.run === selected ? " selected" : ""), onclick: () => select(r.run) },
      td(r.run, "id"), td(r.graph), td(r.error ? `${r.state} (${r.error.code || "?"})` : r.state,
        r.state === "done" ? "alive" : "dead"),
      td(r.elapsed_s == null ? "" : us(Math.round(r.elapsed_s * 1e6)), "num"),
      td(r.started_unix ? new Date(r.started_unix * 1000).toLocaleTimeString() : ""))));
  }

  function latency(list) {
    if (!list.length) return empty("no node has finished yet");
    return table(["graph", "node", "worker", "runs ", "mean ", "p50 ", "p95 ", "max "],
      list.map(r => el("tr", {}, td(r.graph), td(r.node), td(r.worker), td(r.count, "num"),
        td(us(r.mean_us), "num"), td(us(r.p50_us), "num"), td(us(r.p95_us), "num"),
        td(us(r.max_us), "num"))));
  }

  function timeline(run, bars) {
    if (!run) return empty("no run selected");
    if (!bars || !bars.length) return empty(`no timings recorded for run ${run}`);
    const LABEL = 260, WIDTH = 900, ROW = 22, total = Math.max(1, ...bars.map(b => b.end_us));
    const x = v => LABEL + (v / total) * (WIDTH - LABEL - 70);
    const height = bars.length * ROW + 26;
    const root = svg("svg", { width: WIDTH, height, viewBox: `0 0 ${WIDTH} ${height}`, role: "img" });
    root.append(svg("line", { class: "axis", x1: LABEL, y1: height - 18, x2: WIDTH - 70, y2: height - 18 }));
    root.append(svg("text", { x: LABEL, y: height - 4 }, "0"));
    root.append(svg("text", { x: WIDTH - 70, y: height - 4, "text-anchor": "end" }, us(total)));
    bars.forEach((b, i) => {
      const y = i * ROW + 4, g = svg("g");
      g.append(svg("title", {}, `${b.node} on ${b.worker}: compute ${us(b.compute_us)}, ` +
        `waited ${us(b.wait_us)} for inputs, ends at ${us(b.end_us)} (${b.clock} clock)`));
      g.append(svg("text", { x: 0, y: y + 12 }, clip(`${b.node} (${b.worker})`, 40)));
      if (b.wait_us) {
        const ws = Math.max(0, b.start_us - b.wait_us);
        g.append(svg("rect", { class: "wait", x: x(ws), y: y + 3, height: ROW - 10,
                                width: Math.max(1, x(b.start_us) - x(ws)) }));
      }
      g.append(svg("rect", { class: "bar", x: x(b.start_us), y, height: ROW - 4,
                             width: Math.max(2, x(b.end_us) - x(b.start_us)) }));
      g.append(svg("text", { x: x(b.end_us) + 4, y: y + 12 }, us(b.end_us - b.start_us)));
      root.append(g);
    });
    return root;
  }

  function select(run) { selected = run; lastText = null; poll(); }

  function render(snap) {
    const c = snap.counts;
    document.getElementById("counts").textContent =
      `workers ${c.workers_alive} alive, ${c.workers_dead} dead · graphs ${c.graphs} · ` +
      `runs ${c.runs_active} in flight, ${c.runs_ok} ok, ${c.runs_failed} failed`;
    fill("workers", workers(snap.workers));
    fill("graphs", ...(snap.graphs.length ? snap.graphs.map(drawGraph) : [empty("no graphs registered")]));
    fill("active", active(snap.active));
    fill("failures", failures(snap.failures));
    if (!selected || !snap.recent.some(r => r.run === selected)) {
      const first = snap.recent.find(r => snap.timelines[r.run]) || snap.recent[0];
      selected = first ? first.run : null;
    }
    fill("recent", recent(snap.recent));
    fill("latency", latency(snap.latency));
    document.getElementById("timeline-run").textContent = selected ? `run ${selected}` : "";
    fill("timeline", timeline(selected, selected && snap.timelines[selected]));
  }

  function status(text, bad) {
    const s = document.getElementById("status");
    s.textContent = text; s.className = "status" + (bad ? " bad" : "");
  }

  async function poll() {
    try {
      const res = await fetch(api, { cache: "no-store", credentials: "same-origin" });
      const text = await res.text();
      if (!res.ok) {
        let why = text;
        try { why = JSON.parse(text).error || text; } catch (e) { /* plain text */ }
        return status(`${res.status}: ${why}`, true);
      }
      status("live · " + new Date().toLocaleTimeString(), false);
      if (text !== lastText) { lastText = text; render(JSON.parse(text)); }
    } catch (e) {
      status("coordinator unreachable (" + e.message + ")", true);
    }
  }

  poll();
  setInterval(poll, 1000);
})();
