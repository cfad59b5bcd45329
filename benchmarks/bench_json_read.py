"""`txanomaly features` on a JSON input against the same data as Parquet: wall and peak RSS.

For each size (default 1M transactions; ``--sizes 1000000 3000000`` for more) the script writes
the same synthetic transactions (``txanomaly synth``, one seed, users = rows / 50, 30 days) as a
Flagright JSON array (``.json``, 30 % of the timestamps as ``{"$numberLong": ...}``), as JSON
Lines (``.jsonl``) and as Parquet, runs ``txanomaly features IN -o OUT.parquet`` on each under
``/usr/bin/time`` and prints the wall time and the peak resident memory, and checks that
the three outputs are identical. JSON is read through a temporary Parquet file
(:mod:`txanomaly.io.chunks`, step 0), so its memory should stay near the Parquet figure and
not grow with the file; ``--whole`` adds what the chunked read used to do first, reading the
JSON whole (:func:`txanomaly.io.load_transactions`), for comparison. The load average before
and after is printed: on a shared machine the times are not idle figures.

    .venv/bin/python benchmarks/bench_json_read.py                         # 1M rows
    .venv/bin/python benchmarks/bench_json_read.py --sizes 1000000 3000000 --whole
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

#: The console script users run, next to this Python.
CLI = [str(Path(sys.executable).with_name("txanomaly"))]
#: Bytes on disk per transaction, all files of a size together, with room to spare: the JSON
#: array ~450 and the JSON Lines ~450, the Parquet input ~20, the temporary Parquet ~60, the
#: three feature outputs ~200 each.
DISK_PER_ROW = 1_700
WHOLE_READ = ("import sys; from txanomaly.io import load_transactions; "
              "print(load_transactions(sys.argv[1]).frame.height)")


def timed(stage: str, command: list[str], log: Path) -> dict[str, Any]:
    """Run ``command`` under /usr/bin/time; wall seconds and peak RSS (GB, as ``-v`` says)."""
    figures = log.with_suffix(".time")
    with log.open("w") as fh:
        done = subprocess.run(["/usr/bin/time", "-f", "%e %M", "-o", str(figures), *command],
                              stdout=fh, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        sys.exit(f"{stage} failed ({done.returncode}):\n{log.read_text()[-3000:]}")
    wall, kbytes = figures.read_text().split()[-2:]
    return {"stage": stage, "wall": float(wall), "rss_gb": int(kbytes) / 2**20}


def one_size(rows: int, folder: Path, whole: bool) -> list[dict[str, Any]]:
    free = shutil.disk_usage(folder).free
    if free < rows * DISK_PER_ROW:
        sys.exit(f"{folder}: {free / 1e9:.1f} GB free, {rows:,} rows need about "
                 f"{rows * DISK_PER_ROW / 1e9:.1f} GB")
    synth = ["synth", "-n", str(rows), "--users", str(max(1000, rows // 50)), "--days", "30",
             "--seed", "1", "-q"]
    inputs = {suffix: folder / f"tx{suffix}" for suffix in (".parquet", ".jsonl", ".json")}
    for suffix, path in inputs.items():
        share = ["--number-long-share", "0.3"] if suffix == ".json" else []
        subprocess.run([*CLI, *synth, *share, "-o", str(path)], check=True)
    results = []
    for suffix, path in inputs.items():
        size_mb = path.stat().st_size / 1e6
        out = folder / f"features{suffix}.parquet"
        result = timed(f"features {suffix}", [*CLI, "features", str(path), "-o", str(out), "-q"],
                       folder / f"features{suffix}.log")
        results.append({**result, "rows": rows, "input_mb": size_mb})
        report(results[-1])
    if whole:
        result = timed("load whole .json", [sys.executable, "-c", WHOLE_READ,
                                            str(inputs[".json"])], folder / "whole.log")
        results.append({**result, "rows": rows, "input_mb": inputs[".json"].stat().st_size / 1e6})
        report(results[-1])
    import polars as pl

    want = pl.read_parquet(folder / "features.parquet.parquet")
    same = all(pl.read_parquet(folder / f"features{s}.parquet").equals(want)
               for s in (".jsonl", ".json"))
    print(f"  {rows:>12,}  features from .json and .jsonl identical to .parquet's: {same}",
          flush=True)
    return results


def report(result: dict[str, Any]) -> None:
    print(f"  {result['rows']:>12,}  {result['stage']:<18} {result['input_mb']:9.1f} MB "
          f"{result['wall']:8.1f} s  {result['rss_gb']:6.2f} GB", flush=True)


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[1_000_000])
    parser.add_argument("--whole", action="store_true",
                        help="also read the JSON whole (load_transactions), as before")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--keep", action="store_true", help="keep each size's files")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs; before: {load()}")
    print(f"  {'rows':>12}  {'stage':<18} {'input':>12} {'wall':>10}  {'peak RSS':>9}")
    for rows in sorted(set(args.sizes)):
        folder = Path(tempfile.mkdtemp(prefix="bench-json-", dir=args.workdir))
        try:
            one_size(rows, folder, args.whole)
        finally:
            if args.keep:
                print(f"  kept {folder}")
            else:
                shutil.rmtree(folder, ignore_errors=True)
        print(f"after {rows:,}: {load()}", flush=True)


if __name__ == "__main__":
    main()
