"""A table of numbers on disk, written and read in blocks of rows: training beyond memory.

The batch map passes over its rows once an epoch. :class:`RowStore` keeps them in a plain file
(C order, one dtype, no header) that is appended to block by block and read back block by
block with ordinary reads into fresh arrays, so the process holds one block at a time; the
operating system's page cache, not the process, keeps a file that fits in memory (a
memory-mapped file would count every page it touched in the process's resident memory).
:class:`BlockStore`, read once an epoch, maps each block on its own instead: one block's
pages at a time, and no copy.

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as folder:
...     store = RowStore(f"{folder}/x.f32", 2, np.float32)
...     store.append(np.arange(10.0).reshape(5, 2))
...     [b.tolist() for b in store.blocks(3)], store.take(np.array([4, 0])).tolist()
([[[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]], [[6.0, 7.0], [8.0, 9.0]]], [[8.0, 9.0], [0.0, 1.0]])
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: Rows per block read back by default (:data:`txanomaly.scaling.MOMENT_BLOCK`: the scaler's
#: sums over blocks of this size equal its sums over the whole matrix).
BLOCK_ROWS = 262_144


class RowStore:
    """``n_rows x n_columns`` values of ``dtype`` in the file ``path`` (created empty).

    Parameters
    ----------
    path : str or Path
        The file; the caller owns its folder and removes it (a temporary directory).
    n_columns : int
    dtype : numpy dtype, default float64
    """

    def __init__(self, path: str | Path, n_columns: int, dtype: Any = np.float64,
                 keep_columns: Sequence[int] = ()):
        self.path = Path(path)
        self.n_columns = int(n_columns)
        self.dtype = np.dtype(dtype)
        self.n_rows = 0
        self.path.write_bytes(b"")
        # ``keep_columns``: also kept one file per column beside the table, so that reading
        # one back (:meth:`column`) reads that column's bytes, not the whole table's.
        self._column_files = {int(j): self.path.with_name(f"{self.path.name}.col{int(j)}")
                              for j in keep_columns}
        for file in self._column_files.values():
            file.write_bytes(b"")
        # Kept columns given new values (transform_column): read from their files through
        # their function, not from the table.
        self._replaced: dict[int, Callable[[np.ndarray], np.ndarray]] = {}

    @property
    def row_bytes(self) -> int:
        return self.n_columns * self.dtype.itemsize

    def append(self, block: np.ndarray) -> None:
        """Add rows at the end (converted to the store's dtype)."""
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.ndim != 2 or block.shape[1] != self.n_columns:
            raise ValueError(f"expected rows of {self.n_columns} values, got shape {block.shape}")
        with self.path.open("ab") as fh:
            fh.write(block.data.cast("B"))
        for j, file in self._column_files.items():
            with file.open("ab") as fh:
                fh.write(np.ascontiguousarray(block[:, j]).data.cast("B"))
        self.n_rows += len(block)

    def rewrite(self, function: Any, rows: int = BLOCK_ROWS) -> None:
        """Replace every block of rows by ``function(block)`` (same shape), in place, in one
        pass. The per-column files of ``keep_columns`` no longer match and are removed."""
        with self.path.open("r+b", buffering=0) as fh:
            for first in range(0, self.n_rows, rows):
                block = np.empty((min(rows, self.n_rows - first), self.n_columns), self.dtype)
                fh.seek(first * self.row_bytes)
                _read_into(fh, block.data.cast("B"), self.path)
                self._overlay(block, first)
                new = np.ascontiguousarray(function(block), dtype=self.dtype)
                if new.shape != block.shape:
                    raise ValueError(f"rewrite changed a block's shape {block.shape} to "
                                     f"{new.shape}")
                fh.seek(first * self.row_bytes)
                fh.write(new.data.cast("B"))
        for file in self._column_files.values():
            file.unlink(missing_ok=True)
        self._column_files = {}
        self._replaced = {}

    def transform_column(self, j: int, function: Callable[[np.ndarray], np.ndarray]
                         ) -> None:
        """Column ``j`` (one of ``keep_columns``) is ``function`` of its kept values from
        now on (elementwise: applied to each block's part of the column as it is read):
        :meth:`blocks`, :meth:`take`, :meth:`load` and :meth:`column` read it from its own
        file through ``function``, and the table's copy is never read again. A column whose
        transform's scale is fitted on the whole column so costs neither a pass over the
        table nor a write."""
        if j not in self._column_files:
            raise ValueError(f"column {j} is not one of the kept columns "
                             f"{sorted(self._column_files)}")
        self._replaced[j] = function

    def _kept(self, j: int, first: int, rows: int) -> np.ndarray:
        """Rows ``first:first + rows`` of the replaced column ``j`` (:meth:`transform_column`)."""
        values = np.empty(rows, dtype=self.dtype)
        with self._column_files[j].open("rb", buffering=0) as fh:
            fh.seek(first * self.dtype.itemsize)
            _read_into(fh, values.data.cast("B"), self._column_files[j])
        return np.asarray(self._replaced[j](values), dtype=self.dtype)

    def _overlay(self, block: np.ndarray, first: int) -> None:
        """Put the replaced columns' values for rows ``first:first + len(block)`` into
        ``block``."""
        for j in sorted(self._replaced):
            block[:, j] = self._kept(j, first, len(block))

    def blocks(self, rows: int = BLOCK_ROWS, start: int = 0, stop: int | None = None,
               order: str = "C") -> Iterator[np.ndarray]:
        """Rows ``start:stop`` in order, ``rows`` at a time (the last block may be shorter);
        each block is a new array the caller may keep, row-major, or column-major with
        ``order="F"`` (the replaced columns then go in whole, not one value a row)."""
        stop = self.n_rows if stop is None else min(stop, self.n_rows)
        # Column-major blocks are read into one row-major buffer and copied out of it.
        buffer = np.empty((min(rows, stop - start) if order == "F" else 0, self.n_columns),
                          dtype=self.dtype)
        with self.path.open("rb", buffering=0) as fh:
            fh.seek(start * self.row_bytes)
            for first in range(start, stop, rows):
                size = min(rows, stop - first)
                block = buffer[:size] if order == "F" else np.empty(
                    (size, self.n_columns), dtype=self.dtype)
                _read_into(fh, block.data.cast("B"), self.path)
                if order == "F":
                    block = np.asfortranarray(block)
                self._overlay(block, first)
                yield block

    def take(self, indices: np.ndarray, rows: int = BLOCK_ROWS) -> np.ndarray:
        """The rows at ``indices``, in that order (repeats allowed), in one ordered pass."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(indices) and not (indices.min() >= 0 and indices.max() < self.n_rows):
            raise IndexError(f"row index out of range for a store of {self.n_rows} rows")
        out = np.empty((len(indices), self.n_columns), dtype=self.dtype)
        order = np.argsort(indices, kind="stable")
        wanted = indices[order]
        lo = 0
        for number, block in enumerate(self.blocks(rows)):
            first = number * rows
            hi = int(np.searchsorted(wanted, first + len(block), side="left"))
            out[order[lo:hi]] = block[wanted[lo:hi] - first]
            lo = hi
            if lo == len(wanted):
                break
        return out

    def load(self) -> np.ndarray:
        """Every row, in memory."""
        values = np.fromfile(self.path, dtype=self.dtype, count=self.n_rows * self.n_columns)
        values = values.reshape(self.n_rows, self.n_columns)
        self._overlay(values, 0)
        return values

    def column(self, j: int) -> np.ndarray:
        """Column ``j`` (from its own file when it is one of ``keep_columns``, else one pass
        over the table; 8 bytes a row for float64)."""
        if j in self._replaced:
            return self._kept(j, 0, self.n_rows)
        if j in self._column_files:
            return np.fromfile(self._column_files[j], dtype=self.dtype, count=self.n_rows)
        # Copies: a view would keep its whole block alive until the end, i.e. the table.
        return np.concatenate([block[:, j].copy() for block in self.blocks()] or
                              [np.empty(0, dtype=self.dtype)])


class BlockStore:
    """Arrays of one dtype, each of its own shape, appended to the file ``path`` (created
    empty) and read back in order, one at a time (the batch map's augmented blocks:
    :func:`txanomaly.som.augment_rows`, built once and read every epoch).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     store = BlockStore(f"{folder}/b", np.float32)
    ...     store.append(np.ones((2, 3))); store.append(np.zeros((1, 1)))
    ...     [b.shape for b in store], store.nbytes
    ([(2, 3), (1, 1)], 28)
    """

    def __init__(self, path: str | Path, dtype: Any = np.float32):
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self.shapes: list[tuple[int, ...]] = []
        self.path.write_bytes(b"")

    @property
    def nbytes(self) -> int:
        return sum(int(np.prod(shape)) for shape in self.shapes) * self.dtype.itemsize

    def append(self, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array, dtype=self.dtype)
        with self.path.open("ab") as fh:
            fh.write(array.data.cast("B"))
        self.shapes.append(array.shape)

    def __iter__(self) -> Iterator[np.ndarray]:
        """The arrays in order, each mapped from the file on its own (private, copy on
        write): no copy is made and nothing is read ahead of use, and once the caller drops
        an array its pages leave the process (the map's passes read the file 20 times: the
        copies of ordinary reads cost several seconds at 10M rows)."""
        offset = 0
        with self.path.open("rb") as fh:
            for shape in self.shapes:
                count = int(np.prod(shape))
                if count == 0:
                    yield np.empty(shape, dtype=self.dtype)
                    continue
                start = offset - offset % mmap.ALLOCATIONGRANULARITY
                size = offset - start + count * self.dtype.itemsize
                if os.fstat(fh.fileno()).st_size < start + size:
                    raise OSError(f"{self.path}: the file ended early")
                mapped = mmap.mmap(fh.fileno(), size, offset=start, access=mmap.ACCESS_COPY)
                yield np.frombuffer(mapped, self.dtype, count, offset - start).reshape(shape)
                offset += count * self.dtype.itemsize


def _read_into(fh: Any, view: memoryview, path: Path) -> None:
    done = 0
    while done < len(view):
        got = fh.readinto(view[done:])
        if not got:
            raise OSError(f"{path}: the file ended early")
        done += got


__all__ = ["BLOCK_ROWS", "BlockStore", "RowStore"]
