"""The SOM on a CUDA GPU against the CPU, in the same run: training and scoring rates.

For each data size (rows x 20 float32 features, bench_som's Gaussian mixture) and map:

* ``SelfOrganizingMap.fit`` (batch algorithm, PCA init, 20 epochs): sample-epochs per second
  (rows x epochs / seconds), on the CPU (all its threads) and on the GPU (data already on the
  device; synchronised before the clock stops);
* ``bmu_distances`` (BMU and exact distance of every row): rows per second;
* ``AnomalyDetector.fit`` + ``anomaly_score`` end to end from a NumPy array (scaling, the
  map, the threshold, host-device copies included);
* the ratio GPU / CPU, and the quantization errors of both maps (they differ by float32
  summation order only).

Medians over ``--repeats``. Without a GPU it says so and exits 0.

    python benchmarks/bench_device.py                       # 1e5, 1e6, 1e7 rows; 10x10, 30x30
    python benchmarks/bench_device.py --sizes 100000 --maps 10x10 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from bench_som import FEATURES, make_data

from txanomaly.detector import AnomalyDetector
from txanomaly.som import SelfOrganizingMap


def timed(fn: Callable[[], Any], repeats: int, device: str) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        result = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def one(X: np.ndarray, shape: tuple[int, int], epochs: int, repeats: int, device: str
        ) -> dict[str, Any]:
    rows, cols = shape
    data = torch.from_numpy(X).to(device)

    def train() -> SelfOrganizingMap:
        som = SelfOrganizingMap(rows, cols, FEATURES, seed=0, device=device)
        return som.initialize(data, "pca").fit(data, epochs=epochs, sigma=max(rows, cols) / 2,
                                                sigma_end=1 / 3)

    train_s, som = timed(train, repeats, device)
    score_s, _ = timed(lambda: som.bmu_distances(data), repeats, device)
    detector_s, _ = timed(lambda: AnomalyDetector(map_size=shape, epochs=epochs, device=device)
                          .fit(X).anomaly_score(X), 1, device)
    qe = som.quantization_error(data[:100_000])
    return {"train_rate": len(X) * epochs / train_s, "score_rate": len(X) / score_s,
            "detector_s": detector_s, "qe": qe}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*",
                        default=[100_000, 1_000_000, 10_000_000])
    parser.add_argument("--maps", nargs="*", default=["10x10", "30x30"])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA GPU here: nothing to compare")
        return 0
    print(f"GPU: {torch.cuda.get_device_name()}; CPU threads: {torch.get_num_threads()}; "
          f"torch {torch.__version__}")
    print("| rows | map | device | train sample-epochs/s | score rows/s | detector fit+score s "
          "| QE |")
    print("|---:|---|---|---:|---:|---:|---:|")
    results = []
    for n in args.sizes:
        X = make_data(n)
        for shape_text in args.maps:
            shape = tuple(int(v) for v in shape_text.split("x"))
            assert len(shape) == 2
            per = {dev: one(X, (shape[0], shape[1]), args.epochs,
                            1 if n > 1_000_000 else args.repeats, dev)
                   for dev in ("cpu", "cuda")}
            for dev, r in per.items():
                print(f"| {n:,} | {shape_text} | {dev} | {r['train_rate']:,.0f} | "
                      f"{r['score_rate']:,.0f} | {r['detector_s']:.2f} | {r['qe']:.4f} |")
            ratio = {k: per["cuda"][k] / per["cpu"][k] for k in ("train_rate", "score_rate")}
            print(f"| {n:,} | {shape_text} | GPU/CPU | {ratio['train_rate']:.1f}x | "
                  f"{ratio['score_rate']:.1f}x | "
                  f"{per['cpu']['detector_s'] / per['cuda']['detector_s']:.1f}x | |")
            results.append({"rows": n, "map": shape_text, **per, "ratio": ratio})
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
