"""SQL store of scored transactions and per-key feature state (SQLite or PostgreSQL).

The store keeps two things, written together in one database transaction:

* ``transactions``: every scored transaction (flat record, features, score, verdict), keyed by
  ``transaction_id``, which makes ingestion idempotent;
* ``key_history``: each key's :class:`~txanomaly.features.online.KeyLog` rows (origin user,
  destination user, (origin, destination) pair), from which the online engine computes the next
  transaction's features exactly as the batch engine would.

:meth:`Store.ingest` loads only the rows a batch needs (per key: the last row at or before
``min(ts) - max_window`` and every later one), computes features and scores, and writes the
transactions and the new or changed key rows back before it commits.

Concurrency: requests that touch the same key are serialised, so none loses an update. SQLite
has a single writer (``BEGIN IMMEDIATE``, plus an in-process lock so that threads queue instead
of spinning on ``busy_timeout``). PostgreSQL takes transaction-scoped advisory locks on every
key and transaction id of the batch, in ascending order of their 64-bit hashes (a consistent
order, so two batches can never deadlock), before it reads anything.

Durability: SQLite runs in WAL mode; ``synchronous=NORMAL`` (the default here) survives a crash
of the process (kill -9: the committed WAL frames are in the OS page cache) but not a power loss;
``synchronous=FULL`` survives both at the cost of an fsync per commit.

>>> import tempfile, numpy as np
>>> from txanomaly.features.online import OnlineFeatures
>>> d = tempfile.mkdtemp()
>>> store = Store(f"sqlite:///{d}/tx.db", OnlineFeatures("seed"))
>>> rec = {"transaction_id": "t1", "timestamp": 0, "origin_user_id": "u",
...        "destination_user_id": None, "origin_amount": 10.0, "destination_amount": None}
>>> def evaluate(features, records):
...     return [Verdict(0.5, False, {"score": 0.5}) for _ in features]
>>> store.ingest([rec], evaluate)[0].result
{'score': 0.5}
>>> store.ingest([rec], evaluate)[0].replayed
True
>>> store.close()
"""

from __future__ import annotations

import functools
import hashlib
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from txanomaly.errors import TxAnomalyError
from txanomaly.features.online import KeyId, KeyLog, OnlineFeatures
from txanomaly.scoring import Verdict

logger = logging.getLogger(__name__)

#: Rows of ``(kind, key, since)`` per history query: keeps SQLite under its bound-variable limit.
_KEYS_PER_QUERY = 300
_NO_LOWER_BOUND = -(2**62)
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
)
#: Clustered on (kind, key, ts, seq): a key's rows in log order, read by one range scan.
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
    sa.Column("shift", sa.Double, nullable=False),  # the key's, repeated: saves a lookup
    sqlite_with_rowid=False,
)
_PG_SEQUENCE = "txanomaly_arrival_seq"

_KEY_COLUMNS = ("seq", "ts", "pos", "amount", "cum_before", "cum", "d1", "d2", "shift")
# The hot path talks to the driver directly (SQLAlchemy's per-statement work cost more than
# the statements). Placeholders are written as "?" and turned into "%s" for psycopg.
_SQL_INSERT_TX = ("INSERT INTO transactions (seq, transaction_id, ts, content_hash, record, "
                  "features, anomaly_score, is_anomaly, result) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
_SQL_INSERT_KEY = ("INSERT INTO key_history (kind, key, ts, seq, pos, amount, cum_before, cum, "
                   "d1, d2, shift) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
_SQL_UPDATE_KEY = ("UPDATE key_history SET pos = ?, cum_before = ?, cum = ?, d1 = ?, d2 = ? "
                   "WHERE kind = ? AND key = ? AND ts = ? AND seq = ?")
_SQL_EXISTING = "SELECT transaction_id, content_hash, result FROM transactions " \
                "WHERE transaction_id IN ({marks})"
_SQL_LOCK = ("SELECT count(pg_advisory_xact_lock(h)) "
             "FROM unnest(CAST(? AS bigint[])) WITH ORDINALITY AS t(h, o)")
_SQL_NEXTVAL = f"SELECT nextval('{_PG_SEQUENCE}') FROM generate_series(1, ?)"
_SQL_MAX_SEQ = "SELECT coalesce(max(seq), 0) FROM transactions"


class StoreError(TxAnomalyError):
    """The database cannot be used (unsupported URL, unreachable server...)."""


class ConflictError(StoreError):
    """Transaction ids already stored (or repeated in the batch) with different content.

    ``conflicts`` lists ``(index in the batch, transactionId)``.
    """

    def __init__(self, conflicts: list[tuple[int, str]]):
        self.conflicts = conflicts
        ids = ", ".join(repr(tid) for _, tid in conflicts[:5])
        super().__init__(f"transactionId already used with different content: {ids}")


@dataclass(frozen=True)
class Ingested:
    """One transaction's outcome: its result, and whether it was already stored."""

    result: dict[str, Any]
    replayed: bool
    features: np.ndarray | None = None


@dataclass(frozen=True)
class StoredTransaction:
    """A stored transaction as :meth:`Store.get` returns it."""

    transaction_id: str
    timestamp: int
    record: dict[str, Any]
    features: list[float]
    result: dict[str, Any]


Evaluate = Callable[[np.ndarray, Sequence[Mapping[str, Any]]], Sequence[Verdict]]


def content_hash(record: Mapping[str, Any]) -> str:
    """A canonical hash of a flat record (key order of its ``extra`` fields does not matter)."""
    canonical = dict(record)
    if canonical.get("extra"):
        canonical["extra"] = orjson.loads(canonical["extra"])
    blob = orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(blob, digest_size=16).hexdigest()


def normalize_url(url: str) -> str:
    """SQLAlchemy URL for a ``sqlite:///path`` or ``postgresql://`` URL (psycopg 3 driver)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    if url.startswith(("sqlite:///", "postgresql+psycopg://")):
        return url
    raise StoreError(f"unsupported database URL {url.split('://')[0]!r}://...: expected "
                     "sqlite:///PATH or postgresql://USER@HOST:PORT/DB")


class Store:
    """Verdict transactions and per-key state in SQLite or PostgreSQL.

    Parameters
    ----------
    url : str
        ``sqlite:///path/to/file.db`` or ``postgresql://user@host:port/db``.
    online : OnlineFeatures
        The online feature engine of the model's feature set.
    schema : str, optional
        PostgreSQL only: the schema to use (created if missing); default ``search_path``.
    synchronous : {"NORMAL", "FULL"}
        SQLite only: ``NORMAL`` survives a process crash, ``FULL`` also a power loss.
    pool_size : int
        Connections kept open (PostgreSQL: per process).
    create : bool
        Create the tables if they do not exist.
    """

    def __init__(self, url: str, online: OnlineFeatures, *, schema: str | None = None,
                 synchronous: str = "NORMAL", pool_size: int = 8, create: bool = True):
        if synchronous.upper() not in SYNCHRONOUS_MODES:
            raise StoreError(f"synchronous must be one of {SYNCHRONOUS_MODES}, "
                             f"got {synchronous!r}")
        self.online = online
        self.url = normalize_url(url)
        self.dialect = "sqlite" if self.url.startswith("sqlite") else "postgresql"
        self.schema = schema
        self._write_lock = threading.Lock() if self.dialect == "sqlite" else None
        self.engine = self._engine(synchronous.upper(), pool_size)
        self._stop = threading.Event()
        self._checkpointer: threading.Thread | None = None
        if create:
            try:
                self.create_tables()
            except sa.exc.OperationalError as exc:
                self.engine.dispose()
                raise StoreError(f"cannot open the database: {exc.orig}") from None
        if self.dialect == "sqlite":
            self._checkpointer = threading.Thread(target=self._checkpoint_loop, daemon=True,
                                                  name="txanomaly-wal-checkpoint")
            self._checkpointer.start()

    # ------------------------------------------------------------------ setup
    def _engine(self, synchronous: str, pool_size: int) -> Engine:
        if self.dialect == "sqlite":
            engine = sa.create_engine(self.url, pool_size=pool_size, max_overflow=pool_size,
                                      connect_args={"check_same_thread": False})

            @event.listens_for(engine, "connect")
            def _pragmas(dbapi_conn: Any, _record: Any) -> None:
                dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute(f"PRAGMA synchronous={synchronous}")
                cur.execute("PRAGMA busy_timeout=30000")
                # Checkpoints run in a background thread (below), not inside a request's
                # commit, where they made the slowest 1 % of requests several times slower.
                cur.execute("PRAGMA wal_autocheckpoint=0")
                cur.close()

            @event.listens_for(engine, "begin")
            def _begin(conn: Connection) -> None:
                write = conn.get_execution_options().get("txanomaly_write", False)
                conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

            return engine
        connect_args: dict[str, Any] = {"prepare_threshold": 2}
        if self.schema is not None:
            if not self.schema.replace("_", "").isalnum():
                raise StoreError(f"invalid schema name {self.schema!r}")
            connect_args["options"] = f"-csearch_path={self.schema}"
        return sa.create_engine(self.url, pool_size=pool_size, max_overflow=pool_size,
                                pool_pre_ping=True, connect_args=connect_args)

    def create_tables(self) -> None:
        """Create the tables (and, on PostgreSQL, the schema and sequence) if missing."""
        with self.engine.connect().execution_options(txanomaly_write=True) as conn:
            if self.dialect == "postgresql":
                # Concurrent replicas may start together: serialise the DDL.
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7386411)")
                if self.schema is not None:
                    conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
                conn.exec_driver_sql(f"CREATE SEQUENCE IF NOT EXISTS {_PG_SEQUENCE}")
            metadata.create_all(conn)
            conn.commit()

    def drop_tables(self) -> None:
        """Drop everything the store created (tests use this to clean up)."""
        with self.engine.connect().execution_options(txanomaly_write=True) as conn:
            metadata.drop_all(conn)
            if self.dialect == "postgresql":
                conn.exec_driver_sql(f"DROP SEQUENCE IF EXISTS {_PG_SEQUENCE}")
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
    def _sql(self, sql: str) -> str:
        return sql if self.dialect == "sqlite" else sql.replace("?", "%s")

    @contextmanager
    def _transaction(self, write: bool) -> Iterator[Any]:
        """A driver cursor inside one database transaction (committed if ``write``)."""
        lock = self._write_lock if write else None
        if lock is not None:
            lock.acquire()
        try:
            conn = self.engine.raw_connection()
            try:
                cur = conn.cursor()
                if self.dialect == "sqlite":
                    cur.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield cur
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

    def ingest(self, records: Sequence[Mapping[str, Any]], evaluate: Evaluate, *,
               persist: bool = True) -> list[Ingested]:
        """Score a batch of parsed (flat) records in arrival order and store them.

        Parameters
        ----------
        records : sequence of dict
            Flat records from :func:`txanomaly.schema.parse_record`.
        evaluate : callable
            ``evaluate(features, records)`` gets the ``(n, d)`` raw features of the
            transactions not stored yet (and their records) and returns one :class:`Verdict`
            per row.
        persist : bool
            False: compute and score against the stored history, store nothing.

        Returns
        -------
        list of Ingested
            One per record, in order. A transaction already stored returns its stored result
            (``replayed=True``) and changes nothing.

        Raises
        ------
        ConflictError
            A transactionId is stored, or repeated in the batch, with different content;
            nothing is stored.
        """
        hashes = [content_hash(r) for r in records]
        first = _first_occurrences(records, hashes)
        with self._transaction(persist) as cur:
            if persist and self.dialect == "postgresql":
                self._lock_keys(cur, records)
            stored = self._existing(cur, list(first)) if persist else {}
            conflicts = [(i, r["transaction_id"]) for i, r in enumerate(records)
                         if r["transaction_id"] in stored
                         and stored[r["transaction_id"]][0] != hashes[i]]
            if conflicts:
                raise ConflictError(conflicts)
            todo = [i for i in first.values() if records[i]["transaction_id"] not in stored]
            fresh = self._score(cur, [records[i] for i in todo], [hashes[i] for i in todo],
                                evaluate, persist)
        by_id: dict[str, Ingested] = {tid: Ingested(orjson.loads(res), True)
                                      for tid, (_, res) in stored.items()}
        by_id.update({records[i]["transaction_id"]: out for i, out in zip(todo, fresh,
                                                                          strict=True)})
        return [by_id[r["transaction_id"]] for r in records]

    def _score(self, cur: Any, recs: list[Mapping[str, Any]], hashes: list[str],
               evaluate: Evaluate, persist: bool) -> list[Ingested]:
        if not recs:
            return []
        online = self.online
        logs = self._load_logs(cur, recs)
        seqs = self._next_seqs(cur, len(recs)) if persist else list(range(-len(recs), 0))
        feats = np.empty((len(recs), len(online.feature_set.features)), dtype=np.float64)
        dirty: dict[KeyId, int] = {}
        for j, rec in enumerate(recs):
            feats[j] = online.compute(rec, logs)
            ts = int(rec["timestamp"])
            for kid in online.key_ids(rec):
                log = logs.get(kid)
                p = log.insert_at(ts) if log is not None else 0
                dirty[kid] = min(dirty.get(kid, p), p)
            online.insert(rec, logs, seqs[j])
        scored = list(evaluate(feats, recs))
        if len(scored) != len(recs):
            raise TxAnomalyError(f"evaluate returned {len(scored)} results for "
                                 f"{len(recs)} rows")
        if persist:
            self._write(cur, recs, hashes, seqs, feats, scored, logs, dirty)
        return [Ingested(s.result, False, feats[j]) for j, s in enumerate(scored)]

    def _write(self, cur: Any, recs: list[Mapping[str, Any]], hashes: list[str],
               seqs: list[int], feats: np.ndarray, scored: list[Verdict],
               logs: dict[KeyId, KeyLog], dirty: dict[KeyId, int]) -> None:
        dumps = orjson.dumps
        cur.executemany(self._sql(_SQL_INSERT_TX), [
            (seqs[j], rec["transaction_id"], rec["timestamp"], hashes[j], dumps(rec).decode(),
             dumps(feats[j].tolist()).decode(), float(s.anomaly_score), bool(s.is_anomaly),
             dumps(s.result).decode())
            for j, (rec, s) in enumerate(zip(recs, scored, strict=True))])
        new_seqs = set(seqs)
        inserts: list[tuple[Any, ...]] = []
        updates: list[tuple[Any, ...]] = []
        for (kind, key), start in dirty.items():
            log = logs[(kind, key)]
            for i in range(start, len(log)):
                if log.seq[i] in new_seqs:
                    inserts.append((kind, key, log.ts[i], log.seq[i], log.pos[i], log.amount[i],
                                    log.cum_before[i], log.cum[i], log.d1[i], log.d2[i],
                                    log.shift))
                else:  # a late arrival moved this row: its running sums changed
                    updates.append((log.pos[i], log.cum_before[i], log.cum[i], log.d1[i],
                                    log.d2[i], kind, key, log.ts[i], log.seq[i]))
        if inserts:
            cur.executemany(self._sql(_SQL_INSERT_KEY), inserts)
        if updates:
            cur.executemany(self._sql(_SQL_UPDATE_KEY), updates)

    def _lock_keys(self, cur: Any, records: Sequence[Mapping[str, Any]]) -> None:
        names = {f"tx\x1e{r['transaction_id']}" for r in records}
        for rec in records:
            names.update(f"{kind}\x1e{key}" for kind, key in self.online.key_ids(rec))
        cur.execute(self._sql(_SQL_LOCK), (sorted({_lock_hash(n) for n in names}),))
        cur.fetchall()

    def _existing(self, cur: Any, ids: list[str]) -> dict[str, tuple[str, str]]:
        found: dict[str, tuple[str, str]] = {}
        for start in range(0, len(ids), 500):
            part = ids[start:start + 500]
            cur.execute(self._sql(_SQL_EXISTING.format(marks=", ".join("?" * len(part)))),
                        part)
            found.update({tid: (h, res) for tid, h, res in cur.fetchall()})
        return found

    def _next_seqs(self, cur: Any, n: int) -> list[int]:
        if self.dialect == "postgresql":
            cur.execute(self._sql(_SQL_NEXTVAL), (n,))
            return [int(v) for (v,) in cur.fetchall()]
        # SQLite: this transaction holds the only write lock, so max + 1... is free.
        cur.execute(_SQL_MAX_SEQ)
        last = int(cur.fetchone()[0])
        return list(range(last + 1, last + n + 1))

    def _load_logs(self, cur: Any, recs: Sequence[Mapping[str, Any]]) -> dict[KeyId, KeyLog]:
        since: dict[KeyId, int] = {}
        for rec in recs:
            bound = self.online.history_since(int(rec["timestamp"]))
            for kid in self.online.key_ids(rec):
                since[kid] = min(since.get(kid, bound), bound)
        wanted = list(since.items())
        logs: dict[KeyId, KeyLog] = {}
        for start in range(0, len(wanted), _KEYS_PER_QUERY):
            chunk = wanted[start:start + _KEYS_PER_QUERY]
            params: list[Any] = []
            for (kind, key), bound in chunk:
                params += (kind, key, bound)
            cur.execute(self._sql(_history_sql(len(chunk))), params)
            for row in cur.fetchall():
                kind, key, seq, ts, pos, amount, cum_before, cum, d1, d2, shift = row
                log = logs.get((kind, key))
                if log is None:
                    log = logs[(kind, key)] = KeyLog(shift=float(shift))
                log.seq.append(int(seq))
                log.ts.append(int(ts))
                log.pos.append(int(pos))
                log.amount.append(float(amount))
                log.cum_before.append(float(cum_before))
                log.cum.append(float(cum))
                log.d1.append(float(d1))
                log.d2.append(float(d2))
        return logs

    # ------------------------------------------------------------------ reading
    def get(self, transaction_id: str) -> StoredTransaction | None:
        """The stored transaction, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(transactions.c.transaction_id, transactions.c.ts,
                          transactions.c.record, transactions.c.features,
                          transactions.c.result)
                .where(transactions.c.transaction_id == transaction_id)).first()
        if row is None:
            return None
        return StoredTransaction(row[0], int(row[1]), orjson.loads(row[2]),
                                 orjson.loads(row[3]), orjson.loads(row[4]))

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
        return [StoredTransaction(r[0], int(r[1]), orjson.loads(r[2]), orjson.loads(r[3]),
                                  orjson.loads(r[4])) for r in rows]

    def count(self) -> int:
        """Number of stored transactions."""
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(transactions))
                       .scalar_one())

    def key_rows(self) -> list[tuple[Any, ...]]:
        """Every key-history row, ordered (the whole per-key state, for checks and tests)."""
        h = key_history.c
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(h.kind, h.key, *[h[c] for c in _KEY_COLUMNS])
                                .order_by(h.kind, h.key, h.pos)).all()
        return [tuple(r) for r in rows]


def _first_occurrences(records: Sequence[Mapping[str, Any]], hashes: list[str]
                       ) -> dict[str, int]:
    first: dict[str, int] = {}
    conflicts = []
    for i, rec in enumerate(records):
        tid = rec["transaction_id"]
        if tid not in first:
            first[tid] = i
        elif hashes[first[tid]] != hashes[i]:
            conflicts.append((i, tid))
    if conflicts:
        raise ConflictError(conflicts)
    return first


def _lock_hash(name: str) -> int:
    """A signed 64-bit hash (PostgreSQL advisory locks take a bigint)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big",
                          signed=True)


_HISTORY_SQL = (
    "WITH wanted(kind, key, since) AS (VALUES {values}) "
    "SELECT h.kind, h.key, h.seq, h.ts, h.pos, h.amount, h.cum_before, h.cum, h.d1, h.d2, "
    "h.shift FROM wanted w JOIN key_history h ON h.kind = w.kind AND h.key = w.key "
    "AND h.ts >= COALESCE((SELECT max(p.ts) FROM key_history p WHERE p.kind = w.kind "
    "AND p.key = w.key AND p.ts <= w.since), {floor}) "
    "ORDER BY h.kind, h.key, h.pos")


@functools.lru_cache(maxsize=64)
def _history_sql(n: int) -> str:
    """The rows of ``n`` keys from (the last at or before their ``since``) on, one query."""
    values = ", ".join(["(?, ?, CAST(? AS BIGINT))"] * n)
    return _HISTORY_SQL.format(values=values, floor=_NO_LOWER_BOUND)
