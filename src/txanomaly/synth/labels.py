"""The ground truth: which transactions are planted anomalies, and of which kind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from txanomaly.synth.anomalies import ANOMALY_KINDS

LABEL_COLUMNS: tuple[str, ...] = ("transactionId", "is_anomaly", "kind")


def labels_frame(transaction_id: pl.Series, kind: np.ndarray,
                 kinds: tuple[str, ...] = ANOMALY_KINDS) -> pl.DataFrame:
    """Labels from kind codes: 0 normal, ``i + 1`` for ``kinds[i]``."""
    return pl.DataFrame({
        "transaction_id": transaction_id,
        "is_anomaly": pl.Series((kind > 0).astype(np.int8)),
        "kind": pl.Series([None, *kinds], dtype=pl.Utf8).gather(kind.astype(np.int64)),
    })


def write_labels(labels: pl.DataFrame, path: str | Path) -> Path:
    """Write labels as CSV with the header ``transactionId,is_anomaly,kind``.

    ``kind`` is empty for normal transactions.
    """
    path = Path(path)
    renamed = labels.rename({"transaction_id": "transactionId"})
    renamed.select(LABEL_COLUMNS).write_csv(path)
    return path


def default_labels_path(output: str | Path) -> Path:
    """The labels file next to an output: ``tx.parquet`` -> ``tx.labels.csv``."""
    output = Path(output)
    return output.with_name(output.stem + ".labels.csv")
