"""Turning anomaly scores into decisions: the threshold rule and the risk levels, written once.

Anomaly scores are **higher = more anomalous** everywhere in txanomaly. A row is an anomaly
when its score is **strictly greater** than the threshold (:func:`exceeds`); every caller (the
detector, the model, reports, evaluation, the service) goes through that one function.

:class:`QuantileThreshold` is the small object that learns the threshold (PyOD's
contamination contract: the ``1 - contamination`` quantile of the training scores) or holds a
fixed one. :func:`risk_level` grades a score against the threshold for people.

>>> t = QuantileThreshold.fit(np.arange(101.0), contamination=0.05)
>>> t.value, t.flags(np.array([95.0, 95.5])).tolist()
(95.0, [False, True])
>>> risk_levels(np.array([1.0, 2.0, 3.0, 5.0]), 2.0).tolist()
['LOW', 'MEDIUM', 'HIGH', 'CRITICAL']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: Risk-level bands as multiples of the threshold (upper bounds, inclusive); above the last
#: bound a score is ``CRITICAL``. ``MEDIUM`` ends exactly at the threshold, so ``HIGH`` and
#: ``CRITICAL`` are the flagged rows.
RISK_BANDS: tuple[tuple[float, str], ...] = ((0.75, "LOW"), (1.0, "MEDIUM"), (2.0, "HIGH"))
RISK_LEVELS = (*(level for _, level in RISK_BANDS), "CRITICAL")


def exceeds(scores: Any, threshold: float) -> np.ndarray:
    """The threshold rule: ``True`` where the anomaly score is strictly above ``threshold``.

    >>> exceeds([1.0, 2.0, 2.5], 2.0).tolist()
    [False, False, True]
    """
    return np.asarray(scores) > threshold


def risk_levels(scores: Any, threshold: float) -> np.ndarray:
    """Grade each score against the threshold (:data:`RISK_BANDS`); an array of level names.

    With a threshold <= 0 the ratio is undefined: a score above it is ``CRITICAL`` and any
    other ``LOW``.
    """
    return np.asarray(RISK_LEVELS, dtype=object)[risk_level_codes(scores, threshold)]


def risk_level_codes(scores: Any, threshold: float) -> np.ndarray:
    """:func:`risk_levels` as positions in :data:`RISK_LEVELS` (int64): for large tables,
    where one string object per row is the slow part.

    >>> risk_level_codes([1.0, 2.0, 3.0, 5.0], 2.0).tolist()
    [0, 1, 2, 3]
    """
    scores = np.asarray(scores, dtype=np.float64)
    if threshold > 0:
        ratio = scores / threshold
    else:
        ratio = np.where(exceeds(scores, threshold), np.inf, 0.0)
    bounds = np.array([bound for bound, _ in RISK_BANDS])
    return np.searchsorted(bounds, ratio, side="left")


def risk_level(score: float, threshold: float) -> str:
    """:func:`risk_levels` of one score.

    >>> [risk_level(s, 2.0) for s in (1.0, 2.0, 3.0, 5.0)]
    ['LOW', 'MEDIUM', 'HIGH', 'CRITICAL']
    """
    return str(risk_levels([score], threshold)[0])


@dataclass(frozen=True)
class QuantileThreshold:
    """Turns anomaly scores into flags: a score strictly above ``value`` is an anomaly.

    ``value`` is the ``1 - contamination`` quantile of the scores it was fitted on, unless a
    fixed value was given.
    """

    value: float
    contamination: float | None = None

    @classmethod
    def fit(cls, scores: np.ndarray, contamination: float) -> QuantileThreshold:
        """The ``1 - contamination`` quantile of ``scores``."""
        return cls(float(np.quantile(scores, 1.0 - contamination)), contamination)

    def flags(self, scores: Any) -> np.ndarray:
        """:func:`exceeds` with this threshold."""
        return exceeds(scores, self.value)


__all__ = ["RISK_BANDS", "RISK_LEVELS", "QuantileThreshold", "exceeds", "risk_level",
           "risk_levels"]
