"""Per-feature distance weights: folded into the scaler, taken from the feature set, saved."""

from __future__ import annotations

import numpy as np
import pytest

from txanomaly.detector import AnomalyDetector
from txanomaly.features.spec import Feature, FeatureSet
from txanomaly.pipeline import TransactionModel


def data(n: int = 400) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.column_stack([rng.normal(0, 1, n), rng.normal(5, 2, n)])


def test_weight_multiplies_a_features_scaled_distance():
    X = data()
    plain = AnomalyDetector(map_size="1x1", epochs=3, scaling="standard").fit(X)
    weighted = AnomalyDetector(map_size="1x1", epochs=3, scaling="standard",
                               feature_weights=[1.0, 3.0]).fit(X)
    np.testing.assert_allclose(weighted.scale_, plain.scale_ / [1.0, 3.0])
    np.testing.assert_allclose(weighted.center_, plain.center_)
    # One unit = the mean of the scaled data (0), so the score is the weighted norm of z.
    row = np.array([[1.0, 9.0]])
    z = (row[0] - plain.center_) / plain.scale_
    assert weighted.anomaly_score(row)[0] == pytest.approx(np.hypot(z[0], 3 * z[1]), rel=1e-4)
    assert plain.anomaly_score(row)[0] == pytest.approx(np.hypot(z[0], z[1]), rel=1e-4)


@pytest.mark.parametrize("weights", [[1.0, 0.0], [1.0, -2.0], [1.0, float("nan")], [[1.0, 1.0]]])
def test_bad_weights_are_rejected_naming_the_parameter(weights):
    with pytest.raises(ValueError, match="feature_weights"):
        AnomalyDetector(feature_weights=weights).fit(data())


def test_wrong_number_of_weights_is_rejected():
    with pytest.raises(ValueError, match="feature_weights has 3"):
        AnomalyDetector(feature_weights=[1.0, 1.0, 1.0]).fit(data())


def test_transaction_model_uses_the_feature_sets_weights_and_keeps_them_on_reload(tmp_path):
    fs = FeatureSet("w", (Feature("amount", "amount"), Feature("hour_sin", "hour_sin",
                                                               weight=2.0)))
    model = TransactionModel(fs, AnomalyDetector(map_size="3x3", epochs=2)).fit(data())
    assert model.detector_.feature_weights == [1.0, 2.0]
    model.save(tmp_path / "m")
    again = TransactionModel.load(tmp_path / "m")
    assert again.feature_set_.weights == [1.0, 2.0]
    np.testing.assert_array_equal(again.anomaly_score(data()), model.anomaly_score(data()))


def test_auto_scaling_is_robust_alone_and_the_feature_sets_in_a_transaction_model():
    X = data()
    alone = AnomalyDetector(map_size="2x2", epochs=1).fit(X)
    assert alone.scaling == "auto"
    np.testing.assert_allclose(alone.center_, np.median(X, axis=0))  # robust: the median
    fs = FeatureSet("w", (Feature("amount", "amount"), Feature("hour_sin", "hour_sin")))
    model = TransactionModel(fs, AnomalyDetector(map_size="2x2", epochs=1)).fit(X)
    assert model.detector_.scaling == "standard"
    np.testing.assert_allclose(model.detector_.center_, X.mean(axis=0))
    explicit = TransactionModel(fs, AnomalyDetector(map_size="2x2", epochs=1, scaling="none"))
    assert explicit.fit(X).detector_.scaling == "none"  # a user's choice is kept


def test_feature_set_scaling_round_trips_and_is_validated():
    from txanomaly.errors import TxAnomalyError

    fs = FeatureSet("r", (Feature("amount", "amount"),), scaling="robust")
    assert FeatureSet.from_dict(fs.to_dict()).scaling == "robust"
    with pytest.raises(TxAnomalyError, match="scaling"):
        FeatureSet("bad", (Feature("amount", "amount"),), scaling="minmax")


def test_transaction_model_fit_leaves_the_callers_detector_unchanged():
    """Regression: fit used to turn the caller's scaling="auto" into "standard" and set 23
    feature weights on the detector object the user passed in."""
    fs = FeatureSet("w", (Feature("amount", "amount"), Feature("hour_sin", "hour_sin",
                                                               weight=2.0)))
    given = AnomalyDetector(map_size="2x2", epochs=1)
    before = given.get_params()
    model = TransactionModel(fs, given).fit(data())
    assert given.get_params() == before
    assert not hasattr(given, "som_")  # the fitted one is a clone
    assert model.detector is given and model.detector_ is not given
    assert model.get_params()["detector__scaling"] == "auto"
    assert model.detector_.scaling == "standard"
    assert model.detector_.feature_weights == [1.0, 2.0]


def test_transaction_model_clones_and_grid_searches():
    from sklearn.base import clone
    from sklearn.model_selection import GridSearchCV

    X = data()
    y = (np.abs(X - X.mean(0)) > 2.5 * X.std(0)).any(1).astype(int)
    fs = FeatureSet("g", (Feature("amount", "amount"), Feature("hour_sin", "hour_sin")))
    model = TransactionModel(fs, AnomalyDetector(map_size="2x2", epochs=2))
    copy = clone(model)
    assert copy.get_params(deep=False)["feature_set"] == fs
    assert copy.get_params()["detector__map_size"] == "2x2"
    assert copy.detector is not model.detector

    def auc(estimator, X, y):
        from sklearn.metrics import roc_auc_score
        return roc_auc_score(y, estimator.anomaly_score(X))

    search = GridSearchCV(model, {"detector__map_size": ["2x2", "3x3"]}, scoring=auc, cv=2)
    search.fit(X, y)
    assert search.best_params_["detector__map_size"] in ("2x2", "3x3")
    assert search.best_estimator_.detector_.som_.rows in (2, 3)
    assert not hasattr(model, "detector_")  # the search worked on clones
