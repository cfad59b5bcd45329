"""Writing a result table (features, scores) a chunk at a time, in any output format.

:class:`ResultSink` appends frames of the same columns to one file and holds one chunk at a
time: Parquet through one ``pyarrow.parquet.ParquetWriter`` (a row group or more per chunk;
text columns zstd, the others Snappy: :func:`parquet_codecs`),
CSV with the header once, JSON Lines one row object per line, a JSON array with the chunks'
rows joined into one array. The file is written under a temporary name beside the target
and renamed when the sink closes without error, so a failed run leaves no half file.

Each chunk is encoded and written by one background thread while the caller computes the
next (at most one chunk waits; an error in the writer is raised by the next ``write`` or when
the sink closes). In Parquet, text columns with few distinct values in the first chunk
(reasons, risk levels) are dictionary-encoded; others (ids, floats) are not, where trying a
dictionary costs half the write time.

>>> import tempfile, polars as pl
>>> with tempfile.TemporaryDirectory() as folder:
...     with ResultSink(f"{folder}/out.csv") as sink:
...         sink.write(pl.DataFrame({"a": [1, 2]}))
...         sink.write(pl.DataFrame({"a": [3]}))
...     pl.read_csv(f"{folder}/out.csv")["a"].to_list()
[1, 2, 3]
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import polars as pl

from txanomaly.io.formats import format_for

#: A text column with at most this many distinct values in the first chunk is
#: dictionary-encoded in Parquet.
DICTIONARY_MAX = 1024


def parquet_codecs(schema: pl.Schema) -> dict[str, str]:
    """The Parquet codec of each column: zstd for text (ids shrink about 40-fold), Snappy for
    the others (float64 features and scores, whose low bytes are noise: zstd made the 9 `seed`
    feature columns of 2M rows 11 % smaller than Snappy, 44 MB against 50 MB, for about
    0.25 s more CPU time, the largest single cost of writing them). Both are read by every
    Parquet reader (Snappy is Spark's and pyarrow's default codec)."""
    return {name: "zstd" if dtype == pl.String else "snappy" for name, dtype in schema.items()}


class ResultSink:
    """Append result frames to ``path`` (format by extension) a chunk at a time
    (``background``: written by a worker thread, see the module's docstring)."""

    def __init__(self, path: str | Path, background: bool = True):
        self.path = Path(path)
        self.kind = format_for(self.path).name
        self.rows = 0
        self._partial = self.path.with_name(f".{self.path.name}.partial")
        self._fh: IO[bytes] | None = None
        self._parquet: Any = None
        self._columns: list[str] | None = None
        self._pool = ThreadPoolExecutor(1) if background else None
        self._pending: Future[None] | None = None

    def __enter__(self) -> ResultSink:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self._partial.open("wb")
        if self.kind == "JSON":
            self._fh.write(b"[")
        return self

    def write(self, frame: pl.DataFrame) -> None:
        """Append ``frame`` (the same columns every time)."""
        if self._fh is None:
            raise RuntimeError("ResultSink.write outside its with block")
        if self._columns is None:
            self._columns = frame.columns
        elif frame.columns != self._columns:
            raise ValueError(f"columns {frame.columns} differ from the first chunk's")
        rows = frame.height
        if self._pool is None:
            self._write(frame, self.rows)
        else:
            self._wait()
            # The writer gets its own DataFrame object (a shallow copy): some Polars writers
            # hold the frame while they run, and the caller may still read its own.
            self._pending = self._pool.submit(self._write, frame.clone(), self.rows)
        self.rows += rows

    def _wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def _write(self, frame: pl.DataFrame, before: int) -> None:
        assert self._fh is not None
        if self.kind == "Parquet":
            import pyarrow.parquet as pq

            table = frame.to_arrow()
            if self._parquet is None:
                few = [name for name, dtype in frame.schema.items() if dtype == pl.String
                       and frame.get_column(name).n_unique() <= DICTIONARY_MAX]
                self._parquet = pq.ParquetWriter(self._fh, table.schema,
                                                 compression=parquet_codecs(frame.schema),
                                                 use_dictionary=few or False)
            self._parquet.write_table(table)
        elif self.kind == "CSV":
            frame.write_csv(self._fh, include_header=before == 0)
        elif self.kind == "JSON Lines":
            frame.write_ndjson(self._fh)
        elif frame.height:  # JSON: the chunk's array without its brackets, comma-joined
            body = frame.write_json().encode()[1:-1]
            self._fh.write((b"," if before else b"") + body)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self._fh is None:
            return
        try:
            self._wait()
        except BaseException as exc:
            error = error or exc
            if kind is None:
                self._close(error)
                raise
        finally:
            if self._pool is not None:
                self._pool.shutdown()
        self._close(error)

    def _close(self, error: BaseException | None) -> None:
        fh, self._fh = self._fh, None
        if fh is None:
            return
        try:
            if self._parquet is not None:
                self._parquet.close()
            elif self.kind == "Parquet" and error is None and self._columns is None:
                pl.DataFrame().write_parquet(fh)  # no chunk at all: an empty table
            if self.kind == "JSON":
                fh.write(b"]")
        finally:
            fh.close()
        if error is None:
            os.replace(self._partial, self.path)
        else:
            self._partial.unlink(missing_ok=True)
