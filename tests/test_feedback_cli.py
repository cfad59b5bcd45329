"""The analysts' decisions used: ``txanomaly evaluate --feedback-db`` and ``txanomaly
calibrate``, on a real SQLite database filled through the one ingestion path, with decisions
made as an analyst with the synthetic ground truth would make them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from txanomaly import artifact, synth
from txanomaly.calibrate import calibrate, feedback_labels
from txanomaly.cli import app
from txanomaly.detector import AnomalyDetector
from txanomaly.features.batch import feature_matrix
from txanomaly.ingest import ingest
from txanomaly.io import write_table
from txanomaly.pipeline import TransactionModel
from txanomaly.scoring import Scorer
from txanomaly.storage.sql import SqlStorage
from txanomaly.storage.sql_review import ReviewStore

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2,000 transactions scored and stored by a small model; every flagged one and a few
    unflagged ones decided by their ground truth (fraud / not fraud), some escalated."""
    root = tmp_path_factory.mktemp("calibrate")
    data = synth.generate(2_000, users=50, days=8, anomaly_rate=0.05, seed=5)
    write_table(data.transactions, root / "tx.parquet")
    model = TransactionModel("standard", AnomalyDetector(map_size="4x4", epochs=4))
    model.fit(feature_matrix(data.transactions, "standard"))
    model.save(root / "model")
    store = SqlStorage(f"sqlite:///{root}/tx.db")
    try:
        review = ReviewStore(store)
        out = ingest(data.transactions.to_dicts(), Scorer.load(root / "model"), store)
        truth = dict(zip(data.labels["transaction_id"].to_list(),
                         data.labels["is_anomaly"].to_list(), strict=True))
        for i, result in enumerate(r.result for r in out):
            tid = result["transactionId"]
            if result["isAnomaly"] or i % 40 == 0:
                decision = "fraud" if truth[tid] else "not_fraud"
                if i % 97 == 0:
                    decision = "escalate"
                review.record(tid, decision, "", "tester")
    finally:
        store.close()
    return root


def run(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def test_calibrate_for_a_target_precision_writes_the_plot_and_the_model(workdir: Path):
    plot, written = workdir / "tradeoff.png", workdir / "model-calibrated"
    result = run("calibrate", "--model", workdir / "model", "--db",
                 f"sqlite:///{workdir}/tx.db", "--target-precision", "0.6", "--min-labels",
                 "5", "--plot", plot, "--write", written, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    chosen = summary["recommended"]
    assert chosen["precision"] >= 0.6 and chosen["labelled_above"] >= 5
    assert chosen["reviewed_share"] >= 0.5
    assert plot.read_bytes().startswith(PNG)
    loaded = artifact.load(written)
    assert loaded.detector.threshold_ == pytest.approx(chosen["threshold"])
    source = loaded.metadata["threshold_source"]
    assert source["method"] == "calibrate" and source["rule"] == "precision >= 0.6"
    assert source["previous"] == pytest.approx(summary["current"]["threshold"])
    assert loaded.version == summary["modelVersion"] != artifact.load(workdir / "model").version
    assert Scorer.load(written).threshold == pytest.approx(chosen["threshold"])
    described = Scorer.load(written).describe()  # what GET /v1/model answers
    assert described["thresholdSource"] == source
    assert Scorer.load(workdir / "model").describe()["thresholdSource"] is None


def test_calibrate_for_a_daily_budget_keeps_the_alerts_within_it(workdir: Path):
    result = run("calibrate", "--model", workdir / "model", "--db",
                 f"sqlite:///{workdir}/tx.db", "--daily-budget", "5", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["recommended"]["alerts_per_day"] <= 5
    assert summary["rule"] == "alerts a day <= 5"


def test_calibrate_explains_what_is_missing(workdir: Path, tmp_path: Path):
    none = run("calibrate", "--model", workdir / "model", "--db", f"sqlite:///{workdir}/tx.db")
    assert none.exit_code == 2 and "--target-precision" in none.output
    missing = run("calibrate", "--model", workdir / "model", "--db",
                  f"sqlite:///{tmp_path}/nothing.db", "--daily-budget", "3")
    assert missing.exit_code == 1 and "no such database file" in missing.output
    empty = SqlStorage(f"sqlite:///{tmp_path}/plain.db")
    empty.close()
    plain = run("calibrate", "--model", workdir / "model", "--db",
                f"sqlite:///{tmp_path}/plain.db", "--daily-budget", "3")
    assert plain.exit_code == 1 and "holds no analysts' feedback" in plain.output


def test_evaluate_takes_its_labels_from_the_feedback(workdir: Path):
    metrics = workdir / "metrics.json"
    result = run("evaluate", workdir / "tx.parquet", "--feedback-db",
                 f"sqlite:///{workdir}/tx.db", "--model", workdir / "model", "--baselines",
                 "none", "-o", metrics)
    assert result.exit_code == 0, result.output
    assert "labels from" in result.output and "analysts' decisions" in result.output
    setup = json.loads(metrics.read_text())["setup"]
    store = SqlStorage(f"sqlite:///{workdir}/tx.db", create=False)
    try:
        decisions = ReviewStore(store, install=False).decisions()
    finally:
        store.close()
    frauds = {t for t, d in decisions.items() if d == "fraud"}
    assert 0 < setup["test_anomalies"] <= len(frauds)
    skip = run("evaluate", workdir / "tx.parquet", "--feedback-db",
               f"sqlite:///{workdir}/tx.db", "--model", workdir / "model", "--baselines",
               "none", "--unreviewed", "skip", "-o", metrics)
    assert skip.exit_code == 0, skip.output
    decided = sum(1 for d in decisions.values() if d != "escalate")
    total = json.loads(metrics.read_text())["setup"]
    assert total["train_rows"] + total["test_rows"] == decided
    both = run("evaluate", workdir / "tx.parquet", "--labels", metrics, "--feedback-db",
               f"sqlite:///{workdir}/tx.db")
    assert both.exit_code == 2


def test_labels_and_recommendations_by_hand():
    table = feedback_labels({"a": "fraud", "b": "not_fraud", "c": "escalate"}, unreviewed="skip")
    assert table.rows() == [("a", 1, "fraud"), ("b", 0, None)]
    # Six decided scores; at 3.5 the two above are both fraud; at 1.5, 3 of 5.
    scores = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 9.0])
    labels = np.array([0, 1, 0, 0, 1, 1])
    everything = np.concatenate([scores, np.linspace(0, 1, 94)])
    days = np.arange(100) * 8_640_000  # 100 transactions over 9.9 days
    cal = calibrate(scores, labels, everything, days, current=2.5, target_precision=1.0,
                    min_labels=2)
    assert cal.recommended == 4.0
    row = cal.at(4.0)
    assert (row["precision"], row["labelled_above"]) == (1.0, 2)
    assert row["recall"] == pytest.approx(2 / 3)
    assert row["alerts_per_day"] == pytest.approx(2 / 9.9)
    budget = calibrate(scores, labels, everything, days, current=2.5, daily_budget=0.35)
    assert budget.alerts_per_day[np.searchsorted(budget.thresholds, budget.recommended)] <= 0.35
    assert budget.recommended == 3.0  # 3 alerts in 9.9 days (4, 5, 9) fit 0.35 a day
    # Where few of the alerts were reviewed, precision does not count.
    lower = calibrate(scores, labels, everything, days, current=4.5, target_precision=0.5,
                      min_labels=1)
    assert lower.recommended is not None
    row = lower.at(lower.recommended)
    assert row["reviewed_share"] >= 0.5 and row["precision"] >= 0.5
    assert lower.at(lower.thresholds[0])["reviewed_share"] < 0.5  # not chosen: unreviewed
    unreviewed = calibrate(scores, labels, np.concatenate([everything, np.full(50, 6.0)]),
                           days, current=4.5, target_precision=0.5, min_labels=1)
    assert unreviewed.recommended is not None and unreviewed.recommended >= 6.0
    bounded = calibrate(scores, labels, everything, days, current=2.5, target_precision=1.0,
                        min_labels=1, bounds=(4.5, 20.0))
    assert bounded.recommended is not None and 4.5 <= bounded.recommended < 5.0


def test_a_threshold_source_that_breaks_the_rules_is_refused(workdir: Path, tmp_path: Path):
    from txanomaly.errors import ModelFileError

    version = artifact.set_threshold(workdir / "model", tmp_path / "m",
                                     artifact.load(workdir / "model").detector.threshold_,
                                     {"method": "manual", "by": "ops"})
    assert artifact.load(tmp_path / "m").metadata["threshold_source"] == {
        "method": "manual", "by": "ops"}
    assert artifact.load(tmp_path / "m").version == version
    meta_file = tmp_path / "m" / "model.json"
    meta = json.loads(meta_file.read_text())
    meta["threshold_source"] = {"method": "manual", "by": {"nested": 1}}
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match=r"threshold_source\.by"):
        artifact.load(tmp_path / "m")
    with pytest.raises(ModelFileError, match="threshold_source"):
        artifact.set_threshold(workdir / "model", tmp_path / "n",
                               artifact.load(workdir / "model").detector.threshold_,
                               {"no": "method"})
