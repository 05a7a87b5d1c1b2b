"""A worker can run under another Python interpreter: its own, minimal virtualenv."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from interop_runtime import Graph
from interop_runtime.client.testing import numpy_worker

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def minimal_venv(tmp_path_factory) -> Path:
    """A fresh venv holding only the core package and its own dependencies."""
    venv = tmp_path_factory.mktemp("worker-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    str(REPO)], check=True, timeout=600)
    return python


def test_worker_in_its_own_virtualenv(start_cluster, minimal_venv) -> None:
    frameworks = subprocess.run(
        [str(minimal_venv), "-c", "import importlib.util as u; "
         "print([m for m in ('torch', 'tensorflow', 'onnxruntime') if u.find_spec(m)])"],
        capture_output=True, text=True, check=True).stdout.strip()
    assert frameworks == "[]"  # nothing but the core
    cluster = start_cluster(numpy_worker("outside", "scale", python=str(minimal_venv)),
                            numpy_worker("inside", "add_const"))
    g = Graph("two-envs").node("a", "outside", "scale", factor=3.0)
    g.node("b", "inside", "add_const", value=1.0).edge("a.y", "b.x")
    g.input("x", "a.x").output("y", "b.y")
    with cluster.client() as c:
        pythons = {w["name"]: w["info"]["python"] for w in c.workers()}
        assert pythons["outside"] == str(minimal_venv)
        assert pythons["inside"] != str(minimal_venv)
        out = c.run(g, {"x": np.ones(2, np.float32)})
        np.testing.assert_array_equal(out["y"], np.full(2, 4, np.float32))
