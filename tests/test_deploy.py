"""The deployment files under deploy/, validated offline.

- every YAML file parses;
- the Compose file validates against the Compose Specification JSON Schema (the copy that
  the check-jsonschema package vendors);
- every Kubernetes manifest validates against the Kubernetes schemas that the
  kubernetes-validate package ships (strict: unknown fields fail);
- the systemd units pass ``systemd-analyze verify`` (where it is installed), the Slurm
  script ``bash -n`` (and shellcheck where installed);
- the flags the files pass to ``interop coordinator start`` / ``interop worker start``
  exist, no worker binds a wildcard (it would announce 0.0.0.0), and the health probe
  works against a live loopback coordinator.

Optional validators are skipped when not installed (pytest.importorskip / shutil.which).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker" / "compose.yaml"
K8S = DEPLOY / "k8s"
SYSTEMD = DEPLOY / "systemd"
SBATCH = DEPLOY / "slurm" / "interop.sbatch"
PROBE = DEPLOY / "interop_probe.py"
K8S_VERSION = "1.30"
WILDCARD = re.compile(r"tcp://(0\.0\.0\.0|\*|\[::\]):")


def _yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _k8s_docs() -> list[tuple[str, dict[str, Any]]]:
    return [(p.name, d) for p in sorted(K8S.glob("*.yaml")) if p.name != "kustomization.yaml"
            for d in _docs(p)]


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _k8s_containers(kind: str = "Deployment") -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"][0]
            for _, d in _k8s_docs() if d["kind"] == kind}


# --- parsing --------------------------------------------------------------------------------

@pytest.mark.parametrize("path", _yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yaml_parses(path: Path) -> None:
    assert _docs(path), f"{path} holds no YAML document"


def test_example_configs_load_as_worker_configs() -> None:
    from interop_runtime.graph.pipeline import PipelineSpec

    spec = PipelineSpec.from_yaml(DEPLOY / "examples" / "pipeline.yaml")
    assert {n.worker for n in spec.graph.nodes.values()} == {"tf", "torch"}


# --- Compose ----------------------------------------------------------------------------------

def _compose_schema() -> dict[str, Any]:
    pytest.importorskip("check_jsonschema", reason="check-jsonschema ships the compose-spec schema")
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads(vendor.joinpath("compose-spec.json").read_text())


def test_compose_file_matches_the_compose_spec_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = _compose_schema()
    validator = jsonschema.Draft202012Validator(schema)
    errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(_compose())]
    assert not errors, (f"compose.yaml vs compose-spec (check-jsonschema "
                        f"{metadata.version('check-jsonschema')}):\n" + "\n".join(errors))
    # the schema is not vacuous: a wrong type and an unknown key are reported
    bad = _compose()
    bad["services"]["coordinator"]["restart"] = 5
    bad["services"]["coordinator"]["healthcheck"]["intervall"] = "1s"
    assert len(list(validator.iter_errors(bad))) >= 2


def test_compose_services() -> None:
    services = _compose()["services"]
    assert {"coordinator", "tf-worker", "torch-worker"} <= set(services)
    coordinator = services["coordinator"]
    assert coordinator["healthcheck"]["test"] and coordinator["restart"]
    for name in ("tf-worker", "torch-worker"):
        svc = services[name]
        devices = svc["deploy"]["resources"]["reservations"]["devices"]
        assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
        assert svc["restart"] and svc["healthcheck"]["test"]
        assert svc["depends_on"]["coordinator"]["condition"] == "service_healthy"
    # every secret key is mounted into its owner only
    owners = {"coordinator": "coordinator", "tf-worker": "tf", "torch-worker": "torch"}
    for svc, owner in owners.items():
        assert services[svc]["secrets"] == [f"{owner}.key_secret"]
        assert f"--key=/run/secrets/{owner}.key_secret" in services[svc]["command"]
    for name, secret in _compose()["secrets"].items():
        assert secret["file"] == f"./keys/{name}"
    for cfg in _compose()["configs"].values():
        assert (COMPOSE.parent / cfg["file"]).is_file()


# --- Kubernetes -------------------------------------------------------------------------------

@pytest.mark.parametrize("name,doc", _k8s_docs(),
                         ids=lambda v: v if isinstance(v, str) else v["metadata"]["name"])
def test_k8s_manifest_validates(name: str, doc: dict[str, Any]) -> None:
    kv = pytest.importorskip("kubernetes_validate")
    try:
        kv.validate(doc, K8S_VERSION, strict=True)
    except kv.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path)
        pytest.fail(f"{name}: {doc['kind']}/{doc['metadata']['name']}: {path}: {exc.message}")


def test_k8s_validator_is_not_vacuous() -> None:
    kv = pytest.importorskip("kubernetes_validate")
    doc = _docs(K8S / "worker-tf.yaml")[0]
    doc["spec"]["template"]["spec"]["containers"][0]["resources"]["limit"] = {"cpu": 1}
    with pytest.raises(kv.ValidationError):
        kv.validate(doc, K8S_VERSION, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    manifests = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(manifests)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kustomization_renders() -> None:
    out = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(out.stdout) if d)
    assert kinds.count("Deployment") == 3 and "PersistentVolumeClaim" in kinds


def test_k8s_shape() -> None:
    docs = {(d["kind"], d["metadata"]["name"]): d for _, d in _k8s_docs()}
    assert ("Namespace", "interop") in docs
    coordinator = docs[("Deployment", "interop-coordinator")]["spec"]
    assert coordinator["replicas"] == 1 and coordinator["strategy"]["type"] == "Recreate"
    claim = coordinator["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert ("PersistentVolumeClaim", claim) in docs
    assert ("Service", "interop-coordinator") in docs
    for name in ("tf", "torch"):
        spec = docs[("Deployment", f"interop-worker-{name}")]["spec"]
        c = spec["template"]["spec"]["containers"][0]
        assert spec["replicas"] == 1
        assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert c["readinessProbe"] and c["livenessProbe"]
        # the worker binds (and so announces) its pod IP, taken from the downward API
        assert "--bind=tcp://$(POD_IP):7000" in c["args"]
        env = {e["name"]: e for e in c["env"]}
        assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
        volumes = {v["name"]: v for v in spec["template"]["spec"]["volumes"]}
        assert volumes["key"]["secret"]["secretName"] == f"interop-key-{name}"
        assert ("Secret", f"interop-key-{name}") in docs
        config_map = docs[("ConfigMap", volumes["config"]["configMap"]["name"])]
        # the ConfigMap carries the same worker config as deploy/examples/
        assert config_map["data"]["worker.yaml"] == (DEPLOY / "examples" / f"{name}.yaml"
                                                     ).read_text()


# --- the flags the files pass exist; no worker binds a wildcard -------------------------------

def _cli_options(group: str) -> set[str]:
    import typer

    from interop_runtime.cli.app import app

    cmd = typer.main.get_command(app)
    start = cmd.commands[group].commands["start"]  # type: ignore[attr-defined]
    # duck-typed: recent typer versions ship their own copy of click
    options = {o for p in start.params for o in getattr(p, "opts", []) if o.startswith("-")}
    assert "--bind" in options
    return options


def _flags(args: list[str]) -> set[str]:
    return {a.split("=", 1)[0] for a in args if a.startswith("--")}


def _systemd_exec(unit: str) -> list[str]:
    text = (SYSTEMD / unit).read_text().replace("\\\n", " ")
    line = next(ln for ln in text.splitlines() if ln.startswith("ExecStart="))
    return shlex.split(line.removeprefix("ExecStart="))


def _worker_and_coordinator_args() -> list[Any]:
    out = []
    for svc, body in _compose()["services"].items():
        out.append((f"compose:{svc}", body["command"][0], body["command"]))
    for name, c in _k8s_containers().items():
        out.append((f"k8s:{name}", c["args"][0], c["args"]))
    for unit in ("interop-coordinator.service", "interop-worker@.service"):
        argv = _systemd_exec(unit)
        out.append((f"systemd:{unit}", argv[1], argv[1:]))
    return [pytest.param(*case, id=case[0]) for case in out]


@pytest.mark.parametrize("where,group,args", _worker_and_coordinator_args())
def test_flags_exist_and_workers_bind_a_concrete_address(where: str, group: str,
                                                         args: list[str]) -> None:
    assert args[:2] == [group, "start"], where
    unknown = _flags(args) - _cli_options(group)
    assert not unknown, f"{where}: `interop {group} start` has no {sorted(unknown)}"
    if group == "worker":
        bind = next(a for a in args if a.startswith("--bind"))
        assert not WILDCARD.search(bind), f"{where}: a worker must not bind {bind}"
        assert "--key" in _flags(args) and "--coordinator-key" in _flags(args)


def test_example_env_files_do_not_bind_workers_to_a_wildcard() -> None:
    env = dict(ln.split("=", 1) for ln in (SYSTEMD / "worker.env.example").read_text().splitlines()
               if ln and not ln.startswith("#"))
    assert not WILDCARD.search(env["INTEROP_BIND"])
    assert {"INTEROP_PLUGIN", "INTEROP_DEVICE", "INTEROP_COORDINATOR"} <= set(env)


# --- systemd --------------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_units_verify(tmp_path: Path) -> None:
    # the units name /opt/interop/venv/bin/interop, which verify wants to find: point the
    # copies at this checkout's interop (or any executable) instead
    exe = shutil.which("interop") or str(Path(sys.executable).with_name("interop"))
    if not Path(exe).exists():
        exe = sys.executable
    for unit in SYSTEMD.glob("*.service"):
        text = unit.read_text().replace("/opt/interop/venv/bin/interop", exe)
        (tmp_path / unit.name).write_text(text)
    # a template is verified through an instance
    shutil.copy(tmp_path / "interop-worker@.service", tmp_path / "interop-worker@tf.service")
    for name in ("interop-coordinator.service", "interop-worker@tf.service"):
        out = subprocess.run(["systemd-analyze", "verify", "--man=no", str(tmp_path / name)],
                             capture_output=True, text=True, timeout=60)
        # unknown keys and bad values are only warnings (exit 0): fail on any line about
        # our units
        ours = [ln for ln in (out.stdout + out.stderr).splitlines() if "interop" in ln]
        assert out.returncode == 0 and not ours, f"{name}:\n{out.stdout}{out.stderr}"


def test_systemd_units_are_hardened() -> None:
    for unit in ("interop-coordinator.service", "interop-worker@.service"):
        text = (SYSTEMD / unit).read_text()
        for line in ("User=interop", "Restart=on-failure", "NoNewPrivileges=yes",
                     "ProtectSystem=strict", "StartLimitBurst=", "RestartSec="):
            assert re.search(rf"^{re.escape(line)}", text, re.M), f"{unit}: no {line}"
    coordinator = (SYSTEMD / "interop-coordinator.service").read_text()
    assert "StateDirectory=interop" in coordinator and "%S/interop/state.sqlite" in coordinator
    worker = (SYSTEMD / "interop-worker@.service").read_text()
    assert "/etc/interop/workers/%i.yaml" in worker
    assert "EnvironmentFile=/etc/interop/workers/%i.env" in worker


# --- Slurm ------------------------------------------------------------------------------------

def test_sbatch_script_parses() -> None:
    out = subprocess.run(["bash", "-n", str(SBATCH)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    text = SBATCH.read_text()
    assert "trap cleanup EXIT" in text and "srun" in text and "#SBATCH --gpus-per-task=1" in text


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_sbatch_script_shellcheck() -> None:
    out = subprocess.run(["shellcheck", str(SBATCH)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


# --- the health probe against a live coordinator ------------------------------------------------

def _probe(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(PROBE), *map(str, args)], capture_output=True,
                          text=True, timeout=30, cwd=ROOT)


def test_probe_against_a_live_curve_cluster(start_cluster) -> None:
    from interop_runtime.client.testing import numpy_worker

    cluster = start_cluster(numpy_worker("w1", "scale"), curve=True)
    keys = cluster.keys_dir
    # the coordinator probes itself with its own key pair
    ok = _probe("-c", cluster.address, "--key", keys / "coordinator.key_secret")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # a worker checks that it is registered and alive, with its own key pair
    ok = _probe("-c", cluster.address, "--key", keys / "w1.key_secret",
                "--coordinator-key", keys / "coordinator.key", "--worker", "w1")
    assert ok.returncode == 0 and "alive" in ok.stdout, ok.stdout + ok.stderr
    missing = _probe("-c", cluster.address, "--key", keys / "w1.key_secret",
                     "--coordinator-key", keys / "coordinator.key", "--worker", "nope",
                     "--timeout", "1")
    assert missing.returncode == 1 and "not registered" in missing.stdout
    wrong_server = _probe("-c", cluster.address, "--key", keys / "w1.key_secret",
                          "--coordinator-key", keys / "client.key", "--timeout", "0.5")
    assert wrong_server.returncode == 1 and "unhealthy" in wrong_server.stdout
