"""``txanomaly features``: raw transactions in, per-transaction features out."""

from __future__ import annotations

import itertools
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import numpy as np
import polars as pl
import typer

from txanomaly.cli import spark_engine
from txanomaly.cli._common import JsonOut, Output, Quiet, default_rejects_path, handle_errors
from txanomaly.errors import InputFormatError
from txanomaly.features import FEATURE_SETS
from txanomaly.features.files import resolve_feature_set
from txanomaly.features.spec import FeatureSet
from txanomaly.io import (
    SUFFIXES,
    ReadResult,
    Rejected,
    format_for,
    load_transactions,
    write_rejects,
)
from txanomaly.io.chunks import (
    DEFAULT_CHUNK_ROWS,
    ReadCounts,
    bucket_sort,
    check_input,
    count_rows,
)
from txanomaly.io.sink import ResultSink

if TYPE_CHECKING:
    from txanomaly.features.chunked import FeatureChunk

#: What ``--feature-set`` takes: a built-in set's name or a feature-set file.
FEATURE_SET_HELP = (f"Feature set: {', '.join(FEATURE_SETS)}, or a .json/.toml file declaring "
                    "one (txanomaly feature-set show standard --format toml writes a start).")
FeatureSetOpt = Annotated[str, typer.Option(
    "--feature-set", "-f", help=FEATURE_SET_HELP, envvar="TXANOMALY_FEATURE_SET")]
RejectsOpt = Annotated[Path | None, typer.Option(
    "--rejects", help="Where rejected records go (JSON lines with reasons). "
                      "Default: next to the output, OUT.rejects.jsonl, written only when a "
                      "record is rejected.")]


def read_input(path: Path, output: Path, rejects: Path | None, out: Output,
               columns: list[str] | None = None, categorical: bool = False) -> ReadResult:
    """Read INPUT, say how many records were rejected, and write them to the rejects file.

    The file is written when a record was rejected, or always when ``--rejects`` is given.
    ``columns``: keep only these (every record is still validated whole); ``categorical``:
    hold the id and code columns as categoricals (see ``load_transactions``).
    """
    result = load_transactions(path, columns, categorical)
    where = ""
    if result.rejects or rejects is not None:  # no empty file left behind by default
        rejects_path = write_rejects(rejects or default_rejects_path(output), result.rejects)
        where = f" -> {rejects_path}"
    note = f", {result.exact_duplicates:,} exact repeat(s) counted once" if (
        result.exact_duplicates) else ""
    out.print(f"read {result.n_records:,} records from {path}: {result.frame.height:,} valid, "
              f"{len(result.rejects):,} rejected{where}{note}")
    return result


def check_output(output: Path) -> None:
    """Refuse (a usage error) an output whose extension names no format."""
    try:
        format_for(output)
    except InputFormatError as exc:
        raise typer.BadParameter(str(exc), param_hint="--output") from None


#: ``txanomaly features``' default ``--chunk-rows``: half the readers' default. The memory a
#: process touches is faulted in page by page (at 500,000 rows a chunk, about 125,000 faults
#: and 0.8 s of system time for 2M rows, a fifth of the command's CPU time); the output does
#: not depend on the chunk size. 2M synthetic rows, medians of runs alternated on the shared
#: 2-core machine: seed 4.15 -> 3.87 s of CPU (system 0.78 -> 0.47 s; 6 runs), standard
#: 6.92 -> 6.23 s (4 runs); 131,072 rows a chunk cost more user time again.
FEATURES_CHUNK_ROWS = 250_000

ChunkRowsOpt = Annotated[int, typer.Option(
    "--chunk-rows", min=1, envvar="TXANOMALY_CHUNK_ROWS",
    help="Records per chunk: memory grows with it (and with the distinct users and the "
         "rows in the longest window), never with the input's length.")]


@handle_errors
def features(
    # Strings, not Paths: with --engine spark they may be URLs, whose "//" a Path would fold.
    location: Annotated[str, typer.Argument(
        metavar="INPUT", help=f"Transactions: {', '.join(SUFFIXES)} (--engine spark: a file, "
                              "directory or glob of .jsonl, .json or .parquet, or a URL Spark "
                              "reads: s3://, hdfs://, file://).")],
    output_location: Annotated[str, typer.Option(
        "--output", "-o", help=f"Features table: {', '.join(SUFFIXES)} (by extension; "
                               "--engine spark: a directory of part files, a path or a URL).")],
    feature_set: FeatureSetOpt = "standard",
    rejects: RejectsOpt = None,
    quiet: Quiet = False,
    json_out: JsonOut = False,
    engine: spark_engine.EngineOpt = "local",
    master: spark_engine.MasterOpt = None,
    chunk_rows: ChunkRowsOpt = FEATURES_CHUNK_ROWS,
) -> None:
    """Compute per-transaction features (unscaled), in input order.

    The input is read and the output written a chunk of records at a time (docs/features.md,
    "Large inputs"); an input not in time order is sorted on disk first.

    Example: [bold]txanomaly features tx.json -o features.parquet --feature-set seed[/]
    """
    out = Output(quiet, json_out)
    output = Path(output_location)
    check_output(output)
    spark = spark_engine.use_spark(engine)
    input = spark_engine.input_path(location, spark)
    fs = resolve_feature_set(feature_set)
    if spark:
        spark_engine.features(location, output_location, fs, rejects, master, out)
        return
    from txanomaly.features.chunked import feature_chunks  # Numba: loaded when used

    start = time.perf_counter()
    rejected: list[Rejected] = []
    counts = ReadCounts()
    # The bar's total costs a whole pass over a CSV or JSON Lines file: only for a bar drawn
    # (the same errors for a missing input either way).
    total: int | None = None
    if out.shows_progress:
        total = count_rows(input)
    else:
        check_input(input)
    with out.progress() as bar, tempfile.TemporaryDirectory(prefix="txanomaly-") as folder:
        task = bar.add_task("features", total=total)
        chunks = feature_chunks(input, fs, chunk_rows=chunk_rows, rejects=rejected,
                                counts=counts, read_ahead=True)
        first = next(chunks, None)
        # Chunks come in time order: the input's order unless it had to be sorted; then the
        # rows go through a temporary file and are sorted back by input position, on disk.
        restore = counts.sorted_out_of_core
        target = Path(folder, "by_time.parquet") if restore else output
        with ResultSink(target) as sink:
            for chunk in itertools.chain([first] if first else [], chunks):
                sink.write(_feature_frame(fs, chunk, with_index=restore))
                bar.advance(task, chunk.records.height)
            if sink.rows == 0:
                sink.write(_feature_frame(fs, None, with_index=restore))
        if restore:
            in_input_order(target, output)
    rows = counts.accepted
    where = ""
    if rejected or rejects is not None:  # no empty file left behind by default
        where = f" -> {write_rejects(rejects or default_rejects_path(output), rejected)}"
    note = f", {counts.exact_duplicates:,} exact repeat(s) counted once" if (
        counts.exact_duplicates) else ""
    out.print(f"read {counts.records:,} records from {input}: {rows:,} valid, "
              f"{len(rejected):,} rejected{where}{note}")
    seconds = time.perf_counter() - start
    out.print(f"wrote {rows:,} rows x {len(fs.names)} features ({fs.name}) "
              f"to {output} in {seconds:.2f} s")
    out.summary({"input": str(input), "output": str(output), "rows": rows,
                 "rejected": len(rejected), "exact_duplicates": counts.exact_duplicates,
                 "feature_set": fs.name, "features": fs.names,
                 "sorted_by_time_first": counts.sorted_out_of_core,
                 "seconds": round(seconds, 3)})


def _feature_frame(fs: FeatureSet, chunk: FeatureChunk | None, with_index: bool
                   ) -> pl.DataFrame:
    """transaction_id and the features (and ``_index`` for the reordering)."""
    if chunk is None:
        values = np.empty((0, len(fs.names)))
        ids = pl.Series("transaction_id", [], dtype=pl.String)
        index = np.empty(0, np.int64)
    else:
        values, index = chunk.values, chunk.index
        ids = chunk.records.get_column("transaction_id")
    columns = [ids, *(pl.Series(name, values[:, j]) for j, name in enumerate(fs.names))]
    if with_index:
        columns.append(pl.Series("_index", index))
    return pl.DataFrame(columns)


def in_input_order(by_time: Path, output: Path) -> None:
    """Rewrite ``by_time`` (a Parquet file of result rows with ``_index``, their input
    position) into ``output`` in input order, without ``_index``: sorted on disk
    (:func:`~txanomaly.io.chunks.bucket_sort`, buckets of :data:`DEFAULT_CHUNK_ROWS` input
    positions) and written a bucket at a time."""
    scan = pl.scan_parquet(by_time)
    rows = scan.select(pl.len()).collect().item()
    top = scan.select(pl.col("_index").max()).collect().item() or 0
    step = DEFAULT_CHUNK_ROWS
    slices = (scan.slice(start, step).collect() for start in range(0, rows, step))
    with tempfile.TemporaryDirectory(prefix="txanomaly-") as folder, ResultSink(output) as sink:
        for part in bucket_sort(slices, "_index", None, np.arange(step, top + 1, step),
                                Path(folder)):
            sink.write(part.drop("_index"))
        if sink.rows == 0:
            sink.write(scan.drop("_index").head(0).collect())


def register(app: typer.Typer) -> None:
    app.command("features")(features)
