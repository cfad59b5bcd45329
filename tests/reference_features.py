"""A brute-force reference of the feature definitions, written from docs/features.md.

Deliberately naive (one Python loop per row over all rows, no running sums) so that it shares
no code and no arithmetic shortcuts with the engines it checks.
"""

from __future__ import annotations

import math
from typing import Any

from txanomaly.features.spec import (
    GAP_CAP_SECONDS,
    HOUR_PRIOR_WEIGHT,
    ZSCORE_PRIOR_STD,
    ZSCORE_PRIOR_WEIGHT,
    FeatureSet,
)


def _amount(r: dict[str, Any], first: str = "destination") -> float:
    """The destination amount, falling back to the origin amount; ``first="origin"``: the
    other way round (a payer's features under ``amount_side="own"``)."""
    other = "origin" if first == "destination" else "destination"
    value = r.get(f"{first}_amount")
    return float(value if value is not None else r[f"{other}_amount"])


def _key(r: dict[str, Any], key: str) -> Any:
    if key == "pair":
        o, d = r.get("origin_user_id"), r.get("destination_user_id")
        return None if o is None or d is None else (o, d)
    return r.get(f"{key}_user_id")


def _history(rows: list[dict[str, Any]], i: int, key: str) -> list[int]:
    """Indices of the same key's transactions at or before row i in (timestamp, input) order."""
    me = rows[i]
    k = _key(me, key)
    if k is None:
        return [i]
    mine = (me["timestamp"], i)
    return sorted((j for j, r in enumerate(rows)
                   if _key(r, key) == k and (r["timestamp"], j) <= mine),
                  key=lambda j: (rows[j]["timestamp"], j))


def reference_features(rows: list[dict[str, Any]], fs: FeatureSet) -> list[list[float]]:
    out = []
    for i in range(len(rows)):
        out.append([_one(rows, i, f, fs.amount_source(f.key)) for f in fs.features])
    return out


def _one(rows: list[dict[str, Any]], i: int, f: Any, first: str = "destination") -> float:
    r = rows[i]
    a = _amount(r) if f.key is None else _amount(r, first)
    ts = r["timestamp"]
    hour = (ts // 3_600_000) % 24
    weekday = (ts // 86_400_000 + 3) % 7
    simple = {
        "amount": lambda: a,
        "log_amount": lambda: math.log1p(a),
        "hour_sin": lambda: math.sin(2 * math.pi * hour / 24),
        "hour_cos": lambda: math.cos(2 * math.pi * hour / 24),
        "day_sin": lambda: math.sin(2 * math.pi * weekday / 7),
        "day_cos": lambda: math.cos(2 * math.pi * weekday / 7),
        "cross_border": lambda: float(_both_differ(r, "origin_country", "destination_country")),
        "currency_mismatch": lambda: float(_both_differ(r, "origin_currency",
                                                        "destination_currency")),
    }
    if f.op in simple:
        return simple[f.op]()
    hist = _history(rows, i, f.key)
    if f.window_ms is not None:
        window = [j for j in hist if rows[j]["timestamp"] > ts - f.window_ms]
    else:
        window = hist
    amounts = [_amount(rows[j], first) for j in window]
    mean = sum(amounts) / len(amounts)
    prev = hist[:-1]
    if f.op == "mean_diff":
        return a - mean
    if f.op == "count":
        return float(len(window))
    if f.op == "log_amount_to_mean":
        return math.log1p(a) - math.log1p(mean)
    if f.op == "is_first_pair":
        return 1.0 if not prev else 0.0
    if f.op == "log_seconds_since_prev":
        if not prev:
            return math.log1p(GAP_CAP_SECONDS)
        gap = (ts - rows[prev[-1]]["timestamp"]) / 1000.0
        return math.log1p(min(gap, GAP_CAP_SECONDS))
    if f.op == "log_amount_zscore":
        if not prev:
            return 0.0
        logs = [math.log1p(_amount(rows[j], first)) for j in prev]
        m = sum(logs) / len(logs)
        var = sum((x - m) ** 2 for x in logs) / len(logs)
        n, k = len(logs), ZSCORE_PRIOR_WEIGHT
        return (math.log1p(a) - m) / math.sqrt((n * var + k * ZSCORE_PRIOR_STD**2) / (n + k))
    if f.op == "hour_deviation":  # from the circular mean and its resultant length
        if not prev:
            return 0.0
        angles = [2 * math.pi * ((rows[j]["timestamp"] // 3_600_000) % 24) / 24 for j in prev]
        n = len(angles)
        x = sum(math.cos(t) for t in angles) / n
        y = sum(math.sin(t) for t in angles) / n
        resultant = math.hypot(x, y)
        if resultant == 0:
            return 0.0
        mu = math.atan2(y, x)
        theta = 2 * math.pi * hour / 24
        return (1 - math.cos(theta - mu)) * resultant * n / (n + HOUR_PRIOR_WEIGHT)
    raise AssertionError(f.op)


def _both_differ(r: dict[str, Any], left: str, right: str) -> bool:
    x, y = r.get(left), r.get(right)
    return x is not None and y is not None and x != y


def close(a: float, b: float, scale: float) -> bool:
    """Relative error <= 1e-9, relative to the magnitude of the quantities that were combined.

    A difference such as amount - mean is compared relative to max(|amount|, |mean|), not to
    the (possibly tiny) difference itself, where rounding of any order of summation shows.
    """
    return abs(a - b) <= 1e-9 * max(abs(a), abs(b), scale, 1e-300)
