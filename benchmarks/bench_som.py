"""SOM training and scoring speed, memory and quantization error, with MiniSom in the same run.

For each map (10x10, 30x30) and data size (rows x 20 float32 features, a Gaussian mixture):

* ours, ``batch`` (radius max(rows, cols)/2 decaying to ``--sigma-end``, by default MiniSom's
  final radius 1/3): training throughput in sample-epochs/s (rows x epochs / seconds of
  ``SelfOrganizingMap.fit``, which includes building the augmented matrix) and scoring rows/s
  (``bmu_distances``: BMU + exact distance for every row);
* MiniSom ``train_batch`` (sigma=1, learning_rate=0.5, PCA init: its documented defaults) with
  the same number of sample updates (rows x epochs), capped at ``--cap`` updates where that
  would take too long; its rate is measured on the capped run and the full time extrapolated;
* ours, ``seed`` (the prototype's per-sample loop), capped the same way;
* QE (mean distance to the BMU, on up to 100k rows) of each trained map, side by side;
* peak resident memory of the whole configuration (each runs in its own process; VmHWM);
* ``AnomalyDetector.fit`` end to end on the float32 matrix (scaling, map, threshold, summary)
  and ``anomaly_score``, with the peak RSS of that stage alone (VmHWM reset before it).

Figures are medians over ``--repeats`` (1 repeat above 1M rows).

    .venv/bin/python benchmarks/bench_som.py                         # the full table
    .venv/bin/python benchmarks/bench_som.py --sizes 1800 100000 --maps 10x10 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import numpy as np
import torch

from txanomaly.detector import AnomalyDetector
from txanomaly.som import SelfOrganizingMap

FEATURES = 20
QE_ROWS = 100_000


def make_data(rows: int, seed: int = 0) -> np.ndarray:
    """``rows x 20`` float32 Gaussian mixture (8 components), built chunk by chunk."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (8, FEATURES)).astype(np.float32)
    out = np.empty((rows, FEATURES), dtype=np.float32)
    for start in range(0, rows, 1_000_000):
        part = out[start:start + 1_000_000]
        part[:] = rng.standard_normal(part.shape, dtype=np.float32)
        part += centres[rng.integers(0, 8, len(part))]
    return out


def peak_rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def timed(fn: Any, repeats: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def ours(X: torch.Tensor, rows: int, cols: int, epochs: int, repeats: int,
         sigma_end: float) -> dict[str, Any]:
    def train() -> SelfOrganizingMap:
        som = SelfOrganizingMap(rows, cols, FEATURES, seed=0).initialize(X, "pca")
        return som.fit(X, epochs=epochs, sigma=max(rows, cols) / 2, sigma_end=sigma_end)

    init_s, _ = timed(lambda: SelfOrganizingMap(rows, cols, FEATURES).initialize(X, "pca"), 1)
    train_s, som = timed(train, repeats)
    score_s, _ = timed(lambda: som.bmu_distances(X), repeats)
    return {"train_s": train_s - init_s, "score_s": score_s,
            "qe": som.quantization_error(X[:QE_ROWS])}


def seed_algorithm(X: torch.Tensor, rows: int, cols: int, updates: int) -> dict[str, Any]:
    som = SelfOrganizingMap(rows, cols, FEATURES, seed=0).initialize(X, "randn")
    sample = X[: min(len(X), updates)]
    started = time.perf_counter()
    done = 0
    while done < updates:
        part = sample[: updates - done]
        som.seed_pass(part)
        done += len(part)
    return {"rate": updates / (time.perf_counter() - started),
            "qe": som.quantization_error(X[:QE_ROWS])}


def minisom(X: np.ndarray, rows: int, cols: int, updates: int) -> dict[str, Any] | None:
    try:
        from minisom import MiniSom
    except ImportError:
        return None
    som = MiniSom(rows, cols, FEATURES, sigma=1.0, learning_rate=0.5, random_seed=0)
    som.pca_weights_init(X[:QE_ROWS])
    started = time.perf_counter()
    som.train_batch(X, updates)
    rate = updates / (time.perf_counter() - started)
    sample = X[: min(len(X), 20_000)]
    started = time.perf_counter()
    qe_sample = som.quantization_error(sample)
    score_rate = len(sample) / (time.perf_counter() - started)
    qe = som.quantization_error(X[:QE_ROWS]) if len(X) > len(sample) else qe_sample
    return {"rate": rate, "score_rate": score_rate, "qe": qe}


def detector_fit(X: np.ndarray, shape: str, epochs: int) -> dict[str, Any]:
    """End to end ``AnomalyDetector.fit`` (scaler, map, threshold) and its own peak RSS."""
    with open("/proc/self/clear_refs", "w") as fh:  # reset VmHWM to the current RSS
        fh.write("5")
    started = time.perf_counter()
    det = AnomalyDetector(map_size=shape, epochs=epochs).fit(X)
    seconds = time.perf_counter() - started
    started = time.perf_counter()
    det.anomaly_score(X)
    return {"fit_s": seconds, "score_s": time.perf_counter() - started,
            "peak_rss_mb": peak_rss_mb()}


def run_one(rows_n: int, shape: str, epochs: int, repeats: int, cap: int,
            sigma_end: float) -> dict[str, Any]:
    rows, cols = (int(v) for v in shape.split("x"))
    Xn = make_data(rows_n)
    X = torch.from_numpy(Xn)
    total = rows_n * epochs
    result: dict[str, Any] = {"rows": rows_n, "map": shape, "epochs": epochs,
                              "threads": torch.get_num_threads()}
    result["ours"] = ours(X, rows, cols, epochs, repeats if rows_n <= 1_000_000 else 1,
                          sigma_end)
    result["peak_rss_mb_ours"] = peak_rss_mb()
    result["updates"] = min(total, cap)
    result["seed"] = seed_algorithm(X, rows, cols, min(total, cap))
    result["minisom"] = minisom(Xn, rows, cols, min(total, cap))
    result["peak_rss_mb"] = peak_rss_mb()
    result["detector"] = detector_fit(Xn, shape, epochs)
    return result


def report(r: dict[str, Any]) -> None:
    total = r["rows"] * r["epochs"]
    o, s, m = r["ours"], r["seed"], r["minisom"]
    train_rate = total / o["train_s"]
    score_rate = r["rows"] / o["score_s"]
    capped = "" if r["updates"] == total else f" (capped at {r['updates']:,} updates)"
    print(f"\n== {r['rows']:,} rows x {FEATURES} features, {r['map']} map, {r['epochs']} epochs,"
          f" {r['threads']} threads")
    print(f"  ours batch : train {train_rate / 1e6:8.2f} M sample-epochs/s ({o['train_s']:.2f} s)"
          f"   score {score_rate / 1e6:7.2f} M rows/s   QE {o['qe']:.4f}")
    print(f"  ours seed  : train {s['rate'] / 1e6:8.4f} M updates/s{capped}   "
          f"full run ~{total / s['rate']:,.0f} s   QE {s['qe']:.4f}   "
          f"batch/seed speed x{train_rate / s['rate']:,.0f}")
    if m is not None:
        print(f"  MiniSom    : train {m['rate'] / 1e6:8.4f} M updates/s{capped}   "
              f"full run ~{total / m['rate']:,.0f} s   score {m['score_rate'] / 1e6:.3f} M rows/s"
              f"   QE {m['qe']:.4f}")
        print(f"  ratios     : train x{train_rate / m['rate']:,.0f}  score "
              f"x{score_rate / m['score_rate']:,.0f}  QE ours/MiniSom {o['qe'] / m['qe']:.3f}")
    d = r["detector"]
    print(f"  detector   : AnomalyDetector.fit {total / d['fit_s'] / 1e6:.2f} M sample-epochs/s"
          f" ({d['fit_s']:.2f} s, scaling + map + threshold), anomaly_score "
          f"{r['rows'] / d['score_s'] / 1e6:.2f} M rows/s, peak RSS {d['peak_rss_mb']:,.0f} MB")
    print(f"  peak RSS   : {r['peak_rss_mb_ours']:,.0f} MB after ours (data "
          f"{r['rows'] * FEATURES * 4 / 2**20:,.0f} MB), {r['peak_rss_mb']:,.0f} MB at the end")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*",
                        default=[1_800, 100_000, 1_000_000, 10_000_000])
    parser.add_argument("--maps", nargs="*", default=["10x10", "30x30"])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cap", type=int, default=200_000,
                        help="most sample updates for MiniSom and the seed algorithm")
    parser.add_argument("--sigma-end", type=float, default=1 / 3,
                        help="our final radius; MiniSom's sigma=1 decays to 1/3")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch threads (default: all CPUs)")
    parser.add_argument("--single", nargs=2, metavar=("ROWS", "MAP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single:
        torch.set_num_threads(args.threads)
        res = run_one(int(args.single[0]), args.single[1], args.epochs, args.repeats, args.cap,
                      args.sigma_end)
        sys.stdout.write(json.dumps(res) + "\n")
        return
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}; medians of {args.repeats} repeats (1 above 1M rows); "
          f"every configuration in a fresh process; our final radius {args.sigma_end:.3g}")
    for shape in args.maps:
        for rows_n in args.sizes:
            cmd = [sys.executable, __file__, "--single", str(rows_n), shape, "--epochs",
                   str(args.epochs), "--repeats", str(args.repeats), "--cap", str(args.cap),
                   "--sigma-end", str(args.sigma_end), "--threads", str(args.threads)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            report(json.loads(out.strip().splitlines()[-1]))
            print(f"  load avg   : {os.getloadavg()[0]:.2f} (other processes share the CPUs)")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
