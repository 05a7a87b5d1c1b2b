"""The base of every wire model: a ``msgspec.Struct``, validated when it is decoded.

msgspec checks a header against its types and constraints in C: ~5x less CPU than pydantic
per message when the process wakes with cold caches (every hop of a run), and ~4 MiB of
memory instead of pydantic's ~18 per daemon (issue 10, goals 1 and 6). A struct built in
Python is not checked; everything a peer sends is, in the codec (wire/codec.py) and in
``model_validate``.

The few ``model_*`` methods below keep the names the rest of the code base (and the plugins)
use for the client's pydantic configs, with the same meaning.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import msgspec
import msgspec.inspect as mi

WireValidationError = msgspec.ValidationError  # what model_validate raises

M = TypeVar("M", bound="WireModel")


# model class -> [(field, has a default, the default)], in declared order: for model_dump
_FIELDS: dict[type, list[tuple[str, bool, Any]]] = {}


def _fields(cls: type[WireModel]) -> list[tuple[str, bool, Any]]:
    fields = _FIELDS.get(cls)
    if fields is None:
        fields = _FIELDS[cls] = [
            (f.name, f.default is not msgspec.NODEFAULT
             or f.default_factory is not msgspec.NODEFAULT,
             f.default if f.default is not msgspec.NODEFAULT else f.default_factory()
             if f.default_factory is not msgspec.NODEFAULT else None)
            for f in msgspec.structs.fields(cls)]
    return fields


class WireModel(msgspec.Struct, kw_only=True):

    @classmethod
    def model_validate(cls: type[M], obj: Any) -> M:
        """``obj`` (a map, or a model) checked and converted; WireValidationError if it
        does not fit. Strict, as the codec: ``"3"`` is not an integer (an int is a float)."""
        if isinstance(obj, cls):
            return obj
        return msgspec.convert(obj, cls, strict=True, from_attributes=True)

    def model_dump(self, *, mode: str = "python", exclude_none: bool = False,
                   exclude_defaults: bool = False, include: Iterable[str] | None = None
                   ) -> dict[str, Any]:
        """Plain values, fields in declared order (``kind`` first); ``exclude_none`` leaves
        out fields that are None (not None values inside free maps), as pydantic does.
        ``mode`` is there for pydantic's signature: the values are plain either way."""
        if exclude_none and not exclude_defaults:  # the codec's case: in C, then a plan
            out = without_nones(self)
        else:  # a walk in Python, which also makes a tuple built in Python a list
            out = _dump(self, exclude_none, exclude_defaults)
        assert isinstance(out, dict)
        if include is not None:
            keep = set(include)
            out = {k: v for k, v in out.items() if k in keep}
        return out

    def model_dump_json(self) -> str:
        return msgspec.json.encode(self.model_dump()).decode()

    def model_copy(self: M, *, update: Mapping[str, Any] | None = None) -> M:
        """A shallow copy with ``update`` applied (not checked, as in pydantic)."""
        return msgspec.structs.replace(self, **(update or {}))


# --- nil fields out, fast: what the canonical encoding needs for every header ---------------
# msgspec.to_builtins turns a model into plain values in C, nils included; a plan per model
# class, made once from msgspec's own type information, then drops the nil *fields* of the
# typed maps it passes (not nils inside free-form maps, which the spec keeps).

Strip = Callable[[Any], None]
_PLANS: dict[type, Strip] = {}  # model class -> its plan


def _stripper(t: mi.Type) -> Strip | None:
    if isinstance(t, mi.StructType):
        return _struct_stripper(t.cls)
    if isinstance(t, mi.UnionType):
        subs = [s for s in (_stripper(m) for m in t.types) if s is not None]
        if not subs:
            return None
        one = subs[0]
        return lambda v: one(v) if isinstance(v, dict) else None
    if isinstance(t, (mi.ListType, mi.VarTupleType)):
        item = _stripper(t.item_type)
        if item is None:
            return None
        def each(v: Any) -> None:
            for x in v:
                item(x)
        return each
    if isinstance(t, mi.DictType):
        value = _stripper(t.value_type)
        if value is None:
            return None
        def values(v: Any) -> None:
            for x in v.values():
                value(x)
        return values
    return None


def _struct_stripper(cls: type) -> Strip:
    plan = _PLANS.get(cls)
    if plan is not None:
        return plan
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    nullable = tuple(f.encode_name for f in info.fields
                     if isinstance(f.type, mi.NoneType) or (isinstance(f.type, mi.UnionType)
                     and any(isinstance(m, mi.NoneType) for m in f.type.types)))
    def strip(d: dict[str, Any]) -> None:
        for name in nullable:
            if d.get(name, 0) is None:
                del d[name]
        for name, sub in nested:
            v = d.get(name)
            if v is not None:
                sub(v)
    _PLANS[cls] = strip  # before the fields: a model may hold its own kind
    nested = [(f.encode_name, s) for f in info.fields if (s := _stripper(f.type)) is not None]
    return strip


def without_nones(msg: Any) -> dict[str, Any]:
    """``msg`` as plain values without its nil fields, at every level of typed maps."""
    d = msgspec.to_builtins(msg)
    _struct_stripper(type(msg))(d)
    return d


def _dump(value: Any, exclude_none: bool, exclude_defaults: bool) -> Any:
    if isinstance(value, WireModel):
        out: dict[str, Any] = {}
        config = value.__struct_config__
        if config.tag_field is not None:
            out[config.tag_field] = config.tag
        for name, has_default, default in _fields(type(value)):
            v = getattr(value, name)
            if (v is None and exclude_none) or (exclude_defaults and has_default
                                                and v == default):
                continue
            out[name] = _dump(v, exclude_none, exclude_defaults)
        return out
    if isinstance(value, (list, tuple)):
        return [_dump(v, exclude_none, exclude_defaults) for v in value]
    if isinstance(value, dict):
        return {k: _dump(v, exclude_none, exclude_defaults) for k, v in value.items()}
    return value


_AT = re.compile(r" - at `(?P<key>key` in `)?\$(?P<path>[^`]*)`$")
_STEP = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")
_FIELD = re.compile(r"^Object (?:missing required|contains unknown) field `([^`]+)`")


def names_a_field(problem: str) -> bool:
    """Whether an error names its field in its words (missing, unknown), not its path."""
    return _FIELD.match(problem) is not None


def describe(exc: msgspec.ValidationError) -> tuple[str, str]:
    """``error_location`` in the words config errors use: "missing key", "unknown key"."""
    where, said = error_location(exc)
    if names_a_field(said):
        said = "missing key" if said.startswith("Object missing") else "unknown key"
    return where, said


def error_location(exc: msgspec.ValidationError) -> tuple[str, str]:
    """Where a validation error is, as a dotted path (``tensors.0.shape.1``; ``*`` for a map
    key msgspec does not name), and what is wrong there."""
    text = str(exc)
    m = _AT.search(text)
    problem, path = (text[:m.start()], m.group("path")) if m else (text, "")
    steps = ["*" if index == "..." else name or index for name, index in _STEP.findall(path)]
    field = _FIELD.match(problem)
    if field:
        steps.append(field.group(1))
    elif m and m.group("key"):
        problem = f"a key: {problem}"
    return ".".join(steps), problem
