"""Features on Spark: the batch engine's own per-key pass, one key at a time.

Every per-key feature of a transaction depends only on the transactions of the same key value
(the same origin user, destination user or pair) in (timestamp, input) order. So, per key,
the table is repartitioned by the key value, each partition is put in (timestamp, ``_index``)
order, and the single-machine engine (:func:`txanomaly.features.batch.feature_matrix`) runs on
it inside ``mapInArrow``: every key value's rows are in one partition, in the same order,
through the same compiled code, so each value comes out **bit for bit** what the Polars
engine gives on the whole table. The row-level features (amount, hour, cross-border...) ride
along with the first pass.

Why not Spark's window functions: a range frame ``(t - W, t]`` cannot break timestamp ties
by arrival order (a tie at ``t`` is either all in or all out), and Spark's sums would add in
another order than the running sums the online engine keeps, so equality would hold only to
rounding, and not at all for ties.

A transaction without the key (a missing user id) has no history: its rows are spread by
their ``_index`` instead of piling into one partition, and the pass gives them the
no-history values. A key value with very many transactions (a big merchant) is one
partition's work: see docs/spark.md, "Limits".
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING

import pyarrow as pa

from txanomaly.errors import InputFormatError
from txanomaly.features.spec import FeatureSet, get_feature_set
from txanomaly.spark.session import frame_batches, partition_frame

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

log = logging.getLogger(__name__)

#: The input order: a record's position in its input (the readers of
#: :mod:`txanomaly.spark.read` give it); ties in timestamp are broken by it.
ORDER = "_index"
_KEY_COLUMNS = {"origin": ["origin_user_id"], "destination": ["destination_user_id"],
                "pair": ["origin_user_id", "destination_user_id"]}
_TYPES = {"timestamp": "bigint", "origin_amount": "double", "destination_amount": "double",
          ORDER: "bigint"}


def compute_features(df: DataFrame, feature_set: str | FeatureSet = "standard", *,
                     partitions: int | None = None) -> DataFrame:
    """The (unscaled) features of every row: ``transaction_id``, the features in the set's
    order, and ``_index``.

    Parameters
    ----------
    df : pyspark.sql.DataFrame
        Flat records (:mod:`txanomaly.schema`), valid (:func:`txanomaly.spark.read_transactions`
        validates), with ``_index``, the input order that breaks timestamp ties. Without it,
        the order Spark holds the rows in is taken (logged): ties then follow that order.
    feature_set : str or FeatureSet
        ``standard``, ``seed`` or a FeatureSet.
    partitions : int, optional
        Partitions of each per-key shuffle. Default: Spark's (``spark.sql.shuffle.partitions``,
        coalesced by adaptive execution to ``spark.sql.adaptive.advisoryPartitionSizeInBytes``
        each). Each partition is held whole in a Python worker while its pass runs.

    Returns
    -------
    pyspark.sql.DataFrame
        One row per input row, in no particular order: sort by ``_index`` for input order.
        Equal to :func:`txanomaly.features.batch.compute_features` on the same rows.
    """
    from pyspark.sql import functions as F

    fs = get_feature_set(feature_set)
    data = _prepare(df, fs)
    by_key: dict[str | None, list[int]] = {}
    for j, feat in enumerate(fs.features):
        by_key.setdefault(feat.key, []).append(j)
    row_level = by_key.pop(None, [])
    if not by_key:
        data = _pass(data, fs, row_level, None)
    for i, (key, feats) in enumerate(by_key.items()):
        assert key is not None
        spread = (data.repartition(partitions, _partition_key(key)) if partitions else
                  data.repartition(_partition_key(key)))
        data = _pass(spread, fs, (row_level if i == 0 else []) + feats, key)
    return data.select("transaction_id", *[F.col(_column(j)).alias(name)
                                           for j, name in enumerate(fs.names)], ORDER)


def _column(j: int) -> str:
    """The working column of feature ``j`` (a feature may share an input column's name:
    seed's ``destination_amount``)."""
    return f"_feature_{j}"


def _prepare(df: DataFrame, fs: FeatureSet) -> DataFrame:
    """The columns the features read, typed; missing optional ones as nulls."""
    from pyspark.sql import functions as F

    missing = [c for c in ("transaction_id", "timestamp") if c not in df.columns]
    if not any(c in df.columns for c in ("origin_amount", "destination_amount")):
        missing.append("origin_amount or destination_amount")
    if missing:
        raise InputFormatError(f"features need the column(s) {', '.join(missing)}")
    if ORDER not in df.columns:
        log.warning("no %s column: timestamp ties follow the order Spark holds the rows in",
                    ORDER)
        df = df.withColumn(ORDER, F.monotonically_increasing_id())
    columns = list(dict.fromkeys(["transaction_id", *fs.input_columns, ORDER]))
    return df.select([
        (F.col(c) if c in df.columns else F.lit(None)).cast(_TYPES.get(c, "string")).alias(c)
        for c in columns])


def _partition_key(key: str) -> Column:
    """Rows of one key value together; rows without the key spread by their ``_index``."""
    from pyspark.sql import functions as F

    ids = [F.col(c) for c in _KEY_COLUMNS[key]]
    absent = ids[0].isNull() if len(ids) == 1 else ids[0].isNull() | ids[1].isNull()
    return F.when(absent, F.xxhash64(F.col(ORDER))).otherwise(F.xxhash64(*ids))


def _pass(data: DataFrame, fs: FeatureSet, which: list[int], key: str | None) -> DataFrame:
    """``data`` with the columns of features ``which``, each partition through the batch
    engine."""
    from pyspark.sql.pandas.types import to_arrow_schema
    from pyspark.sql.types import DoubleType, StructField, StructType

    schema = StructType([*data.schema.fields,
                         *[StructField(_column(j), DoubleType(), False) for j in which]])
    arrow_schema = to_arrow_schema(schema)
    subset = replace(fs, features=tuple(fs.features[j] for j in which))
    names = [_column(j) for j in which]

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import polars as pl

        from txanomaly.features.batch import feature_matrix

        frame = partition_frame(batches)
        if frame.is_empty():
            return
        if key is not None:  # the key's rows in time order, ties in input order
            frame = frame.sort(["timestamp", ORDER], maintain_order=True)
        values = feature_matrix(frame, subset)
        frame = frame.with_columns(pl.Series(name, values[:, j])
                                   for j, name in enumerate(names))
        yield from frame_batches(frame, arrow_schema)

    return data.mapInArrow(run, schema)
