"""The results store: one SQLite file with runs and metric rows. Safe when several processes write."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    method TEXT NOT NULL,
    variant TEXT NOT NULL,
    dataset TEXT NOT NULL,
    protocol TEXT NOT NULL,
    seed INTEGER NOT NULL,
    config_json TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    code_version TEXT NOT NULL,
    packages_json TEXT NOT NULL,
    device TEXT NOT NULL,
    dtype TEXT NOT NULL,
    status TEXT NOT NULL,
    run_dir TEXT NOT NULL,
    steps INTEGER NOT NULL DEFAULT 0,
    train_seconds REAL NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    tags TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    metric TEXT NOT NULL,
    key TEXT NOT NULL,
    value REAL,
    provenance_json TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (run_id, key)
);
CREATE INDEX IF NOT EXISTS runs_by_dataset ON runs(dataset, method);
"""

STATUSES = ("running", "done", "diverged", "failed")
#: the columns of each table, in schema order: a run's record (bench.core.result_file) holds exactly these
RUN_COLUMNS = ("run_id", "method", "variant", "dataset", "protocol", "seed", "config_json", "config_hash",
               "code_version", "packages_json", "device", "dtype", "status", "run_dir", "steps", "train_seconds",
               "message", "tags", "created", "updated")
METRIC_COLUMNS = ("run_id", "metric", "key", "value", "provenance_json", "created")


class StoreError(RuntimeError):
    """The results store cannot be opened or read (damaged, not a store, not writable); names the file."""


class Store:
    """Thin access layer; every write is one transaction, so a killed process leaves no partial rows.

    readonly: for commands that only read (report, history, compare, baseline save). The file must exist and is
    never created or written, so a read-only store directory or file works (in a writable directory SQLite may
    leave its -wal and -shm files, as any reader of a WAL database does)."""

    def __init__(self, path: str | Path, readonly: bool = False):
        self.path = Path(path)
        self.readonly = readonly
        if readonly:
            if not self.path.is_file():
                raise StoreError(f"no results store at {self.path}")
            with self.connect() as con:  # fails now, naming the file, if it is not a store
                con.execute("SELECT 1 FROM runs JOIN metrics LIMIT 1").fetchall()
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.connect() as con:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if tables and "runs" not in tables:  # someone else's database: never add our tables to it
                raise StoreError(f"{self.path} is an SQLite database but not an aegan-bench results store "
                                 f"(tables: {', '.join(sorted(tables))}); pass another --out")
            con.executescript(SCHEMA)

    def _open(self) -> sqlite3.Connection:
        if not self.readonly:
            con = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            con.execute("PRAGMA journal_mode=WAL")
        else:
            # mode=ro never writes the database. A WAL reader also needs the -shm file; where the directory is
            # read-only it cannot be made, and nobody can be writing, so the file is read as immutable.
            uri = f"{self.path.absolute().as_uri()}?mode=ro"
            if not os.access(self.path.parent, os.W_OK):
                uri += "&immutable=1"
            con = sqlite3.connect(uri, uri=True, timeout=60, isolation_level=None)
        con.execute("PRAGMA busy_timeout=60000")
        return con

    @contextmanager
    def connect(self):
        try:
            con = self._open()
        except sqlite3.DatabaseError as e:
            raise self._error(e) from None
        con.row_factory = sqlite3.Row
        try:
            yield con
        except sqlite3.DatabaseError as e:
            # the file or its access, not a mistake in our SQL (ProgrammingError, IntegrityError stay as they are)
            if type(e) not in (sqlite3.DatabaseError, sqlite3.OperationalError):
                raise
            raise self._error(e) from None
        finally:
            con.close()

    def _error(self, e: sqlite3.DatabaseError) -> StoreError:
        """One line naming the file and what to do, instead of sqlite3's traceback."""
        text = str(e)
        if "locked" in text or "busy" in text:
            return StoreError(f"the results store {self.path} stayed locked by another process ({text}); retry")
        if "readonly" in text or "unable to open" in text:
            action = "read" if self.readonly else "write"
            hint = "" if self.readonly else "; pass an --out directory you can write to"
            return StoreError(f"cannot {action} the results store {self.path} ({text}){hint}")
        if "no such table" in text or "no such column" in text:
            return StoreError(f"{self.path} is not an aegan-bench results store ({text})")
        return StoreError(f"the results store {self.path} is damaged or not a SQLite database ({text}); "
                          "move it away and rerun, or pass another --out / --store")

    @contextmanager
    def transaction(self):
        with self.connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise

    # --- runs ---------------------------------------------------------------------------------------
    def upsert_run(self, run_id: str, **fields: Any) -> None:
        now = time.time()
        fields = {k: json.dumps(v, sort_keys=True) if k.endswith("_json") and not isinstance(v, str) else v
                  for k, v in fields.items()}
        with self.transaction() as con:
            exists = con.execute("SELECT 1 FROM runs WHERE run_id=?", (run_id,)).fetchone()
            if exists:
                sets = ", ".join(f"{k}=?" for k in fields)
                con.execute(f"UPDATE runs SET {sets}, updated=? WHERE run_id=?", (*fields.values(), now, run_id))
            else:
                cols = ["run_id", *fields, "created", "updated"]
                con.execute(f"INSERT INTO runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                            (run_id, *fields.values(), now, now))

    def set_status(self, run_id: str, status: str, message: str = "", **fields: Any) -> None:
        assert status in STATUSES, status
        self.upsert_run(run_id, status=status, message=message, **fields)

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        with self.connect() as con:
            row = con.execute("SELECT * FROM runs WHERE run_id=?", (run_id,)).fetchone()
        return dict(row) if row else None

    def runs(self, **where: Any) -> list[dict[str, Any]]:
        clause = " AND ".join(f"{k}=?" for k in where) or "1=1"
        with self.connect() as con:
            rows = con.execute(f"SELECT * FROM runs WHERE {clause} ORDER BY created", tuple(where.values()))
            return [dict(r) for r in rows]

    # --- tags: labels such as "nightly" or "v0.2" that selectors (bench.compare) pick runs by -------------
    @staticmethod
    def split_tags(text: str) -> list[str]:
        """The runs.tags column holds sorted, comma-separated tags."""
        return [t for t in (text or "").split(",") if t]

    def add_tags(self, run_id: str, tags: Iterable[str]) -> list[str]:
        """Add tags to a run (kept sorted and unique, in one transaction); returns the run's tags."""
        with self.transaction() as con:
            row = con.execute("SELECT tags FROM runs WHERE run_id=?", (run_id,)).fetchone()
            if row is None:
                raise KeyError(run_id)
            merged = sorted(set(self.split_tags(row[0])) | set(tags))
            con.execute("UPDATE runs SET tags=?, updated=? WHERE run_id=?", (",".join(merged), time.time(), run_id))
        return merged

    # --- metrics ------------------------------------------------------------------------------------
    def put_metrics(self, run_id: str, metric: str, values: Iterable[Any]) -> None:
        """Write all values of one metric at once (replacing earlier values of the same keys)."""
        now = time.time()
        rows = [(run_id, metric, v.key, v.value, json.dumps(v.provenance, sort_keys=True, default=str), now)
                for v in values]
        with self.transaction() as con:
            con.executemany("INSERT OR REPLACE INTO metrics VALUES (?, ?, ?, ?, ?, ?)", rows)

    def metric_keys(self, run_id: str) -> set[str]:
        with self.connect() as con:
            return {r[0] for r in con.execute("SELECT key FROM metrics WHERE run_id=?", (run_id,))}

    def metrics_done(self, run_id: str) -> set[str]:
        with self.connect() as con:
            return {r[0] for r in con.execute("SELECT DISTINCT metric FROM metrics WHERE run_id=?", (run_id,))}

    def metric_rows(self, run_ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
        with self.connect() as con:
            if run_ids is None:
                rows = con.execute("SELECT * FROM metrics ORDER BY run_id, key").fetchall()
            else:
                ids = list(run_ids)
                rows = con.execute(f"SELECT * FROM metrics WHERE run_id IN ({', '.join('?' * len(ids))}) ORDER BY run_id, key",
                                   ids).fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d["provenance"] = json.loads(d.pop("provenance_json"))
            out.append(d)
        return out

    # --- whole runs: what a run directory's result file holds, and collecting it back --------------------
    def run_record(self, run_id: str) -> dict[str, Any] | None:
        """The run row and its metric rows exactly as stored (JSON columns as their text), read in one
        transaction so that they belong together; None when the run is not stored."""
        with self.connect() as con:
            con.execute("BEGIN")  # one snapshot for both reads
            try:
                run = con.execute("SELECT * FROM runs WHERE run_id=?", (run_id,)).fetchone()
                rows = con.execute("SELECT * FROM metrics WHERE run_id=? ORDER BY key", (run_id,)).fetchall()
            finally:
                con.execute("COMMIT")
        if run is None:
            return None
        return {"run": {c: run[c] for c in RUN_COLUMNS}, "metrics": [{c: r[c] for c in METRIC_COLUMNS} for r in rows]}

    def import_record(self, record: dict[str, Any]) -> str:
        """Upsert a run record (as run_record gives it) with its own timestamps, in one transaction.
        Returns "new", "updated" or "unchanged"; rows already equal are not written, so importing twice
        changes nothing."""
        run, metrics = record["run"], record["metrics"]
        run_id = run["run_id"]
        with self.transaction() as con:
            old = con.execute("SELECT * FROM runs WHERE run_id=?", (run_id,)).fetchone()
            old_metrics = {r["key"]: {c: r[c] for c in METRIC_COLUMNS}
                           for r in con.execute("SELECT * FROM metrics WHERE run_id=?", (run_id,))}
            changed = False
            if old is None or {c: old[c] for c in RUN_COLUMNS} != run:
                sets = ", ".join(f"{c}=excluded.{c}" for c in RUN_COLUMNS[1:])
                con.execute(f"INSERT INTO runs ({', '.join(RUN_COLUMNS)}) VALUES ({', '.join('?' * len(RUN_COLUMNS))})"
                            f" ON CONFLICT(run_id) DO UPDATE SET {sets}", tuple(run[c] for c in RUN_COLUMNS))
                changed = True
            new_rows = [m for m in metrics if old_metrics.get(m["key"]) != m]
            if new_rows:
                sets = ", ".join(f"{c}=excluded.{c}" for c in METRIC_COLUMNS[2:])
                con.executemany(f"INSERT INTO metrics ({', '.join(METRIC_COLUMNS)}) VALUES "
                                f"({', '.join('?' * len(METRIC_COLUMNS))}) ON CONFLICT(run_id, key) DO UPDATE SET {sets}",
                                [tuple(m[c] for c in METRIC_COLUMNS) for m in new_rows])
                changed = True
        if old is None:
            return "new"
        return "updated" if changed else "unchanged"

    def table(self):
        """Runs joined with their metric values, as a pandas DataFrame (one row per metric value)."""
        import pandas as pd

        with self.connect() as con:
            return pd.read_sql_query(
                "SELECT r.run_id, r.method, r.variant, r.dataset, r.protocol, r.seed, r.status, r.code_version,"
                " r.config_hash, m.metric, m.key, m.value, m.provenance_json FROM runs r"
                " LEFT JOIN metrics m ON m.run_id = r.run_id ORDER BY r.created, m.key", con)
