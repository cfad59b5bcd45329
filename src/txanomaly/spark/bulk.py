"""Bulk writes into the service's store: PostgreSQL ``COPY``, else the store's own ``write``.

:func:`txanomaly.spark.history.load_history` streams the key history and the scored
transactions from the cluster through the driver; this module puts them into the store:

- PostgreSQL (:class:`~txanomaly.storage.sql.SqlStorage` on a ``postgresql://`` URL): one
  binary ``COPY ... FROM STDIN`` per batch (psycopg's ``cursor.copy``), each batch its own
  database transaction. ``COPY`` sends the rows as one stream, parsed and inserted by the
  server without a statement per row;
- any other store (SQLite, :class:`~txanomaly.storage.MemoryStorage`): its own
  :meth:`~txanomaly.storage.base.StorageTransaction.write`, a batch per transaction (SQLite's
  ``executemany`` inside one transaction is already its fast path).

The tables and columns are the store's (:data:`~txanomaly.storage.base.TRANSACTION_COLUMNS`,
:data:`~txanomaly.storage.base.KEY_COLUMNS`); nothing here creates or changes a table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from txanomaly.errors import TxAnomalyError
from txanomaly.storage.base import KEY_COLUMNS, TRANSACTION_COLUMNS

if TYPE_CHECKING:
    from txanomaly.storage import Storage

#: The two tables of the store, their columns and the binary COPY types of those columns.
TABLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "transactions": (TRANSACTION_COLUMNS, ("int8", "text", "int8", "text", "text", "text",
                                           "float8", "bool", "text")),
    "key_history": (KEY_COLUMNS, ("text", "text", "int8", "int8", "int8", "float8", "float8",
                                  "float8", "float8", "float8", "float8", "float8", "float8")),
}


def uses_copy(storage: Storage) -> bool:
    """Whether ``storage`` is written with PostgreSQL ``COPY``."""
    return getattr(storage, "dialect", None) == "postgresql"


def check_empty(storage: Storage) -> None:
    """Refuse a store that holds transactions: the bulk load numbers and sums its rows as
    the only history there is."""
    stored = storage.count()
    if stored:
        raise TxAnomalyError(
            f"the database already holds {stored:,} transaction(s): the Spark load writes the "
            "whole history into an empty database (after an interrupted load, drop its tables "
            "and load again; to add a file to a history, load it with --engine local)")


def reserve_seqs(storage: Storage, n: int) -> int:
    """Reserve ``n`` consecutive arrival numbers; returns the first.

    PostgreSQL: one ``nextval``, then ``setval`` past the range (no row per number);
    SQLite: the number after the largest stored (nothing else writes during the load); other
    stores: their ``next_seqs``, checked to be consecutive.
    """
    with storage.transaction(write=True) as tx:
        first = tx.next_seqs(1)[0]
        if n <= 1:
            return first
        if uses_copy(storage):
            from txanomaly.storage.sql_transaction import PG_SEQUENCE

            cur: Any = tx.cur  # type: ignore[attr-defined]  # the SQL store's driver cursor
            cur.execute(f"SELECT setval('{PG_SEQUENCE}', %s)", (first + n - 1,))
        elif getattr(storage, "dialect", None) != "sqlite":
            rest = tx.next_seqs(n - 1)
            if rest[0] != first + 1 or rest[-1] != first + n - 1:
                raise TxAnomalyError("the store's arrival counter moved during the load: load "
                                     "into a store that nothing else writes to")
    return first


def write_rows(storage: Storage, table: str, rows: Iterable[tuple[Any, ...]],
               batch_size: int, progress: Callable[[int], None] | None = None,
               copy: bool | None = None) -> int:
    """Write ``rows`` (tuples in the table's column order) in batches of ``batch_size``, one
    database transaction each; ``progress(rows)`` after each. Returns the rows written.

    ``copy``: None, ``COPY`` where the store is PostgreSQL; False, the store's own inserts
    (benchmarks compare the two).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if table not in TABLES:
        raise ValueError(f"table must be one of {tuple(TABLES)}, got {table!r}")
    if copy and not uses_copy(storage):
        raise ValueError("COPY needs a PostgreSQL store")
    flush = _copy if (uses_copy(storage) if copy is None else copy) else _write
    chunk: list[tuple[Any, ...]] = []
    written = 0
    for row in rows:
        chunk.append(tuple(row))
        if len(chunk) >= batch_size:
            written += _flush(flush, storage, table, chunk, progress)
    if chunk:
        written += _flush(flush, storage, table, chunk, progress)
    return written


def _flush(flush: Callable[[Storage, str, list[tuple[Any, ...]]], None], storage: Storage,
           table: str, chunk: list[tuple[Any, ...]],
           progress: Callable[[int], None] | None) -> int:
    flush(storage, table, chunk)
    n = len(chunk)
    chunk.clear()
    if progress is not None:
        progress(n)
    return n


def _copy(storage: Storage, table: str, chunk: list[tuple[Any, ...]]) -> None:
    """One binary ``COPY`` of ``chunk`` into ``table``, in its own transaction."""
    columns, types = TABLES[table]
    sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"
    with storage.transaction(write=True) as tx:
        cur: Any = tx.cur  # type: ignore[attr-defined]
        with cur.copy(sql) as copy:
            copy.set_types(list(types))
            for row in chunk:
                copy.write_row(row)


def _write(storage: Storage, table: str, chunk: list[tuple[Any, ...]]) -> None:
    """The store's own write of ``chunk``, in its own transaction."""
    with storage.transaction(write=True) as tx:
        if table == "transactions":
            tx.write(chunk, [], [])
        else:
            tx.write([], chunk, [])


__all__ = ["TABLES", "check_empty", "reserve_seqs", "uses_copy", "write_rows"]
