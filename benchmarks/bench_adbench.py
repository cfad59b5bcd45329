"""Detection quality on the 13 ADBench "Classical" data sets: our detector vs its peers.

ADBench's protocol (Han et al., NeurIPS 2022): 70/30 stratified split, 3 seeds, default
hyper-parameters, unsupervised training on the whole training part (anomalies included),
ROC-AUC and PR-AUC (average precision) on the test part. Peers (from
:mod:`txanomaly.baselines`, the ones ``txanomaly evaluate`` uses): scikit-learn's
IsolationForest, LocalOutlierFactor (novelty=True so it scores unseen rows) and the distance to
the 5th nearest training row (PyOD's KNN default), and PyOD's ECOD and HBOS when PyOD is
installed. ``benchmarks/bench_detection.py`` runs the same protocol with the product's defaults.

    .venv/bin/python benchmarks/bench_adbench.py                  # everything
    .venv/bin/python benchmarks/bench_adbench.py --datasets 6_cardio 38_thyroid --seeds 1
    .venv/bin/python benchmarks/bench_adbench.py --som map_size=15x15 sigma_end=2

Prints one row per data set (mean over seeds) and the means over data sets.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import train_test_split

from txanomaly.baselines import BASELINES, installed
from txanomaly.detector import AnomalyDetector

DATA_DIR = Path(os.environ.get(
    "ADBENCH_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "adbench"))

Scorer = Callable[[np.ndarray, np.ndarray, int], np.ndarray]


def load(name: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(DATA_DIR / f"{name}.npz", allow_pickle=False) as data:
        return np.asarray(data["X"], dtype=np.float64), np.asarray(data["y"]).astype(int)


def dataset_names() -> list[str]:
    """The ADBench sets in :data:`DATA_DIR`, by name."""
    return sorted(p.stem for p in DATA_DIR.glob("*.npz"))


def som_scorer(params: dict[str, Any]) -> Scorer:
    """Our detector with ``params``; ``random_state`` is each repetition's seed."""
    def score(train: np.ndarray, test: np.ndarray, seed: int) -> np.ndarray:
        det = AnomalyDetector(**{**params, "random_state": seed}).fit(train)
        return det.anomaly_score(test)
    return score


def peer_scorer(name: str, max_fit_rows: int | None = None) -> Scorer:
    """A peer from :data:`txanomaly.baselines.BASELINES` on the raw columns.

    Neighbour-based peers (LOF, k-NN) are fitted on at most ``max_fit_rows`` training rows
    (seeded, random) when it is given; ``None`` fits every peer on all of them.
    """
    base = BASELINES[name]

    def score(train: np.ndarray, test: np.ndarray, seed: int) -> np.ndarray:
        if base.subsample and max_fit_rows is not None and len(train) > max_fit_rows:
            rows = np.random.default_rng(seed).choice(len(train), max_fit_rows, replace=False)
            train = train[np.sort(rows)]
        return base.fit_score(train, test, seed)[1]
    return score


def peer_scorers(max_fit_rows: int | None = None) -> dict[str, Scorer]:
    """IForest, LOF and KNN always; ECOD and HBOS too when PyOD is installed."""
    names = {"IForest": "iforest", "LOF": "lof", "KNN": "knn"}
    if installed("pyod"):
        names |= {"ECOD": "ecod", "HBOS": "hbos"}
    return {label: peer_scorer(name, max_fit_rows) for label, name in names.items()}


def evaluate(name: str, scorers: dict[str, Scorer], seeds: int) -> dict[str, list[float]]:
    X, y = load(name)
    out: dict[str, list[float]] = {}
    for seed in range(seeds):
        Xtr, Xte, _, yte = train_test_split(X, y, test_size=0.3, stratify=y, random_state=seed)
        for det_name, scorer in scorers.items():
            started = time.perf_counter()
            scores = scorer(Xtr, Xte, seed)
            out.setdefault(f"{det_name} roc", []).append(roc_auc_score(yte, scores))
            out.setdefault(f"{det_name} pr", []).append(average_precision_score(yte, scores))
            out.setdefault(f"{det_name} s", []).append(time.perf_counter() - started)
    return out


def parse_params(items: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in items:
        key, _, raw = item.partition("=")
        try:
            params[key] = int(raw)
        except ValueError:
            try:
                params[key] = float(raw)
            except ValueError:
                params[key] = None if raw == "None" else raw
    return params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = dataset_names()
    parser.add_argument("--datasets", nargs="*", default=names)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--som", nargs="*", default=[], help="AnomalyDetector params k=v")
    parser.add_argument("--only-som", action="store_true", help="skip the peers")
    parser.add_argument("--max-fit-rows", type=int, default=0,
                        help="fit LOF and KNN on at most this many training rows; 0 = all")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(os.cpu_count() or 1)
    scorers: dict[str, Scorer] = {"SOM": som_scorer(parse_params(args.som))}
    if "scaling" not in parse_params(args.som):
        # robust scaling helps on these data sets (skewed columns) but not on transaction
        # features (see docs/model.md), so it is shown beside the default, not instead of it.
        scorers["SOM-rob"] = som_scorer({**parse_params(args.som), "scaling": "robust"})
    if not args.only_som:
        scorers |= peer_scorers(args.max_fit_rows or None)
    print(f"SOM params: {parse_params(args.som) or 'defaults'}; {args.seeds} seeds; "
          "70/30 stratified split")
    table = {name: evaluate(name, scorers, args.seeds) for name in args.datasets}
    print_table(table, list(scorers))


def print_table(table: dict[str, dict[str, list[float]]], detectors: list[str]) -> None:
    for metric in ("roc", "pr"):
        print(f"\n{'ROC-AUC' if metric == 'roc' else 'PR-AUC'} (mean over seeds)")
        print(f"{'data set':<18}" + "".join(f"{d:>9}" for d in detectors))
        means: dict[str, list[float]] = {d: [] for d in detectors}
        for name, res in table.items():
            row = [float(np.mean(res[f"{d} {metric}"])) for d in detectors]
            for d, v in zip(detectors, row, strict=True):
                means[d].append(v)
            print(f"{name:<18}" + "".join(f"{v:>9.3f}" for v in row))
        print(f"{'MEAN':<18}" + "".join(f"{np.mean(means[d]):>9.3f}" for d in detectors))
    seconds = {d: sum(float(np.sum(r[f"{d} s"])) for r in table.values()) for d in detectors}
    print("\nseconds in total: " + ", ".join(f"{d} {s:.1f}" for d, s in seconds.items()))


if __name__ == "__main__":
    main()
