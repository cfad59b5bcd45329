"""Batch feature throughput and peak memory, against the reference notebook's pandas method.

For each size: synthetic transactions are written to Parquet once (cached), then each
measurement runs in a fresh subprocess (so its peak RSS is its own):

- ``read``: ``txanomaly.io.load_transactions`` of every column (Parquet read + validation +
  dedup), for reference;
- ``seed`` / ``standard``: what ``txanomaly features`` does: ``load_transactions`` keeping the
  feature set's input columns (every column still validated; ids and codes as categoricals),
  then ``compute_features``. The rows/s figure is the median of the repeats of
  ``compute_features`` (warm); the first call of the process (cold: Numba's cached code
  loaded, fresh memory faulted in) is printed too. The peak RSS is the process's after that
  first call (one read and one computation, as the command does); the peak after the repeats
  too, which also holds what the allocators kept from the earlier calls;
- ``pandas``: the reference notebook's method for the seed features: per user,
  ``groupby(user).rolling('1D').mean()`` and ``.expanding().mean()``, origin and destination,
  plus the cyclical hour/day columns; checked against ours on the rows it covers.

Usage::

    python benchmarks/bench_features.py                       # 1M and 10M rows
    python benchmarks/bench_features.py --sizes 200000 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CACHE = Path(tempfile.gettempdir()) / "txanomaly-bench"


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


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(mode: str, path: Path, repeats: int) -> dict:
    import polars as pl

    from txanomaly.features import get_feature_set
    from txanomaly.features.batch import compute_features
    from txanomaly.io import load_transactions

    start = time.perf_counter()
    columns = None if mode in ("read", "pandas") else get_feature_set(mode).input_columns
    frame = load_transactions(path, columns, categorical=columns is not None).frame
    read_s = time.perf_counter() - start
    if mode == "read":
        return {"seconds": [read_s], "rows": frame.height, "peak_rss_mb": peak_rss_mb()}
    if mode == "pandas":
        del frame
        times, check = [], None
        for _ in range(repeats):
            start = time.perf_counter()
            check = pandas_seed(pl.read_parquet(path))
            times.append(time.perf_counter() - start)
        ours = compute_features(pl.read_parquet(path), "seed")
        return {"seconds": times, "rows": len(check), "peak_rss_mb": peak_rss_mb(),
                "max_abs_diff_vs_ours": compare(check, ours)}
    times = []
    peak_one_call = 0.0
    for _ in range(repeats + 1):  # the first call is the cold one
        start = time.perf_counter()
        out = compute_features(frame, mode)
        times.append(time.perf_counter() - start)
        del out
        peak_one_call = peak_one_call or peak_rss_mb()
    return {"seconds": times[1:], "first_s": times[0], "read_s": read_s, "rows": frame.height,
            "peak_rss_mb": peak_one_call, "peak_rss_repeats_mb": peak_rss_mb()}


def pandas_seed(frame):  # type: ignore[no-untyped-def]
    """The notebook's way: pandas groupby-rolling over a DatetimeIndex, per user column.

    The Parquet read is outside the timing of ours too, but the conversion to pandas is part
    of this method (the notebook worked in pandas throughout), so it is timed.
    """
    import numpy as np
    import pandas as pd

    df = frame.select("transaction_id", "timestamp", "origin_user_id", "destination_user_id",
                      "origin_amount", "destination_amount").to_pandas()
    df["amount"] = df["destination_amount"].fillna(df["origin_amount"])
    df["time"] = pd.to_datetime(df["timestamp"], unit="ms")
    df = df.sort_values("time", kind="stable")
    hour, day = df["time"].dt.hour, df["time"].dt.weekday
    df["hour_sin"], df["hour_cos"] = np.sin(2 * np.pi * hour / 24), np.cos(2 * np.pi * hour / 24)
    df["day_sin"], df["day_cos"] = np.sin(2 * np.pi * day / 7), np.cos(2 * np.pi * day / 7)
    indexed = df.set_index("time")
    for side in ("destination", "origin"):
        groups = indexed.groupby(f"{side}_user_id", sort=False)["amount"]
        sliding = groups.rolling("1D").mean().reset_index(level=0, drop=True)
        prefix = groups.expanding().mean().reset_index(level=0, drop=True)
        df[f"{side}_sliding_mean_diff"] = _realign(df, indexed, side, sliding)
        df[f"{side}_prefix_mean_diff"] = _realign(df, indexed, side, prefix)
    return df


def _realign(df, indexed, side, series):  # type: ignore[no-untyped-def]
    """Map a groupby-rolling result (grouped order) back to the rows, as amount - mean."""
    import numpy as np

    has = ~indexed[f"{side}_user_id"].isna().to_numpy()
    # groupby(sort=False) yields groups in first-appearance order, rows in time order within
    # each: the same order as a stable sort of the rows by group first appearance.
    codes = indexed[f"{side}_user_id"].astype("category").cat.codes.to_numpy()
    first_seen = np.full(codes.max() + 2, len(codes))
    np.minimum.at(first_seen, codes[has], np.flatnonzero(has))
    order = np.flatnonzero(has)[np.argsort(first_seen[codes[has]], kind="stable")]
    mean = np.full(len(df), np.nan)
    mean[order] = series.to_numpy()
    return df["amount"].to_numpy() - mean


def compare(pandas_df, ours) -> float:  # type: ignore[no-untyped-def]
    import numpy as np

    pdf = pandas_df.set_index("transaction_id")
    worst = 0.0
    ours_pd = ours.to_pandas().set_index("transaction_id").loc[pdf.index]
    for side in ("destination", "origin"):
        for kind in ("sliding", "prefix"):
            name = f"{side}_{kind}_mean_diff"
            theirs = pdf[name].to_numpy()
            mine = ours_pd[name].to_numpy()
            ok = ~np.isnan(theirs)  # pandas leaves rows without a user id out
            worst = max(worst, float(np.max(np.abs(theirs[ok] - mine[ok]), initial=0.0)))
    return worst


def measure(mode: str, path: Path, repeats: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", mode, "--path", str(path),
           "--repeats", str(repeats)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000000,10000000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pandas-max", type=int, default=10_000_000,
                        help="skip the pandas method above this many rows")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, Path(args.path), args.repeats)))
        return
    import os

    print(f"# bench_features: {os.cpu_count()} cores; medians of {args.repeats} warm runs; "
          "peak RSS of a fresh process that reads the Parquet file and computes once")
    header = f"{'rows':>11} {'step':<10} {'median s':>9} {'rows/s':>12} {'peak RSS':>10}  note"
    print(header)
    for n in (int(s) for s in args.sizes.split(",")):
        path = dataset(n)
        results = {"read": measure("read", path, 1)}
        for mode in ("seed", "standard"):
            results[mode] = measure(mode, path, args.repeats)
        if n <= args.pandas_max:
            results["pandas"] = measure("pandas", path, max(1, args.repeats // 3))
        for mode, res in results.items():
            med = statistics.median(res["seconds"])
            note = ""
            if "first_s" in res:
                note = (f"read {res['read_s']:.2f} s (kept columns); first call (cold) "
                        f"{res['first_s']:.2f} s; peak after the repeats "
                        f"{res['peak_rss_repeats_mb']:,.0f}MB")
            if mode == "pandas":
                ratio = med / statistics.median(results["seed"]["seconds"])
                note = (f"seed is {ratio:.1f}x faster; max |diff| vs ours "
                        f"{res['max_abs_diff_vs_ours']:.2e}")
            print(f"{n:>11,} {mode:<10} {med:>9.3f} {n / med:>12,.0f} "
                  f"{res['peak_rss_mb']:>8,.0f}MB  {note}", flush=True)


if __name__ == "__main__":
    main()
