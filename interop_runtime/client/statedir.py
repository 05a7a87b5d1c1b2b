"""Where a cluster started by ``interop up`` or ``interop launch`` keeps its logs, keys and
``cluster.json``, so that other commands (``interop logs``) find them.

Layout: ``$XDG_STATE_HOME/interop/<cluster>/<timestamp>/`` (default
``~/.local/state/interop/...``), one folder per start, kept after it stops, and
``<cluster>/latest`` a symlink to the newest one (also when ``--log-dir`` put it elsewhere).
``cluster.json`` in a state folder holds the address, the pids, the log paths and the key
paths of that cluster.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

CLUSTER_JSON = "cluster.json"
LATEST = "latest"


def state_root() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "interop"


def cluster_name(name: str | None, path: Path) -> str:
    """The cluster file's ``name``, else its stem; ``cluster.yaml`` takes its folder's name
    (``examples/diamond/cluster.yaml`` is ``diamond``), so that examples do not collide."""
    raw = name or (path.resolve().parent.name if path.stem == "cluster" else path.stem)
    return re.sub(r"[^A-Za-z0-9._-]", "_", raw).strip(".") or "cluster"


def new_state_dir(name: str) -> Path:
    """A fresh folder for one start of cluster ``name``."""
    base = state_root() / name
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        folder = base / (stamp if n == 0 else f"{stamp}-{n}")
        try:
            folder.mkdir(parents=True, mode=0o700)
            return folder
        except FileExistsError:
            continue
    raise FileExistsError(f"too many state folders for {stamp} in {base}")


def point_latest(name: str, folder: Path) -> None:
    """Make ``<root>/<name>/latest`` point at ``folder`` (atomically: rename over it)."""
    link = state_root() / name / LATEST
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f".{LATEST}.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(folder.resolve(), target_is_directory=True)
    os.replace(tmp, link)


def write_cluster_json(folder: Path, info: dict[str, Any]) -> Path:
    path = folder / CLUSTER_JSON
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def read_cluster_json(folder: Path) -> dict[str, Any] | None:
    try:
        info = json.loads((folder / CLUSTER_JSON).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _running(folder: Path) -> bool:
    info = read_cluster_json(folder) or {}
    pid = info.get("pid")
    if not isinstance(pid, int) or info.get("stopped"):
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def find_cluster_state(name: str | None = None) -> Path | None:
    """The state folder of cluster ``name``'s latest start; with no name, the latest start of
    a cluster whose ``interop up`` still runs, else the latest of any. None when none."""
    root = state_root()
    if name is not None:
        link = root / name / LATEST
        return link.resolve() if link.is_dir() else None
    folders = [p.resolve() for p in root.glob(f"*/{LATEST}") if p.is_dir()]
    if not folders:
        return None
    running = [f for f in folders if _running(f)]
    return max(running or folders, key=_started)


def _started(folder: Path) -> float:
    started = (read_cluster_json(folder) or {}).get("started")
    return float(started) if isinstance(started, int | float) else folder.stat().st_mtime
