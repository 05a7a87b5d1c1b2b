"""The public surface is pinned: a change to it is a deliberate edit of this list."""

from __future__ import annotations

import interop_runtime

PUBLIC = {
    "PROTOCOL_VERSION", "WIRE_DTYPES", "BadFrameError", "BadHeaderError", "BadTensorError",
    "BusyError", "CancelledError_", "Client", "ClusterSpec", "DTypeMismatchError", "Device",
    "DeviceUnavailable", "Envelope", "ErrorCode", "FunctionFailedError", "FunctionSpec", "Graph",
    "GraphError", "GraphSpec", "InteropError", "LayoutMismatchError", "LocalCluster",
    "ModelGraph", "OpInfo", "ParamInfo", "Params",
    "PluginUnavailable", "ProtocolError", "RunError", "RunResult", "ShapeMismatchError",
    "TensorInfo", "TensorSpec", "TimeoutError_", "TooLargeError", "UnknownFunctionError",
    "UnknownKindError",
    "UnknownTargetError", "UnsupportedError", "VersionError", "WorkerLostError", "WorkerPlugin",
    "WorkerSpec", "aligned", "decode", "encode", "import_callable", "is_aligned",
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
