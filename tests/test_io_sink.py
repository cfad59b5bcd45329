"""ResultSink: a result table written a chunk at a time reads back as the whole table."""

from __future__ import annotations

import polars as pl
import pytest

from txanomaly.io.sink import ResultSink

READ = {".parquet": pl.read_parquet, ".csv": pl.read_csv, ".jsonl": pl.read_ndjson,
        ".json": pl.read_json}


@pytest.mark.parametrize("suffix", list(READ))
def test_chunks_read_back_as_one_table(tmp_path, suffix):
    whole = pl.DataFrame({"transaction_id": [f"t{i}" for i in range(7)],
                          "score": [0.5 * i for i in range(7)]})
    path = tmp_path / f"out{suffix}"
    with ResultSink(path) as sink:
        for chunk in (whole.slice(0, 3), whole.head(0), whole.slice(3, 3), whole.slice(6)):
            sink.write(chunk)  # an empty chunk in the middle too
    assert sink.rows == 7
    assert READ[suffix](path).equals(whole)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no partial file left


def test_a_failure_leaves_no_file_and_other_columns_are_refused(tmp_path):
    path = tmp_path / "out.parquet"
    with pytest.raises(ValueError, match="differ"), ResultSink(path) as sink:
        sink.write(pl.DataFrame({"a": [1]}))
        sink.write(pl.DataFrame({"b": [1]}))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("background", [True, False])
def test_a_failed_write_is_raised_and_leaves_no_file(tmp_path, background):
    path = tmp_path / "out.csv"
    # A list column cannot be written as CSV: the writer (a background thread by default)
    # fails, and the error reaches the caller by the next write or the close.
    with pytest.raises(pl.exceptions.ComputeError), ResultSink(path, background) as sink:
        sink.write(pl.DataFrame({"a": [[1, 2]]}))
        sink.write(pl.DataFrame({"a": [[3]]}))
    assert list(tmp_path.iterdir()) == []


def test_parquet_text_columns_with_few_values_are_dictionary_encoded_and_codecs(tmp_path):
    import pyarrow.parquet as pq

    frame = pl.DataFrame({"transaction_id": [f"t{i}" for i in range(5000)],
                          "reason_1": ["amount", "hour"] * 2500, "score": [0.5] * 5000})
    with ResultSink(tmp_path / "out.parquet") as sink:
        sink.write(frame)
    columns = pq.ParquetFile(tmp_path / "out.parquet").metadata.row_group(0)
    encodings = {columns.column(j).path_in_schema: columns.column(j).encodings
                 for j in range(columns.num_columns)}
    assert any("DICT" in e for e in encodings["reason_1"])
    assert not any("DICT" in e for e in encodings["transaction_id"])
    assert pl.read_parquet(tmp_path / "out.parquet").equals(frame)
    codecs = {columns.column(j).path_in_schema: columns.column(j).compression
              for j in range(columns.num_columns)}  # text zstd, numbers Snappy
    assert codecs == {"transaction_id": "ZSTD", "reason_1": "ZSTD", "score": "SNAPPY"}


@pytest.mark.parametrize("suffix", list(READ))
def test_the_caller_may_read_its_frame_while_it_is_written(tmp_path, suffix):
    # A writer that held the caller's own DataFrame object deadlocked a caller reading it
    # (frame.height) while a JSON chunk was being written.
    frame = pl.DataFrame({"transaction_id": [f"t{i}" for i in range(200_000)],
                          "score": [0.25] * 200_000})
    path = tmp_path / f"out{suffix}"
    with ResultSink(path) as sink:
        for _ in range(3):
            sink.write(frame)
            assert frame.height == 200_000 and frame["score"].sum() == 50_000.0
    assert sink.rows == 600_000
    assert READ[suffix](path).height == 600_000
