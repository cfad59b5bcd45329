"""TransactionModel's estimator contract (the generic checks STYLE.md asks of every estimator)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from sklearn.base import clone

from txanomaly.detector import AnomalyDetector
from txanomaly.errors import NotFittedError, TxAnomalyError
from txanomaly.features.spec import SEED
from txanomaly.pipeline import TransactionModel


def raw(n: int = 600, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(SEED.names)))
    X[:, 0] = rng.lognormal(3, 1, n)  # an amount
    return X


def model() -> TransactionModel:
    return TransactionModel("seed", AnomalyDetector(map_size="3x3", epochs=3))


def test_repr_names_the_parameters_as_given():
    text = repr(model())
    assert "feature_set='seed'" in text and "map_size='3x3'" in text


def test_fitting_twice_with_the_same_seed_gives_the_same_model():
    a, b = model().fit(raw()), model().fit(raw())
    np.testing.assert_array_equal(a.anomaly_score(raw(seed=1)), b.anomaly_score(raw(seed=1)))
    assert a.threshold == b.threshold


def test_scoring_does_not_change_the_model():
    fitted = model().fit(raw())
    weights = fitted.detector_.som_.weights.clone()
    state = (fitted.threshold, fitted.detector_.center_.copy(), fitted.detector_.scale_.copy())
    fitted.explain(raw(seed=2))
    fitted.score_frame(pl.DataFrame(raw(seed=3), schema=SEED.names)
                       .with_row_index("transaction_id").cast({"transaction_id": pl.String}))
    assert fitted.detector_.som_.weights.equal(weights)
    assert fitted.threshold == state[0]
    np.testing.assert_array_equal(fitted.detector_.center_, state[1])
    np.testing.assert_array_equal(fitted.detector_.scale_, state[2])


def test_defaults_are_immutable_and_a_clone_is_unfitted():
    fitted = TransactionModel("seed").fit(raw())
    assert fitted.detector is None  # the default is resolved into detector_ only
    assert TransactionModel().get_params(deep=False) == {"feature_set": "standard",
                                                         "detector": None}
    again = clone(fitted)
    assert not hasattr(again, "detector_")
    with pytest.raises(NotFittedError):
        again.anomaly_score(raw())


def test_one_path_gives_consistent_scores_flags_and_risk_levels():
    fitted = model().fit(raw())
    X = raw(seed=4)
    exp = fitted.explanation(X)
    np.testing.assert_array_equal(exp.anomaly_score, fitted.anomaly_score(X))
    assert exp.is_anomaly.tolist() == fitted.is_anomaly(X).tolist()
    assert exp.is_anomaly.tolist() == (exp.anomaly_score > fitted.threshold).tolist()
    flagged = set(np.flatnonzero(exp.is_anomaly).tolist())
    assert flagged == {i for i, r in enumerate(exp.risk_level) if r in ("HIGH", "CRITICAL")}


def test_bad_rows_are_refused_with_the_feature_named():
    fitted = model().fit(raw())
    X = raw(seed=5)
    X[3, 2] = np.nan
    with pytest.raises(TxAnomalyError, match=r"row 3: feature 'day_sin'"):
        fitted.anomaly_score(X)
    with pytest.raises(TxAnomalyError, match="expected rows of 9 features"):
        fitted.anomaly_score(X[:, :4])
