"""Storages of scored transactions and per-key history, behind one small interface.

* :mod:`txanomaly.storage.base`: the interface (:class:`Storage`, :class:`StorageTransaction`)
  and the row shapes;
* :class:`MemoryStorage`: in this process's memory, no dependency (tests, notebooks);
* :class:`~txanomaly.storage.sql.SqlStorage`: SQLite or PostgreSQL, the service's; it needs the
  ``[serve]`` extra, so it is opened through :func:`sql_storage`, which says so in one line when
  the extra is missing.

Ingestion itself (duplicates, conflicts, locking order, features, verdicts) is
:func:`txanomaly.ingest.ingest`, the same for every storage.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from txanomaly.storage.base import (
    KEY_COLUMNS,
    MISSING_SQL_EXTRA,
    TRANSACTION_COLUMNS,
    KeyRow,
    Storage,
    StorageBusy,
    StorageError,
    StorageTransaction,
    StoredTransaction,
    TransactionRow,
)
from txanomaly.storage.memory import MemoryStorage

if TYPE_CHECKING:
    from txanomaly.storage.sql import SqlStorage

#: The database ``txanomaly serve`` and ``txanomaly history load`` use by default.
DEFAULT_DB_URL = "sqlite:///txanomaly.db"
_SQL_DEPENDENCIES = ("sqlalchemy", "psycopg")


def sql_storage(url: str, **options: Any) -> SqlStorage:
    """Open the SQL storage at ``url`` (options: those of :class:`SqlStorage`).

    Raises
    ------
    StorageError
        The ``[serve]`` extra (SQLAlchemy) is not installed, or the database cannot be opened.
    """
    try:
        from txanomaly.storage.sql import SqlStorage
    except ModuleNotFoundError as exc:
        if exc.name not in _SQL_DEPENDENCIES:
            raise
        raise StorageError(f"{MISSING_SQL_EXTRA} ({exc.name} is missing)") from None
    return SqlStorage(url, **options)


__all__ = ["DEFAULT_DB_URL", "KEY_COLUMNS", "TRANSACTION_COLUMNS", "KeyRow", "MemoryStorage",
           "Storage", "StorageBusy", "StorageError", "StorageTransaction", "StoredTransaction",
           "TransactionRow", "sql_storage"]
