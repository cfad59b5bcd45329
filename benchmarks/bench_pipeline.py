"""The whole pipeline as users run it: synth -> features -> train -> score, whole processes.

For each size (default 1M and 10M transactions; 100M with ``--huge``) the script writes
synthetic transactions as Parquet (``txanomaly synth``, users = rows / 50, 30 days), then
runs ``txanomaly features``, ``txanomaly train`` (``--map 10x10 --epochs 20``; ``--sample``
as given, by default the product's ``auto``: the map on a 1M-row sample above 1M rows) and
``txanomaly score`` under ``/usr/bin/time -v`` and prints per stage the wall time, the peak
resident memory, and, from one size to the next, how the wall time grew against the rows
(1.0 = linear). The issue's targets (10M rows: train + score <= 45 s on an idle 2-core
machine, each under 2.5 GB; 100M rows: each under 4 GB) are printed beside the figures. The
load average before and after is printed: on a shared machine the times are not the idle
figures.

Each stage's files are deleted when the size is done (``--keep`` keeps them); the script
refuses to start a size whose files would not fit on the disk of ``--workdir``.

    .venv/bin/python benchmarks/bench_pipeline.py                   # 1M and 10M
    .venv/bin/python benchmarks/bench_pipeline.py --sizes 1000000    # one size
    .venv/bin/python benchmarks/bench_pipeline.py --huge             # 1M, 10M and 100M

``--data FILE`` reuses a Parquet file ``synth`` wrote (its rows are the size; no synth
stage); ``--repeats N`` runs each stage N times and prints each run and the median (the
medians go into the summary). Comparing two versions of the code: run this script twice on
the same file, one with ``PYTHONPATH=<other checkout>/src`` (the command imports from there).
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

#: The console script users run, next to this Python.
CLI = [str(Path(sys.executable).with_name("txanomaly"))]
#: Bytes on disk per transaction, all files of a size together, with room to spare (10M
#: rows: the Parquet input 18 and its labels 16; train's temporary float64 features and
#: float32 scaled rows 284 for the standard set's 23 features; the scores and features
#: outputs under 200 each).
DISK_PER_ROW = 700
TARGETS = {10_000_000: (45.0, 2.5), 100_000_000: (None, 4.0)}


def run(stage: str, args: list[str], log: Path) -> dict[str, Any]:
    """Run ``txanomaly args`` under /usr/bin/time -v; wall seconds and peak RSS (GB)."""
    with log.open("w") as fh:
        done = subprocess.run(["/usr/bin/time", "-v", *CLI, *args], stdout=fh,
                              stderr=subprocess.STDOUT, check=False)
    text = log.read_text()
    if done.returncode != 0:
        sys.exit(f"{stage} failed ({done.returncode}):\n{text[-3000:]}")
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", text)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    user = re.search(r"User time \(seconds\): (\S+)", text)
    system = re.search(r"System time \(seconds\): (\S+)", text)
    assert wall and rss and user and system, text[-2000:]
    seconds = 0.0
    for part in wall.group(1).split(":"):
        seconds = seconds * 60 + float(part)
    return {"stage": stage, "wall": seconds, "rss_gb": int(rss.group(1)) / 2**20,
            "cpu": float(user.group(1)) + float(system.group(1))}


def one_size(rows: int, folder: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    free = shutil.disk_usage(folder).free
    if free < rows * DISK_PER_ROW:
        sys.exit(f"{folder}: {free / 1e9:.1f} GB free, {rows:,} rows need about "
                 f"{rows * DISK_PER_ROW / 1e9:.1f} GB")
    data, model = args.data or folder / "tx.parquet", folder / "model"
    stages = [] if args.data else [
        ("synth", ["synth", "-o", str(data), "-n", str(rows), "--users",
                   str(max(1000, rows // 50)), "--days", "30", "--seed", "1", "-q"])]
    stages += [
        ("features", ["features", str(data), "-o", str(folder / "features.parquet"), "-q"]),
        ("train", ["train", str(data), "-o", str(model), "--map", args.map, "--epochs",
                   str(args.epochs), "--sample", args.sample, "-q"]),
        ("score", ["score", str(data), "--model", str(model), "-o",
                   str(folder / "scores.parquet"), "-q"]),
    ]
    results = []
    for stage, cli_args in stages:
        if stage in args.skip:
            continue
        runs = []
        for _ in range(1 if stage == "synth" else args.repeats):
            result = run(stage, cli_args, folder / f"{stage}.log")
            runs.append(result)
            print(f"  {rows:>12,}  {stage:<9} {result['wall']:8.1f} s  {result['rss_gb']:6.2f} GB"
                  f"  {result['cpu']:8.1f} s CPU  (load {os.getloadavg()[0]:.1f})", flush=True)
        result = {"stage": stage, "rows": rows,
                  **{key: statistics.median(r[key] for r in runs)
                     for key in ("wall", "rss_gb", "cpu")}}
        if len(runs) > 1:
            print(f"  {rows:>12,}  {stage:<9} {result['wall']:8.1f} s  {result['rss_gb']:6.2f} GB"
                  f"  {result['cpu']:8.1f} s CPU  median of {len(runs)}", flush=True)
        results.append(result)
        if stage == "features" and not args.keep:
            (folder / "features.parquet").unlink()
    return results


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[1_000_000, 10_000_000])
    parser.add_argument("--huge", action="store_true", help="add 100M rows")
    parser.add_argument("--map", default="10x10")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--skip", nargs="*", default=[], help="stages not to run (not synth)")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--keep", action="store_true", help="keep each size's files")
    parser.add_argument("--data", type=Path, help="a Parquet file of transactions to use "
                        "instead of synth (one size: its rows)")
    parser.add_argument("--sample", default="auto",
                        help="train's --sample: auto (the default), all, or a number of rows")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each stage (median)")
    args = parser.parse_args()
    sizes = sorted(set(args.sizes + ([100_000_000] if args.huge else [])))
    if args.data is not None:
        import polars as pl

        sizes = [pl.scan_parquet(args.data).select(pl.len()).collect().item()]
    print(f"{os.cpu_count()} CPUs; before: {load()}")
    print(f"  {'rows':>12}  {'stage':<9} {'wall':>10}  {'peak RSS':>9}  {'user+sys':>10}")
    results = []
    for rows in sizes:
        folder = Path(tempfile.mkdtemp(prefix="bench-pipeline-", dir=args.workdir))
        try:
            results += one_size(rows, folder, args)
        finally:
            if args.keep:
                print(f"  kept {folder}")
            else:
                shutil.rmtree(folder, ignore_errors=True)
    print(f"after: {load()}")
    report(results, sizes)


def report(results: list[dict[str, Any]], sizes: list[int]) -> None:
    by = {(r["rows"], r["stage"]): r for r in results}
    print("\ngrowth of the wall time from one size to the next, over the growth of the rows "
          "(1.0 = linear):")
    for stage in ("synth", "features", "train", "score"):
        steps = [f"{a // 10**6}M->{b // 10**6}M "
                 f"{(by[b, stage]['wall'] / by[a, stage]['wall']) / (b / a):.2f}"
                 for a, b in itertools.pairwise(sizes)
                 if (a, stage) in by and (b, stage) in by]
        if steps:
            print(f"  {stage:<9} " + ", ".join(steps))
    for rows, (wall, rss) in TARGETS.items():
        if (rows, "train") not in by or (rows, "score") not in by:
            continue
        train, score = by[rows, "train"], by[rows, "score"]
        total = train["wall"] + score["wall"]
        print(f"\n{rows:,} rows: train + score {total:.1f} s"
              + (f" (target <= {wall:.0f} s idle)" if wall else "")
              + f", {train['cpu'] + score['cpu']:.1f} s CPU (user + system)"
              + f"; peak RSS train {train['rss_gb']:.2f} GB, score {score['rss_gb']:.2f} GB "
              f"(target < {rss} GB each)")


if __name__ == "__main__":
    main()
