"""Verdicts: what a loaded model answers for each transaction (the core; no HTTP here).

A verdict is the JSON object the service answers and the store keeps for each transaction::

    {"transactionId": "t1", "anomalyScore": 3.1, "isAnomaly": true, "verdict": "FLAG",
     "riskLevel": "HIGH", "threshold": 2.4, "reasons": [...], "modelVersion": "standard-1a2b..."}

Every number in it comes from :meth:`TransactionModel.explanation
<txanomaly.pipeline.TransactionModel.explanation>`, the one scoring path: ``isAnomaly`` is the
threshold rule (:func:`txanomaly.threshold.exceeds`), ``verdict`` is ``FLAG`` exactly when
``isAnomaly``, and ``riskLevel`` grades the score against the threshold
(:func:`txanomaly.threshold.risk_levels`: ``LOW`` up to 0.75 x threshold, ``MEDIUM`` up to the
threshold, ``HIGH`` up to 2 x, ``CRITICAL`` above).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from txanomaly import artifact
from txanomaly.errors import ModelFileError
from txanomaly.features.online import OnlineFeatures
from txanomaly.pipeline import TransactionModel


@dataclass(frozen=True)
class Verdict:
    """One transaction's verdict: the score and flag (kept as columns) and the JSON answer."""

    anomaly_score: float
    is_anomaly: bool
    result: dict[str, Any]


class Scorer:
    """A loaded model, its online feature engine and its version string.

    Parameters
    ----------
    model : TransactionModel
        A fitted model.
    version : str
        Reported as ``modelVersion`` in every verdict.
    metadata : dict
        The model's ``model.json`` (:meth:`describe` shows part of it).
    top : int
        Reasons per verdict.
    """

    def __init__(self, model: TransactionModel, version: str, metadata: dict[str, Any],
                 top: int = 3, verified: bool = False):
        self.model = model
        self.version = version
        self.metadata = metadata
        self.top = top
        #: Whether a key verified the model's signature when it was loaded.
        self.verified = verified
        self.threshold = model.threshold
        self.online = OnlineFeatures(model.feature_set_)

    @classmethod
    def load(cls, path: str | Path, top: int = 3, key: artifact.Key | None = None) -> Scorer:
        """Load a model directory written by ``TransactionModel.save``.

        The version is :func:`txanomaly.artifact.model_version`: it changes with anything that
        decides a verdict (tensors, threshold, feature set...). With ``key``, the model must
        be signed with it (:func:`txanomaly.artifact.load`).
        """
        loaded = artifact.load(path, key=key)
        if loaded.feature_set is None:
            raise ModelFileError(f"{path}: the model has no feature set, so its features cannot "
                                 "be computed from transactions; train it with TransactionModel")
        return cls(TransactionModel.from_fitted(loaded.feature_set, loaded.detector),
                   loaded.version, loaded.metadata, top, loaded.verified)

    @property
    def feature_names(self) -> list[str]:
        """The model's features, in order."""
        return self.model.feature_names

    def verdicts(self, features: np.ndarray, ids: Sequence[str | None]) -> list[Verdict]:
        """One verdict per raw feature row (one model call for the whole batch)."""
        if len(features) == 0:
            return []
        exp = self.model.explanation(features, top=self.top)
        threshold, version = self.threshold, self.version
        return [Verdict(score, flag, {
                    "transactionId": tid, "anomalyScore": score, "isAnomaly": flag,
                    "verdict": "FLAG" if flag else "ALLOW", "riskLevel": level,
                    "threshold": threshold, "reasons": reasons, "modelVersion": version})
                for tid, score, flag, level, reasons in zip(
                    ids, exp.anomaly_score.tolist(), exp.is_anomaly.tolist(),
                    exp.risk_level.tolist(), exp.reasons(), strict=True)]

    def describe(self) -> dict[str, Any]:
        """The loaded model, as ``GET /v1/model`` answers it."""
        meta = self.metadata
        return {
            "modelVersion": self.version,
            "featureSet": self.model.feature_set_.name,
            "featureNames": self.model.feature_names,
            "threshold": self.threshold,
            "contamination": meta.get("contamination"),
            "map": meta.get("map"),
            "packageVersion": meta.get("package_version"),
            "formatVersion": meta.get("format_version"),
            "trainingSummary": meta.get("training_summary") or {},
            "thresholdSource": meta.get("threshold_source"),
            "signature": {"signed": isinstance(signed := meta.get("signature"), dict),
                          "algorithm": signed.get("algorithm") if isinstance(signed, dict)
                          else None,
                          "verified": self.verified},
        }


__all__ = ["Scorer", "Verdict"]
