"""Stable integer codes for keys across the chunks of one table: user ids, and pairs of codes.

The chunked engine needs the same code for the same user id (and the same pair of user codes)
in every chunk. :class:`KeyCodes` is one open-addressing hash table from a key of a few 32-bit
words to its code, 0, 1, ... in order of first appearance, with one compiled loop over the
chunk doing the lookups. :class:`IdCodes` keys it by two 64-bit hashes of the id (Polars'
string hash with two seeds, computed vectorised); two different ids get the same code only if
both hashes collide: for n distinct ids the chance is about n^2 / 2^129 (below 1e-20 for a
billion ids), far below that of a hardware memory error. A dictionary of the id texts,
consulted once per distinct id of a chunk, cost a fifth of ``txanomaly features`` at 10M rows,
and an exact byte comparison against stored ids cost several times this (three cache misses a
row instead of one). :class:`PairSlots` keys it by the two codes of a pair, exactly.

Memory grows with the distinct keys only: a slot holds the key's words and its code + 1 (0: an
empty slot), 20 bytes for an id and 12 for a pair, the table at most half full.

>>> codes = IdCodes()
>>> codes(pl.Series(["u1", "u2", None, "u1"])).tolist(), codes(pl.Series(["u3", "u2"])).tolist()
([0, 1, 4294967295, 0], [2, 1])
>>> pairs = PairSlots()
>>> pairs(np.array([0, 1, 0, MISSING]), np.array([1, 1, 1, 0])).tolist()
[0, 1, 0, 4294967295]
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


class KeyCodes:
    """Stable uint32 codes for keys of ``words`` 32-bit words, across calls (see the
    module's docstring); ``what`` names the keys in the error for too many."""

    def __init__(self, words: int, what: str = "keys") -> None:
        # Per slot: the key's words and its code + 1 (0: an empty slot), side by side so that
        # a probe touches one cache line.
        self.slots = np.zeros((1024, words + 1), np.uint32)
        self.count = 0
        self.what = what

    def __len__(self) -> int:
        return self.count

    def codes(self, keys: np.ndarray, missing: np.ndarray) -> np.ndarray:
        """The code of each row's key (``keys``: rows x words, uint32), :data:`MISSING` where
        ``missing`` (bool per row) is set."""
        keys = np.ascontiguousarray(keys, np.uint32)
        out = np.empty(len(keys), np.uint32)
        done = 0
        while done < len(out):  # the loop stops when the table is half full: grow, go on
            self.count, done = _intern(keys, missing, self.slots, self.count, done, out)
            if done < len(out):
                self.slots = _rehash(self.slots, 2 * len(self.slots))
        if self.count >= MISSING:
            raise ValueError(f"more than 2**32 - 1 distinct {self.what}")
        return out


class IdCodes(KeyCodes):
    """Stable uint32 codes for strings, across calls: keyed by two 64-bit hashes of the text."""

    def __init__(self) -> None:
        super().__init__(4, "ids")

    def __call__(self, ids: pl.Series) -> np.ndarray:
        """The code of each id (:data:`MISSING` for a null), as uint32."""
        text = ids.cast(pl.String)
        hashes = np.empty((text.len(), len(_SEEDS)), np.uint64)
        if not len(hashes):
            return np.empty(0, np.uint32)
        for j, seed in enumerate(_SEEDS):
            hashes[:, j] = text.hash(seed=seed).to_numpy()
        # Little-endian words: the first two are the first hash, which picks the slot.
        return self.codes(hashes.view(np.uint32), text.is_null().to_numpy())


class PairSlots(KeyCodes):
    """A stable code for each (first, second) pair of codes, across calls (the table keyed
    by the two codes, exactly)."""

    def __init__(self) -> None:
        super().__init__(2, "pairs")

    def __call__(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """The pair's code per row (:data:`MISSING` where either code is missing)."""
        first = np.ascontiguousarray(first, np.uint32)
        second = np.ascontiguousarray(second, np.uint32)
        if first.size != second.size:
            raise ValueError("both code columns need one entry per chunk row")
        keys = np.empty((first.size, 2), np.uint32)
        keys[:, 0] = second  # the slot comes from the 64-bit word first << 32 | second
        keys[:, 1] = first
        return self.codes(keys, (first == MISSING) | (second == MISSING))


@numba.njit(nogil=True, cache=True)
def _home(words: np.ndarray, mask: int) -> np.int64:  # pragma: no cover (compiled)
    """A key's first slot: Knuth's multiplicative hash of its first 64 bits."""
    key = np.uint64(words[0]) | (np.uint64(words[1]) << np.uint64(32))
    return np.int64((key * _FIBONACCI) >> np.uint64(32)) & mask


@numba.njit(nogil=True, cache=True)
def _intern(keys: np.ndarray, missing: np.ndarray, slots: np.ndarray, count: int, start: int,
            out: np.ndarray) -> tuple[int, int]:  # pragma: no cover (compiled)
    """Codes for rows ``start:`` into ``out``; returns the count of keys and the first row not
    done (before a new key that would fill the table past half)."""
    width = keys.shape[1]
    mask = slots.shape[0] - 1
    for i in range(start, out.size):
        if missing[i]:
            out[i] = MISSING
            continue
        key = keys[i]
        at = _home(key, mask)
        while True:
            code = slots[at, width]
            if code == 0:
                if 2 * (count + 1) > slots.shape[0]:
                    return count, i
                slots[at, :width] = key
                slots[at, width] = count + 1
                out[i] = count
                count += 1
                break
            same = True
            for j in range(width):
                if slots[at, j] != key[j]:
                    same = False
                    break
            if same:
                out[i] = code - 1
                break
            at = (at + 1) & mask
    return count, out.size


@numba.njit(nogil=True, cache=True)
def _rehash(slots: np.ndarray, size: int) -> np.ndarray:  # pragma: no cover (compiled)
    width = slots.shape[1] - 1
    new = np.zeros((size, width + 1), np.uint32)
    mask = size - 1
    for s in range(slots.shape[0]):
        if slots[s, width] != 0:
            at = _home(slots[s], mask)
            while new[at, width] != 0:
                at = (at + 1) & mask
            new[at] = slots[s]
    return new


__all__ = ["MISSING", "IdCodes", "KeyCodes", "PairSlots"]
