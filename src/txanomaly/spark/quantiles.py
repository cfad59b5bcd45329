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
from collections.abc import Callable, Mapping, Sequence
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
    return order_statistics_of(df, {column: (ranks, n)}, collect_rows)[column]


def order_statistics_of(df: DataFrame, wanted: Mapping[str, tuple[Sequence[int], int]],
                        collect_rows: int = COLLECT_ROWS) -> dict[str, dict[int, float]]:
    """:func:`order_statistics` of several columns in the same few passes: ``wanted`` maps a
    column to (its 0-based ranks, its count of values). A column's nulls are not among its
    values (a column of the values that pass a filter: ``when(cond, x)``).

    Three passes over ``df`` whatever the number of columns (one ``approxQuantile`` over
    them all, one count below every bracket, one collection of the values inside them),
    where a column at a time would take three each; a column of at most ``collect_rows``
    values is collected whole in the last one.
    """

    ranks: dict[str, list[int]] = {}
    for column, (asked, n) in wanted.items():
        ranks[column] = sorted(set(int(r) for r in asked))
        if any(not 0 <= r < n for r in ranks[column]):
            raise ValueError(f"ranks of {column} must be in [0, {n}), got {ranks[column]}")
    sizes = {c: n for c, (_, n) in wanted.items()}
    large = [c for c in wanted if sizes[c] > collect_rows]
    # (lo, hi) per column and rank; a small column's bracket is every value
    brackets = {c: [(-math.inf, math.inf)] * len(ranks[c]) for c in wanted}
    if large:
        eps = min(bracket_error(sizes[c]) for c in large)
        probs = sorted({p for c in large for r in ranks[c]
                        for p in (max(0.0, r / sizes[c] - 2 * eps),
                                  min(1.0, r / sizes[c] + 2 * eps))})
        approx = df.approxQuantile(large, probs, eps)
        for c, found in zip(large, approx, strict=True):
            at = dict(zip(probs, found, strict=True))
            brackets[c] = [(at[max(0.0, r / sizes[c] - 2 * eps)],
                            at[min(1.0, r / sizes[c] + 2 * eps)]) for r in ranks[c]]
    out: dict[str, dict[int, float]] = {c: {} for c in wanted}
    todo = {c: list(range(len(ranks[c]))) for c in wanted}
    for attempt in range(2):  # the bracket is checked; a miss is widened to the whole side
        below, values = _bracket_pass(df, {c: [brackets[c][i] for i in todo[c]]
                                           for c in todo if todo[c]})
        missed: dict[str, list[int]] = {}
        for c, slots in todo.items():
            for slot, i in enumerate(slots):
                lo, hi = brackets[c][i]
                among = values[c][(values[c] >= lo) & (values[c] <= hi)]
                k = ranks[c][i] - below[c][slot]
                if 0 <= k < len(among):
                    out[c][ranks[c][i]] = float(among[k])
                else:  # this rank's value is outside: open the side it lies on
                    missed.setdefault(c, []).append(i)
                    brackets[c][i] = (-math.inf, hi) if k < 0 else (lo, math.inf)
        if not missed:
            return out
        todo = missed
        if attempt:
            break
    raise AssertionError("the exact rank was not found in its bracket")  # pragma: no cover


def _bracket_pass(df: DataFrame, brackets: Mapping[str, Sequence[tuple[float, float]]]
                  ) -> tuple[dict[str, list[int]], dict[str, np.ndarray]]:
    """Per column: how many values lie below each bracket (one aggregation), and its values
    inside any of its brackets, sorted (one collection of (column, value) pairs)."""
    from pyspark.sql import functions as F

    columns = list(brackets)
    counts, pairs = [], []
    for i, c in enumerate(columns):
        inside = F.lit(False)
        for k, (lo, hi) in enumerate(brackets[c]):
            if lo > -math.inf:
                counts.append(F.sum(F.when(F.col(c) < lo, 1).otherwise(0)).alias(f"b{i}_{k}"))
            inside = inside | F.col(c).between(lo, hi)
        pairs.append(F.when(inside & F.col(c).isNotNull(), F.struct(
            F.lit(i).alias("c"), F.col(c).cast("double").alias("v"))))
    row = df.agg(*counts).first() if counts else None
    below = {c: [int((row[f"b{i}_{k}"] or 0) if row is not None and lo > -math.inf else 0)
                 for k, (lo, _) in enumerate(brackets[c])] for i, c in enumerate(columns)}
    found = (df.select(F.explode(F.array(*pairs)).alias("p")).filter(F.col("p").isNotNull())
             .select("p.c", "p.v").toArrow())
    which = found.column("c").to_numpy() if found.num_rows else np.empty(0, np.int32)
    value = found.column("v").to_numpy() if found.num_rows else np.empty(0)
    return below, {c: np.sort(value[which == i]) for i, c in enumerate(columns)}


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


def quantiles_of(df: DataFrame, columns: Sequence[str], qs: Sequence[float], n: int,
                 collect_rows: int = COLLECT_ROWS) -> list[list[float]]:
    """:func:`quantiles` of each of ``columns`` (``n`` values each), in the same passes."""
    ranks = [r for q in qs for r in quantile_ranks(n, q)]
    values = order_statistics_of(df, {c: (ranks, n) for c in columns}, collect_rows)
    return [[linear_quantile(values[c].__getitem__, n, q) for q in qs] for c in columns]


def median(df: DataFrame, column: str, n: int, collect_rows: int = COLLECT_ROWS) -> float:
    """``np.median(column)``, exactly: the middle value, or the mean of the two."""
    return middle(order_statistics(df, column, [(n - 1) // 2, n // 2], n, collect_rows), n)


def middle(values: Mapping[int, float], n: int) -> float:
    """The median of ``n`` sorted values from their ranks ``(n - 1) // 2`` and ``n // 2``
    (:func:`order_statistics`), as ``np.median`` computes it."""
    lo, hi = (n - 1) // 2, n // 2
    a, b = np.float64(values[lo]), np.float64(values[hi])
    return float(a if lo == hi else (a + b) / 2)
