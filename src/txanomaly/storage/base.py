"""The storage interface: what ingestion needs from a database, and what the service reads.

A storage keeps two things, written together in one database transaction:

* scored transactions (flat record, features, score, verdict), keyed by ``transactionId``;
* each key's :class:`~txanomaly.features.online.KeyLog` rows (origin user, destination user,
  (origin, destination) pair), from which the online engine computes the next transaction's
  features exactly as the batch engine would.

A storage only stores and loads. Everything else (content hashes, duplicates and conflicts,
the order in which keys are locked, the online features and which key rows changed) is done
once, in :func:`txanomaly.ingest.ingest`, for every storage. A new backend implements
:class:`Storage` and :class:`StorageTransaction` and runs the same tests
(``tests/test_ingest.py``, parametrised over every implementation).

Row shapes are plain tuples (the SQL storage hands them to the driver's ``executemany`` as
they are): :data:`TRANSACTION_COLUMNS` and :data:`KEY_COLUMNS` name their fields in order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from txanomaly.errors import TxAnomalyError
from txanomaly.features.online import KeyId, KeyLog, KeyShift

#: The fields of a :data:`TransactionRow`, in order (JSON fields are encoded text).
TRANSACTION_COLUMNS = ("seq", "transaction_id", "ts", "content_hash", "record", "features",
                       "anomaly_score", "is_anomaly", "result")
#: ``(seq, transaction_id, ts, content_hash, record JSON, features JSON, anomaly_score,
#: is_anomaly, result JSON)``; ``seq`` is the arrival number.
TransactionRow = tuple[int, str, int, str, str, str, float, bool, str]
#: The fields of a :data:`KeyRow`, in order: one row of a key's
#: :class:`~txanomaly.features.online.KeyLog` (``pos`` is its index in the key's whole log).
KEY_COLUMNS = ("kind", "key", "seq", "ts", "pos", "amount", "cum_before", "cum", "d1", "d2",
               "hour_sin_sum", "hour_cos_sum", "shift")
KeyRow = tuple[str, str, int, int, int, float, float, float, float, float, float, float, float]
#: A time after every transaction's: the span ``(END, END)`` of
#: :meth:`StorageTransaction.key_logs` is a key's last row.
END = 2**62


#: Said when SQLAlchemy or psycopg, which only the ``[serve]`` extra installs, is missing.
MISSING_SQL_EXTRA = "the SQL storage needs the serve extra: pip install 'txanomaly[serve]'"


class StorageError(TxAnomalyError):
    """The database cannot be used (unsupported URL, unreachable server, missing extra...)."""


class StorageBusy(StorageError):
    """A transaction asked not to wait (``wait=False``) would have had to: nothing was done."""


@dataclass(frozen=True)
class StoredTransaction:
    """A stored transaction as :meth:`Storage.get` returns it."""

    transaction_id: str
    timestamp: int
    record: dict[str, Any]
    features: list[float]
    result: dict[str, Any]

    @classmethod
    def from_json(cls, transaction_id: str, ts: int, record: str | bytes,
                  features: str | bytes, result: str | bytes) -> StoredTransaction:
        """Decode the stored JSON fields of a transaction row."""
        return cls(transaction_id, int(ts), orjson.loads(record), orjson.loads(features),
                   orjson.loads(result))


class StorageTransaction(Protocol):
    """One database transaction of a storage: what :func:`~txanomaly.ingest.ingest` calls.

    Nothing it writes is seen by others before the transaction commits, and nothing is
    written if it ends with an exception.
    """

    def lock(self, hashes: Sequence[int]) -> None:
        """Hold these 64-bit key hashes until the transaction ends (given in ascending order,
        so two transactions never deadlock). Called only when :attr:`Storage.locks_keys`."""

    def existing(self, ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        """``{transactionId: (content hash, result JSON)}`` of the ids already stored."""

    def key_logs(self, spans: Mapping[KeyId, Sequence[tuple[int, int]]]
                 ) -> dict[KeyId, KeyLog]:
        """Per key, for each span ``(since, until)``: its last row with ``ts <= since`` (and
        any tied with it) and every later row with ``ts <= until``; each row once, in log
        order. Keys with no rows are left out."""

    def next_seqs(self, n: int) -> list[int]:
        """``n`` new arrival numbers, ascending, larger than any committed before."""

    def write(self, transactions: Sequence[TransactionRow], new_keys: Sequence[KeyRow],
              shifts: Sequence[KeyShift]) -> None:
        """Add transactions and key rows, and move stored key rows after late arrivals.

        Each shift ``(kind, key, ts, amount, d, dd, hour_sin, hour_cos)``, applied in the
        order given and before ``new_keys`` are added, moves every stored row of the key with
        a later timestamp: ``pos + 1``, ``cum_before + amount``, ``cum + amount``, ``d1 + d``,
        ``d2 + dd``, ``hour_sin_sum + hour_sin``, ``hour_cos_sum + hour_cos``
        (one floating-point addition each, as :meth:`KeyLog.shift_from
        <txanomaly.features.online.KeyLog.shift_from>` does). ``new_keys`` hold their final
        positions and sums.
        """


class Storage(Protocol):
    """Where scored transactions and the keys' history live (SQL, in memory...)."""

    #: True when several writers may run at once, so :func:`~txanomaly.ingest.ingest` must
    #: lock the batch's keys; False when a write transaction already excludes every other.
    locks_keys: bool

    def transaction(self, write: bool, wait: bool = True
                    ) -> AbstractContextManager[StorageTransaction]:
        """A database transaction: committed at the end if ``write``, else rolled back.

        ``wait=False``: raise :class:`StorageBusy` at once, before anything is read, when
        another writer holds the database (the service then hands the work to its database
        thread instead of waiting on the event loop).
        """

    def get(self, transaction_id: str) -> StoredTransaction | None:
        """The stored transaction, or None."""

    def anomalies(self, start: int | None = None, end: int | None = None, limit: int = 100,
                  after: tuple[int, str] | None = None) -> list[StoredTransaction]:
        """Flagged transactions with ``start <= timestamp < end``, by (timestamp, id).

        ``after`` is the (timestamp, transactionId) of the last row of the previous page.
        """

    def count(self) -> int:
        """Number of stored transactions."""

    def key_rows(self) -> list[KeyRow]:
        """Every key row, by (kind, key, pos): the whole per-key state, for checks and tests."""

    def ping(self) -> None:
        """Raise if the storage cannot answer."""

    def close(self) -> None:
        """Release connections and threads."""


__all__ = ["END", "KEY_COLUMNS", "MISSING_SQL_EXTRA", "TRANSACTION_COLUMNS", "KeyRow", "Storage",
           "StorageError", "StorageTransaction", "StoredTransaction", "TransactionRow"]
