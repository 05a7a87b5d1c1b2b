"""The worker plugin contract and its discovery through entry points.

A plugin hosts one model in one worker process. The contract is small:

    load(config, device)        build or read the model; raise ImportError if the
                                framework is missing (``install_hint`` says what to get;
                                only a missing ``frameworks`` module gets that hint)
    describe() -> [FunctionSpec] the functions with input/output names, dtypes, shapes
    call(function, inputs, args) -> {output name: array}
    get_params(names) / set_params(params)   optional parameter hooks
    close()                     optional

Plugins register under the entry point group ``interop_runtime.plugins``; the
built-in NumPy plugin is registered there exactly as a third party's would be.
"""

from __future__ import annotations

import importlib
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import entry_points
from typing import Any, ClassVar

import numpy as np

from interop_runtime.wire.errors import UnknownTargetError, UnsupportedError
from interop_runtime.wire.messages import FunctionSpec

ENTRY_POINT_GROUP = "interop_runtime.plugins"


class PluginUnavailable(RuntimeError):
    """The plugin's framework is not installed; the message says what to install."""


class WorkerPlugin(ABC):
    #: what to install when load() raises ImportError, e.g. "pip install torch==2.13.0"
    install_hint: ClassVar[str] = ""
    #: the top-level modules of the framework (default: the packages install_hint names);
    #: only their absence gets the install hint, any other ImportError is shown as it is
    frameworks: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def load(self, config: Mapping[str, Any], device: str) -> None: ...

    @abstractmethod
    def describe(self) -> list[FunctionSpec]: ...

    @abstractmethod
    def call(self, function: str, inputs: Mapping[str, np.ndarray], args: Mapping[str, Any]
             ) -> Mapping[str, Any]: ...

    def get_params(self, names: Sequence[str] | None) -> dict[str, np.ndarray]:
        raise UnsupportedError(f"plugin {type(self).__name__} has no parameters")

    def set_params(self, params: Mapping[str, np.ndarray]) -> None:
        raise UnsupportedError(f"plugin {type(self).__name__} has no parameters")

    def mutates_params(self, function: str) -> bool:
        """True for functions that change the parameters (a training step): the worker
        then bumps its parameter version, so readers and versioned writers notice."""
        return False

    def model_graph(self) -> dict[str, Any]:
        """The model as a framework-neutral graph (see interop_runtime.ops.compat.modelgraph), optional."""
        raise UnsupportedError(f"plugin {type(self).__name__} cannot describe its model graph")

    def output_layouts(self, function: str) -> Mapping[str, str]:
        """Layout hints for a function's outputs, by name (optional)."""
        return {}

    def close(self) -> None:
        return None


def import_callable(path: str, *, what: str = "callable") -> Callable[..., Any]:
    """'package.module:function' from a worker's own config (never from the wire)."""
    module, _, attr = path.partition(":")
    if not module or not attr:
        raise ValueError(f"{what} {path!r} must look like 'package.module:function'")
    try:
        obj: Any = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
            raise ModuleNotFoundError(f"cannot import {path!r}: no module named {exc.name!r}",
                                      name=exc.name, path=path) from exc
        raise  # the module exists but needs another one: its own error says which
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ImportError(f"cannot import {attr!r} from {module}", name=module,
                              path=path) from None
    if not callable(obj):
        raise TypeError(f"{what} {path} is not callable")
    return obj


def available_plugins() -> dict[str, str]:
    """Plugin name -> 'module:attr' for every installed plugin."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_plugin_class(name: str) -> type[WorkerPlugin]:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            try:
                cls = ep.load()
            except ImportError as exc:
                raise PluginUnavailable(
                    f"plugin {name!r} ({ep.value}) cannot be imported: {exc}") from exc
            if not (isinstance(cls, type) and issubclass(cls, WorkerPlugin)):
                raise TypeError(f"entry point {name!r} -> {ep.value} is not a WorkerPlugin")
            return cls
    known = ", ".join(sorted(available_plugins())) or "none"
    raise UnknownTargetError(f"no worker plugin named {name!r} is installed (installed: {known})",
                             field="plugin")


def framework_modules(cls: type[WorkerPlugin]) -> set[str]:
    """The plugin's framework modules: ``frameworks``, or the packages after "pip install"
    in its hint (``torch==2.13.0`` -> torch, ``tensorflow-cpu`` -> tensorflow)."""
    if cls.frameworks:
        return set(cls.frameworks)
    words = cls.install_hint.partition("pip install")[2].split("(")[0].split()
    names = {re.split(r"[=<>~!\[;]", w)[0] for w in words if not w.startswith("-")}
    return {m for n in names if n for m in (n.replace("-", "_"), n.split("-")[0])}


def _where(config: Any, path: str, at: tuple[str, ...] = ()) -> tuple[str, ...] | None:
    """The config key holding ``path`` (a callable's import path), depth-first."""
    if config == path:
        return at
    if len(at) < 8 and isinstance(config, Mapping | list):
        items = config.items() if isinstance(config, Mapping) else enumerate(config)
        for k, v in items:
            found = _where(v, path, (*at, str(k)))
            if found is not None:
                return found
    return None


def _import_failure(name: str, exc: ImportError, config: Mapping[str, Any]) -> ImportError:
    """The real ImportError, told with where the config names what failed to import."""
    where = _where(config, exc.path) if exc.path else None
    if where and where[0] == "functions" and len(where) >= 2:
        place = f" (function {where[1]!r} in the worker config)"
    elif where:
        place = f" ({'.'.join(where)} in the worker config)"
    else:
        place = ""
    return ImportError(f"{exc}{place}" if place else f"plugin {name!r}: {exc}",
                       name=exc.name)


def create_plugin(name: str, config: Mapping[str, Any], device: str) -> WorkerPlugin:
    """Find, instantiate and load a plugin. A missing framework is PluginUnavailable, which
    names what to install; any other ImportError (a typo in a callable path, a missing
    helper package) is raised as it is, with the config key that named it."""
    cls = load_plugin_class(name)
    plugin = cls()
    try:
        plugin.load(config, device)
    except ImportError as exc:
        if exc.name is not None and exc.name not in framework_modules(cls):
            raise _import_failure(name, exc, config) from exc
        hint = cls.install_hint or f"the package that provides {exc.name or 'it'}"
        raise PluginUnavailable(
            f"plugin {name!r} needs a framework that is not installed ({exc}). Install: {hint}"
        ) from exc
    return plugin
