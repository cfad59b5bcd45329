"""The SQL storage: SQLite (a file, WAL) or PostgreSQL. Needs the ``[serve]`` extra.

This is the only module that imports SQLAlchemy (and, for PostgreSQL, psycopg), which only
``pip install 'txanomaly[serve]'`` installs; open it through
:func:`txanomaly.storage.sql_storage`, which says so in one line when they are missing.

Tables: ``transactions`` (arrival number, transactionId unique, timestamp, content hash, flat
record, features, score, flag, verdict JSON; a partial index on the flagged ones, and one on
(timestamp, flag) for the flag rate over time, :meth:`SqlStorage.flag_rate`) and
``key_history`` (one row per :data:`~txanomaly.storage.base.KeyRow`, clustered on
(kind, key, ts, seq): a key's rows in log order, read by one range scan).

Concurrency: SQLite has a single writer (``BEGIN IMMEDIATE``, plus an in-process lock so that
threads queue instead of spinning on ``busy_timeout``), so keys need no locks. PostgreSQL takes
the transaction-scoped advisory locks :func:`txanomaly.ingest.ingest` asks for, on every key
and transactionId of a batch, in the order it gives them, before anything is read.

Durability: SQLite runs in WAL mode; ``synchronous=NORMAL`` (the default here) survives a crash
of the process (kill -9: the committed WAL frames are in the OS page cache) but not a power loss;
``synchronous=FULL`` survives both at the cost of an fsync per commit.

>>> import tempfile
>>> storage = SqlStorage(f"sqlite:///{tempfile.mkdtemp()}/tx.db")
>>> storage.count(), storage.dialect
(0, 'sqlite')
>>> storage.close()
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from txanomaly.storage.base import (
    KEY_COLUMNS,
    MISSING_SQL_EXTRA,
    KeyRow,
    StorageBusy,
    StorageError,
    StoredTransaction,
)
from txanomaly.storage.sql_transaction import PG_SEQUENCE, SqlTransaction, lock_salt

logger = logging.getLogger(__name__)
#: How long a SQLite connection waits for another process's write lock.
BUSY_TIMEOUT_MS = 30_000

SYNCHRONOUS_MODES = ("NORMAL", "FULL")

metadata = sa.MetaData()
#: ``INTEGER PRIMARY KEY`` is SQLite's rowid: the arrival number costs no extra index there.
_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
transactions = sa.Table(
    "transactions", metadata,
    sa.Column("seq", _SEQ, primary_key=True, autoincrement=False),  # arrival number
    sa.Column("transaction_id", sa.Text, nullable=False, unique=True),
    sa.Column("ts", sa.BigInteger, nullable=False),
    sa.Column("content_hash", sa.Text, nullable=False),
    sa.Column("record", sa.Text, nullable=False),      # the flat record, JSON
    sa.Column("features", sa.Text, nullable=False),    # raw feature values, JSON array
    sa.Column("anomaly_score", sa.Double, nullable=False),
    sa.Column("is_anomaly", sa.Boolean, nullable=False),
    sa.Column("result", sa.Text, nullable=False),      # the verdict as answered, JSON
    # Partial: only the flagged few are indexed (fewer pages written per commit).
    sa.Index("ix_transactions_flagged", "ts", "transaction_id",
             sqlite_where=sa.text("is_anomaly = 1"), postgresql_where=sa.text("is_anomaly")),
    # The flag rate per time bucket is counted from this index alone (no table rows read).
    sa.Index("ix_transactions_ts", "ts", "is_anomaly"),
)
#: Indexes added after the first release: :meth:`SqlStorage.create_tables` adds them to
#: databases made before them (``create_all`` makes a missing table's indexes only).
_LATER_INDEXES = ("ix_transactions_ts",)
#: Most buckets one :meth:`SqlStorage.flag_rate` call may count.
MAX_BUCKETS = 10_000
#: Per bucket ``[lo, hi)`` (the first from ``start``, the last to ``end``), two range counts of
#: an index: all transactions (``ix_transactions_ts``) and the flagged ones (the partial
#: ``ix_transactions_flagged``). A GROUP BY over the range sorted or hashed every row first:
#: 1,000,000 stored over 30 days (medians of 5, same run, same counts): 7 days hourly, SQLite
#: 136 -> 36 ms, PostgreSQL (vacuumed) 216 -> 71 ms; 30 days daily 602 -> 180 ms and
#: 932 -> 160 ms.
_FLAG_RATE_SQL = """
WITH RECURSIVE b(i, lo, hi) AS (
  SELECT 0, CAST({start} AS BIGINT), CAST(CASE WHEN {first} < {end} THEN {first} ELSE {end} END
                                         AS BIGINT)
  UNION ALL
  SELECT i + 1, hi, CASE WHEN hi + {bucket} < {end} THEN hi + {bucket} ELSE {end} END
  FROM b WHERE hi < {end})
SELECT i,
  (SELECT count(*) FROM transactions t WHERE t.ts >= b.lo AND t.ts < b.hi),
  (SELECT count(*) FROM transactions t WHERE {flagged} AND t.ts >= b.lo AND t.ts < b.hi)
FROM b ORDER BY i"""
key_history = sa.Table(
    "key_history", metadata,
    sa.Column("kind", sa.Text, primary_key=True),
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("ts", sa.BigInteger, primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True),
    sa.Column("pos", sa.BigInteger, nullable=False),
    sa.Column("amount", sa.Double, nullable=False),
    sa.Column("cum_before", sa.Double, nullable=False),
    sa.Column("cum", sa.Double, nullable=False),
    sa.Column("d1", sa.Double, nullable=False),
    sa.Column("d2", sa.Double, nullable=False),
    # Running sums of the sine and cosine of 2 pi hour / 24 (hour_deviation); added to
    # databases made before them by SqlStorage.create_tables (_add_hour_sums).
    sa.Column("hour_sin_sum", sa.Double, nullable=False, server_default="0"),
    sa.Column("hour_cos_sum", sa.Double, nullable=False, server_default="0"),
    sa.Column("shift", sa.Double, nullable=False),  # the key's, repeated: saves a lookup
    sqlite_with_rowid=False,
    # PostgreSQL: room on every page for the new versions of its rows that a late arrival
    # moves (pos and the sums, no indexed column): HOT updates, pruned in place, instead of
    # new versions elsewhere plus new index entries (see KEY_HISTORY_FILLFACTOR).
    postgresql_with={"fillfactor": 90},  # = KEY_HISTORY_FILLFACTOR
)
#: The fill factor of ``key_history`` on PostgreSQL. 150 late arrivals into a user with 5,000
#: stored rows (~580,000 row updates), same run: HOT updates 1 % -> 93 %, dead row versions
#: left 578,006 -> 59,335, table 74.7 -> 7.7 MB, a late single's median 76 -> 40 ms.
KEY_HISTORY_FILLFACTOR = 90


#: Rows read per page by :func:`_add_hour_sums`.
_UPGRADE_PAGE = 50_000


def _add_hour_sums(conn: Connection) -> None:
    """A ``key_history`` made before ``hour_sin_sum`` and ``hour_cos_sum``: add them and fill
    them with each key's running sums in log order (what ingesting the rows in that order
    writes), a page of rows at a time. Runs once, inside :meth:`SqlStorage.create_tables`'s
    transaction (PostgreSQL: under its lock; SQLite: the write lock)."""
    from txanomaly.features.online import hour_vector

    names = {c["name"] for c in sa.inspect(conn).get_columns("key_history")}
    if {"hour_sin_sum", "hour_cos_sum"} <= names:
        return
    logger.info("adding the hour sums to key_history (one pass over its rows)")
    for column in ("hour_sin_sum", "hour_cos_sum"):
        if column not in names:
            conn.exec_driver_sql(f"ALTER TABLE key_history ADD COLUMN {column} "
                                 "DOUBLE PRECISION NOT NULL DEFAULT 0")
    page = sa.text("SELECT kind, key, ts, seq FROM key_history WHERE (kind, key, ts, seq) > "
                   "(:kind, :key, :ts, :seq) ORDER BY kind, key, ts, seq LIMIT :n")
    update = sa.text("UPDATE key_history SET hour_sin_sum = :s, hour_cos_sum = :c "
                     "WHERE kind = :kind AND key = :key AND ts = :ts AND seq = :seq")
    after = {"kind": "", "key": "", "ts": -(2**62), "seq": -(2**62)}
    current, sin_sum, cos_sum = None, 0.0, 0.0
    while rows := conn.execute(page, {**after, "n": _UPGRADE_PAGE}).fetchall():
        sums = []
        for kind, key, ts, seq in rows:
            if (kind, key) != current:
                current, sin_sum, cos_sum = (kind, key), 0.0, 0.0
            h_sin, h_cos = hour_vector(int(ts))
            sin_sum += h_sin
            cos_sum += h_cos
            sums.append({"s": sin_sum, "c": cos_sum, "kind": kind, "key": key, "ts": ts,
                         "seq": seq})
        conn.execute(update, sums)
        after = {"kind": rows[-1][0], "key": rows[-1][1], "ts": rows[-1][2], "seq": rows[-1][3]}


def normalize_url(url: str) -> str:
    """SQLAlchemy URL for a ``sqlite:///path`` or ``postgresql://`` URL (psycopg 3 driver)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    if url.startswith(("sqlite:///", "postgresql+psycopg://")):
        return url
    raise StorageError(f"unsupported database URL {url.split('://')[0]!r}://...: expected "
                       "sqlite:///PATH or postgresql://USER@HOST:PORT/DB")


class SqlStorage:
    """Scored transactions and per-key state in SQLite or PostgreSQL.

    Parameters
    ----------
    url : str
        ``sqlite:///path/to/file.db`` or ``postgresql://user@host:port/db``.
    schema : str, optional
        PostgreSQL only: the schema to use (created if missing); default ``search_path``.
    synchronous : {"NORMAL", "FULL"}
        SQLite only: ``NORMAL`` survives a process crash, ``FULL`` also a power loss.
    pool_size : int
        Connections kept open (PostgreSQL: per process).
    create : bool
        Create the tables if they do not exist.
    """

    def __init__(self, url: str, *, schema: str | None = None, synchronous: str = "NORMAL",
                 pool_size: int = 8, create: bool = True):
        if synchronous.upper() not in SYNCHRONOUS_MODES:
            raise StorageError(f"synchronous must be one of {SYNCHRONOUS_MODES}, "
                               f"got {synchronous!r}")
        self.url = normalize_url(url)
        self.dialect = "sqlite" if self.url.startswith("sqlite") else "postgresql"
        #: SQLite has one writer at a time; PostgreSQL serialises writers per key.
        self.locks_keys = self.dialect == "postgresql"
        self.schema = schema
        self._write_lock = threading.Lock() if self.dialect == "sqlite" else None
        # Advisory locks are per database, not per schema: salted by the schema, writers of
        # two schemas in one database never wait for each other's keys.
        self._lock_salt = lock_salt(schema)
        self.engine = self._engine(synchronous.upper(), pool_size)
        self._stop = threading.Event()
        self._checkpointer: threading.Thread | None = None
        if create:
            try:
                self.create_tables()
            except sa.exc.OperationalError as exc:
                self.engine.dispose()
                raise StorageError(f"cannot open the database: {exc.orig}") from None
        if self.dialect == "sqlite":
            self._checkpointer = threading.Thread(target=self._checkpoint_loop, daemon=True,
                                                  name="txanomaly-wal-checkpoint")
            self._checkpointer.start()

    @property
    def location(self) -> str:
        """The database URL without its password (for messages and logs)."""
        return self.engine.url.render_as_string(hide_password=True)

    # ------------------------------------------------------------------ setup
    def _engine(self, synchronous: str, pool_size: int) -> Engine:
        if self.dialect == "sqlite":
            engine = sa.create_engine(self.url, pool_size=pool_size, max_overflow=pool_size,
                                      connect_args={"check_same_thread": False})
            _sqlite_events(engine, synchronous)
            return engine
        connect_args: dict[str, Any] = {"prepare_threshold": 2}
        if self.schema is not None:
            if not self.schema.replace("_", "").isalnum():
                raise StorageError(f"invalid schema name {self.schema!r}")
            connect_args["options"] = f"-csearch_path={self.schema}"
        try:
            return sa.create_engine(self.url, pool_size=pool_size, max_overflow=pool_size,
                                    pool_pre_ping=True, connect_args=connect_args)
        except ModuleNotFoundError as exc:  # the driver: psycopg
            raise StorageError(f"{MISSING_SQL_EXTRA} ({exc.name} is missing)") from None

    def create_tables(self) -> None:
        """Create the tables (and, on PostgreSQL, the schema and sequence) if missing."""
        with self.engine.connect().execution_options(txanomaly_write=True) as conn:
            if self.dialect == "postgresql":
                # Concurrent replicas may start together: serialise the DDL.
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7386411)")
                if self.schema is not None:
                    conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
                conn.exec_driver_sql(f"CREATE SEQUENCE IF NOT EXISTS {PG_SEQUENCE}")
            metadata.create_all(conn)
            _add_hour_sums(conn)
            if self.dialect == "sqlite":  # one writer: the write lock is held already
                for index in _later_indexes():
                    index.create(conn, checkfirst=True)
            conn.commit()
        if self.dialect == "postgresql":
            self._add_indexes_concurrently()
            self._set_fillfactor()

    def _set_fillfactor(self) -> None:
        """PostgreSQL: give a ``key_history`` made before :data:`KEY_HISTORY_FILLFACTOR` that
        fill factor (new pages only; stored rows stay as they are). ``ALTER TABLE ... SET``
        takes a lock that reads and writes do not wait for; skipped when already set."""
        option = f"fillfactor={KEY_HISTORY_FILLFACTOR}"
        with self.engine.connect() as conn:
            options = conn.exec_driver_sql(
                "SELECT reloptions FROM pg_class WHERE oid = to_regclass('key_history')"
            ).scalar()
            if option in (options or []):
                return
            conn.exec_driver_sql(f"ALTER TABLE key_history SET ({option})")
            conn.commit()

    def _add_indexes_concurrently(self) -> None:
        """PostgreSQL: build the indexes an older database lacks without blocking writers
        (``CREATE INDEX CONCURRENTLY``, outside any transaction; replicas take turns under a
        session advisory lock). An invalid index left by an interrupted build is dropped and
        built again."""
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            def state(name: str) -> bool | None:
                return conn.exec_driver_sql(
                    "SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = "
                    "to_regclass(%s)", (name,)).scalar()

            if all(state(str(index.name)) for index in _later_indexes()):
                return
            conn.exec_driver_sql("SELECT pg_advisory_lock(7386413)")
            try:
                for index in _later_indexes():
                    name = str(index.name)
                    valid = state(name)
                    if valid:
                        continue
                    if valid is not None:
                        logger.warning("dropping the invalid index %s to build it again", name)
                        conn.exec_driver_sql(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
                    logger.info("building the index %s (CREATE INDEX CONCURRENTLY)", name)
                    columns = ", ".join(c.name for c in index.columns)
                    conn.exec_driver_sql(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} "
                                         f"ON transactions ({columns})")
            finally:
                conn.exec_driver_sql("SELECT pg_advisory_unlock(7386413)")

    def drop_tables(self) -> None:
        """Drop everything the storage created (tests use this to clean up)."""
        with self.engine.connect().execution_options(txanomaly_write=True) as conn:
            metadata.drop_all(conn)
            if self.dialect == "postgresql":
                conn.exec_driver_sql(f"DROP SEQUENCE IF EXISTS {PG_SEQUENCE}")
                if self.schema is not None:
                    conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
            conn.commit()

    def close(self) -> None:
        """Stop the checkpointer and close every pooled connection."""
        self._stop.set()
        if self._checkpointer is not None:
            self._checkpointer.join(timeout=10)
        self.engine.dispose()

    def _checkpoint_loop(self, every: float = 1.0) -> None:
        """SQLite: copy committed WAL frames into the database file once a second.

        PASSIVE never blocks writers or readers. A crash between checkpoints loses nothing:
        the WAL is replayed when the database is next opened.
        """
        while not self._stop.wait(every):
            try:
                conn = self.engine.raw_connection()  # autocommit: no transaction around it
                try:
                    conn.cursor().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                finally:
                    conn.close()
            except (sa.exc.SQLAlchemyError, sqlite3.Error):
                logger.warning("WAL checkpoint failed; will retry", exc_info=True)

    def ping(self) -> None:
        """Raise if the database cannot answer a trivial query."""
        with self.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1").scalar()

    # ------------------------------------------------------------------ ingestion
    @contextmanager
    def transaction(self, write: bool, wait: bool = True) -> Iterator[SqlTransaction]:
        """One database transaction on a driver cursor (committed if ``write``).

        ``wait=False`` (SQLite): :class:`StorageBusy` instead of queueing behind this
        process's writer or waiting (``busy_timeout``) for another process's.
        """
        lock = self._write_lock if write else None
        if lock is not None and not lock.acquire(blocking=wait):
            raise StorageBusy("another request is writing")
        try:
            conn = self.engine.raw_connection()
            try:
                cur = conn.cursor()
                if self.dialect == "sqlite":
                    _begin_sqlite(cur, write, wait)
                try:
                    yield SqlTransaction(cur, self.dialect, self._lock_salt)
                except BaseException:
                    conn.rollback()
                    raise
                if write:
                    conn.commit()
                else:
                    conn.rollback()
            finally:
                conn.close()  # back to the pool
        finally:
            if lock is not None:
                lock.release()

    # ------------------------------------------------------------------ reading
    def get(self, transaction_id: str) -> StoredTransaction | None:
        """The stored transaction, or None."""
        t = transactions.c
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t.transaction_id, t.ts, t.record, t.features, t.result)
                               .where(t.transaction_id == transaction_id)).first()
        return None if row is None else StoredTransaction.from_json(*row)

    def anomalies(self, start: int | None = None, end: int | None = None, limit: int = 100,
                  after: tuple[int, str] | None = None) -> list[StoredTransaction]:
        """Flagged transactions with ``start <= timestamp < end``, by (timestamp, id).

        ``after`` is the (timestamp, transactionId) of the last row of the previous page.
        """
        t = transactions.c
        query = (sa.select(t.transaction_id, t.ts, t.record, t.features, t.result)
                 .where(t.is_anomaly == sa.true()).order_by(t.ts, t.transaction_id).limit(limit))
        if start is not None:
            query = query.where(t.ts >= start)
        if end is not None:
            query = query.where(t.ts < end)
        if after is not None:
            query = query.where(sa.tuple_(t.ts, t.transaction_id) > sa.tuple_(
                sa.literal(after[0], sa.BigInteger), sa.literal(after[1], sa.Text)))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [StoredTransaction.from_json(*r) for r in rows]

    def flag_rate(self, start: int, end: int, bucket_ms: int) -> list[tuple[int, int, int]]:
        """``(bucket start, transactions stored, flagged)`` per bucket of transaction time,
        for ``start <= timestamp < end`` (ms). Buckets are ``bucket_ms`` long and aligned to
        multiples of it since the epoch (hours start on the hour, UTC); buckets without any
        transaction are left out. Two index range counts per bucket (no table rows read).

        Raises
        ------
        ValueError
            ``bucket_ms`` is not positive, ``end`` is not after ``start``, or the range holds
            more than :data:`MAX_BUCKETS` buckets.
        """
        if bucket_ms <= 0:
            raise ValueError(f"bucket must be positive, got {bucket_ms} ms")
        if end <= start:
            raise ValueError(f"the end ({end}) must be after the start ({start})")
        origin = start - start % bucket_ms  # floor, also before 1970
        if (end - origin + bucket_ms - 1) // bucket_ms > MAX_BUCKETS:
            raise ValueError(f"at most {MAX_BUCKETS:,} buckets: widen the bucket or narrow "
                             "the range")
        flagged = "t.is_anomaly = 1" if self.dialect == "sqlite" else "t.is_anomaly"
        # Integers only (computed here), written into the SQL: no parameter types to declare.
        sql = _FLAG_RATE_SQL.format(start=int(start), end=int(end), first=origin + bucket_ms,
                                    bucket=int(bucket_ms), flagged=flagged)
        with self.engine.connect() as conn:
            rows = conn.exec_driver_sql(sql).all()
        return [(origin + int(i) * bucket_ms, int(n), int(f)) for i, n, f in rows if n]

    def last_timestamp(self) -> int | None:
        """The latest stored transaction time (ms), or None when nothing is stored."""
        with self.engine.connect() as conn:
            last = conn.execute(sa.select(sa.func.max(transactions.c.ts))).scalar()
        return None if last is None else int(last)

    def count(self) -> int:
        """Number of stored transactions."""
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(transactions))
                       .scalar_one())

    def key_rows(self) -> list[KeyRow]:
        """Every key-history row, by (kind, key, pos): the whole per-key state."""
        h = key_history.c
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(*[h[c] for c in KEY_COLUMNS])
                                .order_by(h.kind, h.key, h.pos)).all()
        return [tuple(r) for r in rows]


def _sqlite_events(engine: Engine, synchronous: str) -> None:
    """Pragmas on every new SQLite connection; ``BEGIN IMMEDIATE`` for SQLAlchemy writes."""

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        # Checkpoints run in a background thread (SqlStorage._checkpoint_loop), not inside a
        # request's commit, where they made the slowest 1 % of requests several times slower.
        cur.execute("PRAGMA wal_autocheckpoint=0")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("txanomaly_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _later_indexes() -> list[sa.Index]:
    return [i for i in transactions.indexes if i.name in _LATER_INDEXES]


__all__ = ["MAX_BUCKETS", "SqlStorage", "normalize_url"]


def _begin_sqlite(cur: Any, write: bool, wait: bool) -> None:
    """``BEGIN IMMEDIATE`` (write) or ``BEGIN``; without waiting for another process's write
    lock when ``wait`` is False (the connection's ``busy_timeout`` is restored either way)."""
    if wait:
        cur.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        return
    cur.execute("PRAGMA busy_timeout=0")
    try:
        cur.execute("BEGIN IMMEDIATE" if write else "BEGIN")
    except sqlite3.OperationalError as exc:
        if "locked" not in str(exc) and "busy" not in str(exc):
            raise
        raise StorageBusy("another process holds the database's write lock") from None
    finally:
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
