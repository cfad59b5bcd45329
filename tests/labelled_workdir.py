"""A folder with 3,000 labelled synthetic transactions (Parquet), their labels and a small
``seed`` model trained on them: the inputs of the analysis commands' tests."""

from __future__ import annotations

from pathlib import Path

from txanomaly import synth
from txanomaly.detector import AnomalyDetector
from txanomaly.features.batch import feature_matrix
from txanomaly.io import write_table
from txanomaly.pipeline import TransactionModel


def labelled_workdir(root: Path, epochs: int) -> Path:
    """Write ``tx.parquet``, ``tx.labels.csv`` and ``model/`` (4x4 map) under ``root``."""
    data = synth.generate(3_000, users=60, days=10, anomaly_rate=0.05, seed=2)
    write_table(data.transactions, root / "tx.parquet")
    synth.write_labels(data.labels, root / "tx.labels.csv")
    model = TransactionModel("seed", AnomalyDetector(map_size="4x4", epochs=epochs))
    model.fit(feature_matrix(data.transactions, "seed"))
    model.save(root / "model")
    return root
