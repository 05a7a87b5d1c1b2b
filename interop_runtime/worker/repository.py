"""A watched model folder (``interop worker start --model-repository DIR``), as Triton has.

Layout: ``DIR/NAME.onnx`` (version 1) or ``DIR/NAME/VERSION/model.onnx`` (the highest
version wins; numeric versions sort as numbers). Each model gets the config
``{model: PATH}`` for the worker's plugin (what the onnxruntime plugin reads). A scan,
once a second from the worker's loop, loads new models, replaces changed ones (size or
mtime) and unloads removed ones; a file is loaded once it looked the same on two scans,
so a copy in progress is not read half-written. A model that fails to load is logged
once and tried again only when its file changes.
"""

from __future__ import annotations

import logging
from pathlib import Path

from interop_runtime.wire.errors import InteropError
from interop_runtime.worker.models import DEFAULT_MODEL, MODEL_NAME_RE, VERSION_RE, ModelTable

log = logging.getLogger("interop.worker")

SCAN_EVERY_S = 1.0
FILE = "model.onnx"
Stamp = tuple[str, int, int]  # path, size, mtime_ns


def _version_key(version: str) -> tuple[int, int | str]:
    return (1, int(version)) if version.isdigit() else (0, version)


def scan(root: Path, limit: int) -> dict[str, tuple[str, Stamp]]:
    """name -> (version, stamp) of the models in ``root``, at most ``limit`` of them."""
    found: dict[str, tuple[str, Stamp]] = {}
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return found
    for entry in entries:
        if len(found) >= limit:
            break
        name, version, path = entry.stem, "1", entry
        if entry.is_dir():
            versions = [v for v in entry.iterdir() if (v / FILE).is_file()
                        and VERSION_RE.match(v.name)] if MODEL_NAME_RE.match(entry.name) else []
            if not versions:
                continue
            best = max(versions, key=lambda v: _version_key(v.name))
            name, version, path = entry.name, best.name, best / FILE
        elif entry.suffix != ".onnx":
            continue
        if not MODEL_NAME_RE.match(name) or name == DEFAULT_MODEL:
            continue
        try:
            st = path.stat()
        except OSError:
            continue
        found[name] = (version, (str(path), st.st_size, st.st_mtime_ns))
    return found


class ModelRepository:
    def __init__(self, root: str | Path, table: ModelTable) -> None:
        self.root, self.table = Path(root).expanduser(), table
        self.loaded: dict[str, tuple[str, Stamp]] = {}  # what we loaded from the folder
        self.seen: dict[str, tuple[str, Stamp]] = {}  # the previous scan
        self.failed: dict[str, tuple[str, Stamp]] = {}  # tried and failed, at that stamp
        self.next_scan = 0.0

    def poll(self, now: float) -> bool:
        """Scan when due; True when the worker's models changed."""
        if now < self.next_scan:
            return False
        self.next_scan = now + SCAN_EVERY_S
        room = self.table.max_models - len(self.table.models) + len(self.loaded)
        current = scan(self.root, max(room, 0))
        stable = {n: v for n, v in current.items() if self.seen.get(n) == v}
        self.seen = current
        changed = False
        for name in [n for n in self.loaded if n not in current]:
            self.loaded.pop(name)
            if name in self.table.models:
                self.table.unload_model(name)
                log.info("model %s unloaded: it left %s", name, self.root)
                changed = True
        for name, entry in stable.items():
            if self.loaded.get(name) == entry or self.failed.get(name) == entry:
                continue
            version, (path, _, _) = entry
            try:
                self.table.load_model(name, version=version, config={"model": path},
                                      source="repository")
            except InteropError as exc:
                self.failed[name] = entry
                self.loaded.pop(name, None)
                log.warning("model %s from %s not loaded: %s", name, path, exc.message)
                continue
            self.failed.pop(name, None)
            self.loaded[name] = entry
            log.info("model %s version %s loaded from %s", name, version, path)
            changed = True
        for name in [n for n in self.failed if n not in current]:
            del self.failed[name]
        return changed
