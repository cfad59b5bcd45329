"""Compiled (Numba) steps of the batch map's CPU kernels: what PyTorch does in several passes
over a ``rows x units`` distance block, done in one, with the same results bit for bit.

The distance block itself stays PyTorch's matrix product (:func:`txanomaly.som.accumulate_bmu_sums`
and the closing passes of :meth:`txanomaly.detector.AnomalyDetector.fit_stored`): its values
decide the winners, and any other order of its sums could move a near tie. What follows it is
exact integer and elementwise work that these kernels repeat in the same order:

* the winner of a row is the smallest of the int32 keys ``(bits(sq) & ~low) | unit`` (as in
  :func:`txanomaly.som.argmin_rows`), so the same unit wins;
* the per-unit sums add each row's column to its winner's in row order, in float32, as
  :meth:`torch.Tensor.index_add_` does;
* the risk-directed deviation from a prototype and its length are computed in float64 with
  NumPy's order of summation over a row (:func:`row_sum_squares`).

Imported only where a CPU kernel runs (training, closing passes, explanations): a one-row
scoring request does not pay for loading the compiled code.
"""

from __future__ import annotations

import numba
import numpy as np

_INT32_MAX = np.int32(2**31 - 1)


@numba.njit(nogil=True, cache=True)
def winners(keys: np.ndarray, low: int, out: np.ndarray) -> None:  # pragma: no cover - compiled
    """``out[i]`` = the unit of the smallest key ``(keys[i, u] & ~low) | u`` of row ``i`` of
    ``keys`` (int32 ``rows x units``: the bits of float32 squared distances), compared as
    int32: :func:`txanomaly.som.argmin_rows`, without overwriting ``keys``."""
    mask = np.int32(~low)
    for i in range(keys.shape[0]):
        best = _INT32_MAX
        row = keys[i]
        for u in range(keys.shape[1]):
            best = min(best, np.int32(np.int32(row[u] & mask) | np.int32(u)))
        out[i] = best & low


@numba.njit(nogil=True, cache=True)
def two_winners(keys: np.ndarray, low: int, first: np.ndarray, second: np.ndarray
                ) -> None:  # pragma: no cover - compiled
    """:func:`winners` and the unit of the second-smallest key of each row
    (:func:`txanomaly.som.two_smallest_rows`)."""
    mask = np.int32(~low)
    for i in range(keys.shape[0]):
        best = _INT32_MAX
        next_best = _INT32_MAX
        row = keys[i]
        for u in range(keys.shape[1]):
            key = np.int32(np.int32(row[u] & mask) | np.int32(u))
            if key < best:
                next_best = best
                best = key
            elif key < next_best:
                next_best = key
        first[i] = best & low
        second[i] = next_best & low


@numba.njit(nogil=True, cache=True)
def add_to_winners(keys: np.ndarray, low: int, data: np.ndarray, start: int,
                   sums: np.ndarray, won: np.ndarray) -> None:  # pragma: no cover - compiled
    """The batch epoch's step after the distance block: each row's winner (:func:`winners`
    of ``keys``), then ``sums[:, winner] += data[:, start + i]`` for the rows in order, in
    float32 (``torch.index_add_(1, winners, data[:, start:start + rows])``, bit for bit).
    ``won``: scratch of ``rows`` int64."""
    rows = keys.shape[0]
    winners(keys, low, won)
    for f in range(data.shape[0]):
        column = data[f]
        total = sums[f]
        for i in range(rows):
            total[won[i]] += column[start + i]


@numba.njit(nogil=True, cache=True)
def add_rows(won: np.ndarray, data: np.ndarray, sums: np.ndarray, first: int, stop: int
             ) -> None:  # pragma: no cover - compiled
    """``sums[f, won[i]] += data[f, i]`` for the features ``first <= f < stop`` and every row
    ``i`` in order, in float32: :func:`add_to_winners`'s sums once the winners of a span of
    rows are known (each feature's sums on their own, so two threads may share the
    features)."""
    for f in range(first, stop):
        column = data[f]
        total = sums[f]
        for i in range(won.shape[0]):
            total[won[i]] += column[i]


@numba.njit(nogil=True, cache=True, inline="always")
def _pairwise_sum(values: np.ndarray, n: int) -> float:  # pragma: no cover - compiled
    """NumPy's sum of ``values[:n]`` (float64, contiguous) in its order: sequential below 8
    values; 8 running sums combined pairwise, then the rest, up to 128 (NumPy's
    ``pairwise_sum``; longer rows are not used here)."""
    if n < 8:
        res = 0.0
        for i in range(n):
            res += values[i]
        return res
    r0, r1, r2, r3 = values[0], values[1], values[2], values[3]
    r4, r5, r6, r7 = values[4], values[5], values[6], values[7]
    i = 8
    while i < n - (n % 8):
        r0 += values[i]
        r1 += values[i + 1]
        r2 += values[i + 2]
        r3 += values[i + 3]
        r4 += values[i + 4]
        r5 += values[i + 5]
        r6 += values[i + 6]
        r7 += values[i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += values[i]
        i += 1
    return res


@numba.njit(nogil=True, cache=True, inline="always")
def _directed_squares(x: np.ndarray, w: np.ndarray, directions: np.ndarray,
                      squares: np.ndarray) -> None:  # pragma: no cover - compiled
    """``squares[j]`` = the square of ``x[j] - w[j]`` (float32 values, float64 arithmetic),
    or of ``max(directions[j] * (x[j] - w[j]), 0)`` where the direction is not 0
    (:meth:`AnomalyDetector._directed`)."""
    for j in range(x.shape[0]):
        diff = np.float64(x[j]) - np.float64(w[j])
        if directions[j] != 0.0:
            diff = max(diff * directions[j], 0.0)
        squares[j] = diff * diff


@numba.njit(nogil=True, cache=True)
def directed_scores(x: np.ndarray, weights: np.ndarray, bmu: np.ndarray,
                    directions: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover
    """``out[i]`` = the length of the risk-directed part of ``x[i] - weights[bmu[i]]``
    (float32 inputs, float64 arithmetic): per feature the difference where the direction is
    0, else ``max(direction * difference, 0)``; squared, summed in NumPy's order, square
    root. The same values as :meth:`AnomalyDetector._scores` computes with NumPy."""
    d = x.shape[1]
    squares = np.empty(d)
    for i in range(x.shape[0]):
        _directed_squares(x[i], weights[bmu[i]], directions, squares)
        out[i] = np.sqrt(_pairwise_sum(squares, d))


@numba.njit(nogil=True, cache=True)
def explain_rows(x: np.ndarray, weights: np.ndarray, bmu: np.ndarray, directions: np.ndarray,
                 score: np.ndarray, top: np.ndarray, share: np.ndarray
                 ) -> None:  # pragma: no cover - compiled
    """Per row of ``x`` (scaled, float32): the length of the risk-directed deviation from
    its prototype ``weights[bmu[i]]`` into ``score`` (as :func:`directed_scores`), and the
    ``top.shape[1]`` features with the largest shares of its square, largest first, ties to
    the lower feature (a stable sort of the negated shares), into ``top`` with their shares
    into ``share``. A row on its prototype has every share 0. Float64 arithmetic in NumPy's
    order: :meth:`AnomalyDetector.explain`'s values, without its ``rows x features`` arrays."""
    d = x.shape[1]
    k = top.shape[1]
    squares = np.empty(d)
    shares = np.empty(d)
    taken = np.zeros(d, dtype=np.bool_)
    for i in range(x.shape[0]):
        _directed_squares(x[i], weights[bmu[i]], directions, squares)
        total = _pairwise_sum(squares, d)
        score[i] = np.sqrt(total)
        for j in range(d):
            shares[j] = squares[j] / total if total > 0.0 else 0.0
            taken[j] = False
        for rank in range(k):
            best = -1
            for j in range(d):
                if taken[j]:
                    continue
                if best < 0 or shares[j] > shares[best] or (
                        np.isnan(shares[best]) and not np.isnan(shares[j])):
                    best = j
            taken[best] = True
            top[i, rank] = best
            share[i, rank] = shares[best]


__all__ = ["add_rows", "add_to_winners", "directed_scores", "explain_rows", "two_winners",
           "winners"]
