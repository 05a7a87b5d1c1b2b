"""What must survive a coordinator restart, in SQLite: graphs, run records, uncollected results.

WAL mode with synchronous=NORMAL: a commit survives the coordinator process dying
(not a power cut) and costs no fsync on the run path. The daemon commits once per
loop iteration, so a burst of runs shares one commit; a write marked ``urgent`` (a
detached run about to be told "running") is committed before anything is sent.

Everything here is bounded: uncollected results by count and bytes (the oldest go
first, with a log line), run records by count.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from typing import TYPE_CHECKING, Any

import msgpack

from interop_runtime.wire.dtypes import STRING, to_numpy_dtype, wire_dtype
from interop_runtime.wire.strings import decode_strings, encode_strings

if TYPE_CHECKING:
    import numpy as np

SCHEMA = """
CREATE TABLE IF NOT EXISTS graphs (
    name TEXT PRIMARY KEY, version INTEGER NOT NULL, spec TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run TEXT PRIMARY KEY, graph TEXT NOT NULL, state TEXT NOT NULL, started REAL NOT NULL,
    finished REAL, error TEXT, timings TEXT);
CREATE TABLE IF NOT EXISTS results (run TEXT PRIMARY KEY, tensors BLOB NOT NULL, created REAL NOT NULL);
"""

log = logging.getLogger("interop.coordinator")

MAX_RESULTS = 10_000
MAX_RESULT_BYTES = 4 << 30
MAX_RUN_RECORDS = 100_000


def _tensor_bytes(name: str, a: np.ndarray) -> bytes:
    # strings are kept in their wire layout: tobytes() of an object array is pointers
    import numpy as np

    if wire_dtype(a.dtype) == STRING:
        return encode_strings(a, name)
    return np.ascontiguousarray(a).tobytes()


def pack_tensors(arrays: dict[str, np.ndarray]) -> bytes:
    return msgpack.packb({n: {"dtype": wire_dtype(a.dtype), "shape": list(a.shape),
                              "data": _tensor_bytes(n, a)}
                          for n, a in arrays.items()}, use_bin_type=True)


def unpack_tensors(blob: bytes) -> dict[str, np.ndarray]:
    import numpy as np

    raw = msgpack.unpackb(blob, raw=False)
    return {n: decode_strings(t["data"], t["shape"], n, n) if t["dtype"] == STRING else
            np.frombuffer(t["data"], dtype=to_numpy_dtype(t["dtype"])).reshape(t["shape"])
            for n, t in raw.items()}


class Store:
    def __init__(self, path: str = ":memory:", *, max_results: int = MAX_RESULTS,
                 max_result_bytes: int = MAX_RESULT_BYTES,
                 max_run_records: int = MAX_RUN_RECORDS) -> None:
        self.path = path
        self.max_results, self.max_result_bytes = max_results, max_result_bytes
        self.max_run_records = max_run_records
        self.urgent = False  # a write that must be committed before the next send
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(runs)")}
        if "owner" not in columns:  # a state file from before run ownership
            self.db.execute("ALTER TABLE runs ADD COLUMN owner TEXT")
        self.db.execute("BEGIN")
        self.dirty = False
        self.runs_written = 0

    def commit(self) -> None:
        if self.dirty:
            self.db.execute("COMMIT")
            self.db.execute("BEGIN")
            self.dirty = False
        self.urgent = False

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

    def run_started(self, run: str, graph: str, started: float, *, owner: str | None = None,
                    urgent: bool = False) -> None:
        self._exec("INSERT OR REPLACE INTO runs (run, graph, state, started, owner) "
                   "VALUES (?, ?, ?, ?, ?)", (run, graph, "running", started, owner))
        self.urgent = self.urgent or urgent
        self.runs_written += 1
        if self.runs_written % 1000 == 0:
            self._prune_runs()

    def _prune_runs(self) -> None:
        """Keep the newest ``max_run_records`` finished runs."""
        self._exec("DELETE FROM runs WHERE state != 'running' AND run NOT IN (SELECT run FROM "
                   "runs ORDER BY started DESC LIMIT ?)", (self.max_run_records,))

    def run_owned_by_other(self, run: str, key: str | None) -> bool:
        """Whether ``run`` is recorded as started by another client's key. Without CURVE
        (no keys) runs have no owner."""
        row = self.db.execute("SELECT owner FROM runs WHERE run = ?", (run,)).fetchone()
        return bool(row and row[0] is not None and row[0] != key)

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

    def run_record(self, run: str) -> dict[str, Any] | None:
        """One run's record with its timings (for its timeline), or None."""
        row = self.db.execute("SELECT run, graph, state, started, finished, error, timings "
                              "FROM runs WHERE run = ?", (run,)).fetchone()
        if row is None:
            return None
        r, g, st, started, finished, e, t = row
        return {"run": r, "graph": g, "state": st, "started": started, "finished": finished,
                "error": json.loads(e) if e else None, "timings": json.loads(t) if t else {}}

    def run_state(self, run: str) -> str | None:
        row = self.db.execute("SELECT state FROM runs WHERE run = ?", (run,)).fetchone()
        return row[0] if row else None

    def run_error(self, run: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT error FROM runs WHERE run = ?", (run,)).fetchone()
        return json.loads(row[0]) if row and row[0] else None

    def save_result(self, run: str, arrays: dict[str, np.ndarray]) -> None:
        blob = pack_tensors(arrays)
        self._exec("INSERT OR REPLACE INTO results VALUES (?, ?, ?)", (run, blob, time.time()))
        count, total = self.db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(tensors)), 0) FROM results").fetchone()
        while count > self.max_results or (total > self.max_result_bytes and count > 1):
            oldest, size = self.db.execute("SELECT run, LENGTH(tensors) FROM results "
                                           "ORDER BY created LIMIT 1").fetchone()
            self._exec("DELETE FROM results WHERE run = ?", (oldest,))
            log.warning("dropped the uncollected result of run %s (%d bytes): over the store's "
                        "limit of %d results / %d bytes", oldest, size, self.max_results,
                        self.max_result_bytes)
            count, total = count - 1, total - size

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
