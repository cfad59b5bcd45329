"""The chunked batch engine: bit for bit the whole-table engine, whatever the chunk borders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_features_batch import MIXED, row_strategy, table, tx
from txanomaly.errors import InputFormatError
from txanomaly.features import FEATURE_SETS, SEED, STANDARD
from txanomaly.features.batch import feature_matrix
from txanomaly.features.chunked import (
    ChunkedFeatures,
    ReadCounts,
    count_rows,
    feature_chunks,
)
from txanomaly.io import load_transactions, write_table

DAY = 86_400_000
HOUR = 3_600_000
T0 = 1_662_336_000_000
SETS = [*FEATURE_SETS.values(), STANDARD.for_counterparty("merchant"),
        STANDARD.for_counterparty("person"), MIXED]


def chunked(frame: pl.DataFrame, fs, size: int) -> np.ndarray:
    engine = ChunkedFeatures(fs)
    try:
        parts = [engine.matrix(frame.slice(s, size)) for s in range(0, frame.height, size)]
    finally:
        engine.close()
    return np.vstack(parts) if parts else np.empty((0, len(fs.features)))


# Borders that split a second, a tie, a 1 h and a 24 h window, a user's first transaction,
# rows without ids (never pooled) and a pair seen again.
EDGES = [
    tx(T0, 10.0, "u", "v"), tx(T0 + 500, 20.0, "u", None), tx(T0 + 500, 30.0, None, "v"),
    tx(T0 + 500, 40.0, "w", "v"), tx(T0 + HOUR, 50.0, "u", "v"), tx(T0 + HOUR, 5.0, None, None),
    tx(T0 + HOUR + 1, 60.0, "w", "u"), tx(T0 + DAY, 70.0, "u", "v"),
    tx(T0 + DAY + 500, 80.0, "v", "u"), tx(T0 + 2 * DAY, 90.0, "x", "y"),
    tx(T0 + 2 * DAY, 95.0, "u", "v"), tx(T0 + 40 * DAY, 1.0, "u", "y"),
]


@pytest.mark.parametrize("fs", SETS, ids=lambda fs: fs.name)
@pytest.mark.parametrize("size", [1, 2, 3, 7])
def test_tiny_chunks_at_every_kind_of_border_equal_the_whole_table(fs, size):
    frame = table(EDGES)
    assert np.array_equal(chunked(frame, fs, size), feature_matrix(frame, fs))


@pytest.mark.parametrize("fs", [SEED, STANDARD, MIXED], ids=lambda fs: fs.name)
def test_synthetic_log_in_chunks_equals_the_whole_table(fs):
    from txanomaly.synth import generate

    frame = generate(3000, users=40, days=3, anomaly_rate=0.02, seed=5).transactions
    want = feature_matrix(frame, fs)
    for size in (97, 1000, 3000):
        assert np.array_equal(chunked(frame, fs, size), want), size


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(row_strategy, min_size=1, max_size=25), st.sampled_from([STANDARD, MIXED]),
       st.integers(1, 8))
def test_any_chunking_of_a_time_ordered_table_equals_the_whole_table(rows, fs, size):
    rows = sorted(rows, key=lambda r: r["timestamp"])
    frame = table(rows)
    assert np.array_equal(chunked(frame, fs, size), feature_matrix(frame, fs))


def test_a_chunk_before_the_last_ones_time_is_refused():
    engine = ChunkedFeatures(SEED)
    engine.matrix(table([tx(T0 + DAY, 1.0, "u")]))
    with pytest.raises(ValueError, match="time order"):
        engine.matrix(table([tx(T0, 1.0, "u")]))
    engine.close()


def whole_and_chunks(path: Path, fs, size: int, read_ahead: bool = False):
    rejects: list = []
    counts = ReadCounts()
    chunks = list(feature_chunks(path, fs, chunk_rows=size, rejects=rejects, counts=counts,
                                 read_ahead=read_ahead))
    index = np.concatenate([np.empty(0, np.int64), *(c.index for c in chunks)])
    values = np.vstack([np.empty((0, len(fs.names))), *(c.values for c in chunks)])
    in_input_order = np.empty_like(values)
    in_input_order[np.searchsorted(np.sort(index), index)] = values
    return chunks, in_input_order, rejects, counts


@pytest.mark.parametrize("read_ahead", [False, True])
@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_files_in_time_order_stream_in_input_order(tmp_path, suffix, read_ahead):
    from txanomaly.synth import generate

    frame = generate(2000, users=30, days=3, anomaly_rate=0.02, seed=3).transactions
    path = write_table(frame, tmp_path / f"tx{suffix}")
    chunks, values, _, counts = whole_and_chunks(path, STANDARD, 300, read_ahead)
    assert [c.records.height for c in chunks][:6] == [300] * 6
    assert np.array_equal(np.concatenate([c.index for c in chunks]), np.arange(2000))
    assert np.array_equal(values, feature_matrix(load_transactions(path).frame, STANDARD))
    assert count_rows(path) == 2000 and counts.accepted == 2000 and not counts.sorted_out_of_core
    assert chunks[0].records.columns[:2] == ["transaction_id", "timestamp"]


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".json"])
def test_a_file_not_in_time_order_is_sorted_out_of_core(tmp_path, suffix):
    from txanomaly.synth import generate

    frame = generate(1500, users=20, days=3, anomaly_rate=0.02, seed=4).transactions
    shuffled = frame.sample(fraction=1.0, shuffle=True, seed=1)
    path = write_table(shuffled, tmp_path / f"tx{suffix}")
    chunks, values, _, counts = whole_and_chunks(path, STANDARD, 200)
    assert counts.sorted_out_of_core
    ts = np.concatenate([c.records.get_column("timestamp").to_numpy() for c in chunks])
    assert (np.diff(ts) >= 0).all()
    assert np.array_equal(values, feature_matrix(load_transactions(path).frame, STANDARD))


@pytest.mark.parametrize("read_ahead", [False, True])
def test_rejects_and_repeats_across_chunks_match_load_transactions(tmp_path, read_ahead):
    rows = [{"transaction_id": f"t{i}", "timestamp": T0 + i * 1000, "origin_user_id": "u",
             "destination_amount": 10.0 + i} for i in range(12)]
    rows[3]["destination_amount"] = -1.0  # invalid
    rows[7] = dict(rows[1])  # an exact repeat of record 1, in another chunk
    rows[9] = {**rows[2], "destination_amount": 99.0}  # a conflicting repeat of record 2
    rows[10]["timestamp"] = rows[9]["timestamp"] + 10
    path = tmp_path / "tx.csv"
    pl.DataFrame(rows).write_csv(path)
    want = load_transactions(path)
    chunks, _, rejects, counts = whole_and_chunks(path, SEED, 4, read_ahead)
    assert [(r.index, r.transaction_id, r.errors) for r in rejects] == [
        (r.index, r.transaction_id, r.errors) for r in want.rejects]
    assert "record 2 was kept" in rejects[-1].errors[0].message
    assert counts.exact_duplicates == want.exact_duplicates == 1
    assert counts.records == want.n_records == 12 and counts.rejected == 2
    ids = pl.concat([c.records for c in chunks]).get_column("transaction_id").to_list()
    assert sorted(ids) == sorted(want.frame.get_column("transaction_id").to_list())


def test_sorting_on_disk_keeps_ties_in_input_order_across_bucket_borders(tmp_path):
    """Few distinct timestamps (many ties), shuffled, cut into many small buckets: every tie
    stays in input order, as the whole-table engine orders them."""
    rng = np.random.default_rng(8)
    n = 600
    rows = [tx(T0 + int(rng.integers(0, 6)) * HOUR, float(rng.integers(1, 100)),
               f"u{rng.integers(0, 5)}", f"v{rng.integers(0, 3)}") for _ in range(n)]
    path = tmp_path / "ties.parquet"
    table(rows).write_parquet(path)
    for size in (7, 50):
        chunks, values, _, counts = whole_and_chunks(path, STANDARD, size)
        assert counts.sorted_out_of_core
        assert np.array_equal(values, feature_matrix(table(rows), STANDARD))
        index = np.concatenate([c.index for c in chunks])
        ts = np.concatenate([c.records.get_column("timestamp").to_numpy() for c in chunks])
        assert (np.lexsort((index, ts)) == np.arange(n)).all()  # (time, input position)


def test_bucket_bounds_never_split_equal_values():
    from txanomaly.io.chunks import bucket_bounds

    sample = np.array([5, 5, 5, 5, 5, 5, 9, 1], dtype=np.int64)
    bounds = bucket_bounds(sample, rows=8_000, bucket_rows=1_000)
    assert list(bounds) == sorted(set(bounds)) and set(bounds) <= {1, 5, 9}
    assert bucket_bounds(sample, rows=800, bucket_rows=1_000).size == 0


record_strategy = st.fixed_dictionaries({
    "transaction_id": st.sampled_from(["a", "b", "c", "d", "e", "f", "g", "h"]),
    "timestamp": st.integers(0, 5).map(lambda k: T0 + k * HOUR),
    "origin_user_id": st.sampled_from(["u", "v", None]),
    "destination_user_id": st.sampled_from(["u", "w", None]),
    "destination_amount": st.sampled_from([1.0, 2.5, 40.0, -1.0]),  # -1: rejected
})


@settings(max_examples=40, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(record_strategy, min_size=1, max_size=14), st.integers(1, 5))
def test_chunked_reads_agree_with_load_transactions_on_rejects_repeats_and_values(
        tmp_path, records, size):
    """Repeated ids (exact and conflicting, in any chunk), invalid records and an input out of
    time order: the same rejects, repeats and features as reading the whole file."""
    path = tmp_path / f"tx-{size}.csv"
    pl.DataFrame(records).write_csv(path)
    want = load_transactions(path)
    _, values, rejects, counts = whole_and_chunks(path, STANDARD, size)
    assert [(r.index, r.transaction_id, r.errors) for r in rejects] == [
        (r.index, r.transaction_id, r.errors) for r in want.rejects]
    assert counts.exact_duplicates == want.exact_duplicates
    assert counts.records == want.n_records and counts.accepted == want.frame.height
    assert np.array_equal(values, feature_matrix(want.frame, STANDARD))


def test_importing_the_chunked_engine_loads_no_numba():
    """The CLI imports it at start-up (every command): Numba comes with the first engine."""
    import subprocess
    import sys

    from txanomaly.features import chunked, kernel

    assert chunked.MISSING == kernel.MISSING
    code = "import sys, txanomaly.features.chunked; print('numba' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "False"


def test_an_error_while_reading_ahead_is_raised_and_the_threads_stop(tmp_path):
    path = tmp_path / "tx.csv"
    path.write_text("transaction_id,timestamp\nt1,1\n")  # no amount column
    with pytest.raises(InputFormatError, match="missing required column"):
        list(feature_chunks(path, SEED, read_ahead=True))
