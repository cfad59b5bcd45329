"""AnomalyDetector: scikit-learn's estimator checks, score directions, threshold, explanations,
and detection quality on real (ADBench) and synthetic labelled data."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.estimator_checks import parametrize_with_checks

from txanomaly.detector import AnomalyDetector, QuantileThreshold, parse_map_size
from txanomaly.errors import NotFittedError, TxAnomalyError

# shared/ sits beside the repository (development machines and CI alike).
ADBENCH = Path(__file__).resolve().parents[2] / "shared" / "data" / "adbench"


def blobs(n: int = 600, d: int = 4, outliers: int = 12, seed: int = 0):
    """Two Gaussian blobs plus far-away planted outliers; labels 1 = planted."""
    rng = np.random.default_rng(seed)
    normal = np.vstack([rng.normal(0, 1, (n // 2, d)), rng.normal(6, 1, (n - n // 2, d))])
    planted = rng.uniform(-12, 18, (outliers, d))
    planted[:, 0] = rng.choice([-15.0, 21.0], outliers)
    X = np.vstack([normal, planted])
    y = np.r_[np.zeros(n), np.ones(outliers)]
    return X, y


# AnomalyDetector takes the estimator contract from txanomaly.estimator, not from
# sklearn.base (train and score never import scikit-learn); scikit-learn warns that it does
# not inherit BaseEstimator. Every check below runs and passes all the same.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Estimator AnomalyDetector does not inherit")
    _SKLEARN_CHECKS = parametrize_with_checks([AnomalyDetector(map_size=(3, 3), epochs=3)])


@_SKLEARN_CHECKS
def test_sklearn_estimator_checks(estimator, check):
    # All of scikit-learn's checks apply (only check_array_api_input skips itself when
    # SCIPY_ARRAY_API is unset); parametrize_with_checks reports each one separately.
    check(estimator)


def test_fit_returns_self_and_sets_pyod_attributes():
    X, _ = blobs()
    det = AnomalyDetector(map_size="5x5", epochs=5)
    assert det.fit(X) is det
    assert det.decision_scores_.shape == (len(X),)
    assert det.labels_.tolist().count(1) == pytest.approx(0.05 * len(X), abs=2)
    assert det.threshold_ == pytest.approx(np.quantile(det.decision_scores_, 0.95))
    summary = det.training_summary_
    assert summary["rows"] == len(X) and summary["algorithm"] == "batch"
    assert summary["scoring_units"] == det.active_units_.sum() <= 25
    # The map's quantization error is over every unit; scores only over the scoring units
    # (and against each BMU's smoothed reference unless reference_width=0).
    every = AnomalyDetector(map_size="5x5", epochs=5, min_unit_share=0.0, reference_width=0).fit(X)
    assert every.active_units_.all()
    assert summary["quantization_error"] == pytest.approx(every.decision_scores_.mean())
    plain = AnomalyDetector(map_size="5x5", epochs=5, reference_width=0).fit(X)
    assert np.all(plain.decision_scores_ >= every.decision_scores_ - 1e-6)
    np.testing.assert_array_equal(plain.som_.weights.numpy(), det.som_.weights.numpy())


@pytest.mark.parametrize("directions", [None, [1, -1, 0, 1]])
def test_scores_measure_the_distance_to_the_bmus_smoothed_reference(directions):
    X, _ = blobs()
    X = np.vstack([X, [[0.0, 0.0, 25.0, 0.0], [9.0, -9.0, 0.0, 3.0]]])
    det = AnomalyDetector(map_size="5x5", epochs=5, feature_directions=directions).fit(X)
    assert det.reference_width == 0.085  # 0.425 grid steps on a 5x5 map
    som, units = det.som_, np.flatnonzero(det.active_units_)
    # The reference: the scoring units' prototypes weighted by a Gaussian of grid distance.
    rows, cols = divmod(np.arange(25), 5)
    grid_sq = (rows[:, None] - rows[None, :]) ** 2 + (cols[:, None] - cols[None, :]) ** 2
    h = np.exp(-grid_sq / (2 * 0.425**2)) * det.active_units_[None, :]
    expected = (h @ som.weights.double().numpy()) / h.sum(1, keepdims=True)
    np.testing.assert_allclose(det.reference_, expected, rtol=1e-6, atol=1e-6)
    scaled = (X - det.center_) / det.scale_
    bmu = units[np.argmin(((scaled[:, None, :] - som.weights.numpy()[None, units]) ** 2)
                          .sum(-1), axis=1)]
    np.testing.assert_array_equal(det.bmu(X), bmu)
    diff = scaled - det.reference_[bmu]
    if directions is not None:
        d = np.asarray(directions, dtype=float)
        diff = np.where(d == 0, diff, np.maximum(diff * d, 0.0))
    np.testing.assert_allclose(det.anomaly_score(X), np.sqrt((diff**2).sum(1)), rtol=1e-5,
                               atol=1e-6)
    # reference_width=0: the BMU's own prototype, the plain (directed) distance.
    own = AnomalyDetector(map_size="5x5", epochs=5, feature_directions=directions,
                          reference_width=0).fit(X)
    np.testing.assert_array_equal(own.reference_, own.som_.weights.numpy())
    with pytest.raises(ValueError, match="reference_width"):
        AnomalyDetector(reference_width=-1).fit(X)


@pytest.mark.parametrize("scaling", ["standard", "robust", "none"])
def test_scaler_statistics(scaling):
    X, _ = blobs()
    X[:, 1] = 3.0  # a constant column keeps a unit scale instead of dividing by zero
    det = AnomalyDetector(map_size=(2, 2), epochs=1, scaling=scaling).fit(X)
    if scaling == "standard":
        center, scale = X.mean(0), X.std(0)
    elif scaling == "robust":
        q1, center, q3 = np.quantile(X, [0.25, 0.5, 0.75], axis=0)
        scale = q3 - q1
    else:
        center, scale = np.zeros(4), np.ones(4)
    scale[1] = 1.0
    np.testing.assert_allclose(det.center_, center, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(det.scale_, scale, rtol=1e-12)


def test_score_directions_agree():
    X, _ = blobs()
    det = AnomalyDetector(map_size=(4, 4), epochs=5).fit(X)
    score = det.anomaly_score(X)
    np.testing.assert_array_equal(det.score_samples(X), -score)
    np.testing.assert_allclose(det.decision_function(X), det.threshold_ - score)
    flags = det.is_anomaly(X)
    np.testing.assert_array_equal(flags, score > det.threshold_)
    np.testing.assert_array_equal(det.predict(X) == -1, flags)
    np.testing.assert_array_equal(det.labels_ == 1, flags)


def test_explicit_threshold_overrides_contamination():
    X, _ = blobs()
    det = AnomalyDetector(map_size=(4, 4), epochs=3, threshold=1e9).fit(X)
    assert det.threshold_ == 1e9 and not det.is_anomaly(X).any()


def test_quantile_threshold_is_strictly_greater():
    rule = QuantileThreshold.fit(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), contamination=0.2)
    assert rule.value == pytest.approx(4.2)
    assert rule.flags(np.array([4.2, 4.3])).tolist() == [False, True]


def test_same_seed_same_model_and_scoring_leaves_model_unchanged():
    X, _ = blobs()
    for algorithm in ("batch", "online", "seed"):
        a = AnomalyDetector(map_size=(3, 3), epochs=2, algorithm=algorithm, random_state=5).fit(X)
        b = AnomalyDetector(map_size=(3, 3), epochs=2, algorithm=algorithm, random_state=5).fit(X)
        assert torch.equal(a.som_.weights, b.som_.weights), algorithm
        before = a.som_.weights.clone()
        state = (a.threshold_, a.center_.copy(), a.decision_scores_.copy())
        a.anomaly_score(X[:50]), a.explain(X[:5]), a.hit_counts(X), a.topographic_error(X)
        assert torch.equal(a.som_.weights, before)
        assert a.threshold_ == state[0] and np.array_equal(a.center_, state[1])
        assert np.array_equal(a.decision_scores_, state[2])


def test_random_state_changes_the_model():
    X, _ = blobs()
    a = AnomalyDetector(map_size=(3, 3), epochs=2, init="sample", random_state=1).fit(X)
    b = AnomalyDetector(map_size=(3, 3), epochs=2, init="sample", random_state=2).fit(X)
    assert not torch.equal(a.som_.weights, b.som_.weights)


@pytest.mark.parametrize(("params", "name"), [
    ({"map_size": "10by10"}, "map_size"), ({"map_size": (0, 3)}, "map_size"),
    ({"epochs": 0}, "epochs"), ({"algorithm": "fast"}, "algorithm"),
    ({"contamination": 0.7}, "contamination"), ({"scaling": "minmax"}, "scaling"),
    ({"init": "randn"}, "init"), ({"sigma": -1.0}, "sigma"),
    ({"learning_rate": 0}, "learning_rate"), ({"batch_size": 0}, "batch_size"),
    ({"threshold": float("nan")}, "threshold"), ({"device": "tpu"}, "device"),
    ({"min_unit_share": 1.5}, "min_unit_share"), ({"min_unit_share": True}, "min_unit_share"),
])
def test_invalid_parameters_are_named_in_the_error(params, name):
    X, _ = blobs(n=40, outliers=0)
    with pytest.raises(ValueError, match=name):
        AnomalyDetector(**params).fit(X)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present on this machine")
def test_cuda_without_a_gpu_is_a_clear_error():
    X, _ = blobs(n=40, outliers=0)
    with pytest.raises(TxAnomalyError, match="CUDA is not available"):
        AnomalyDetector(device="cuda").fit(X)


def test_map_size_accepts_strings_and_tuples():
    assert parse_map_size("10x10") == (10, 10) == parse_map_size([10, 10])
    det = AnomalyDetector(map_size="2x5", epochs=1).fit(blobs(n=40)[0])
    assert det.u_matrix().shape == (2, 5) and det.hit_counts(blobs(n=40)[0]).sum() == 52


def test_not_fitted_and_wrong_width_are_refused():
    X, _ = blobs(n=40)
    with pytest.raises(NotFittedError, match="not fitted"):
        AnomalyDetector().anomaly_score(X)
    det = AnomalyDetector(map_size=(2, 2), epochs=1).fit(X)
    with pytest.raises(ValueError, match="features"):
        det.anomaly_score(X[:, :3])


def test_explain_shares_and_units():
    X, _ = blobs()
    det = AnomalyDetector(map_size=(4, 4), epochs=5).fit(X)
    row = np.array([[0.0, 0.0, 40.0, 0.0]])  # far out on feature 2 only
    exp = det.explain(row, top=2)
    assert exp.share.sum() == pytest.approx(1.0)
    assert exp.top_features()[0, 0] == 2
    np.testing.assert_allclose(exp.value, row)
    proto = det.reference_[exp.bmu].astype(np.float64) * det.scale_ + det.center_
    np.testing.assert_allclose(exp.prototype, proto, rtol=1e-6)
    assert exp.anomaly_score[0] == pytest.approx(det.anomaly_score(row)[0])
    record = exp.records()[0]
    assert record["reasons"][0]["feature"] == "x2"
    assert record["reasons"][0]["value"] == 40.0 and len(record["reasons"]) == 2


def test_map_quality_measures():
    X, _ = blobs()
    det = AnomalyDetector(map_size=(4, 4), epochs=5).fit(X)
    assert 0.0 <= det.topographic_error(X) <= 1.0
    assert det.hit_counts(X).sum() == len(X)
    assert det.quantization_error(X) == pytest.approx(det.decision_scores_.mean())
    assert 0.0 < det.silhouette(X) <= 1.0  # two well-separated blobs
    assert (det.u_matrix() >= 0).all()


def test_clone_and_pipeline():
    X, _ = blobs()
    det = AnomalyDetector(map_size="3x3", epochs=4, contamination=0.02)
    fresh = clone(det)
    assert fresh.get_params() == det.get_params() and not hasattr(fresh, "som_")
    pipe = make_pipeline(FunctionTransformer(np.abs), clone(det)).fit(X)
    assert set(np.unique(pipe.predict(X))) == {-1, 1}


def test_partial_fit_learns_a_stream():
    X, y = blobs(n=2000, seed=3)
    order = np.random.default_rng(0).permutation(len(X))
    det = AnomalyDetector(map_size=(4, 4))
    for part in np.array_split(order, 5):
        det.partial_fit(X[part])
    assert det.samples_seen_ == len(X)
    assert roc_auc_score(y, det.anomaly_score(X)) > 0.95


def test_planted_outliers_score_highest():
    X, y = blobs(seed=1)
    for algorithm in ("batch", "online", "seed"):
        det = AnomalyDetector(map_size=(5, 5), epochs=5, algorithm=algorithm).fit(X)
        assert roc_auc_score(y, det.decision_scores_) > 0.99, algorithm


@pytest.mark.skipif(not (ADBENCH / "38_thyroid.npz").exists() and os.environ.get("CI") != "true",
                    reason=f"ADBench data absent at {ADBENCH} (required in CI)")
def test_adbench_thyroid_smoke():
    with np.load(ADBENCH / "38_thyroid.npz", allow_pickle=False) as data:
        X, y = data["X"], data["y"]
    Xtr, Xte, _, yte = train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)
    det = AnomalyDetector().fit(Xtr)
    assert roc_auc_score(yte, det.anomaly_score(Xte)) > 0.9


def test_synthetic_transactions_anomalies_rank_high():
    from txanomaly import synth
    from txanomaly.features import batch
    from txanomaly.features.spec import STANDARD

    data = synth.generate(8_000, users=200, days=20, anomaly_rate=0.02, seed=4)
    features = batch.compute_features(data.transactions, STANDARD)
    raw = features.select(STANDARD.names).to_numpy()
    X = STANDARD.fit_transforms(raw).transform(raw)
    y = data.labels["is_anomaly"].to_numpy()
    det = AnomalyDetector().fit(X)
    assert roc_auc_score(y, det.decision_scores_) > 0.75


def test_a_rare_pattern_is_scored_against_units_of_ordinary_behaviour():
    # 2 % of the training rows repeat one far-away pattern (a fraud ring active in the
    # training window): the map gives it units of its own. Scored only against units that
    # hold at least the average share of the rows, it stands further out.
    rng = np.random.default_rng(0)
    normal = rng.normal(0, 1, (2_000, 3))
    ring = rng.normal(6, 0.05, (40, 3))
    X = np.vstack([normal, ring])
    every = AnomalyDetector(map_size="5x5", epochs=10, min_unit_share=0.0).fit(X)
    dense = AnomalyDetector(map_size="5x5", epochs=10).fit(X)
    assert every.active_units_.all() and 0 < dense.active_units_.sum() < 25
    assert not dense.active_units_[np.unique(every.bmu(ring))].any()
    assert np.all(dense.anomaly_score(ring) > every.anomaly_score(ring))
    assert dense.is_anomaly(ring).all()
    # Rows and explanations name the scoring unit, numbered on the whole map.
    assert set(dense.bmu(X)) <= set(np.flatnonzero(dense.active_units_))
    assert set(dense.explain(ring).bmu) <= set(np.flatnonzero(dense.active_units_))


def test_train_and_score_do_not_import_scikit_learn(tmp_path):
    """scikit-learn costs a process as long to import as PyTorch; the model's own paths
    (fit from disk, load, score) do not need it."""
    import subprocess
    import sys

    script = (
        "import sys, numpy as np, polars as pl\n"
        "from txanomaly.features.spec import Feature, FeatureSet\n"
        "from txanomaly.pipeline import TransactionModel\n"
        "from txanomaly.detector import AnomalyDetector\n"
        "from txanomaly.rowstore import RowStore\n"
        "fs = FeatureSet('demo', (Feature('a', 'amount', transform='log1p'),"
        " Feature('b', 'amount')))\n"
        "store = RowStore(sys.argv[1] + '/x', 2)\n"
        "store.append(np.random.default_rng(0).lognormal(size=(500, 2)))\n"
        "model = TransactionModel(fs, AnomalyDetector(map_size='3x3', epochs=2))\n"
        "model.fit_stored(store).save(sys.argv[1] + '/m')\n"
        "loaded = TransactionModel.load(sys.argv[1] + '/m')\n"
        "ids = pl.Series('transaction_id', ['t1', 't2'])\n"
        "loaded.score_rows(ids, np.array([[1.0, 2.0], [90.0, 0.5]]))\n"
        "try:\n"
        "    AnomalyDetector().anomaly_score([[1.0, 2.0]])\n"
        "except ValueError as exc:\n"
        "    assert 'not fitted' in str(exc)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'scipy')))\n")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True,
                          text=True, check=True)
    assert done.stdout.strip() == "[]", done.stderr
