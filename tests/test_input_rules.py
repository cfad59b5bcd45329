"""One set of input rules: the same value gets the same verdict from a JSON record, a CSV or
Parquet row and the API, and the vectorised table check finds every row the per-row rules
reject (it only picks rows; the messages come from the per-row rules)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from txanomaly.errors import FieldError, RecordError
from txanomaly.io import load_transactions, validate_flat, write_results
from txanomaly.schema import (
    AMOUNT_COLUMNS,
    FLAT_COLUMNS,
    FLAT_SCHEMA,
    MAX_AMOUNT,
    MAX_STRING_LENGTH,
    MAX_TIMESTAMP_MS,
    RAW_PATHS,
    STRING_COLUMNS,
    parse_flat_row,
    parse_record,
    to_raw,
)

TS = 1662358419786
GOOD: dict[str, Any] = {"transaction_id": "t1", "timestamp": TS, "origin_user_id": "u1",
                        "origin_amount": 12.5, "origin_currency": "EUR",
                        "destination_amount": 12.5}

# (case, flat column, bad value as JSON carries it, the same value in a table's cell, message)
SAME = [
    ("negative amount", "origin_amount", -3.0, -3.0, "must be >= 0, got -3.0"),
    ("huge amount", "destination_amount", 2e15, 2e15, "2e+15 is larger than 1e+15"),
    ("infinite amount", "origin_amount", {"$numberDouble": "Infinity"}, math.inf,
     "must be finite, got inf"),
    ("NUL in an id", "origin_user_id", "u\x001", "u\x001", "must not contain NUL characters"),
    ("long state", "state", "x" * (MAX_STRING_LENGTH + 1), "x" * (MAX_STRING_LENGTH + 1),
     f"longer than {MAX_STRING_LENGTH} characters"),
    ("text timestamp", "timestamp", "yesterday", "yesterday",
     "cannot parse 'yesterday': expected ms since epoch or ISO-8601"),
    ("timestamp out of range", "timestamp", MAX_TIMESTAMP_MS, MAX_TIMESTAMP_MS,
     f"{MAX_TIMESTAMP_MS} ms is outside 1970..9999"),
    ("empty id", "transaction_id", "", "", "required"),
]


def _json_verdict(column: str, value: Any) -> list[FieldError]:
    raw = to_raw(GOOD)
    obj, _, member = RAW_PATHS[column].rpartition(".")
    (raw.setdefault(obj, {}) if obj else raw)[member] = value
    try:
        parse_record(raw, 0)
    except RecordError as exc:
        return exc.errors
    return []


def _table_verdict(tmp_path: Path, suffix: str, column: str, cell: Any) -> list[FieldError]:
    rows = [dict(GOOD, transaction_id="t0"), {**GOOD, column: cell}]
    if isinstance(cell, str):  # a text cell needs a text column, as in a CSV
        rows = [{**row, column: None if row.get(column) is None else str(row[column])}
                for row in rows]
    path = write_results(pl.DataFrame(rows), tmp_path / f"rows{suffix}")
    result = load_transactions(path)
    assert result.frame.get_column("transaction_id").to_list() == ["t0"]
    (rejected,) = result.rejects
    return rejected.errors


@pytest.mark.parametrize(("case", "column", "value", "cell", "message"), SAME,
                         ids=[case for case, *_ in SAME])
def test_the_same_bad_value_gets_the_same_verdict_everywhere(tmp_path, case, column, value,
                                                             cell, message):
    assert _json_verdict(column, value) == [FieldError(RAW_PATHS[column], message)]
    for suffix in (".csv", ".parquet"):
        assert _table_verdict(tmp_path, suffix, column, cell) == [FieldError(column, message)]
    inputs = pytest.importorskip("txanomaly.service.inputs")
    raw = to_raw(GOOD)
    obj, _, member = RAW_PATHS[column].rpartition(".")
    (raw.setdefault(obj, {}) if obj else raw)[member] = value
    with pytest.raises(inputs.ApiError) as info:
        inputs.parse_transactions([raw], max_batch=10)
    (error,) = info.value.errors
    assert (error["field"], error["message"]) == (RAW_PATHS[column], message)


def test_a_missing_amount_is_named_in_each_shape():
    both_missing = {k: v for k, v in GOOD.items() if k not in AMOUNT_COLUMNS}
    with pytest.raises(RecordError) as flat:
        parse_flat_row(both_missing, 4)
    assert flat.value.errors == [FieldError(
        "origin_amount", "at least one of origin_amount / destination_amount is required")]
    with pytest.raises(RecordError) as raw:
        parse_record(to_raw(both_missing), 4)
    assert raw.value.errors == [FieldError(
        "originAmountDetails.transactionAmount",
        "at least one of originAmountDetails.transactionAmount / "
        "destinationAmountDetails.transactionAmount is required")]


def test_amount_details_without_an_amount_read_like_a_row_without_that_amount():
    # A flat row may carry a currency and no amount on one side; so may a raw record.
    row = {**GOOD, "destination_amount": None, "destination_currency": "USD"}
    raw = to_raw(row)
    assert raw["destinationAmountDetails"] == {"transactionCurrency": "USD"}
    assert parse_record(raw) == {**parse_flat_row(row), "extra": None}


# --- the vectorised check against the per-row rules -------------------------------------------

_TEXT = st.one_of(
    st.none(), st.just(""), st.text(max_size=4), st.text(min_size=9, max_size=16),
    st.text(alphabet="é", min_size=MAX_STRING_LENGTH - 1, max_size=MAX_STRING_LENGTH + 1),
    st.text(alphabet="ab", min_size=MAX_STRING_LENGTH, max_size=MAX_STRING_LENGTH + 1))
_AMOUNT = st.one_of(st.none(), st.floats(allow_nan=True),
                    st.sampled_from([0.0, -0.0, MAX_AMOUNT, math.nextafter(MAX_AMOUNT, math.inf),
                                     -1e-300, 5e-324]))
_TIMESTAMP = st.one_of(st.none(), st.integers(-2, 2), st.integers(MAX_TIMESTAMP_MS - 2,
                                                                  MAX_TIMESTAMP_MS + 2),
                       st.integers(-(2**63), 2**63 - 1))
_EDGES = {**{c: _TEXT for c in STRING_COLUMNS}, "timestamp": _TIMESTAMP,
          **{c: _AMOUNT for c in AMOUNT_COLUMNS}}
_WORD = st.text(alphabet="abé€", min_size=1, max_size=3)
_VALID = st.fixed_dictionaries({
    **{c: st.none() | _WORD for c in STRING_COLUMNS}, "transaction_id": _WORD,
    "timestamp": st.integers(0, MAX_TIMESTAMP_MS - 1),
    "origin_amount": st.none() | st.floats(0, MAX_AMOUNT),
    "destination_amount": st.floats(0, MAX_AMOUNT)})


@st.composite
def _row(draw: st.DrawFn) -> dict[str, Any]:
    """A valid row with up to two fields replaced by edge cases (valid or not)."""
    row = draw(_VALID)
    for column in draw(st.lists(st.sampled_from(FLAT_COLUMNS), max_size=2)):
        row[column] = draw(_EDGES[column])
    return row


@pytest.mark.parametrize("compiled", [False, True], ids=["Polars", "compiled NUL search"])
@pytest.mark.parametrize("as_text", [False, True], ids=["typed", "text cells (CSV)"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(_row(), min_size=1, max_size=25))
def test_the_vectorised_check_gives_the_per_row_verdicts(as_text, compiled, rows):
    frame = pl.DataFrame(rows, schema={c: FLAT_SCHEMA[c] for c in FLAT_COLUMNS})
    if as_text:
        frame = frame.cast(pl.String)
        rows = frame.to_dicts()
    valid, rejects = validate_flat(frame, compiled=compiled)
    expected_ok, expected_bad = [], {}
    for index, row in enumerate(rows):
        try:
            parse_flat_row(row, index)
        except RecordError as exc:
            expected_bad[index] = exc.errors
        else:
            expected_ok.append(index)
    assert valid.get_column("_index").to_list() == expected_ok
    assert {r.index: r.errors for r in rejects} == expected_bad
