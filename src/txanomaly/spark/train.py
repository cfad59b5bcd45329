"""Training on Spark: the batch SOM as one distributed reduction per epoch.

The steps of :meth:`txanomaly.pipeline.TransactionModel.fit`, each on the cluster:

1. the fitted transforms' scales (the median of a column's non-zero ``|x|``) and the
   scaler's statistics (``standard``: the mean, then the mean squared deviation, as sums per
   partition added on the driver; ``robust``: exact quantiles);
2. the map's initial prototypes from the rows a single-machine fit would read
   (:meth:`SelfOrganizingMap.initial_rows <txanomaly.som.SelfOrganizingMap.initial_rows>`,
   the same generator draws), fetched by their place in ``_index`` order;
3. each epoch, every partition computes the batch kernel's per-unit augmented sums
   (:func:`txanomaly.som.accumulate_bmu_sums`) against the current prototypes, the driver
   adds them up and applies the same update
   (:meth:`~txanomaly.som.SelfOrganizingMap.apply_bmu_sums`);
4. the training scores, and the threshold as their exact ``1 - contamination`` quantile
   (:mod:`txanomaly.spark.quantiles`: equal to ``np.quantile`` on the same scores).

Only the order of additions differs from one machine: the sums of step 1 and 3 are added per
partition, then across partitions, where one machine adds in one sweep. docs/spark.md states
what that does to the model (the tolerance the tests hold it to).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from txanomaly.errors import TxAnomalyError
from txanomaly.features.spec import FITTED_TRANSFORMS, FeatureSet, get_feature_set
from txanomaly.spark import quantiles as qx
from txanomaly.spark.features import ORDER
from txanomaly.spark.score import model_from_spec, model_spec

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from txanomaly.detector import AnomalyDetector
    from txanomaly.pipeline import TransactionModel

log = logging.getLogger(__name__)

#: Column ``j`` of the model inputs (the transformed features).
def _input(j: int) -> str:
    return f"x{j}"


def fit(features: DataFrame, feature_set: str | FeatureSet = "standard",
        detector: AnomalyDetector | None = None,
        callback: Callable[[int, int], None] | None = None) -> TransactionModel:
    """Train a :class:`~txanomaly.pipeline.TransactionModel` on a Spark table of features.

    Parameters
    ----------
    features : pyspark.sql.DataFrame
        Raw feature values (:func:`txanomaly.spark.compute_features`): the feature set's
        columns and ``_index`` (the rows' order, which the initialisation's row draws
        refer to).
    feature_set : str or FeatureSet
        As for ``TransactionModel``; its weights, directions and scaling apply as there.
    detector : AnomalyDetector, optional
        The parameters (cloned); ``algorithm`` must be ``batch``, the one that distributes.
    callback : callable, optional
        ``callback(epoch, epochs)`` after each epoch.

    Returns
    -------
    TransactionModel
        Fitted: it saves to the same model directory as a single-machine fit, and from the
        same rows, seed and settings has the same prototypes, scaler and threshold up to the
        order of float additions (docs/spark.md, "Equality").
    """
    from pyspark import StorageLevel

    from txanomaly.pipeline import TransactionModel, resolve_detector

    started = time.perf_counter()
    fs = get_feature_set(feature_set)
    det = resolve_detector(fs, detector)
    rows, cols = det.check_params()
    if det.algorithm != "batch":
        raise TxAnomalyError(f"Spark trains the batch algorithm only, not {det.algorithm!r} "
                             "(online and seed update one row at a time, in order)")
    raw, n = _checked(features, fs)
    if n < 2:
        raise TxAnomalyError(f"{n} training row(s); training needs at least 2")
    fs = _fit_transforms(raw, fs, n)
    inputs = _inputs(_training_partitions(raw, n, len(fs.features)), fs).persist(
        StorageLevel.MEMORY_AND_DISK)
    try:
        d = len(fs.features)
        center, scale = _scaler(inputs, det, d, n)
        som = det._new_som(rows, cols, d)  # the detector's seeding, as a local fit
        method = "randn" if det.algorithm == "seed" else det.init
        picked = som.initial_rows(n, method)
        import torch

        som.initialize_from(None if picked is None else torch.from_numpy(
            _rows_at(inputs, picked.numpy(), center, scale, d)), method)
        sigma = det._sigma(rows, cols)
        from txanomaly.som import exponential_decay

        for epoch in range(det.epochs):
            sums = _epoch_sums(inputs, som.weights.numpy().copy(), center, scale, d)
            som.apply_bmu_sums(torch.from_numpy(sums.astype(np.float32)),
                               exponential_decay(sigma, det.sigma_end, epoch, det.epochs))
            if callback is not None:
                callback(epoch + 1, det.epochs)
        det.restore(som.weights.numpy(), center, scale, 1.0)  # threshold: below
        active, map_measures = _map_pass(inputs, fs, det, n)
        det.restore(som.weights.numpy(), center, scale, 1.0, active_units=active)
        threshold, summary = _threshold(inputs, fs, det, n, map_measures)
        summary["seconds"] = round(time.perf_counter() - started, 3)
        det.restore(som.weights.numpy(), center, scale, threshold,
                    training_summary={**summary, "engine": "spark"}, active_units=active)
    finally:
        inputs.unpersist()
    log.info("trained on Spark %s", det.training_summary_)
    return TransactionModel.from_fitted(fs, det)


#: Rows per partition of the training passes (at least one partition per core): each pass
#: over a partition is a Python task, whose fixed cost is paid per epoch.
PARTITION_ROWS = 1_000_000


def _training_partitions(df: DataFrame, n: int, d: int) -> DataFrame:
    """``df`` coalesced (no shuffle) to ~PARTITION_ROWS rows a partition, one per core at
    least: a table of many small partitions (200 after a shuffle) costs a task each per pass.
    A table of partitions far larger is repartitioned: Spark hands a partition's cached
    blocks to Python in one Arrow batch, whose binary column holds 2 GB at most."""
    want = max(df.sparkSession.sparkContext.defaultParallelism, -(-n // PARTITION_ROWS))
    have = df.rdd.getNumPartitions()
    if have > want:
        return df.coalesce(want)
    if -(-n // have) * 8 * d > 1 << 30:  # over 1 GB of inputs in one partition
        return df.repartition(max(want, -(-n * 8 * d // (1 << 29))))
    return df


def _checked(features: DataFrame, fs: FeatureSet) -> tuple[DataFrame, int]:
    """The feature columns (typed) and ``_index``, and the number of rows (one pass); an
    error naming a row with a non-finite value, as a single-machine fit gives."""
    from pyspark.sql import functions as F

    missing = [c for c in [*fs.names, ORDER] if c not in features.columns]
    if missing:
        raise TxAnomalyError(f"input lacks column(s) {missing}")
    raw = features.select(F.col(ORDER).cast("bigint"), *[F.col(c).cast("double")
                                                          for c in fs.names])
    bad = F.lit(False)
    for c in fs.names:
        bad = bad | F.col(c).isNull() | F.isnan(c) | (F.abs(F.col(c)) == float("inf"))
    seen = raw.agg(F.count(F.lit(1)).alias("n"), F.min(F.when(bad, F.col(ORDER))).alias("bad")
                   ).first()
    assert seen is not None  # an aggregate has one row
    if seen["bad"] is not None:
        row = raw.filter(bad & (F.col(ORDER) == seen["bad"])).first()
        assert row is not None
        name = next(c for c in fs.names if row[c] is None or not np.isfinite(row[c]))
        raise TxAnomalyError(f"row with _index {row[ORDER]}: feature {name!r} is {row[name]}; "
                             "features must be finite")
    return raw, int(seen["n"])


def _fit_transforms(raw: DataFrame, fs: FeatureSet, n: int) -> FeatureSet:
    """:meth:`FeatureSet.fit_transforms` on the cluster: each scale the median of the
    column's non-zero ``|x|`` (1 when it has none), exactly."""
    from dataclasses import replace

    from pyspark.sql import functions as F

    feats = list(fs.features)
    fitted = [j for j, f in enumerate(feats)
              if f.transform in FITTED_TRANSFORMS and f.transform_scale is None]
    if not fitted:
        return fs
    # every column's non-zero |x| (nulls elsewhere): counted, then the medians, together
    magnitudes = raw.select(*[F.when(F.abs(F.col(feats[j].name)) > 0, F.abs(
        F.col(feats[j].name))).alias(f"m{j}") for j in fitted])
    seen = magnitudes.agg(*[F.count(f"m{j}").alias(f"m{j}") for j in fitted]).first()
    assert seen is not None  # an aggregate has one row
    counts = {f"m{j}": int(seen[f"m{j}"]) for j in fitted}
    values = qx.order_statistics_of(magnitudes, {c: ([(n - 1) // 2, n // 2], n)
                                                 for c, n in counts.items() if n})
    for j in fitted:
        n = counts[f"m{j}"]
        scale = qx.middle(values[f"m{j}"], n) if n else 1.0
        feats[j] = replace(feats[j], transform_scale=scale if np.isfinite(scale) and scale > 0
                           else 1.0)
    return replace(fs, features=tuple(feats))


#: Rows per block of the cached model inputs. Every training pass (the scaler, each epoch,
#: the map's measures, the scores) hands the cached inputs to Python workers; cached as a
#: row each, Spark turned them back into Arrow batches one row and one column at a time on
#: every pass, which cost more than the pass's own arithmetic (1M rows, 23 features: ~30 s a
#: pass on two loaded cores, 2-4 s as blocks). A block is one Spark row: its rows' ``_index``
#: and their inputs as raw int64 / float64 bytes (~12 MB at 23 features).
BLOCK_ROWS = 65_536


def _inputs(raw: DataFrame, fs: FeatureSet) -> DataFrame:
    """The model inputs (:meth:`FeatureSet.transform`) in blocks of up to
    :data:`BLOCK_ROWS` rows: ``index`` (their ``_index``, int64 bytes) and ``x`` (their
    inputs, row-major float64 bytes, ``d`` a row)."""
    from pyspark.sql.types import BinaryType, StructField, StructType

    d = len(fs.features)
    schema = StructType([StructField("index", BinaryType(), False),
                         StructField("x", BinaryType(), False)])

    def transform(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for block in _gathered(batches, BLOCK_ROWS):
            X = fs.transform(np.column_stack([block.column(c).to_numpy() for c in fs.names]))
            index = block.column(ORDER).to_numpy().astype(np.int64)
            yield pa.RecordBatch.from_arrays(
                [pa.array([index.tobytes()], pa.binary()),
                 pa.array([np.ascontiguousarray(X, dtype=np.float64).reshape(-1, d).tobytes()],
                          pa.binary())], names=["index", "x"])

    return raw.mapInArrow(transform, schema)


def _gathered(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """Arrow batches gathered into tables of ``rows`` rows (the last one fewer)."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        while batch.num_rows:
            take = batch.slice(0, rows - count)
            pending.append(take)
            count += take.num_rows
            batch = batch.slice(take.num_rows)
            if count == rows:
                yield pa.Table.from_batches(pending)
                pending, count = [], 0
    if count:
        yield pa.Table.from_batches(pending)


def _blocks(batches: Iterator[pa.RecordBatch], d: int
            ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Each block of the inputs (:func:`_inputs`) as (``_index``, the ``(rows, d)`` inputs),
    read-only views of Spark's bytes."""
    for batch in batches:
        index, x = batch.column("index"), batch.column("x")
        for i in range(batch.num_rows):
            yield (np.frombuffer(index[i].as_buffer(), np.int64),
                   np.frombuffer(x[i].as_buffer(), np.float64).reshape(-1, d))


def _columns(inputs: DataFrame, d: int) -> DataFrame:
    """The inputs a column each (``x0..x{d-1}``), for Spark's own order statistics."""
    from pyspark.sql.types import DoubleType, StructField, StructType

    schema = StructType([StructField(_input(j), DoubleType(), False) for j in range(d)])

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for _, X in _blocks(batches, d):
            yield pa.RecordBatch.from_arrays([pa.array(X[:, j]) for j in range(d)],
                                             names=schema.names)

    return inputs.mapInArrow(run, schema)


def _partition_sums(inputs: DataFrame, per_batch: Callable[[np.ndarray], np.ndarray],
                    width: int, d: int) -> np.ndarray:
    """``per_batch`` (a block's model inputs -> ``width`` float64 sums) added per partition,
    then across partitions on the driver."""
    from pyspark.sql.types import ArrayType, DoubleType, StructField, StructType

    schema = StructType([StructField("sums", ArrayType(DoubleType(), False))])

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        total = np.zeros(width)
        for _, X in _blocks(batches, d):
            if len(X):
                total += per_batch(X)
        yield pa.RecordBatch.from_arrays([pa.array([total.tolist()],
                                                   pa.list_(pa.float64()))], names=["sums"])

    table = inputs.mapInArrow(run, schema).toArrow()
    total = np.zeros(width)
    for part in table.column("sums").to_pylist():
        total += np.asarray(part)
    return total


def _scaler(inputs: DataFrame, det: AnomalyDetector, d: int, n: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """The scaler's (center, scale) with the feature weights folded in, as
    :meth:`AnomalyDetector._fit_scaler` (``txanomaly.scaling.fit_scaler``) gives."""
    scaling = "robust" if det.scaling == "auto" else det.scaling
    if scaling == "none":
        center, scale = np.zeros(d), np.ones(d)
    else:
        mean = _partition_sums(inputs, lambda X: X.sum(axis=0, dtype=np.float64), d, d) / n
        std = np.sqrt(_partition_sums(inputs, lambda X: ((X - mean) ** 2).sum(axis=0), d,
                                      d) / n)
        if scaling == "standard":
            center, scale = mean, std
        else:  # robust: median and interquartile range, the std where that is 0
            q = np.array(qx.quantiles_of(_columns(inputs, d), [_input(j) for j in range(d)],
                                         [0.25, 0.5, 0.75], n)).T
            center, scale = q[1], np.where(q[2] - q[0] > 0, q[2] - q[0], std)
        scale = np.where(scale > 0, scale, 1.0)
    if det.feature_weights is not None:
        scale = scale / np.asarray(det.feature_weights, dtype=np.float64)
    return np.asarray(center, dtype=np.float64), scale


def _scaled(X: np.ndarray, center: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The detector's scaling (:meth:`AnomalyDetector._scaled`): float64, then float32."""
    return ((X - center) / scale).astype(np.float32)


def _rows_at(inputs: DataFrame, positions: np.ndarray, center: np.ndarray, scale: np.ndarray,
             d: int) -> np.ndarray:
    """The scaled rows at ``positions`` of the table in ``_index`` order, in that order."""
    from pyspark.sql.types import BinaryType, StructField, StructType

    chunks = inputs.select("index").toArrow().column("index").chunks
    order = np.sort(np.concatenate([np.frombuffer(v.as_buffer(), np.int64)
                                    for chunk in chunks for v in chunk] or [np.empty(0, int)]))
    wanted = order[positions]
    keys = inputs.sparkSession.sparkContext.broadcast(np.unique(wanted))
    schema = StructType([StructField("index", BinaryType(), False),
                         StructField("x", BinaryType(), False)])

    def pick(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for index, X in _blocks(batches, d):
            hit = np.isin(index, keys.value)
            if hit.any():
                yield pa.RecordBatch.from_arrays(
                    [pa.array([index[hit].tobytes()], pa.binary()),
                     pa.array([np.ascontiguousarray(X[hit]).tobytes()], pa.binary())],
                    names=["index", "x"])

    picked = inputs.mapInArrow(pick, schema).toArrow().to_batches()
    found_index = [np.empty(0, np.int64)]
    found_rows = [np.empty((0, d))]
    for index, X in _blocks(iter(picked), d):
        found_index.append(index)
        found_rows.append(X)
    everything = np.concatenate(found_index)
    X = np.concatenate(found_rows)
    found = dict(zip(everything.tolist(), range(len(everything)), strict=True))
    keys.unpersist()
    return _scaled(X[[found[int(w)] for w in wanted]], center, scale)


def _epoch_sums(inputs: DataFrame, weights: np.ndarray, center: np.ndarray,
                scale: np.ndarray, d: int) -> np.ndarray:
    """The epoch's ``(d + 2, units)`` augmented per-BMU sums over every partition."""
    units = len(weights)

    def per_batch(X: np.ndarray) -> np.ndarray:
        import torch

        from txanomaly.som import accumulate_bmu_sums, augment_rows, chunk_rows

        data = augment_rows(torch.from_numpy(_scaled(X, center, scale)))
        sums = accumulate_bmu_sums(data, torch.from_numpy(weights), chunk_rows(units))
        return sums.double().numpy().ravel()

    return _partition_sums(inputs, per_batch, (d + 2) * units, d).reshape(d + 2, units)


def _map_pass(inputs: DataFrame, fs: FeatureSet, det: AnomalyDetector, n: int
              ) -> tuple[np.ndarray, tuple[float, float]]:
    """One pass over every unit of the trained map: the units that score
    (``min_unit_share``, from each unit's hits, counted per partition and added: exact), as
    :meth:`AnomalyDetector.fit` picks them, and the map's own measures (the sum of the rows'
    plain distances to their BMU, the QE; and the TE's count of far second units)."""
    from txanomaly.pipeline import TransactionModel

    spec = model_spec(TransactionModel.from_fitted(fs, det))
    units = det.som_.n_units

    def per_batch(X: np.ndarray) -> np.ndarray:
        fitted = model_from_spec(spec).detector_
        Xs = fitted._transform(X)
        dist, bmu = fitted.som_.bmu_distances(Xs)
        return np.concatenate([np.bincount(bmu.numpy(), minlength=units).astype(np.float64),
                               [dist.double().sum().item(),
                                fitted.som_.topographic_error(Xs) * len(X)]])

    sums = _partition_sums(inputs, per_batch, units + 2, len(fs.features))
    return sums[:units] >= det.min_unit_share * n / units, (sums[units], sums[units + 1])


def _threshold(inputs: DataFrame, fs: FeatureSet, det: AnomalyDetector, n: int,
               map_measures: tuple[float, float]) -> tuple[float, dict[str, Any]]:
    """The threshold (the exact ``1 - contamination`` quantile of the training scores, or
    the fixed one) and the training summary, as :meth:`AnomalyDetector.fit` writes it.

    ``det`` holds the trained map (its threshold is not used); the executors rebuild it from
    plain data (:class:`~txanomaly.spark.score.ModelSpec`).
    """
    from pyspark import StorageLevel
    from pyspark.sql.types import DoubleType, StructField, StructType

    from txanomaly.pipeline import TransactionModel

    spec = model_spec(TransactionModel.from_fitted(fs, det))
    d = len(fs.features)

    qe_sum, far = map_measures  # from :func:`_map_pass`

    def scores(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        fitted = model_from_spec(spec).detector_
        for _, X in _blocks(batches, d):
            if len(X):
                yield pa.RecordBatch.from_arrays([pa.array(fitted.anomaly_score(X))],
                                                 names=["score"])

    scored = inputs.mapInArrow(scores, StructType([StructField("score", DoubleType())])
                               ).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        qs = [0.5, 0.95, 0.99, 1.0]
        if det.threshold is None:
            qs.append(1.0 - float(det.contamination))
        values = qx.quantiles(scored, "score", qs, n)
    finally:
        scored.unpersist()
    threshold = float(det.threshold) if det.threshold is not None else values[4]
    summary = {"rows": n, "quantization_error": float(qe_sum / n),
               "topographic_error": round(far) / n, "algorithm": det.algorithm,
               "epochs": det.epochs, "threshold": threshold,
               "scoring_units": int(det.active_units_.sum()),
               "score_quantiles": dict(zip(("p50", "p95", "p99", "max"), values[:4],
                                           strict=True))}
    return threshold, summary
