"""The anomaly detector: scaler + Self-Organizing Map + threshold + explanations.

Score directions, stated once:

* :meth:`AnomalyDetector.anomaly_score` -- **higher = more anomalous**: the quantization error,
  the Euclidean distance of the scaled row to its best-matching unit (BMU).
* :meth:`AnomalyDetector.score_samples` -- scikit-learn's convention, **lower = more abnormal**:
  ``-anomaly_score``.
* :meth:`AnomalyDetector.decision_function` -- ``score_samples - offset_``: **negative =
  outlier**; :meth:`AnomalyDetector.predict` gives -1 for outliers and +1 for inliers.
* PyOD's attributes after ``fit``: ``decision_scores_`` (training anomaly scores),
  ``threshold_`` and ``labels_`` (**1 = anomaly**).

A row is an anomaly when its anomaly score is strictly greater than ``threshold_``.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(500, 3))
>>> det = AnomalyDetector(map_size="4x4", epochs=5).fit(X)
>>> det.predict([[0.0, 0.0, 0.0], [9.0, 9.0, 9.0]]).tolist()
[1, -1]
>>> det.is_anomaly([[9.0, 9.0, 9.0]]).tolist()
[True]
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from txanomaly.errors import NotFittedError, TxAnomalyError
from txanomaly.estimator import Estimator, check_random_state
from txanomaly.rowstore import BLOCK_ROWS, BlockStore, RowStore
from txanomaly.scaling import SCALERS, fit_scaler, fit_scaler_blocks
from txanomaly.som import (
    ALGORITHMS,
    COMPILED_MIN_ROWS,
    INITIALIZATIONS,
    SelfOrganizingMap,
    accumulate_bmu_sums,
    augment_rows,
    chunk_rows,
    exponential_decay,
    map_in_threads,
)
from txanomaly.threshold import QuantileThreshold, exceeds, risk_levels

logger = logging.getLogger(__name__)

SCALINGS = ("auto", *SCALERS)
#: Rows sampled for the silhouette score: sklearn's silhouette is O(n^2) in time and memory.
SILHOUETTE_SAMPLE = 5_000
#: ``partial_fit`` decays the radius and learning rate per sample with this time constant.
STREAM_DECAY_SAMPLES = 10_000
#: ``reference_width``'s default (docs/detection.md, step 8): 0.85 grid steps on the default
#: 10x10 map, the widest measured that cost no benchmark log more than 0.01 PR-AUC (mean over
#: three map seeds) while gaining card_terminal most.
REFERENCE_WIDTH = 0.085

#: ``fit_stored(sample="auto")``, the default of ``txanomaly train``: the batch map trains on
#: every row up to ``max(AUTO_SAMPLE_ROWS, AUTO_SAMPLE_PER_UNIT x units)`` rows, and on a
#: uniform sample of that many above it (docs/model.md: the map's prototypes are means over
#: thousands of rows each; on 10M labelled rows a 1M sample ranked as well as every row).
AUTO_SAMPLE_ROWS = 1_000_000
AUTO_SAMPLE_PER_UNIT = 10_000


def auto_sample(n_rows: int, n_units: int) -> int | None:
    """The rows ``sample="auto"`` trains the map on: ``None`` (every row) up to the cap,
    the cap above it."""
    cap = max(AUTO_SAMPLE_ROWS, AUTO_SAMPLE_PER_UNIT * int(n_units))
    return cap if n_rows > cap else None


class DetectorNotFittedError(NotFittedError, AttributeError):
    """Raised by a scoring method before ``fit``: txanomaly's kind, and a ValueError and an
    AttributeError as scikit-learn's ``NotFittedError`` is (which its checks expect)."""


# --------------------------------------------------------------------------- explanations
@dataclass(frozen=True)
class Explanation:
    """Why rows scored as they did: each feature's share of the squared distance to the BMU.

    Attributes
    ----------
    feature_names : list of str
    anomaly_score : (n,) array, the distance to the BMU in scaled space.
    bmu : (n,) int array, flat index of the best-matching unit.
    share : (n, d) array, each feature's share of the squared scaled distance (rows sum to 1,
        or to 0 for a row that sits exactly on its prototype).
    value : (n, d) array, the row's values in input (unscaled) units.
    prototype : (n, d) array, the BMU prototype in the same units.
    threshold : float, the model's threshold (:attr:`is_anomaly` applies the one rule,
        :func:`txanomaly.threshold.exceeds`).
    top : int, how many features :meth:`top_features` and :meth:`records` report.
    """

    feature_names: list[str]
    anomaly_score: np.ndarray
    bmu: np.ndarray
    share: np.ndarray
    value: np.ndarray
    prototype: np.ndarray
    threshold: float
    top: int = 3

    @property
    def is_anomaly(self) -> np.ndarray:
        """``(n,)`` flags: the score strictly above the threshold."""
        return exceeds(self.anomaly_score, self.threshold)

    @property
    def risk_level(self) -> np.ndarray:
        """``(n,)`` risk levels (:func:`txanomaly.threshold.risk_levels`)."""
        return risk_levels(self.anomaly_score, self.threshold)

    def top_features(self) -> np.ndarray:
        """``(n, top)`` feature indices by decreasing share (stable for ties)."""
        return np.argsort(-self.share, axis=1, kind="stable")[:, : self.top]

    def reasons(self, top_features: np.ndarray | None = None) -> list[list[dict[str, Any]]]:
        """Per row, the top features as ``{feature, share, value, prototype}`` dicts."""
        idx = self.top_features() if top_features is None else top_features
        names, share, value, proto = self.feature_names, self.share, self.value, self.prototype
        return [[{"feature": names[j], "share": float(share[i, j]), "value": float(value[i, j]),
                  "prototype": float(proto[i, j])} for j in row.tolist()]
                for i, row in enumerate(idx)]

    def records(self) -> list[dict[str, Any]]:
        """One dict per row: ``anomaly_score``, ``is_anomaly``, ``risk_level``, ``bmu`` and
        ``reasons`` (the top features)."""
        flags, levels = self.is_anomaly.tolist(), self.risk_level.tolist()
        return [{"anomaly_score": float(score), "is_anomaly": flag, "risk_level": level,
                 "bmu": int(bmu), "reasons": reasons}
                for score, flag, level, bmu, reasons in zip(
                    self.anomaly_score.tolist(), flags, levels, self.bmu.tolist(),
                    self.reasons(), strict=True)]


@dataclass(frozen=True)
class TopReasons:
    """:class:`Explanation`'s scores, BMUs and top features alone
    (:meth:`AnomalyDetector.explain_top`).

    Attributes
    ----------
    anomaly_score : (n,) array.
    bmu : (n,) int array.
    features : (n, top) int array, feature indices by decreasing share (ties: lower index),
        as :meth:`Explanation.top_features`.
    share : (n, top) array, their shares.
    threshold : float.
    """

    anomaly_score: np.ndarray
    bmu: np.ndarray
    features: np.ndarray
    share: np.ndarray
    threshold: float


# --------------------------------------------------------------------------- the detector
class AnomalyDetector(Estimator):
    """Self-Organizing Map anomaly detector with a scikit-learn / PyOD interface.

    Parameters
    ----------
    map_size : (int, int) or str, default (10, 10)
        Grid rows and columns, or a string such as ``"10x10"``.
    epochs : int, default 20
        Passes over the training data.
    algorithm : {"batch", "online", "seed"}, default "batch"
        See :mod:`txanomaly.som`. ``seed`` reproduces the prototype (randn init, winner-only
        updates, learning rate 0.1) and ignores ``init``, ``sigma`` and ``learning_rate``.
    contamination : float in (0, 0.5], default 0.05
        Share of training rows above the threshold; ``threshold_`` is the ``1 -
        contamination`` quantile of the training anomaly scores.
    threshold : float, optional
        A fixed anomaly-score threshold; overrides ``contamination``.
    scaling : {"auto", "standard", "robust", "none"}, default "auto"
        Per-feature scaling fitted on the training data (mean/std or median/IQR). ``auto``:
        inside a :class:`~txanomaly.pipeline.TransactionModel`, the scaling its feature set
        declares (``standard`` for the transaction sets, whose transforms and weights were
        chosen with it); on its own, ``robust``, which matched IsolationForest's mean
        ROC-AUC on the ADBench sets where ``standard`` fell 0.03 short (docs/model.md).
    init : {"pca", "sample"}, default "pca"
    sigma : float, optional
        Starting neighbourhood radius in grid units; default ``max(rows, cols) / 2``.
    sigma_end : float, default 1.0
        Final radius.
    learning_rate : float, default 0.5
        Starting learning rate of ``online`` (decays to 1 % of it); ``batch`` needs none.
    random_state : int, RandomState or None, default 0
    device : {"cpu", "cuda"}, default "cpu"
    batch_size : int, optional
        Rows per chunk of the batch kernel; default: sized to the cache for the map.
    feature_weights : sequence of float, optional
        Per-feature multipliers (> 0) applied after scaling: a feature's distance counts
        ``weight`` times. They are folded into ``scale_`` (``scale_ = spread / weight``), so
        explanations and the model file need nothing else. Default: all 1.
    feature_directions : sequence of {-1, 0, 1}, optional
        The risk direction of each feature: ``1`` = only a value above its best-matching
        prototype counts towards the score (a larger amount, a burst), ``-1`` = only a value
        below it (a shorter gap), ``0`` = both sides (the plain quantization error). The
        anomaly score is then the length of the part of the scaled deviation from the BMU that
        points to risk, and explanations share out that length. Default: all 0.
    min_unit_share : float in [0, 1], default 1.0
        Which units score: after training, a unit is a prototype of ordinary behaviour when
        at least ``min_unit_share`` times the average share of the training rows (``1 /
        units``) has it as their BMU; rows are scored (and explained) against the nearest such
        unit. A unit that only a few rows choose models those rows (rare, often the
        anomalies themselves: a fraud pattern frequent enough in the training window gets a
        prototype of its own), so measuring against it would call them ordinary. ``0``:
        every unit scores (the plain quantization error). The map itself is trained as
        always; ``active_units_`` says which units score (docs/detection.md).
    reference_width : float >= 0, default 0.085
        Rows are scored (and explained) against their BMU's *reference*: the mean of the
        scoring units' prototypes weighted by a Gaussian of their grid distance from the BMU
        (:meth:`SelfOrganizingMap.smoothed_prototypes`), whose width is this share of the
        map's longer side: 0.85 grid steps on a 10x10 map (the BMU's own prototype weighs 1,
        its four neighbours 0.50 each), 0.17 on a 2x2 map (no smoothing to speak of: there a
        neighbour is another kind of row), 1.7 on a 20x20 map. A prototype fitted closely to
        a few outlying rows (large amounts, say) then counts a little less than its
        neighbourhood (docs/detection.md, step 8). ``0``: the BMU's own prototype (models
        saved before this parameter load with 0). The BMU is the nearest scoring unit, as
        always.

    Attributes
    ----------
    som_ : SelfOrganizingMap
    center_, scale_ : (d,) arrays of the scaler.
    threshold_, offset_ : float; ``offset_ = -threshold_``.
    active_units_ : (units,) bool array; the units rows are scored against (``min_unit_share``).
    reference_ : (units, d) float32 array; each unit's reference (``reference_width``), scaled.
    decision_scores_ : (n,) training anomaly scores; ``labels_``: 1 = anomaly.
    training_summary_ : dict with rows, quantization_error, topographic_error, seconds...
    """

    _estimator_type = "outlier_detector"

    def __init__(self, map_size: tuple[int, int] | str = (10, 10), epochs: int = 20,
                 algorithm: str = "batch", contamination: float = 0.05,
                 threshold: float | None = None, scaling: str = "auto", init: str = "pca",
                 sigma: float | None = None, sigma_end: float = 1.0, learning_rate: float = 0.5,
                 random_state: Any = 0, device: str = "cpu", batch_size: int | None = None,
                 feature_weights: Any = None, feature_directions: Any = None,
                 min_unit_share: float = 1.0, reference_width: float = REFERENCE_WIDTH):
        self.map_size = map_size
        self.epochs = epochs
        self.algorithm = algorithm
        self.contamination = contamination
        self.threshold = threshold
        self.scaling = scaling
        self.init = init
        self.sigma = sigma
        self.sigma_end = sigma_end
        self.learning_rate = learning_rate
        self.random_state = random_state
        self.device = device
        self.batch_size = batch_size
        self.feature_weights = feature_weights
        self.feature_directions = feature_directions
        self.min_unit_share = min_unit_share
        self.reference_width = reference_width

    # ------------------------------------------------------------------ fitting
    def fit(self, X: Any, y: Any = None, callback: Any = None) -> AnomalyDetector:
        """Fit the scaler, train the map and set the threshold. ``y`` is ignored.

        ``callback(epoch, epochs)`` is called after each epoch (progress bars).
        """
        rows, cols = self.check_params()
        X = _validate_data(self, X, dtype=[np.float64, np.float32], ensure_min_samples=2)
        started = time.perf_counter()
        self.center_, self.scale_ = self._fit_scaler(X)
        Xs = self._to_tensor(X)
        self.som_ = self._new_som(rows, cols, X.shape[1])
        self.som_.initialize(Xs, "randn" if self.algorithm == "seed" else self.init)
        self.som_.fit(Xs, algorithm=self.algorithm, epochs=self.epochs,
                      sigma=self._sigma(rows, cols), sigma_end=self.sigma_end,
                      learning_rate=self.learning_rate,
                      learning_rate_end=self.learning_rate / 100,
                      chunk_size=self.batch_size, callback=callback)
        map_distances, far = self._set_active_units(Xs)
        self._set_threshold(self._scores(Xs)[0])
        # A later partial_fit fine-tunes: its radius and learning rate start decayed.
        self.samples_seen_ = len(Xs) * self.epochs
        self.training_summary_ = self._summary(
            len(Xs), float(map_distances.double().mean()), far / len(Xs),
            time.perf_counter() - started)
        self.training_summary_["map_rows"] = len(Xs)
        logger.info("trained %s", self.training_summary_)
        return self

    def fit_stored(self, store: RowStore, transform: Callable[[np.ndarray], np.ndarray]
                   | None = None, callback: Any = None, sample: int | str | None = None,
                   sums: tuple[np.ndarray, int] | None = None) -> AnomalyDetector:
        """:meth:`fit` on rows that need not fit in memory: those of ``store``, made the
        detector's inputs block by block by ``transform`` (default: as they are).

        The scaler, the scoring units and the threshold come from every row (exact: the
        scores are held in memory, 8 bytes a row, for the quantile). The scaled rows go to
        a float32 file next to ``store``; the ``batch`` map reads it once an epoch, one
        block at a time, and ends bit for bit where :meth:`fit` on the same rows in memory
        ends when its rows come column-major, as a DataFrame's do (row-major rows: the
        scaler's sums may differ in the last bits, ~1e-15 relative, in another order).
        ``online`` and ``seed`` load the scaled rows (4 bytes a value). ``sample``:
        train the map on a uniform random sample of that many rows (without replacement,
        drawn from the map's seed, kept in input order) held in memory instead of on every
        row. ``sample="auto"``: every row up to :func:`auto_sample`'s cap (1,000,000 rows,
        or 10,000 per unit if more), a sample of that many above it; the training summary's
        ``map_rows`` says how many the map trained on. The inputs must be float64 (the
        transform's output is converted). ``sums``: the ``standard`` scaler's first pass
        over the inputs, made as they were written (:class:`~txanomaly.scaling.BlockSums`;
        the other scalings ignore it).
        """
        rows, cols = self.check_params()
        n, d = store.n_rows, store.n_columns
        if isinstance(sample, str):
            if sample != "auto":
                raise ValueError(f"sample must be 'auto', None or an integer >= 2, got "
                                 f"{sample!r}")
            sample = auto_sample(n, rows * cols)
        if sample is not None:
            _check_int("sample", sample, 2)
        if n < 2:
            raise ValueError(f"Found array with {n} sample(s) while a minimum of 2 is "
                             "required.")
        started = time.perf_counter()
        self.n_features_in_ = d
        self.__dict__.pop("feature_names_in_", None)

        def prepared(numbered: tuple[int, np.ndarray]) -> np.ndarray:
            number, block = numbered
            # Column-major, as a DataFrame's values come to fit: the column sums then add in
            # the same order (NumPy sums a contiguous column pairwise).
            x = np.asfortranarray(block if transform is None else transform(block),
                                  dtype=np.float64)
            _check_finite_rows(x, number * BLOCK_ROWS)
            return x

        def inputs() -> Iterator[np.ndarray]:
            # Prepared (and the scaler's sums made) two blocks at a time, used in order.
            return map_in_threads(prepared, enumerate(store.blocks(BLOCK_ROWS, order="F")))

        self.center_, self.scale_ = self._weighted(*fit_scaler_blocks(
            inputs, d, self._scaler_kind(), sums=sums, map_blocks=map_in_threads))
        self.som_ = self._new_som(rows, cols, d)
        step = self.batch_size or chunk_rows(self.som_.n_units, self.device)
        block = step * max(1, BLOCK_ROWS // step)  # a multiple of the kernel's chunk
        # The scaled rows as the batch kernel reads them, [x.T; |x|^2; 1] (augment_rows),
        # built once: rebuilding them every epoch cost a fifth of the training time.
        scaled = BlockStore(store.path.with_name(store.path.name + ".scaled"), np.float32)

        def augmented(raw: np.ndarray) -> np.ndarray:
            x = np.asarray(raw if transform is None else transform(raw), dtype=np.float64)
            return augment_rows(torch.from_numpy(self._scaled(x))).numpy()

        try:
            # Finite: the scaler's pass checked them. Two blocks at a time (NumPy and
            # PyTorch let go of the GIL), appended in order.
            for aug in map_in_threads(augmented, store.blocks(block)):
                scaled.append(aug)
            seen = self._train_stored(scaled, n, step, sample, callback)
            self._finish_stored(scaled, n, started)
        finally:
            scaled.path.unlink(missing_ok=True)
        self.samples_seen_ = seen * self.epochs
        self.training_summary_["map_rows"] = seen
        logger.info("trained %s", self.training_summary_)
        return self

    def _train_stored(self, scaled: BlockStore, n: int, step: int, sample: int | None,
                      callback: Any) -> int:
        """Initialise and train the map on the scaled rows; returns the rows it trained on."""
        rows, cols = self.som_.rows, self.som_.cols
        init = "randn" if self.algorithm == "seed" else self.init
        options = {"sigma": self._sigma(rows, cols), "sigma_end": self.sigma_end}
        if sample is None and self.algorithm == "batch":
            picked = self.som_.initial_rows(n, init)
            self.som_.initialize_from(None if picked is None else torch.from_numpy(
                _take_rows(scaled, picked.numpy())), init)
            for epoch in range(self.epochs):
                sigma = exponential_decay(options["sigma"], self.sigma_end, epoch, self.epochs)
                self.som_.apply_bmu_sums(self._epoch_sums(scaled, step), sigma)
                if callback is not None:
                    callback(epoch + 1, self.epochs)
            return n
        if sample is not None and sample < n:
            rng = np.random.default_rng(int(torch.randint(
                2**62, (1,), generator=self.som_.generator)))
            X = _take_rows(scaled, np.sort(rng.choice(n, size=sample, replace=False)))
        else:
            X = np.concatenate([_rows_of(aug) for aug in scaled])
        Xs = torch.from_numpy(X).to(self.device)
        self.som_.initialize(Xs, init)
        self.som_.fit(Xs, algorithm=self.algorithm, epochs=self.epochs, **options,
                      learning_rate=self.learning_rate,
                      learning_rate_end=self.learning_rate / 100,
                      chunk_size=self.batch_size, callback=callback)
        return len(Xs)

    def _epoch_sums(self, scaled: BlockStore, step: int) -> torch.Tensor:
        """One batch epoch's per-BMU sums over the stored blocks: those of one
        :meth:`SelfOrganizingMap.batch_epoch` over all the rows, bit for bit (each block is
        a whole number of the kernel's chunks)."""
        sums = None
        for aug in scaled:
            sums = accumulate_bmu_sums(torch.from_numpy(aug).to(self.device),
                                       self.som_.weights, step, out=sums)
        assert sums is not None
        return sums

    def _finish_stored(self, scaled: BlockStore, n: int, started: float) -> None:
        """Scoring units, threshold and summary from every scaled row, a block at a time:
        :meth:`fit`'s closing steps."""
        hits = np.zeros(self.som_.n_units, dtype=np.int64)
        qe_sum, far = 0.0, 0
        for aug in scaled:
            Xs = torch.from_numpy(_rows_of(aug)).to(self.device)
            distances, bmu, block_far = self.som_.bmu_distances_and_far(Xs)
            hits += torch.bincount(bmu, minlength=self.som_.n_units).cpu().numpy()
            qe_sum += float(distances.double().sum())
            far += block_far
        self._use_units(hits >= self.min_unit_share * n / hits.size)
        scores = np.empty(n, dtype=np.float64)
        first = 0
        for aug in scaled:
            Xs = torch.from_numpy(_rows_of(aug)).to(self.device)
            scores[first:first + len(Xs)] = self._scores(Xs)[0]
            first += len(Xs)
        self._set_threshold(scores)
        self.training_summary_ = self._summary(n, qe_sum / n, far / n,
                                               time.perf_counter() - started)

    def partial_fit(self, X: Any, y: Any = None) -> AnomalyDetector:
        """Online update on one chunk of a stream (``algorithm`` is treated as ``online``).

        The first chunk fits the scaler (kept fixed afterwards) and initialises the map. The
        radius and learning rate decay with the number of samples seen. Without a fixed
        ``threshold`` the threshold is re-estimated on each chunk's scores.
        """
        rows, cols = self.check_params()
        first = not hasattr(self, "som_")
        X = _validate_data(self, X, dtype=[np.float64, np.float32], reset=first,
                           ensure_min_samples=2 if first else 1)
        if first:
            self.center_, self.scale_ = self._fit_scaler(X)
            self.som_ = self._new_som(rows, cols, X.shape[1])
            self.som_.initialize(self._to_tensor(X), self.init)
            self.samples_seen_ = 0
        Xs = self._to_tensor(X)
        seen = self.samples_seen_ + np.arange(len(Xs), dtype=np.float64)
        decay = 1.0 / (1.0 + seen / STREAM_DECAY_SAMPLES)
        sigmas = np.maximum(self._sigma(rows, cols) * decay, self.sigma_end)
        self.som_.online_pass(Xs, sigmas, self.learning_rate * decay)
        self.samples_seen_ += len(Xs)
        self._set_active_units(Xs)
        self._set_threshold(self._scores(Xs)[0])
        return self

    def _fit_scaler(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The scaler's (center, scale), with ``feature_weights`` folded into the scale."""
        return self._weighted(*fit_scaler(X, self._scaler_kind()))

    def _scaler_kind(self) -> str:
        return "robust" if self.scaling == "auto" else self.scaling

    def _weighted(self, center: np.ndarray, scale: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
        """A fitted scaler with ``feature_weights`` folded into the scale (sets
        ``directions_``, checked against the number of features)."""
        self.directions_ = self._checked_directions(scale.size)
        if self.feature_weights is None:
            return center, scale
        weights = np.asarray(self.feature_weights, dtype=np.float64)
        if weights.shape != scale.shape:
            raise ValueError(f"feature_weights has {weights.size} value(s); X has "
                             f"{scale.size} feature(s)")
        return center, scale / weights

    def check_params(self) -> tuple[int, int]:
        """Validate the parameters (``fit`` does this too); returns the map's (rows, cols).

        Raises ValueError naming the parameter and its allowed values.
        """
        rows, cols = parse_map_size(self.map_size)
        _check_int("epochs", self.epochs, 1)
        _check_choice("algorithm", self.algorithm, ALGORITHMS)
        _check_choice("scaling", self.scaling, SCALINGS)
        _check_choice("init", self.init, tuple(i for i in INITIALIZATIONS if i != "randn"))
        if not (isinstance(self.contamination, float | int) and 0 < self.contamination <= 0.5):
            raise ValueError(f"contamination must be in (0, 0.5], got {self.contamination!r}")
        if self.threshold is not None and not np.isfinite(self.threshold):
            raise ValueError(f"threshold must be a finite number or None, got {self.threshold!r}")
        for name in ("sigma_end", "learning_rate"):
            _check_positive(name, getattr(self, name))
        if self.sigma is not None:
            _check_positive("sigma", self.sigma)
        if self.batch_size is not None:
            _check_int("batch_size", self.batch_size, 1)
        _check_device(self.device)
        share = self.min_unit_share
        if not (isinstance(share, float | int) and not isinstance(share, bool)
                and 0 <= share <= 1):
            raise ValueError(f"min_unit_share must be a number in [0, 1], got {share!r}")
        sigma = self.reference_width
        if not (isinstance(sigma, float | int) and not isinstance(sigma, bool)
                and 0 <= sigma < float("inf")):
            raise ValueError(f"reference_width must be a finite number >= 0, got {sigma!r}")
        if self.feature_weights is not None:
            weights = np.asarray(self.feature_weights, dtype=np.float64)
            if weights.ndim != 1 or not (np.all(np.isfinite(weights)) and np.all(weights > 0)):
                raise ValueError("feature_weights must be a sequence of finite numbers > 0, "
                                 f"got {self.feature_weights!r}")
        self._directions()
        return rows, cols

    def _directions(self) -> np.ndarray | None:
        """``feature_directions`` as a float array of -1/0/1, or None when all are 0."""
        if self.feature_directions is None:
            return None
        values = np.asarray(self.feature_directions)
        ok = values.ndim == 1 and values.dtype.kind in "iuf" and np.isin(values, (-1, 0, 1)).all()
        if not ok:
            raise ValueError("feature_directions must be a sequence of -1, 0 or 1, got "
                             f"{self.feature_directions!r}")
        return values.astype(np.float64) if values.any() else None

    def _checked_directions(self, n_features: int) -> np.ndarray | None:
        """:meth:`_directions` for ``n_features`` features: what fit and restore keep as
        ``directions_``, so scoring does not rebuild it on every call."""
        directions = self._directions()
        if directions is not None and directions.size != n_features:
            raise ValueError(f"feature_directions has {directions.size} value(s); X has "
                             f"{n_features} feature(s)")
        return directions

    def initial_weights(self, X: Any) -> np.ndarray:
        """The prototypes ``fit(X)`` started from, in scaled space: a ``(units, d)`` array.

        Rebuilt with the same seed, scaling and initialisation (nothing extra is kept in the
        model file); equal to the real starting point when ``X`` are the training rows.
        Reports use it to show the map before and after training.
        """
        _check_fitted(self)
        X = _validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        som = self._new_som(self.som_.rows, self.som_.cols, self.n_features_in_)
        som.initialize(self._to_tensor(X), "randn" if self.algorithm == "seed" else self.init)
        return som.weights.detach().cpu().numpy()

    def _sigma(self, rows: int, cols: int) -> float:
        sigma = self.sigma if self.sigma is not None else max(rows, cols) / 2.0
        return float(max(sigma, self.sigma_end))

    def _new_som(self, rows: int, cols: int, n_features: int) -> SelfOrganizingMap:
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        return SelfOrganizingMap(rows, cols, n_features, seed=seed, device=self.device)

    def _set_active_units(self, Xs: torch.Tensor) -> tuple[torch.Tensor, int]:
        """``active_units_``: the units at least ``min_unit_share`` times the average share
        of the rows ``Xs`` choose as their BMU (over every unit). Never empty: the most
        chosen unit has at least the average share. Returns the rows' distances to their BMU
        over every unit (the map's own quantization error: :meth:`_summary`) and how many
        rows' two nearest units are not neighbours (its topographic error)."""
        distances, bmu, far = self.som_.bmu_distances_and_far(Xs)
        hits = torch.bincount(bmu, minlength=self.som_.n_units).cpu().numpy()
        self._use_units(hits >= self.min_unit_share * len(Xs) / hits.size)
        return distances, far

    def _use_units(self, active: np.ndarray) -> None:
        self.active_units_ = np.asarray(active, dtype=bool)
        # None: every unit scores (the fast path, no selection).
        self._units = None if self.active_units_.all() else torch.from_numpy(
            np.flatnonzero(self.active_units_)).to(self.som_.device)
        sigma = float(self.reference_width) * max(self.som_.rows, self.som_.cols)
        self._reference = self.som_.smoothed_prototypes(sigma, self._units)
        self.reference_ = np.ascontiguousarray(self._reference.cpu().numpy())

    @property
    def _plain_distance(self) -> bool:
        """Whether the score is the plain distance to the BMU's own prototype (no directions,
        no smoothing): then the BMU search's distances are the scores."""
        return self.directions_ is None and not self.reference_width > 0

    def _signs(self) -> np.ndarray:
        """``directions_``, or all 0 (both sides count) when there are none."""
        return (self.directions_ if self.directions_ is not None
                else np.zeros(self.n_features_in_))

    def _set_threshold(self, scores: np.ndarray) -> None:
        self.decision_scores_ = scores
        if self.threshold is not None:
            rule = QuantileThreshold(float(self.threshold))
        else:
            rule = QuantileThreshold.fit(scores, float(self.contamination))
        self.threshold_ = rule.value
        self.offset_ = -rule.value
        self.labels_ = rule.flags(scores).astype(np.int64)

    def _summary(self, rows: int, qe: float, te: float, seconds: float) -> dict[str, Any]:
        """``qe``: the rows' mean distance to their BMU over every unit, whichever units
        score (the map's own quantization error); ``te``: the topographic error."""
        return {"rows": rows, "quantization_error": qe, "topographic_error": te,
                "seconds": round(seconds, 3), "algorithm": self.algorithm,
                "epochs": self.epochs, "threshold": self.threshold_,
                "scoring_units": int(self.active_units_.sum()),
                "score_quantiles": _quantiles(self.decision_scores_)}

    # ------------------------------------------------------------------ scoring
    def anomaly_score(self, X: Any) -> np.ndarray:
        """Distance of each scaled row to its BMU (its risk-directed part when
        ``feature_directions`` is given). Higher = more anomalous."""
        return self._scores(self._transform(X))[0]

    def score_samples(self, X: Any) -> np.ndarray:
        """``-anomaly_score(X)``: lower = more abnormal (scikit-learn convention)."""
        return -self.anomaly_score(X)

    def decision_function(self, X: Any) -> np.ndarray:
        """``score_samples(X) - offset_``: negative = outlier."""
        return self.score_samples(X) - self.offset_

    def predict(self, X: Any) -> np.ndarray:
        """+1 for inliers, -1 for outliers."""
        return np.where(self.decision_function(X) < 0, -1, 1)

    def fit_predict(self, X: Any, y: Any = None, **kwargs: Any) -> np.ndarray:
        """``fit(X).predict(X)`` (scikit-learn's ``OutlierMixin``)."""
        return self.fit(X, **kwargs).predict(X)

    def is_anomaly(self, X: Any) -> np.ndarray:
        """Boolean flags: anomaly score strictly above ``threshold_``."""
        return exceeds(self.anomaly_score(X), self.threshold_)

    def bmu(self, X: Any) -> np.ndarray:
        """Flat index of each row's best-matching unit (``divmod(bmu, cols)`` = grid cell)."""
        return self._scores(self._transform(X))[1]

    def _scores(self, Xs: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(anomaly scores, BMU indices) of scaled rows: the distance to the BMU, or the
        length of its risk-directed part (:meth:`_directed`)."""
        if self._plain_distance:
            dist, bmu = self.som_.bmu_distances(Xs, units=self._units)
            return dist.double().cpu().numpy(), bmu.cpu().numpy()
        bmu = self.som_.best_units(Xs, units=self._units)
        if len(Xs) >= COMPILED_MIN_ROWS:
            # Compiled, the same values: no rows x features float64 temporaries.
            from txanomaly.som_kernels import directed_scores

            scores = np.empty(len(Xs))
            directed_scores(np.ascontiguousarray(Xs.cpu().numpy()), self.reference_,
                            np.ascontiguousarray(bmu.cpu().numpy()), self._signs(), scores)
            return scores, bmu.cpu().numpy()
        deviation = self._directed(Xs.double().cpu().numpy()
                                   - self._reference[bmu].double().cpu().numpy())
        return np.sqrt((deviation * deviation).sum(1)), bmu.cpu().numpy()

    def _directed(self, diff: np.ndarray) -> np.ndarray:
        """A scaled row minus its BMU prototype, keeping per feature only the side that
        points to risk (``feature_directions``): ``max(d * r, 0)`` for d = +-1, ``r`` for 0."""
        directions = self.directions_
        if directions is None:
            return diff
        return np.where(directions == 0, diff, np.maximum(diff * directions, 0.0))

    def _transform(self, X: Any) -> torch.Tensor:
        return self._to_tensor(self._validated(X))

    def _validated(self, X: Any) -> np.ndarray:
        _check_fitted(self)
        return np.asarray(_validate_data(self, X, dtype=[np.float64, np.float32],
                                         reset=False))

    def _to_tensor(self, X: np.ndarray) -> torch.Tensor:
        """Scaled float32 copy of ``X`` on the device."""
        return torch.from_numpy(self._scaled(X)).to(self.device)

    def _scaled(self, X: np.ndarray, chunk: int = 16_384) -> np.ndarray:
        """``(X - center_) / scale_`` as float32, computed in ``X``'s dtype.

        NumPy, not torch: on a one-row request the torch version's tensor set-up cost ~40 us,
        the arithmetic under 2 us. Chunks bound the full-precision temporaries: a few MB, so
        the allocator reuses them (temporaries of a whole 262,144-row block were fresh pages
        each time, zeroed by the kernel: a tenth of ``train``'s CPU went to zeroing pages).
        """
        X = np.asarray(X)
        center = self.center_.astype(X.dtype, copy=False)
        scale = self.scale_.astype(X.dtype, copy=False)
        out = np.empty(X.shape, dtype=np.float32)
        for start in range(0, len(X), chunk):
            part = slice(start, start + chunk)
            out[part] = (X[part] - center) / scale
        return out

    # ------------------------------------------------------------------ explanations
    def explain(self, X: Any, top: int = 3, check_input: bool = True) -> Explanation:
        """Scores, flags and each feature's share of the squared scaled distance to the BMU.

        ``value`` and ``prototype`` are in the detector's input (unscaled) units. This is
        the one scoring computation: :class:`~txanomaly.pipeline.TransactionModel` and
        through it every report, evaluation and service verdict call it.

        ``check_input=False`` skips scikit-learn's input validation (which costs about twice
        the arithmetic on a one-row call); the caller then guarantees a finite float64
        ``(n, n_features_in_)`` array, as ``TransactionModel`` does after its own check.
        """
        _check_int("top", top, 1)
        if check_input:
            X = self._validated(X)
        else:
            _check_fitted(self)
        scaled = self._scaled(X)
        Xs = torch.from_numpy(scaled).to(self.device)
        if self._plain_distance:
            dist, bmu = self.som_.bmu_distances(Xs, units=self._units)
        else:  # the score is the deviation from the reference: no distances needed
            bmu = self.som_.best_units(Xs, units=self._units)
        proto_scaled = self._reference[bmu].double().cpu().numpy()
        diff = self._directed(scaled.astype(np.float64) - proto_scaled)
        diff_sq = diff * diff
        total = diff_sq.sum(1, keepdims=True)
        score = (dist.double().cpu().numpy() if self._plain_distance
                 else np.sqrt(total[:, 0]))
        share = np.divide(diff_sq, total, out=np.zeros_like(diff_sq), where=total > 0)
        names = self._feature_names()
        return Explanation(
            feature_names=names, anomaly_score=score,
            bmu=bmu.cpu().numpy(), share=share,
            value=np.asarray(X, dtype=np.float64),
            prototype=proto_scaled * self.scale_ + self.center_, threshold=self.threshold_,
            top=min(top, len(names)))

    def explain_top(self, X: np.ndarray, top: int = 3) -> TopReasons:
        """:meth:`explain`'s scores, BMUs and top features with their shares (the same
        values, bit for bit), without its ``rows x features`` arrays: what a large file's
        scoring needs (:meth:`TransactionModel.score_rows`). ``X``: a finite float64
        ``(n, n_features_in_)`` array (unchecked, as ``explain(check_input=False)``)."""
        _check_int("top", top, 1)
        _check_fitted(self)
        X = np.asarray(X)
        if len(X) < COMPILED_MIN_ROWS:
            found = self.explain(X, top=top, check_input=False)
            idx = found.top_features()
            return TopReasons(found.anomaly_score, found.bmu, idx,
                              np.take_along_axis(found.share, idx, axis=1), found.threshold)
        from txanomaly.som_kernels import explain_rows

        scaled = self._scaled(X)
        Xs = torch.from_numpy(scaled).to(self.device)
        if self._plain_distance:
            dist, bmu_t = self.som_.bmu_distances(Xs, units=self._units)
        else:
            bmu_t = self.som_.best_units(Xs, units=self._units)
        bmu = np.ascontiguousarray(bmu_t.cpu().numpy())
        k = min(top, self.n_features_in_)
        score = np.empty(len(X))
        idx, share = np.empty((len(X), k), dtype=np.int64), np.empty((len(X), k))
        explain_rows(scaled, self.reference_, bmu, self._signs(), score, idx, share)
        if self._plain_distance:
            score = dist.double().cpu().numpy()
        return TopReasons(score, bmu, idx, share, self.threshold_)

    def prototypes(self) -> np.ndarray:
        """``(units, d)`` each unit's reference (its prototype smoothed over its neighbours,
        ``reference_width``) in the detector's input (unscaled) units, float64: the values
        :meth:`explain` reports as ``prototype`` for a row of each unit."""
        _check_fitted(self)
        return self._reference.double().cpu().numpy() * self.scale_ + self.center_

    def _feature_names(self) -> list[str]:
        """Input feature names (``x0``, ``x1``... when fitted on a plain array)."""
        if hasattr(self, "feature_names_in_"):
            return [str(n) for n in self.feature_names_in_]
        return [f"x{i}" for i in range(self.n_features_in_)]

    # ------------------------------------------------------------------ map quality
    def quantization_error(self, X: Any) -> float:
        """Mean anomaly score of ``X``."""
        return float(self.anomaly_score(X).mean())

    def topographic_error(self, X: Any) -> float:
        """Share of rows whose two nearest units are not grid neighbours."""
        Xs = self._transform(X)
        return self.som_.topographic_error(Xs)

    def u_matrix(self) -> np.ndarray:
        """``(rows, cols)`` mean distance of each prototype to its grid neighbours."""
        _check_fitted(self)
        return self.som_.u_matrix().cpu().numpy()

    def hit_counts(self, X: Any) -> np.ndarray:
        """``(rows, cols)`` number of rows of ``X`` mapped to each unit."""
        Xs = self._transform(X)
        return self.som_.hit_counts(Xs).cpu().numpy()

    def silhouette(self, X: Any, sample_size: int = SILHOUETTE_SAMPLE) -> float:
        """Silhouette of the BMU clusters in scaled space (on a seeded sample of rows).

        NaN when fewer than two units are hit.
        """
        Xs = self._transform(X)
        bmu = self.som_.bmu_distances(Xs)[1].cpu().numpy()
        if len(np.unique(bmu)) < 2 or len(np.unique(bmu)) >= len(bmu):
            return float("nan")
        size = min(sample_size, len(bmu))
        from sklearn.metrics import silhouette_score  # scikit-learn only where it is used

        return float(silhouette_score(Xs.cpu().numpy(), bmu, sample_size=size,
                                      random_state=check_random_state(self.random_state)))

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags

    # ------------------------------------------------------------------ persistence support
    def restore(self, weights: np.ndarray, center: np.ndarray, scale: np.ndarray,
                threshold: float, feature_names: Sequence[str] | None = None,
                training_summary: dict[str, Any] | None = None,
                active_units: np.ndarray | None = None) -> AnomalyDetector:
        """Rebuild a fitted detector from saved arrays (used by :mod:`txanomaly.artifact`).

        Refuses (ValueError naming the array or the threshold) what no fit produces and what
        would silently change verdicts: a non-finite prototype or scaler value, a scale <= 0,
        a threshold that is not a finite number > 0 (:func:`check_threshold`), an
        ``active_units`` mask of another length or with no unit (None: every unit scores, as
        in models saved before ``min_unit_share``).
        """
        rows, cols = self.check_params()
        weights = np.asarray(weights, dtype=np.float32)
        if weights.shape != (rows * cols, len(center)) or len(center) != len(scale):
            raise TxAnomalyError(
                f"saved weights have shape {weights.shape}, expected ({rows * cols}, "
                f"{len(center)}) for a {rows}x{cols} map")
        center, scale = np.asarray(center, dtype=np.float64), np.asarray(scale, dtype=np.float64)
        for name, values in (("som.weights", weights), ("scaler.center", center),
                             ("scaler.scale", scale)):
            _check_finite_array(name, values)
        if not np.all(scale > 0):
            bad = int(np.argmin(scale > 0))
            raise ValueError(f"scaler.scale must be > 0, got {float(scale[bad])!r} at "
                             f"feature {bad}")
        threshold = check_threshold(threshold)
        active = (np.ones(rows * cols, dtype=bool) if active_units is None
                  else np.asarray(active_units))
        if active.shape != (rows * cols,) or active.dtype.kind not in "biu" or not (
                np.isin(active, (0, 1)).all() and active.any()):
            raise ValueError(f"som.active_units must be {rows * cols} values of 0 or 1, at "
                             "least one 1")
        self.center_, self.scale_ = center, scale
        self.directions_ = self._checked_directions(len(center))
        self.n_features_in_ = len(self.center_)
        if feature_names is not None:
            self.feature_names_in_ = np.asarray(list(feature_names), dtype=object)
        self.som_ = self._new_som(rows, cols, len(center))
        self.som_.weights.copy_(torch.from_numpy(weights))
        self._use_units(active.astype(bool))
        self.threshold_ = threshold
        self.offset_ = -self.threshold_
        self.training_summary_ = dict(training_summary or {})
        return self


# --------------------------------------------------------------------------- helpers
def parse_map_size(map_size: Any) -> tuple[int, int]:
    """``(rows, cols)`` from ``(10, 10)``, ``[10, 10]`` or ``"10x10"``.

    >>> parse_map_size("12x8"), parse_map_size((3, 4))
    ((12, 8), (3, 4))
    """
    value = map_size
    if isinstance(value, str):
        parts = value.lower().replace(" ", "").split("x")
        try:
            value = tuple(int(p) for p in parts)
        except ValueError:
            value = ()
    if (isinstance(value, tuple | list) and len(value) == 2
            and all(isinstance(v, int | np.integer) and v >= 1 for v in value)):
        return int(value[0]), int(value[1])
    raise ValueError(f"map_size must be two positive integers such as (10, 10) or '10x10', "
                     f"got {map_size!r}")


def check_threshold(threshold: Any) -> float:
    """``threshold`` as a float; ValueError unless it is a finite number > 0.

    A restored model's threshold: NaN or infinity flags nothing (``score > nan`` is always
    false), and 0 or less flags every row, so none of them is a model to serve.

    >>> check_threshold(2)
    2.0
    >>> check_threshold(float("nan"))
    Traceback (most recent call last):
    ValueError: threshold must be a finite number > 0, got nan
    """
    number = (isinstance(threshold, int | float | np.integer | np.floating)
              and not isinstance(threshold, bool | np.bool_))
    if not (number and 0 < threshold < np.inf):
        raise ValueError(f"threshold must be a finite number > 0, got {threshold!r}")
    return float(threshold)


def _check_finite_array(name: str, values: np.ndarray) -> None:
    if not np.all(np.isfinite(values)):
        where = np.argwhere(~np.isfinite(values))[0].tolist()
        raise ValueError(f"{name} must be finite, got {float(values[tuple(where)])!r} at {where}")


def _quantiles(scores: np.ndarray) -> dict[str, float]:
    qs = np.quantile(scores, [0.5, 0.95, 0.99, 1.0])
    return {"p50": float(qs[0]), "p95": float(qs[1]), "p99": float(qs[2]), "max": float(qs[3])}


def _rows_of(aug: np.ndarray) -> np.ndarray:
    """The ``(rows, d)`` scaled rows of an augmented block (:func:`augment_rows`)."""
    return np.ascontiguousarray(aug[:-2].T)


def _take_rows(scaled: BlockStore, indices: np.ndarray) -> np.ndarray:
    """The scaled rows at ``indices`` (in that order) from the augmented blocks, one pass."""
    order = np.argsort(indices, kind="stable")
    wanted = indices[order]
    out = np.empty((len(indices), scaled.shapes[0][0] - 2), dtype=np.float32)
    first = lo = 0
    for aug in scaled:
        hi = int(np.searchsorted(wanted, first + aug.shape[1], side="left"))
        out[order[lo:hi]] = aug[:-2, wanted[lo:hi] - first].T
        first, lo = first + aug.shape[1], hi
    return out


def _check_finite_rows(X: np.ndarray, first: int) -> None:
    """ValueError naming the first row (counted from 0 over the whole input, ``first`` being
    this block's first row) and column of ``X`` that is not finite."""
    if not np.isfinite(X).all():
        row, col = np.argwhere(~np.isfinite(X))[0]
        raise ValueError(f"row {first + int(row)}: input {int(col)} is {X[row, col]}; "
                         "inputs must be finite")


def _check_fitted(det: AnomalyDetector) -> None:
    if not (hasattr(det, "som_") and hasattr(det, "threshold_")):
        raise _not_fitted_kind()(f"this {type(det).__name__} is not fitted yet; call fit first")


_SKLEARN_KIND: list[type[DetectorNotFittedError]] = []


def _not_fitted_kind() -> type[DetectorNotFittedError]:
    """:class:`DetectorNotFittedError`, also scikit-learn's ``NotFittedError`` once
    scikit-learn is loaded (its checks and meta-estimators catch that one; importing it just
    for the exception would cost every process the second and a half scikit-learn takes)."""
    sklearn_exceptions = sys.modules.get("sklearn.exceptions")
    if sklearn_exceptions is None:
        return DetectorNotFittedError
    if not _SKLEARN_KIND:
        _SKLEARN_KIND.append(type("DetectorNotFittedError", (
            DetectorNotFittedError, sklearn_exceptions.NotFittedError), {
                "__module__": __name__, "__doc__": DetectorNotFittedError.__doc__}))
    return _SKLEARN_KIND[0]


def _validate_data(det: AnomalyDetector, X: Any, **options: Any) -> Any:
    """scikit-learn's ``validate_data`` (imported here, when an array comes in: ``train`` and
    ``score`` never need it, and importing scikit-learn costs as much as PyTorch)."""
    from sklearn.utils.validation import validate_data

    return validate_data(det, X, **options)


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, float | int) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")


def _check_device(device: Any) -> None:
    if device not in ("cpu", "cuda") and not (isinstance(device, str)
                                             and device.startswith("cuda:")):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise TxAnomalyError(f"device={device!r} was asked for but CUDA is not available here")


__all__ = ["AnomalyDetector", "Explanation", "QuantileThreshold", "TopReasons",
           "parse_map_size"]
