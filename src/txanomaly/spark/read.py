"""Reading transactions on Spark with the single-machine readers' rules.

Each format is parsed by the same code the single-machine readers run, inside the
executors: JSON records by :func:`txanomaly.io.records_to_frame` (the input rules of
:mod:`txanomaly.schema`), flat Parquet tables by :func:`txanomaly.io.validate_flat`. So a
record is accepted, rejected and named exactly as ``txanomaly features`` would. Then, on the
cluster, a repeated ``transactionId`` with the same content is counted once and one with other
content is rejected (the first in input order wins), as :func:`txanomaly.io.deduplicate` does.

Every accepted row gets ``_index``, its place in the input: its record's position in its file
(lines that are blank do not count, as on one machine), with the files in path order (the
file's rank in the top bits, :data:`FILE_SHIFT`). The features break timestamp ties by it.

- ``.jsonl`` / ``.ndjson``: read as text lines, split across tasks like any text file; the
  line numbers and record positions come from one count per file block.
- ``.json``: a JSON array (or JSON Lines) per file, each file read whole by one task (a JSON
  array cannot be split): many files read in parallel, a single huge array does not.
- ``.parquet``: a file or a directory of files, split by row groups.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
import polars as pl
import pyarrow as pa

from txanomaly.errors import InputFormatError
from txanomaly.io import Rejected, records_to_frame, validate_flat
from txanomaly.io.json_read import _iter_json_array, _iter_json_lines, _line_problem, _Unparseable
from txanomaly.schema import EXTRA_COLUMN, FLAT_COLUMNS, FLAT_SCHEMA
from txanomaly.spark.features import ORDER
from txanomaly.spark.session import frame_batches

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

#: ``_index`` = file rank << FILE_SHIFT | the record's position in its file.
FILE_SHIFT = 40
_POSITION = (1 << FILE_SHIFT) - 1
_REJECT = "_reject"  # a rejected record's line of the rejects file (JSON), null if accepted
_SUFFIXES = {".jsonl": "lines", ".ndjson": "lines", ".json": "json", ".parquet": "parquet"}


@dataclass
class SparkRead:
    """What :func:`read_transactions` returns.

    Attributes
    ----------
    frame : DataFrame
        The accepted records: the flat columns, ``extra`` and ``_index``.
    rejects : DataFrame
        One row per rejected record: ``index`` (its position in its file), ``file``,
        ``line`` (the JSON line of the rejects file: index, transactionId, errors, record).
    exact_duplicates : int
        Records that repeat an earlier one exactly (counted once).
    """

    frame: DataFrame
    rejects: DataFrame
    exact_duplicates: int

    def write_rejects(self, path: str) -> int:
        """Write the rejects as the single-machine rejects file (one JSON object a line, in
        input order; each also names its ``file``), streamed through the driver. Returns
        how many."""
        from pathlib import Path

        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        count = 0
        with target.open("wb") as fh:
            for row in self.rejects.orderBy("file", "index").select("line").toLocalIterator():
                fh.write(row["line"].encode() + b"\n")
                count += 1
        return count


def read_transactions(spark: SparkSession, path: str) -> SparkRead:
    """Read and validate the transactions at ``path`` (a file, a directory or a glob; the
    format by its extension: .jsonl/.ndjson, .json, .parquet)."""
    kind = _kind(path)
    parsed = (_read_lines(spark, path) if kind == "lines" else
              _read_json_files(spark, path) if kind == "json" else _read_parquet(spark, path))
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    parsed = parsed.persist(StorageLevel.MEMORY_AND_DISK)  # read once, split in two
    valid = parsed.filter(F.col(_REJECT).isNull()).drop(_REJECT)
    rejected = parsed.filter(F.col(_REJECT).isNotNull()).select(
        (F.col(ORDER).bitwiseAND(F.lit(_POSITION))).alias("index"), F.col("_file").alias("file"),
        F.col(_REJECT).alias("line"))
    frame, conflicts, exact = _deduplicate(valid)
    return SparkRead(frame, rejected.unionByName(conflicts), exact)


def _kind(path: str) -> str:
    from pathlib import PurePath

    name = PurePath(path.rstrip("/")).name.lower()
    for suffix, kind in _SUFFIXES.items():
        if name.endswith(suffix):
            return kind
    raise InputFormatError(f"{path}: Spark reads {', '.join(_SUFFIXES)} (by extension); "
                           "convert CSV to Parquet first")


def _output_schema() -> Any:
    from pyspark.sql.types import DoubleType, LongType, StringType, StructField, StructType

    spark_type = {pl.String: StringType(), pl.Int64: LongType(), pl.Float64: DoubleType()}
    return StructType([*[StructField(c, spark_type[FLAT_SCHEMA[c]]) for c in FLAT_COLUMNS],
                       StructField(EXTRA_COLUMN, StringType()), StructField(ORDER, LongType()),
                       StructField("_file", StringType()), StructField(_REJECT, StringType())])


def _reject_line(rej: Rejected, file: str) -> str:
    return orjson.dumps({**rej.to_json(), "file": file}, default=str).decode()


def _parsed_batches(frame: pl.DataFrame, rejects: list[Rejected], file: str, offset: int,
                    schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """Accepted rows and rejects as one table (``_index`` and rejects' index are positions
    in the file; ``offset`` adds the file's rank)."""
    accepted = frame.with_columns(pl.col("_index") + offset, _file=pl.lit(file),
                                  _reject=pl.lit(None, dtype=pl.String))
    bad = pl.DataFrame({ORDER: [r.index + offset for r in rejects],
                        "_file": [file] * len(rejects),
                        _REJECT: [_reject_line(r, file) for r in rejects]},
                       schema={ORDER: pl.Int64, "_file": pl.String, _REJECT: pl.String})
    yield from frame_batches(pl.concat([accepted, bad], how="diagonal_relaxed"), schema)


def _file_ranks(paths: list[str]) -> dict[str, int]:
    return {p: i << FILE_SHIFT for i, p in enumerate(sorted(set(paths)))}


# --------------------------------------------------------------------------- JSON Lines
def _read_lines(spark: SparkSession, path: str) -> DataFrame:
    """Text lines; each line's number and record position from one count per file block."""
    from pyspark.sql import functions as F
    from pyspark.sql.pandas.types import to_arrow_schema

    lines = spark.read.text(path).select(
        "value", F.col("_metadata.file_path").alias("file"),
        F.col("_metadata.file_block_start").alias("block"),
        F.monotonically_increasing_id().alias("id"))
    blank = F.trim(F.col("value")) == ""
    blocks = lines.groupBy("file", "block").agg(
        F.count("*").alias("lines"), F.sum(F.when(blank, 0).otherwise(1)).alias("records"),
        F.min("id").alias("first")).collect()
    ranks = _file_ranks([b["file"] for b in blocks])
    starts: dict[tuple[str, int], tuple[int, int, int]] = {}
    for file in ranks:  # per file, blocks in order: where each starts (line, record)
        line = record = 0
        for b in sorted((b for b in blocks if b["file"] == file), key=lambda b: b["block"]):
            starts[(file, b["block"])] = (line, record + ranks[file], b["first"])
            line += b["lines"]
            record += b["records"]
    schema = _output_schema()
    arrow_schema = to_arrow_schema(schema)

    def parse(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        seen: dict[tuple[str, int], int] = {}  # records so far in each block
        for batch in batches:
            records: dict[str, list[tuple[int, Any]]] = {}
            cols = batch.to_pydict()
            for text, file, block, row_id in zip(cols["value"], cols["file"], cols["block"],
                                                 cols["id"], strict=True):
                if not text.strip():
                    continue
                line0, record0, first = starts[(file, block)]
                index = record0 + seen.get((file, block), 0)
                seen[(file, block)] = seen.get((file, block), 0) + 1
                try:
                    raw = orjson.loads(text)
                except orjson.JSONDecodeError as exc:
                    raw = _Unparseable(text, _line_problem(line0 + row_id - first + 1, exc))
                records.setdefault(file, []).append((index, raw))
            for file, pairs in records.items():
                frame, rejects = records_to_frame(pairs)
                yield from _parsed_batches(frame, rejects, file, 0, arrow_schema)

    return lines.mapInArrow(parse, schema)


# --------------------------------------------------------------------------- JSON files
def _read_json_files(spark: SparkSession, path: str) -> DataFrame:
    """Each file whole (a JSON array, or one record per line) in one task."""
    from pyspark.sql.pandas.types import to_arrow_schema

    files = spark.read.format("binaryFile").load(path)
    ranks = _file_ranks([r["path"] for r in files.select("path").collect()])
    schema = _output_schema()
    arrow_schema = to_arrow_schema(schema)

    def parse(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pathlib import Path

        for batch in batches:
            cols = batch.to_pydict()
            for file, content in zip(cols["path"], cols["content"], strict=True):
                body = content.lstrip()
                if not body:
                    continue
                if body[:1] not in (b"[", b"{"):
                    raise InputFormatError(f"{file}: not JSON (expected a JSON array or one "
                                           "object per line)")
                fh = io.BytesIO(content)
                pairs = (_iter_json_array(fh, Path(file)) if body[:1] == b"[" else
                         _iter_json_lines(fh))
                frame, rejects = records_to_frame(pairs)
                yield from _parsed_batches(frame, rejects, file, ranks[file], arrow_schema)

    return files.select("path", "content").mapInArrow(parse, schema)


# --------------------------------------------------------------------------- Parquet
def _read_parquet(spark: SparkSession, path: str) -> DataFrame:
    """Row groups in parallel; each batch through :func:`txanomaly.io.validate_flat`."""
    from pyspark.sql import functions as F
    from pyspark.sql.pandas.types import to_arrow_schema

    table = spark.read.parquet(path)
    columns = table.columns
    validate_flat(pl.DataFrame({c: [] for c in columns}), path)  # the columns, on the driver
    ranks = _file_ranks([r["file"] for r in table.select(
        F.col("_metadata.file_path").alias("file")).distinct().collect()])
    located = table.select("*", F.col("_metadata.file_path").alias("_file"),
                           F.col("_metadata.row_index").alias("_row"))
    schema = _output_schema()
    arrow_schema = to_arrow_schema(schema)

    def parse(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            whole = pl.from_arrow(batch)
            assert isinstance(whole, pl.DataFrame)
            for (file,), part in whole.group_by("_file", maintain_order=True):
                rows = part.get_column("_row").to_numpy()
                frame, rejects = validate_flat(part.select(columns), str(file))
                frame = frame.with_columns(pl.Series("_index", rows[frame["_index"].to_numpy()]))
                rejects = [Rejected(int(rows[r.index]), r.transaction_id, r.errors, r.record)
                           for r in rejects]
                yield from _parsed_batches(frame, rejects, str(file), ranks[str(file)],
                                           arrow_schema)

    return located.mapInArrow(parse, schema)


# --------------------------------------------------------------------------- repeats
def _deduplicate(valid: DataFrame) -> tuple[DataFrame, DataFrame, int]:
    """(kept rows, rejects of repeats with other content, exact repeats): the first record of
    a transactionId in input order wins (:func:`txanomaly.io.deduplicate`)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    repeated = valid.groupBy("transaction_id").count().filter(F.col("count") > 1)
    schema = "index bigint, file string, line string"
    if repeated.isEmpty():
        return valid.drop("_file"), valid.sparkSession.createDataFrame([], schema), 0
    content = F.to_json(F.struct(*FLAT_COLUMNS, EXTRA_COLUMN), {"ignoreNullFields": "false"})
    first = Window.partitionBy("transaction_id").orderBy(ORDER)
    tagged = (valid.join(repeated.select("transaction_id"), "transaction_id")
              .withColumn("_content", content)
              .withColumn("_first", F.first(ORDER).over(first))
              .withColumn("_first_content", F.first("_content").over(first))
              .filter(F.col(ORDER) != F.col("_first")))
    exact = tagged.filter(F.col("_content") == F.col("_first_content")).count()
    conflicting = tagged.filter(F.col("_content") != F.col("_first_content"))
    position = F.col(ORDER).bitwiseAND(F.lit(_POSITION))
    message = F.concat(F.lit("duplicate transactionId with different content; record "),
                       F.col("_first").bitwiseAND(F.lit(_POSITION)).cast("string"),
                       F.lit(" was kept"))
    line = F.to_json(F.struct(
        position.alias("index"), F.col("transaction_id").alias("transactionId"),
        F.array(F.struct(F.lit("transactionId").alias("field"), message.alias("message")))
        .alias("errors"), F.struct(*FLAT_COLUMNS, EXTRA_COLUMN).alias("record"),
        F.col("_file").alias("file")), {"ignoreNullFields": "false"})
    rejects = conflicting.select(position.alias("index"), F.col("_file").alias("file"),
                                 line.alias("line"))
    kept = valid.join(tagged.select(ORDER), ORDER, "left_anti").drop("_file")
    return kept, rejects, exact
