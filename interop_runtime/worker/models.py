"""A worker's models: the start-up model and those loaded later by name and version
(CONTROL ``load``, a model repository), offered to the host as one plugin.

The start-up model is called ``default`` and its functions keep their own names; every
other model's functions are offered as ``MODEL/FUNCTION`` (``resnet/run``): a slash,
because graph refs split ``node.port`` on the first dot and function names never appear
in refs. One version of a name is loaded at a time: loading a name again replaces it,
and the old model serves until the new one has loaded. The table holds ``MAX_MODELS``.

A config that comes over the wire names files only (SPEC section 13.5): a key or a value
that names Python code (``factory``, ``functions``, ``package.module:attr``) is refused
before any plugin sees it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from interop_runtime.wire.errors import (
    BusyError,
    FunctionFailedError,
    InteropError,
    UnauthorizedError,
    UnknownFunctionError,
    UnknownTargetError,
    UnsupportedError,
)
from interop_runtime.wire.messages import FunctionSpec
from interop_runtime.worker.model_roots import confine_paths
from interop_runtime.worker.plugin import WorkerPlugin, create_plugin

DEFAULT_MODEL = "default"
SEP = "/"
MAX_MODELS = 256
MODEL_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$")
VERSION_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
# config keys that name code or archives that run code when read (TorchScript, pickled
# torch.export programs): never taken from the wire
CODE_KEYS = frozenset({"factory", "functions", "callable", "module", "class", "torchscript",
                       "exported"})
IMPORT_PATH_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_][\w.]*$")
MAX_CONFIG_DEPTH = 8

Factory = Callable[[str, Mapping[str, Any], str], WorkerPlugin]  # (plugin, config, device)


@dataclass
class Model:
    name: str
    version: str
    plugin_name: str
    plugin: WorkerPlugin
    config: dict[str, Any] | None  # None: the start-up config (re-read through ``reload``)
    source: str  # "start-up", "wire" or "repository"
    functions: dict[str, FunctionSpec] = field(default_factory=dict)  # offered name -> spec
    local: dict[str, str] = field(default_factory=dict)  # offered name -> the plugin's name

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "plugin": self.plugin_name,
                "source": self.source, "functions": list(self.functions)}


def check_wire_config(value: Any, at: str = "config", depth: int = 0) -> None:
    """Refuse a config from the wire that names code (UnauthorizedError naming the key)."""
    if depth > MAX_CONFIG_DEPTH:
        raise UnauthorizedError(f"{at} is nested too deeply for a model config", field=at)
    if isinstance(value, Mapping):
        for key, sub in value.items():
            where = f"{at}.{key}"
            if str(key) in CODE_KEYS:
                raise UnauthorizedError(f"{where} names code, which is never loaded from the "
                                        f"wire; put it in the worker's own config", field=where)
            check_wire_config(sub, where, depth + 1)
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            check_wire_config(sub, f"{at}.{i}", depth + 1)
    elif isinstance(value, str) and IMPORT_PATH_RE.match(value):
        raise UnauthorizedError(f"{at} = {value!r} looks like a Python import path; a model "
                                f"config from the wire names files only", field=at)


def _check_names(name: str, version: str) -> None:
    if not MODEL_NAME_RE.match(name):
        raise UnsupportedError(f"model name {name!r} must match {MODEL_NAME_RE.pattern}",
                               field="args.model")
    if not VERSION_RE.match(version):
        raise UnsupportedError(f"model version {version!r} must match {VERSION_RE.pattern}",
                               field="args.version")


class ModelTable(WorkerPlugin):
    """Every model of one worker, as one plugin: calls go to the model that offers the
    function; parameters and the model graph are the default model's."""

    def __init__(self, plugin_name: str, device: str, default: WorkerPlugin | None, *,
                 reload: Callable[[], WorkerPlugin] | None = None,
                 max_models: int = MAX_MODELS, factory: Factory = create_plugin,
                 roots: tuple[Path, ...] = ()) -> None:
        self.plugin_name, self.device, self.max_models = plugin_name, device, max_models
        self.roots = roots  # where a config from the wire may name files (model_roots.py)
        self._reload, self._factory = reload, factory
        self.models: dict[str, Model] = {}
        self._routes: dict[str, tuple[Model, str]] = {}
        if default is not None:
            self._put(Model(DEFAULT_MODEL, "1", plugin_name, default, None, "start-up"))

    # --- the table --------------------------------------------------------------------------

    def functions(self) -> dict[str, FunctionSpec]:
        return {n: spec for m in self.models.values() for n, spec in m.functions.items()}

    def infos(self) -> list[dict[str, Any]]:
        return [m.info() for m in self.models.values()]

    def load_model(self, name: str, *, version: str | None = None, plugin: str | None = None,
                   config: Mapping[str, Any] | None = None, source: str = "wire"
                   ) -> tuple[Model, Model | None]:
        """Load (or replace) a model; returns it and the model it replaced. Without a config,
        a loaded model reads its own config again, and ``default`` the start-up config."""
        old = self.models.get(name)
        version = str(version) if version is not None else (old.version if old else "1")
        _check_names(name, version)
        if old is None and len(self.models) >= self.max_models:
            raise BusyError(f"{len(self.models)} models are loaded, the most this worker "
                            f"keeps; unload one first", field="args.model")
        plugin_name = plugin or (old.plugin_name if old else self.plugin_name)
        if config is None and old is not None and old.config is not None:
            config = old.config
        if config is None:
            if name != DEFAULT_MODEL or self._reload is None or plugin_name != self.plugin_name:
                raise UnsupportedError(f"model {name!r} needs a config (args.config)",
                                       field="args.config")
            loaded = self._build(name, self._reload)
        else:
            cfg = dict(config)
            if source == "wire":
                check_wire_config(config)
                cfg = confine_paths(cfg, self.roots)
            loaded = self._build(name, lambda: self._factory(plugin_name, cfg, self.device))
        model = Model(name, version, plugin_name, loaded, None if config is None else
                      dict(config), source)
        try:
            self._offer(model, replacing=old)
        except InteropError:
            loaded.close()
            raise
        if old is not None:
            self._drop(old)
        self._put(model)
        return model, old

    def unload_model(self, name: str) -> Model:
        model = self.models.get(name)
        if model is None:
            raise UnknownTargetError(f"no model named {name!r} is loaded (loaded: "
                                     f"{', '.join(self.models) or 'none'})", field="args.model")
        self._drop(model)
        return model

    def _build(self, name: str, make: Callable[[], WorkerPlugin]) -> WorkerPlugin:
        try:
            return make()
        except InteropError:
            raise
        except Exception as exc:  # a missing file, a bad model: typed, one line
            raise FunctionFailedError(f"model {name!r} failed to load: {type(exc).__name__}: "
                                      f"{exc}", field="args.config") from exc

    def _offer(self, model: Model, replacing: Model | None) -> None:
        """Name the model's functions, refusing a name another model already offers."""
        taken = {n for m in self.models.values() if m is not replacing for n in m.functions}
        for spec in model.plugin.describe():
            offered = spec.name if model.name == DEFAULT_MODEL else f"{model.name}{SEP}{spec.name}"
            if offered in taken:
                raise UnsupportedError(f"function {offered!r} of model {model.name!r} is already "
                                       f"offered by another model", field="args.model")
            model.functions[offered] = spec.model_copy(update={"name": offered})
            model.local[offered] = spec.name

    def _put(self, model: Model) -> None:
        if not model.functions:
            self._offer(model, replacing=None)
        self.models[model.name] = model
        for offered, local in model.local.items():
            self._routes[offered] = (model, local)

    def _drop(self, model: Model) -> None:
        self.models.pop(model.name, None)
        for offered in model.functions:
            self._routes.pop(offered, None)
        model.plugin.close()

    def _route(self, function: str) -> tuple[Model, str]:
        found = self._routes.get(function)
        if found is None:
            raise UnknownFunctionError(f"no loaded model offers {function!r}", field="function")
        return found

    def _default(self) -> WorkerPlugin:
        model = self.models.get(DEFAULT_MODEL)
        if model is None:
            raise UnsupportedError("this worker has no default model loaded")
        return model.plugin

    # --- the plugin contract, routed ----------------------------------------------------------

    def load(self, config: Mapping[str, Any], device: str) -> None:
        self.load_model(DEFAULT_MODEL, config=config, source="start-up")

    def describe(self) -> list[FunctionSpec]:
        return list(self.functions().values())

    def call(self, function: str, inputs: Mapping[str, np.ndarray], args: Mapping[str, Any]
             ) -> Mapping[str, Any]:
        model, local = self._route(function)
        return model.plugin.call(local, inputs, args)

    def mutates_params(self, function: str) -> bool:
        found = self._routes.get(function)
        return bool(found and found[0].plugin.mutates_params(found[1]))

    def output_layouts(self, function: str) -> Mapping[str, str]:
        model, local = self._route(function)
        return model.plugin.output_layouts(local)

    def get_params(self, names: Sequence[str] | None) -> dict[str, np.ndarray]:
        return self._default().get_params(names)

    def set_params(self, params: Mapping[str, np.ndarray]) -> None:
        self._default().set_params(params)

    def model_graph(self) -> dict[str, Any]:
        return self._default().model_graph()

    def device_memory(self) -> int | None:
        """The models' device memory, summed over those that can tell (heartbeat thread)."""
        values = [hook() for m in list(self.models.values())
                  if (hook := getattr(m.plugin, "device_memory", None)) is not None]
        ints = [v for v in values if isinstance(v, int) and not isinstance(v, bool)]
        return sum(ints) if ints else None

    def close(self) -> None:
        for model in list(self.models.values()):
            self._drop(model)


def model_request(table: ModelTable, action: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """CONTROL ``load`` / ``unload`` with args {model, version?, plugin?, config?}: the reply
    body. Without ``model`` they act on the default (start-up) model, as before v4."""
    name = args.get("model", DEFAULT_MODEL)
    version, plugin, config = args.get("version"), args.get("plugin"), args.get("config")
    for key, value, kinds in (("model", name, str), ("version", version, (str, int)),
                              ("plugin", plugin, str), ("config", config, dict)):
        if value is not None and (not isinstance(value, kinds) or isinstance(value, bool)):
            raise UnsupportedError(f"args.{key} has the wrong type", field=f"args.{key}")
    if action == "unload":
        gone = table.unload_model(name)
        return {"loaded": False, "model": gone.name, "version": gone.version}
    model, old = table.load_model(name, version=None if version is None else str(version),
                                  plugin=plugin, config=config, source="wire")
    return {"loaded": True, "model": model.name, "version": model.version,
            "functions": list(model.functions), "replaced": old.version if old else None}
