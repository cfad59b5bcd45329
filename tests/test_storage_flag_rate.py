"""The flag rate over time (:meth:`SqlStorage.flag_rate`) on a real SQLite file and real
PostgreSQL: counts per bucket against a brute-force count of the verdicts, range and bucket
rules, the (timestamp, flag) index it reads, and the migration that adds that index to a
database made before it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from service_fixtures import flat_rows, model_dir, postgres_url, stream, unique_schema
from txanomaly.ingest import ingest
from txanomaly.scoring import Scorer
from txanomaly.storage.sql import MAX_BUCKETS, SqlStorage

__all__ = ["model_dir", "stream"]  # fixtures, imported for pytest

HOUR = 3_600_000
INDEX = "ix_transactions_ts"


def _open(dialect: str, where: Path, schema: str | None) -> SqlStorage:
    if dialect == "sqlite":
        return SqlStorage(f"sqlite:///{where}/rate.db")
    return SqlStorage(postgres_url(), schema=schema)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def dialect(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store(dialect: str, tmp_path: Path) -> Iterator[SqlStorage]:
    storage = _open(dialect, tmp_path, unique_schema() if dialect == "postgresql" else None)
    try:
        yield storage
    finally:
        if storage.dialect == "postgresql":
            storage.drop_tables()
        storage.close()


@pytest.fixture
def verdicts(store: SqlStorage, model_dir: Path, stream: pl.DataFrame) -> list[tuple[int, bool]]:
    """``(timestamp, flagged)`` of every transaction stored: the verdicts as answered, with
    each one's time read back from the store."""
    out = []
    for v in ingest(flat_rows(stream), Scorer.load(model_dir), store):
        stored = store.get(v.result["transactionId"])
        assert stored is not None
        out.append((stored.timestamp, bool(v.result["isAnomaly"])))
    return out


def brute_force(verdicts: list[tuple[int, bool]], start: int, end: int, bucket: int
                ) -> list[tuple[int, int, int]]:
    stored: Counter[int] = Counter()
    flagged: Counter[int] = Counter()
    for ts, flag in verdicts:
        if start <= ts < end:
            stored[ts - ts % bucket] += 1
            flagged[ts - ts % bucket] += flag
    return [(b, stored[b], flagged[b]) for b in sorted(stored)]


def test_counts_per_bucket_match_the_stored_verdicts(store: SqlStorage,
                                                      verdicts: list[tuple[int, bool]]):
    first, last = min(ts for ts, _ in verdicts), max(ts for ts, _ in verdicts)
    assert store.last_timestamp() == last
    for bucket in (HOUR, 6 * HOUR, 86_400_000, 7 * 60_000):
        start, end = first - first % bucket, last + 1
        rows = store.flag_rate(start, end, bucket)
        assert rows == brute_force(verdicts, start, end, bucket)
        assert sum(n for _, n, _ in rows) == len(verdicts)
        assert sum(f for _, _, f in rows) == sum(flag for _, flag in verdicts)
    assert sum(f for *_, f in store.flag_rate(first, last + 1, HOUR)) >= 5


def test_ranges_are_half_open_and_buckets_aligned_to_the_epoch(
        store: SqlStorage, verdicts: list[tuple[int, bool]]):
    stamps = sorted(ts for ts, _ in verdicts)
    middle = stamps[len(stamps) // 2]
    # Start inside an hour: the first bucket still starts on the hour, counting from start.
    rows = store.flag_rate(middle, stamps[-1] + 1, HOUR)
    assert rows[0][0] == middle - middle % HOUR
    assert sum(n for _, n, _ in rows) == sum(1 for t in stamps if t >= middle)
    # The end is exclusive: the latest transaction is left out at end == its time.
    without_last = store.flag_rate(stamps[0], stamps[-1], HOUR)
    assert sum(n for _, n, _ in without_last) == sum(1 for t in stamps if t < stamps[-1])
    # Nothing in range: no buckets (not zero rows).
    assert store.flag_rate(stamps[-1] + 1, stamps[-1] + HOUR, HOUR) == []


def test_bad_ranges_and_buckets_are_refused(store: SqlStorage):
    with pytest.raises(ValueError, match="bucket must be positive"):
        store.flag_rate(0, HOUR, 0)
    with pytest.raises(ValueError, match="must be after the start"):
        store.flag_rate(HOUR, HOUR, HOUR)
    with pytest.raises(ValueError, match="at most 10,000 buckets"):
        store.flag_rate(0, (MAX_BUCKETS + 1) * 1000, 1000)
    assert store.flag_rate(0, MAX_BUCKETS * 1000, 1000) == []
    assert store.last_timestamp() is None


def _index_state(store: SqlStorage) -> bool | None:
    """None: no such index; else whether it is valid (PostgreSQL) / present (SQLite)."""
    with store.engine.connect() as conn:
        if store.dialect == "sqlite":
            found = conn.exec_driver_sql("SELECT 1 FROM sqlite_master WHERE type = 'index' "
                                         "AND name = ?", (INDEX,)).first()
            return True if found else None
        state = conn.exec_driver_sql("SELECT indisvalid FROM pg_index WHERE indexrelid = "
                                     "to_regclass(%s)", (INDEX,)).scalar()
        return None if state is None else bool(state)


def _span(store: SqlStorage) -> tuple[int, int]:
    last = store.last_timestamp()
    assert last is not None
    return last - 200 * HOUR, last + 1


def _plan(store: SqlStorage) -> str:
    start, end = 0, 400 * HOUR
    sql = ("SELECT (ts - 0) / 3600000 AS b, count(*), sum(CASE WHEN is_anomaly THEN 1 ELSE 0 "
           f"END) FROM transactions WHERE ts >= {start} AND ts < {end} GROUP BY b")
    with store.engine.connect() as conn:
        if store.dialect == "sqlite":
            return str(conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql).all())
        conn.exec_driver_sql("SET enable_seqscan = off")  # a small table: make it choose
        return str(conn.exec_driver_sql("EXPLAIN " + sql).all())


def test_an_older_database_gets_the_index_when_opened(dialect: str, tmp_path: Path,
                                                       model_dir: Path, stream: pl.DataFrame):
    schema = unique_schema() if dialect == "postgresql" else None
    store = _open(dialect, tmp_path, schema)
    try:
        ingest(flat_rows(stream)[:60], Scorer.load(model_dir), store)
        assert _index_state(store) is True
        assert INDEX in _plan(store)
        expected = store.flag_rate(*_span(store), HOUR)
        with store.engine.connect() as conn:  # as a database made before the index was
            conn.exec_driver_sql(f"DROP INDEX {INDEX}")
            conn.commit()
        assert _index_state(store) is None
        store.close()

        store = _open(dialect, tmp_path, schema)  # opening it migrates it
        assert _index_state(store) is True
        assert INDEX in _plan(store)
        assert store.flag_rate(*_span(store), HOUR) == expected
        if dialect == "postgresql":
            # An interrupted CREATE INDEX CONCURRENTLY leaves an invalid index: rebuilt.
            with store.engine.connect() as conn:
                conn.exec_driver_sql("UPDATE pg_index SET indisvalid = false WHERE indexrelid "
                                     "= to_regclass(%s)", (INDEX,))
                conn.commit()
            assert _index_state(store) is False
            store.close()
            store = _open(dialect, tmp_path, schema)
            assert _index_state(store) is True
    finally:
        if store.dialect == "postgresql":
            store.drop_tables()
        store.close()
