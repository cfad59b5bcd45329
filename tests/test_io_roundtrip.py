"""Every writer mirrors its reader: write_table then load_transactions gives the same records,
in every registered format; the formats are one registry."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from txanomaly import synth
from txanomaly.errors import InputFormatError
from txanomaly.io import (
    FORMATS,
    SUFFIXES,
    format_for,
    load_transactions,
    read_transactions,
    write_results,
    write_table,
)
from txanomaly.schema import (
    AMOUNT_COLUMNS,
    EXTRA_COLUMN,
    FLAT_SCHEMA,
    MAX_AMOUNT,
    MAX_TIMESTAMP_MS,
    STRING_COLUMNS,
)

DOCS = Path(__file__).resolve().parents[1] / "docs"
TS = 1662358419786


def flat(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame([{c: row.get(c) for c in FLAT_SCHEMA} for row in rows],
                        schema=FLAT_SCHEMA)


def test_a_jsonl_written_with_write_table_reads_back_every_record(tmp_path):
    # Regression: write_table(frame, "x.jsonl") wrote snake_case rows; 0 of 200 read back.
    frame = synth.generate(200, users=20, days=3, seed=0).transactions
    assert_frame_equal(read_transactions(write_table(frame, tmp_path / "x.jsonl")), frame)


EDGES = flat([
    {"transaction_id": "a", "timestamp": 0, "origin_amount": 5e-324},  # no user ids at all
    {"transaction_id": "b", "timestamp": MAX_TIMESTAMP_MS - 1, "destination_amount": MAX_AMOUNT,
     "destination_user_id": "ü-ß ✓ \"quoted\", comma\nnewline", "type": "TRANSFER"},
    {"transaction_id": "c", "timestamp": TS, "origin_amount": 0.1, "destination_amount": None,
     "destination_currency": "USD", "origin_method": "CARD",
     EXTRA_COLUMN: '{"note":"x","originPaymentDetails":{"fingerprint":"f"},"n":[1,2.5,null]}'},
    {"transaction_id": "d", "timestamp": TS + 1, "origin_amount": 1e-300,
     "destination_amount": 123456789.12345679, "state": "SUCCESSFUL",
     EXTRA_COLUMN: '{"destinationAmountDetails":{"fee":0.25},"tags":{"k":"v"}}'},
])


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_edge_records_read_back_unchanged(tmp_path, suffix):
    back = read_transactions(write_table(EDGES, tmp_path / f"tx{suffix}"))
    assert_frame_equal(back, EDGES)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_categorical_frames_are_written_as_their_text(tmp_path, suffix):
    coded = load_transactions(write_table(EDGES, tmp_path / f"a{suffix}"), categorical=True)
    back = read_transactions(write_table(coded.frame, tmp_path / f"b{suffix}"))
    assert_frame_equal(back, EDGES)


_TEXT = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"),
                min_size=1, max_size=12)
_AMOUNT = st.floats(0, MAX_AMOUNT) | st.sampled_from([5e-324, 1e-300, MAX_AMOUNT])
_EXTRA = st.dictionaries(st.sampled_from(["note", "x y", "é"]),
                         st.none() | st.integers(-5, 5) | _TEXT | st.floats(-1e9, 1e9),
                         min_size=1, max_size=3)


@st.composite
def _records(draw: st.DrawFn) -> pl.DataFrame:
    n = draw(st.integers(0, 8))
    ids = draw(st.lists(_TEXT, min_size=n, max_size=n, unique=True))
    rows = []
    for tid in ids:
        row: dict[str, Any] = {c: draw(st.none() | _TEXT) for c in STRING_COLUMNS}
        row["transaction_id"] = tid
        row["timestamp"] = draw(st.integers(0, MAX_TIMESTAMP_MS - 1))
        amounts = draw(st.sampled_from([(True, True), (True, False), (False, True)]))
        for column, present in zip(AMOUNT_COLUMNS, amounts, strict=True):
            row[column] = draw(_AMOUNT) if present else None
        extra = draw(st.none() | _EXTRA)
        if extra is not None and draw(st.booleans()):  # an unknown sub-field of a known object
            extra = {**extra, "originPaymentDetails": {"fingerprint": draw(_TEXT)}}
        row[EXTRA_COLUMN] = None if extra is None else orjson.dumps(extra).decode()
        rows.append(row)
    return flat(rows)


@pytest.mark.parametrize("suffix", SUFFIXES)
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(frame=_records())
def test_any_valid_records_read_back_unchanged(tmp_path, suffix, frame):
    result = load_transactions(write_table(frame, tmp_path / f"tx{suffix}"))
    assert result.rejects == [] and result.exact_duplicates == 0
    assert_frame_equal(result.frame, frame)


def test_write_table_refuses_what_is_not_a_transactions_table(tmp_path):
    scores = pl.DataFrame({"transaction_id": ["a"], "timestamp": [1], "anomaly_score": [0.5]})
    with pytest.raises(InputFormatError, match=r"anomaly_score are not flat record columns "
                                               r"\(use write_results"):
        write_table(scores, tmp_path / "s.jsonl")
    with pytest.raises(InputFormatError, match=r"missing column.*timestamp"):
        write_table(scores.drop("timestamp", "anomaly_score"), tmp_path / "s.jsonl")


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_write_results_keeps_a_table_as_it_is(tmp_path, suffix):
    scores = pl.DataFrame({"transaction_id": ["a", "b"], "anomaly_score": [0.5, 2.0],
                           "is_anomaly": [False, True]})
    path = write_results(scores, tmp_path / "deep" / f"s{suffix}")
    read = {".json": pl.read_json, ".jsonl": pl.read_ndjson, ".ndjson": pl.read_ndjson,
            ".csv": pl.read_csv, ".parquet": pl.read_parquet}[suffix]
    assert_frame_equal(read(path), scores)


def test_formats_are_one_registry():
    assert tuple(s for fmt in FORMATS for s in fmt.suffixes) == SUFFIXES
    assert len(set(SUFFIXES)) == len(SUFFIXES)
    assert all(s == s.lower() and s.startswith(".") for s in SUFFIXES)
    assert format_for("A/B.PARQUET").name == "Parquet"
    with pytest.raises(InputFormatError, match=r"x: unknown extension \(none\)"):
        format_for("x")


def test_the_guide_lists_every_format():
    guide = (DOCS / "guide.md").read_text()
    section = guide[guide.index("## Input"):guide.index("### The record")]
    listed = set(re.findall(r"`(\.[a-z]+)`", section))
    assert listed == set(SUFFIXES)
