"""Turning raw feature rows into verdicts (no HTTP here: the routers call this).

A verdict is the JSON object the API answers for each transaction::

    {"transactionId": "t1", "anomalyScore": 3.1, "isAnomaly": true, "verdict": "FLAG",
     "riskLevel": "HIGH", "threshold": 2.4, "reasons": [...], "modelVersion": "standard-1a2b..."}

``isAnomaly`` is ``anomalyScore > threshold`` (the model's rule) and ``verdict`` is ``FLAG``
exactly when ``isAnomaly``. ``riskLevel`` grades the score against the threshold:
``LOW`` below 0.75 x threshold, ``MEDIUM`` up to the threshold, ``HIGH`` up to 2 x, ``CRITICAL``
above.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from txanomaly import artifact
from txanomaly.errors import ModelFileError
from txanomaly.features.online import OnlineFeatures
from txanomaly.pipeline import TransactionModel
from txanomaly.store import Scored

#: riskLevel bands, as multiples of the threshold (upper bounds, inclusive).
RISK_BANDS: tuple[tuple[float, str], ...] = ((0.75, "LOW"), (1.0, "MEDIUM"), (2.0, "HIGH"))


def risk_level(score: float, threshold: float) -> str:
    """Grade a score against the threshold.

    >>> [risk_level(s, 2.0) for s in (1.0, 2.0, 3.0, 5.0)]
    ['LOW', 'MEDIUM', 'HIGH', 'CRITICAL']
    """
    ratio = score / threshold if threshold > 0 else (np.inf if score > threshold else 0.0)
    for bound, level in RISK_BANDS:
        if ratio <= bound:
            return level
    return "CRITICAL"


class Scorer:
    """A loaded model, its online feature engine and its version string.

    Parameters
    ----------
    model : TransactionModel
    version : str
        Reported as ``modelVersion`` in every verdict.
    metadata : dict
        The model's ``model.json`` (``GET /v1/model`` shows part of it).
    top : int
        Reasons per verdict.
    """

    def __init__(self, model: TransactionModel, version: str, metadata: dict[str, Any],
                 top: int = 3):
        self.model = model
        self.version = version
        self.metadata = metadata
        self.top = top
        self.threshold = model.threshold
        self.online = OnlineFeatures(model.feature_set)
        self.n_features = len(model.feature_names)

    @classmethod
    def load(cls, path: str | Path, top: int = 3) -> Scorer:
        """Load a model directory written by ``TransactionModel.save``."""
        loaded = artifact.load(path)
        if loaded.feature_set is None:
            raise ModelFileError(f"{path}: the model has no feature set, so the service cannot "
                                 "compute its features; train it with TransactionModel")
        sha = str(loaded.metadata.get("tensors", {}).get("sha256", ""))[:12]
        version = f"{loaded.feature_set.name}-{sha}"
        return cls(TransactionModel(loaded.feature_set, loaded.detector), version,
                   loaded.metadata, top)

    def explain(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(anomaly_score, share, prototype)`` of raw feature rows.

        The same arithmetic as ``TransactionModel.explanation`` (feature transforms, the
        detector's float32 scaling, ``bmu_distances``, shares in float64, prototypes mapped
        back to raw units), without its per-call input validation, which cost about twice
        the arithmetic on a one-row request: the service's rows come from validated records.
        tests/test_service.py checks that both give the same numbers.
        """
        raw = np.asarray(raw, dtype=np.float64)
        if raw.ndim != 2 or raw.shape[1] != self.n_features or not np.isfinite(raw).all():
            raise ValueError(f"expected finite rows of {self.n_features} features, got "
                             f"shape {raw.shape}")
        det = self.model.detector
        inputs = self.model.feature_set.transform(raw)
        scaled = np.empty(inputs.shape, dtype=np.float32)
        scaled[:] = (inputs - det.center_) / det.scale_
        with torch.no_grad():
            dist, bmu = det.som_.bmu_distances(torch.from_numpy(scaled))
            proto_scaled = det.som_.weights[bmu].double().cpu().numpy()
        diff_sq = (scaled.astype(np.float64) - proto_scaled) ** 2
        total = diff_sq.sum(1, keepdims=True)
        share = np.divide(diff_sq, total, out=np.zeros_like(diff_sq), where=total > 0)
        prototype = self.model.feature_set.inverse_transform(
            proto_scaled * det.scale_ + det.center_)
        return dist.double().cpu().numpy(), share, prototype

    def verdicts(self, features: np.ndarray, ids: Sequence[str | None]) -> list[Scored]:
        """One verdict per raw feature row (one model call for the whole batch)."""
        if len(features) == 0:
            return []
        scores, share, prototype = self.explain(features)
        top = np.argsort(-share, axis=1, kind="stable")[:, : self.top]
        names = self.model.feature_names
        out = []
        for i, tid in enumerate(ids):
            score = float(scores[i])
            flagged = score > self.threshold
            reasons = [{"feature": names[j], "share": float(share[i, j]),
                        "value": float(features[i, j]), "prototype": float(prototype[i, j])}
                       for j in top[i]]
            out.append(Scored(score, flagged, {
                "transactionId": tid, "anomalyScore": score, "isAnomaly": flagged,
                "verdict": "FLAG" if flagged else "ALLOW",
                "riskLevel": risk_level(score, self.threshold),
                "threshold": self.threshold, "reasons": reasons,
                "modelVersion": self.version}))
        return out

    def describe(self) -> dict[str, Any]:
        """What ``GET /v1/model`` answers."""
        meta = self.metadata
        return {
            "modelVersion": self.version,
            "featureSet": self.model.feature_set.name,
            "featureNames": self.model.feature_names,
            "threshold": self.threshold,
            "contamination": meta.get("contamination"),
            "map": meta.get("map"),
            "packageVersion": meta.get("package_version"),
            "formatVersion": meta.get("format_version"),
            "trainingSummary": meta.get("training_summary") or {},
        }
