"""A storage in this process's memory: no dependency, nothing survives the process.

For tests, notebooks and trying the service's semantics without a database. Thread-safe: one
lock covers each database transaction, so transactions run one at a time (like SQLite's
single writer), and writes become visible only when the transaction ends without an exception.

:mod:`txanomaly.ingest` shows it in use. Nothing is visible before the transaction ends:

>>> storage = MemoryStorage()
>>> with storage.transaction(write=True) as tx:
...     tx.write([(1, "t1", 0, "hash", "{}", "[1.0]", 1.0, False, "{}")], [], [])
...     storage.count()
0
>>> storage.count(), storage.get("t1").features
(1, [1.0])
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

from txanomaly.features.online import KeyId, KeyLog, KeyShift
from txanomaly.storage.base import (
    KeyRow,
    StorageBusy,
    StorageError,
    StoredTransaction,
    TransactionRow,
)

_LOG_COLUMNS = ("seq", "ts", "pos", "amount", "cum_before", "cum", "d1", "d2", "hour_sin_sum",
                "hour_cos_sum")


class MemoryStorage:
    """Scored transactions and per-key logs in dicts (see the module docstring)."""

    #: One transaction at a time (a lock), so keys need no locks of their own.
    locks_keys = False

    def __init__(self) -> None:
        self._lock = threading.RLock()  # reentrant: reading inside a transaction is fine
        self._transactions: dict[str, TransactionRow] = {}
        self._logs: dict[KeyId, KeyLog] = {}
        self._last_seq = 0

    @contextmanager
    def transaction(self, write: bool, wait: bool = True) -> Iterator[_MemoryTransaction]:
        """Hold the lock; apply the staged writes at the end if ``write`` and no error."""
        if not self._lock.acquire(blocking=wait):
            raise StorageBusy("another transaction holds the in-memory storage")
        try:
            tx = _MemoryTransaction(self, write)
            yield tx
            if write:
                self._apply(tx)
        finally:
            self._lock.release()

    def _apply(self, tx: _MemoryTransaction) -> None:
        for row in tx.transactions:
            self._transactions[row[1]] = row
        for kind, key, ts, amount, d, _, h_sin, h_cos in tx.shifts:  # in order, first
            log = self._logs.get((kind, key))
            if log is not None:  # a key new in this batch has no stored rows to move
                log.shift_from(bisect.bisect_right(log.ts, ts), amount, d, h_sin, h_cos)
        # By key and position: each new row goes to its final place.
        for kind, key, seq, ts, pos, *sums, shift in sorted(tx.key_rows,
                                                           key=lambda r: (r[0], r[1], r[4])):
            log = self._logs.setdefault((kind, key), KeyLog(shift=shift))
            if pos > len(log):
                raise StorageError(f"key {kind}:{key}: row at position {pos} of {len(log)}")
            for name, value in zip(_LOG_COLUMNS, (seq, ts, pos, *sums), strict=True):
                getattr(log, name).insert(pos, value)
        self._last_seq = max(self._last_seq, tx.last_seq)

    def get(self, transaction_id: str) -> StoredTransaction | None:
        """The stored transaction, or None."""
        row = self._transactions.get(transaction_id)
        return None if row is None else _stored(row)

    def anomalies(self, start: int | None = None, end: int | None = None, limit: int = 100,
                  after: tuple[int, str] | None = None) -> list[StoredTransaction]:
        """Flagged transactions with ``start <= timestamp < end``, by (timestamp, id)."""
        with self._lock:
            flagged = sorted((row[2], row[1], row) for row in self._transactions.values()
                             if row[7])
        rows = [row for ts, tid, row in flagged
                if (start is None or ts >= start) and (end is None or ts < end)
                and (after is None or (ts, tid) > after)]
        return [_stored(row) for row in rows[:limit]]

    def count(self) -> int:
        """Number of stored transactions."""
        return len(self._transactions)

    def key_rows(self) -> list[KeyRow]:
        """Every key row, by (kind, key, pos)."""
        with self._lock:
            return [(kind, key, *row, log.shift)
                    for (kind, key), log in sorted(self._logs.items())
                    for row in zip(*(getattr(log, c) for c in _LOG_COLUMNS), strict=True)]

    def ping(self) -> None:
        """Always answers."""

    def close(self) -> None:
        """Nothing to release."""


class _MemoryTransaction:
    """Reads the committed state; stages writes for :meth:`MemoryStorage._apply`."""

    def __init__(self, storage: MemoryStorage, write: bool):
        self.storage = storage
        self.write_allowed = write
        self.transactions: list[TransactionRow] = []
        self.key_rows: list[KeyRow] = []
        self.shifts: list[KeyShift] = []
        self.last_seq = storage._last_seq

    def lock(self, hashes: Sequence[int]) -> None:
        """Nothing to do: the storage's lock is held."""

    def existing(self, ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        stored = self.storage._transactions
        return {tid: (stored[tid][3], stored[tid][8]) for tid in ids if tid in stored}

    def key_logs(self, spans: Mapping[KeyId, Sequence[tuple[int, int]]]
                 ) -> dict[KeyId, KeyLog]:
        logs: dict[KeyId, KeyLog] = {}
        for kid, parts in spans.items():
            log = self.storage._logs.get(kid)
            if log is not None:
                logs[kid] = _rows(log, sorted({i for since, until in parts
                                               for i in _span(log, since, until)}))
        return logs

    def next_seqs(self, n: int) -> list[int]:
        first = self.last_seq + 1
        self.last_seq += n
        return list(range(first, first + n))

    def write(self, transactions: Sequence[TransactionRow], new_keys: Sequence[KeyRow],
              shifts: Sequence[KeyShift]) -> None:
        if not self.write_allowed:
            raise StorageError("write in a read-only transaction")
        self.transactions.extend(transactions)
        self.key_rows.extend(new_keys)
        self.shifts.extend(shifts)


def _span(log: KeyLog, since: int, until: int) -> range:
    """Indices of the last row at or before ``since`` (and its ties) to the last at or before
    ``until``."""
    last = bisect.bisect_right(log.ts, since) - 1
    start = bisect.bisect_left(log.ts, log.ts[last]) if last >= 0 else 0
    return range(start, bisect.bisect_right(log.ts, until))


def _rows(log: KeyLog, indices: list[int]) -> KeyLog:
    """A copy of these rows of ``log``."""
    part = KeyLog(shift=log.shift)
    for name in _LOG_COLUMNS:
        column = getattr(log, name)
        getattr(part, name).extend(column[i] for i in indices)
    return part


def _stored(row: TransactionRow) -> StoredTransaction:
    _, tid, ts, _, record, features, _, _, result = row
    return StoredTransaction.from_json(tid, ts, record, features, result)
