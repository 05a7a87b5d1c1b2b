"""JSON Schema of the wire header, generated from the wire models (msgspec structs).

``protocol/schema.json`` is this function's output, committed so that other
languages can validate headers without Python; ``tests/test_schema.py`` fails
when the two drift. Regenerate with ``python -m interop_runtime.wire.schema``.

The schema describes one header *after* msgpack decoding (a msgpack map is a
JSON object). What JSON Schema cannot say (frame indexes, byte lengths, the
version check before validation) is in ``protocol/SPEC.md``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from interop_runtime.wire.dtypes import DTYPE_NAMES
from interop_runtime.wire.errors import ErrorCode
from interop_runtime.wire.messages import (
    KINDS,
    MESSAGE_MODELS,
    PROTOCOL_VERSION,
    Message,
    TensorMeta,
)
from interop_runtime.wire.payloads import GraphSpec, WorkerPlan, shorthands_in_schema

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "protocol" / "schema.json"
DRAFT = "https://json-schema.org/draft/2020-12/schema"


def json_schema() -> dict[str, Any]:
    """The header schema for PROTOCOL_VERSION, with the free-form payloads
    (GRAPH ``spec``, CONTROL plan ``args.plan``) as extra definitions."""
    (body, _, _), defs = msgspec.json.schema_components(
        [Message, GraphSpec, WorkerPlan], ref_template="#/$defs/{name}")
    # exactly one kind fits a header: its "kind" selects the schema
    body = {"oneOf": body["anyOf"], "discriminator": body["discriminator"]}
    for ref in body["oneOf"]:
        model = defs[ref["$ref"].rsplit("/", 1)[1]]
        model["properties"]["kind"] = {"const": model["properties"]["kind"]["enum"][0]}
    shorthands_in_schema(defs)
    models: list[type] = [TensorMeta, *MESSAGE_MODELS]
    for model in models:  # unknown fields are ignored on the wire: only the models refuse them
        defs[model.__name__].pop("additionalProperties", None)
    return {
        "$schema": DRAFT,
        "$id": f"urn:interop-runtime:protocol:v{PROTOCOL_VERSION}",
        "title": f"interop-runtime message header, protocol version {PROTOCOL_VERSION}",
        "description": (
            "Frame 0 of every message, a msgpack map, shown as JSON. Check 'v' (must equal "
            "x-protocol-version, else error code 'version') and 'kind' (one of x-kinds, else "
            "'unknown_kind') before validating; unknown fields are ignored. GraphSpec is the "
            "'spec' of a GRAPH register/validate; WorkerPlan is 'args.plan' of a CONTROL plan. "
            "See protocol/SPEC.md."
        ),
        "x-protocol-version": PROTOCOL_VERSION,
        "x-kinds": list(KINDS),
        "x-dtypes": list(DTYPE_NAMES),
        "x-error-codes": [c.value for c in ErrorCode],
        **body,
        "$defs": dict(sorted(defs.items())),
    }


def render() -> str:
    """The exact text of protocol/schema.json."""
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the schema to protocol/schema.json, or to the path given as argument."""
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else SCHEMA_PATH
    path.write_text(render(), encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
