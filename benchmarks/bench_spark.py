"""The Spark engine beside the single-machine engine: each stage's time and peak memory.

For each size, synthetic transactions are written to Parquet once (cached); then, in two
fresh processes (so each peak is its own):

- ``local``: the single-machine engine as the commands run it: ``read``
  (``load_transactions``), ``features`` (``compute_features``, standard set), ``epoch`` (a
  ``TransactionModel`` fit with one epoch: transform scales, scaler, initialisation, one batch
  epoch, training scores and threshold) and ``score`` (``score_frame``, three reasons);
- ``spark``: the same stages with :mod:`txanomaly.spark` on ``--master`` (default
  ``local[2]``): ``read_transactions`` (materialised), ``compute_features``, ``fit`` with one
  epoch, ``score`` (each written to Spark's no-op sink, so it is computed in full).

Times are medians of ``--repeats`` runs (each stage after the first run has warmed the
Python workers). Peak memory: the driver's Python process, the JVM (driver and, in local
mode, the executors' threads) and the Python workers together, sampled from /proc every 0.2 s.

Usage::

    python benchmarks/bench_spark.py                        # 1M and 10M rows
    python benchmarks/bench_spark.py --sizes 200000 --repeats 1
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


def dataset(n: int) -> Path:
    """Synthetic transactions (n rows, n/50 users, 30 days) as flat Parquet, cached."""
    from txanomaly.io import write_table
    from txanomaly.synth import generate

    path = CACHE / f"tx-{n}.parquet"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        result = generate(n, users=max(n // 50, 10), days=30, anomaly_rate=0.01, seed=0)
        write_table(result.transactions, path)
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


def local_worker(path: Path, repeats: int) -> dict:
    from txanomaly.detector import AnomalyDetector
    from txanomaly.features.batch import compute_features
    from txanomaly.io import load_transactions
    from txanomaly.pipeline import TransactionModel

    times: dict[str, float] = {}
    times["read"], read = _timed(repeats, lambda: load_transactions(path))
    frame = read.frame  # type: ignore[attr-defined]
    times["features"], features = _timed(repeats, lambda: compute_features(frame, "standard"))
    X = features.drop("transaction_id")  # type: ignore[attr-defined]
    detector = AnomalyDetector(epochs=1)
    times["epoch"], model = _timed(repeats, lambda: TransactionModel("standard", detector)
                                   .fit(X))
    times["score"], _ = _timed(repeats, lambda: model.score_frame(features))  # type: ignore
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"times": times, "memory": {"driver_mb": round(peak)}}


def spark_worker(path: Path, repeats: int, master: str) -> dict:
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
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"times": times, "memory": {"driver_mb": round(peak), **sampler.stop()}}


def run_worker(engine: str, path: Path, repeats: int, master: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", engine, "--path", str(path), "--repeats",
           str(repeats), "--master", master]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{engine} worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000000,10000000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        fn = local_worker if args.worker == "local" else spark_worker
        out = fn(Path(args.path), args.repeats, *(() if args.worker == "local"
                                                  else (args.master,)))
        print(json.dumps(out))
        return
    print(f"txanomaly on Spark ({args.master}) vs one machine; medians of {args.repeats} "
          f"run(s); {os.cpu_count()} CPU(s)")
    for n in (int(s) for s in args.sizes.split(",")):
        path = dataset(n)
        local = run_worker("local", path, args.repeats, args.master)
        spark = run_worker("spark", path, args.repeats, args.master)
        print(f"\n{n:,} rows")
        print(f"{'stage':<10}{'local s':>10}{'spark s':>10}{'spark/local':>13}"
              f"{'spark rows/s':>14}")
        for stage in STAGES:
            a, b = local["times"][stage], spark["times"][stage]
            print(f"{stage:<10}{a:>10.2f}{b:>10.2f}{b / a:>13.1f}{n / b:>14,.0f}")
        print(f"peak memory: local process {local['memory']['driver_mb']:,} MB; spark driver "
              f"(Python) {spark['memory']['driver_mb']:,} MB, JVM "
              f"{spark['memory']['jvm_mb']:,} MB, Python workers "
              f"{spark['memory']['workers_mb']:,} MB")


if __name__ == "__main__":
    main()
