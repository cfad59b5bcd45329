"""Metamorphic checks of detection on small labelled data (issue 11, part 4).

Each test changes the input in a way that must not change what the product finds, and checks
the ranking of the test rows (time split 60/40, the product's default feature set and counterparty
detection, a small map so the suite stays fast):

* an uninformative sparse count column (mostly 1, sometimes 2 or 3) must not cut precision at
  1 % by more than a tenth;
* multiplying every amount by a currency factor must not change the ranking.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from scipy.stats import spearmanr

from txanomaly import evaluate as ev
from txanomaly.benchmark import precision_at_fraction, top_count
from txanomaly.detector import AnomalyDetector
from txanomaly.pipeline import TransactionModel
from txanomaly.synth import generate

SMALL_MAP = {"map_size": "6x6", "epochs": 5}


def labelled(domain: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    result = generate(30_000, users=400, days=20, domain=domain, seed=5, anomaly_rate=0.02)
    return result.transactions, result.labels


def product_scores(frame: pl.DataFrame, labels: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    data = ev.prepare(frame, labels, "standard", 0.6)
    model = TransactionModel(data.feature_set, AnomalyDetector(**SMALL_MAP))
    model.fit(data.X[data.split.train])
    return model.anomaly_score(data.X[data.split.test]), data.y[data.split.test]


@pytest.mark.parametrize("domain", [
    "p2p",
    pytest.param("card_terminal", marks=pytest.mark.xfail(
        strict=True, reason="open (issue 11): precision at 1 % falls from 0.925 to 0.808; the "
                            "2 % of rows with a count of 3 stand ~4 standard deviations out")),
    # Holds since origin_hour_deviation, by one row of 120: 0.758 -> 0.683 (0.6825 needed).
    # Before it: 0.725 -> 0.650 (0.6525 needed), a strict xfail since scoring units.
    "aml"])
def test_an_uninformative_sparse_count_cuts_precision_at_1pct_by_at_most_a_tenth(domain):
    frame, labels = labelled(domain)
    data = ev.prepare(frame, labels, "standard", 0.6)
    fs, train, test = data.feature_set, data.split.train, data.split.test
    base = TransactionModel(fs, AnomalyDetector(**SMALL_MAP)).fit(data.X[train])
    before = precision_at_fraction(data.y[test], base.anomaly_score(data.X[test]))
    # The same model inputs plus a count that is 1, 2 or 3 at random, declared like the
    # set's own counts (log1p, risk upwards, weight 1).
    rng = np.random.default_rng(0)
    count = rng.choice([1.0, 2.0, 3.0], size=len(data.X), p=[0.9, 0.08, 0.02])
    Z = np.column_stack([fs.transform(data.X), np.log1p(count)])
    noisy = AnomalyDetector(**SMALL_MAP, scaling=fs.scaling,
                            feature_weights=[*(fs.weights or [1.0] * len(fs.names)), 1.0],
                            feature_directions=[*(fs.directions or [0] * len(fs.names)), 1])
    noisy.fit(Z[train])
    after = precision_at_fraction(data.y[test], noisy.anomaly_score(Z[test]))
    assert before > 0.3  # the check means something only where the product finds anomalies
    assert after >= 0.9 * before, (before, after)


@pytest.mark.parametrize("domain", [
    pytest.param("p2p", marks=pytest.mark.xfail(
        strict=True, reason="open (issue 11): Spearman 0.975, top 1 % 92 % the same; the "
                            "z-score and 24 h ratio take log(1 + amount), which is not "
                            "scale-free for payers whose amounts are a few currency units")),
    pytest.param("card_terminal", marks=pytest.mark.xfail(
        strict=True, reason="open (issue 11): since scoring units, Spearman 0.958 (top 1 % "
                            "98 % the same, P@1% 0.925 -> 0.908): the log1p features move the "
                            "map a little, and a unit near the average share then scores or "
                            "not")),
    pytest.param("ecommerce", marks=pytest.mark.xfail(
        strict=True, reason="open (issue 11): since scoring units, Spearman 0.985, top 1 % "
                            "92.5 % the same (P@1% 0.817 -> 0.783); as card_terminal")),
    "aml"])
def test_a_currency_factor_does_not_change_the_ranking(domain):
    frame, labels = labelled(domain)
    scaled = frame.with_columns(pl.col("origin_amount") * 1000.0,
                                pl.col("destination_amount") * 1000.0)
    plain, y = product_scores(frame, labels)
    thousand, _ = product_scores(scaled, labels)
    k = top_count(len(plain))
    top_plain = set(np.argsort(-plain)[:k].tolist())
    top_thousand = set(np.argsort(-thousand)[:k].tolist())
    assert spearmanr(plain, thousand).statistic >= 0.99
    assert len(top_plain & top_thousand) >= 0.95 * k
    assert precision_at_fraction(y, thousand) == pytest.approx(precision_at_fraction(y, plain),
                                                           abs=0.05)
