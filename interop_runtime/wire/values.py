"""Free-form header values (CONTROL ``args``, GRAPH ``spec``, REPLY ``body``, REGISTER
``info``) are checked before anything else touches them: plain JSON-like data only.

msgpack can carry ``bin`` and ``ext`` values and nest without limit; JSON cannot, and the
store, the logs and other languages' peers must never meet them. The walk is iterative,
so a 1,000-deep value cannot exhaust the Python stack.
"""

from __future__ import annotations

import math
from typing import Any

from interop_runtime.wire.errors import BadHeaderError

MAX_DEPTH = 32  # levels of arrays and maps inside one free-form value
MAX_ITEMS = 100_000  # scalars, arrays and maps in one free-form value


def check_plain(value: Any, where: str, *, finite: bool = False,
                max_items: int = MAX_ITEMS) -> None:
    """Raise ``BadHeaderError`` (field: the path of the fault) unless ``value`` is nil, a
    bool, an int, a float, a str, or arrays and string-keyed maps of those, at most
    MAX_DEPTH deep. ``finite`` also refuses NaN and infinities (JSON has none)."""
    stack: list[tuple[Any, str, int]] = [(value, where, 0)]
    seen = 0
    while stack:
        item, path, depth = stack.pop()
        seen += 1
        if seen > max_items:
            raise BadHeaderError(f"{where} holds more than {max_items} values", field=where)
        if item is None or isinstance(item, (bool, int, str)):
            continue
        if isinstance(item, float):
            if finite and not math.isfinite(item):
                raise BadHeaderError(f"{path} is {item}: only finite numbers are allowed here",
                                     field=path)
            continue
        if isinstance(item, (list, dict)):
            if depth >= MAX_DEPTH:
                raise BadHeaderError(f"{path} nests deeper than {MAX_DEPTH} levels", field=path)
            if isinstance(item, list):
                stack.extend((v, f"{path}.{i}", depth + 1) for i, v in enumerate(item))
            else:
                for k, v in item.items():
                    if not isinstance(k, str):
                        raise BadHeaderError(f"{path} has a key that is not a string", field=path)
                    stack.append((v, f"{path}.{k}", depth + 1))
            continue
        kind = "bin" if isinstance(item, (bytes, bytearray, memoryview)) else "ext"
        raise BadHeaderError(f"{path} is a msgpack {kind} value; headers carry only nil, bool, "
                             f"int, float, str, arrays and maps (bytes travel as tensors)",
                             field=path)
