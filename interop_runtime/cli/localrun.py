"""A local cluster for `interop up` and `interop launch`: started in a kept state folder,
shown while it loads, recorded in ``cluster.json``, stopped whatever happens."""

# no `from __future__ import annotations`: kept like the other CLI modules
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interop_runtime.cli.common import console, fail
from interop_runtime.cli.progress import ClusterView, write_env
from interop_runtime.client.cluster import ClusterSpec, LocalCluster
from interop_runtime.client.statedir import (
    cluster_name,
    new_state_dir,
    point_latest,
    write_cluster_json,
)
from interop_runtime.client.supervise import ClusterStartError


@dataclass
class Session:
    cluster: LocalCluster
    view: ClusterView
    folder: Path
    info: dict[str, Any]

    def save(self, **extra: Any) -> None:
        """Rewrite ``cluster.json`` (the pids change when a worker is restarted)."""
        self.info.update(extra)
        write_cluster_json(self.folder, {**self.info, **self.cluster.describe()})


@contextmanager
def local_cluster(cluster_file: Path, spec: ClusterSpec, log_dir: Path | None
                  ) -> Iterator[Session]:
    """Start the cluster of ``spec``; a process that does not start is one line and exit 1.
    Logs, keys and ``cluster.json`` go to ``log_dir`` or a fresh state folder, kept."""
    name = cluster_name(spec.name, cluster_file)
    folder = log_dir if log_dir is not None else new_state_dir(name)
    folder.mkdir(parents=True, exist_ok=True)
    point_latest(name, folder)
    view = ClusterView(console, [w.name for w in spec.workers])
    lc = LocalCluster(spec, log_dir=str(folder), on_event=view.handle)
    session = Session(lc, view, folder, {"name": name, "cluster_file": str(cluster_file.resolve()),
                                         "pid": os.getpid(), "started": time.time(),
                                         "state": "starting"})
    session.save()
    write_env(folder, lc.connection())  # now, so that `source .../latest/env.sh` works early
    console.print(f"starting cluster {name}: coordinator at {lc.address}, "
                  f"{len(spec.workers)} workers; logs in {folder}", soft_wrap=True,
                  highlight=False)
    try:
        try:
            with view.loading():
                lc.start()
        except ClusterStartError as exc:
            session.save(state="failed", error=exc.message)
            fail(exc.message)
        session.save(state="running")
        yield session
    finally:
        lc.stop()
        session.save(state=session.info["state"] if session.info["state"] == "failed"
                     else "stopped", stopped=True)
