"""The arithmetic of each feature, shared by the batch and the online engine.

Each function takes NumPy arrays (the batch engine) or 0-d values (the online engine) and does
the same floating-point operations in the same order for both, so the two engines agree to the
last bit when they are given the same running sums.

>>> float(mean_diff(30.0, 40.0, 2))
10.0
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from txanomaly.features.spec import (
    DAY_MS,
    GAP_CAP_SECONDS,
    HOUR_MS,
    HOUR_PRIOR_WEIGHT,
    ZSCORE_PRIOR_STD,
    ZSCORE_PRIOR_WEIGHT,
)

Num = Any  # float or np.ndarray

LOG_GAP_CAP = float(np.log1p(GAP_CAP_SECONDS))


def hour_of_day(ts_ms: Num) -> Num:
    """Hour of day in UTC, 0-23."""
    return (ts_ms // HOUR_MS) % 24


def weekday(ts_ms: Num) -> Num:
    """Monday = 0; 1970-01-01 was a Thursday, so weekday = (days + 3) mod 7."""
    return (ts_ms // DAY_MS + 3) % 7


def _circle(steps: int) -> dict[str, np.ndarray]:
    angle = (2 * np.pi / steps) * np.arange(steps)
    return {"sin": np.sin(angle), "cos": np.cos(angle)}


_HOUR, _DAY = _circle(24), _circle(7)
#: sin and cos of 2 pi hour / 24 and of 2 pi weekday / 7, looked up by hour or weekday: both
#: engines read the same table, so they agree to the last bit (and no sine is computed per row).
CYCLIC: dict[str, np.ndarray] = {"hour_sin": _HOUR["sin"], "hour_cos": _HOUR["cos"],
                                 "day_sin": _DAY["sin"], "day_cos": _DAY["cos"]}


def cyclic(op: str, ts_ms: Num) -> Num:
    """hour_sin / hour_cos / day_sin / day_cos of a timestamp (ms)."""
    index = hour_of_day(ts_ms) if op.startswith("hour") else weekday(ts_ms)
    return CYCLIC[op][index]


def hour_deviation(hour_sin: Num, hour_cos: Num, sin_sum: Num, cos_sum: Num, n_prev: Num
                   ) -> Num:
    """How far this hour is from the user's usual hours: (|V| - V . u) / (n + K).

    V = (``cos_sum``, ``sin_sum``) is the sum of the unit vectors (cos, sin of 2 pi hour / 24)
    of the user's ``n_prev`` previous transactions, u = (``hour_cos``, ``hour_sin``) this
    one's, K = :data:`HOUR_PRIOR_WEIGHT`. That is (1 - cos(theta - mu)) R n / (n + K): the
    circular distance from the user's mean hour mu, times how concentrated the user's hours
    are (R, the mean resultant length), shrunk for users with few transactions. In [0, 2);
    0 for a first transaction (V = 0). Scalars only (each engine calls it once per row); the
    same operations in the same order in both engines.

    >>> float(hour_deviation(0.0, 1.0, 0.0, 5.0, 5))  # always at midnight, now at midnight
    0.0
    >>> float(hour_deviation(0.0, -1.0, 0.0, 5.0, 5))  # ... now at noon: 2 * 5 / 10
    1.0
    """
    # max: |V| - V . u is >= 0, but rounding can leave it a hair below. math.sqrt: the same
    # correctly rounded square root as np.sqrt (Numba compiles both to it), without a NumPy
    # scalar per call in the online engine.
    return max(math.sqrt(sin_sum * sin_sum + cos_sum * cos_sum)
               - (cos_sum * hour_cos + sin_sum * hour_sin), 0.0) / (n_prev + HOUR_PRIOR_WEIGHT)


def mean_diff(amount: Num, window_sum: Num, count: Num) -> Num:
    """amount - mean over the window."""
    return amount - window_sum / count


def log_amount_to_mean(amount: Num, window_sum: Num, count: Num) -> Num:
    """log(1 + amount) - log(1 + mean over the window)."""
    return np.log1p(amount) - np.log1p(window_sum / count)


def log_zscore(log_amount: Num, shift: Num, s1: Num, s2: Num, n_prev: Num) -> Num:
    """z-score of log(1+amount) against the previous ones, from shifted running sums.

    The variance is shrunk towards a prior (see :data:`ZSCORE_PRIOR_STD`).

    ``s1``, ``s2`` are the sums of d and d^2 over the previous transactions, with
    d = log(1 + amount) - ``shift`` (the key's first log amount). 0 when ``n_prev`` is 0.
    """
    n = np.asarray(n_prev, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = log_zscore_with_history(log_amount, shift, s1, s2, n)
    return np.where(n > 0, z, 0.0)


def log_zscore_with_history(log_amount: Num, shift: Num, s1: Num, s2: Num, n_prev: Num) -> Num:
    """:func:`log_zscore` for ``n_prev`` > 0 (scalars: the online engine; arrays: the batch)."""
    mean = s1 / n_prev
    var = np.maximum(s2 / n_prev - mean * mean, 0.0)
    shrunk = (n_prev * var + ZSCORE_PRIOR_WEIGHT * ZSCORE_PRIOR_STD**2) / (
        n_prev + ZSCORE_PRIOR_WEIGHT)
    return (log_amount - shift - mean) / np.sqrt(shrunk)


def log_gap(ts_ms: Num, prev_ts_ms: Num, has_prev: Num) -> Num:
    """log(1 + seconds since the previous transaction, capped at 30 days); the cap if none."""
    return np.where(has_prev, log_gap_with_history(ts_ms, prev_ts_ms), LOG_GAP_CAP)


def log_gap_with_history(ts_ms: Num, prev_ts_ms: Num) -> Num:
    """:func:`log_gap` when there is a previous transaction."""
    return np.log1p(np.minimum((ts_ms - prev_ts_ms) / 1000.0, GAP_CAP_SECONDS))


#: The value of each history op for a transaction with no history (its key is missing).
SINGLETON: dict[str, float] = {
    "mean_diff": 0.0,
    "count": 1.0,
    "log_amount_to_mean": 0.0,
    "log_amount_zscore": 0.0,
    "log_seconds_since_prev": LOG_GAP_CAP,
    "is_first_pair": 1.0,
    "hour_deviation": 0.0,
}
