"""The batch engine's per-key pass, compiled with Numba.

One pass over the table in time order keeps, per key value (a user, or an origin-destination
pair, coded as a uint32), exactly the state the online engine keeps per key: the running amount
sum (added one by one), the last timestamp, and the shifted log-amount moments; each window
(t - W, t] is a second pointer trailing the first by W. Each feature is written straight into
its output column; the pass is O(rows), reads and writes the table in order, and releases the
GIL (the batch engine runs one key per thread). The same pass runs over a whole table or over
its time-ordered chunks one after the other (:class:`ChunkedKeyPass` carries the state from
one to the next), with the same results to the last bit.

Only IEEE-exact operations are done here (+ - * / and sqrt, no fused multiply-add, no fast
math), so the results are bit-identical to the same arithmetic in NumPy or Python floats. The
features that need ``log1p`` are finished in NumPy (:func:`txanomaly.features.batch`): the pass
writes their argument.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import numba
import numpy as np
from numba import types

from txanomaly.features import formulas as fx
from txanomaly.features.interning import PairSlots  # noqa: F401  (the pairs' codes, chunked)
from txanomaly.features.spec import GAP_CAP_SECONDS, HOUR_MS
from txanomaly.jit import prepare

prepare()  # before the first compiled function is loaded (txanomaly/jit.py)

# What the pass writes for each op (the batch engine maps spec ops to these).
MEAN_DIFF = 0   # amount - window mean
COUNT = 1       # transactions in the window
WINDOW_MEAN = 2  # window mean (log_amount_to_mean is finished in NumPy)
ZSCORE = 3      # log-amount z-score against the previous transactions
GAP_SECONDS = 4  # seconds since the previous transaction, capped; NO_PREVIOUS if none
FIRST = 5       # 1.0 for the key's first transaction
HOUR_DEVIATION = 6  # the hour against the key's previous hours (formulas.hour_deviation)
NO_PREVIOUS = -1.0
#: The pass's op for each per-key op of the spec.
OPS = {"mean_diff": MEAN_DIFF, "count": COUNT, "log_amount_to_mean": WINDOW_MEAN,
       "log_amount_zscore": ZSCORE, "log_seconds_since_prev": GAP_SECONDS,
       "is_first_pair": FIRST, "hour_deviation": HOUR_DEVIATION}

#: The z-score's arithmetic, compiled from the function the online engine calls.
_zscore = numba.njit(nogil=True, cache=True)(fx.log_zscore_with_history)
_hour_deviation = numba.njit(nogil=True, cache=True)(fx.hour_deviation)
#: The hour's sine and cosine: the table both engines read (a constant in compiled code).
_HOUR_SIN = fx.CYCLIC["hour_sin"]
_HOUR_COS = fx.CYCLIC["hour_cos"]


_CODES = types.Array(types.uint32, 1, "C", readonly=True)  # one per table row
_INTS = types.Array(types.int64, 1, "C", readonly=True)
_FLOATS = types.Array(types.float64, 1, "C", readonly=True)
#: The code of a missing id (Polars' categorical codes stay below it).
MISSING = 0xFFFFFFFF


def key_pass(codes: np.ndarray, order: np.ndarray | None, ts: np.ndarray, amount: np.ndarray,
             log_amount: np.ndarray, windows: list[int], columns: list[int], ops: list[int],
             window_of: list[int], out: np.ndarray) -> None:
    """Evaluate one key's features into ``out``.

    codes: the key's value at each table row as a uint32 code (equal values, equal codes;
    :data:`MISSING` for a row without the key: not written); order: the table rows in time
    order (ties in input order), or None when the table already is;
    ts, amount, log_amount: per table row (log_amount = log1p(amount), computed by NumPy);
    windows: window lengths in ms, -1 for all history;
    columns, ops, window_of: per feature, its row in ``out``, its op code and its window index;
    out: (features, table rows) float64, C order.

    The whole table is one chunk of a :class:`ChunkedKeyPass` (the same compiled pass).
    """
    ChunkedKeyPass(windows, columns, ops, window_of).run(codes, ts, amount, log_amount, out,
                                                         order=order, last=True)


def pair_codes(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """A uint32 code per row for the pair (first, second) of code columns: equal pairs, equal
    codes (0, 1, ... in pair order); :data:`MISSING` where either code is missing.

    Exact by construction: one LSD radix sort of 64-bit words (the two codes, then the row),
    or one column at a time when those need more than 64 bits; O(rows).
    """
    if first.size != second.size:
        raise ValueError("both code columns need one entry per table row")
    if first.size > MISSING:
        raise ValueError("more than 2**32 - 1 rows: beyond the uint32 row index")
    return _compiled_pair_codes()(np.ascontiguousarray(first, dtype=np.uint32),
                                  np.ascontiguousarray(second, dtype=np.uint32))


#: Radix digit width of the sort: at most 2**11 buckets keep the scatter in cache.
_RADIX_BITS = 11


@numba.njit(nogil=True, cache=True)  # called from compiled code only: typed by its callers
def _radix_sort(values: np.ndarray, low: int, bits: int) -> np.ndarray:  # pragma: no cover
    """``values`` stably sorted by their bits [low, low + bits): an LSD radix sort in as few
    passes of at most 2**11 buckets as ``bits`` needs (one read counts every pass's digits)."""
    if bits <= 0:
        return values
    n = values.size
    passes = (bits + _RADIX_BITS - 1) // _RADIX_BITS
    width = (bits + passes - 1) // passes
    mask = np.uint64((1 << width) - 1)
    starts = np.zeros((passes, 1 << width), np.int64)
    for i in range(n):
        v = values[i]
        for p in range(passes):
            starts[p, (v >> np.uint64(low + p * width)) & mask] += 1
    out = np.empty_like(values)
    for p in range(passes):
        total = 0
        for d in range(1 << width):
            count = starts[p, d]
            starts[p, d] = total
            total += count
        shift = np.uint64(low + p * width)
        for i in range(n):
            v = values[i]
            d = (v >> shift) & mask
            at = starts[p, d]
            out[at] = v
            starts[p, d] = at + 1
        values, out = out, values
    return values


@numba.njit(nogil=True, cache=True)
def _bits(value: int) -> int:  # pragma: no cover
    """How many bits ``value`` (>= 0) needs."""
    bits = 0
    while value >> bits:
        bits += 1
    return bits


@numba.njit(nogil=True, cache=True)
def _stable_by(rows: np.ndarray, codes: np.ndarray) -> np.ndarray:  # pragma: no cover
    """``rows`` stably sorted by their code."""
    n = rows.size
    keyed = np.empty(n, np.uint64)
    top = 0
    for i in range(n):
        code = codes[rows[i]]
        top = max(top, code)
        keyed[i] = (np.uint64(code) << np.uint64(32)) | np.uint64(i)
    keyed = _radix_sort(keyed, 32, _bits(top))
    out = np.empty(n, np.uint32)
    for i in range(n):
        out[i] = rows[keyed[i] & np.uint64(0xFFFFFFFF)]
    return out


@cache
def _compiled_pair_codes() -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """:func:`_pair_codes` compiled, loaded when first used: the chunked engine never needs
    it, and each compiled function loaded from the cache costs a process 5-15 ms."""
    signature = types.Array(types.uint32, 1, "C")(_CODES, _CODES)
    return numba.njit(signature, nogil=True, cache=True)(_pair_codes)


def _pair_codes(first: np.ndarray, second: np.ndarray) -> np.ndarray:  # pragma: no cover
    """:func:`pair_codes` (compiled by :func:`_compiled_pair_codes`)."""
    size = first.size
    n = 0
    top_first = 0
    top_second = 0
    for i in range(size):  # the rows with both codes
        if first[i] != MISSING and second[i] != MISSING:
            n += 1
            top_first = max(top_first, first[i])
            top_second = max(top_second, second[i])
    second_bits = _bits(top_second)
    key_bits = _bits(top_first) + second_bits
    low_bits = _bits(max(size - 1, 0))
    group = -1
    if key_bits + low_bits > 64:  # one column at a time
        rows = np.empty(n, np.uint32)
        n = 0
        for i in range(size):
            if first[i] != MISSING and second[i] != MISSING:
                rows[n] = i
                n += 1
        rows = _stable_by(_stable_by(rows, second), first)
        codes = np.full(size, MISSING, np.uint32)
        for i in range(n):
            r = rows[i]
            if i == 0 or first[r] != first[rows[i - 1]] or second[r] != second[rows[i - 1]]:
                group += 1
            codes[r] = group
        return codes
    keyed = np.empty(n, np.uint64)  # (first, second, row) in one word
    n = 0
    for i in range(size):
        if first[i] != MISSING and second[i] != MISSING:
            key = (np.uint64(first[i]) << np.uint64(second_bits)) | np.uint64(second[i])
            keyed[n] = (key << np.uint64(low_bits)) | np.uint64(i)
            n += 1
    keyed = _radix_sort(keyed, low_bits, key_bits)
    codes = np.full(size, MISSING, np.uint32)
    low_mask = np.uint64((1 << low_bits) - 1)
    for i in range(n):
        if i == 0 or (keyed[i] ^ keyed[i - 1]) > low_mask:  # another pair
            group += 1
        codes[keyed[i] & low_mask] = group
    return codes


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


# --- the same pass, a chunk at a time ------------------------------------------------------


class ChunkedKeyPass:
    """One key's pass over a table, a time-ordered chunk at a time (a whole table is one chunk).

    One pass in time order keeps, per key value, the state the online engine keeps: how many
    transactions so far, the running amount sum (added one by one), the last timestamp, the
    shifted log-amount moments and the sums of the hours' sines and cosines. A window
    (t - W, t] is a second pointer that trails the first by W: each transaction it passes
    leaves its key value's window, which then starts after it (its running sum, kept in a
    ring while a window trails it, is the sum before the window).

    Across calls it keeps the per-value state (one row per code, grown as new codes appear;
    codes must be stable across chunks) and, for the finite windows, the rows a window still
    trails (their timestamp and code here, their running sum in the ring: the rows of the last
    W milliseconds, whatever their chunk). Feeding the chunks of a time-ordered table one
    after the other gives, bit for bit, what one call over the whole table gives: the same
    arithmetic in the same order. Memory: the state grows with the key's distinct values, the
    trail with the rows in the longest window, nothing with the rows already passed.
    """

    def __init__(self, windows: list[int], columns: list[int], ops: list[int],
                 window_of: list[int]):
        self.windows = np.asarray(windows, np.int64)
        self.columns = np.asarray(columns, np.int64)
        self.ops = np.asarray(ops, np.int64)
        self.window_of = np.asarray(window_of, np.int64)
        summed = any(op in (MEAN_DIFF, WINDOW_MEAN) for op in ops)
        # Per value, 8-byte fields (the float ones are a view of the same memory): [0]
        # transactions so far; the last timestamp (LAST); the running sum (SUM); the shift,
        # the sum of shifted log amounts and of their squares (MOMENTS); the sums of the
        # hours' sines and cosines (HOURS); then per finite window, the transactions that
        # left it and the running sum up to the last of them.
        n_fields = 1
        self.last = self.sum_at = self.shift = self.hours = -1
        if GAP_SECONDS in ops:
            self.last, n_fields = n_fields, n_fields + 1
        if summed:
            self.sum_at, n_fields = n_fields, n_fields + 1
        if ZSCORE in ops:
            self.shift, n_fields = n_fields, n_fields + 3
        if HOUR_DEVIATION in ops:
            self.hours, n_fields = n_fields, n_fields + 2
        self.field = np.full(len(windows), -1, np.int64)
        for w, span in enumerate(windows):
            if span >= 0:
                self.field[w] = n_fields
                n_fields += 2 if summed else 1
        finite = self.field >= 0
        # The longest finite window's index: its rows are the trail; -1: none.
        self.longest = int(np.argmax(np.where(finite, self.windows, -1))) if finite.any() else -1
        self.summed = summed
        self.state = np.zeros((0, n_fields), np.int64)
        self.position = 0  # rows passed so far (time order)
        self.trail = np.zeros(len(windows), np.int64)  # positions of the windows' pointers
        self.tail_ts = np.empty(0, np.int64)  # rows from min(trail) to ``position``
        self.tail_codes = np.empty(0, np.uint32)
        self.ring = np.empty(0, np.float64)

    def run(self, codes: np.ndarray, ts: np.ndarray, amount: np.ndarray,
            log_amount: np.ndarray, out: np.ndarray, order: np.ndarray | None = None,
            last: bool = False) -> None:
        """Evaluate the next chunk into ``out`` (features x chunk rows; rows without the key
        are not written). Its rows come after every row of the chunks before in time order;
        ``order``: the chunk's rows in time order (ties in input order), None when they
        already are; ``last``: no chunk follows (nothing is kept for one)."""
        n = codes.size
        if n > MISSING:
            raise ValueError("more than 2**32 - 1 rows: beyond the uint32 row index")
        if ts.size != n or amount.size != n or log_amount.size != n or out.shape[1] != n or (
                order is not None and (order.size != n or (n and (
                    order.min() < 0 or order.max() >= n)))):
            raise ValueError("codes, order and the table's columns need one entry per table row")
        if n == 0:
            return
        codes = np.ascontiguousarray(codes, np.uint32)
        ts = np.ascontiguousarray(ts, np.int64)
        ordered = order is None
        order = np.empty(0, np.uint32) if order is None else np.ascontiguousarray(order,
                                                                                   np.uint32)
        top = _top_code(codes)
        if top > self.state.shape[0]:  # new values: grow (doubling, as a list would)
            grown = np.zeros((top if last else max(top, 2 * self.state.shape[0]),
                              self.state.shape[1]), np.int64)
            grown[:self.state.shape[0]] = self.state
            self.state = grown
        first = self.position
        if self.summed and self.longest >= 0:  # the ring holds the longest window's rows
            need = _ring_size(self.tail_ts, ts, order, ordered, first,
                              int(self.trail[self.longest]), int(self.windows[self.longest]))
            if need > self.ring.size:
                self.ring = _grown_ring(self.ring, need, int(self.trail[self.longest]), first)
        _pass(codes, order, ordered, ts, np.ascontiguousarray(amount, np.float64),
              np.ascontiguousarray(log_amount, np.float64), self.tail_codes, self.tail_ts,
              first, self.ring, self.trail, self.state, self.windows, self.field, self.last,
              self.sum_at, self.shift, self.hours, self.columns, self.ops, self.window_of, out)
        self.position = first + n
        if last:
            return
        finite = self.field >= 0
        keep = int(self.trail[finite].min()) if finite.any() else self.position
        self.trail[~finite] = self.position
        start = first - self.tail_ts.size  # the tail's first position
        in_time = ts if ordered else ts[order]
        in_codes = codes if ordered else codes[order]
        self.tail_ts = np.concatenate([self.tail_ts[max(keep - start, 0):],
                                       in_time[max(keep - first, 0):]])
        self.tail_codes = np.concatenate([self.tail_codes[max(keep - start, 0):],
                                          in_codes[max(keep - first, 0):]])


@numba.njit(types.int64(_CODES), nogil=True, cache=True)
def _top_code(codes: np.ndarray) -> int:  # pragma: no cover
    """1 + the largest code other than MISSING (0 if none)."""
    top = 0
    for i in range(codes.size):
        c = codes[i]
        if c != MISSING:
            top = max(top, int(c) + 1)
    return top


def _grown_ring(ring: np.ndarray, need: int, oldest: int, end: int) -> np.ndarray:
    """A ring of at least ``need`` entries (a power of two) holding ``ring``'s entries for
    the positions oldest..end-1."""
    size = 1
    while size < need:
        size *= 2
    grown = np.empty(size, np.float64)
    if ring.size:
        positions = np.arange(oldest, end)
        grown[positions & (size - 1)] = ring[positions & (ring.size - 1)]
    return grown


@numba.njit(types.int64(_INTS, _INTS, _CODES, types.boolean, types.int64, types.int64,
                        types.int64), nogil=True, cache=True)
def _ring_size(tail_ts: np.ndarray, ts: np.ndarray, order: np.ndarray, ordered: bool,
               first: int, trail: int, span: int) -> int:  # pragma: no cover
    """The smallest power of two above the most rows the window (t - span, t] holds at any
    row of the chunk, the rows before it (from position ``trail`` on, the tail's) included."""
    most = 0
    e = trail
    start = first - tail_ts.size
    for i in range(first, first + ts.size):
        t = ts[i - first if ordered else order[i - first]]
        while e < i:
            te = tail_ts[e - start] if e < first else ts[
                e - first if ordered else order[e - first]]
            if te > t - span:
                break
            e += 1
        most = max(most, i + 1 - e)
    size = 1
    while size <= most:
        size *= 2
    return size


_PASS = types.void(_CODES, _CODES, types.boolean, _INTS, _FLOATS, _FLOATS, _CODES, _INTS,
                   types.int64, types.Array(types.float64, 1, "C"),
                   types.Array(types.int64, 1, "C"), types.Array(types.int64, 2, "C"),
                   _INTS, _INTS, types.int64, types.int64, types.int64, types.int64, _INTS,
                   _INTS, _INTS, types.Array(types.float64, 2, "C"))


@numba.njit(_PASS, nogil=True, cache=True)
def _pass(codes: np.ndarray, order: np.ndarray, ordered: bool, ts: np.ndarray,
          amount: np.ndarray, log_amount: np.ndarray, tail_codes: np.ndarray,
          tail_ts: np.ndarray, first: int, ring: np.ndarray, trail: np.ndarray,
          state: np.ndarray, windows: np.ndarray, field: np.ndarray, last: int, sum_at: int,
          shift: int, hours: int, columns: np.ndarray, ops: np.ndarray, window_of: np.ndarray,
          out: np.ndarray) -> None:  # pragma: no cover
    """:class:`ChunkedKeyPass`'s pass over one chunk, compiled. Coverage cannot see inside;
    the tests compare it with a brute-force reference and with the online engine.

    Positions count rows in time order from the table's first; the chunk's are
    first..first+n-1 (row ``order[p - first]``, or ``p - first`` when ``ordered``), the
    tail's the ones just before. ``state``, ``trail`` and ``ring`` are updated in place.
    Every chunk-sized array is read and written in order; only the per-value state (a few
    8-byte fields, as the ops need) is reached at random.
    """
    summed = sum_at >= 0
    moments = shift >= 0
    gaps = last >= 0
    timed = hours >= 0
    sums = state.view(np.float64)
    start = first - tail_ts.size
    mask = ring.size - 1
    h_sin = h_cos = 0.0
    wsum = np.empty(windows.size, np.float64)
    wcount = np.empty(windows.size, np.int64)
    for i in range(first, first + codes.size):
        r = np.int64(i - first) if ordered else np.int64(order[i - first])
        t = ts[r]
        for w in range(windows.size):  # transactions at or before t - W leave the window
            if field[w] < 0:
                continue
            e = trail[w]
            while e < i:
                if e < first:
                    te = tail_ts[e - start]
                    ce = tail_codes[e - start]
                else:
                    leaving = np.int64(e - first) if ordered else np.int64(order[e - first])
                    te = ts[leaving]
                    ce = codes[leaving]
                if te > t - windows[w]:
                    break
                if ce != MISSING:
                    gone = np.int64(ce)
                    state[gone, field[w]] += 1
                    if summed:
                        sums[gone, field[w] + 1] = ring[e & mask]
                e += 1
            trail[w] = e
        code = codes[r]
        if code == MISSING:
            continue
        c = np.int64(code)
        a = amount[r]
        k = state[c, 0]  # transactions before this one
        cum = ((0.0 if k == 0 else sums[c, sum_at]) + a) if summed else 0.0
        if ring.size:
            ring[i & mask] = cum
        for w in range(windows.size):
            f = field[w]
            if f < 0:
                wsum[w] = cum
                wcount[w] = k + 1
            else:
                left = state[c, f]
                wsum[w] = cum - (sums[c, f + 1] if summed and left > 0 else 0.0)
                wcount[w] = k + 1 - left
        if moments and k == 0:
            sums[c, shift] = log_amount[r]
        if timed:
            hour = (t // HOUR_MS) % 24  # formulas.hour_of_day (floor division, as Python's)
            h_sin = _HOUR_SIN[hour]
            h_cos = _HOUR_COS[hour]
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
                value = 0.0 if k == 0 else _zscore(log_amount[r], sums[c, shift],
                                                   sums[c, shift + 1], sums[c, shift + 2], k)
            elif op == GAP_SECONDS:
                value = NO_PREVIOUS if k == 0 else min((t - state[c, last]) / 1000.0,
                                                       GAP_CAP_SECONDS)
            elif op == HOUR_DEVIATION:
                value = _hour_deviation(h_sin, h_cos, sums[c, hours], sums[c, hours + 1],
                                        float(k))
            else:  # FIRST
                value = 1.0 if k == 0 else 0.0
            out[columns[j], r] = value
        if moments:
            d = log_amount[r] - sums[c, shift]
            sums[c, shift + 1] += d
            sums[c, shift + 2] += d * d
        if timed:
            sums[c, hours] += h_sin
            sums[c, hours + 1] += h_cos
        state[c, 0] = k + 1
        if gaps:
            state[c, last] = t
        if summed:
            sums[c, sum_at] = cum
