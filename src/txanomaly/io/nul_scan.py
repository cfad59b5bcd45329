"""The rows with a NUL character in any of several text columns, compiled (Numba).

Validation looks for NUL in every text column of every record (:mod:`txanomaly.schema.rules`).
Polars' per-value search (``bin.contains``) costs about 11 ns a value, whatever the string's
length: for the 11 text columns of a flat table, 0.25-0.45 s of CPU time for 2M records, a
third of validating them. :func:`nul_rows` does the same search in one pass over Polars'
string views (Arrow's ``string_view``: 16 bytes a value, a string of at most 12 bytes held in
the view itself, zero-padded; a longer one in a data buffer), a few ns a value, for all the
columns at once, as one Boolean column.

It is exact: True where a value of a column holds a NUL byte; a null value (whose view
Arrow leaves unspecified) may come out True, so it is a superset only there, which the
validation allows (its per-row check decides); a view that points outside its buffer comes
out True, never read. A column that is not held as string views is searched by Polars.

It needs Numba, and is used by the chunked reader (:mod:`txanomaly.io.chunks`), which loads
Numba anyway; :func:`txanomaly.io.load_transactions` keeps Polars' search.

>>> import polars as pl
>>> frame = pl.DataFrame({"a": ["x", "y\\x00", None, "a long text of 20 \\x00"],
...                       "b": ["ok", "ok", "z\\x00", "ok"]})
>>> frame.select(nul_rows(["a", "b"])).to_series().to_list()
[False, True, True, True]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

import numpy as np
import polars as pl

_EMPTY = np.zeros(0, np.uint8)


def nul_rows(columns: Sequence[str | pl.Expr]) -> pl.Expr:
    """True for the rows with a NUL byte in any of ``columns`` (text; none: all False).
    Element-wise, so Polars' streaming engine runs it a batch at a time."""
    if not columns:
        return pl.lit(False)
    _compiled_scan()  # loaded here, not in Polars' threads
    return pl.map_batches(list(columns), _batch, return_dtype=pl.Boolean, is_elementwise=True)


def _batch(series: Sequence[pl.Series]) -> pl.Series:
    """:func:`nul_rows` over one batch of the columns."""
    scan = _compiled_scan()
    height = max(s.len() for s in series)
    found = np.zeros(height, np.bool_)
    for s in series:
        if s.len() != height:  # a broadcast literal (a missing column: null)
            continue
        arrow = s.to_arrow(compat_level=pl.CompatLevel.newest())
        chunks = getattr(arrow, "chunks", [arrow])
        if any(str(chunk.type) != "string_view" for chunk in chunks):
            found |= s.cast(pl.Binary).bin.contains(b"\x00").fill_null(False).to_numpy()
            continue
        at = 0
        for chunk in chunks:
            rows = len(chunk)
            buffers = chunk.buffers()
            if rows and buffers[1] is not None:
                views = np.frombuffer(buffers[1], np.uint32).reshape(-1, 4)
                views = views[chunk.offset:chunk.offset + rows]
                part = found[at:at + rows]
                for k, data in enumerate(buffers[2:] or [None]):
                    scan(views, _EMPTY if data is None else np.frombuffer(data, np.uint8), k,
                         part)
            at += rows
    return pl.Series(found)


@cache
def _compiled_scan() -> Callable[..., Any]:
    """:func:`_scan` compiled (loaded when first used: Numba is not imported with io)."""
    from txanomaly.jit import prepare

    prepare()
    import numba

    return numba.njit(nogil=True, cache=True)(_scan)


def _scan(views: np.ndarray, data: np.ndarray, buffer: int,
          found: np.ndarray) -> None:  # pragma: no cover
    """Set ``found[i]`` where view ``i`` (uint32 x 4: the length, then 12 inline bytes or a
    4-byte prefix, the buffer index and the offset) holds a NUL: the inline strings when
    ``buffer`` is 0, the strings in data buffer number ``buffer`` (``data``) otherwise too."""
    for i in range(found.size):
        length = np.int64(views[i, 0])
        if length <= 12:
            if buffer != 0:
                continue
            for k in range(3):  # the inline bytes, 4 at a time
                if 4 * k >= length:
                    break
                word = np.int64(views[i, 1 + k])
                zero = ~(((word & 0x7F7F7F7F) + 0x7F7F7F7F) | word | 0x7F7F7F7F) & 0x80808080
                rest = length - 4 * k
                if rest < 4:  # past the string: padding
                    zero &= (1 << (8 * rest)) - 1
                if zero != 0:
                    found[i] = True
                    break
        elif views[i, 2] == buffer:
            start = np.int64(views[i, 3])
            if start + length > data.size:
                found[i] = True  # not a string of this buffer (a null's view): never read
                continue
            for b in range(start, start + length):
                if data[b] == 0:
                    found[i] = True
                    break


__all__ = ["nul_rows"]
