"""The SQL store: exact online features from a real database, idempotency, late arrivals,
concurrent writers, on real SQLite files and a real PostgreSQL server."""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable, Iterator
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
from txanomaly.schema import FLAT_COLUMNS
from txanomaly.scoring import Verdict
from txanomaly.store import ConflictError, Store, StoreError, content_hash

__all__ = ["stream"]  # the fixture, imported for pytest

StoreFactory = Callable[[], Store]


def evaluate(features: np.ndarray, records: Any) -> list[Verdict]:
    """A stand-in scorer: score = the first feature, flagged above 100."""
    return [Verdict(float(f[0]), bool(f[0] > 100), {"id": r["transaction_id"],
                                                   "score": float(f[0])})
            for f, r in zip(features, records, strict=True)]


def flat(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Complete flat records with ids t0, t1, ... in the given order."""
    return [{**dict.fromkeys(FLAT_COLUMNS), "extra": None, **r,
             "transaction_id": r.get("transaction_id", f"t{i}")} for i, r in enumerate(rows)]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Stores over one fresh database (several can share it, as replicas do)."""
    made: list[Store] = []
    if request.param == "sqlite":
        url, schema = f"sqlite:///{tmp_path}/store.db", None
    else:
        url, schema = postgres_url(), unique_schema()

    def make() -> Store:
        made.append(Store(url, OnlineFeatures("standard"), schema=schema))
        return made[-1]

    yield make
    if made and schema is not None:
        made[0].drop_tables()
    for store in made:
        store.close()


def ingest_features(store: Store, records: list[dict[str, Any]], chunks: list[int]
                    ) -> np.ndarray:
    out, start, k = [], 0, 0
    while start < len(records):
        size = chunks[k % len(chunks)]
        out.extend(r.features for r in store.ingest(records[start:start + size], evaluate))
        start, k = start + size, k + 1
    return np.array(out)


def test_in_order_stream_gives_the_batch_features(make_store: StoreFactory,
                                                  stream: pl.DataFrame):
    store = make_store()
    records = stream.to_dicts()
    online = ingest_features(store, records, chunks=[1, 7, 50, 3])
    assert_close(online, feature_matrix(stream, "standard"))
    assert store.count() == len(records)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(row_strategy, min_size=1, max_size=20), data=st.data())
def test_store_equals_the_in_memory_engine_in_any_arrival_order(rows, data):
    """Any arrival order (late arrivals included), any batching: the store computes what the
    in-memory engine computes; in timestamp order that is the batch engine's result."""
    order = data.draw(st.permutations(range(len(rows))))
    records = [flat(rows)[i] for i in order]
    chunk = data.draw(st.integers(1, 5))
    engine = OnlineFeatures("standard")
    expected = np.array([engine.process(r) for r in records])
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{tmp}/s.db", OnlineFeatures("standard"))
        try:
            got = ingest_features(store, records, chunks=[chunk])
        finally:
            store.close()
    np.testing.assert_array_equal(got, expected)


def test_in_order_hypothesis_stream_equals_batch_bit_for_bit(tmp_path: Path):
    """The same as the online engine's own test, through the database."""
    rows = [{"timestamp": T0 + i * 600_000 * (i % 3), "destination_amount": 10.0 + i,
             "origin_amount": 10.0 + i, "origin_user_id": "ab"[i % 2],
             "destination_user_id": "cd"[i % 3 % 2]} for i in range(40)]
    rows.sort(key=lambda r: r["timestamp"])
    store = Store(f"sqlite:///{tmp_path}/s.db", OnlineFeatures("standard"))
    got = ingest_features(store, flat(rows), chunks=[1, 4])
    np.testing.assert_array_equal(got, feature_matrix(pl.DataFrame(flat(rows)), "standard"))


def test_repeat_returns_the_stored_result_and_changes_nothing(make_store: StoreFactory):
    store = make_store()
    recs = flat([{"timestamp": T0, "origin_user_id": "u", "destination_user_id": "v",
                  "origin_amount": 5.0}])
    first = store.ingest(recs, evaluate)[0]
    state = store.key_rows()
    again = store.ingest(recs, evaluate)[0]
    assert again.replayed and not first.replayed
    assert again.result == first.result
    assert store.key_rows() == state and store.count() == 1


def test_same_id_other_content_is_a_conflict_and_stores_nothing(make_store: StoreFactory):
    store = make_store()
    rec = flat([{"timestamp": T0, "origin_user_id": "u", "origin_amount": 5.0}])[0]
    store.ingest([rec], evaluate)
    state = store.key_rows()
    other = {**rec, "transaction_id": "new"}
    with pytest.raises(ConflictError) as err:
        store.ingest([other, {**rec, "origin_amount": 6.0}], evaluate)
    assert err.value.conflicts == [(1, "t0")]
    assert store.key_rows() == state and store.count() == 1


def test_duplicate_in_one_batch(make_store: StoreFactory):
    store = make_store()
    rec = flat([{"timestamp": T0, "origin_user_id": "u", "origin_amount": 5.0}])[0]
    out = store.ingest([rec, rec], evaluate)
    assert out[0].result == out[1].result and store.count() == 1
    assert len(store.key_rows()) == 1
    with pytest.raises(ConflictError):
        store.ingest([{**rec, "transaction_id": "x"},
                      {**rec, "transaction_id": "x", "origin_amount": 1.0}], evaluate)
    assert store.count() == 1


def test_content_hash_ignores_key_order_of_extra_fields():
    a = {"transaction_id": "t", "extra": '{"a":1,"b":2}'}
    assert content_hash(a) == content_hash({**a, "extra": '{"b":2,"a":1}'})
    assert content_hash(a) != content_hash({**a, "extra": '{"b":2,"a":3}'})


def test_late_arrival_uses_only_history_at_or_before_it(make_store: StoreFactory):
    store = make_store()
    rows = flat([{"timestamp": T0, "origin_user_id": "u", "destination_amount": 10.0},
                 {"timestamp": T0 + 2 * DAY, "origin_user_id": "u", "destination_amount": 30.0},
                 {"timestamp": T0 + DAY, "origin_user_id": "u", "destination_amount": 20.0},
                 {"timestamp": T0 + 3 * DAY, "origin_user_id": "u", "destination_amount": 40.0}])
    got = ingest_features(store, rows, chunks=[1])
    col = OnlineFeatures("standard").feature_set.names.index("origin_prefix_mean_diff")
    assert got[2, col] == 5.0  # 20 - mean(10, 20): the T0 + 2 days one is not seen
    in_time = sorted(rows, key=lambda r: r["timestamp"])
    batch = feature_matrix(pl.DataFrame(in_time), "standard")
    np.testing.assert_array_equal(got[3], batch[3])
    origin = [(ts, pos) for kind, _, _, ts, pos, *_ in store.key_rows() if kind == "origin"]
    # The late one took position 1; the one after it moved to 2.
    assert origin == [(T0 + d * DAY, d) for d in range(4)]


def test_scoring_without_persisting_stores_nothing(make_store: StoreFactory):
    store = make_store()
    recs = flat([{"timestamp": T0, "origin_user_id": "u", "origin_amount": 5.0}])
    out = store.ingest(recs, evaluate, persist=False)
    assert not out[0].replayed and store.count() == 0 and store.key_rows() == []


def test_concurrent_writers_lose_no_update(make_store: StoreFactory):
    """Four threads on two stores (two connection pools, like two replicas) write the same
    users at once; the final per-key state is the one a sequential stream gives."""
    stores = [make_store(), make_store()]
    rng = np.random.default_rng(5)
    rows = flat([{"timestamp": T0 + int(t), "origin_user_id": "ab"[i % 2],
                  "destination_user_id": "c", "destination_amount": float(a)}
                 for i, (t, a) in enumerate(zip(rng.permutation(200) * 60_000,
                                                rng.integers(1, 500, 200), strict=True))])
    errors: list[BaseException] = []

    def work(part: list[dict[str, Any]], store: Store) -> None:
        try:
            for rec in part:
                store.ingest([rec], evaluate)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(rows[k::4], stores[k % 2]))
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
    for kind, key, _seq, ts, pos, amount, cum_before, cum, *_ in stores[0].key_rows():
        got.setdefault((kind, key), []).append((ts, pos, amount, cum_before, cum))
    want = {kid: list(zip(log.ts, log.pos, log.amount, log.cum_before, log.cum, strict=True))
            for kid, log in engine.logs.items()}
    assert got == want
    assert stores[0].count() == 200


def test_unsupported_url_is_refused_with_a_message():
    with pytest.raises(StoreError, match="sqlite:///PATH or postgresql://"):
        Store("mysql://localhost/db", OnlineFeatures("seed"))


def test_unreachable_database_is_a_store_error(tmp_path: Path):
    with pytest.raises(StoreError, match="cannot open"):
        Store(f"sqlite:///{tmp_path}/missing-dir/x.db", OnlineFeatures("seed"))


def test_anomalies_by_time_with_keyset_pages(make_store: StoreFactory):
    store = make_store()
    rows = flat([{"timestamp": T0 + i // 2, "origin_user_id": "u", "origin_amount": 50.0 * i}
                 for i in range(8)])  # flagged: amount > 100, i.e. t3..t7
    store.ingest(rows, evaluate)
    first = store.anomalies(limit=3)
    rest = store.anomalies(limit=3, after=(first[-1].timestamp, first[-1].transaction_id))
    assert [r.transaction_id for r in first + rest] == ["t3", "t4", "t5", "t6", "t7"]
    window = store.anomalies(start=T0 + 2, end=T0 + 3)
    assert [r.transaction_id for r in window] == ["t4", "t5"]
