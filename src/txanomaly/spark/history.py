"""From the lake to the real-time service: the store's history, produced by a Spark job.

The service keeps, per key (origin user, destination user, pair), the key's transactions in
(timestamp, arrival) order with running sums (:class:`~txanomaly.features.online.KeyLog`), and
every scored transaction with its verdict (:mod:`txanomaly.storage`). ``txanomaly history
load`` on one machine builds both by ingesting a file one batch at a time; here Spark builds
them:

- :func:`key_rows`: per key kind, the table repartitioned by key value and each value's rows
  put in (timestamp, ``_index``) order; the running sums are added one by one, as the online
  engine adds them, so the stored sums are bit for bit the ones ingestion writes;
- :func:`transaction_rows`: each transaction's flat record, content hash, raw features and
  verdict (:meth:`txanomaly.scoring.Scorer.verdicts`, run in the executors);
- :func:`load_history`: both written into an empty store, streamed from the cluster through
  the driver in batches: PostgreSQL by binary ``COPY``, SQLite by the store's own ``write``
  (:mod:`txanomaly.spark.bulk`). ``txanomaly history load --engine spark`` runs it.

Arrival numbers (``seq``) follow ``_index`` (ties in timestamp keep input order), taken from
the store's own counter, so the service's later transactions come after every loaded one.
After the load, the service's verdict for a new transaction is batch scoring's for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numba
import numpy as np
import orjson
import pyarrow as pa

from txanomaly.features.spec import FeatureSet, get_feature_set
from txanomaly.schema import EXTRA_COLUMN, FLAT_COLUMNS
from txanomaly.spark.features import ORDER, compute_features
from txanomaly.spark.score import ModelSpec, model_from_spec, model_spec
from txanomaly.spark.session import partition_frame

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from txanomaly.scoring import Scorer
    from txanomaly.storage import Storage

#: Rows written per database transaction (one COPY on PostgreSQL) by :func:`load_history`.
LOAD_BATCH = 20_000
_RANK = "_rank"


def key_rows(records: DataFrame, feature_set: str | FeatureSet, first_seq: int = 1
             ) -> DataFrame:
    """The store's key history (:data:`txanomaly.storage.base.KEY_COLUMNS`) of ``records``
    (flat records with ``_index``), arrival numbers from ``first_seq`` in ``_index`` order.

    The records, range-partitioned by ``_index``, stay cached (the arrival numbers are
    counted over them): ``spark.catalog.clearCache()`` releases them after use."""
    return _key_table(_ranked(records, first_seq)[0], get_feature_set(feature_set))


def _key_table(ranked: DataFrame, fs: FeatureSet) -> DataFrame:
    from functools import reduce

    from pyspark.sql import functions as F

    parts = [_key_rows(ranked, fs, key) for key in sorted({f.key for f in fs.features
                                                           if f.key is not None})]
    if not parts:
        return ranked.limit(0).select(*[F.lit(None).alias(c) for c in _KEY_SCHEMA_NAMES])
    return reduce(lambda a, b: a.unionByName(b), parts)


_KEY_SCHEMA_NAMES = ("kind", "key", "seq", "ts", "pos", "amount", "cum_before", "cum", "d1",
                     "d2", "hour_sin_sum", "hour_cos_sum", "shift")


def _ranked(records: DataFrame, first_seq: int) -> tuple[DataFrame, DataFrame]:
    """``records`` with ``seq``: ``first_seq`` + the row's rank in ``_index`` order (counted per
    range partition, then offset: no single-partition sort); and the cached table it is read
    from (unpersist it when done)."""
    from pyspark import StorageLevel, TaskContext
    from pyspark.sql.types import LongType, StructField, StructType

    ordered = records.repartitionByRange(ORDER).sortWithinPartitions(ORDER).persist(
        StorageLevel.MEMORY_AND_DISK)

    def count(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        part = TaskContext.get().partitionId()  # type: ignore[union-attr]
        total = sum(b.num_rows for b in batches)
        yield pa.RecordBatch.from_pydict({"part": [part], "rows": [total]})

    counts = ordered.select(ORDER).mapInArrow(count, "part long, rows long").collect()
    offsets, total = {}, first_seq
    for row in sorted(counts, key=lambda r: r["part"]):
        offsets[row["part"]] = total
        total += row["rows"]
    schema = StructType([*ordered.schema.fields, StructField("seq", LongType(), False)])

    def number(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        at = offsets[TaskContext.get().partitionId()]  # type: ignore[union-attr]
        for batch in batches:
            seqs = pa.array(np.arange(at, at + batch.num_rows, dtype=np.int64))
            at += batch.num_rows
            yield pa.RecordBatch.from_arrays([*batch.columns, seqs],
                                             names=[*batch.schema.names, "seq"])

    return ordered.mapInArrow(number, schema), ordered


@numba.njit(nogil=True, cache=True)
def _running(values: np.ndarray, starts: np.ndarray) -> np.ndarray:  # pragma: no cover
    """Running sums added one by one, restarting where ``starts`` is True (the online
    engine's ``cum + amount``, row after row)."""
    out = np.empty_like(values)
    total = 0.0
    for i in range(values.size):
        total = values[i] if starts[i] else total + values[i]
        out[i] = total
    return out


def _key_rows(ranked: DataFrame, fs: FeatureSet, key: str) -> DataFrame:
    """One key kind's history rows."""
    from pyspark.sql import functions as F
    from pyspark.sql.pandas.types import to_arrow_schema
    from pyspark.sql.types import DoubleType, LongType, StringType, StructField, StructType

    kind = fs.history_kind(key)
    payer = fs.amount_source(key) == "origin"
    sides = ["origin_amount", "destination_amount"]
    amount = F.coalesce(*[F.col(c) for c in (sides if payer else sides[::-1])])
    ids = ["origin_user_id", "destination_user_id"] if key == "pair" else [f"{key}_user_id"]
    rows = ranked.select(*[F.col(c).cast("string") for c in ids], F.col("timestamp").alias("ts"),
                         "seq", ORDER, amount.cast("double").alias("amount")).dropna(subset=ids)
    schema = StructType([StructField("kind", StringType()), StructField("key", StringType()),
                         *[StructField(c, LongType()) for c in ("seq", "ts", "pos")],
                         *[StructField(c, DoubleType()) for c in _KEY_SCHEMA_NAMES[5:]]])
    arrow_schema = to_arrow_schema(schema)

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import polars as pl

        from txanomaly.features import formulas as fx
        from txanomaly.features.online import pair_key

        frame = partition_frame(batches)
        if frame.is_empty():
            return
        value = (pl.struct(ids).map_elements(lambda r: pair_key(r[ids[0]], r[ids[1]]),
                                             return_dtype=pl.String)
                 if key == "pair" else pl.col(ids[0]))
        frame = frame.with_columns(value.alias("key")).sort(["key", "ts", ORDER])
        keys = frame.get_column("key")
        starts = (keys != keys.shift(1)).fill_null(True).to_numpy()
        amounts = frame.get_column("amount").to_numpy()
        group = np.cumsum(starts) - 1
        first = np.flatnonzero(starts)
        pos = np.arange(len(frame)) - first[group]
        cum = _running(amounts, starts)
        shift = np.log1p(amounts[first])[group]
        d = np.log1p(amounts) - shift
        hour = fx.hour_of_day(frame.get_column("ts").to_numpy())
        out = frame.select("key", "seq", "ts").with_columns(
            pl.lit(kind).alias("kind"), pl.Series("pos", pos), pl.Series("amount", amounts),
            pl.Series("cum_before", np.where(starts, 0.0, np.roll(cum, 1))),
            pl.Series("cum", cum), pl.Series("d1", _running(d, starts)),
            pl.Series("d2", _running(d * d, starts)),
            pl.Series("hour_sin_sum", _running(fx.CYCLIC["hour_sin"][hour], starts)),
            pl.Series("hour_cos_sum", _running(fx.CYCLIC["hour_cos"][hour], starts)),
            pl.Series("shift", shift))
        yield from out.select(_KEY_SCHEMA_NAMES).to_arrow().cast(arrow_schema).to_batches()

    value = F.xxhash64(*[F.col(c) for c in ids])
    return rows.repartition(value).mapInArrow(run, schema)


def transaction_rows(records: DataFrame, scorer: Scorer, first_seq: int = 1) -> DataFrame:
    """The store's scored transactions (:data:`txanomaly.storage.base.TRANSACTION_COLUMNS`):
    flat record, content hash, raw features and the verdict the service would answer.

    The records stay cached as for :func:`key_rows`."""
    return _transaction_table(_ranked(records, first_seq)[0], records, scorer)


def _transaction_table(ranked: DataFrame, records: DataFrame, scorer: Scorer) -> DataFrame:
    from pyspark.sql import functions as F
    from pyspark.sql.types import (
        BooleanType,
        DoubleType,
        LongType,
        StringType,
        StructField,
        StructType,
    )

    fs = scorer.model.feature_set_
    features = compute_features(records, fs)
    named = [F.col(f"f.{n}").alias(f"_f{j}") for j, n in enumerate(fs.names)]
    joined = ranked.alias("r").join(
        features.alias("f"), F.col(f"r.{ORDER}") == F.col(f"f.{ORDER}")).select(
        *[F.col(f"r.{c}") for c in (*FLAT_COLUMNS, EXTRA_COLUMN, "seq")], *named)
    spec = joined.sparkSession.sparkContext.broadcast(
        (model_spec(scorer.model), scorer.version, scorer.metadata, scorer.top))
    schema = StructType([StructField("seq", LongType()), StructField("transaction_id",
                                                                     StringType()),
                         StructField("ts", LongType()), StructField("content_hash", StringType()),
                         StructField("record", StringType()), StructField("features",
                                                                          StringType()),
                         StructField("anomaly_score", DoubleType()),
                         StructField("is_anomaly", BooleanType()),
                         StructField("result", StringType())])
    d = len(fs.names)

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from txanomaly.ingest import content_hash

        local = _scorer(*spec.value)
        for batch in batches:
            if not batch.num_rows:
                continue
            cols = batch.to_pydict()
            recs = [{c: cols[c][i] for c in (*FLAT_COLUMNS, EXTRA_COLUMN)}
                    for i in range(batch.num_rows)]
            X = np.column_stack([np.asarray(cols[f"_f{j}"], dtype=np.float64)
                                 for j in range(d)])
            verdicts = local.verdicts(X, [r["transaction_id"] for r in recs])
            yield pa.RecordBatch.from_pydict({
                "seq": cols["seq"], "transaction_id": cols["transaction_id"],
                "ts": cols["timestamp"], "content_hash": [content_hash(r) for r in recs],
                "record": [orjson.dumps(r).decode() for r in recs],
                "features": [orjson.dumps(row).decode() for row in X.tolist()],
                "anomaly_score": [float(v.anomaly_score) for v in verdicts],
                "is_anomaly": [bool(v.is_anomaly) for v in verdicts],
                "result": [orjson.dumps(v.result).decode() for v in verdicts]},
                schema=to_arrow(schema))

    return joined.mapInArrow(run, schema)


def to_arrow(schema: Any) -> pa.Schema:
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(schema)


def _scorer(spec: ModelSpec, version: str, metadata: dict[str, Any], top: int) -> Scorer:
    from txanomaly.scoring import Scorer

    return Scorer(model_from_spec(spec), version, metadata, top)


@dataclass(frozen=True)
class HistoryLoad:
    """What :func:`load_history` stored."""

    #: Scored transactions stored.
    transactions: int
    #: Of them, flagged as anomalies.
    flagged: int
    #: Key-history rows stored (one per key value a transaction has: origin, destination,
    #: pair, as the feature set uses them).
    key_rows: int
    #: The first arrival number (``seq``) of the loaded transactions.
    first_seq: int
    #: True when the rows went in by PostgreSQL ``COPY``.
    copy: bool


def load_history(records: DataFrame, scorer: Scorer, storage: Storage,
                 batch_size: int = LOAD_BATCH,
                 progress: Callable[[str, int], None] | None = None) -> HistoryLoad:
    """Write the history of ``records`` (valid flat records with ``_index``) into an empty
    ``storage``, as ``txanomaly history load`` would leave it.

    The arrival numbers are reserved from the store's counter first, so the service numbers
    its own transactions after them. The scored transactions go first, then the key history,
    streamed from the cluster through the driver in batches of ``batch_size`` rows, one
    database transaction each (PostgreSQL: one binary ``COPY`` each). ``progress(table,
    rows)`` is called after each batch (``table``: ``transactions`` or ``key_history``).

    Raises
    ------
    TxAnomalyError
        The store already holds transactions (an interrupted load leaves some: drop the
        tables and load again).
    """
    from pyspark import StorageLevel

    from txanomaly.spark import bulk

    bulk.check_empty(storage)
    n = records.count()
    if n == 0:
        return HistoryLoad(0, 0, 0, 0, bulk.uses_copy(storage))
    first = bulk.reserve_seqs(storage, n)
    ranked, cached = _ranked(records, first)
    ranked = ranked.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        flagged = 0

        def transactions() -> Iterator[tuple[Any, ...]]:
            nonlocal flagged
            for row in _transaction_table(ranked, records, scorer).toLocalIterator(True):
                flagged += bool(row["is_anomaly"])
                yield tuple(row)

        def step(table: str) -> Callable[[int], None] | None:
            return None if progress is None else (lambda rows: progress(table, rows))

        stored = bulk.write_rows(storage, "transactions", transactions(), batch_size,
                                 step("transactions"))
        keys = _key_table(ranked, scorer.model.feature_set_).toLocalIterator(True)
        key_count = bulk.write_rows(storage, "key_history", (tuple(r) for r in keys),
                                    batch_size, step("key_history"))
    finally:
        ranked.unpersist()
        cached.unpersist()
    return HistoryLoad(stored, flagged, key_count, first, bulk.uses_copy(storage))
