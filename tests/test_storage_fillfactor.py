"""PostgreSQL: ``key_history`` keeps room on its pages for the row versions late arrivals
write (fill factor 90, so those updates are HOT), in a new database and in one made before."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from service_fixtures import flat_rows, model_dir, postgres_url, stream, unique_schema
from txanomaly.ingest import ingest
from txanomaly.scoring import Scorer
from txanomaly.storage.sql import KEY_HISTORY_FILLFACTOR, SqlStorage

__all__ = ["model_dir", "stream"]  # fixtures, imported for pytest

pytestmark = pytest.mark.postgres


def _options(store: SqlStorage) -> list[str]:
    with store.engine.connect() as conn:
        return list(conn.exec_driver_sql(
            "SELECT reloptions FROM pg_class WHERE oid = to_regclass('key_history')"
        ).scalar() or [])


def test_key_history_has_room_for_updates_in_new_and_older_databases(model_dir: Path,
                                                                      stream: pl.DataFrame):
    schema = unique_schema()
    store = SqlStorage(postgres_url(), schema=schema)
    try:
        assert _options(store) == [f"fillfactor={KEY_HISTORY_FILLFACTOR}"]
        rows = flat_rows(stream)
        ingest(rows[:120], Scorer.load(model_dir), store)
        before = store.key_rows()
        with store.engine.connect() as conn:  # as a database made before the fill factor
            conn.exec_driver_sql("ALTER TABLE key_history RESET (fillfactor)")
            conn.commit()
        assert _options(store) == []
        store.close()

        store = SqlStorage(postgres_url(), schema=schema)  # opening it sets it
        assert _options(store) == [f"fillfactor={KEY_HISTORY_FILLFACTOR}"]
        assert store.key_rows() == before  # stored rows untouched
        ingest(rows[120:], Scorer.load(model_dir), store)
        assert len(store.key_rows()) > len(before)
    finally:
        store.drop_tables()
        store.close()
