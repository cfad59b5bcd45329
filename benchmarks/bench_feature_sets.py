"""Which feature set detects the labelled synthetic anomalies best? (The evidence for `standard`.)

DESIGN section 3: choose the `standard` set by what it does to detection on labelled data,
precision at the top of the ranking, not only ROC-AUC. For each candidate (the seed set, the
standard set as shipped, and variants of it), train the default detector on the first 60 % of a
labelled synthetic history (time order) and rank the last 40 %:

    python benchmarks/bench_feature_sets.py               # 200k transactions, 3 seeds
    python benchmarks/bench_feature_sets.py -n 50000 --seeds 1

Prints ROC-AUC, PR-AUC, precision at k (k = number of anomalies in the test part) and at 1 %,
the recall at the model's threshold, recall per anomaly kind at k, and the share of the top-k
that each feature "decides" (its largest share of the squared distance), which shows whether a
single feature dominates the ranking.
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import replace

import numpy as np
import polars as pl
from sklearn.metrics import average_precision_score, roc_auc_score

from txanomaly.detector import AnomalyDetector
from txanomaly.features.batch import feature_matrix
from txanomaly.features.spec import SEED, STANDARD, Feature, FeatureSet
from txanomaly.pipeline import TransactionModel
from txanomaly.synth import generate


def variant(name: str, fs: FeatureSet, change) -> FeatureSet:  # type: ignore[no-untyped-def]
    return FeatureSet(name, tuple(change(f) for f in fs.features))


def untransformed(f: Feature) -> Feature:
    return replace(f, transform="none", clip=None)


CANDIDATES: dict[str, FeatureSet] = {
    "seed": SEED,
    "standard": STANDARD,
    "standard, weights all 1": variant("unweighted", STANDARD, lambda f: replace(f, weight=1.0)),
    "standard, no transforms": variant("raw", STANDARD, untransformed),
    "standard, no clip": variant("noclip", STANDARD, lambda f: replace(f, clip=None)),
    "standard minus flags": FeatureSet("noflags", tuple(
        f for f in STANDARD.features if f.op not in ("cross_border", "currency_mismatch",
                                                     "is_first_pair"))),
}


def run(fs: FeatureSet, frame: pl.DataFrame, labels: np.ndarray, kinds: np.ndarray,
        seed: int) -> dict[str, float]:
    X = feature_matrix(frame, fs)
    cut = int(0.6 * len(X))
    model = TransactionModel(fs, AnomalyDetector(random_state=seed)).fit(X[:cut])
    scores = model.anomaly_score(X[cut:])
    y, kind = labels[cut:], kinds[cut:]
    k = int(y.sum())
    top = np.argsort(-scores, kind="stable")[:k]
    top1 = np.argsort(-scores, kind="stable")[: max(len(y) // 100, 1)]
    out = {
        "roc_auc": roc_auc_score(y, scores),
        "pr_auc": average_precision_score(y, scores),
        "p@k": float(y[top].mean()),
        "p@1%": float(y[top1].mean()),
        "recall@thr": float(model.is_anomaly(X[cut:])[y == 1].mean()),
    }
    for name in sorted(set(kind[y == 1])):
        out[f"recall@k {name}"] = float(np.isin(np.flatnonzero(kind == name), top).mean())
    decider = model.explanation(X[cut:][top]).share.argmax(axis=1)
    counts = np.bincount(decider, minlength=len(fs.names)) / len(top)
    out["top-k decided most by"] = f"{fs.names[int(counts.argmax())]} ({counts.max():.0%})"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=200_000)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    rows: dict[str, list[dict]] = {name: [] for name in CANDIDATES}
    for seed in range(args.seeds):
        data = generate(args.n, users=max(args.n // 40, 10), days=30, anomaly_rate=0.01,
                        seed=seed)
        frame = data.transactions
        lab = frame.select("transaction_id").join(data.labels, on="transaction_id", how="left")
        labels = lab.get_column("is_anomaly").fill_null(0).to_numpy()
        kinds = lab.get_column("kind").fill_null("").to_numpy()
        for name, fs in CANDIDATES.items():
            rows[name].append(run(fs, frame, labels, kinds, seed))
    print(f"# bench_feature_sets: n={args.n:,}, 1% anomalies, train first 60% / test last 40% "
          f"(time order), default detector (10x10, batch, 20 epochs); median of "
          f"{args.seeds} seeds")
    metrics = [m for m in rows["seed"][0] if m != "top-k decided most by"]
    print(f"{'feature set':<26}" + "".join(f"{m[:22]:>24}" for m in metrics))
    for name, results in rows.items():
        cells = "".join(f"{statistics.median(r.get(m, float('nan')) for r in results):>24.3f}"
                        for m in metrics)
        print(f"{name:<26}{cells}")
    print()
    for name, results in rows.items():
        print(f"{name:<26} top-k decided most by: {results[0]['top-k decided most by']}")


if __name__ == "__main__":
    main()
