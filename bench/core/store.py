"""The results store: runs and metric rows in SQLite (one file, the embedded default) or PostgreSQL.

Both go through one SQLAlchemy Core code path with one schema. Safe when several processes write: every
write is one transaction, and writers take turns (SQLite: BEGIN IMMEDIATE; PostgreSQL: a transaction-scoped
advisory lock), so a read-modify-write such as add_tags never loses another process's change.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.pool import NullPool

from .paths import display, is_utf8

METADATA = sa.MetaData()
# DOUBLE: REAL affinity in SQLite, double precision in PostgreSQL (whose REAL is 4 bytes)
RUNS = sa.Table(
    "runs", METADATA,
    sa.Column("run_id", sa.Text, primary_key=True),
    *(sa.Column(c, sa.Text, nullable=False) for c in ("method", "variant", "dataset", "protocol")),
    sa.Column("seed", sa.Integer, nullable=False),
    *(sa.Column(c, sa.Text, nullable=False) for c in ("config_json", "config_hash", "code_version", "packages_json",
                                                       "device", "dtype", "status", "run_dir")),
    sa.Column("steps", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("train_seconds", sa.Double, nullable=False, server_default=sa.text("0")),
    sa.Column("message", sa.Text, nullable=False, server_default=""),
    sa.Column("tags", sa.Text, nullable=False, server_default=""),
    sa.Column("created", sa.Double, nullable=False),
    sa.Column("updated", sa.Double, nullable=False),
)
sa.Index("runs_by_dataset", RUNS.c.dataset, RUNS.c.method)
METRICS = sa.Table(
    "metrics", METADATA,
    sa.Column("run_id", sa.Text, sa.ForeignKey("runs.run_id"), nullable=False),
    sa.Column("metric", sa.Text, nullable=False),
    sa.Column("key", sa.Text, nullable=False),
    sa.Column("value", sa.Double),
    sa.Column("provenance_json", sa.Text, nullable=False),
    sa.Column("created", sa.Double, nullable=False),
    sa.PrimaryKeyConstraint("run_id", "key"),
)

STATUSES = ("running", "done", "diverged", "failed")
#: how far a run has got, for "newer wins" when collecting (bench.core.collect): a run ends done, diverged or failed
PROGRESS = {"running": 0, "failed": 1, "diverged": 1, "done": 2}
#: seeds are numpy's (0 <= seed < 2**32): checked on the command line and in result files
SEED_LIMIT = 2**32
#: the columns of each table, in schema order: a run's record (bench.core.result_file) holds exactly these
RUN_COLUMNS = tuple(c.name for c in RUNS.columns)
METRIC_COLUMNS = tuple(c.name for c in METRICS.columns)
#: the one advisory lock of a PostgreSQL store's writers (any constant, the same for every process)
_PG_WRITE_LOCK = 0x61656761  # "aega"
#: --store values that name a server rather than an SQLite file
SERVER_SCHEMES = ("postgresql://", "postgresql+psycopg://")


def _use_wal(con: sqlite3.Connection, wait_s: float = 60.0) -> None:
    """Put a SQLite store in WAL mode (once per file: the mode persists). Switching needs every other connection
    out of the file, and SQLite answers "locked" at once instead of calling the busy handler, so processes that
    create one store at the same moment retry here for up to `wait_s`."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            if con.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                con.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class StoreError(RuntimeError):
    """The results store cannot be opened or read (damaged, not a store, not writable); names the file."""


#: what a failing store write raises (for callers that must carry on, e.g. recording a failure on a full disk)
STORE_ERRORS: tuple[type[BaseException], ...] = (StoreError, sa.exc.SQLAlchemyError, sqlite3.Error)


def is_server(target: str | Path) -> bool:
    return isinstance(target, str) and target.startswith(SERVER_SCHEMES)


class Store:
    """Thin access layer; every write is one transaction, so a killed process leaves no partial rows.

    target: an SQLite file (created when missing) or a postgresql:// URL (the database must exist).
    readonly: for commands that only read (report, history, compare, baseline save). The file must exist and is
    never created or written, so a read-only store directory or file works (in a writable directory SQLite may
    leave its -wal and -shm files, as any reader of a WAL database does)."""

    def __init__(self, path: str | Path, readonly: bool = False):
        self.readonly = readonly
        if is_server(path):
            url = sa.engine.make_url(str(path)).set(drivername="postgresql+psycopg")
            self.path = None
            self.name = url.render_as_string(hide_password=True)
            try:
                self.engine = sa.create_engine(url, poolclass=NullPool)
            except ImportError as e:  # psycopg missing
                raise StoreError(f"cannot use {self.name}: {e}; install the extra: pip install "
                                 "'aegan-bench[postgres]'") from None
        else:
            self.path = Path(path)
            self.name = display(self.path)
            if self.path.is_dir():  # sqlite would say "unable to open"; say what is there instead
                raise StoreError(f"{self.name} is a directory, not a results store; move it away or pass another "
                                 "--out / --store")
            if readonly and not self.path.is_file():
                raise StoreError(f"no results store at {self.path}")
            self.engine = sa.create_engine("sqlite://", creator=self._open, poolclass=NullPool)
            # the driver leaves transactions to us (isolation_level=None): a write begins IMMEDIATE, taking the
            # write lock first, so that concurrent read-modify-writes queue instead of failing on upgrade
            sa.event.listen(self.engine, "begin", lambda con: con.exec_driver_sql(
                "BEGIN IMMEDIATE" if con.get_execution_options().get("write") else "BEGIN"))
        if readonly:
            with self.connect() as con:  # fails now, naming the store, if it is not one
                con.execute(sa.select(RUNS.c.run_id).join(METRICS, sa.true()).limit(1)).fetchall()
            return
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.transaction() as con:
            tables = set(sa.inspect(con).get_table_names())
            if tables and "runs" not in tables:  # someone else's database: never add our tables to it
                kind = "an SQLite" if self.path is not None else "a PostgreSQL"
                raise StoreError(f"{self.name} is {kind} database but not an aegan-bench results store "
                                 f"(tables: {', '.join(sorted(tables))}); pass another --out / --store")
            METADATA.create_all(con)

    def _open(self) -> sqlite3.Connection:
        if not self.readonly:
            con = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            _use_wal(con)
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
    def connect(self, write: bool = False) -> Iterator[sa.Connection]:
        """A connection (SQLAlchemy Core); errors of the store's file or server become one-line StoreErrors."""
        try:
            con = self.engine.connect().execution_options(write=write)
        except (sa.exc.DBAPIError, sqlite3.DatabaseError) as e:
            raise self._error(e) from None
        try:
            yield con
        except sa.exc.DBAPIError as e:
            if not self._is_access_error(e):  # a mistake in our SQL or a constraint: not the store's fault
                raise
            raise self._error(e) from None
        finally:
            with contextlib.suppress(sa.exc.DBAPIError):
                con.close()

    @staticmethod
    def _is_access_error(e: sa.exc.DBAPIError) -> bool:
        orig = e.orig
        if isinstance(orig, sqlite3.Error):
            return type(orig) in (sqlite3.DatabaseError, sqlite3.OperationalError)
        import psycopg  # only a server store gets here, so psycopg is installed

        return isinstance(orig, psycopg.OperationalError | psycopg.errors.UndefinedTable |
                          psycopg.errors.UndefinedColumn | psycopg.errors.InsufficientPrivilege)

    def _error(self, e: Exception) -> StoreError:
        """One line naming the store and what to do, instead of the driver's traceback."""
        orig = getattr(e, "orig", None) or e
        text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
        if self.path is None:
            if "does not exist" in text and ("relation" in text or "column" in text):
                return StoreError(f"{self.name} is not an aegan-bench results store ({text})")
            return StoreError(f"cannot use the results store {self.name} ({text}); check that the server runs, the "
                              "database exists and the user may use it")
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
    def transaction(self) -> Iterator[sa.Connection]:
        """One write transaction; writers of the same store take turns."""
        with self.connect(write=True) as con, con.begin():
            if self.path is None:
                con.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_WRITE_LOCK)))
            yield con

    @contextmanager
    def _snapshot(self) -> Iterator[sa.Connection]:
        """Reads that see one state of the store (SQLite: one deferred transaction; PostgreSQL: repeatable read)."""
        with self.connect() as con:
            if self.path is None:
                con = con.execution_options(isolation_level="REPEATABLE READ")
            with con.begin():
                yield con

    def _insert(self, table: sa.Table):
        """INSERT with the dialect's ON CONFLICT clause (the same SQL in SQLite and PostgreSQL)."""
        return (sqlite_dialect if self.path is not None else postgresql).insert(table)

    @staticmethod
    def _check_text(row: dict[str, Any]) -> None:
        """Text the store cannot hold (a path with bytes that are not UTF-8) is refused naming it, before any
        write: the driver would fail with an encoding error in the middle of the command."""
        for column, value in row.items():
            if isinstance(value, str) and not is_utf8(value):
                raise StoreError(f"cannot store {column} {display(value)}: it is not valid UTF-8 (a file name in "
                                 "another encoding?); rename it or use a path whose name is UTF-8")

    # --- runs ---------------------------------------------------------------------------------------
    def upsert_run(self, run_id: str, **fields: Any) -> None:
        now = time.time()
        fields = {k: json.dumps(v, sort_keys=True) if k.endswith("_json") and not isinstance(v, str) else v
                  for k, v in fields.items()}
        self._check_text({"run_id": run_id, **fields})
        with self.transaction() as con:
            exists = con.execute(sa.select(RUNS.c.run_id).where(RUNS.c.run_id == run_id)).first()
            if exists:
                con.execute(sa.update(RUNS).where(RUNS.c.run_id == run_id).values(**fields, updated=now))
            else:
                con.execute(sa.insert(RUNS).values(run_id=run_id, **fields, created=now, updated=now))

    def set_status(self, run_id: str, status: str, message: str = "", **fields: Any) -> None:
        assert status in STATUSES, status
        self.upsert_run(run_id, status=status, message=message, **fields)

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        with self.connect() as con:
            row = con.execute(sa.select(RUNS).where(RUNS.c.run_id == run_id)).first()
        return dict(row._mapping) if row else None

    def runs(self, **where: Any) -> list[dict[str, Any]]:
        query = sa.select(RUNS).where(*(RUNS.c[k] == v for k, v in where.items())).order_by(RUNS.c.created)
        with self.connect() as con:
            return [dict(r._mapping) for r in con.execute(query)]

    # --- tags: labels such as "nightly" or "v0.2" that selectors (bench.compare) pick runs by -------------
    @staticmethod
    def split_tags(text: str) -> list[str]:
        """The runs.tags column holds sorted, comma-separated tags."""
        return [t for t in (text or "").split(",") if t]

    def add_tags(self, run_id: str, tags: Iterable[str]) -> list[str]:
        """Add tags to a run (kept sorted and unique, in one transaction); returns the run's tags."""
        with self.transaction() as con:
            row = con.execute(sa.select(RUNS.c.tags).where(RUNS.c.run_id == run_id)).first()
            if row is None:
                raise KeyError(run_id)
            merged = sorted(set(self.split_tags(row[0])) | set(tags))
            con.execute(sa.update(RUNS).where(RUNS.c.run_id == run_id).values(tags=",".join(merged),
                                                                                updated=time.time()))
        return merged

    # --- metrics ------------------------------------------------------------------------------------
    def put_metrics(self, run_id: str, metric: str, values: Iterable[Any]) -> None:
        """Write all values of one metric at once (replacing earlier values of the same keys)."""
        now = time.time()
        rows = [dict(run_id=run_id, metric=metric, key=v.key, value=v.value,
                     provenance_json=json.dumps(v.provenance, sort_keys=True, default=str), created=now)
                for v in values]
        if not rows:
            return
        with self.transaction() as con:
            con.execute(self._upsert(METRICS, ("run_id", "key")), rows)

    def _upsert(self, table: sa.Table, keys: tuple[str, ...]):
        stmt = self._insert(table)
        return stmt.on_conflict_do_update(index_elements=list(keys),
                                          set_={c.name: stmt.excluded[c.name] for c in table.columns
                                                if c.name not in keys})

    def metric_keys(self, run_id: str) -> set[str]:
        with self.connect() as con:
            return {r[0] for r in con.execute(sa.select(METRICS.c.key).where(METRICS.c.run_id == run_id))}

    def metrics_done(self, run_id: str) -> set[str]:
        with self.connect() as con:
            return {r[0] for r in con.execute(sa.select(METRICS.c.metric).distinct().where(METRICS.c.run_id == run_id))}

    def metric_rows(self, run_ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
        query = sa.select(METRICS).order_by(METRICS.c.run_id, METRICS.c.key)
        if run_ids is not None:
            query = query.where(METRICS.c.run_id.in_(list(run_ids)))
        with self.connect() as con:
            rows = con.execute(query).fetchall()
        out = []
        for r in rows:
            d = dict(r._mapping)
            d["provenance"] = json.loads(d.pop("provenance_json"))
            out.append(d)
        return out

    # --- whole runs: what a run directory's result file holds, and collecting it back --------------------
    def run_record(self, run_id: str) -> dict[str, Any] | None:
        """The run row and its metric rows exactly as stored (JSON columns as their text), read in one
        snapshot so that they belong together; None when the run is not stored."""
        with self._snapshot() as con:
            run = con.execute(sa.select(RUNS).where(RUNS.c.run_id == run_id)).first()
            rows = con.execute(sa.select(METRICS).where(METRICS.c.run_id == run_id).order_by(METRICS.c.key)).fetchall()
        if run is None:
            return None
        return {"run": {c: run._mapping[c] for c in RUN_COLUMNS},
                "metrics": [{c: r._mapping[c] for c in METRIC_COLUMNS} for r in rows]}

    @staticmethod
    def progress(run: dict[str, Any]) -> tuple[int, int, float]:
        """How far a run row has got: its steps, then its status (running < failed, diverged < done), then when
        it was last updated. A record behind the stored row is older and never replaces it."""
        return run["steps"], PROGRESS.get(run["status"], -1), run["updated"]

    def import_record(self, record: dict[str, Any]) -> str:
        """Upsert a validated run record (as run_record gives it; bench.core.result_file checks one) with its own
        timestamps, in one transaction. Newer wins: a record whose run row is behind the stored one (`progress`)
        changes nothing ("older"), and a metric row older than the stored value of its key is not written.
        Returns "new", "updated", "unchanged" or "older"; rows already equal are not written, so importing twice
        changes nothing."""
        run, metrics = record["run"], record["metrics"]
        run_id = run["run_id"]
        if any(m["run_id"] != run_id for m in metrics):  # one run's record never writes another run's rows
            raise ValueError(f"the metric rows of a record of {run_id} name other runs")
        self._check_text(run)
        for m in metrics:
            self._check_text(m)
        with self.transaction() as con:
            old = con.execute(sa.select(RUNS).where(RUNS.c.run_id == run_id)).first()
            if old is not None and self.progress(run) < self.progress(old._mapping):
                return "older"
            old_metrics = {r.key: dict(r._mapping) for r in con.execute(sa.select(METRICS).where(METRICS.c.run_id == run_id))}
            changed = False
            if old is None or dict(old._mapping) != run:
                con.execute(self._upsert(RUNS, ("run_id",)), [run])
                changed = True
            new_rows = [m for m in metrics if (o := old_metrics.get(m["key"])) is None
                        or (o != m and m["created"] >= o["created"])]
            if new_rows:
                con.execute(self._upsert(METRICS, ("run_id", "key")), new_rows)
                changed = True
        if old is None:
            return "new"
        return "updated" if changed else "unchanged"

    def table(self):
        """Runs joined with their metric values, as a pandas DataFrame (one row per metric value)."""
        import pandas as pd

        r, m = RUNS.c, METRICS.c
        query = (sa.select(r.run_id, r.method, r.variant, r.dataset, r.protocol, r.seed, r.status, r.code_version,
                           r.config_hash, m.metric, m.key, m.value, m.provenance_json)
                 .select_from(RUNS.outerjoin(METRICS, m.run_id == r.run_id)).order_by(r.created, m.key))
        with self.connect() as con:
            result = con.execute(query)
            return pd.DataFrame(result.fetchall(), columns=list(result.keys()))
