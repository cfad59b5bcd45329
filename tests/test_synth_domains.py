"""Synthetic data in several domains: generate(..., domain=...) and ``synth --domain``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from txanomaly import synth
from txanomaly.cli import app
from txanomaly.errors import TxAnomalyError
from txanomaly.io import SUFFIXES, load_transactions, write_table
from txanomaly.schema import FLAT_COLUMNS

N, USERS, DAYS, RATE, SEED = 20_000, 400, 20, 0.02, 3
HOUR_MS = synth.HOUR_MS
NEW_DOMAINS = [d for d in synth.DOMAINS if d != "p2p"]
CARD_LIKE = ("card_merchant", "card_terminal", "ecommerce")

_cache: dict[str, synth.SynthResult] = {}


def _result(domain: str) -> synth.SynthResult:
    if domain not in _cache:
        _cache[domain] = synth.generate(N, users=USERS, days=DAYS, anomaly_rate=RATE,
                                        seed=SEED, domain=domain)
    return _cache[domain]


def _labelled(domain: str) -> pl.DataFrame:
    result = _result(domain)
    return result.transactions.with_columns(
        result.labels["is_anomaly"], result.labels["kind"],
        hour=pl.from_epoch("timestamp", time_unit="ms").dt.hour())


def _of_kind(frame: pl.DataFrame, kind: str) -> pl.DataFrame:
    rows = frame.filter(pl.col("kind") == kind)
    assert rows.height > 0
    return rows


def _normal(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.filter(pl.col("is_anomaly") == 0)


def test_domains_and_their_kinds_are_exported() -> None:
    assert synth.DOMAINS == ("p2p", "card_merchant", "card_terminal", "ecommerce", "aml")
    assert synth.domain_kinds("p2p") == synth.ANOMALY_KINDS
    assert set(synth.DOMAIN_KINDS) == set(synth.DOMAINS)
    assert synth.domain_kinds("aml") == ("fan_in", "fan_out", "cycle", "structuring")
    with pytest.raises(TxAnomalyError, match="unknown domain 'atm'; the domains are p2p"):
        synth.domain_kinds("atm")


def test_p2p_is_the_default_and_unchanged_by_the_domains() -> None:
    """Pin: the hash was computed before the domains were added (commit 7450446)."""
    result = synth.generate(4_000, users=50, days=6, anomaly_rate=0.04, seed=2024, domain="p2p")
    text = result.transactions.write_csv() + result.labels.write_csv()
    assert hashlib.sha256(text.encode()).hexdigest() == (
        "f73c2047263c0a2f616ccc21bb6c6c79685dd83815d1dd89ef087de03c00e147")
    default = synth.generate(4_000, users=50, days=6, anomaly_rate=0.04, seed=2024)
    assert_frame_equal(default.transactions, result.transactions)
    assert result.kinds == synth.ANOMALY_KINDS


@pytest.mark.parametrize("domain", NEW_DOMAINS)
def test_the_same_seed_gives_the_same_data(domain: str) -> None:
    first = synth.generate(3_000, users=60, days=7, anomaly_rate=0.05, seed=5, domain=domain)
    again = synth.generate(3_000, users=60, days=7, anomaly_rate=0.05, seed=5, domain=domain)
    other = synth.generate(3_000, users=60, days=7, anomaly_rate=0.05, seed=6, domain=domain)
    assert_frame_equal(first.transactions, again.transactions)
    assert_frame_equal(first.labels, again.labels)
    assert not first.transactions.equals(other.transactions)


@pytest.mark.parametrize("domain", synth.DOMAINS)
def test_records_are_sorted_labelled_row_for_row_with_every_kind(domain: str) -> None:
    result = _result(domain)
    frame, labels = result.transactions, result.labels
    assert frame.height == N
    assert list(frame.columns) == [*FLAT_COLUMNS, "extra"]
    assert frame["timestamp"].is_sorted()
    start = int(np.datetime64(synth.DEFAULT_START, "ms").astype(np.int64))
    assert frame["timestamp"].min() >= start
    assert frame["timestamp"].max() < start + DAYS * synth.DAY_MS
    assert frame["transaction_id"].n_unique() == N
    assert frame["transaction_id"].equals(labels["transaction_id"])
    assert (labels["kind"].is_null() == (labels["is_anomaly"] == 0)).all()
    counts = result.anomaly_counts()
    assert tuple(counts) == synth.domain_kinds(domain)
    assert min(counts.values()) > 0, counts
    assert sum(counts.values()) == labels["is_anomaly"].sum()
    if domain == "card_terminal":  # scenario windows: about the rate
        assert 0.8 * RATE * N <= sum(counts.values()) <= 1.2 * RATE * N
    else:
        assert sum(counts.values()) == round(RATE * N)


@pytest.mark.parametrize("domain", CARD_LIKE)
def test_merchants_and_terminals_never_pay(domain: str) -> None:
    frame = _result(domain).transactions
    assert frame["origin_user_id"].null_count() == 0
    assert frame["destination_user_id"].null_count() == 0
    origins = set(frame["origin_user_id"].unique())
    destinations = set(frame["destination_user_id"].unique())
    assert not origins & destinations
    assert frame["origin_user_id"].n_unique() == USERS


def test_aml_accounts_both_send_and_receive() -> None:
    frame = _result("aml").transactions
    assert frame["origin_user_id"].null_count() == 0
    assert frame["destination_user_id"].null_count() == 0
    senders = set(frame["origin_user_id"].unique())
    receivers = set(frame["destination_user_id"].unique())
    assert len(senders) == USERS
    assert len(senders & receivers) > 0.9 * USERS
    assert (frame["origin_user_id"] != frame["destination_user_id"]).mean() > 0.99


def _gaps_at_counterparty(frame: pl.DataFrame) -> pl.Series:
    """Each payment's time since the destination's previous payment (null for its first)."""
    return frame.sort("destination_user_id", "timestamp").select(
        pl.col("timestamp").diff().over("destination_user_id")).to_series()


def test_a_terminal_serves_many_customers_and_payments_an_hour_apart_are_ordinary() -> None:
    frame = _result("card_terminal").transactions
    customers = frame.group_by("destination_user_id").agg(pl.col("origin_user_id").n_unique())
    assert customers["origin_user_id"].median() >= 20  # type: ignore[operator]
    gaps = _gaps_at_counterparty(frame).drop_nulls()
    assert (gaps < HOUR_MS).mean() > 0.3
    # A customer keeps to a few terminals near home.
    per_customer = frame.group_by("origin_user_id").agg(pl.col("destination_user_id").n_unique())
    assert per_customer["destination_user_id"].max() <= 8


def test_card_terminal_scenarios_follow_the_handbook() -> None:
    frame = _labelled("card_terminal")
    limit = 220.0
    assert (_normal(frame)["origin_amount"] <= limit).all()
    assert (_of_kind(frame, "large_amount")["origin_amount"] > limit).all()
    # Every payment at a compromised terminal on a compromised day is fraud.
    day = pl.col("timestamp") // synth.DAY_MS
    terminal = _of_kind(frame, "compromised_terminal").select(
        "destination_user_id", day.alias("day")).unique()
    at = frame.with_columns(day.alias("day")).join(terminal, on=["destination_user_id", "day"])
    assert (at["kind"] == "compromised_terminal").all()
    assert (at["origin_amount"] <= limit).all()  # they look like any other payment
    # A compromised card's fraud is its own usual amounts times 5.
    card = _of_kind(frame, "compromised_card")
    cents = card["origin_amount"].to_numpy() * 20
    assert np.allclose(cents, np.round(cents))  # 5 x an amount in cents
    usual = _normal(frame).group_by("origin_user_id").agg(usual=pl.col("origin_amount").median())
    fraud = card.group_by("origin_user_id").agg(fraud=pl.col("origin_amount").median()).join(
        usual, on="origin_user_id")
    ratio = (fraud["fraud"] / fraud["usual"]).median()
    assert 3.0 < ratio < 8.0  # type: ignore[operator]


def _category(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(category=pl.col("extra").str.json_path_match(
        "$.destinationPaymentDetails.merchantDetails.category"))


def test_card_merchant_habits_and_fraud_like_sparkov() -> None:
    frame = _category(_labelled("card_merchant"))
    assert frame["category"].null_count() == 0 and frame["category"].n_unique() == 14
    cards = frame.group_by("destination_user_id").agg(pl.col("origin_user_id").n_unique())
    assert cards["origin_user_id"].median() >= 20  # type: ignore[operator]
    normal = _normal(frame)
    usual = normal.group_by("origin_user_id").agg(
        usual=pl.col("origin_amount").median(), categories=pl.col("category").unique(),
        merchants=pl.col("destination_user_id").unique())
    spree = _of_kind(frame, "card_spree").join(usual, on="origin_user_id")
    assert (spree.group_by("origin_user_id").len()["len"] >= 3).all()
    assert spree["origin_amount"].median() > 3 * spree["usual"].median()  # type: ignore[operator]
    assert spree["hour"].is_in([22, 23, 0, 1, 2, 3, 4]).mean() > 0.5
    new = [m not in known for m, known in zip(spree["destination_user_id"], spree["merchants"],
                                              strict=True)]
    assert np.mean(new) > 0.9
    large = _of_kind(frame, "large_amount").join(usual, on="origin_user_id")
    assert (large["origin_amount"] > 3 * large["usual"]).all()
    night = _of_kind(frame, "unusual_category_night").join(usual, on="origin_user_id")
    assert night["hour"].is_between(0, 3).all()
    assert not any(c in known for c, known in zip(night["category"], night["categories"],
                                                  strict=True))


def test_ecommerce_card_testing_takeover_and_large_amounts() -> None:
    frame = _labelled("ecommerce")
    rate = {"USD": 1.0, "GBP": 0.79, "EUR": 0.92, "INR": 83.0, "KES": 130.0, "BRL": 5.0}
    usd = frame["origin_amount"] / frame["origin_currency"].replace_strict(rate)
    frame = frame.with_columns(usd=usd)
    testing = _of_kind(frame, "card_testing")
    assert (testing["usd"] <= 3.0).all()
    spans = testing.group_by("origin_user_id", "destination_user_id").agg(
        n=pl.len(), span=pl.col("timestamp").max() - pl.col("timestamp").min())
    assert (spans["n"] >= 5).all() and (spans["span"] <= 20 * 60_000).all()
    assert (testing["state"] == "DECLINED").mean() > 0.3
    assert (_normal(frame)["usd"] > 3.0).mean() > 0.95
    takeover = _of_kind(frame, "account_takeover")
    assert (takeover["origin_currency"] != takeover["destination_currency"]).all()
    usual = _normal(frame).filter(
        pl.col("origin_user_id").is_in(takeover["origin_user_id"].implode()))
    assert (usual["origin_country"] == usual["destination_country"]).all()
    medians = _normal(frame).group_by("origin_user_id").agg(usual=pl.col("origin_amount").median())
    large = _of_kind(frame, "large_amount").join(medians, on="origin_user_id")
    assert (large["origin_amount"] > 3 * large["usual"]).all()
    # Mostly domestic: a small share crosses a border.
    assert 0.005 < (frame["origin_country"] != frame["destination_country"]).mean() < 0.15


def test_aml_typologies() -> None:
    frame = _labelled("aml")
    structuring = _of_kind(frame, "structuring")
    assert structuring["origin_amount"].is_between(9_000.0, 10_000.0, closed="left").all()
    assert structuring["origin_currency"].is_in(["USD", "EUR", "GBP"]).all()
    assert (structuring.group_by("origin_user_id").len()["len"] >= 3).all()
    # Cycles return to their start: every account on a cycle pays out as often as it is paid.
    cycle = _of_kind(frame, "cycle")
    out = cycle.group_by(account="origin_user_id").len("out")
    into = cycle.group_by(account="destination_user_id").len("in")
    balance = out.join(into, on="account", how="full", coalesce=True).fill_null(0)
    assert (balance["out"] == balance["in"]).all()
    fan_in = _of_kind(frame, "fan_in")
    mules = fan_in.group_by("destination_user_id").agg(pl.col("origin_user_id").n_unique())
    mules = mules.filter(pl.col("origin_user_id") >= 3)["destination_user_id"]
    assert mules.len() > 0
    assert mules.is_in(fan_in["origin_user_id"].implode()).all()  # and forward the money
    fan_out = _of_kind(frame, "fan_out")
    hubs = fan_out.group_by("origin_user_id").agg(pl.col("destination_user_id").n_unique())
    assert hubs["destination_user_id"].max() >= 3  # type: ignore[operator]
    # Normal data has busy receivers too (businesses), so a fan-in is not the only one.
    senders = _normal(frame).group_by("destination_user_id").agg(
        pl.col("origin_user_id").n_unique())
    assert (senders["origin_user_id"] >= 10).sum() >= 5


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("domain", NEW_DOMAINS)
def test_written_records_pass_the_readers(tmp_path: Path, domain: str, suffix: str) -> None:
    frame = synth.generate(2_000, users=50, days=7, anomaly_rate=0.05, seed=1,
                           domain=domain).transactions
    path = write_table(frame, tmp_path / f"tx{suffix}", number_long_share=0.5)
    loaded = load_transactions(path)
    assert not loaded.rejects
    columns = [*FLAT_COLUMNS, "extra"] if domain == "card_merchant" else list(FLAT_COLUMNS)
    assert_frame_equal(loaded.frame.select(columns), frame.select(columns))


def test_counterparties_sets_the_number_of_terminals() -> None:
    frame = synth.generate(5_000, users=200, days=10, seed=1, domain="card_terminal",
                           counterparties=13).transactions
    assert frame["destination_user_id"].n_unique() == 13


@pytest.mark.parametrize("kwargs", [{"domain": "atm"}, {"domain": "card_terminal",
                                                         "counterparties": 1}])
def test_bad_domain_arguments_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(TxAnomalyError, match=r"domain|counterparties"):
        synth.generate(100, **kwargs)  # type: ignore[arg-type]


runner = CliRunner()


def test_cli_writes_a_domain(tmp_path: Path) -> None:
    out = tmp_path / "tx.parquet"
    outcome = runner.invoke(app, ["synth", "-n", "3000", "--users", "60", "--days", "7",
                                  "--domain", "aml", "--anomaly-rate", "0.05", "-o", str(out),
                                  "--json", "--quiet"])
    assert outcome.exit_code == 0, outcome.output
    summary = json.loads(outcome.stdout)
    assert summary["domain"] == "aml" and summary["anomalies"] == 150
    assert tuple(summary["anomalies_by_kind"]) == synth.domain_kinds("aml")
    expected = synth.generate(3_000, users=60, days=7, anomaly_rate=0.05, domain="aml")
    assert_frame_equal(pl.read_parquet(out), expected.transactions.drop("extra"))


def test_cli_refuses_an_unknown_domain(tmp_path: Path) -> None:
    out = tmp_path / "tx.csv"
    outcome = runner.invoke(app, ["synth", "-n", "100", "--domain", "atm", "-o", str(out)])
    assert outcome.exit_code == 1
    assert "unknown domain 'atm'" in outcome.output and "card_terminal" in outcome.output
    assert not out.exists()


def test_cli_help_lists_the_domains() -> None:
    outcome = runner.invoke(app, ["synth", "--help"], terminal_width=200)
    assert outcome.exit_code == 0
    assert all(domain in outcome.output for domain in synth.DOMAINS)


@pytest.mark.parametrize("domain", NEW_DOMAINS)
@pytest.mark.parametrize(("n", "users", "days"), [(20, 2, 1), (7, 3, 2), (5, 2, 30)])
def test_small_inputs_still_produce_labelled_records(domain: str, n: int, users: int,
                                                     days: int) -> None:
    # Regression: a tiny aml rate made 1-transfer fan-ins and fan-outs that failed.
    result = synth.generate(n, users=users, days=days, anomaly_rate=0.5, seed=0, domain=domain)
    assert result.transactions.height == n
    assert result.transactions["timestamp"].is_sorted()
    assert result.labels["is_anomaly"].sum() > 0
