"""Nothing that handles bytes from a socket can reach pickle, marshal, eval or exec."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN_MODULES = {"pickle", "cPickle", "dill", "cloudpickle", "marshal", "shelve", "joblib"}
FORBIDDEN_BUILTINS = {"eval", "exec", "compile", "__import__"}  # called by bare name
FORBIDDEN_METHODS = {"recv_pyobj", "send_pyobj"}  # pyzmq's pickling helpers


def runtime_sources() -> list[Path]:
    files = sorted((ROOT / "interop_runtime").rglob("*.py"))
    files += sorted((ROOT / "workers").rglob("*.py"))
    return [f for f in files if "tests" not in f.parts]


def test_no_forbidden_imports_or_calls() -> None:
    problems = []
    for path in runtime_sources():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                names = {(node.module or "").split(".")[0]}
            else:
                names = set()
            if names & FORBIDDEN_MODULES:
                problems.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {names}")
            if isinstance(node, ast.Call):
                fn = node.func
                if (isinstance(fn, ast.Name) and fn.id in FORBIDDEN_BUILTINS) or (
                        isinstance(fn, ast.Attribute) and fn.attr in FORBIDDEN_METHODS):
                    problems.append(f"{path.relative_to(ROOT)}:{node.lineno} calls "
                                    f"{ast.unparse(fn)}")
    assert not problems, "\n".join(problems)


def test_torch_load_is_always_weights_only() -> None:
    for path in runtime_sources():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("torch.load"):
                kw = {k.arg: ast.unparse(k.value) for k in node.keywords}
                assert kw.get("weights_only") == "True", f"{path}:{node.lineno}"


def test_numpy_files_are_loaded_without_pickle() -> None:
    for path in runtime_sources():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and ast.unparse(node.func) in ("np.load", "numpy.load"):
                kw = {k.arg: ast.unparse(k.value) for k in node.keywords}
                assert kw.get("allow_pickle") == "False", f"{path}:{node.lineno}"
