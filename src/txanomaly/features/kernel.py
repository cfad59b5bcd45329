"""The batch engine's per-key pass, compiled with Numba.

One sequential pass over a key's rows, grouped by key value and in time order within a group,
keeps exactly the state the online engine keeps per key: the running amount sum (added one by
one), a start pointer per window (t - W, t], and the shifted log-amount moments. Each feature is
written straight into its output column at the row's place, so the pass needs no per-row
temporaries; it is O(rows) and releases the GIL (the batch engine runs one key per thread).

Only IEEE-exact operations are done here (+ - * / and sqrt, no fused multiply-add, no fast
math), so the results are bit-identical to the same arithmetic in NumPy or Python floats. The
features that need ``log1p`` are finished in NumPy (:func:`txanomaly.features.batch`): the pass
writes their argument.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import types

from txanomaly.features import formulas as fx
from txanomaly.features.spec import GAP_CAP_SECONDS, HOUR_MS

# What the pass writes for each op (the batch engine maps spec ops to these).
MEAN_DIFF = 0   # amount - window mean
COUNT = 1       # transactions in the window
WINDOW_MEAN = 2  # window mean (log_amount_to_mean is finished in NumPy)
ZSCORE = 3      # log-amount z-score against the previous transactions
GAP_SECONDS = 4  # seconds since the previous transaction, capped; NO_PREVIOUS if none
FIRST = 5       # 1.0 for the key's first transaction
NO_PREVIOUS = -1.0
#: Rows gathered at a time (whole groups, so a longer group makes a bigger chunk): the working
#: arrays stay in the CPU cache while the table's columns are read and written at random.
CHUNK_ROWS = 1 << 15
#: The pass's op for each per-key op of the spec.
OPS = {"mean_diff": MEAN_DIFF, "count": COUNT, "log_amount_to_mean": WINDOW_MEAN,
       "log_amount_zscore": ZSCORE, "log_seconds_since_prev": GAP_SECONDS,
       "is_first_pair": FIRST}

#: The z-score's arithmetic, compiled from the function the online engine calls.
_zscore = numba.njit(nogil=True, cache=True)(fx.log_zscore_with_history)


_ROWS = types.Array(types.uint32, 1, "C", readonly=True)  # Polars' row index type
_INTS = types.Array(types.int64, 1, "C", readonly=True)
_FLOATS = types.Array(types.float64, 1, "C", readonly=True)
#: One signature, compiled (or loaded from Numba's cache) at import; writable arrays match it too.
_SIGNATURE = types.void(_ROWS, _INTS, _INTS, _FLOATS, _FLOATS, _INTS, _INTS, _INTS, _INTS,
                        types.Array(types.float64, 2, "C"))


def key_pass(rows: np.ndarray, lengths: np.ndarray, ts: np.ndarray, amount: np.ndarray,
             log_amount: np.ndarray, windows: list[int], columns: list[int], ops: list[int],
             window_of: list[int], out: np.ndarray) -> None:
    """Evaluate one key's features into ``out``.

    rows: table row of each position, grouped by key value, time order within a group;
    lengths: the groups' lengths (they tile ``rows``);
    ts, amount, log_amount: per table row (log_amount = log1p(amount), computed by NumPy);
    windows: window lengths in ms, -1 for all history;
    columns, ops, window_of: per feature, its row in ``out``, its op code and its window index;
    out: (features, table rows) float64, C order, written only at ``rows``.
    """
    def ints(values: np.ndarray | list[int]) -> np.ndarray:
        return np.ascontiguousarray(values, dtype=np.int64)

    def floats(values: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(values, dtype=np.float64)

    if rows.size and (lengths.sum() != rows.size or rows.min() < 0 or rows.max() >= ts.size):
        raise ValueError("rows / lengths do not describe groups of table rows")
    if ts.size > np.iinfo(np.uint32).max:
        raise ValueError("more than 2**32 rows: beyond Polars' row index")
    _key_pass(np.ascontiguousarray(rows, dtype=np.uint32), ints(lengths), ints(ts),
              floats(amount), floats(log_amount),
              ints(windows), ints(columns), ints(ops), ints(window_of), out)


@numba.njit(nogil=True, cache=True)
def _group(lo: int, length: int, ts_at: np.ndarray, amount_at: np.ndarray, log_at: np.ndarray,
           cum_at: np.ndarray, windows: np.ndarray, ops: np.ndarray, window_of: np.ndarray,
           moments: bool, result: np.ndarray) -> None:  # pragma: no cover
    """One group (positions lo..lo+length-1 of the chunk), in time order, into ``result``."""
    n_windows = windows.size
    first = np.full(n_windows, lo)
    wsum = np.empty(n_windows, np.float64)
    wcount = np.empty(n_windows, np.int64)
    shift = log_at[lo] if moments else 0.0
    cum = 0.0
    d1 = 0.0
    d2 = 0.0
    for i in range(lo, lo + length):
        k = i - lo  # transactions before this one
        t = ts_at[i]
        a = amount_at[i]
        cum = cum + a
        cum_at[i] = cum
        for w in range(n_windows):
            span = windows[w]
            if span < 0:
                wsum[w] = cum
                wcount[w] = k + 1
                continue
            f = first[w]
            while ts_at[f] <= t - span:  # stops at i at the latest: ts_at[i] = t
                f += 1
            first[w] = f
            wsum[w] = cum - (cum_at[f - 1] if f > lo else 0.0)
            wcount[w] = i + 1 - f
        for j in range(ops.size):
            op = ops[j]
            w = window_of[j]
            if op == MEAN_DIFF:
                value = a - wsum[w] / wcount[w]
            elif op == COUNT:
                value = float(wcount[w])
            elif op == WINDOW_MEAN:
                value = wsum[w] / wcount[w]
            elif op == ZSCORE:
                value = 0.0 if k == 0 else _zscore(log_at[i], shift, d1, d2, k)
            elif op == GAP_SECONDS:
                value = NO_PREVIOUS if k == 0 else min((t - ts_at[i - 1]) / 1000.0,
                                                       GAP_CAP_SECONDS)
            else:  # FIRST
                value = 1.0 if k == 0 else 0.0
            result[j, i] = value
        if moments:
            d = log_at[i] - shift
            d1 += d
            d2 += d * d


@numba.njit(_SIGNATURE, nogil=True, cache=True)
def _key_pass(rows: np.ndarray, lengths: np.ndarray, ts: np.ndarray, amount: np.ndarray,
              log_amount: np.ndarray, windows: np.ndarray, columns: np.ndarray,
              ops: np.ndarray, window_of: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover
    """:func:`key_pass`, compiled.

    Coverage cannot see inside; the tests compare it with a brute-force reference.
    """
    longest = 0
    for g in range(lengths.size):
        longest = max(longest, lengths[g])
    cap = max(CHUNK_ROWS, longest)
    moments = False
    for j in range(ops.size):
        moments |= ops[j] == ZSCORE
    ts_at = np.empty(cap, np.int64)  # the chunk's rows, gathered in group order
    amount_at = np.empty(cap, np.float64)
    log_at = np.empty(cap, np.float64)
    cum_at = np.empty(cap, np.float64)  # running sum of the group, including the position
    result = np.empty((ops.size, cap), np.float64)
    g = 0
    start = 0  # position in ``rows`` of the chunk's first row
    while g < lengths.size:
        n = 0  # whole groups, at least one
        end = g
        while end < lengths.size and (end == g or n + lengths[end] <= cap):
            n += lengths[end]
            end += 1
        for i in range(n):  # gather: independent loads, overlapped by the CPU
            r = rows[start + i]
            ts_at[i] = ts[r]
            amount_at[i] = amount[r]
        if moments:  # each random read costs: only the z-score needs log amounts
            for i in range(n):
                log_at[i] = log_amount[rows[start + i]]
        lo = 0
        for h in range(g, end):
            _group(lo, lengths[h], ts_at, amount_at, log_at, cum_at, windows, ops, window_of,
                   moments, result)
            lo += lengths[h]
        for j in range(ops.size):  # scatter
            c = columns[j]
            for i in range(n):
                out[c, rows[start + i]] = result[j, i]
        start += n
        g = end


@numba.njit(types.UniTuple(types.Array(types.int8, 1, "C"), 2)(_INTS), nogil=True, cache=True)
def hour_and_weekday(ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
    """:func:`~txanomaly.features.formulas.hour_of_day` and ``weekday`` of each timestamp, in
    one pass (integer arithmetic with Python's floor semantics, and (t // H) // 24 = t // D:
    the same values)."""
    hour = np.empty(ts.size, np.int8)
    weekday = np.empty(ts.size, np.int8)
    for i in range(ts.size):
        hours = ts[i] // HOUR_MS
        hour[i] = hours % 24
        weekday[i] = (hours // 24 + 3) % 7
    return hour, weekday
