"""Idle daemons stay lean (issue 10, goal 6): `python -m interop_runtime coordinator start` and
`worker start` read their own command line (cli/lean.py) and load neither typer, rich, the
client nor ops; what they accept, print and exit with is what the typer commands do."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer.main

from interop_runtime import ClusterSpec, Graph, LocalCluster
from interop_runtime.cli import lean
from interop_runtime.cli.app import app
from interop_runtime.client.testing import numpy_worker

LEAN = [sys.executable, "-m", "interop_runtime"]
FULL = [sys.executable, "-c", "from interop_runtime.cli.app import main; main()"]
# what an idle daemon must not hold: the CLI framework and the layers above the daemons
HEAVY = ("typer", "rich", "click", "interop_runtime.client", "interop_runtime.ops",
         "interop_runtime.cli.app", "interop_runtime.cli.common")
# nor what only some daemons need. Tensors reach the coordinator only on the path through it
# (Client(direct=False)), so numpy and ml_dtypes load then; prometheus_client and http.server
# only with --metrics-port or --dashboard-port. No daemon loads asyncio (pyzmq's
# ThreadAuthenticator did; transport/zap.py serves the same check without it), nor pydantic:
# the wire models are msgspec structs, pydantic is for the client's config files.
SPARED = {"coordinator": ("numpy", "ml_dtypes", "prometheus_client", "http", "asyncio",
                          "pydantic", "pydantic_core", "yaml"),
          "w1": ("asyncio", "pydantic", "pydantic_core")}  # its config file is YAML


def _command(group: str) -> Any:
    return typer.main.get_command(app).commands[group].commands["start"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("group,table,run", [("coordinator", lean.COORDINATOR, lean.run_coordinator),
                                             ("worker", lean.WORKER, lean.run_worker)])
def test_lean_tables_are_the_typer_commands(group: str, table: dict[str, lean.Option],
                                            run: Any) -> None:
    """Every option, default, flag and environment variable of the typer command, and no
    other: an option added to cli/daemons.py must be added to cli/lean.py too."""
    typer_side, lean_side = {}, {}
    for p in _command(group).params:
        default = p.default.value if hasattr(p.default, "value") else p.default
        kind = "bool" if p.secondary_opts else "flag" if p.is_flag else "value"
        typer_side[p.name] = (sorted(o for o in p.opts if o.startswith("--")), kind, default,
                              p.envvar)
    for opt, (param, kind, default, env) in table.items():
        lean_side[param] = ([opt], kind if kind in ("bool", "flag") else "value", default, env)
    assert lean_side == typer_side
    assert set(run.__kwdefaults__ or {}) | set(run.__code__.co_varnames[
        :run.__code__.co_kwonlyargcount]) == set(typer_side)


def test_parse_takes_plain_lines_and_leaves_the_rest_to_typer(monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    monkeypatch.delenv("INTEROP_COORDINATOR", raising=False)
    got = lean.parse(lean.WORKER, ["--plugin", "numpy", "-c", "tcp://h:1", "--no-shm",
                                   "--heartbeat=0.5", "--log-level", "debug"])
    assert got is not None
    assert (got["plugin"], got["coordinator"], got["shm"], got["heartbeat"], got["log_level"],
            got["keep_memory"], got["config"]) == ("numpy", "tcp://h:1", False, 0.5, "debug",
                                                    True, None)
    monkeypatch.setenv("INTEROP_COORDINATOR", "tcp://from-env:2")
    assert lean.parse(lean.WORKER, ["--plugin", "numpy"])["coordinator"] == "tcp://from-env:2"  # type: ignore[index]
    for line in (["--help"], ["--plugin", "numpy", "--help"], [],  # no --plugin
                 ["--plugin", "numpy", "--log-level", "INFO"],  # typer's case-insensitive choice
                 ["--plugin", "numpy", "--heartbeat", "soon"], ["--plugin", "a", "--plugin", "b"],
                 ["--plugin", "numpy", "--no-such-option"], ["--plugin", "numpy", "extra"],
                 ["--plugin"], ["--plugin", "numpy", "--insecure=yes"],
                 ["--plugin", "numpy", "-c=tcp://h:1"]):
        assert lean.parse(lean.WORKER, line) is None, line
    assert lean.parse(lean.COORDINATOR, ["-c", "tcp://h:1"]) is None  # -c is the worker's


def _both(args: list[str], tmp_path: Path) -> list[tuple[int, str]]:
    """Exit code and output of the lean path and of the typer app, for one command line."""
    out = []
    for cli in (LEAN, FULL):
        p = subprocess.run([*cli, *args], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "COLUMNS": "200"}, cwd=tmp_path)
        # typer names the program in its usage lines: `python -m interop_runtime`, or `-c`
        text = [line for line in (p.stdout + p.stderr).splitlines()
                if "Usage:" not in line and "Try '" not in line]
        out.append((p.returncode, "\n".join(text)))
    return out


@pytest.mark.parametrize("args,code,needle", [
    (["coordinator", "start", "--bind", "bogus://x", "--insecure", "--state", ":memory:"], 2,
     "cannot start coordinator"),
    (["coordinator", "start", "--key", "missing.key_secret", "--state", ":memory:"], 2,
     "Invalid certificate file"),
    (["worker", "start", "--plugin", "numpy", "--key", "missing.key_secret"], 1,
     "error: Invalid certificate file"),  # the CLI's one error path (errors.py)
    (["worker", "start", "--plugin", "numpy", "--bind", "tcp://0.0.0.0:0", "--insecure"], 2,
     "cannot start worker: refusing to bind"),
    (["worker", "start", "--plugin", "numpy", "--insecure", "--config", "missing.yaml"], 2,
     "missing.yaml: no such file"),
    (["worker", "start", "--plugin", "numpy", "--heartbeat", "soon"], 2,
     "Invalid value for '--heartbeat'"),  # left to typer
])
def test_errors_are_the_same_on_both_paths(args: list[str], code: int, needle: str,
                                           tmp_path: Path) -> None:
    lean_run, full_run = _both(args, tmp_path)
    assert lean_run == full_run
    assert lean_run[0] == code and needle in lean_run[1] and "Traceback" not in lean_run[1]


@pytest.fixture(scope="module")
def profiled() -> Iterator[LocalCluster]:
    """A secure cluster whose daemons print every import they make (-X importtime)."""
    spec = ClusterSpec.model_validate({"coordinator": {"heartbeat_s": 0.5}, "workers": [
        numpy_worker("w1", "scale", env={"PYTHONPROFILEIMPORTTIME": "1"})]})
    old = os.environ.get("PYTHONPROFILEIMPORTTIME")
    os.environ["PYTHONPROFILEIMPORTTIME"] = "1"  # the coordinator inherits this environment
    try:
        cluster = LocalCluster(spec).start()
    finally:
        if old is None:
            os.environ.pop("PYTHONPROFILEIMPORTTIME")
        else:
            os.environ["PYTHONPROFILEIMPORTTIME"] = old
    yield cluster
    cluster.stop()


def _imported(log: Path) -> set[str]:
    return {line.rsplit("|", 1)[1].strip() for line in log.read_text().splitlines()
            if line.startswith("import time:") and "|" in line}


def test_idle_daemons_load_no_cli_framework_nor_what_they_do_not_use(profiled: LocalCluster
                                                                    ) -> None:
    g = Graph("double").node("s", "w1", "scale", factor=2.0).input("x", "s.x").output("y", "s.y")
    x = np.arange(4, dtype=np.float32)
    with profiled.client() as client:  # the lean daemons serve as the typer ones did
        client.register(g)
        np.testing.assert_array_equal(client.run("double", {"x": x})["y"], x * 2)
    for name in ("coordinator", "w1"):
        mods = _imported(profiled.log_dir / f"{name}.log")
        assert "interop_runtime.cli.lean" in mods, name  # the log is the profile we asked for
        heavy = sorted(m for m in mods if m.split(".")[0] in HEAVY or m.startswith(HEAVY))
        assert not heavy, (name, heavy)
        spared = sorted(m for m in mods if m.split(".")[0] in SPARED[name])
        assert not spared, (name, spared)


def test_bench_measures_rss_pss_and_uss() -> None:
    from bench.idle_bench import memory

    m = memory(os.getpid())
    assert m["rss"] >= m["pss"] >= m["uss"] > 0
    assert memory(2**22 + 1) == {"rss": 0.0, "pss": 0.0, "uss": 0.0}  # no such process

