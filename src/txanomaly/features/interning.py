"""Stable integer codes for id strings across the chunks of one table.

The chunked engine needs the same code for the same user id in every chunk. :class:`IdCodes`
keys an open-addressing hash table by two 64-bit hashes of the id (Polars' string hash with
two seeds, computed vectorised) and gives codes 0, 1, ... in order of first appearance. Two
different ids get the same code only if both hashes collide: for n distinct ids the chance is
about n^2 / 2^129 (below 1e-20 for a billion ids), far below that of a hardware memory
error. One compiled loop over the chunk does the lookups; a dictionary of the id texts,
consulted once per distinct id of a chunk, cost a fifth of ``txanomaly features`` at 10M rows,
and an exact byte comparison against stored ids cost several times this (three cache misses a
row instead of one).

Memory grows with the distinct ids only: 24 bytes a slot, the table at most half full.

>>> codes = IdCodes()
>>> codes(pl.Series(["u1", "u2", None, "u1"])).tolist(), codes(pl.Series(["u3", "u2"])).tolist()
([0, 1, 4294967295, 0], [2, 1])
"""

from __future__ import annotations

import numba
import numpy as np
import polars as pl

from txanomaly.jit import prepare

prepare()  # before the first compiled function is loaded (txanomaly/jit.py)

#: The code of a missing id (:data:`txanomaly.features.kernel.MISSING`).
MISSING = 0xFFFFFFFF
_FIBONACCI = np.uint64(11400714819323198485)  # 2**64 / golden ratio: Knuth's multiplicative hash
_SEEDS = (0, 1)  # Polars' hash seeds: one fixed pair for the life of a table


class IdCodes:
    """Stable uint32 codes for strings, across calls (see the module's docstring)."""

    def __init__(self) -> None:
        # Per slot: the id's two hashes and its code + 1 (0: an empty slot), side by side so
        # that a probe touches one cache line.
        self.slots = np.zeros((1024, 3), np.uint64)
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def __call__(self, ids: pl.Series) -> np.ndarray:
        """The code of each id (:data:`MISSING` for a null), as uint32."""
        text = ids.cast(pl.String)
        out = np.empty(text.len(), np.uint32)
        if not len(out):
            return out
        first, second = (text.hash(seed=seed).to_numpy() for seed in _SEEDS)
        nulls = text.is_null().to_numpy()
        done = 0
        while done < len(out):  # the loop stops when the table is half full: grow, go on
            self.count, done = _intern(first, second, nulls, self.slots, self.count, done, out)
            if done < len(out):
                self.slots = _rehash(self.slots, 2 * len(self.slots))
        if self.count >= MISSING:
            raise ValueError("more than 2**32 - 1 distinct ids")
        return out


@numba.njit(nogil=True, cache=True)
def _intern(first: np.ndarray, second: np.ndarray, nulls: np.ndarray, slots: np.ndarray,
            count: int, start: int, out: np.ndarray) -> tuple[int, int]:  # pragma: no cover
    """Codes for rows ``start:`` into ``out``; returns the count of ids and the first row not
    done (before a new id that would fill the table past half)."""
    mask = slots.shape[0] - 1
    for i in range(start, out.size):
        if nulls[i]:
            out[i] = MISSING
            continue
        a, b = first[i], second[i]
        at = np.int64((a * _FIBONACCI) >> np.uint64(32)) & mask
        while True:
            code = slots[at, 2]
            if code == 0:
                if 2 * (count + 1) > slots.shape[0]:
                    return count, i
                slots[at, 0] = a
                slots[at, 1] = b
                slots[at, 2] = count + 1
                out[i] = count
                count += 1
                break
            if slots[at, 0] == a and slots[at, 1] == b:
                out[i] = code - 1
                break
            at = (at + 1) & mask
    return count, out.size


@numba.njit(nogil=True, cache=True)
def _rehash(slots: np.ndarray, size: int) -> np.ndarray:  # pragma: no cover (compiled)
    new = np.zeros((size, 3), np.uint64)
    mask = size - 1
    for s in range(slots.shape[0]):
        if slots[s, 2] != 0:
            at = np.int64((slots[s, 0] * _FIBONACCI) >> np.uint64(32)) & mask
            while new[at, 2] != 0:
                at = (at + 1) & mask
            new[at] = slots[s]
    return new


__all__ = ["MISSING", "IdCodes"]
