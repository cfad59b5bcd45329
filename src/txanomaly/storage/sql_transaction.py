"""The five calls of one SQL database transaction, on a DB-API cursor (SQLite or psycopg).

The hot path talks to the driver directly: SQLAlchemy's per-statement work cost more than the
statements themselves. Placeholders are written as ``?`` and turned into ``%s`` for psycopg.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from txanomaly.features.online import KeyId, KeyLog, KeyShift
from txanomaly.storage.base import KEY_COLUMNS, KeyRow, TransactionRow

#: Rows of ``(kind, key, since, until)`` per SQLite history query: keeps it under its
#: bound-variable limit (PostgreSQL takes them all at once, as arrays).
_KEYS_PER_QUERY = 300
#: Transaction ids per ``IN (...)`` lookup, for the same reason.
_IDS_PER_QUERY = 500
_NO_LOWER_BOUND = -(2**62)
PG_SEQUENCE = "txanomaly_arrival_seq"

_SQL_INSERT_TX = ("INSERT INTO transactions (seq, transaction_id, ts, content_hash, record, "
                  "features, anomaly_score, is_anomaly, result) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
_SQL_INSERT_KEY = (f"INSERT INTO key_history ({', '.join(KEY_COLUMNS)}) "
                   f"VALUES ({', '.join('?' * len(KEY_COLUMNS))})")
#: A late arrival moves the rows after it in one statement, without reading them. Only later
#: timestamps: a stored row tied with it arrived before it, so it stays before it.
_SQL_SHIFT_KEY = ("UPDATE key_history SET pos = pos + 1, cum_before = cum_before + ?, "
                  "cum = cum + ?, d1 = d1 + ?, d2 = d2 + ?, hour_sin_sum = hour_sin_sum + ?, "
                  "hour_cos_sum = hour_cos_sum + ? WHERE kind = ? AND key = ? AND ts > ?")
_SQL_EXISTING = ("SELECT transaction_id, content_hash, result FROM transactions "
                 "WHERE transaction_id IN ({marks})")
_SQL_LOCK = ("SELECT count(pg_advisory_xact_lock(h)) "
             "FROM unnest(CAST(? AS bigint[])) WITH ORDINALITY AS t(h, o)")
_SQL_NEXTVAL = f"SELECT nextval('{PG_SEQUENCE}') FROM generate_series(1, ?)"
_SQL_MAX_SEQ = "SELECT coalesce(max(seq), 0) FROM transactions"
#: Spans may share rows (a key's last row): DISTINCT, in the primary key's order (log order).
_HISTORY_SQL = (
    "WITH wanted(kind, key, since, until) AS (VALUES {values}) "
    "SELECT DISTINCT h.kind, h.key, h.ts, h.seq, h.pos, h.amount, h.cum_before, h.cum, h.d1, "
    "h.d2, h.hour_sin_sum, h.hour_cos_sum, h.shift FROM wanted w JOIN key_history h "
    "ON h.kind = w.kind AND h.key = w.key "
    "AND h.ts >= COALESCE((SELECT max(p.ts) FROM key_history p WHERE p.kind = w.kind "
    "AND p.key = w.key AND p.ts <= w.since), {floor}) AND h.ts <= w.until "
    "ORDER BY h.kind, h.key, h.ts, h.seq")
#: PostgreSQL: the same rows, the spans passed as four arrays: one statement of constant text
#: for any number of spans, so psycopg converts its placeholders once (the VALUES text of 300
#: spans, ~15 KB, was re-parsed by psycopg on every call: past its 4 KB cache limit) and can
#: prepare it. The LATERAL subquery behind ``OFFSET 0`` is never flattened into a join: each
#: span is one range scan of the primary key, whatever the planner guesses about the spans
#: (knowing 600 of them, it chose a merge join that ran the ``max(ts)`` subquery once per
#: row of every key it met, ~4x the time; a prepared plan cannot go wrong either). The arrays
#: go in binary (``%b``): psycopg's text form quotes each string through a regular
#: expression (key_logs 23.4 -> 20.0 ms median per batch of 100, same run).
_PG_HISTORY_SQL = (
    "SELECT DISTINCT h.kind, h.key, h.ts, h.seq, h.pos, h.amount, h.cum_before, h.cum, h.d1, "
    "h.d2, h.hour_sin_sum, h.hour_cos_sum, h.shift FROM unnest(CAST(%b AS text[]), "
    "CAST(%b AS text[]), CAST(%b AS bigint[]), "
    "CAST(%b AS bigint[])) AS w(kind, key, since, until) CROSS JOIN LATERAL ("
    "SELECT * FROM key_history h WHERE h.kind = w.kind AND h.key = w.key "
    "AND h.ts >= COALESCE((SELECT max(p.ts) FROM key_history p WHERE p.kind = w.kind "
    f"AND p.key = w.key AND p.ts <= w.since), {_NO_LOWER_BOUND}) AND h.ts <= w.until "
    "OFFSET 0) h ORDER BY h.kind, h.key, h.ts, h.seq")


class SqlTransaction:
    """:class:`~txanomaly.storage.base.StorageTransaction` over a driver cursor.

    Parameters
    ----------
    cursor : DB-API cursor
        Inside a database transaction that :meth:`SqlStorage.transaction` opened.
    dialect : {"sqlite", "postgresql"}
    lock_salt : int
        XOR-ed into the advisory lock keys (:func:`lock_salt` of the schema).
    """

    def __init__(self, cursor: Any, dialect: str, lock_salt: int = 0):
        self.cur = cursor
        self.dialect = dialect
        self.lock_salt = lock_salt
        self._locks: list[int] | None = None

    def _sql(self, sql: str) -> str:
        return sql if self.dialect == "sqlite" else sql.replace("?", "%s")

    @contextmanager
    def _pipeline(self) -> Iterator[None]:
        """PostgreSQL: the statements inside go in one round trip (psycopg's pipeline mode;
        the server still runs them one after the other, each with its own snapshot)."""
        if self.dialect != "postgresql":
            yield
            return
        with self.cur.connection.pipeline():
            yield

    def lock(self, hashes: Sequence[int]) -> None:
        """PostgreSQL: transaction-scoped advisory locks, taken in the order given.

        Sent with :meth:`existing`'s first query, in the same round trip: the server takes
        the locks before that query starts, so it sees what the lock holders committed.
        """
        if self.dialect == "postgresql":
            # Salted, then sorted again: one consistent order among this schema's writers.
            self._locks = sorted(h ^ self.lock_salt for h in hashes)

    def _send_locks(self) -> None:
        if self._locks is not None:
            self.cur.connection.cursor().execute(self._sql(_SQL_LOCK), (self._locks,))
            self._locks = None

    def existing(self, ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        found: dict[str, tuple[str, str]] = {}
        for start in range(0, len(ids), _IDS_PER_QUERY):
            part = ids[start:start + _IDS_PER_QUERY]
            with self._pipeline():
                self._send_locks()  # with the first query
                self.cur.execute(
                    self._sql(_SQL_EXISTING.format(marks=", ".join("?" * len(part)))), part)
                rows = self.cur.fetchall()
            found.update({tid: (h, res) for tid, h, res in rows})
        self._send_locks()  # no ids: alone
        return found

    def next_seqs(self, n: int) -> list[int]:
        if self.dialect == "postgresql":
            self.cur.execute(self._sql(_SQL_NEXTVAL), (n,))
            return [int(v) for (v,) in self.cur.fetchall()]
        # SQLite: this transaction holds the only write lock, so max + 1... is free.
        self.cur.execute(_SQL_MAX_SEQ)
        last = int(self.cur.fetchone()[0])
        return list(range(last + 1, last + n + 1))

    def key_logs(self, spans: Mapping[KeyId, Sequence[tuple[int, int]]]
                 ) -> dict[KeyId, KeyLog]:
        wanted = [(kind, key, since, until) for (kind, key), parts in spans.items()
                  for since, until in parts]
        logs: dict[KeyId, KeyLog] = {}
        if self.dialect == "postgresql":
            if wanted:
                columns = [list(c) for c in zip(*wanted, strict=True)]
                self.cur.execute(_PG_HISTORY_SQL, columns)
                for row in self.cur.fetchall():
                    _append_row(logs, row)
            return logs
        for start in range(0, len(wanted), _KEYS_PER_QUERY):
            chunk = wanted[start:start + _KEYS_PER_QUERY]
            self.cur.execute(_history_sql(len(chunk)),
                             [value for span in chunk for value in span])
            for row in self.cur.fetchall():
                _append_row(logs, row)
        return logs

    def write(self, transactions: Sequence[TransactionRow], new_keys: Sequence[KeyRow],
              shifts: Sequence[KeyShift]) -> None:
        with self._pipeline():  # one round trip for the two or three statements
            self._write(transactions, new_keys, shifts)

    def _write(self, transactions: Sequence[TransactionRow], new_keys: Sequence[KeyRow],
               shifts: Sequence[KeyShift]) -> None:
        if transactions:
            self.cur.executemany(self._sql(_SQL_INSERT_TX), transactions)
        if shifts:  # late arrivals only; before the batch's rows, which hold their final sums
            self.cur.executemany(self._sql(_SQL_SHIFT_KEY), [
                (amount, amount, d, dd, h_sin, h_cos, kind, key, ts)
                for kind, key, ts, amount, d, dd, h_sin, h_cos in shifts])
        if new_keys:
            self.cur.executemany(self._sql(_SQL_INSERT_KEY), new_keys)


def _append_row(logs: dict[KeyId, KeyLog], row: Sequence[Any]) -> None:
    """Add one history row (in log order) to its key's log, unless a span already gave it.

    Chunks of spans are separate queries, so the same row can come twice (a key's last row).
    """
    kind, key, ts, seq, pos, amount, cum_before, cum, d1, d2, hour_sin, hour_cos, shift = row
    log = logs.get((kind, key))
    if log is None:
        log = logs[(kind, key)] = KeyLog(shift=float(shift))
    elif int(pos) <= log.pos[-1]:
        return
    log.seq.append(int(seq))
    log.ts.append(int(ts))
    log.pos.append(int(pos))
    log.amount.append(float(amount))
    log.cum_before.append(float(cum_before))
    log.cum.append(float(cum))
    log.d1.append(float(d1))
    log.d2.append(float(d2))
    log.hour_sin_sum.append(float(hour_sin))
    log.hour_cos_sum.append(float(hour_cos))


def lock_salt(schema: str | None) -> int:
    """A signed 64-bit value XOR-ed into a schema's advisory lock keys (0: no schema)."""
    if schema is None:
        return 0
    digest = hashlib.blake2b(schema.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@functools.lru_cache(maxsize=64)
def _history_sql(n: int) -> str:
    """The rows of ``n`` keys from (the last at or before their ``since``) on, one query."""
    values = ", ".join(["(?, ?, CAST(? AS BIGINT), CAST(? AS BIGINT))"] * n)
    return _HISTORY_SQL.format(values=values, floor=_NO_LOWER_BOUND)
