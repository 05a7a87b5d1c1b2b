"""The coordinator's web dashboard: a real cluster, a real run, real HTTP, and the page
rendered by a real headless Chromium (skipped only where no chromium is installed)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from interop_runtime import ClusterSpec, Graph, InteropError, LocalCluster
from interop_runtime.client.testing import numpy_worker
from interop_runtime.coordinator.dashboard import check_dashboard_allowed

# a name a peer chose, with markup in it: the page must show it as text, never as HTML
# (no '/': worker names become log file names)
EVIL = "w2<script>alert(1)<\\script><img src=x onerror=document.title=1>"
GRAPH = "dash_chain"


def _url(cluster: LocalCluster, timeout_s: float = 30.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = re.search(r"dashboard at (http://\S+)", cluster.log_tail("coordinator", 200))
        if found:
            return found.group(1)
        time.sleep(0.1)
    raise AssertionError("the coordinator logged no dashboard URL:\n" +
                         cluster.log_tail("coordinator"))


def _get(url: str) -> tuple[int, bytes, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as res:
            return res.status, res.read(), res.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers


@pytest.fixture(scope="module")
def dash() -> Iterator[dict[str, Any]]:
    spec = ClusterSpec.model_validate({
        "coordinator": {"heartbeat_s": 0.5, "dashboard_port": 0},  # CURVE on: a token
        "workers": [numpy_worker("w1", "scale", "fail"), numpy_worker(EVIL, "add_const")]})
    with LocalCluster(spec) as cluster:
        g = Graph(GRAPH).node("first", "w1", "scale").node("second", EVIL, "add_const")
        g.edge("first.y", "second.x").input("x", "first.x").output("y", "second.y")
        broken = Graph("dash_broken").node("boom", "w1", "fail").input("x", "boom.x")
        broken.output("y", "boom.y")
        with cluster.client() as c:
            c.register(g)
            c.register(broken)
            result = c.run(GRAPH, {"x": np.ones(4, np.float32)})
            with pytest.raises(InteropError) as failed:
                c.run("dash_broken", {"x": np.ones(4, np.float32)})
        url = _url(cluster)
        yield {"cluster": cluster, "url": url, "base": url.split("?")[0], "run": result.run,
               "failed": failed.value}


def _snapshot(dash: dict[str, Any], ready: Callable[[dict[str, Any]], bool],
              timeout_s: float = 20.0) -> dict[str, Any]:
    """The snapshot once ``ready`` holds (the run's DONE and the workers' next heartbeat
    may still be on their way); the last one after ``timeout_s``."""
    token = dash["url"].split("token=")[1]
    deadline = time.monotonic() + timeout_s
    while True:
        status, body, _ = _get(f"{dash['base']}api/snapshot?token={token}")
        assert status == 200, body
        snap = dict(json.loads(body))
        if ready(snap) or time.monotonic() > deadline:
            return snap
        time.sleep(0.2)


def _settled(dash: dict[str, Any]) -> Callable[[dict[str, Any]], bool]:
    """The run is recorded, and w1's heartbeat counts the call it made."""
    def ready(snap: dict[str, Any]) -> bool:
        w1 = next((w for w in snap["workers"] if w["name"] == "w1"), {})
        return (dash["run"] in snap["timelines"]
                and w1.get("stats", {}).get("calls", 0) >= 1)
    return ready


def test_snapshot_has_workers_graph_run_and_failure(dash: dict[str, Any]) -> None:
    snap = _snapshot(dash, _settled(dash))
    workers = {w["name"]: w for w in snap["workers"]}
    assert set(workers) == {"w1", EVIL} and all(w["alive"] for w in workers.values())
    assert workers["w1"]["plugin"] == "numpy" and "scale" in workers["w1"]["functions"]
    assert workers["w1"]["stats"]["rss_bytes"] > 0 and workers["w1"]["stats"]["calls"] >= 1
    graph = next(g for g in snap["graphs"] if g["name"] == GRAPH)
    assert [n["name"] for n in graph["nodes"]] == ["first", "second"]
    assert graph["edges"] == [{"src": "first.y", "dst": "second.x"}]
    recent = {r["run"]: r for r in snap["recent"]}
    assert recent[dash["run"]]["state"] == "done"
    bars = snap["timelines"][dash["run"]]
    assert {b["node"] for b in bars} == {"first", "second"}
    assert all(b["end_us"] >= b["start_us"] >= 0 for b in bars)
    assert {(r["graph"], r["node"]) for r in snap["latency"]} >= {(GRAPH, "first"),
                                                                  (GRAPH, "second")}
    codes = {f["error"]["code"] for f in snap["failures"]}
    assert dash["failed"].code.value in codes
    # nothing secret travels: no keys, sessions or endpoints
    text = json.dumps(snap)
    assert "session" not in text and "key" not in text and "tcp://" not in text


def test_token_is_required_and_other_paths_are_404(dash: dict[str, Any]) -> None:
    base, token = dash["base"], dash["url"].split("token=")[1]
    assert _get(f"{base}api/snapshot")[0] == 403
    assert _get(f"{base}api/snapshot?token=wrong{token}")[0] == 403
    assert _get(f"{base}nope?token={token}")[0] == 404
    assert _get(f"{base}static/../daemon.py")[0] == 404
    status, body, headers = _get(base)  # the page itself holds no data
    assert status == 200 and b"/static/app.js" in body
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert _get(f"{base}static/app.js")[0] == 200


def test_non_loopback_needs_curve() -> None:
    with pytest.raises(ValueError, match="without CURVE"):
        check_dashboard_allowed("0.0.0.0", secure=False)
    assert check_dashboard_allowed("0.0.0.0", secure=True) is True  # and a token
    assert check_dashboard_allowed("127.0.0.1", secure=False) is False


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.skip("no chromium binary (CI installs Debian's chromium through .ci/run)")
    return subprocess.run(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
         "--virtual-time-budget=5000", *args],
        capture_output=True, text=True, timeout=90)


def test_page_renders_in_chromium(dash: dict[str, Any], tmp_path: Path) -> None:
    _snapshot(dash, _settled(dash))
    dom = _chromium(tmp_path, "--dump-dom", dash["url"]).stdout
    assert "live" in dom, dom[:2000]  # the status line: the snapshot came and was drawn
    for text in ("w1", GRAPH, "first", "second", "w1.scale", dash["run"],
                 dash["failed"].code.value, "RSS", "p95", "first (w1)"):
        assert text in dom, text
    # the peer's markup is text: escaped in the DOM, never an element
    assert "w2&lt;script&gt;alert(1)&lt;\\script&gt;&lt;img src=x onerror=document.title=1&gt;" \
        in dom
    assert "<img" not in dom and "<script>alert" not in dom
    assert "<title>interop dashboard</title>" in dom  # no handler ran


def test_screenshot_is_a_png(dash: dict[str, Any], tmp_path: Path) -> None:
    shot = tmp_path / "x.png"
    _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,900", dash["url"])
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
