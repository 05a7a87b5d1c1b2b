"""What must survive a coordinator restart, in SQLite: graphs, run records, uncollected results.

WAL mode with synchronous=NORMAL: a commit survives the coordinator process dying
(not a power cut) and costs no fsync on the run path. The daemon commits once per
loop iteration, so a burst of runs shares one commit.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

import msgpack
import numpy as np

from interop_runtime.wire.dtypes import to_numpy_dtype, wire_dtype

SCHEMA = """
CREATE TABLE IF NOT EXISTS graphs (
    name TEXT PRIMARY KEY, version INTEGER NOT NULL, spec TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run TEXT PRIMARY KEY, graph TEXT NOT NULL, state TEXT NOT NULL, started REAL NOT NULL,
    finished REAL, error TEXT, timings TEXT);
CREATE TABLE IF NOT EXISTS results (run TEXT PRIMARY KEY, tensors BLOB NOT NULL, created REAL NOT NULL);
"""


def pack_tensors(arrays: dict[str, np.ndarray]) -> bytes:
    return msgpack.packb({n: {"dtype": wire_dtype(a.dtype), "shape": list(a.shape),
                              "data": np.ascontiguousarray(a).tobytes()}
                          for n, a in arrays.items()}, use_bin_type=True)


def unpack_tensors(blob: bytes) -> dict[str, np.ndarray]:
    raw = msgpack.unpackb(blob, raw=False)
    return {n: np.frombuffer(t["data"], dtype=to_numpy_dtype(t["dtype"])).reshape(t["shape"])
            for n, t in raw.items()}


class Store:
    def __init__(self, path: str = ":memory:") -> None:
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self.db.execute("BEGIN")
        self.dirty = False

    def commit(self) -> None:
        if self.dirty:
            self.db.execute("COMMIT")
            self.db.execute("BEGIN")
            self.dirty = False

    def _exec(self, sql: str, args: tuple[Any, ...]) -> None:
        self.db.execute(sql, args)
        self.dirty = True

    def save_graph(self, name: str, version: int, spec: dict[str, Any]) -> None:
        self._exec("INSERT OR REPLACE INTO graphs VALUES (?, ?, ?, ?)",
                   (name, version, json.dumps(spec), time.time()))

    def drop_graph(self, name: str) -> None:
        self._exec("DELETE FROM graphs WHERE name = ?", (name,))

    def load_graphs(self) -> list[tuple[str, int, dict[str, Any]]]:
        rows = self.db.execute("SELECT name, version, spec FROM graphs").fetchall()
        return [(n, v, json.loads(s)) for n, v, s in rows]

    def run_started(self, run: str, graph: str, started: float) -> None:
        self._exec("INSERT OR REPLACE INTO runs (run, graph, state, started) VALUES (?, ?, ?, ?)",
                   (run, graph, "running", started))

    def run_finished(self, run: str, state: str, error: dict[str, Any] | None = None,
                     timings: dict[str, Any] | None = None) -> None:
        self._exec("UPDATE runs SET state = ?, finished = ?, error = ?, timings = ? WHERE run = ?",
                   (state, time.time(), json.dumps(error) if error else None,
                    json.dumps(timings) if timings else None, run))

    def runs(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT run, graph, state, started, finished, error FROM runs "
                               "ORDER BY started DESC LIMIT ?", (limit,)).fetchall()
        return [{"run": r, "graph": g, "state": s, "started": st, "finished": f,
                 "error": json.loads(e) if e else None} for r, g, s, st, f, e in rows]

    def run_state(self, run: str) -> str | None:
        row = self.db.execute("SELECT state FROM runs WHERE run = ?", (run,)).fetchone()
        return row[0] if row else None

    def run_error(self, run: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT error FROM runs WHERE run = ?", (run,)).fetchone()
        return json.loads(row[0]) if row and row[0] else None

    def save_result(self, run: str, arrays: dict[str, np.ndarray]) -> None:
        self._exec("INSERT OR REPLACE INTO results VALUES (?, ?, ?)",
                   (run, pack_tensors(arrays), time.time()))

    def take_result(self, run: str) -> dict[str, np.ndarray] | None:
        row = self.db.execute("SELECT tensors FROM results WHERE run = ?", (run,)).fetchone()
        if row is None:
            return None
        self._exec("DELETE FROM results WHERE run = ?", (run,))
        return unpack_tensors(row[0])

    def mark_interrupted(self) -> int:
        """At start-up: runs that were in flight when the last coordinator stopped."""
        cur = self.db.execute("UPDATE runs SET state = 'interrupted', finished = ? "
                              "WHERE state = 'running'", (time.time(),))
        self.dirty = True
        return cur.rowcount

    def close(self) -> None:
        self.commit()
        self.db.execute("COMMIT")
        self.db.close()
