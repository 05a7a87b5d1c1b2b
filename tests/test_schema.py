"""protocol/schema.json stays what the pydantic models say, and the golden headers obey it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from interop_runtime.wire.messages import KINDS, PROTOCOL_VERSION
from interop_runtime.wire.schema import SCHEMA_PATH, json_schema

GOLDEN = Path(__file__).resolve().parent.parent / "protocol" / "golden"
VALID = sorted(GOLDEN.glob("*.json"))


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def _sub(schema: dict[str, Any], name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator({"$ref": f"#/$defs/{name}", "$defs": schema["$defs"]})


def test_schema_file_matches_the_models(schema: dict[str, Any]) -> None:
    generated = json.loads(json.dumps(json_schema()))  # tuples -> lists, as in the file
    assert schema == generated, (
        "protocol/schema.json is out of date with interop_runtime/wire/; "
        "run `.venv/bin/python -m interop_runtime.wire.schema` and commit the result")


def test_schema_is_valid_draft_2020_12(schema: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["x-protocol-version"] == PROTOCOL_VERSION
    assert schema["$id"].endswith(f":v{PROTOCOL_VERSION}")
    assert schema["x-kinds"] == list(KINDS)


def test_every_kind_requires_kind_v_and_id(schema: dict[str, Any]) -> None:
    for kind, ref in schema["discriminator"]["mapping"].items():
        model = schema["$defs"][ref.rsplit("/", 1)[1]]
        assert {"kind", "v", "id"} <= set(model["required"]), kind
        assert model["properties"]["kind"]["const"] == kind
    assert set(schema["discriminator"]["mapping"]) == set(KINDS)


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_golden_header_validates(schema: dict[str, Any], path: Path) -> None:
    header = json.loads(path.read_text(encoding="utf-8"))["header"]
    jsonschema.Draft202012Validator(schema).validate(header)
    # the free-form payloads that have a schema of their own
    if header["kind"] == "graph" and header.get("spec"):
        _sub(schema, "GraphSpec").validate(header["spec"])
    if header["kind"] == "control" and header["action"] == "plan":
        _sub(schema, "WorkerPlan").validate(header["args"]["plan"])


@pytest.mark.parametrize("header", [
    {"v": 1, "id": "x", "graph": "g", "run": "r", "node": "n"},  # no kind
    {"kind": "data", "v": 1, "id": "x", "run": "r", "node": "n"},  # no graph
    {"kind": "data", "v": 1, "id": "", "graph": "g", "run": "r", "node": "n"},  # empty id
    {"kind": "data", "v": 1, "id": "x", "graph": "g", "run": "r", "node": "n",
     "tensors": [{"name": "a", "dtype": "float8", "shape": [1], "frame": 1}]},
    {"kind": "data", "v": 1, "id": "x", "graph": "g", "run": "r", "node": "n",
     "tensors": [{"name": "a", "dtype": "int8", "shape": [-1], "frame": 1}]},
    {"kind": "heartbeat", "v": 1, "id": "x", "name": "w", "busy": "yes"},
], ids=["no-kind", "no-graph", "empty-id", "bad-dtype", "negative-dim", "string-bool"])
def test_schema_rejects_bad_headers(schema: dict[str, Any], header: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate(header)
