"""The synthetic data generator (txanomaly.synth) and the ``txanomaly synth`` command."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import orjson
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from txanomaly import synth
from txanomaly.cli import app
from txanomaly.errors import TxAnomalyError
from txanomaly.io import SUFFIXES, json_write, load_transactions, write_table
from txanomaly.schema import FLAT_COLUMNS, parse_record, to_raw

N, USERS, DAYS, RATE, SEED = 30_000, 300, 20, 0.03, 11
START = date(2024, 3, 4)
START_MS = int(datetime(2024, 3, 4, tzinfo=UTC).timestamp()) * 1000
MINUTE_MS = 60_000


@pytest.fixture(scope="module")
def result() -> synth.SynthResult:
    return synth.generate(N, users=USERS, days=DAYS, anomaly_rate=RATE, seed=SEED, start=START)


@pytest.fixture(scope="module")
def labelled(result: synth.SynthResult) -> pl.DataFrame:
    """Transactions with their label columns and the UTC hour."""
    return result.transactions.with_columns(
        result.labels["is_anomaly"], result.labels["kind"],
        hour=pl.from_epoch("timestamp", time_unit="ms").dt.hour())


def _normal_origin_side(labelled: pl.DataFrame) -> pl.DataFrame:
    """Each origin user's normal transactions."""
    return labelled.filter((pl.col("is_anomaly") == 0) & pl.col("origin_user_id").is_not_null())


def _of_kind(labelled: pl.DataFrame, kind: str) -> pl.DataFrame:
    rows = labelled.filter(pl.col("kind") == kind)
    assert rows.height > 0
    return rows


def test_same_seed_gives_the_same_data_and_another_seed_other_data() -> None:
    first = synth.generate(3_000, users=40, days=5, anomaly_rate=0.05, seed=3)
    again = synth.generate(3_000, users=40, days=5, anomaly_rate=0.05, seed=3)
    other = synth.generate(3_000, users=40, days=5, anomaly_rate=0.05, seed=4)
    assert_frame_equal(first.transactions, again.transactions)
    assert_frame_equal(first.labels, again.labels)
    assert not first.transactions.equals(other.transactions)
    assert not first.labels["kind"].equals(other.labels["kind"])


def test_the_requested_size_users_and_days_are_honoured(result: synth.SynthResult) -> None:
    frame = result.transactions
    assert frame.height == N
    assert frame["transaction_id"].n_unique() == N
    assert frame["origin_user_id"].n_unique() - 1 == USERS  # - 1: the null
    assert frame["timestamp"].min() >= START_MS
    assert frame["timestamp"].max() < START_MS + DAYS * synth.DAY_MS
    assert frame["timestamp"].is_sorted()
    assert frame["transaction_id"].equals(result.labels["transaction_id"])


def test_the_frame_has_the_flat_columns_and_types(result: synth.SynthResult) -> None:
    schema = result.transactions.schema
    assert list(schema) == [*FLAT_COLUMNS, "extra"]
    assert schema["timestamp"] == pl.Int64
    assert schema["origin_amount"] == schema["destination_amount"] == pl.Float64
    assert all(schema[c] == pl.Utf8 for c in schema if c not in
               ("timestamp", "origin_amount", "destination_amount"))
    assert result.transactions["extra"].null_count() == N


def test_labels_cover_every_kind_at_the_requested_rate(result: synth.SynthResult) -> None:
    labels = result.labels
    assert labels["is_anomaly"].sum() == round(RATE * N)
    assert (labels["kind"].is_null() == (labels["is_anomaly"] == 0)).all()
    counts = result.anomaly_counts()
    assert set(counts) == set(synth.ANOMALY_KINDS)
    assert min(counts.values()) > 0.15 * RATE * N  # about a fifth each


def test_amount_spikes_are_far_above_the_users_median(labelled: pl.DataFrame) -> None:
    medians = _normal_origin_side(labelled).group_by("origin_user_id").agg(
        median=pl.col("origin_amount").median())
    spikes = _of_kind(labelled, "amount_spike").join(medians, on="origin_user_id")
    assert (spikes["origin_amount"] > 5 * spikes["median"]).all()


def test_bursts_are_several_transactions_of_one_user_within_minutes(
        labelled: pl.DataFrame) -> None:
    burst = _of_kind(labelled, "burst").select("transaction_id", "origin_user_id", "timestamp")
    pairs = burst.join(burst, on="origin_user_id", suffix="_other").filter(
        (pl.col("timestamp") - pl.col("timestamp_other")).abs() <= 5 * MINUTE_MS)
    together = pairs.group_by("transaction_id").len()["len"]
    assert together.len() == burst.height
    assert together.min() >= synth.BURST_SIZES[0]


def test_bursts_happen_in_the_users_usual_hours(labelled: pl.DataFrame) -> None:
    daytime = _normal_origin_side(labelled).group_by("origin_user_id").agg(
        day=pl.col("hour").is_between(6, 20).all())
    burst = _of_kind(labelled, "burst").join(daytime, on="origin_user_id")
    in_the_day = burst.filter("day")["hour"].is_between(6, 20)
    assert in_the_day.len() > 0 and in_the_day.all()


def test_unusual_hours_are_outside_the_users_usual_hours(labelled: pl.DataFrame) -> None:
    night = _of_kind(labelled, "unusual_hour")
    assert night["hour"].is_in([2, 3]).all()
    usual = _normal_origin_side(labelled).filter(
        pl.col("origin_user_id").is_in(night["origin_user_id"].implode()))
    assert usual.height > 0
    assert usual["hour"].is_between(6, 20).all()


def test_new_counterparties_are_never_seen_and_paid_large_amounts(
        labelled: pl.DataFrame) -> None:
    new = _of_kind(labelled, "new_counterparty_large")
    seen = pl.concat([labelled["origin_user_id"], labelled["destination_user_id"]])
    assert new["destination_user_id"].null_count() == 0
    assert (new["destination_user_id"].is_in(seen.value_counts().filter(
        pl.col("count") > 1).get_column(seen.name).implode())).sum() == 0
    medians = _normal_origin_side(labelled).group_by("origin_user_id").agg(
        median=pl.col("origin_amount").median())
    large = new.join(medians, on="origin_user_id")
    assert (large["origin_amount"] > 2 * large["median"]).all()


def test_cross_border_anomalies_come_from_domestic_users(labelled: pl.DataFrame) -> None:
    abroad = _of_kind(labelled, "cross_border")
    assert (abroad["origin_country"] != abroad["destination_country"]).all()
    assert (abroad["origin_currency"] != abroad["destination_currency"]).all()
    usual = _normal_origin_side(labelled).filter(
        pl.col("origin_user_id").is_in(abroad["origin_user_id"].implode()))
    assert (usual["origin_country"] == usual["destination_country"]).all()


def test_anomalies_belong_to_origin_users_with_history(labelled: pl.DataFrame) -> None:
    anomalies = labelled.filter(pl.col("is_anomaly") == 1)
    assert anomalies["origin_user_id"].null_count() == 0
    first_seen = _normal_origin_side(labelled).group_by("origin_user_id").agg(
        history=pl.len(), first=pl.col("timestamp").min())
    joined = anomalies.join(first_seen, on="origin_user_id", how="left")
    assert (joined["history"] >= synth.MIN_HISTORY).all()
    assert (joined["first"] < joined["timestamp"]).all()


def test_missing_user_id_shares_follow_the_arguments() -> None:
    frame = synth.generate(20_000, users=200, days=10, anomaly_rate=0.0, seed=5,
                           missing_origin=0.5, missing_destination=0.4,
                           missing_both=0.05).transactions
    origin = frame["origin_user_id"].is_null()
    destination = frame["destination_user_id"].is_null()
    assert origin.mean() == pytest.approx(0.5, abs=0.02)
    assert destination.mean() == pytest.approx(0.4, abs=0.02)
    assert (origin & destination).mean() == pytest.approx(0.05, abs=0.01)


def test_default_records_mix_types_states_currencies_and_borders(
        result: synth.SynthResult) -> None:
    frame = result.transactions
    assert frame["origin_user_id"].is_null().mean() == pytest.approx(0.35, abs=0.03)
    assert frame["destination_user_id"].is_null().mean() == pytest.approx(0.30, abs=0.03)
    assert frame["type"].n_unique() >= 5 and frame["origin_method"].n_unique() >= 6
    assert frame["origin_currency"].n_unique() >= 5
    assert (frame["state"] == "SUCCESSFUL").mean() > 0.8
    cross = frame["origin_country"] != frame["destination_country"]
    assert 0.005 < cross.mean() < 0.2
    same_currency = frame["origin_currency"] == frame["destination_currency"]
    equal = frame["origin_amount"] == frame["destination_amount"]
    assert equal.filter(same_currency).all()
    assert not equal.filter(~same_currency).any()


def test_each_user_mostly_pays_a_few_counterparties(result: synth.SynthResult) -> None:
    transfers = result.transactions.drop_nulls(["origin_user_id", "destination_user_id"])
    per_pair = transfers.group_by("origin_user_id", "destination_user_id").len()
    top3 = per_pair.sort("len", descending=True).group_by("origin_user_id").agg(
        top=pl.col("len").head(3).sum(), total=pl.col("len").sum())
    assert top3["top"].sum() / top3["total"].sum() > 0.6


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_every_written_record_parses_and_round_trips(tmp_path: Path, suffix: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    frame = synth.generate(3_000, users=40, days=5, anomaly_rate=0.05, seed=2).transactions
    monkeypatch.setattr(json_write, "CHUNK_ROWS", 1_000)  # chunk boundaries inside the array
    path = write_table(frame, tmp_path / f"tx{suffix}", number_long_share=0.3)
    text = path.read_bytes()
    raws = orjson.loads(text) if suffix == ".json" else [orjson.loads(x) for x in text.splitlines()]
    assert len(raws) == frame.height
    number_long = 0
    for index, (raw, row) in enumerate(zip(raws, frame.iter_rows(named=True), strict=True)):
        assert parse_record(raw, index) == row
        if isinstance(raw["timestamp"], dict):
            number_long += 1
            raw["timestamp"] = int(raw["timestamp"]["$numberLong"])
        assert to_raw(row) == raw
    assert 0.2 * frame.height < number_long < 0.4 * frame.height


def test_json_keeps_extra_fields_and_escapes_strings(tmp_path: Path) -> None:
    frame = pl.DataFrame({
        "transaction_id": ['a "quoted" \\ id', "plain"], "timestamp": [1, 2],
        "origin_user_id": ["üser\n", None], "destination_amount": [1.5, 2.0],
        "destination_currency": ["EUR", None],
        "extra": [None, '{"note":"x","originAmountDetails":{"fee":0.5}}'],
    })
    path = write_table(frame, tmp_path / "tx.jsonl")
    raws = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert raws[0] == {"transactionId": 'a "quoted" \\ id', "timestamp": 1,
                       "originUserId": "üser\n",
                       "destinationAmountDetails": {"transactionAmount": 1.5,
                                                    "transactionCurrency": "EUR"}}
    assert raws[1] == {"transactionId": "plain", "timestamp": 2, "note": "x",
                       "originAmountDetails": {"fee": 0.5},
                       "destinationAmountDetails": {"transactionAmount": 2.0}}


def test_parquet_holds_exactly_the_flat_columns(tmp_path: Path,
                                                result: synth.SynthResult) -> None:
    path = write_table(result.transactions, tmp_path / "tx.parquet")
    back = pl.read_parquet(path)
    assert back.columns == list(FLAT_COLUMNS)
    assert_frame_equal(back, result.transactions.drop("extra"))


def test_an_empty_frame_writes_an_empty_json_array(tmp_path: Path,
                                                   result: synth.SynthResult) -> None:
    path = write_table(result.transactions.head(0), tmp_path / "tx.json")
    assert orjson.loads(path.read_bytes()) == []


@pytest.mark.parametrize("kwargs", [
    {"n": 0}, {"users": 1}, {"days": 0}, {"anomaly_rate": 0.6}, {"anomaly_rate": -0.1},
    {"missing_origin": 1.5}, {"missing_both": 0.5}, {"missing_origin": 0.7,
                                                     "missing_destination": 0.7},
])
def test_bad_arguments_are_refused_with_their_name(kwargs: dict[str, float]) -> None:
    arguments: dict[str, float] = {"n": 100} | kwargs
    n = int(arguments.pop("n"))
    with pytest.raises(TxAnomalyError, match="|".join(kwargs)):
        synth.generate(n, **arguments)  # type: ignore[arg-type]


def test_small_inputs_still_produce_labelled_records() -> None:
    result = synth.generate(20, users=2, days=1, anomaly_rate=0.5, seed=0)
    assert result.transactions.height == 20
    assert result.labels["is_anomaly"].sum() == 10


def test_an_unknown_extension_is_refused(tmp_path: Path) -> None:
    frame = pl.DataFrame({"transaction_id": ["t"], "timestamp": [1]})
    with pytest.raises(TxAnomalyError, match=r"unknown extension '\.xlsx'; the formats are"):
        write_table(frame, tmp_path / "tx.xlsx")


def test_the_same_seed_gives_the_data_it_gave_before_synth_was_cut_into_modules() -> None:
    """Regression guard for the split of synth.py into a package (and any later change): the
    hash was computed from the single-module code of commit 97a79a0."""
    result = synth.generate(5_000, users=60, days=7, anomaly_rate=0.05, seed=42)
    text = result.transactions.write_csv() + result.labels.write_csv()
    assert hashlib.sha256(text.encode()).hexdigest() == (
        "8afdedc115319e926792d6a5898abf8cfddb63e4a5e501a8c2573d981b5c0b1c")


runner = CliRunner()


def test_cli_writes_transactions_and_labels(tmp_path: Path) -> None:
    out = tmp_path / "tx.jsonl"
    outcome = runner.invoke(app, ["synth", "-n", "2000", "--users", "30", "--days", "7",
                                  "--anomaly-rate", "0.05", "--seed", "1", "-o", str(out)])
    assert outcome.exit_code == 0, outcome.output
    assert "2,000 transactions" in outcome.output and "burst" in outcome.output
    assert len(out.read_bytes().splitlines()) == 2000
    labels_path = tmp_path / "tx.labels.csv"
    assert labels_path.read_text().splitlines()[0] == "transactionId,is_anomaly,kind"
    labels = pl.read_csv(labels_path)
    assert labels.height == 2000 and labels["is_anomaly"].sum() == 100
    expected = synth.generate(2000, users=30, days=7, anomaly_rate=0.05, seed=1)
    assert labels["transactionId"].to_list() == expected.labels["transaction_id"].to_list()


def test_cli_json_summary_and_explicit_labels_path(tmp_path: Path) -> None:
    out, labels = tmp_path / "tx.parquet", tmp_path / "truth.csv"
    outcome = runner.invoke(app, ["synth", "-n", "1000", "--users", "20", "-o", str(out),
                                  "--labels", str(labels), "--json", "--quiet"])
    assert outcome.exit_code == 0, outcome.output
    summary = json.loads(outcome.stdout)
    assert summary["rows"] == 1000 and summary["anomalies"] == 10
    assert set(summary["anomalies_by_kind"]) == set(synth.ANOMALY_KINDS)
    assert pl.read_parquet(out).height == 1000 and labels.exists()


def test_cli_bad_extension_exits_1_with_a_message(tmp_path: Path) -> None:
    out = tmp_path / "tx.xlsx"
    outcome = runner.invoke(app, ["synth", "-n", "100", "-o", str(out)])
    assert outcome.exit_code == 1
    assert "unknown extension '.xlsx'" in outcome.output and "Error" not in outcome.output
    assert not out.exists() and not (tmp_path / "tx.labels.csv").exists()


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_cli_writes_every_format_the_readers_take(tmp_path: Path, suffix: str) -> None:
    # Regression: `synth -o x.csv` was refused although every reader takes CSV.
    out = tmp_path / f"tx{suffix}"
    outcome = runner.invoke(app, ["synth", "-n", "300", "--users", "10", "-o", str(out)])
    assert outcome.exit_code == 0, outcome.output
    loaded = load_transactions(out)
    assert loaded.frame.height == 300 and not loaded.rejects


def test_cli_bad_argument_exits_1(tmp_path: Path) -> None:
    outcome = runner.invoke(app, ["synth", "-n", "100", "--users", "1", "-o",
                                  str(tmp_path / "tx.json")])
    assert outcome.exit_code == 1
    assert "users must be" in outcome.output


def test_cli_help_shows_an_example() -> None:
    outcome = runner.invoke(app, ["synth", "--help"])
    assert outcome.exit_code == 0
    assert "Example" in outcome.output and "--anomaly-rate" in outcome.output


def test_the_period_starts_at_midnight_utc_of_the_start_date() -> None:
    late = datetime(2024, 3, 4, 23, 0, tzinfo=UTC)
    frame = synth.generate(500, users=10, days=1, seed=0, start=late).transactions
    assert frame["timestamp"].min() >= START_MS
    assert frame["timestamp"].max() < START_MS + synth.DAY_MS
    assert np.all(np.diff(frame["timestamp"].to_numpy()) >= 0)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_written_files_read_back_unchanged_through_io(tmp_path: Path, suffix: str) -> None:
    frame = synth.generate(2_000, users=30, days=5, anomaly_rate=0.05, seed=9).transactions
    path = write_table(frame, tmp_path / f"tx{suffix}", number_long_share=0.5)
    loaded = load_transactions(path)
    assert not loaded.rejects
    assert_frame_equal(loaded.frame.select(FLAT_COLUMNS), frame.select(FLAT_COLUMNS))
