"""The analysts' decisions as labels, and the threshold they recommend.

Decisions (``fraud``, ``not_fraud``, ``escalate``; :mod:`txanomaly.storage.sql_review`) become
labels by one rule, :data:`LABELS`: fraud is an anomaly (1), not fraud is not (0), and an
escalation labels nothing yet. :func:`feedback_labels` turns them into the labels table
:func:`txanomaly.evaluate.load_labels` returns.

:func:`calibrate` moves the threshold over the stored anomaly scores and measures, at each
candidate, the **precision** of the analysts' labels above it (the share of decided
transactions above it that were fraud), the **recall** of confirmed fraud (the share of it
above), the **alerts a day** the stored traffic would have raised, and the **reviewed share**
(labels above it / alerts above it). It recommends the lowest threshold (the most fraud
caught) that meets a target precision, or keeps the alerts a day within a budget, or both.

Below the threshold in force few transactions were reviewed (the queue only holds flagged
ones), so precision there would be measured on a small, selected part of the traffic. A
precision counts only where at least ``min_labels`` decisions lie above the threshold and at
least ``min_reviewed`` of the alerts above it were reviewed; to lower the threshold, review a
sample of the transactions below it first (the user pages list them). ``bounds`` keeps the
recommendation within what the model file accepts (from the median training score to 10 x
the largest).

>>> scores = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
>>> cal = calibrate(scores, np.array([0, 0, 1, 0, 1, 1]), scores, np.arange(6) * 86_400_000,
...                 current=2.5, target_precision=0.75, min_labels=1, min_reviewed=0.5)
>>> cal.recommended, cal.rule
(2.0, 'precision >= 0.75')
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from txanomaly.errors import TxAnomalyError

#: Decision -> label. Escalations are not labels: someone still has to decide.
LABELS: dict[str, int] = {"fraud": 1, "not_fraud": 0}
UNREVIEWED = ("normal", "skip")
DAY_MS = 86_400_000
#: Candidate thresholds taken from the score distribution (besides every labelled score).
_GRID = 400


def feedback_labels(decisions: Mapping[str, str], transaction_ids: Sequence[str] | None = None,
                    unreviewed: str = "normal") -> pl.DataFrame:
    """A labels table (``transaction_id``, ``is_anomaly``, ``kind``) from the decisions in
    force.

    ``unreviewed``: ``normal`` labels every id of ``transaction_ids`` that has no fraud / not
    fraud decision as normal (0: what was not reported is taken as legitimate); ``skip``
    keeps only the decided ones.

    >>> feedback_labels({"a": "fraud", "b": "escalate"}, ["a", "b", "c"]).rows()
    [('a', 1, 'fraud'), ('b', 0, None), ('c', 0, None)]
    """
    if unreviewed not in UNREVIEWED:
        raise TxAnomalyError(f"unreviewed must be one of {', '.join(UNREVIEWED)}, "
                             f"got {unreviewed!r}")
    decided = {tid: LABELS[d] for tid, d in decisions.items() if d in LABELS}
    if unreviewed == "normal" and transaction_ids is not None:
        ids = list(dict.fromkeys(transaction_ids))
        y = [decided.get(tid, 0) for tid in ids]
    else:
        ids, y = list(decided), list(decided.values())
    kind = ["fraud" if v else None for v in y]
    return pl.DataFrame({"transaction_id": ids, "is_anomaly": y, "kind": kind},
                        schema={"transaction_id": pl.Utf8, "is_anomaly": pl.Int8,
                                "kind": pl.Utf8})


@dataclass(frozen=True)
class Calibration:
    """The trade-off at each candidate threshold, and the recommendation."""

    thresholds: np.ndarray
    precision: np.ndarray       # NaN where no decision lies above
    recall: np.ndarray
    labelled_above: np.ndarray
    alerts_per_day: np.ndarray
    reviewed_share: np.ndarray  # labelled above / alerts above (NaN without alerts)
    current: float
    recommended: float | None
    rule: str
    days: float
    labels: int
    frauds: int
    warnings: list[str] = field(default_factory=list)

    def at(self, threshold: float) -> dict[str, Any]:
        """The row of the candidate nearest to ``threshold``."""
        i = int(np.argmin(np.abs(self.thresholds - threshold)))
        return {"threshold": float(self.thresholds[i]),
                "precision": _finite(self.precision[i]), "recall": _finite(self.recall[i]),
                "labelled_above": int(self.labelled_above[i]),
                "alerts_per_day": float(self.alerts_per_day[i]),
                "reviewed_share": _finite(self.reviewed_share[i])}

    def to_dict(self) -> dict[str, Any]:
        return {"current": self.at(self.current),
                "recommended": None if self.recommended is None else self.at(self.recommended),
                "rule": self.rule, "days": self.days, "labels": self.labels,
                "frauds": self.frauds, "warnings": list(self.warnings)}


def calibrate(labelled_scores: np.ndarray, labels: np.ndarray, scores: np.ndarray,
              timestamps: np.ndarray, current: float, *, target_precision: float | None = None,
              daily_budget: float | None = None, min_labels: int = 20,
              min_reviewed: float = 0.5, bounds: tuple[float, float] | None = None
              ) -> Calibration:
    """Measure the trade-off and recommend a threshold (see the module docstring).

    Parameters
    ----------
    labelled_scores, labels : arrays
        The stored anomaly score and the label (1 fraud, 0 not fraud) of each decided
        transaction.
    scores, timestamps : arrays
        Every stored transaction's anomaly score and time (ms): the alert volumes.
    current : float
        The threshold in force.
    target_precision : float in (0, 1], optional
    daily_budget : float > 0, optional
        At least one of the two; with both, the threshold meets both.
    min_labels : int
        Decisions needed above a threshold before its precision counts.
    min_reviewed : float in [0, 1]
        Share of the alerts above a threshold that must have been reviewed before its
        precision counts.
    bounds : (low, high), optional
        Thresholds outside are never recommended.
    """
    if target_precision is None and daily_budget is None:
        raise TxAnomalyError("give a target precision or a daily alert budget (or both)")
    if target_precision is not None and not 0 < target_precision <= 1:
        raise TxAnomalyError(f"target precision must be in (0, 1], got {target_precision}")
    if daily_budget is not None and not daily_budget > 0:
        raise TxAnomalyError(f"the daily alert budget must be > 0, got {daily_budget}")
    ls = np.asarray(labelled_scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int8)
    s = np.sort(np.asarray(scores, dtype=np.float64))
    ts = np.asarray(timestamps, dtype=np.int64)
    if not len(s):
        raise TxAnomalyError("no stored transactions: nothing to calibrate on")
    if target_precision is not None and not len(ls):
        raise TxAnomalyError("no fraud / not fraud decisions yet: a target precision needs "
                             "labelled feedback")
    days = max((int(ts.max()) - int(ts.min())) / DAY_MS, 1.0)
    grid = np.unique(np.concatenate([
        ls, np.quantile(s, np.linspace(0.5, 1.0, _GRID)), [current]]))
    order = np.argsort(ls)
    ls_sorted, y_sorted = ls[order], y[order]
    above = len(ls_sorted) - np.searchsorted(ls_sorted, grid, side="right")
    fraud_cum = np.concatenate([[0], np.cumsum(y_sorted[::-1])])[::-1]  # frauds from i on
    frauds_above = fraud_cum[len(ls_sorted) - above]
    total_frauds = int(y.sum())
    alerts = (len(s) - np.searchsorted(s, grid, side="right")).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(above > 0, frauds_above / above, np.nan)
        recall = (frauds_above / total_frauds if total_frauds
                  else np.full(len(grid), np.nan))
        reviewed = np.where(alerts > 0, above / alerts, np.nan)
    ok = np.ones(len(grid), dtype=bool)
    if bounds is not None:
        ok &= (grid >= bounds[0]) & (grid <= bounds[1])
    rules = []
    if target_precision is not None:
        ok &= (precision >= target_precision) & (above >= min_labels) & (reviewed >= min_reviewed)
        rules.append(f"precision >= {target_precision:g}")
    if daily_budget is not None:
        ok &= alerts / days <= daily_budget
        rules.append(f"alerts a day <= {daily_budget:g}")
    recommended = float(grid[np.argmax(ok)]) if ok.any() else None
    warnings = _warnings(recommended, current, reviewed, ok, min_labels, min_reviewed)
    return Calibration(grid, precision, recall, above, alerts / days, reviewed, float(current),
                       recommended, " and ".join(rules), days, len(ls), total_frauds,
                       warnings)


def _warnings(recommended: float | None, current: float, reviewed: np.ndarray,
              ok: np.ndarray, min_labels: int, min_reviewed: float) -> list[str]:
    if recommended is None:
        return [f"no threshold meets the target (a precision needs at least {min_labels} "
                f"decisions above the threshold and {min_reviewed:.0%} of its alerts "
                "reviewed; and the threshold must stay within the model's range)"]
    out = []
    i = int(np.argmax(ok))
    if recommended < current and not reviewed[i] >= 0.5:
        out.append(f"the recommended threshold is below the one in force and only "
                   f"{_pct(reviewed[i])} of the alerts above it were reviewed: its precision "
                   "is measured on a selected few; review more transactions below the "
                   "threshold in force before lowering it")
    return out


def _pct(value: float) -> str:
    return "none" if not math.isfinite(value) else f"{value:.0%}"


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


__all__ = ["LABELS", "UNREVIEWED", "Calibration", "calibrate", "feedback_labels"]
