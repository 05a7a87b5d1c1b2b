"""The parameter plane on real workers: averaging, versions, broadcast, safetensors, CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from interop_runtime.client.testing import numpy_worker
from interop_runtime.ops.params import plane as paramops
from interop_runtime.ops.params.plane import ParamVersionConflict
from interop_runtime.wire.errors import ModelMismatchError, UnsupportedError


def linear_worker(name: str, seed: int) -> dict[str, Any]:
    return numpy_worker(name, "linear", config={"params": {
        "w": {"shape": [4, 3], "seed": seed}, "b": {"shape": [3], "seed": seed + 100}}})


def mean64(sets: list[dict[str, np.ndarray]], weights: list[float]) -> dict[str, np.ndarray]:
    """The reference: normalized weights, float64 accumulation, cast back."""
    w = np.asarray(weights, np.float64) / np.sum(weights)
    return {n: sum((wi * s[n].astype(np.float64) for wi, s in zip(w, sets)),
                   np.zeros(sets[0][n].shape)).astype(sets[0][n].dtype) for n in sets[0]}


@pytest.fixture
def numpy_cluster(start_cluster):
    return start_cluster(*(linear_worker(f"n{i}", seed=i) for i in (1, 2, 3)))


def test_average_two_and_three_workers_is_the_weighted_mean(numpy_cluster) -> None:
    with numpy_cluster.client(timeout_s=10) as c:
        before = {w: c.get_params(w) for w in ("n1", "n2", "n3")}
        assert {p.version for p in before.values()} == {0}
        expected = mean64([before["n1"], before["n2"]], [0.3, 0.7])
        result = paramops.interpolate(c, "n1", "n2", 0.3)
        assert result.read_versions == {"n1": 0, "n2": 0} and result.written == {"n1": 1, "n2": 1}
        for w in ("n1", "n2"):
            got = c.get_params(w)
            assert got.version == 1
            for n in expected:
                assert got[n].tobytes() == expected[n].tobytes(), (w, n)
        x = np.ones((2, 4), np.float32)
        np.testing.assert_array_equal(c.call("n2", "linear", {"x": x})["y"], x @ expected["w"])

        # three workers, unnormalized weights, written only to n3
        now = {w: c.get_params(w) for w in ("n1", "n2", "n3")}
        expected = mean64([now["n1"], now["n2"], now["n3"]], [1, 2, 3])
        result = paramops.average(c, ["n1", "n2", "n3"], [1, 2, 3], into="n3")
        assert result.weights == pytest.approx({"n1": 1 / 6, "n2": 2 / 6, "n3": 3 / 6})
        assert result.written == {"n3": 1}
        assert [c.get_params(w).version for w in ("n1", "n2", "n3")] == [1, 1, 1]
        got = paramops.read_params(c, "n3", prefix="w")
        assert list(got) == ["w"] and got.version == 1
        assert got["w"].tobytes() == expected["w"].tobytes()


def test_a_concurrent_writer_is_detected_and_named(numpy_cluster) -> None:
    with numpy_cluster.client(timeout_s=10) as c, numpy_cluster.client(timeout_s=10) as other:
        stale = c.get_params("n1").version
        other.set_params("n1", {"b": np.zeros(3, np.float32)})
        with pytest.raises(ParamVersionConflict) as err:
            paramops.write_params(c, "n1", {"b": np.ones(3, np.float32)}, expected_version=stale)
        assert err.value.worker == "n1" and (err.value.expected, err.value.current) == (0, 1)
        assert "'n1'" in str(err.value) and "concurrently" in str(err.value)
        assert np.all(c.get_params("n1")["b"] == 0)  # the refused write changed nothing

        def meddle(params: Any) -> Any:  # another writer strikes between read and write
            other.set_params("n3", {"b": np.full(3, 7, np.float32)})
            return params
        with pytest.raises(ParamVersionConflict) as err:
            paramops.average(c, ["n2", "n3"], into=["n2", "n3"], mapping={"n3": meddle})
        assert err.value.worker == "n3" and err.value.written == {"n2": 1}
        assert "already written: n2" in str(err.value)
        assert np.all(c.get_params("n3")["b"] == 7)


def test_broadcast_copies_bit_exact_and_reports_versions(numpy_cluster) -> None:
    with numpy_cluster.client(timeout_s=10) as c:
        src = c.get_params("n1")
        result = paramops.broadcast(c, "n1", ["n2", "n3"])
        assert result.source_version == 0 and result.written == {"n2": 1, "n3": 1}
        for w in ("n2", "n3"):
            got = c.get_params(w)
            assert all(got[n].tobytes() == src[n].tobytes() for n in src) and got.version == 1
        with pytest.raises(UnsupportedError, match="both the source and a destination"):
            paramops.broadcast(c, "n1", ["n1"])


def test_mismatched_parameter_sets_are_refused(start_cluster) -> None:
    cluster = start_cluster(linear_worker("a", 1), numpy_worker("odd", "linear", config={
        "params": {"w": {"shape": [4, 2], "seed": 0}, "b": {"shape": [3], "seed": 0}}}))
    with cluster.client(timeout_s=10) as c:
        with pytest.raises(ModelMismatchError, match=r"parameter 'w': 'odd' has float32\[4, 2\]"):
            paramops.average(c, ["a", "odd"])
        with pytest.raises(UnsupportedError, match="3 weights for 2"):
            paramops.average(c, ["a", "odd"], [1, 2, 3])
        assert c.get_params("a").version == 0


def test_torch_safetensors_round_trip_and_averaged_twins(start_cluster, tmp_path) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("interop_torch")
    from interop_torch.models import classifier

    def twin(name: str, seed: int) -> dict[str, Any]:
        return {"name": name, "plugin": "torch", "config": {
            "factory": "interop_torch.models:classifier",
            "kwargs": {"seed": seed, "in_features": 8, "classes": 3},
            "inputs": [{"name": "x", "dtype": "float32", "shape": [None, 8]}],
            "outputs": [{"name": "logits", "dtype": "float32", "shape": [None, 3]}]}}

    cluster = start_cluster(twin("t1", 1), twin("t2", 2), heartbeat_s=1.0)
    x = np.random.default_rng(0).standard_normal((6, 8)).astype(np.float32)
    with cluster.client(timeout_s=60) as c:
        # export, disturb, import: bit-exact, and the file says which version it holds
        original = c.get_params("t1")
        path = tmp_path / "t1.safetensors"
        assert paramops.export_safetensors(c, "t1", path) == 0
        _, meta = paramops.load_params(path)
        assert meta == {paramops.VERSION_KEY: "0", paramops.WORKER_KEY: "t1"}
        assert paramops.file_version(path) == 0
        c.set_params("t1", {n: np.zeros_like(a) for n, a in original.items()})
        with pytest.raises(UnsupportedError, match="holds parameter version 0 .*'t1'.*not 5"):
            paramops.import_safetensors(c, "t1", path, verify_version=5)
        assert paramops.import_safetensors(c, "t1", path, verify_version=0,
                                           expected_version=1) == 2
        restored = c.get_params("t1")
        assert restored.version == 2 and list(restored) == list(original)
        assert all(restored[n].tobytes() == original[n].tobytes() for n in original)

        # average the twins (0.25 / 0.75): both now compute what the averaged model computes
        result = paramops.interpolate(c, "t1", "t2", 0.25)
        assert result.read_versions == {"t1": 2, "t2": 0}
        assert result.written == {"t1": 3, "t2": 1}
        out1 = c.call("t1", "forward", {"x": x})["logits"]
        out2 = c.call("t2", "forward", {"x": x})["logits"]
    m1, m2 = classifier(1, 8, 3), classifier(2, 8, 3)
    s1, s2 = m1.state_dict(), m2.state_dict()
    avg = {n: (0.25 * s1[n].double() + 0.75 * s2[n].double()).float() for n in s1}
    for n, value in avg.items():
        assert result.params[n].tobytes() == value.numpy().tobytes(), n
    m1.load_state_dict(avg)
    with torch.inference_mode():
        want = m1(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(out1, out2)
    np.testing.assert_allclose(out1, want, rtol=0, atol=1e-6)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "interop_runtime", "params", *args],
                          check=False, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def test_cli_average_list_export_import(numpy_cluster, tmp_path) -> None:
    addr = numpy_cluster.address
    with numpy_cluster.client(timeout_s=10) as c:
        expected = mean64([c.get_params("n1"), c.get_params("n2")], [0.3, 0.7])
        proc = _cli("average", "n1", "n2", "--weights", "0.3,0.7", "--into", "n2", "-c", addr, env=numpy_cluster.connection())
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "n2: parameters now at version 1" in proc.stdout
        got = c.get_params("n2")
        assert got.version == 1 and all(got[n].tobytes() == expected[n].tobytes() for n in got)

        proc = _cli("list", "n2", "-c", addr, env=numpy_cluster.connection())
        assert proc.returncode == 0 and "version 1" in proc.stdout and "[4, 3]" in proc.stdout
        path = tmp_path / "n2.safetensors"
        assert _cli("export", "n2", str(path), "-c", addr, env=numpy_cluster.connection()).returncode == 0
        proc = _cli("import", "n3", str(path), "--verify-version", "1", "-c", addr, env=numpy_cluster.connection())
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert c.get_params("n3")["w"].tobytes() == expected["w"].tobytes()
        proc = _cli("set", "n3", str(path), "--expect-version", "0", "-c", addr, env=numpy_cluster.connection())
        assert proc.returncode == 1 and "'n3'" in proc.stdout and "concurrently" in proc.stdout
