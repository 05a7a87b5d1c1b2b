"""The public surface is pinned: a change to it is a deliberate edit of this list."""

from __future__ import annotations

import interop_runtime

PUBLIC = {
    "PROTOCOL_VERSION", "WIRE_DTYPES", "BadFrameError", "BadHandleError", "BadHeaderError", "BadTensorError",
    "BusyError", "RunCancelledError", "Client", "CoordinatorRestartedError", "UnauthorizedError", "ClusterSpec", "DTypeMismatchError", "Device",
    "DeviceUnavailable", "Envelope", "ErrorCode", "FunctionFailedError", "FunctionSpec", "Graph",
    "GraphError", "GraphSpec", "InteropError", "LayoutMismatchError", "LocalCluster",
    "ModelGraph", "OpInfo", "ParamInfo", "Params",
    "PluginUnavailable", "ProtocolError", "RunError", "RunResult", "ShapeMismatchError",
    "TensorInfo", "TensorSpec", "RunTimeoutError", "TooLargeError", "UnknownFunctionError",
    "UnknownKindError",
    "UnknownTargetError", "UnsupportedError", "VersionError", "WorkerLostError", "WorkerPlugin",
    "WorkerSpec", "aligned", "decode", "encode", "import_callable", "is_aligned", "keep_freed_memory",
    "parse_device", "spec", "to_numpy_dtype", "wire_dtype",
}


def test_all_is_sorted_and_pinned() -> None:
    names = interop_runtime.__all__
    # constants, then classes, then functions, each alphabetical (isort style)
    assert names == sorted(names, key=lambda n: (not n.isupper(), not n[0].isupper(), n))
    assert set(names) == PUBLIC and len(names) == len(PUBLIC)


def test_every_public_name_exists() -> None:
    for name in interop_runtime.__all__:
        assert hasattr(interop_runtime, name), name


def test_core_imports_no_framework() -> None:
    import subprocess
    import sys

    code = ("import sys, interop_runtime, interop_runtime.client, interop_runtime.coordinator, "
            "interop_runtime.worker, interop_runtime.cli; "
            "print(sorted(m for m in ('torch', 'tensorflow', 'onnxruntime', 'onnx', 'keras') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_run_timeout_is_a_builtin_timeout() -> None:
    err = interop_runtime.RunTimeoutError("run r passed its deadline", node="a")
    assert isinstance(err, TimeoutError)
    assert isinstance(err, interop_runtime.RunError)
    assert interop_runtime.ErrorCode("timeout") is err.code


def test_framework_plugins_import_only_the_public_surface() -> None:
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "workers"
    offenders = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.startswith("interop_runtime."):
                    offenders.append(f"{path.relative_to(root)}: from {node.module}")
                elif node.module == "interop_runtime":
                    offenders += [f"{path.relative_to(root)}: {a.name} is not public"
                                  for a in node.names
                                  if a.name not in PUBLIC | {"exportspec", "trainspec", "ops"}]
            elif isinstance(node, ast.Import):
                offenders += [f"{path.relative_to(root)}: import {a.name}" for a in node.names
                              if a.name.startswith("interop_runtime.")]
    assert not offenders, offenders


def test_every_error_code_has_its_own_class() -> None:
    """A code a peer sends comes back as its own typed error, never a lookup failure."""
    from interop_runtime.wire.errors import ErrorCode, InternalError, error_class, make_error

    for code in ErrorCode:
        cls = error_class(code.value)
        assert cls.code is code and (cls is not InternalError or code is ErrorCode.INTERNAL)
        assert make_error(code.value, "m").code is code
    assert error_class("no_such_code") is InternalError
