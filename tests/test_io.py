"""Reading transactions: every format, every kind of bad input, nothing valid lost."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import orjson
import polars as pl
import pytest

from txanomaly.errors import InputFormatError, RecordError
from txanomaly.io import load_transactions, read_transactions, write_rejects
from txanomaly.schema import FLAT_COLUMNS, parse_record, parse_timestamp, to_raw

TS = 1662358419786


def rec(tid: str = "t1", **kw) -> dict:
    base = {"transactionId": tid, "timestamp": TS, "originUserId": "u1",
            "destinationUserId": "u2", "type": "TRANSFER", "transactionState": "SUCCESSFUL",
            "originAmountDetails": {"transactionAmount": 12.5, "transactionCurrency": "EUR",
                                    "country": "DE"},
            "destinationAmountDetails": {"transactionAmount": 12.5,
                                         "transactionCurrency": "EUR", "country": "FR"},
            "originPaymentDetails": {"method": "CARD", "cardFingerprint": "abc"},
            "destinationPaymentDetails": {"method": "IBAN"}}
    base.update(kw)
    return {k: v for k, v in base.items() if v is not ...}


def write_json(tmp_path: Path, records: list, name: str = "tx.json") -> Path:
    path = tmp_path / name
    if name.endswith(".json"):
        path.write_text(json.dumps(records))
    else:
        path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return path


@pytest.mark.parametrize("value", [TS, {"$numberLong": str(TS)}, str(TS),
                                   "2022-09-05T06:13:39.786Z", "2022-09-05T08:13:39.786+02:00",
                                   "2022-09-05T06:13:39.786", float(TS)])
def test_every_timestamp_form_parses_to_the_same_ms(value):
    assert parse_timestamp(value) == TS


def test_flatten_keeps_unknown_fields_and_round_trips():
    raw = rec(foo={"bar": [1, 2]})
    flat = parse_record(raw)
    assert flat["origin_method"] == "CARD" and flat["destination_country"] == "FR"
    assert orjson.loads(flat["extra"]) == {"originPaymentDetails": {"cardFingerprint": "abc"},
                                           "foo": {"bar": [1, 2]}}
    assert to_raw(flat) == raw


BAD = [
    ("missing id", rec(transactionId=...), "transactionId", "required"),
    ("id not a string", rec(transactionId=5), "transactionId", "expected a string"),
    ("id empty", rec(transactionId=""), "transactionId", "required"),
    ("id null", rec(transactionId=None), "transactionId", "required"),
    ("NUL in a string", rec(originUserId="u\x001"), "originUserId", "NUL"),
    ("bad timestamp", rec(timestamp="next tuesday"), "timestamp", "cannot parse"),
    ("timestamp bool", rec(timestamp=True), "timestamp", "expected"),
    ("bad numberLong", rec(timestamp={"$numberLong": "x1"}), "timestamp", "cannot parse"),
    ("negative amount", rec(destinationAmountDetails={"transactionAmount": -3}),
     "destinationAmountDetails.transactionAmount", ">= 0"),
    ("string amount", rec(originAmountDetails={"transactionAmount": "12"}),
     "originAmountDetails.transactionAmount", "expected a number"),
    ("huge amount", rec(originAmountDetails={"transactionAmount": 1e300}),
     "originAmountDetails.transactionAmount", "larger than"),
    ("no amount", rec(originAmountDetails=..., destinationAmountDetails=...),
     "originAmountDetails.transactionAmount", "at least one"),
    ("details not an object", rec(originPaymentDetails="CARD"), "originPaymentDetails",
     "expected an object"),
    ("user id number", rec(originUserId=7), "originUserId", "expected a string"),
]


@pytest.mark.parametrize(("case", "raw", "field", "message"), BAD, ids=[b[0] for b in BAD])
def test_each_kind_of_bad_record_is_named_by_index_id_and_field(tmp_path, case, raw, field,
                                                                message):
    path = write_json(tmp_path, [rec("ok1"), raw, rec("ok2")])
    result = load_transactions(path)
    assert result.frame.get_column("transaction_id").to_list() == ["ok1", "ok2"]
    (rej,) = result.rejects
    assert rej.index == 1
    assert any(e.field == field and message in e.message for e in rej.errors), rej.errors
    with pytest.raises(RecordError, match=r"record 1\b"):
        read_transactions(path)


def test_non_finite_amount_in_json_lines_is_rejected(tmp_path):
    path = tmp_path / "tx.jsonl"
    good = json.dumps(rec("a"))
    bad = good.replace('"b"', '"b"').replace("12.5", "NaN", 1).replace('"a"', '"b"')
    path.write_text(good + "\n" + bad + "\n{not json\n")
    result = load_transactions(path)
    assert result.frame.height == 1
    assert [r.index for r in result.rejects] == [1, 2]
    assert "invalid JSON" in result.rejects[1].errors[0].message


def test_all_errors_of_one_record_are_listed():
    with pytest.raises(RecordError) as info:
        parse_record(rec(timestamp="x", originUserId=1), index=3)
    assert {e.field for e in info.value.errors} == {"timestamp", "originUserId"}
    assert "record 3 (transactionId='t1')" in str(info.value)


def test_duplicates_first_wins_exact_repeat_counted_once(tmp_path):
    records = [rec("a"), rec("b"), rec("a"), rec("a", timestamp=TS + 1)]
    result = load_transactions(write_json(tmp_path, records))
    assert result.frame.get_column("transaction_id").to_list() == ["a", "b"]
    assert result.exact_duplicates == 1
    (rej,) = result.rejects
    assert rej.index == 3 and "record 0 was kept" in rej.errors[0].message


@pytest.mark.parametrize("name", ["tx.json", "tx.jsonl"])
def test_json_array_and_lines_give_the_same_frame(tmp_path, name):
    records = [rec(f"t{i}", timestamp={"$numberLong": str(TS + i)}) for i in range(5)]
    frame = read_transactions(write_json(tmp_path, records, name))
    assert frame.columns == [*FLAT_COLUMNS, "extra"]
    assert frame.get_column("timestamp").to_list() == [TS + i for i in range(5)]


def test_csv_and_parquet_flat_tables(tmp_path):
    frame = read_transactions(write_json(tmp_path, [rec("a"), rec("b", foo=1)]))
    frame.write_parquet(tmp_path / "tx.parquet")
    assert read_transactions(tmp_path / "tx.parquet").equals(frame)
    frame.write_csv(tmp_path / "tx.csv")
    assert read_transactions(tmp_path / "tx.csv").equals(frame)


def test_csv_with_iso_timestamps_extra_columns_and_bad_rows(tmp_path):
    path = tmp_path / "tx.csv"
    path.write_text(
        "transaction_id,timestamp,origin_user_id,destination_amount,channel\n"
        "a,2022-09-05T06:13:39.786Z,u1,10.5,web\n"
        "b,1662358419786,u1,abc,app\n"
        "c,,u1,3,app\n"
        "d,1662358419786,,inf,app\n"
        "e,1662358419787,u2,4,\n")
    result = load_transactions(path)
    assert result.frame.get_column("transaction_id").to_list() == ["a", "e"]
    assert result.frame.get_column("timestamp").to_list() == [TS, TS + 1]
    assert orjson.loads(result.frame.get_column("extra")[0]) == {"channel": "web"}
    errors = {r.transaction_id: r.errors[0] for r in result.rejects}
    assert errors["b"].field == "destination_amount" and "number" in errors["b"].message
    assert errors["c"].field == "timestamp" and errors["c"].message == "required"
    assert errors["d"].field == "destination_amount" and "finite" in errors["d"].message


@pytest.mark.parametrize(("header", "message"), [
    ("id,amount", r"missing required column.*transaction_id"),
    ("transactionId,timestamp,originUserId", r"camelCase column\(s\) transactionId.*snake_case"),
])
def test_a_table_without_the_required_columns_is_a_clear_file_error(tmp_path, header, message):
    path = tmp_path / "tx.csv"
    path.write_text(f"{header}\n1,2,3\n")
    with pytest.raises(InputFormatError, match=message):
        load_transactions(path)


def test_a_csv_without_timestamp_says_which_columns_are_required_and_missing(tmp_path):
    # Regression: the message listed all 14 flat columns as if each were needed.
    path = tmp_path / "tx.csv"
    path.write_text("transaction_id,origin_user_id,origin_amount\nt1,u1,5\n")
    with pytest.raises(InputFormatError) as info:
        load_transactions(path)
    message = str(info.value)
    assert "missing required column(s) timestamp;" in message
    assert ("needs transaction_id, timestamp and at least one of origin_amount / "
            "destination_amount") in message
    assert "destination_method" not in message and "\n" not in message


def test_unknown_extension_lists_the_formats_and_non_json_is_refused(tmp_path):
    (tmp_path / "tx.xml").write_text("<a/>")
    with pytest.raises(InputFormatError, match=r"unknown extension '\.xml'; the formats are "
                                               r"\.json, \.jsonl, \.ndjson, \.csv, \.parquet"):
        load_transactions(tmp_path / "tx.xml")
    (tmp_path / "tx.json").write_text("hello")
    with pytest.raises(InputFormatError, match="not JSON"):
        load_transactions(tmp_path / "tx.json")
    (tmp_path / "broken.json").write_text('[{"transactionId": "a", } ]')
    with pytest.raises(InputFormatError, match="invalid JSON after 0 complete record"):
        load_transactions(tmp_path / "broken.json")


def test_a_truncated_json_array_is_one_clean_line(tmp_path):
    # Regression: the message ended with yajl's dangling "(right here) ------^" line.
    path = tmp_path / "cut.json"
    path.write_bytes(orjson.dumps([rec("a"), rec("b"), rec("c")])[:-40])
    with pytest.raises(InputFormatError) as info:
        load_transactions(path)
    message = str(info.value)
    assert message == (f"{path}: truncated JSON: the file ends before the array is closed, "
                       "after 2 complete record(s)")


def test_a_truncated_json_line_is_rejected_with_its_line_and_column(tmp_path):
    path = tmp_path / "cut.jsonl"
    path.write_text(json.dumps(rec("a")) + "\n\n" + '{"transactionId": "b", "time')
    result = load_transactions(path)
    (rej,) = result.rejects
    assert rej.index == 1 and rej.record == '{"transactionId": "b", "time'
    assert rej.errors[0].message == "invalid JSON on line 3, column 29: unexpected end of data"


def test_rejects_file_holds_reasons_and_the_record(tmp_path):
    result = load_transactions(write_json(tmp_path, [rec("a"), rec("b", timestamp="x")]))
    path = write_rejects(tmp_path / "rejects.jsonl", result.rejects)
    (line,) = path.read_text().splitlines()
    entry = json.loads(line)
    assert entry["index"] == 1 and entry["transactionId"] == "b"
    assert entry["errors"][0]["field"] == "timestamp"
    assert entry["record"]["timestamp"] == "x"


def test_json_array_is_streamed(tmp_path):
    # 20k records: peak Python allocations stay well below a fully materialised list of dicts.
    records = [rec(f"t{i}") for i in range(20_000)]
    path = tmp_path / "big.json"
    path.write_bytes(orjson.dumps(records))
    del records
    tracemalloc.start()
    frame = read_transactions(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert frame.height == 20_000
    assert isinstance(frame, pl.DataFrame)
    assert peak < 3 * path.stat().st_size, (peak, path.stat().st_size)


def test_valid_rows_with_missing_optional_fields_take_the_fast_path(tmp_path, monkeypatch):
    # Regression: null optional columns made every such row go through the per-row slow path.
    from txanomaly.io import tables

    frame = read_transactions(write_json(tmp_path, [rec("a", originUserId=None),
                                                    rec("b", destinationPaymentDetails=None)]))
    frame.write_parquet(tmp_path / "tx.parquet")
    calls = []
    monkeypatch.setattr(tables, "parse_flat_row", lambda *a: calls.append(a))
    assert load_transactions(tmp_path / "tx.parquet").frame.height == 2
    assert calls == []


def flat_file_with_bad_rows(tmp_path: Path, suffix: str) -> Path:
    """Records a..d: c has a too-long state, d an ISO timestamp (the slow path accepts it)."""
    frame = read_transactions(write_json(tmp_path, [rec("a"), rec("b"), rec("c"), rec("d")]))
    frame = frame.with_columns(  # c: a too-long value in a column that is not kept
        pl.when(pl.col("transaction_id") == "c").then(pl.lit("x" * 5000))
        .otherwise(pl.col("state")).alias("state"),
        pl.when(pl.col("transaction_id") == "d").then(pl.lit("2022-09-05T06:13:39.787Z"))
        .otherwise(pl.col("timestamp").cast(pl.String)).alias("timestamp"))
    path = tmp_path / f"flat{suffix}"
    if suffix == ".parquet":
        frame.write_parquet(path)
    elif suffix == ".csv":
        frame.write_csv(path)
    else:
        path = write_json(tmp_path, [rec("a"), rec("b"), rec("c", transactionState="x" * 5000),
                                     rec("d", timestamp=TS + 1)], "tx.jsonl")
    return path


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_keeping_some_columns_still_validates_every_column(tmp_path, suffix):
    path = flat_file_with_bad_rows(tmp_path, suffix)
    whole = load_transactions(path)
    kept = load_transactions(path, ["timestamp", "origin_amount"])
    assert kept.frame.columns == ["transaction_id", "timestamp", "origin_amount"]
    assert kept.frame.equals(whole.frame.select(kept.frame.columns))
    assert [r.transaction_id for r in kept.rejects] == ["c"]
    assert kept.rejects[0].errors[0].field in ("state", "transactionState")
    assert kept.frame.get_column("timestamp").to_list()[-1] == TS + 1  # the slow path's value


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_categorical_columns_hold_the_same_values(tmp_path, suffix):
    path = flat_file_with_bad_rows(tmp_path, suffix)
    whole = load_transactions(path)
    columns = ["timestamp", "origin_user_id", "destination_user_id", "origin_country", "state"]
    kept = load_transactions(path, columns, categorical=True)
    assert kept.frame.schema["transaction_id"] == pl.String
    assert all(kept.frame.schema[c] == pl.Categorical for c in columns[1:])
    as_text = kept.frame.with_columns(pl.col(columns[1:]).cast(pl.String))
    assert as_text.equals(whole.frame.select("transaction_id", *columns))
    assert [r.transaction_id for r in kept.rejects] == ["c"]
    every = load_transactions(path, categorical=True)  # every column, in the same order
    assert every.frame.columns == whole.frame.columns
    assert every.frame.schema["extra"] == pl.String
    assert every.frame.with_columns(pl.col(pl.Categorical).cast(pl.String)).equals(whole.frame)


def test_keeping_some_columns_still_tells_exact_repeats_from_conflicts(tmp_path):
    records = [rec("a"), rec("b"), rec("a"), rec("a", transactionState="DECLINED")]
    pl.concat([read_transactions(write_json(tmp_path, [r], f"{i}.json"))
               for i, r in enumerate(records)]).write_parquet(tmp_path / "tx.parquet")
    result = load_transactions(tmp_path / "tx.parquet", ["timestamp"])
    # The conflicting repeat differs only in a column that is not kept.
    assert result.frame.columns == ["transaction_id", "timestamp"]
    assert result.frame.get_column("transaction_id").to_list() == ["a", "b"]
    assert result.exact_duplicates == 1
    assert [r.index for r in result.rejects] == [3]
    coded = load_transactions(tmp_path / "tx.parquet", ["origin_user_id"], categorical=True)
    assert coded.frame.schema["origin_user_id"] == pl.Categorical
    assert coded.frame.get_column("transaction_id").to_list() == ["a", "b"]
    assert [r.index for r in coded.rejects] == [3]


def test_keeping_an_unknown_column_is_a_clear_error(tmp_path):
    with pytest.raises(InputFormatError, match=r"unknown column.*amount"):
        load_transactions(write_json(tmp_path, [rec("a")]), ["amount"])
