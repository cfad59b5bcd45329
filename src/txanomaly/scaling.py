"""Per-feature scalers, written once: the detector, evaluation and the peers all use these.

A scaler is a ``(center, scale)`` pair of per-column arrays fitted on training rows; a row is
scaled as ``(x - center) / scale``.

>>> X = np.array([[1.0, 5.0], [3.0, 5.0]])
>>> center, scale = fit_scaler(X, "standard")
>>> center.tolist(), scale.tolist()
([2.0, 5.0], [1.0, 1.0])
>>> apply_scaler(X, center, scale).tolist()
[[-1.0, 0.0], [1.0, 0.0]]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np

#: ``map``'s signature, for a function of a block and the blocks.
MapBlocks = Callable[[Callable[[np.ndarray], np.ndarray], Iterable[np.ndarray]],
                     Iterable[np.ndarray]]

#: ``standard``: mean and (population) standard deviation; ``robust``: median and
#: interquartile range (the standard deviation where the IQR is 0); ``none``: identity.
SCALERS = ("standard", "robust", "none")


def fit_scaler(X: np.ndarray, scaling: str) -> tuple[np.ndarray, np.ndarray]:
    """``(center, scale)`` per column; a zero spread becomes 1 so constants stay finite."""
    if scaling == "robust":  # the whole matrix at once (the blocks' version goes by column)
        q25, center, q75 = np.quantile(X, [0.25, 0.5, 0.75], axis=0)
        scale = q75 - q25
        scale = np.where(scale > 0, scale, X.std(axis=0))
        return np.asarray(center, dtype=np.float64), np.where(scale > 0, scale, 1.0)
    return fit_scaler_blocks(lambda: _blocks(X, MOMENT_BLOCK), X.shape[1], scaling)


def fit_scaler_blocks(blocks: Callable[[], Iterable[np.ndarray]], n_columns: int,
                      scaling: str, columns: Callable[[], Iterable[np.ndarray]] | None = None,
                      sums: tuple[np.ndarray, int] | None = None,
                      map_blocks: MapBlocks = map) -> tuple[np.ndarray, np.ndarray]:
    """:func:`fit_scaler` of a table that may not fit in memory.

    ``blocks()`` yields the rows in order, in blocks (each call starts again from the first
    row); blocks of :data:`MOMENT_BLOCK` rows give ``standard`` statistics equal to
    :func:`fit_scaler`'s bit for bit. ``robust`` needs each whole column at once (its
    quantiles are exact): ``columns()`` yields them, or by default they are gathered from
    the blocks, one column (8 bytes a row) at a time; they equal :func:`fit_scaler`'s up to
    rounding of the standard deviation that replaces a zero IQR. ``sums``: ``standard``'s
    first pass when it was made as the rows were written (:class:`BlockSums`); the other
    scalings ignore it. ``map_blocks``: see :func:`mean_std_blocks`.
    """
    if scaling not in SCALERS:
        raise ValueError(f"scaling must be one of {SCALERS}, got {scaling!r}")
    if scaling == "none":
        return np.zeros(n_columns), np.ones(n_columns)
    if scaling == "robust":
        found = (columns or (lambda: _gathered_columns(blocks, n_columns)))()
        stats = np.array([_robust_column(np.asarray(col)) for col in found])
        center, scale = stats[:, 0], stats[:, 1]
    else:
        center, scale = mean_std_blocks(blocks, n_columns, sums, map_blocks)
    return np.asarray(center, dtype=np.float64), np.where(scale > 0, scale, 1.0)


def _robust_column(column: np.ndarray) -> tuple[float, float]:
    """(median, IQR) of one column; its standard deviation where the IQR is 0."""
    q25, center, q75 = np.quantile(column, [0.25, 0.5, 0.75])
    scale = q75 - q25
    return float(center), float(scale if scale > 0 else column.std())


def _gathered_columns(blocks: Callable[[], Iterable[np.ndarray]], n_columns: int
                      ) -> Iterator[np.ndarray]:
    for j in range(n_columns):
        yield np.concatenate([np.array(block[:, j], dtype=np.float64) for block in blocks()])


def apply_scaler(X: np.ndarray, center: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``(X - center) / scale`` in float64."""
    return (np.asarray(X, dtype=np.float64) - center) / scale


#: Rows summed at a time by :func:`mean_std`: a block of this many rows gives the same
#: float64 sums whether the rows come from memory or from disk.
MOMENT_BLOCK = 262_144


def mean_std(X: np.ndarray, chunk: int = MOMENT_BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """Column mean and (population) std in float64, chunk by chunk: no full-size temporary."""
    return mean_std_blocks(lambda: _blocks(X, chunk), X.shape[1])


def mean_std_blocks(blocks: Callable[[], Iterable[np.ndarray]], n_columns: int,
                    sums: tuple[np.ndarray, int] | None = None,
                    map_blocks: MapBlocks = map) -> tuple[np.ndarray, np.ndarray]:
    """:func:`mean_std` over the blocks of rows ``blocks()`` yields (two passes; one when
    ``sums``, the column sums and the rows of the first, are given: :class:`BlockSums`).
    ``map_blocks(function, blocks)``: the second pass's per-block sums, in block order (the
    builtin ``map``, or one that computes them in threads); they are added in that order."""
    if sums is None:
        total = np.zeros(n_columns)
        rows = 0
        for block in blocks():
            total += block.sum(axis=0, dtype=np.float64)
            rows += len(block)
    else:
        total, rows = sums
    mean = total / rows
    squares = np.zeros(n_columns)
    for part in map_blocks(lambda block: _square_sums(block, mean), blocks()):
        squares += part
    return mean, np.sqrt(squares / rows)


def _square_sums(block: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """``((block - mean) ** 2).sum(axis=0)``; a column-major block a column at a time (each
    column contiguous: NumPy's same pairwise sum of the same squares), whose temporaries are
    a column's, not the block's."""
    if block.ndim == 2 and block.flags.f_contiguous:
        return np.array([((block[:, j] - mean[j]) ** 2).sum() for j in range(block.shape[1])])
    return ((block - mean) ** 2).sum(axis=0)


class BlockSums:
    """:func:`mean_std_blocks`' first pass made as rows arrive in pieces of any size: the
    column sums of each :data:`MOMENT_BLOCK` rows (column-major, as the detector reads its
    blocks), added in order, so the totals equal that pass's over the same rows bit for bit.
    A column may be given its values afterwards (:meth:`set_column`: a column transformed
    once the whole of it is known). Holds one block (``MOMENT_BLOCK x n_columns`` float64).

    >>> X = np.arange(12.0).reshape(6, 2)
    >>> sums = BlockSums(2, block_rows=4)
    >>> sums.add(X[:1]); sums.add(X[1:])
    >>> sums.set_column(1, X[:, 1] * 10)
    >>> total, rows = sums.result()
    >>> total.tolist(), rows
    ([30.0, 360.0], 6)
    """

    def __init__(self, n_columns: int, block_rows: int = MOMENT_BLOCK):
        self.block_rows = block_rows
        self._total = np.zeros(n_columns)
        self._pending = np.empty((block_rows, n_columns), order="F")
        self._filled = 0
        self._columns: dict[int, float] = {}
        self.rows = 0

    def add(self, X: np.ndarray) -> None:
        """Count the rows ``X`` (``n x n_columns``), after those already counted."""
        done = 0
        while done < len(X):
            take = min(len(X) - done, self.block_rows - self._filled)
            self._pending[self._filled:self._filled + take] = X[done:done + take]
            self._filled += take
            done += take
            if self._filled == self.block_rows:
                self._total += self._pending.sum(axis=0, dtype=np.float64)
                self._filled = 0
        self.rows += len(X)

    def set_column(self, j: int, values: np.ndarray) -> None:
        """Column ``j``'s sums from ``values`` (all the rows' values of that column, in
        order) instead of from the rows added."""
        values = np.asarray(values, dtype=np.float64)
        if values.shape != (self.rows,):
            raise ValueError(f"expected {self.rows} values, got shape {values.shape}")
        total = np.zeros(1)
        for start in range(0, self.rows, self.block_rows):
            part = np.asfortranarray(values[start:start + self.block_rows, None])
            total += part.sum(axis=0, dtype=np.float64)
        self._columns[j] = float(total[0])

    def result(self) -> tuple[np.ndarray, int]:
        """``(column sums, rows)``: the ``sums`` of :func:`mean_std_blocks`."""
        total = self._total.copy()
        if self._filled:
            last = np.asfortranarray(self._pending[:self._filled])
            total += last.sum(axis=0, dtype=np.float64)
        for j, value in self._columns.items():
            total[j] = value
        return total, self.rows


def _blocks(X: np.ndarray, rows: int) -> Iterator[np.ndarray]:
    for start in range(0, len(X), rows):
        yield X[start:start + rows]


__all__ = ["MOMENT_BLOCK", "SCALERS", "BlockSums", "apply_scaler", "fit_scaler",
           "fit_scaler_blocks", "mean_std", "mean_std_blocks"]
