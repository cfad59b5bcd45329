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

It follows scikit-learn's estimator contract: ``__init__`` stores the parameters as given,
``fit`` resolves them into fitted attributes ending in ``_`` (``feature_set_``, ``detector_``)
and leaves the caller's detector untouched, so ``clone``, ``get_params`` and grid searches over
``detector__map_size`` work.

>>> from sklearn.base import clone
>>> clone(model).get_params()["detector__map_size"]
'4x4'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from txanomaly import artifact
from txanomaly.detector import AnomalyDetector, Explanation
from txanomaly.errors import NotFittedError, TxAnomalyError
from txanomaly.estimator import Estimator, clone
from txanomaly.features.spec import FITTED_TRANSFORMS, FeatureSet, get_feature_set
from txanomaly.rowstore import RowStore
from txanomaly.scaling import BlockSums
from txanomaly.threshold import RISK_LEVELS, exceeds, risk_level_codes

#: Rows explained at a time by :meth:`TransactionModel.score_frame`.
SCORE_CHUNK = 100_000


def columns_to_fit(feature_set: FeatureSet | str) -> list[int]:
    """Positions of the features whose transform has a scale still to fit on the training
    rows (:data:`~txanomaly.features.spec.FITTED_TRANSFORMS`)."""
    fs = get_feature_set(feature_set)
    return [j for j, f in enumerate(fs.features)
            if f.transform in FITTED_TRANSFORMS and f.transform_scale is None]


class TrainingRows:
    """Raw feature rows written to disk as they come (``txanomaly train``, a chunk of a file
    at a time) for :meth:`TransactionModel.fit_stored`, made model inputs on the way in.

    Each chunk is transformed as it is appended (:meth:`FeatureSet.transform`, elementwise)
    except the columns whose transform has a scale still to fit (:func:`columns_to_fit`):
    those stay raw, each also in a file of its own, until ``fit_stored`` has fitted the
    scale on the whole column; from then on they are transformed as they are read
    (:meth:`RowStore.transform_column`). The standard scaler's first pass (its column sums,
    :class:`~txanomaly.scaling.BlockSums`) is counted on the way too. So training reads the
    table twice before the map's passes (the scaler's second pass and the scaled copy),
    where transforming it in place and the scaler's two passes read it four times and wrote
    it once more; the model is the same bit for bit.

    >>> import tempfile
    >>> from txanomaly.features.spec import Feature, FeatureSet
    >>> fs = FeatureSet("demo", (Feature("a", "amount", transform="log1p"),
    ...                          Feature("d", "amount", transform="scaled_signed_log1p")))
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     rows = TrainingRows(f"{folder}/x.f64", fs)
    ...     rows.append(np.array([[np.e - 1, -4.0], [0.0, 2.0]]))
    ...     rows.store.load().tolist()
    [[1.0, -4.0], [0.0, 2.0]]
    """

    def __init__(self, path: str | Path, feature_set: FeatureSet | str):
        fs = get_feature_set(feature_set)
        self.feature_set = fs
        self.fit_columns = columns_to_fit(fs)
        # The set as it transforms before its scales are fitted: those columns as they are.
        self._early = replace(fs, features=tuple(
            replace(f, transform="none", clip=None) if j in self.fit_columns else f
            for j, f in enumerate(fs.features)))
        self.store = RowStore(path, len(fs.features), keep_columns=self.fit_columns)
        self.sums = BlockSums(len(fs.features))

    @property
    def n_rows(self) -> int:
        return self.store.n_rows

    def append(self, raw: np.ndarray) -> None:
        """Add rows of raw feature values (float64, in feature-set order)."""
        values = self._early.transform(raw)
        self.store.append(values)
        self.sums.add(values)


def _column_transform(one: FeatureSet) -> Callable[[np.ndarray], np.ndarray]:
    """The transform of the one-feature set ``one`` as a function of a column's values."""
    return lambda values: one.transform(values[:, None])[:, 0]


def _transforms(fs: FeatureSet) -> list[tuple[Any, ...]]:
    return [(f.transform, f.clip, f.transform_scale) for f in fs.features]


def resolve_detector(fs: FeatureSet, detector: AnomalyDetector | None) -> AnomalyDetector:
    """A clone of ``detector`` (default: ``AnomalyDetector()``) with the feature set's
    weights as ``feature_weights`` unless it has its own, the set's risk directions as
    ``feature_directions`` (other directions are refused), and the set's scaling where it says
    ``scaling="auto"``: what :meth:`TransactionModel.fit` (and the Spark trainer) train."""
    detector = clone(detector) if detector is not None else AnomalyDetector()
    if detector.feature_weights is None and fs.weights is not None:
        detector.set_params(feature_weights=fs.weights)
    if detector.feature_directions is None:
        detector.set_params(feature_directions=fs.directions)
    elif list(detector.feature_directions) != (fs.directions or [0] * len(fs.features)):
        raise TxAnomalyError("the detector's feature_directions differ from the feature "
                             "set's; declare directions in the feature set (they are "
                             "saved with it in the model)")
    if detector.scaling == "auto":
        detector.set_params(scaling=fs.scaling)
    return detector


class TransactionModel(Estimator):
    """A feature set and the detector trained on its (transformed) values.

    Parameters
    ----------
    feature_set : FeatureSet or str, default "standard"
        The features the rows hold, in order (``"standard"``, ``"seed"`` or a FeatureSet).
    detector : AnomalyDetector, optional
        The detector's parameters (it is cloned by :meth:`fit`, never changed); default
        ``AnomalyDetector()``.

    Attributes
    ----------
    feature_set_ : FeatureSet
        The resolved feature set.
    detector_ : AnomalyDetector
        The fitted detector: a clone of ``detector`` whose ``scaling="auto"`` became the
        feature set's declared scaling and whose ``feature_weights`` default to the feature
        set's weights.

    Inputs ``X`` are raw feature values: an ``(n, d)`` array in feature-set order, or a
    Polars/pandas DataFrame holding (at least) the feature columns.
    """

    def __init__(self, feature_set: FeatureSet | str = "standard",
                 detector: AnomalyDetector | None = None):
        self.feature_set = feature_set
        self.detector = detector

    @property
    def feature_names(self) -> list[str]:
        """The feature set's names, in input order."""
        fs = getattr(self, "feature_set_", None)
        return (fs if fs is not None else get_feature_set(self.feature_set)).names

    @property
    def threshold(self) -> float:
        """The fitted detector's anomaly-score threshold."""
        return float(self._fitted().threshold_)

    def fit(self, X: Any, y: Any = None, callback: Any = None) -> TransactionModel:
        """Train a clone of ``detector`` on raw feature values; returns ``self``. ``y`` is ignored.

        The clone takes the feature set's weights as ``feature_weights`` unless the detector
        was given its own, the set's risk directions as ``feature_directions`` (a detector
        with other directions is refused), and the set's declared scaling where it says
        ``scaling="auto"``.
        """
        fs = get_feature_set(self.feature_set)
        detector = resolve_detector(fs, self.detector)
        raw = self._raw(X)
        fs = fs.fit_transforms(raw)
        self.feature_set_ = fs
        detector.fit(fs.transform(raw), callback=callback)
        self.detector_ = detector
        return self

    def fit_stored(self, store: RowStore | TrainingRows, callback: Any = None,
                   sample: int | str | None = None) -> TransactionModel:
        """:meth:`fit` on raw feature values that need not fit in memory: the float64 rows
        of ``store``, in feature-set order (``txanomaly train`` writes them there as it
        reads). The fitted transforms' scales come from whole columns (one at a time; a
        store made with ``keep_columns=columns_to_fit(feature_set)`` reads them from their
        own files); the rows are then transformed in place (``store`` now holds the
        transformed values) and :meth:`AnomalyDetector.fit_stored` does the rest (``sample``:
        the map trains on a uniform sample of that many rows; ``"auto"``: on every row up
        to 1,000,000, on a sample of that many above, :func:`.detector.auto_sample`). On
        the same rows, the model equals :meth:`fit`'s (``batch``: bit for bit). ``store``
        may also be :class:`TrainingRows` (its rows already transformed but for the columns to fit:
        those are transformed in their own files, and the scaler's first pass was made as
        the rows were written), for the same model."""
        fs = get_feature_set(self.feature_set)
        if isinstance(store, TrainingRows):
            return self._fit_rows(store, fs, callback, sample)
        if store.n_columns != len(fs.features):
            raise TxAnomalyError(f"expected rows of {len(fs.features)} features ({fs.name!r}), "
                                 f"got {store.n_columns}")
        detector = resolve_detector(fs, self.detector)
        fitted = list(fs.features)
        for j in columns_to_fit(fs):
            # The same rule as FeatureSet.fit_transforms, on this column alone.
            fitted[j] = FeatureSet(fs.name, (fitted[j],)).fit_transforms(
                store.column(j)[:, None]).features[0]
        fs = replace(fs, features=tuple(fitted))
        self.feature_set_ = fs
        # Transformed once, in place: the scaler's two passes and the scaled copy read them.
        store.rewrite(fs.transform)
        detector.fit_stored(store, callback=callback, sample=sample)
        self.detector_ = detector
        return self

    def _fit_rows(self, rows: TrainingRows, fs: FeatureSet, callback: Any,
                  sample: int | str | None) -> TransactionModel:
        """:meth:`fit_stored` on :class:`TrainingRows`."""
        if _transforms(fs) != _transforms(rows.feature_set):
            raise TxAnomalyError(f"the rows were transformed for feature set "
                                 f"{rows.feature_set.name!r}, whose transforms differ from "
                                 f"{fs.name!r}'s")
        detector = resolve_detector(fs, self.detector)
        store, fitted = rows.store, list(fs.features)
        for j in rows.fit_columns:
            raw = store.column(j)[:, None]
            one = FeatureSet(fs.name, (fitted[j],)).fit_transforms(raw)
            fitted[j] = one.features[0]
            # The same elementwise arithmetic as the whole set's transform of a block, here
            # for the scaler's sums and then on each block as the column is read.
            rows.sums.set_column(j, one.transform(raw)[:, 0])
            del raw
            store.transform_column(j, _column_transform(one))
        fs = replace(fs, features=tuple(fitted))
        self.feature_set_ = fs
        detector.fit_stored(store, callback=callback, sample=sample, sums=rows.sums.result())
        self.detector_ = detector
        return self

    # ------------------------------------------------------------------ the one scoring path
    def explanation(self, X: Any, top: int = 3) -> Explanation:
        """Scores, flags, risk levels and every feature's share, values in raw feature units.

        Every caller that scores (``anomaly_score``, ``is_anomaly``, :meth:`score_frame`,
        reports, evaluation, tuning, the service's verdicts) comes through here.
        """
        detector = self._fitted()
        raw = self._raw(X)
        fs = self.feature_set_
        found = detector.explain(fs.transform(raw), top=top, check_input=False)
        return Explanation(fs.names, found.anomaly_score, found.bmu, found.share, raw,
                           fs.inverse_transform(found.prototype), found.threshold, found.top)

    def anomaly_score(self, X: Any) -> np.ndarray:
        """Distance to the best-matching unit in scaled space; higher = more anomalous."""
        return self.explanation(X).anomaly_score

    def is_anomaly(self, X: Any) -> np.ndarray:
        """Anomaly score strictly above the model's threshold."""
        return self.explanation(X).is_anomaly

    def explain(self, X: Any, top: int = 3) -> list[dict[str, Any]]:
        """Per row: score, flag, risk level, BMU and the ``top`` reasons, in raw units."""
        return self.explanation(X, top).records()

    def score_frame(self, features: pl.DataFrame, top: int = 3,
                    on_progress: Callable[[int], None] | None = None,
                    chunk_size: int = SCORE_CHUNK) -> pl.DataFrame:
        """Scores and reasons for every row of a feature table, in its order.

        Columns: ``transaction_id``, ``anomaly_score``, ``is_anomaly``, ``risk_level``,
        ``bmu``, then for each of the ``top`` reasons ``reason_i`` (feature),
        ``reason_i_share``, ``reason_i_value`` and ``reason_i_prototype`` (raw units). Rows are
        explained in chunks (an explanation holds three rows x features float64 arrays);
        ``on_progress(rows)`` is called after each.
        """
        parts = []
        for start in range(0, features.height, chunk_size):
            chunk = features.slice(start, chunk_size)
            parts.append(self._score_chunk(chunk, top))
            if on_progress is not None:
                on_progress(chunk.height)
        return pl.concat(parts) if parts else self._score_chunk(features, top)

    def score_values(self, transaction_id: pl.Series, X: np.ndarray, top: int = 3,
                     chunk_size: int = SCORE_CHUNK) -> pl.DataFrame:
        """:meth:`score_frame`'s table for raw feature values already in an ``(n, d)`` array
        (in feature-set order) and their ids: the same rows, without building a DataFrame
        of the features first (``txanomaly score``, a chunk of a file at a time)."""
        parts = [self.score_rows(transaction_id.slice(start, chunk_size),
                                 X[start:start + chunk_size], top)
                 for start in range(0, len(X), chunk_size)]
        if not parts:
            return self._score_chunk(pl.DataFrame(
                schema={"transaction_id": pl.String,
                        **dict.fromkeys(self.feature_names, pl.Float64)}), top)
        return pl.concat(parts) if len(parts) > 1 else parts[0]

    def _score_chunk(self, chunk: pl.DataFrame, top: int) -> pl.DataFrame:
        if chunk.height == 0:
            return pl.DataFrame(schema={"transaction_id": pl.String, "anomaly_score": pl.Float64,
                                        "is_anomaly": pl.Boolean, "risk_level": pl.String,
                                        "bmu": pl.Int64})
        return self.score_rows(chunk.get_column("transaction_id"),
                               chunk.select(self.feature_names), top)

    def score_rows(self, transaction_id: pl.Series, X: Any, top: int = 3) -> pl.DataFrame:
        """:meth:`score_frame`'s table for the rows ``X`` (raw feature values) and their ids,
        explained at once (a chunk of a file: ``txanomaly score``)."""
        detector = self._fitted()
        raw = self._raw(X)
        fs = self.feature_set_
        # The top reasons alone (AnomalyDetector.explain_top: explanation()'s values without
        # its rows x features arrays); a prototype's raw values depend on its unit only, so
        # they are mapped back once per unit and gathered.
        found = detector.explain_top(fs.transform(raw), top=top)
        units = fs.inverse_transform(detector.prototypes())
        # Names by position, gathered by Polars: a NumPy array of strings per column cost
        # more than the scoring itself on large files.
        levels = pl.Series(RISK_LEVELS, dtype=pl.String)
        columns: dict[str, Any] = {
            "transaction_id": transaction_id,
            "anomaly_score": found.anomaly_score,
            "is_anomaly": exceeds(found.anomaly_score, found.threshold),
            "risk_level": levels.gather(risk_level_codes(found.anomaly_score, found.threshold)),
            "bmu": found.bmu.astype(np.int64)}
        rows = np.arange(len(found.anomaly_score))
        names = pl.Series(fs.names, dtype=pl.String)
        for rank, idx in enumerate(found.features.T, start=1):
            columns[f"reason_{rank}"] = names.gather(idx)
            columns[f"reason_{rank}_share"] = found.share[:, rank - 1]
            columns[f"reason_{rank}_value"] = raw[rows, idx]
            columns[f"reason_{rank}_prototype"] = units[found.bmu, idx]
        return pl.DataFrame(columns)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path, key: bytes | str | None = None) -> Path:
        """Write the model directory (see :mod:`txanomaly.artifact`); signed with ``key``
        (HMAC-SHA256) when one is given."""
        return artifact.save(path, self._fitted(), self.feature_set_, key=key)

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> TransactionModel:
        """Read a model directory saved by :meth:`save` (checked on the way)."""
        loaded = artifact.load(path, device=device)
        if loaded.feature_set is None:
            raise TxAnomalyError(f"{path}: the model has no feature set; load it with "
                                 "txanomaly.artifact.load")
        return cls.from_fitted(loaded.feature_set, loaded.detector)

    @classmethod
    def from_fitted(cls, feature_set: FeatureSet, detector: AnomalyDetector
                    ) -> TransactionModel:
        """A fitted model from a feature set and a detector already fitted on its inputs."""
        model = cls(feature_set, clone(detector))
        model.feature_set_ = feature_set
        model.detector_ = detector
        return model

    # ------------------------------------------------------------------ input checks
    def _fitted(self) -> AnomalyDetector:
        detector = getattr(self, "detector_", None)
        if detector is None:
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit first")
        return detector

    def _raw(self, X: Any) -> np.ndarray:
        """``X`` as a finite float64 ``(n, d)`` array in feature order (checked once, here)."""
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
                                 f"({get_feature_set(self.feature_set).name!r}), got shape "
                                 f"{raw.shape}")
        if not np.isfinite(raw).all():
            row, col = np.argwhere(~np.isfinite(raw))[0]
            raise TxAnomalyError(f"row {row}: feature {names[col]!r} is {raw[row, col]}; "
                                 "features must be finite")
        return raw
