"""Models in running workers, from a client: load (or replace), unload and list them by
name and version (CONTROL load / unload to the coordinator, which sends them to the worker;
describe through it). A load's
reply comes after the coordinator has taken the worker's new functions and checked the
graphs that use them, so a graph run right after sees the new signatures."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from interop_runtime.wire.codec import Envelope
from interop_runtime.wire.errors import InteropError
from interop_runtime.wire.messages import ControlMsg, Header

DEFAULT_MODEL = "default"  # the model a worker was started with (worker/models.py)


class Models:
    def request(self, msg: Header, arrays: Mapping[str, Any] | None = None,
                timeout_s: float | None = None) -> Envelope:
        raise NotImplementedError

    def _hdr(self) -> dict[str, Any]:
        raise NotImplementedError

    def workers(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def load_model(self, worker: str, name: str, config: Mapping[str, Any] | str | Path, *,
                   version: str | int | None = None, plugin: str | None = None,
                   timeout_s: float | None = None) -> dict[str, Any]:
        """Load ``name`` into ``worker`` (replacing the version loaded, if any). ``config`` is
        the plugin's config, naming files only (a path alone means ``{model: path}``, the
        onnxruntime plugin's). Returns ``{model, version, functions, replaced}``: the
        model's functions are offered as ``NAME/FUNCTION``."""
        if isinstance(config, (str, Path)):
            config = {"model": str(Path(config).expanduser().resolve())}
        args: dict[str, Any] = {"model": name, "config": dict(config)}
        if version is not None:
            args["version"] = str(version)
        if plugin is not None:
            args["plugin"] = plugin
        msg = ControlMsg(**self._hdr(), action="load", args={"worker": worker, **args})
        return self.request(msg, timeout_s=timeout_s).msg.body

    def reload_model(self, worker: str, name: str = DEFAULT_MODEL, *,
                     timeout_s: float | None = None) -> dict[str, Any]:
        """Read a loaded model's files again (the start-up config, for ``default``)."""
        msg = ControlMsg(**self._hdr(), action="load", args={"worker": worker, "model": name})
        return self.request(msg, timeout_s=timeout_s).msg.body

    def unload_model(self, worker: str, name: str, *, timeout_s: float | None = None
                     ) -> dict[str, Any]:
        msg = ControlMsg(**self._hdr(), action="unload",
                         args={"worker": worker, "model": name})
        return self.request(msg, timeout_s=timeout_s).msg.body

    def models(self, worker: str | None = None) -> list[dict[str, Any]]:
        """The models loaded in ``worker`` (or in every live worker): ``{worker, name,
        version, plugin, source, functions}`` each."""
        names = [worker] if worker else [w["name"] for w in self.workers() if w["alive"]]
        out: list[dict[str, Any]] = []
        for name in names:
            try:
                body = self.request(ControlMsg(**self._hdr(), dst=name,
                                               action="describe")).msg.body
            except InteropError:
                if worker:
                    raise
                continue  # lost meanwhile: the others still answer
            out += [{"worker": name, **m} for m in body.get("models", [])]
        return out
