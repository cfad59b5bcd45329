"""The CLI's ``--engine spark`` jobs, as plain functions: read, compute, write, summarise.

Each returns the summary ``txanomaly ... --json`` prints; the terminal output is the CLI's
(:mod:`txanomaly.cli.spark_engine`). A table output is what Spark writes: a directory of part
files named like the file would be (``features.parquet/part-*.parquet``), rows in input
order across the parts.
"""

from __future__ import annotations

import time
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

from txanomaly.errors import InputFormatError
from txanomaly.features.spec import FeatureSet
from txanomaly.spark.features import ORDER, compute_features
from txanomaly.spark.read import SparkRead, read_transactions
from txanomaly.spark.session import session

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from txanomaly.detector import AnomalyDetector
    from txanomaly.features.roles import Counterparty

#: Output extension -> Spark writer.
WRITERS = {".parquet": "parquet", ".csv": "csv", ".jsonl": "json", ".ndjson": "json",
           ".json": "json"}


def check_output(path: str | Path) -> None:
    """Refuse an output whose extension Spark does not write."""
    if PurePath(str(path).rstrip("/")).suffix.lower() not in WRITERS:
        raise InputFormatError(f"{path}: Spark writes {', '.join(WRITERS)} (by extension)")


def write_table(df: DataFrame, path: str | Path) -> None:
    """Write ``df`` in input order (``_index``, then dropped) to a directory of part files."""
    kind = WRITERS[PurePath(str(path).rstrip("/")).suffix.lower()]
    writer = df.orderBy(ORDER).drop(ORDER).write.mode("overwrite")
    if kind == "csv":
        writer = writer.option("header", "true")
    getattr(writer, kind)(str(path))


def read_input(input: str | Path, rejects: str | Path, master: str | None,
               keep_empty: bool = False) -> tuple[SparkRead, dict[str, Any]]:
    """Read INPUT on Spark, write its rejects (when there are any, or ``keep_empty``: the
    path was asked for) and count what was read."""
    spark = session(master)
    try:
        read = read_transactions(spark, str(input))
    except Exception as exc:
        raise _unreadable(input, exc) from exc
    rejected = read.write_rejects(str(rejects))
    if not rejected and not keep_empty:
        Path(rejects).unlink()
    valid = read.frame.count()
    return read, {"records": valid + rejected + read.exact_duplicates, "valid": valid,
                  "rejected": rejected, "exact_duplicates": read.exact_duplicates,
                  "rejects": str(rejects) if rejected or keep_empty else None}


def _unreadable(input: str | Path, exc: Exception) -> Exception:
    """Spark's error for an input it cannot open (no such path, no file system for the URL's
    scheme, no credentials) as one line naming INPUT; any other error as it is."""
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException

    if not isinstance(exc, PySparkException | Py4JJavaError):
        return exc
    text = str(exc.java_exception) if isinstance(exc, Py4JJavaError) else str(exc)
    line = next((s.strip() for s in text.splitlines() if s.strip()), type(exc).__name__)
    return InputFormatError(f"{input}: Spark cannot read it: {line}")


def features_job(input: str | Path, output: str | Path, feature_set: FeatureSet,
                 rejects: str | Path, master: str | None, keep_empty: bool = False
                 ) -> dict[str, Any]:
    """``txanomaly features --engine spark``."""
    started = time.perf_counter()
    read, counts = read_input(input, rejects, master, keep_empty)
    table = compute_features(read.frame, feature_set)
    write_table(table, output)
    return {**counts, "input": str(input), "output": str(output), "rows": counts["valid"],
            "feature_set": feature_set.name, "features": feature_set.names,
            "seconds": round(time.perf_counter() - started, 3)}


def train_job(input: str | Path, output: str | Path, feature_set: FeatureSet,
              counterparty: str, detector: AnomalyDetector, rejects: str | Path,
              master: str | None, key: bytes | str | None = None,
              callback: Any = None, keep_empty: bool = False
              ) -> tuple[dict[str, Any], Counterparty | None]:
    """``txanomaly train --engine spark``: returns the summary and the counterparty evidence."""
    from txanomaly.features.roles import resolve_counterparty
    from txanomaly.spark.roles import detect_counterparty
    from txanomaly.spark.train import fit

    started = time.perf_counter()
    read, counts = read_input(input, rejects, master, keep_empty)
    if counts["valid"] < 2:
        raise InputFormatError(f"{input}: {counts['valid']} valid transaction(s); training "
                               "needs at least 2")
    evidence = None
    if counterparty == "auto" and feature_set.counterparty is None and any(
            f.merchant_direction is not None for f in feature_set.features):
        evidence = detect_counterparty(read.frame)
        feature_set, _ = resolve_counterparty(feature_set, None, evidence.role)
    else:
        feature_set, evidence = resolve_counterparty(feature_set, None, counterparty)
    from pyspark import StorageLevel

    features = compute_features(read.frame, feature_set).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        model = fit(features, feature_set, detector, callback=callback)
    finally:
        features.unpersist()
    model.save(output, key=key)
    train = model.detector_.training_summary_
    return {**train, **counts, "train_seconds": train["seconds"],
            "seconds": round(time.perf_counter() - started, 3), "model": str(output),
            "feature_set": model.feature_set_.name,
            "counterparty": model.feature_set_.counterparty, "engine": "spark"}, evidence


def score_job(input: str | Path, model_dir: str | Path, output: str | Path,
              rejects: str | Path, master: str | None, keep_empty: bool = False
              ) -> dict[str, Any]:
    """``txanomaly score --engine spark``."""
    from pyspark.sql import functions as F

    from txanomaly.pipeline import TransactionModel
    from txanomaly.spark.score import score

    started = time.perf_counter()
    model = TransactionModel.load(model_dir)
    read, counts = read_input(input, rejects, master, keep_empty)
    from pyspark import StorageLevel

    scored = score(read.frame, model).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        write_table(scored, output)
        flagged = scored.filter(F.col("is_anomaly")).count()
    finally:
        scored.unpersist()
    return {**counts, "input": str(input), "output": str(output), "model": str(model_dir),
            "rows": counts["valid"], "anomalies": flagged, "threshold": model.threshold,
            "seconds": round(time.perf_counter() - started, 3)}


def history_job(input: str | Path, model_dir: str | Path, db: str, db_schema: str | None,
                rejects: str | Path, master: str | None, batch_size: int,
                keep_empty: bool = False, progress: Any = None) -> dict[str, Any]:
    """``txanomaly history load --engine spark``: read INPUT on Spark, build the store's
    history on the cluster and bulk-load it into the (empty) database at ``db``."""
    from txanomaly.scoring import Scorer
    from txanomaly.spark.bulk import check_empty
    from txanomaly.spark.history import load_history
    from txanomaly.storage import sql_storage

    started = time.perf_counter()
    scorer = Scorer.load(model_dir)
    storage = sql_storage(db, schema=db_schema)
    try:
        check_empty(storage)  # before the cluster reads anything
        read, counts = read_input(input, rejects, master, keep_empty)
        loaded = load_history(read.frame, scorer, storage, batch_size, progress)
        location = storage.location
    finally:
        storage.close()
    return {**counts, "input": str(input), "db": location, "stored": loaded.transactions,
            "replayed": 0, "flagged": loaded.flagged, "key_rows": loaded.key_rows,
            "bulk": "copy" if loaded.copy else "insert", "engine": "spark",
            "seconds": round(time.perf_counter() - started, 3)}
