"""Metrics against labels, the time-ordered split, labels files and the baselines."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import (
    average_precision_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from txanomaly import baselines as bl
from txanomaly import evaluate as ev
from txanomaly import synth
from txanomaly.detector import AnomalyDetector
from txanomaly.errors import TxAnomalyError
from txanomaly.features.spec import Feature, FeatureSet
from txanomaly.pipeline import TransactionModel

# A hand-made case: 10 rows, 4 anomalies of two kinds, one tie across the top-k boundary.
Y = np.array([0, 1, 0, 0, 1, 0, 1, 0, 0, 1])
SCORES = np.array([0.1, 0.9, 0.3, 0.8, 0.7, 0.2, 0.3, 0.05, 0.6, 0.4])
KIND = np.array([None, "spike", None, None, "burst", None, "spike", None, None, "burst"],
                dtype=object)
THRESHOLD = 0.5  # flags rows 1, 3, 4, 8


def test_metrics_agree_with_sklearn_on_a_hand_made_case():
    m = ev.detection_metrics(Y, SCORES, THRESHOLD, k=3, kind=KIND)
    flags = SCORES > THRESHOLD
    assert m["roc_auc"] == pytest.approx(roc_auc_score(Y, SCORES))
    assert m["pr_auc"] == pytest.approx(average_precision_score(Y, SCORES))
    assert m["precision_at_threshold"] == pytest.approx(precision_score(Y, flags))
    assert m["recall_at_threshold"] == pytest.approx(recall_score(Y, flags))
    assert m["flagged"] == 4
    # Top 3 scores: rows 1 (0.9, anomaly), 3 (0.8, normal), 4 (0.7, anomaly).
    assert m["precision_at_k"] == pytest.approx(2 / 3)
    assert m["recall_at_k"] == pytest.approx(2 / 4)


def test_per_kind_recall_and_auc_by_hand():
    by_kind = ev.detection_metrics(Y, SCORES, THRESHOLD, k=3, kind=KIND)["by_kind"]
    assert list(by_kind) == ["burst", "spike"]
    # burst = rows 4 (0.7, flagged, top 3) and 9 (0.4, neither).
    assert by_kind["burst"] == pytest.approx({
        "n": 2, "recall_at_threshold": 0.5, "recall_at_k": 0.5,
        "roc_auc": roc_auc_score([1, 0, 0, 0, 1, 0, 0, 0], SCORES[[4, 0, 2, 3, 9, 5, 7, 8]])})
    # spike = rows 1 (0.9, flagged, top) and 6 (0.3, neither).
    assert by_kind["spike"]["recall_at_threshold"] == 0.5
    assert by_kind["spike"]["recall_at_k"] == 0.5


def test_auc_is_nan_with_a_single_class():
    m = ev.detection_metrics(np.zeros(4), np.arange(4.0), 2.0, k=1)
    assert np.isnan(m["roc_auc"]) and np.isnan(m["pr_auc"]) and np.isnan(m["recall_at_k"])


def test_top_k_breaks_ties_by_row_order():
    assert ev.top_k_mask(np.array([0.5, 0.7, 0.5, 0.5]), 2).tolist() == [True, True, False,
                                                                         False]
    assert ev.top_k_mask(np.array([1.0, 2.0]), 10).sum() == 2


def test_time_ordered_split_puts_every_train_row_before_every_test_row():
    ts = np.array([50, 10, 40, 10, 30, 20, 60, 40])
    split = ev.time_ordered_split(ts, 0.5)
    assert ts[split.train].max() <= ts[split.test].min()
    assert split.train.tolist() == [1, 3, 5, 4]  # ties in input order
    assert sorted([*split.train, *split.test]) == list(range(8))


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.2, 1.5])
def test_split_refuses_a_fraction_outside_0_1(fraction):
    with pytest.raises(TxAnomalyError, match="train fraction"):
        ev.time_ordered_split(np.arange(10), fraction)


def test_load_labels_reads_synth_labels_and_true_false(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("transactionId,is_anomaly,kind\na,0,\nb,1,burst\nc,true,\nd,False,\n")
    labels = ev.load_labels(path)
    assert labels["transaction_id"].to_list() == ["a", "b", "c", "d"]
    assert labels["is_anomaly"].to_list() == [0, 1, 1, 0]
    assert labels["kind"].to_list() == [None, "burst", None, None]


def test_load_labels_names_the_bad_row(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("transactionId,is_anomaly\na,0\nb,yes\n")
    with pytest.raises(TxAnomalyError, match="row 3: is_anomaly"):
        ev.load_labels(path)


def test_load_labels_needs_the_columns(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("id,label\na,0\n")
    with pytest.raises(TxAnomalyError, match="missing column"):
        ev.load_labels(path)


def test_align_labels_requires_a_label_for_every_transaction():
    labels = pl.DataFrame({"transaction_id": ["a", "b"], "is_anomaly": [0, 1],
                           "kind": [None, "x"]}, schema_overrides={"is_anomaly": pl.Int8})
    y, kind = ev.align_labels(pl.Series(["b", "a"]), labels)
    assert y.tolist() == [1, 0] and kind.tolist() == ["x", None]
    with pytest.raises(TxAnomalyError, match="1 transaction"):
        ev.align_labels(pl.Series(["a", "zz"]), labels)


# --------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def small():
    result = synth.generate(3_000, users=60, days=10, anomaly_rate=0.05, seed=3)
    return ev.prepare(result.transactions, result.labels, "standard", 0.6)


def test_evaluate_scores_every_detector_on_the_same_test_rows(small):
    params = {"map_size": "4x4", "epochs": 5}
    result = ev.evaluate(small, detector_params=params, baselines=["iforest", "knn", "lof"])
    assert list(result.metrics) == ["som", "iforest", "knn", "lof"]
    n_test = len(small.split.test)
    for m in result.metrics.values():
        assert m["rows"] == n_test
        assert m["positives"] == int(small.y[small.split.test].sum())
        assert set(m["by_kind"]) <= set(synth.ANOMALY_KINDS)
    # The SOM row is exactly the metrics of a model trained the same way on the train rows.
    model = TransactionModel(small.feature_set, AnomalyDetector(**params))
    model.fit(small.X[small.split.train])
    expected = ev.detection_metrics(small.y[small.split.test],
                                    model.anomaly_score(small.X[small.split.test]),
                                    model.threshold, result.setup["k"])
    assert result.metrics["som"]["pr_auc"] == pytest.approx(expected["pr_auc"])
    assert result.to_dict()["setup"]["test_rows"] == n_test


def test_a_given_model_is_evaluated_as_is(small):
    model = TransactionModel(small.feature_set, AnomalyDetector(map_size="3x3", epochs=3))
    model.fit(small.X)
    result = ev.evaluate(small, model=model, baselines=[])
    scores = model.anomaly_score(small.X[small.split.test])
    assert result.metrics["som"]["roc_auc"] == pytest.approx(
        roc_auc_score(small.y[small.split.test], scores))
    assert result.setup["model"] == "given"


def _obvious_outliers() -> ev.Prepared:
    """Gaussian rows and 2 % of rows scattered 8-12 standard deviations away."""
    rng = np.random.default_rng(0)
    n = 1_200
    X = rng.normal(size=(n, 2))
    y = (rng.random(n) < 0.02).astype(np.int8)
    angle = rng.uniform(0, 2 * np.pi, int(y.sum()))
    radius = rng.uniform(8, 12, int(y.sum()))
    X[y == 1] = np.column_stack([radius * np.cos(angle), radius * np.sin(angle)])
    fs = FeatureSet("plain", (Feature("hour_sin", "hour_sin"), Feature("hour_cos", "hour_cos")))
    return ev.Prepared(fs, X, y, np.full(n, None, dtype=object), np.arange(n).astype(str),
                       ev.time_ordered_split(np.arange(n), 0.5))


# HBOS is left out: PyOD compiles it with numba on first use (seconds); it shares the PyOD
# wrapper, and so the score direction, with ECOD, COPOD and PCA.
@pytest.mark.parametrize("name", [n for n, b in bl.BASELINES.items()
                                  if bl.installed(b.requires) and n != "hbos"])
def test_every_baseline_scores_outliers_higher(name):
    result = ev.evaluate(_obvious_outliers(), detector_params={"map_size": "3x3", "epochs": 3},
                         baselines=[name])
    assert result.metrics[name]["roc_auc"] > 0.95
    assert result.metrics[name]["recall_at_threshold"] > 0.8


def test_unknown_baseline_is_a_clear_error(small):
    with pytest.raises(TxAnomalyError, match="unknown baseline 'nope'"):
        ev.evaluate(small, baselines=["nope"])


def test_no_anomalies_in_the_test_rows_is_an_error():
    data = _obvious_outliers()
    data = ev.Prepared(data.feature_set, data.X, np.zeros_like(data.y), data.kind,
                       data.transaction_id, data.split)
    with pytest.raises(TxAnomalyError, match="no labelled anomalies"):
        ev.evaluate(data, baselines=[])
