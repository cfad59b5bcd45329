"""Ingestion (txanomaly.ingest) against every storage: exact online features, idempotency,
conflicts, late arrivals and concurrent writers, in memory, on real SQLite files and on a real
PostgreSQL server (when TXANOMALY_TEST_POSTGRES_URL names one).

A new storage joins by adding its name to STORAGES and a case to open_storages."""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service_fixtures import assert_close, postgres_url, stream, unique_schema
from test_features_batch import DAY, T0, row_strategy
from txanomaly.features.batch import feature_matrix
from txanomaly.features.online import OnlineFeatures
from txanomaly.features.spec import STANDARD
from txanomaly.ingest import ConflictError, Ingested, content_hash, ingest
from txanomaly.schema import FLAT_COLUMNS
from txanomaly.scoring import Verdict
from txanomaly.storage import MemoryStorage, Storage, StorageBusy, StorageError
from txanomaly.storage.sql import SqlStorage

__all__ = ["stream"]  # the fixture, imported for pytest

STORAGES = ["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
StorageFactory = Callable[[], Storage]


class FirstFeature:
    """A stand-in scorer: score = the first feature (the amount), flagged above 100."""

    online = OnlineFeatures("standard")

    def verdicts(self, features: np.ndarray, ids: list[str | None]) -> list[Verdict]:
        return [Verdict(float(f[0]), bool(f[0] > 100), {"id": tid, "score": float(f[0])})
                for f, tid in zip(features, ids, strict=True)]


SCORER = FirstFeature()


def run(storage: Storage, records: list[dict[str, Any]], persist: bool = True
        ) -> list[Ingested]:
    return ingest(records, SCORER, storage, persist=persist)  # type: ignore[arg-type]


def flat(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Complete flat records with ids t0, t1, ... in the given order."""
    return [{**dict.fromkeys(FLAT_COLUMNS), "extra": None, **r,
             "transaction_id": r.get("transaction_id", f"t{i}")} for i, r in enumerate(rows)]


@contextmanager
def open_storages(kind: str, directory: Path) -> Iterator[StorageFactory]:
    """Storages over one fresh database (several can share it, as replicas do; the memory
    storage is one object shared by all)."""
    made: list[Storage] = []
    url, schema = f"sqlite:///{directory}/store.db", None
    if kind == "postgresql":
        url, schema = postgres_url(), unique_schema()
    memory = MemoryStorage()

    def make() -> Storage:
        made.append(memory if kind == "memory" else SqlStorage(url, schema=schema))
        return made[-1]

    try:
        yield make
    finally:
        if made and isinstance(made[0], SqlStorage) and schema is not None:
            made[0].drop_tables()
        for storage in made:
            storage.close()


@pytest.fixture(params=STORAGES)
def make_storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StorageFactory]:
    with open_storages(request.param, tmp_path) as make:
        yield make


def ingest_features(storage: Storage, records: list[dict[str, Any]], chunks: list[int]
                    ) -> np.ndarray:
    out, start, k = [], 0, 0
    while start < len(records):
        size = chunks[k % len(chunks)]
        out.extend(r.features for r in run(storage, records[start:start + size]))
        start, k = start + size, k + 1
    return np.array(out)


def test_in_order_stream_gives_the_batch_features(make_storage: StorageFactory,
                                                  stream: pl.DataFrame):
    storage = make_storage()
    records = stream.to_dicts()
    online = ingest_features(storage, records, chunks=[1, 7, 50, 3])
    assert_close(online, feature_matrix(stream, "standard"))
    assert storage.count() == len(records)


@pytest.mark.parametrize("kind", STORAGES)
def test_storage_equals_the_in_memory_engine_in_any_arrival_order(kind: str):
    """Any arrival order (late arrivals included), any batching: ingestion over a storage
    computes what the in-memory engine computes; in timestamp order that is the batch
    engine's result."""

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(rows=st.lists(row_strategy, min_size=1, max_size=20), data=st.data())
    def check(rows: list[dict[str, Any]], data: st.DataObject) -> None:
        order = data.draw(st.permutations(range(len(rows))))
        records = [flat(rows)[i] for i in order]
        chunk = data.draw(st.integers(1, 5))
        engine = OnlineFeatures("standard")
        expected = np.array([engine.process(r) for r in records])
        with tempfile.TemporaryDirectory() as tmp, open_storages(kind, Path(tmp)) as make:
            got = ingest_features(make(), records, chunks=[chunk])
        np.testing.assert_array_equal(got, expected)

    check()


@pytest.mark.parametrize("kind", STORAGES)
def test_in_order_hypothesis_stream_equals_batch_bit_for_bit(kind: str, tmp_path: Path):
    """The same as the online engine's own test, through each storage."""
    rows = [{"timestamp": T0 + i * 600_000 * (i % 3), "destination_amount": 10.0 + i,
             "origin_amount": 10.0 + i, "origin_user_id": "ab"[i % 2],
             "destination_user_id": "cd"[i % 3 % 2]} for i in range(40)]
    rows.sort(key=lambda r: r["timestamp"])
    with open_storages(kind, tmp_path) as make:
        got = ingest_features(make(), flat(rows), chunks=[1, 4])
    np.testing.assert_array_equal(got, feature_matrix(pl.DataFrame(flat(rows)), "standard"))


def test_repeat_returns_the_stored_result_and_changes_nothing(make_storage: StorageFactory):
    storage = make_storage()
    recs = flat([{"timestamp": T0, "origin_user_id": "u", "destination_user_id": "v",
                  "origin_amount": 5.0}])
    first = run(storage, recs)[0]
    state = storage.key_rows()
    again = run(storage, recs)[0]
    assert again.replayed and not first.replayed
    assert again.result == first.result
    assert storage.key_rows() == state and storage.count() == 1


def test_same_id_other_content_is_a_conflict_and_stores_nothing(make_storage: StorageFactory):
    storage = make_storage()
    rec = flat([{"timestamp": T0, "origin_user_id": "u", "origin_amount": 5.0}])[0]
    run(storage, [rec])
    state = storage.key_rows()
    other = {**rec, "transaction_id": "new"}
    with pytest.raises(ConflictError) as err:
        run(storage, [other, {**rec, "origin_amount": 6.0}])
    assert err.value.conflicts == [(1, "t0")]
    assert storage.key_rows() == state and storage.count() == 1
    assert storage.get("new") is None


def test_duplicate_in_one_batch(make_storage: StorageFactory):
    storage = make_storage()
    rec = flat([{"timestamp": T0, "origin_user_id": "u", "origin_amount": 5.0}])[0]
    out = run(storage, [rec, rec])
    assert out[0].result == out[1].result and storage.count() == 1
    assert len(storage.key_rows()) == 1
    with pytest.raises(ConflictError):
        run(storage, [{**rec, "transaction_id": "x"},
                      {**rec, "transaction_id": "x", "origin_amount": 1.0}])
    assert storage.count() == 1


def test_content_hash_ignores_key_order_of_extra_fields():
    a = {"transaction_id": "t", "extra": '{"a":1,"b":2}'}
    assert content_hash(a) == content_hash({**a, "extra": '{"b":2,"a":1}'})
    assert content_hash(a) != content_hash({**a, "extra": '{"b":2,"a":3}'})


def test_late_arrival_uses_only_history_at_or_before_it(make_storage: StorageFactory):
    storage = make_storage()
    rows = flat([{"timestamp": T0, "origin_user_id": "u", "destination_amount": 10.0},
                 {"timestamp": T0 + 2 * DAY, "origin_user_id": "u", "destination_amount": 30.0},
                 {"timestamp": T0 + DAY, "origin_user_id": "u", "destination_amount": 20.0},
                 {"timestamp": T0 + 3 * DAY, "origin_user_id": "u", "destination_amount": 40.0}])
    got = ingest_features(storage, rows, chunks=[1])
    col = OnlineFeatures("standard").feature_set.names.index("origin_prefix_mean_diff")
    assert got[2, col] == 5.0  # 20 - mean(10, 20): the T0 + 2 days one is not seen
    in_time = sorted(rows, key=lambda r: r["timestamp"])
    batch = feature_matrix(pl.DataFrame(in_time), "standard")
    np.testing.assert_array_equal(got[3], batch[3])
    origin = [(ts, pos) for kind, _, _, ts, pos, *_ in storage.key_rows()
              if kind == STANDARD.history_kind("origin")]
    # The late one took position 1; the one after it moved to 2.
    assert origin == [(T0 + d * DAY, d) for d in range(4)]


def test_scoring_without_persisting_stores_nothing(make_storage: StorageFactory):
    storage = make_storage()
    recs = flat([{"timestamp": T0, "origin_user_id": "u", "origin_amount": 5.0}])
    out = run(storage, recs, persist=False)
    assert not out[0].replayed and storage.count() == 0 and storage.key_rows() == []


def test_scoring_without_persisting_sees_the_stored_history(make_storage: StorageFactory):
    storage = make_storage()
    recs = flat([{"timestamp": T0 + i, "origin_user_id": "u", "origin_amount": 5.0 * (i + 1)}
                 for i in range(3)])
    stored = run(storage, recs[:2])
    state = storage.key_rows()
    scored = run(storage, recs[2:], persist=False)
    np.testing.assert_array_equal(scored[0].features, ingest_features(MemoryStorage(), recs,
                                                                      chunks=[3])[2])
    again = run(storage, recs[:1], persist=False)  # stored: scored again, not replayed
    assert not again[0].replayed and again[0].result["id"] == stored[0].result["id"]
    assert storage.key_rows() == state and storage.count() == 2


def test_concurrent_writers_lose_no_update(make_storage: StorageFactory):
    """Four threads on two storages (for SQL: two connection pools, like two replicas) write
    the same users at once; the final per-key state is the one a sequential stream gives."""
    storages = [make_storage(), make_storage()]
    rng = np.random.default_rng(5)
    rows = flat([{"timestamp": T0 + int(t), "origin_user_id": "ab"[i % 2],
                  "destination_user_id": "c", "destination_amount": float(a)}
                 for i, (t, a) in enumerate(zip(rng.permutation(200) * 60_000,
                                                rng.integers(1, 500, 200), strict=True))])
    errors: list[BaseException] = []

    def work(part: list[dict[str, Any]], storage: Storage) -> None:
        try:
            for rec in part:
                run(storage, [rec])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(rows[k::4], storages[k % 2]))
               for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    engine = OnlineFeatures("standard")
    for rec in sorted(rows, key=lambda r: r["timestamp"]):
        engine.process(rec)
    got = {}
    for kind, key, _seq, ts, pos, amount, cum_before, cum, *_ in storages[0].key_rows():
        got.setdefault((kind, key), []).append((ts, pos, amount, cum_before, cum))
    want = {kid: list(zip(log.ts, log.pos, log.amount, log.cum_before, log.cum, strict=True))
            for kid, log in engine.logs.items()}
    assert got == want
    assert storages[0].count() == 200


def test_anomalies_by_time_with_keyset_pages(make_storage: StorageFactory):
    storage = make_storage()
    rows = flat([{"timestamp": T0 + i // 2, "origin_user_id": "u", "origin_amount": 50.0 * i}
                 for i in range(8)])  # flagged: amount > 100, i.e. t3..t7
    run(storage, rows)
    first = storage.anomalies(limit=3)
    rest = storage.anomalies(limit=3, after=(first[-1].timestamp, first[-1].transaction_id))
    assert [r.transaction_id for r in first + rest] == ["t3", "t4", "t5", "t6", "t7"]
    window = storage.anomalies(start=T0 + 2, end=T0 + 3)
    assert [r.transaction_id for r in window] == ["t4", "t5"]


def test_get_returns_what_was_stored(make_storage: StorageFactory):
    storage = make_storage()
    rec = flat([{"timestamp": T0, "origin_user_id": "u", "origin_amount": 150.0,
                 "extra": '{"note":"x"}'}])[0]
    out = run(storage, [rec])[0]
    got = storage.get("t0")
    assert got is not None and storage.get("nope") is None
    assert (got.transaction_id, got.timestamp, got.record, got.result) == (
        "t0", T0, rec, out.result)
    assert got.features == out.features.tolist()  # type: ignore[union-attr]
    storage.ping()


def test_unsupported_url_is_refused_with_a_message():
    with pytest.raises(StorageError, match="sqlite:///PATH or postgresql://"):
        SqlStorage("mysql://localhost/db")


def test_unreachable_database_is_a_storage_error(tmp_path: Path):
    with pytest.raises(StorageError, match="cannot open"):
        SqlStorage(f"sqlite:///{tmp_path}/missing-dir/x.db")


@pytest.mark.parametrize("name", ["memory", "sqlite"])
def test_a_transaction_that_must_not_wait_is_refused_while_another_writes(name: str,
                                                                           tmp_path: Path):
    """The service's fast path runs single requests on the event loop only when the storage
    is free: ``wait=False`` must answer StorageBusy at once, before anything is done, rather
    than queue behind another writer (this process's or, for SQLite, another process's)."""
    import sqlite3

    rec = {"transaction_id": "t1", "timestamp": 0, "origin_user_id": "u",
           "destination_user_id": None, "origin_amount": 10.0, "destination_amount": None}
    with open_storages(name, tmp_path) as make:
        storage = make()
        holding, release = threading.Event(), threading.Event()

        def writer() -> None:
            with storage.transaction(write=True):
                holding.set()
                release.wait(10)

        thread = threading.Thread(target=writer)
        thread.start()
        holding.wait(10)
        try:
            with pytest.raises(StorageBusy):
                ingest([rec], FirstFeature(), storage, wait=False)
        finally:
            release.set()
            thread.join()
        if name == "sqlite":  # another process's write lock (a raw connection to the file)
            other = sqlite3.connect(tmp_path / "store.db", isolation_level=None)
            other.execute("BEGIN IMMEDIATE")
            with pytest.raises(StorageBusy):
                ingest([rec], FirstFeature(), storage, wait=False)
            other.execute("ROLLBACK")
            other.close()
        assert storage.count() == 0
        assert not ingest([rec], FirstFeature(), storage, wait=False)[0].replayed
        assert storage.count() == 1
