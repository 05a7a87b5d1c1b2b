"""Compatibility on real architectures, built from configs with random weights (nothing is
downloaded): HuggingFace BERT and GPT-2 as factories and as TorchScript in torch workers,
and a Keras Conv2D/BatchNorm/GRU/Dropout/LSTM model in code, as a SavedModel and as a
.keras file. Reports explain (vocabulary, norm placement, Conv1D projections), partial
copies pair by role and stop under their threshold, twins copy exactly."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("tensorflow")
pytest.importorskip("interop_torch")
pytest.importorskip("interop_tensorflow")

from interop_runtime import Client, ClusterSpec, LocalCluster, ops
from interop_runtime.ops.compat.modelgraph import ModelGraph, ParamInfo
from interop_runtime.ops.compat.report import compare
from interop_runtime.ops.params import plane as paramops
from interop_runtime.wire.errors import ModelMismatchError

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "compat"
IDS = [{"name": "input_ids", "dtype": "int64", "shape": [None, 16]}]
OUT = [{"name": "last_hidden_state"}, {"name": "pooler_output"}]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    sys.path.insert(0, str(EXAMPLES))
    try:
        import hf_models
        import keras_models
    finally:
        sys.path.remove(str(EXAMPLES))
    tmp = tmp_path_factory.mktemp("real")
    saved, keras_file = keras_models.save_twins(tmp, seed=0)
    return {"bert": hf_models.save_torchscript("bert", tmp / "bert.ts", seed=0),
            "gpt2": hf_models.save_torchscript("gpt2", tmp / "gpt2.ts", seed=0),
            "saved": saved, "keras_file": keras_file}


@pytest.fixture(scope="module")
def cluster(files: dict[str, Path]) -> Iterator[LocalCluster]:
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(EXAMPLES),
                                                       os.environ.get("PYTHONPATH")]))}

    def torch_worker(name: str, outputs: list[dict[str, Any]], **config: Any) -> dict[str, Any]:
        return {"name": name, "plugin": "torch", "env": env,
                "config": {"inputs": IDS, "outputs": outputs, "threads": 1, **config}}

    def keras_worker(name: str, **config: Any) -> dict[str, Any]:
        return {"name": name, "plugin": "tensorflow", "env": env, "config": config}

    gpt_out = OUT[:1]
    spec = ClusterSpec.model_validate({"coordinator": {"heartbeat_s": 1.0}, "workers": [
        torch_worker("bert", OUT, factory="hf_models:bert", kwargs={"seed": 0}),
        torch_worker("bert_seed1", OUT, factory="hf_models:bert", kwargs={"seed": 1}),
        torch_worker("gpt2", gpt_out, factory="hf_models:gpt2", kwargs={"seed": 0}),
        torch_worker("bert_ts", OUT, torchscript=str(files["bert"])),
        torch_worker("gpt2_ts", gpt_out, torchscript=str(files["gpt2"])),
        keras_worker("keras_code", factory="keras_models:conv_rnn", kwargs={"seed": 1}),
        keras_worker("keras_saved", saved_model=str(files["saved"])),
        keras_worker("keras_file", keras_file=str(files["keras_file"])),
    ]})
    with LocalCluster(spec) as c:
        yield c


@pytest.fixture(scope="module")
def client(cluster: LocalCluster) -> Iterator[Client]:
    with cluster.client(timeout_s=120.0) as c:
        yield c


def pair_of(report: Any, b: str) -> Any:
    return next(p for p in report.params if p.b == b)


def assert_params_equal(client: Client, a: str, b: str, names: list[str]) -> None:
    pa, pb = client.get_params(a, names), client.get_params(b, names)
    for n in names:
        assert pa[n].tobytes() == pb[n].tobytes(), n


# --- BERT vs GPT-2 ----------------------------------------------------------------------------

def test_bert_vs_gpt2_says_why_and_pairs_conv1d_projections(client: Client) -> None:
    r = ops.compat(client, "bert", "gpt2")
    assert not r.verdict.compatible and r.structure_matches is False
    reasons = r.summary.reasons
    assert "vocabulary 30522 vs 50257" in reasons
    assert "norm placement post-norm vs pre-norm" in reasons
    assert any("fused q/k/v" in x for x in reasons)
    assert r.profile_a.heads == r.profile_b.heads == 2 and r.profile_a.depth == 2
    # GPT-2's Conv1D (addmm, weight stored (in, out)) is a linear op, paired with BERT's
    # attention output projection by role, through a transpose
    graph_b = ModelGraph.model_validate(client.model_graph("gpt2"))
    c_attn = graph_b.param("h.0.attn.c_attn.weight")
    assert c_attn is not None and c_attn.layout == "in,out"
    assert graph_b.op(c_attn.op or "").type == "linear"
    proj = pair_of(r, "h.0.attn.c_proj.weight")
    assert proj.a == "encoder.layer.0.attention.output.dense.weight" and proj.ok
    assert [s.describe() for s in proj.transform] == ["transpose(1, 0)"]
    assert not pair_of(r, "wte.weight").ok  # the token embeddings: 30522 vs 50257 rows
    # LayerNorms do not pair by position: post-norm BERT's have no partner in pre-norm GPT-2
    assert not [p for p in r.params if p.role in ("gamma", "beta")]
    assert r.summary.fraction < 0.5 and r.summary.refused > 0
    assert r.collapsed_b > 20  # mask and position bookkeeping, out of the table


def test_partial_copy_bert_to_gpt2_stops_under_the_threshold(cluster: LocalCluster,
                                                              client: Client) -> None:
    from typer.testing import CliRunner

    from interop_runtime.cli.app import app

    runner, addr = CliRunner(), ["-c", cluster.address]
    before = client.get_params("gpt2", ["ln_f.weight"]).version
    res = runner.invoke(app, ["copy-params", "bert", "gpt2", "--partial", *addr],
                        env=cluster.connection())
    assert res.exit_code == 1, res.output
    assert "[incompatible]" in res.output and "under the minimum 50%" in res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1
    assert client.get_params("gpt2", ["ln_f.weight"]).version == before  # nothing written
    res = runner.invoke(app, ["copy-params", "bert", "gpt2", "--partial", "--min-fraction", "0",
                              *addr], env=cluster.connection())
    assert res.exit_code == 0, res.output
    assert "copied 6 parameter(s)" in res.output and "refused" in res.output
    w = client.get_params("bert", ["encoder.layer.1.attention.output.dense.weight"])
    g = client.get_params("gpt2", ["h.1.attn.c_proj.weight"])
    assert np.array_equal(w["encoder.layer.1.attention.output.dense.weight"].T,
                          g["h.1.attn.c_proj.weight"])


def test_cli_compat_puts_a_short_summary_first(cluster: LocalCluster) -> None:
    from typer.testing import CliRunner

    from interop_runtime.cli.app import app

    runner, addr = CliRunner(), ["-c", cluster.address]
    res = runner.invoke(app, ["compat", "bert", "gpt2", "--brief", *addr],
                        env=cluster.connection())
    assert res.exit_code == 4, res.output
    lines = res.output.strip().splitlines()
    assert lines[0].startswith("verdict: not compatible") and len(lines) <= 16, res.output
    assert any("vocabulary 30522 vs 50257" in x for x in lines)
    assert lines[-1].startswith("could copy bert -> gpt2: 6 of 28 parameters")
    full = runner.invoke(app, ["compat", "bert", "gpt2", *addr], env=cluster.connection()).output
    assert full.index("vocabulary 30522") < full.index("structure (significant ops")


# --- twins ------------------------------------------------------------------------------------

def test_bert_and_bert_with_another_seed_copy_every_parameter(client: Client) -> None:
    r = ops.compat(client, "bert", "bert_seed1")
    assert r.verdict.compatible and r.verdict.equivalent and r.summary.matched_by == "structure"
    assert len(r.params) == 39 and all(p.a == p.b and p.ok and not p.transform for p in r.params)
    names = [p.a for p in r.params]
    assert client.get_params("bert", names[:1])[names[0]].tobytes() != \
        client.get_params("bert_seed1", names[:1])[names[0]].tobytes()
    ops.copy_params(client, "bert", "bert_seed1")
    assert_params_equal(client, "bert", "bert_seed1", names)


@pytest.mark.parametrize("ts,eager", [("bert_ts", "bert"), ("gpt2_ts", "gpt2")])
def test_torchscript_twin_matches_its_eager_model_and_copies_exactly(
        client: Client, ts: str, eager: str) -> None:
    r = ops.compat(client, ts, eager)
    assert r.structure_matches is True and r.verdict.compatible, r.verdict.reasons
    assert r.summary.matched_by == "structure" and r.summary.fraction == 1.0
    graph = ModelGraph.model_validate(client.model_graph(ts))
    assert {"embedding", "layernorm", "attention", "linear"} <= {o.type for o in graph.ops}
    rng = np.random.default_rng(3)
    client.set_params(eager, {n: rng.standard_normal(a.shape).astype(a.dtype)
                              for n, a in client.get_params(eager).items() if a.dtype.kind == "f"})
    ops.copy_params(client, ts, eager)
    assert_params_equal(client, ts, eager, [p.a for p in r.params])
    ids = np.arange(32, dtype=np.int64).reshape(2, 16)
    out_ts = client.call(ts, "forward", {"input_ids": ids})["last_hidden_state"]
    out_eager = client.call(eager, "forward", {"input_ids": ids})["last_hidden_state"]
    np.testing.assert_allclose(out_ts, out_eager, atol=1e-5, rtol=0)


def test_torchscript_bert_vs_gpt2_is_a_real_structural_verdict(client: Client) -> None:
    r = ops.compat(client, "bert_ts", "gpt2_ts")
    assert r.structure_matches is False and r.alignment and r.summary.structure == "differ"
    assert not r.verdict.compatible and "vocabulary 30522 vs 50257" in r.summary.reasons


def test_keras_model_in_code_matches_its_saved_model_and_keras_file(client: Client) -> None:
    saved = ModelGraph.model_validate(client.model_graph("keras_saved"))
    assert [o.type for o in saved.significant_ops()] == [
        "conv2d", "batchnorm", "relu", "gru", "lstm", "linear"]
    for twin in ("keras_saved", "keras_file"):
        r = ops.compat(client, "keras_code", twin)
        assert r.structure_matches is True and r.verdict.compatible, (twin, r.verdict.reasons)
        names = [p.a for p in r.params]
        assert "gru/gru_cell/recurrent_kernel" in names and len(names) == 14
        ops.copy_params(client, "keras_code", twin)
        assert_params_equal(client, "keras_code", twin, names)
    image = np.random.default_rng(4).standard_normal((2, 8, 8, 3)).astype(np.float32)
    outs = [next(iter(client.call(w, "forward", {"image": image}).values()))
            for w in ("keras_code", "keras_saved", "keras_file")]
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-5, rtol=0)
    np.testing.assert_allclose(outs[0], outs[2], atol=1e-5, rtol=0)


# --- typed errors and unknown structure -------------------------------------------------------

def test_average_of_models_that_do_not_fit_raises_the_typed_error(client: Client) -> None:
    with pytest.raises(ModelMismatchError) as err:
        paramops.average(client, ["bert", "gpt2"], dry_run=True)
    assert err.value.code.value == "incompatible" and "'gpt2'" in str(err.value)
    with pytest.raises(ModelMismatchError):
        ops.copy_params(client, "bert", "gpt2")  # strict: the verdict refuses it


def test_unknown_structure_is_reported_unknown_and_matched_by_name() -> None:
    def bare(*names: str) -> ModelGraph:
        return ModelGraph(framework="torch", params=[
            ParamInfo(name=n, shape=[4, 3], role=ParamInfo.role_from_name(n)) for n in names])
    r = compare(bare("fc.weight", "fc.bias"), bare("fc.weight", "fc.bias"))
    assert r.structure_matches is None and r.summary.structure == "unknown"
    assert r.summary.matched_by == "name" and r.verdict.compatible and not r.verdict.equivalent
    assert any("matched by name and shape" in x for x in r.summary.reasons)
    r = compare(bare("fc.weight"), bare("head.weight"))
    assert r.structure_matches is None and not r.verdict.compatible
