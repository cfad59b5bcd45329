"""What the detection benchmark measures beyond :mod:`txanomaly.evaluate`: the top 1 %.

An analyst reads the top of the list. Two questions about it, written once:

* :func:`precision_at_fraction` -- how many of the top ``fraction`` of the scores are labelled
  anomalies (the top ``k`` are :func:`top_count` rows, ties broken by row order as in
  :func:`txanomaly.evaluate.top_k_mask`);
* :func:`top_fraction_composition` -- which feature leads the reasons of each of those rows, and
  per leading feature how many rows it leads and how many of them are labelled anomalies. A
  list whose top is led by one feature with low precision says that feature decides by accident.

>>> y = np.array([1, 0, 1, 0, 0, 0, 0, 0, 0, 0])
>>> scores = np.array([9.0, 8.0, 7.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
>>> precision_at_fraction(y, scores, 0.3)
0.6666666666666666
>>> lead = np.array(["amount", "count", "amount"] + ["hour"] * 7)
>>> [(g.feature, g.count, g.anomalies) for g in top_fraction_composition(y, scores, lead, 0.3)]
[('amount', 2, 2), ('count', 1, 0)]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from txanomaly.errors import TxAnomalyError
from txanomaly.evaluate import top_k_mask

#: The share of the test rows an analyst reads: "precision at 1 %".
TOP_FRACTION = 0.01


def top_count(n: int, fraction: float = TOP_FRACTION) -> int:
    """Rows in the top ``fraction`` of ``n``: ``ceil(fraction * n)``, at least 1 (0 when n is 0).

    >>> top_count(80_000), top_count(150), top_count(0)
    (800, 2, 0)
    """
    if not 0.0 < fraction <= 1.0:
        raise TxAnomalyError(f"fraction must be in (0, 1], got {fraction}")
    if n <= 0:
        return 0
    # round first: 0.01 * 80_000 is 800.0000000000001 in floating point
    return max(1, math.ceil(round(fraction * n, 9)))


def precision_at_fraction(y: np.ndarray, scores: np.ndarray,
                          fraction: float = TOP_FRACTION) -> float:
    """Share of labelled anomalies among the :func:`top_count` highest ``scores``.

    NaN when there are no rows.
    """
    y, scores = _checked(y, scores)
    k = top_count(len(y), fraction)
    if k == 0:
        return float("nan")
    return float(y[top_k_mask(scores, k)].sum() / k)


@dataclass(frozen=True)
class LeadGroup:
    """The rows of the top fraction whose reasons one feature leads."""

    feature: str
    count: int
    anomalies: int

    @property
    def precision(self) -> float:
        """Share of the group's rows that are labelled anomalies."""
        return self.anomalies / self.count

    def to_dict(self, top: int) -> dict[str, float | int | str]:
        """JSON-ready, with the group's share of the ``top`` rows."""
        return {"feature": self.feature, "count": self.count, "share": self.count / top,
                "anomalies": self.anomalies, "precision": self.precision}


def top_fraction_composition(y: np.ndarray, scores: np.ndarray, leading: np.ndarray,
                             fraction: float = TOP_FRACTION) -> list[LeadGroup]:
    """Group the top ``fraction`` of ``scores`` by each row's leading feature.

    ``leading`` holds, per row, the name of the feature that leads its reasons (for a
    :class:`~txanomaly.detector.Explanation`, ``names[explanation.top_features()[:, 0]]``).
    Groups come largest first (ties by name); their counts sum to :func:`top_count` rows.
    """
    y, scores = _checked(y, scores)
    leading = np.asarray(leading)
    if leading.shape != y.shape:
        raise TxAnomalyError(f"leading has shape {leading.shape}; expected {y.shape}, one "
                             "feature name per row")
    top = top_k_mask(scores, top_count(len(y), fraction))
    names, inverse = np.unique(leading[top].astype(str), return_inverse=True)
    counts = np.bincount(inverse, minlength=len(names))
    hits = np.bincount(inverse, weights=y[top], minlength=len(names))
    groups = [LeadGroup(str(name), int(c), int(h))
              for name, c, h in zip(names, counts, hits, strict=True)]
    return sorted(groups, key=lambda g: (-g.count, g.feature))


def _checked(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or y.shape != scores.shape:
        raise TxAnomalyError(f"labels have shape {y.shape} and scores {scores.shape}; "
                             "expected two equal 1-d arrays")
    return y, scores


__all__ = ["TOP_FRACTION", "LeadGroup", "precision_at_fraction", "top_count",
           "top_fraction_composition"]
