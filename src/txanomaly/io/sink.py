"""Writing a result table (features, scores) a chunk at a time, in any output format.

:class:`ResultSink` appends frames of the same columns to one file and holds one chunk at a
time: Parquet through one ``pyarrow.parquet.ParquetWriter`` (a row group or more per chunk),
CSV with the header once, JSON Lines one row object per line, a JSON array with the chunks'
rows joined into one array. The file is written under a temporary name beside the target
and renamed when the sink closes without error, so a failed run leaves no half file.

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
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import polars as pl

from txanomaly.io.formats import format_for


class ResultSink:
    """Append result frames to ``path`` (format by extension) a chunk at a time."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.kind = format_for(self.path).name
        self.rows = 0
        self._partial = self.path.with_name(f".{self.path.name}.partial")
        self._fh: IO[bytes] | None = None
        self._parquet: Any = None
        self._columns: list[str] | None = None

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
        if self.kind == "Parquet":
            import pyarrow.parquet as pq

            table = frame.to_arrow()
            if self._parquet is None:
                # No dictionary pages: result columns are floats and unique ids, where
                # trying one costs half the write time (pyarrow's default tries every column).
                self._parquet = pq.ParquetWriter(self._fh, table.schema, compression="zstd",
                                                 use_dictionary=False)
            self._parquet.write_table(table)
        elif self.kind == "CSV":
            frame.write_csv(self._fh, include_header=self.rows == 0)
        elif self.kind == "JSON Lines":
            frame.write_ndjson(self._fh)
        elif frame.height:  # JSON: the chunk's array without its brackets, comma-joined
            body = frame.write_json().encode()[1:-1]
            self._fh.write((b"," if self.rows else b"") + body)
        self.rows += frame.height

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
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
