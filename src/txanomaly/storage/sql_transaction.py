"""The five calls of one SQL database transaction, on a DB-API cursor (SQLite or psycopg).

The hot path talks to the driver directly: SQLAlchemy's per-statement work cost more than the
statements themselves. Placeholders are written as ``?`` and turned into ``%s`` for psycopg.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from txanomaly.features.online import KeyId, KeyLog
from txanomaly.storage.base import KEY_COLUMNS, KeyRow, TransactionRow

#: Rows of ``(kind, key, since)`` per history query: keeps SQLite under its bound-variable limit.
_KEYS_PER_QUERY = 300
#: Transaction ids per ``IN (...)`` lookup, for the same reason.
_IDS_PER_QUERY = 500
_NO_LOWER_BOUND = -(2**62)
PG_SEQUENCE = "txanomaly_arrival_seq"

_SQL_INSERT_TX = ("INSERT INTO transactions (seq, transaction_id, ts, content_hash, record, "
                  "features, anomaly_score, is_anomaly, result) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
_SQL_INSERT_KEY = (f"INSERT INTO key_history ({', '.join(KEY_COLUMNS)}) "
                   f"VALUES ({', '.join('?' * len(KEY_COLUMNS))})")
_SQL_UPDATE_KEY = ("UPDATE key_history SET pos = ?, cum_before = ?, cum = ?, d1 = ?, d2 = ? "
                   "WHERE kind = ? AND key = ? AND ts = ? AND seq = ?")
_SQL_EXISTING = ("SELECT transaction_id, content_hash, result FROM transactions "
                 "WHERE transaction_id IN ({marks})")
_SQL_LOCK = ("SELECT count(pg_advisory_xact_lock(h)) "
             "FROM unnest(CAST(? AS bigint[])) WITH ORDINALITY AS t(h, o)")
_SQL_NEXTVAL = f"SELECT nextval('{PG_SEQUENCE}') FROM generate_series(1, ?)"
_SQL_MAX_SEQ = "SELECT coalesce(max(seq), 0) FROM transactions"
_HISTORY_SQL = (
    "WITH wanted(kind, key, since) AS (VALUES {values}) "
    "SELECT h.kind, h.key, h.seq, h.ts, h.pos, h.amount, h.cum_before, h.cum, h.d1, h.d2, "
    "h.shift FROM wanted w JOIN key_history h ON h.kind = w.kind AND h.key = w.key "
    "AND h.ts >= COALESCE((SELECT max(p.ts) FROM key_history p WHERE p.kind = w.kind "
    "AND p.key = w.key AND p.ts <= w.since), {floor}) "
    "ORDER BY h.kind, h.key, h.pos")


class SqlTransaction:
    """:class:`~txanomaly.storage.base.StorageTransaction` over a driver cursor.

    Parameters
    ----------
    cursor : DB-API cursor
        Inside a database transaction that :meth:`SqlStorage.transaction` opened.
    dialect : {"sqlite", "postgresql"}
    """

    def __init__(self, cursor: Any, dialect: str):
        self.cur = cursor
        self.dialect = dialect

    def _sql(self, sql: str) -> str:
        return sql if self.dialect == "sqlite" else sql.replace("?", "%s")

    def lock(self, hashes: Sequence[int]) -> None:
        """PostgreSQL: transaction-scoped advisory locks, taken in the order given."""
        if self.dialect == "postgresql":
            self.cur.execute(self._sql(_SQL_LOCK), (list(hashes),))
            self.cur.fetchall()

    def existing(self, ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        found: dict[str, tuple[str, str]] = {}
        for start in range(0, len(ids), _IDS_PER_QUERY):
            part = ids[start:start + _IDS_PER_QUERY]
            self.cur.execute(self._sql(_SQL_EXISTING.format(marks=", ".join("?" * len(part)))),
                             part)
            found.update({tid: (h, res) for tid, h, res in self.cur.fetchall()})
        return found

    def next_seqs(self, n: int) -> list[int]:
        if self.dialect == "postgresql":
            self.cur.execute(self._sql(_SQL_NEXTVAL), (n,))
            return [int(v) for (v,) in self.cur.fetchall()]
        # SQLite: this transaction holds the only write lock, so max + 1... is free.
        self.cur.execute(_SQL_MAX_SEQ)
        last = int(self.cur.fetchone()[0])
        return list(range(last + 1, last + n + 1))

    def key_logs(self, since: Mapping[KeyId, int]) -> dict[KeyId, KeyLog]:
        wanted = list(since.items())
        logs: dict[KeyId, KeyLog] = {}
        for start in range(0, len(wanted), _KEYS_PER_QUERY):
            chunk = wanted[start:start + _KEYS_PER_QUERY]
            params: list[Any] = []
            for (kind, key), bound in chunk:
                params += (kind, key, bound)
            self.cur.execute(self._sql(_history_sql(len(chunk))), params)
            for row in self.cur.fetchall():
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

    def write(self, transactions: Sequence[TransactionRow], new_keys: Sequence[KeyRow],
              changed_keys: Sequence[KeyRow]) -> None:
        if transactions:
            self.cur.executemany(self._sql(_SQL_INSERT_TX), transactions)
        if new_keys:
            self.cur.executemany(self._sql(_SQL_INSERT_KEY), new_keys)
        if changed_keys:  # late arrivals only: rare, so reordering the fields costs nothing
            self.cur.executemany(self._sql(_SQL_UPDATE_KEY), [
                (pos, cum_before, cum, d1, d2, kind, key, ts, seq)
                for kind, key, seq, ts, pos, _, cum_before, cum, d1, d2, _ in changed_keys])


@functools.lru_cache(maxsize=64)
def _history_sql(n: int) -> str:
    """The rows of ``n`` keys from (the last at or before their ``since``) on, one query."""
    values = ", ".join(["(?, ?, CAST(? AS BIGINT))"] * n)
    return _HISTORY_SQL.format(values=values, floor=_NO_LOWER_BOUND)
