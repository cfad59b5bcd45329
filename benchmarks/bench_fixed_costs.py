"""Whole processes against their peers: what a user waits for, fixed costs included.

Issue 13's fixed-cost targets, each measured as processes started from the shell:

* ``txanomaly train`` (``--map 10x10 --epochs 20 --sample all``: the map on every row, not
  the default's 1M-row sample, so that rows x epochs are the updates made) on 3M synthetic
  transactions (Parquet):
  its sample updates per second (rows x epochs / the process's wall time: reading, features,
  imports and the compiled kernels' cache included) against MiniSom's ``train_batch`` rate
  on rows of the same width (the model's inputs: one column per feature of ``standard``),
  measured in the same run (MiniSom with its documented defaults, capped at ``--cap``
  updates; its rate does not depend on the rows). Target: >= 100x.
* ``txanomaly features --feature-set seed`` on 2M transactions (read, compute, write Parquet)
  against the reference notebook's pandas method run as a process the same way (read the
  Parquet, ``bench_features.pandas_seed``, write Parquet). Target: >= 5x.

Medians over ``--repeats`` runs of the wall time (the targets) and of the CPU time (user +
system, steadier on a shared machine); the load average is printed before and after (a shared
machine's figures are not idle ones). ``--only features`` or ``--only train`` runs one.

    .venv/bin/python benchmarks/bench_fixed_costs.py
    .venv/bin/python benchmarks/bench_fixed_costs.py --train-rows 1000000 --feature-rows 500000
    .venv/bin/python benchmarks/bench_fixed_costs.py --only features --repeats 5
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CLI = [str(Path(sys.executable).with_name("txanomaly"))]
PANDAS_PROCESS = f"""
import sys
sys.path.insert(0, {str(HERE)!r})
import polars as pl
from bench_features import pandas_seed
df = pandas_seed(pl.read_parquet(sys.argv[1]))
df.to_parquet(sys.argv[2])
"""


def timed(cmd: list[str]) -> tuple[float, float]:
    """Seconds a process takes, start to exit, and the CPU seconds (user + system) it used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return seconds, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def median_wall(cmd: list[str], repeats: int) -> float:
    return median_timed(cmd, repeats)[0]


def median_timed(cmd: list[str], repeats: int) -> tuple[float, float]:
    """Median wall and median CPU seconds over ``repeats`` runs."""
    runs = [timed(cmd) for _ in range(repeats)]
    return (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs))


def synth(path: Path, rows: int) -> None:
    subprocess.run([*CLI, "synth", "-o", str(path), "-n", str(rows), "--users",
                    str(max(1000, rows // 50)), "--days", "30", "--seed", "1", "-q"],
                   check=True)


def minisom_rate(width: int, cap: int) -> float | None:
    """MiniSom ``train_batch`` sample updates per second on standardised rows of ``width``."""
    try:
        from minisom import MiniSom
    except ImportError:
        return None
    X = np.random.default_rng(0).normal(size=(min(cap, 200_000), width))
    som = MiniSom(10, 10, width, sigma=1.0, learning_rate=0.5, random_seed=0)
    som.pca_weights_init(X[:10_000])
    started = time.perf_counter()
    som.train_batch(X, cap)
    return cap / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-rows", type=int, default=3_000_000)
    parser.add_argument("--feature-rows", type=int, default=2_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cap", type=int, default=200_000, help="MiniSom's sample updates")
    parser.add_argument("--only", choices=("features", "train"),
                        help="run one of the two comparisons")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs; load before: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="bench-fixed-") as folder:
        work = Path(folder)
        if args.only != "train":
            features(work, args.feature_rows, args.repeats)
        if args.only != "features":
            train(work, args.train_rows, args.repeats, args.cap)
    print(f"load after: {os.getloadavg()[0]:.2f}")


def features(work: Path, rows: int, repeats: int) -> None:
    """``txanomaly features --feature-set seed`` against the pandas method, as processes."""
    data = work / "features.parquet"
    synth(data, rows)
    ours, our_cpu = median_timed([*CLI, "features", str(data), "-o", str(work / "ours.parquet"),
                                  "--feature-set", "seed", "-q"], repeats)
    theirs, their_cpu = median_timed([sys.executable, "-c", PANDAS_PROCESS, str(data),
                                      str(work / "pandas.parquet")], repeats)
    print(f"features --feature-set seed, {rows:,} rows, whole processes: "
          f"ours {ours:.2f} s, pandas {theirs:.2f} s: {theirs / ours:.1f}x (target >= 5x); "
          f"CPU (user + system) ours {our_cpu:.2f} s, pandas {their_cpu:.2f} s: "
          f"{their_cpu / our_cpu:.1f}x")


def train(work: Path, rows: int, repeats: int, cap: int) -> None:
    """``txanomaly train`` against MiniSom's ``train_batch`` rate."""
    from txanomaly.features import get_feature_set

    data = work / "train.parquet"
    synth(data, rows)
    epochs = 20
    seconds = median_wall([*CLI, "train", str(data), "-o", str(work / "model"), "--map",
                           "10x10", "--epochs", str(epochs), "--sample", "all", "-q"], repeats)
    rate = rows * epochs / seconds
    width = len(get_feature_set("standard").features)
    peer = minisom_rate(width, cap)
    line = (f"train 10x10, {epochs} epochs, {rows:,} rows, whole process: "
            f"{seconds:.1f} s = {rate / 1e6:.2f} M sample updates/s")
    if peer is not None:
        line += (f"; MiniSom train_batch ({width} columns): {peer / 1e3:.1f} k/s: "
                 f"{rate / peer:.0f}x (target >= 100x)")
    print(line)


if __name__ == "__main__":
    main()
