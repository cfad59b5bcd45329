"""JSON and JSON Lines read a chunk at a time (through a temporary Parquet file) give what the
whole-file read gives: the same rows, order, ``_index``, rejects, repeats and errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from txanomaly.cli import app
from txanomaly.errors import InputFormatError
from txanomaly.features import STANDARD
from txanomaly.features.chunked import feature_chunks
from txanomaly.io import format_for, load_transactions, write_table
from txanomaly.io.chunks import DEFAULT_CHUNK_ROWS, ReadCounts, time_ordered_chunks
from txanomaly.io.result import deduplicate
from txanomaly.schema import EXTRA_COLUMN, FLAT_COLUMNS

T0 = 1_662_336_000_000
HOUR = 3_600_000
SIZES = [1, 2, 3, 7, DEFAULT_CHUNK_ROWS]


def rec(tid: str, ts: int | dict, amount: float = 10.0, origin: str | None = "u",
        dest: str | None = "v", **more) -> dict:
    record = {"transactionId": tid, "timestamp": ts, "type": "TRANSFER",
              "destinationAmountDetails": {"transactionAmount": amount,
                                           "transactionCurrency": "EUR"}, **more}
    if origin is not None:
        record["originUserId"] = origin
    if dest is not None:
        record["destinationUserId"] = dest
    return record


def write(tmp_path: Path, records: list, name: str) -> Path:
    """A JSON array (``.json``) or one record per line; a ``str`` item is a line as it is."""
    path = tmp_path / name
    if name.endswith(".json") and not name.endswith(".lines.json"):
        path.write_bytes(orjson.dumps(records))
    else:
        path.write_bytes(b"".join((r.encode() if isinstance(r, str) else orjson.dumps(r))
                                  + b"\n" for r in records))
    return path


def whole_file(path: Path, keep: list[str] | None = None):
    """What the chunked read gave before it streamed JSON: the reader's frame, repeats
    resolved, sorted by time with ties in input order (the reference)."""
    frame, bad = format_for(path).read(path, None, False)
    result = deduplicate(frame, bad, keep_index=True)
    records = result.frame.sort("timestamp", maintain_order=True)
    return records.select(*(keep or [*FLAT_COLUMNS, EXTRA_COLUMN]), "_index"), result


def chunked(path: Path, size: int, columns: list[str] | None = None):
    rejects: list = []
    counts = ReadCounts()
    chunks = list(time_ordered_chunks(path, size, columns, rejects, counts))
    return chunks, rejects, counts


def assert_same_as_whole_file(path: Path, size: int, columns: list[str] | None = None):
    keep = None if columns is None else list(dict.fromkeys(["transaction_id", "timestamp",
                                                            *columns]))
    want, result = whole_file(path, keep)
    chunks, rejects, counts = chunked(path, size, columns)
    assert all(0 < c.height <= size for c in chunks)
    got = pl.concat(chunks) if chunks else want.clear()
    assert got.schema == want.schema
    assert got.equals(want), (size, got, want)
    assert [r.to_json() for r in rejects] == [r.to_json() for r in result.rejects]
    assert counts.records == result.n_records
    assert counts.accepted == want.height
    assert counts.rejected == len(result.rejects)
    assert counts.exact_duplicates == result.exact_duplicates
    return chunks, rejects, counts


def troubled(shuffle: bool) -> list:
    """Records with every kind of trouble: an invalid field, repeats (exact and conflicting,
    far apart), ties, extra fields, a $numberLong timestamp, missing user ids."""
    records: list = [rec(f"t{i}", T0 + (i // 3) * HOUR, 10.0 + i, f"u{i % 4}", f"v{i % 3}")
                     for i in range(20)]
    records[2]["timestamp"] = {"$numberLong": str(T0)}
    records[4] = rec("t4", T0 + HOUR, -5.0)  # a negative amount: rejected
    records[6]["note"] = {"kept": [1, 2]}  # extra fields
    records[8] = rec("t8", T0 + 2 * HOUR, 3.0, None, None)
    records[11] = dict(records[1])  # an exact repeat of record 1
    records[13] = {**records[3], "destinationAmountDetails": {
        "transactionAmount": 99.0, "transactionCurrency": "EUR"}}  # conflicts with record 3
    records[16] = dict(records[11])  # record 1 once more
    records[17] = rec("t17", "not a time")  # an unparseable timestamp
    records.append({"transactionId": "t20", "timestamp": T0})  # no amount
    if shuffle:
        order = np.random.default_rng(7).permutation(len(records))
        records = [records[i] for i in order]
    return records


@pytest.mark.parametrize("shuffle", [False, True], ids=["sorted", "unsorted"])
@pytest.mark.parametrize("name", ["tx.json", "tx.jsonl", "tx.lines.json"])
@pytest.mark.parametrize("size", SIZES)
def test_chunks_equal_the_whole_file_read_with_rejects_and_repeats(tmp_path, name, size,
                                                                   shuffle):
    records = troubled(shuffle)
    if name != "tx.json":  # lines: one that does not parse, blank lines
        records = [*records[:5], "{\"transactionId\": \"broken\", ", *records[5:], "  "]
    path = write(tmp_path, records, name)
    _, rejects, counts = assert_same_as_whole_file(path, size)
    # Sorted or not, the repeats here come later in the file than in time, so the survey
    # (which sees every record, as for a table) sorts: the result is the same either way.
    assert counts.sorted_out_of_core
    reasons = " | ".join(e.message for r in rejects for e in r.errors)
    assert "record" in reasons and "was kept" in reasons
    assert len(rejects) == (5 if name != "tx.json" else 4)


@pytest.mark.parametrize("size", SIZES)
def test_only_some_columns_kept(tmp_path, size):
    path = write(tmp_path, troubled(shuffle=True), "tx.jsonl")
    chunks, _, _ = assert_same_as_whole_file(path, size, ["destination_amount", "extra"])
    assert chunks[0].columns == ["transaction_id", "timestamp", "destination_amount", "extra",
                                 "_index"]


def test_rejects_after_the_last_valid_record_and_none_valid(tmp_path):
    records = [rec("a", T0), rec("b", T0 + 1), rec("c", T0 + 2, -1.0), rec("d", "x"), "{oops"]
    for size in (1, 2, DEFAULT_CHUNK_ROWS):
        assert_same_as_whole_file(write(tmp_path, records, "tail.jsonl"), size)
        assert_same_as_whole_file(write(tmp_path, records[2:], "none.jsonl"), size)


@pytest.mark.parametrize("name", ["empty.json", "empty.jsonl"])
def test_an_empty_file_gives_no_chunks(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"")
    chunks, rejects, counts = chunked(path, 3)
    assert chunks == [] and rejects == [] and counts.records == 0
    path.write_bytes(b"[]")
    if name.endswith(".json"):
        assert chunked(path, 3)[0] == []


def test_a_truncated_array_stops_with_the_same_message(tmp_path):
    path = tmp_path / "cut.json"
    path.write_bytes(orjson.dumps([rec(f"t{i}", T0 + i) for i in range(5)])[:-30])
    with pytest.raises(InputFormatError) as whole:
        load_transactions(path)
    with pytest.raises(InputFormatError) as streamed:
        chunked(path, 2)
    assert str(streamed.value) == str(whole.value)
    assert "truncated JSON" in str(whole.value) and "after 4 complete record(s)" in str(
        whole.value)


def test_a_file_that_is_not_json_is_refused_as_before(tmp_path):
    path = tmp_path / "tx.json"
    path.write_bytes(b"transaction_id,timestamp\nt1,1\n")
    with pytest.raises(InputFormatError, match="not JSON") as streamed:
        chunked(path, 2)
    with pytest.raises(InputFormatError) as whole:
        load_transactions(path)
    assert str(streamed.value) == str(whole.value)


def test_no_temporary_file_is_left_behind(tmp_path, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    path = write(tmp_path, troubled(shuffle=True), "tx.json")
    chunked(path, 3)
    assert list(scratch.iterdir()) == []


record_strategy = st.fixed_dictionaries({
    "tid": st.sampled_from(["a", "b", "c", "d", "e", "f", "g"]),
    "hour": st.integers(0, 4),
    "origin": st.sampled_from(["u", "w", None]),
    "amount": st.sampled_from([1.0, 2.5, 40.0, -1.0]),  # -1: rejected
})


@settings(max_examples=40, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(record_strategy, min_size=0, max_size=14), st.integers(1, 5),
       st.sampled_from(["tx.json", "tx.jsonl"]))
def test_any_json_input_and_chunking_reads_as_the_whole_file(tmp_path, drawn, size, name):
    records = [rec(d["tid"], T0 + d["hour"] * HOUR, d["amount"], d["origin"]) for d in drawn]
    assert_same_as_whole_file(write(tmp_path, records, name), size)


@pytest.mark.parametrize("shuffle", [False, True], ids=["sorted", "unsorted"])
def test_features_of_json_equal_those_of_the_same_data_as_parquet(tmp_path, shuffle):
    from txanomaly.synth import generate

    frame = generate(1500, users=25, days=3, anomaly_rate=0.02, seed=11).transactions
    if shuffle:
        frame = frame.sample(fraction=1.0, shuffle=True, seed=2)
    outputs = {}
    for suffix in (".json", ".jsonl", ".parquet"):
        source = write_table(frame, tmp_path / f"tx{suffix}", number_long_share=0.3)
        out = tmp_path / f"features{suffix}.parquet"
        done = CliRunner().invoke(app, ["features", str(source), "-o", str(out),
                                        "--chunk-rows", "200", "--quiet"])
        assert done.exit_code == 0, done.output
        outputs[suffix] = pl.read_parquet(out)
    assert outputs[".parquet"].height == 1500
    assert outputs[".json"].equals(outputs[".parquet"])
    assert outputs[".jsonl"].equals(outputs[".parquet"])
    # and through the Python API, chunk by chunk
    via_json = [c.values for c in feature_chunks(tmp_path / "tx.json", STANDARD,
                                                 chunk_rows=300)]
    via_parquet = [c.values for c in feature_chunks(tmp_path / "tx.parquet", STANDARD,
                                                    chunk_rows=300)]
    assert np.array_equal(np.vstack(via_json), np.vstack(via_parquet))


def test_a_file_in_time_order_streams_and_its_rejects_come_with_their_chunk(tmp_path):
    records: list = [rec(f"t{i}", T0 + i * 1000, 5.0 + i) for i in range(12)]
    records[3] = rec("t3", T0 + 3000, -1.0)
    records[8] = "not json at all"
    path = write(tmp_path, records, "tx.jsonl")
    rejects: list = []
    counts = ReadCounts()
    seen = []
    for chunk in time_ordered_chunks(path, 4, None, rejects, counts):
        seen.append((chunk.get_column("_index").to_list(), [r.index for r in rejects]))
    assert not counts.sorted_out_of_core
    assert seen == [([0, 1, 2, 4], [3]), ([5, 6, 7, 9], [3, 8]), ([10, 11], [3, 8])]
    assert_same_as_whole_file(path, 4)
