"""The Spark session txanomaly's Spark jobs run in, and the Arrow glue they share.

:func:`session` builds (or returns) a SparkSession with the settings the jobs rely on:
Arrow on, Python workers that run the driver's interpreter on a local master, and a shuffle
partition count sized to the cluster. On a real cluster the session usually exists already
(``spark-submit``, a notebook): every function of :mod:`txanomaly.spark` takes DataFrames and
uses the session they belong to.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import polars as pl
import pyarrow as pa

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

#: Rows per Arrow batch a job yields (Spark's own default for batches it sends is 10,000).
BATCH_ROWS = 65_536


def session(master: str | None = None, app_name: str = "txanomaly",
            config: dict[str, str] | None = None) -> SparkSession:
    """The active SparkSession, or a new one on ``master`` (e.g. ``local[2]``,
    ``spark://host:7077``, ``yarn``; None: what ``spark-submit`` or the environment says,
    else ``local[*]``).

    A local master runs Python workers with this interpreter (``PYSPARK_PYTHON``), so they
    import the same txanomaly; a cluster's executors need the package installed
    (docs/spark.md, "Packaging").
    """
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None and master is None:
        return active
    builder = SparkSession.builder.appName(app_name)
    master = master or os.environ.get("MASTER") or (None if "SPARK_HOME" in os.environ
                                                    else "local[*]")
    if master is not None:
        builder = builder.master(master)
        if master.startswith("local"):
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
            os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    settings = {"spark.sql.execution.arrow.pyspark.enabled": "true",
                "spark.ui.showConsoleProgress": "false",
                # A cached table (features kept for training) keeps adaptive execution's
                # coalesced partitions, not spark.sql.shuffle.partitions' 200 small ones:
                # each partition of a Python stage costs a task.
                "spark.sql.optimizer.canChangeCachedPlanOutputPartitioning": "true",
                **(config or {})}
    for key, value in settings.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def partition_frame(batches: Iterable[pa.RecordBatch]) -> pl.DataFrame:
    """All the Arrow batches of one partition as one Polars frame (large strings made plain)."""
    tables = [pa.Table.from_batches([b]) for b in batches if b.num_rows]
    if not tables:
        return pl.DataFrame()
    frame = pl.from_arrow(pa.concat_tables(tables))
    assert isinstance(frame, pl.DataFrame)
    return frame


def frame_batches(frame: pl.DataFrame, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """A Polars frame as Arrow batches of ``schema`` (the Spark schema a job declared)."""
    table = frame.select(schema.names).to_arrow().cast(schema)
    yield from table.to_batches(max_chunksize=BATCH_ROWS)
