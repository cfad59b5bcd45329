"""The Spark engine beside the single-machine engine: each stage's time and peak memory.

For each size, synthetic transactions are written to Parquet once (cached); then, in two
fresh processes (so each peak is its own):

- ``local``: the single-machine engine as the commands run it, in bounded memory (a 10M-row
  set needs a few GB): ``read`` (``time_ordered_chunks``: validation, repeats, time order, a
  chunk at a time), ``features`` (``feature_chunks``, standard set, read included, into a
  float64 ``RowStore`` file as ``txanomaly train`` keeps them), ``epoch`` (``fit_stored``
  with one epoch: transform scales, scaler, initialisation, one batch epoch, training scores
  and threshold, as ``txanomaly train``) and ``score`` (``score_frame``, three reasons, a
  block of stored features at a time, as ``txanomaly score`` streams);
- ``spark``: the same stages with :mod:`txanomaly.spark` on ``--master`` (default
  ``local[2]``): ``read_transactions`` (materialised), ``compute_features``, ``fit`` with one
  epoch, ``score`` (each written to Spark's no-op sink, so it is computed in full).

Times are medians of ``--repeats`` runs (each stage after the first run has warmed the
Python workers). Peak memory: the driver's Python process, the JVM (driver and, in local
mode, the executors' threads) and the Python workers together, sampled from /proc every 0.2 s.

With ``--history-db postgresql://...``, a fifth stage, ``history``: the service store's
history of all rows built on Spark and bulk-loaded by ``COPY``
(:func:`txanomaly.spark.load_history`), beside the local ``history load`` path (row-by-row
ingestion, timed on the first 100,000 rows and scaled to n), each into a fresh schema.
The load averages at the start and the end of each size are printed with its figures.

Usage::

    python benchmarks/bench_spark.py                        # 1M and 10M rows
    python benchmarks/bench_spark.py --sizes 200000 --repeats 1
    python benchmarks/bench_spark.py --sizes 1000000 --history-db postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

CACHE = Path(tempfile.gettempdir()) / "txanomaly-bench"
STAGES = ("read", "features", "epoch", "score")


#: Rows generated at a time: a 10M-row set is written in blocks, never held whole.
GENERATE_BLOCK = 1_000_000


def dataset(n: int) -> Path:
    """Synthetic transactions (n rows, n/50 users, 30 days) as flat Parquet, cached.

    Above :data:`GENERATE_BLOCK` rows, blocks of that many rows (their own seeds, the same
    n/50 user ids, transaction ids prefixed by the block) are appended to one file.
    """
    import polars as pl
    import pyarrow.parquet as pq

    from txanomaly.synth import generate

    path = CACHE / f"tx-{n}.parquet"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    writer = None
    try:
        for block, start in enumerate(range(0, n, GENERATE_BLOCK)):
            rows = min(GENERATE_BLOCK, n - start)
            frame = generate(rows, users=max(n // 50, 10), days=30, anomaly_rate=0.01,
                             seed=block).transactions
            if n > GENERATE_BLOCK:
                frame = frame.with_columns(pl.format("b{}-{}", pl.lit(block),
                                                     pl.col("transaction_id"))
                                           .alias("transaction_id"))
            table = frame.to_arrow()
            if writer is None:
                writer = pq.ParquetWriter(partial, table.schema)
            writer.write_table(table, row_group_size=256_000)
    finally:
        if writer is not None:
            writer.close()
    partial.rename(path)
    return path


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    parent = int(fh.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(parent, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _rss_mb(pid: int) -> tuple[str, float]:
    try:
        with open(f"/proc/{pid}/status") as fh:
            status = dict(line.split(":", 1) for line in fh if ":" in line)
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmd = fh.read().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return "", 0.0
    return cmd, int(status.get("VmRSS", "0 kB").split()[0]) / 1024


class Sampler:
    """Peak RSS of this process's JVM and of its Python workers (summed), from /proc."""

    def __init__(self) -> None:
        self.jvm = self.workers = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            jvm = workers = 0.0
            for pid in _descendants(os.getpid()):
                cmd, mb = _rss_mb(pid)
                if cmd.endswith("java"):
                    jvm += mb
                elif "python" in cmd:
                    workers += mb
            self.jvm, self.workers = max(self.jvm, jvm), max(self.workers, workers)

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        return {"jvm_mb": round(self.jvm), "workers_mb": round(self.workers)}


def _timed(repeats: int, run) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


#: The local history load (row-by-row ingestion) is timed on this many rows and scaled to n:
#: it is linear in the rows (each batch reads its keys' recent rows through an index).
HISTORY_LOCAL_ROWS = 100_000


def local_worker(path: Path, repeats: int, history_db: str | None) -> dict:
    """The single-machine stages as ``txanomaly features / train / score`` run them, in
    memory that does not grow with the rows (docs/model.md, "Large inputs")."""
    import polars as pl

    from txanomaly.detector import AnomalyDetector
    from txanomaly.features import get_feature_set
    from txanomaly.features.chunked import feature_chunks
    from txanomaly.io.chunks import time_ordered_chunks
    from txanomaly.pipeline import TransactionModel, columns_to_fit
    from txanomaly.rowstore import RowStore

    fs = get_feature_set("standard")
    d = len(fs.features)
    times: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-spark-") as folder:
        times["read"], _ = _timed(repeats, lambda: sum(
            chunk.height for chunk in time_ordered_chunks(path)))

        def features(name: str = "features.f64") -> RowStore:
            # as ``txanomaly train`` stores them: the fitted transforms' columns kept apart
            store = RowStore(Path(folder, name), d, keep_columns=columns_to_fit(fs))
            for chunk in feature_chunks(path, fs):
                store.append(chunk.values)
            return store

        times["features"], raw = _timed(repeats, features)
        fits = []
        for _ in range(repeats):  # fit_stored transforms its store in place: a fresh one
            store = features("fit.f64")
            start = time.perf_counter()
            model = TransactionModel(fs, AnomalyDetector(epochs=1)).fit_stored(store)
            fits.append(time.perf_counter() - start)
        times["epoch"] = statistics.median(fits)

        def score() -> None:
            first = 0
            for block in raw.blocks():  # type: ignore[attr-defined]
                ids = pl.int_range(first, first + len(block), eager=True).cast(pl.String)
                frame = pl.DataFrame([ids.alias("transaction_id"), *(
                    pl.Series(name, block[:, j]) for j, name in enumerate(fs.names))])
                model.score_frame(frame, top=3)
                first += len(block)

        times["score"], _ = _timed(repeats, score)
    if history_db:
        head = next(time_ordered_chunks(path, HISTORY_LOCAL_ROWS)).drop("_index")
        times["history"] = (_local_history(head, model, history_db, head.height)
                            * raw.n_rows / head.height)  # type: ignore[attr-defined]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"times": times, "memory": {"driver_mb": round(peak)}}


def spark_worker(path: Path, repeats: int, history_db: str | None, master: str) -> dict:
    from pyspark import StorageLevel

    from txanomaly import spark as txs
    from txanomaly.detector import AnomalyDetector

    sampler = Sampler()
    session = txs.session(master, config={"spark.driver.memory": "6g"})
    session.sparkContext.setLogLevel("ERROR")
    txs.read_transactions(session, str(path)).frame.limit(1).collect()  # warm the workers
    times: dict[str, float] = {}

    def read():  # type: ignore[no-untyped-def]
        r = txs.read_transactions(session, str(path))
        r.frame.write.format("noop").mode("overwrite").save()
        return r

    times["read"], result = _timed(repeats, read)
    frame = result.frame.persist(StorageLevel.MEMORY_AND_DISK)  # type: ignore[attr-defined]
    frame.count()

    def features():  # type: ignore[no-untyped-def]
        df = txs.compute_features(frame, "standard")
        df.write.format("noop").mode("overwrite").save()
        return df

    times["features"], _ = _timed(repeats, features)
    table = txs.compute_features(frame, "standard").persist(StorageLevel.MEMORY_AND_DISK)
    table.count()
    times["epoch"], model = _timed(repeats, lambda: txs.fit(table, "standard",
                                                            AnomalyDetector(epochs=1)))
    times["score"], _ = _timed(repeats, lambda: txs.score(table, model).write.format("noop")
                               .mode("overwrite").save())
    table.unpersist()
    if history_db:
        times["history"] = _spark_history(frame, model, history_db)  # type: ignore[arg-type]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"times": times, "memory": {"driver_mb": round(peak), **sampler.stop()}}


def _fresh_store(url: str):  # type: ignore[no-untyped-def]
    import uuid

    from txanomaly.storage import sql_storage

    return sql_storage(url, schema=f"txa_bench_{uuid.uuid4().hex[:8]}")


def _scorer(model):  # type: ignore[no-untyped-def]
    """The service's scorer for ``model``, as a server loads it (saved, then read back)."""
    from txanomaly.scoring import Scorer

    with tempfile.TemporaryDirectory() as tmp:
        model.save(Path(tmp) / "model")
        return Scorer.load(Path(tmp) / "model")


def _spark_history(frame, model, url: str) -> float:  # type: ignore[no-untyped-def]
    """Seconds of ``load_history`` (the store's history built on Spark, bulk-loaded: COPY
    on PostgreSQL) of every row into an empty schema (dropped after)."""
    from txanomaly import spark as txs

    scorer = _scorer(model)
    storage = _fresh_store(url)
    try:
        start = time.perf_counter()
        txs.load_history(frame, scorer, storage)
        return time.perf_counter() - start
    finally:
        storage.drop_tables()
        storage.close()


def _local_history(frame, model, url: str, rows: int) -> float:  # type: ignore[no-untyped-def]
    """Seconds of the local ``history load`` path (``ingest_history``, 1,000 a batch) of the
    first ``rows`` rows into an empty schema (dropped after)."""
    from txanomaly.ingest import ingest_history

    scorer = _scorer(model)
    storage = _fresh_store(url)
    try:
        start = time.perf_counter()
        for _ in ingest_history(frame.head(rows), scorer, storage, 1000):
            pass
        return time.perf_counter() - start
    finally:
        storage.drop_tables()
        storage.close()


def run_worker(engine: str, path: Path, repeats: int, master: str,
               history_db: str | None) -> dict:
    cmd = [sys.executable, __file__, "--worker", engine, "--path", str(path), "--repeats",
           str(repeats), "--master", master, *(["--history-db", history_db] if history_db
                                               else [])]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{engine} worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000000,10000000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--history-db", default=None, help="PostgreSQL URL: also time the "
                        "service's history load (Spark + COPY vs local ingestion) into a "
                        "fresh schema of it")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        if args.worker == "local":
            out = local_worker(Path(args.path), args.repeats, args.history_db)
        else:
            out = spark_worker(Path(args.path), args.repeats, args.history_db, args.master)
        print(json.dumps(out))
        return
    print(f"txanomaly on Spark ({args.master}) vs one machine; medians of {args.repeats} "
          f"run(s); {os.cpu_count()} CPU(s); {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    stages = [*STAGES, *(["history"] if args.history_db else [])]
    for n in (int(s) for s in args.sizes.split(",")):
        path = dataset(n)
        before = _load()
        local = run_worker("local", path, args.repeats, args.master, args.history_db)
        spark = run_worker("spark", path, args.repeats, args.master, args.history_db)
        print(f"\n{n:,} rows ({before} at the start, {_load()} at the end)")
        print(f"{'stage':<10}{'local s':>10}{'spark s':>10}{'spark/local':>13}"
              f"{'spark rows/s':>14}")
        for stage in stages:
            a, b = local["times"][stage], spark["times"][stage]
            print(f"{stage:<10}{a:>10.2f}{b:>10.2f}{b / a:>13.1f}{n / b:>14,.0f}")
        if args.history_db:
            print(f"history: local = ingestion of the first {min(HISTORY_LOCAL_ROWS, n):,} "
                  "rows, scaled to all; spark = load_history of all rows (COPY)")
        print(f"peak memory: local process {local['memory']['driver_mb']:,} MB; spark driver "
              f"(Python) {spark['memory']['driver_mb']:,} MB, JVM "
              f"{spark['memory']['jvm_mb']:,} MB, Python workers "
              f"{spark['memory']['workers_mb']:,} MB")


if __name__ == "__main__":
    main()
