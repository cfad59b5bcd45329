"""``TransactionModel``: a feature set's transforms + an :class:`AnomalyDetector`, savable.

Data flows one way: raw feature values (as :mod:`txanomaly.features.batch` computes them)
-> :meth:`FeatureSet.transform` (log1p, clipping: the model inputs) -> the detector (scaling,
map, threshold). Explanations come back in raw units: the row's own raw values, and the
prototype mapped back with :meth:`FeatureSet.inverse_transform`.

>>> import numpy as np
>>> from txanomaly.features.spec import Feature, FeatureSet
>>> fs = FeatureSet("demo", (Feature("amount", "amount", transform="log1p"),
...                          Feature("hour_sin", "hour_sin")))
>>> rng = np.random.default_rng(0)
>>> X = np.column_stack([rng.lognormal(3, 0.5, 400), rng.uniform(-1, 1, 400)])
>>> model = TransactionModel(fs, AnomalyDetector(map_size="4x4", epochs=5)).fit(X)
>>> model.is_anomaly([[20.0, 0.0], [50_000.0, 0.0]]).tolist()
[False, True]
>>> model.explain([[50_000.0, 0.0]])[0]["reasons"][0]["feature"]
'amount'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from txanomaly import artifact
from txanomaly.detector import AnomalyDetector, Explanation, QuantileThreshold
from txanomaly.errors import TxAnomalyError
from txanomaly.features.spec import FeatureSet, get_feature_set

#: Rows explained at a time by :meth:`TransactionModel.score_frame`.
SCORE_CHUNK = 100_000


class TransactionModel:
    """A feature set and the detector trained on its (transformed) values.

    Parameters
    ----------
    feature_set : FeatureSet or str
        The features the rows hold, in order (``"standard"``, ``"seed"`` or a FeatureSet).
    detector : AnomalyDetector, optional
        Unfitted (for :meth:`fit`) or fitted; default ``AnomalyDetector()``.

    Inputs ``X`` are raw feature values: an ``(n, d)`` array in feature-set order, or a
    Polars/pandas DataFrame holding (at least) the feature columns.
    """

    def __init__(self, feature_set: FeatureSet | str = "standard",
                 detector: AnomalyDetector | None = None):
        self.feature_set = get_feature_set(feature_set)
        self.detector = detector if detector is not None else AnomalyDetector()

    @property
    def feature_names(self) -> list[str]:
        return self.feature_set.names

    @property
    def threshold(self) -> float:
        return float(self.detector.threshold_)

    def fit(self, X: Any, callback: Any = None) -> TransactionModel:
        """Train the detector on raw feature values; returns ``self``.

        The feature set's weights become the detector's ``feature_weights`` unless the
        detector was given its own, and its declared scaling replaces ``scaling="auto"``.
        """
        if self.detector.feature_weights is None and self.feature_set.weights is not None:
            self.detector.set_params(feature_weights=self.feature_set.weights)
        if self.detector.scaling == "auto":
            self.detector.set_params(scaling=self.feature_set.scaling)
        self.detector.fit(self._inputs(X), callback=callback)
        return self

    def anomaly_score(self, X: Any) -> np.ndarray:
        """Distance to the best-matching unit in scaled space; higher = more anomalous."""
        return self.detector.anomaly_score(self._inputs(X))

    def is_anomaly(self, X: Any) -> np.ndarray:
        """Anomaly score strictly above the model's threshold."""
        return self.detector.is_anomaly(self._inputs(X))

    def explain(self, X: Any, top: int = 3) -> list[dict[str, Any]]:
        """Per row: score, BMU and the ``top`` reasons, values in raw feature units."""
        return self.explanation(X, top).records()

    def explanation(self, X: Any, top: int = 3) -> Explanation:
        """The full :class:`Explanation` (all features' shares), in raw feature units."""
        raw = self._raw(X)
        found = self.detector.explain(self.feature_set.transform(raw), top=top)
        return replace(found, feature_names=self.feature_names, value=raw,
                       prototype=self.feature_set.inverse_transform(found.prototype))

    def score_frame(self, features: pl.DataFrame, top: int = 3,
                    on_progress: Callable[[int], None] | None = None,
                    chunk_size: int = SCORE_CHUNK) -> pl.DataFrame:
        """Scores and reasons for every row of a feature table, in its order.

        Columns: ``transaction_id``, ``anomaly_score``, ``is_anomaly``, ``bmu``, then for
        each of the ``top`` reasons ``reason_i`` (feature), ``reason_i_share``,
        ``reason_i_value`` and ``reason_i_prototype`` (raw units). Rows are explained in chunks
        (an explanation holds three rows x features float64 arrays); ``on_progress(rows)`` is
        called after each.
        """
        parts = []
        for start in range(0, features.height, chunk_size):
            chunk = features.slice(start, chunk_size)
            parts.append(self._score_chunk(chunk, top))
            if on_progress is not None:
                on_progress(chunk.height)
        return pl.concat(parts) if parts else self._score_chunk(features, top)

    def _score_chunk(self, chunk: pl.DataFrame, top: int) -> pl.DataFrame:
        if chunk.height == 0:
            return pl.DataFrame(schema={"transaction_id": pl.String, "anomaly_score": pl.Float64,
                                        "is_anomaly": pl.Boolean, "bmu": pl.Int64})
        exp = self.explanation(chunk.select(self.feature_names), top=top)
        columns: dict[str, Any] = {
            "transaction_id": chunk.get_column("transaction_id"),
            "anomaly_score": exp.anomaly_score,
            "is_anomaly": QuantileThreshold(self.threshold).flags(exp.anomaly_score),
            "bmu": exp.bmu.astype(np.int64)}
        rows = np.arange(chunk.height)
        names = np.asarray(exp.feature_names)
        for rank, idx in enumerate(exp.top_features().T, start=1):
            columns[f"reason_{rank}"] = names[idx]
            columns[f"reason_{rank}_share"] = exp.share[rows, idx]
            columns[f"reason_{rank}_value"] = exp.value[rows, idx]
            columns[f"reason_{rank}_prototype"] = exp.prototype[rows, idx]
        return pl.DataFrame(columns)

    def save(self, path: str | Path) -> Path:
        """Write the model directory (see :mod:`txanomaly.artifact`)."""
        return artifact.save(path, self.detector, self.feature_set)

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> TransactionModel:
        """Read a model directory saved by :meth:`save` (checked on the way)."""
        loaded = artifact.load(path, device=device)
        if loaded.feature_set is None:
            raise TxAnomalyError(f"{path}: the model has no feature set; load it with "
                                 "txanomaly.artifact.load")
        return cls(loaded.feature_set, loaded.detector)

    def _raw(self, X: Any) -> np.ndarray:
        names = self.feature_names
        if isinstance(X, pl.DataFrame) or hasattr(X, "columns"):
            missing = [n for n in names if n not in list(X.columns)]
            if missing:
                raise TxAnomalyError(f"input lacks feature column(s) {missing}")
            X = X[names].to_numpy() if not isinstance(X, pl.DataFrame) else X.select(
                names).to_numpy()
        raw = np.asarray(X, dtype=np.float64)
        if raw.ndim != 2 or raw.shape[1] != len(names):
            raise TxAnomalyError(f"expected rows of {len(names)} features "
                                 f"({self.feature_set.name!r}), got shape {raw.shape}")
        return raw

    def _inputs(self, X: Any) -> np.ndarray:
        return self.feature_set.transform(self._raw(X))
