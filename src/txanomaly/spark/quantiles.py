"""Exact order statistics of a Spark column: NumPy's quantile and median, to the last bit.

Spark's ``approxQuantile`` gives a value whose rank is within ``eps * n`` of the one asked
for. Here it only brackets: one more pass counts the values below the bracket and collects
those inside it (about ``4 eps n`` values, :func:`bracket_error` keeps that near 40,000 per
rank), and the value of the exact rank is read from them. A small column is collected whole.
The quantile is then NumPy's ``linear`` interpolation between the two ranks around
``(n - 1) q`` with NumPy's own arithmetic, so the threshold a Spark job fits is the one
``np.quantile`` gives on the same scores.

>>> linear_quantile(lambda r: [10.0, 20.0, 30.0, 40.0][r], 4, 0.95)
38.5
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

#: Columns up to this many values are collected whole (8 bytes each).
COLLECT_ROWS = 200_000


def bracket_error(n: int) -> float:
    """approxQuantile's relative error for ``n`` values: ~40,000 values per bracket."""
    return min(1e-2, max(1e-6, 10_000 / max(n, 1)))


def order_statistics(df: DataFrame, column: str, ranks: Sequence[int], n: int,
                     collect_rows: int = COLLECT_ROWS) -> dict[int, float]:
    """The values of 0-based ``ranks`` of ``column`` (finite doubles, ``n`` of them) sorted."""
    from pyspark.sql import functions as F

    wanted = sorted(set(int(r) for r in ranks))
    if any(not 0 <= r < n for r in wanted):
        raise ValueError(f"ranks must be in [0, {n}), got {wanted}")
    if n <= collect_rows:
        values = np.sort(_collect(df.select(F.col(column).alias("v"))))
        return {r: float(values[r]) for r in wanted}
    eps = bracket_error(n)
    probs = [(max(0.0, r / n - 2 * eps), min(1.0, r / n + 2 * eps)) for r in wanted]
    flat = df.approxQuantile(column, [p for pair in probs for p in pair], eps)
    out: dict[int, float] = {}
    for attempt in range(2):  # the bracket is checked; a miss is widened to the whole side
        brackets = [(flat[2 * i], flat[2 * i + 1]) for i in range(len(wanted))]
        inside = F.lit(False)
        counts = []
        for i, (lo, hi) in enumerate(brackets):
            inside = inside | F.col(column).between(lo, hi)
            counts.append(F.sum(F.when(F.col(column) < lo, 1).otherwise(0)).alias(f"b{i}"))
        below = df.agg(*counts).first()
        assert below is not None  # an aggregate has one row
        values = np.sort(_collect(df.filter(inside).select(F.col(column).alias("v"))))
        missed = []
        for i, r in enumerate(wanted):
            lo, hi = brackets[i]
            among = values[(values >= lo) & (values <= hi)]
            k = r - int(below[f"b{i}"] or 0)
            if 0 <= k < len(among):
                out[r] = float(among[k])
            else:
                missed.append(i)
        if not missed:
            return out
        for i in missed:  # this rank's value is outside: open the side it lies on
            k = wanted[i] - int(below[f"b{i}"] or 0)
            flat[2 * i], flat[2 * i + 1] = ((-math.inf, flat[2 * i + 1]) if k < 0
                                            else (flat[2 * i], math.inf))
        if attempt:
            break
    raise AssertionError("the exact rank was not found in its bracket")  # pragma: no cover


def _collect(df: DataFrame) -> np.ndarray:
    table = df.toArrow()
    return table.column("v").to_numpy() if table.num_rows else np.empty(0)


def linear_quantile(value_at: Callable[[int], float], n: int, q: float) -> float:
    """``np.quantile(x, q)`` (method ``linear``) from the sorted values ``value_at(rank)``."""
    virtual = np.float64(n - 1) * np.float64(q)
    if virtual >= n - 1:
        return float(value_at(n - 1))
    prev = int(np.floor(virtual))
    gamma = virtual - np.float64(prev)
    a, b = np.float64(value_at(prev)), np.float64(value_at(prev + 1))
    diff = b - a
    if gamma >= 0.5:
        return float(b - diff * (1 - gamma))
    return float(a + diff * gamma)


def quantile_ranks(n: int, q: float) -> list[int]:
    """The ranks :func:`linear_quantile` reads."""
    virtual = np.float64(n - 1) * np.float64(q)
    if virtual >= n - 1:
        return [n - 1]
    prev = int(np.floor(virtual))
    return [prev, prev + 1]


def quantiles(df: DataFrame, column: str, qs: Sequence[float], n: int,
              collect_rows: int = COLLECT_ROWS) -> list[float]:
    """``np.quantile(column, qs)``, exactly, over the ``n`` values of ``column``."""
    ranks = [r for q in qs for r in quantile_ranks(n, q)]
    values = order_statistics(df, column, ranks, n, collect_rows)
    return [linear_quantile(values.__getitem__, n, q) for q in qs]


def median(df: DataFrame, column: str, n: int, collect_rows: int = COLLECT_ROWS) -> float:
    """``np.median(column)``, exactly: the middle value, or the mean of the two."""
    ranks = [(n - 1) // 2, n // 2]
    values = order_statistics(df, column, ranks, n, collect_rows)
    a, b = np.float64(values[ranks[0]]), np.float64(values[ranks[1]])
    return float(a if ranks[0] == ranks[1] else (a + b) / 2)
