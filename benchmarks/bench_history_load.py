"""Where the Spark history load's time goes, and PostgreSQL COPY beside the store's INSERTs.

On the synthetic set of ``bench_spark.py`` (n rows, cached Parquet), with a model trained on
Spark (one epoch), in one process on ``--master`` (default ``local[2]``):

1. the records ranked by ``_index`` (the arrival numbers), cached;
2. the scored transactions built on the cluster and streamed to the driver
   (``toLocalIterator``), then the key rows the same way: the two tables of the store;
3. the same rows written into a fresh PostgreSQL schema twice: by binary ``COPY`` (what
   :func:`txanomaly.spark.load_history` does) and by the store's own multi-row ``INSERT``
   (``executemany``), 20,000 rows a transaction; rows/s of each and the ratio.

The load averages at the start and the end are printed with the figures.

Usage::

    python benchmarks/bench_history_load.py --rows 200000 \\
        --db postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

from bench_spark import _load, dataset


def main() -> None:
    from pyspark import StorageLevel

    from txanomaly import spark as txs
    from txanomaly.detector import AnomalyDetector
    from txanomaly.scoring import Scorer
    from txanomaly.spark import bulk
    from txanomaly.spark.history import _key_table, _ranked, _transaction_table
    from txanomaly.storage import sql_storage

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--db", required=True, help="PostgreSQL URL")
    parser.add_argument("--master", default="local[2]")
    args = parser.parse_args()
    session = txs.session(args.master, config={"spark.driver.memory": "6g"})
    session.sparkContext.setLogLevel("ERROR")
    frame = txs.read_transactions(session, str(dataset(args.rows))).frame.persist(
        StorageLevel.MEMORY_AND_DISK)
    features = txs.compute_features(frame, "standard").persist(StorageLevel.MEMORY_AND_DISK)
    model = txs.fit(features, "standard", AnomalyDetector(epochs=1))
    with tempfile.TemporaryDirectory() as tmp:
        scorer = Scorer.load(model.save(Path(tmp) / "model"))
    print(f"{args.rows:,} rows, {args.master}; {_load()} at the start")

    start = time.perf_counter()
    ranked, cached = _ranked(frame, 1)
    ranked = ranked.persist(StorageLevel.MEMORY_AND_DISK)
    ranked.count()
    ranking = time.perf_counter() - start
    start = time.perf_counter()
    tx = [tuple(r) for r in _transaction_table(ranked, frame, scorer).toLocalIterator(True)]
    tx_seconds = time.perf_counter() - start
    start = time.perf_counter()
    keys = [tuple(r) for r in _key_table(ranked, scorer.model.feature_set_)
            .toLocalIterator(True)]
    key_seconds = time.perf_counter() - start
    print(f"built on Spark and streamed to the driver: ranking {ranking:.1f} s, "
          f"{len(tx):,} scored transactions {tx_seconds:.1f} s, {len(keys):,} key rows "
          f"{key_seconds:.1f} s")
    seconds = {}
    for copy in (True, False):
        storage = sql_storage(args.db, schema=f"txa_bench_{uuid.uuid4().hex[:8]}")
        try:
            for table, rows in (("transactions", tx), ("key_history", keys)):
                start = time.perf_counter()
                bulk.write_rows(storage, table, rows, 20_000, copy=copy)
                seconds[copy, table] = time.perf_counter() - start
        finally:
            storage.drop_tables()
            storage.close()
    for table, rows in (("transactions", tx), ("key_history", keys)):
        a, b = seconds[True, table], seconds[False, table]
        print(f"{table:<13} COPY {a:6.1f} s ({len(rows) / a:>9,.0f} rows/s)   INSERT {b:6.1f} s "
              f"({len(rows) / b:>9,.0f} rows/s)   INSERT / COPY {b / a:4.1f}")
    print(_load() + " at the end")
    cached.unpersist()


if __name__ == "__main__":
    main()
