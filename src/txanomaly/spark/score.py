"""Scoring on Spark: the model broadcast to the executors, the one scoring path run there.

The model travels as plain data (the feature set's definition, the detector's parameters,
its arrays and threshold: what the model directory holds, no pickled objects); each Python
worker rebuilds the :class:`~txanomaly.pipeline.TransactionModel` once and calls
:meth:`~txanomaly.pipeline.TransactionModel.score_frame` on its batches, so every row gets
the columns and values ``txanomaly score`` gives.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import pyarrow as pa

from txanomaly.spark.features import ORDER, compute_features

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from txanomaly.pipeline import TransactionModel

#: Reasons per row, as ``txanomaly score`` writes them.
TOP_REASONS = 3


@dataclass(frozen=True)
class ModelSpec:
    """A fitted model as plain data: what crosses to the executors."""

    feature_set: dict[str, Any]
    params: dict[str, Any]
    weights: np.ndarray
    center: np.ndarray
    scale: np.ndarray
    threshold: float
    active_units: np.ndarray | None = None  # the units that score (all when None)

    @property
    def key(self) -> str:
        """Identifies the model within a worker's cache."""
        digest = hashlib.blake2b(orjson.dumps([self.feature_set, self.params, self.threshold],
                                              default=str), digest_size=16)
        for array in (self.weights, self.center, self.scale, self.active_units):
            if array is not None:
                digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()


def model_spec(model: TransactionModel) -> ModelSpec:
    """The plain data of a fitted model."""
    det = model.detector_
    return ModelSpec(model.feature_set_.to_dict(), det.get_params(),
                     det.som_.weights.detach().cpu().numpy().copy(),
                     np.asarray(det.center_), np.asarray(det.scale_), float(det.threshold_),
                     np.asarray(det.active_units_).copy())


_MODELS: dict[str, TransactionModel] = {}  # per Python worker: rebuilt once per model


def model_from_spec(spec: ModelSpec) -> TransactionModel:
    """The model of ``spec``, rebuilt once per process (CPU)."""
    found = _MODELS.get(spec.key)
    if found is None:
        from txanomaly.detector import AnomalyDetector
        from txanomaly.features.spec import FeatureSet
        from txanomaly.pipeline import TransactionModel

        detector = AnomalyDetector(**{**spec.params, "device": "cpu"}).restore(
            spec.weights, spec.center, spec.scale, spec.threshold,
            active_units=spec.active_units)
        found = TransactionModel.from_fitted(FeatureSet.from_dict(spec.feature_set), detector)
        _MODELS.clear()  # a worker serves one model at a time
        _MODELS[spec.key] = found
    return found


def score(df: DataFrame, model: TransactionModel, *, top: int = TOP_REASONS,
          partitions: int | None = None) -> DataFrame:
    """Scores, flags, risk levels, BMU and the ``top`` reasons of every row.

    Parameters
    ----------
    df : pyspark.sql.DataFrame
        Flat records with ``_index`` (:func:`txanomaly.spark.read_transactions`): their
        features are computed first (:func:`txanomaly.spark.compute_features`); or a table
        that already holds the model's feature columns, ``transaction_id`` and ``_index``.
    model : TransactionModel
        Fitted (``TransactionModel.load`` or :func:`txanomaly.spark.fit`); broadcast once.

    Returns
    -------
    pyspark.sql.DataFrame
        The columns of ``txanomaly score`` (:meth:`TransactionModel.score_frame`) and
        ``_index``; sort by ``_index`` for input order.
    """
    names = model.feature_names
    features = (df if all(n in df.columns for n in names) else
                compute_features(df, model.feature_set_, partitions=partitions))
    spec = features.sparkSession.sparkContext.broadcast(model_spec(model))
    schema = score_schema(top, len(names))
    from pyspark.sql.pandas.types import to_arrow_schema

    arrow_schema = to_arrow_schema(schema)

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import polars as pl

        scorer = model_from_spec(spec.value)
        for batch in batches:
            if not batch.num_rows:
                continue
            frame = pl.from_arrow(batch)
            assert isinstance(frame, pl.DataFrame)
            scored = scorer.score_frame(frame, top=top).with_columns(frame.get_column(ORDER))
            yield from scored.to_arrow().cast(arrow_schema).to_batches()

    return features.select("transaction_id", *names, ORDER).mapInArrow(run, schema)


def score_schema(top: int, n_features: int) -> Any:
    """The Spark schema of the scores (:meth:`TransactionModel.score_frame`'s columns)."""
    from pyspark.sql.types import (
        BooleanType,
        DoubleType,
        LongType,
        StringType,
        StructField,
        StructType,
    )

    fields = [StructField("transaction_id", StringType()),
              StructField("anomaly_score", DoubleType()), StructField("is_anomaly", BooleanType()),
              StructField("risk_level", StringType()), StructField("bmu", LongType())]
    for rank in range(1, min(top, n_features) + 1):
        fields += [StructField(f"reason_{rank}", StringType()),
                   StructField(f"reason_{rank}_share", DoubleType()),
                   StructField(f"reason_{rank}_value", DoubleType()),
                   StructField(f"reason_{rank}_prototype", DoubleType())]
    return StructType([*fields, StructField(ORDER, LongType())])
