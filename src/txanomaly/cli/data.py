"""``txanomaly features``: raw transactions in, per-transaction features out."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from txanomaly.cli import spark_engine
from txanomaly.cli._common import JsonOut, Output, Quiet, default_rejects_path, handle_errors
from txanomaly.errors import InputFormatError
from txanomaly.features import FEATURE_SETS
from txanomaly.features.batch import compute_features
from txanomaly.features.files import resolve_feature_set
from txanomaly.io import (
    SUFFIXES,
    ReadResult,
    format_for,
    load_transactions,
    write_rejects,
    write_results,
)

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


@handle_errors
def features(
    input: Annotated[Path, typer.Argument(help=f"Transactions: {', '.join(SUFFIXES)}.")],
    output: Annotated[Path, typer.Option(
        "--output", "-o", help=f"Features table: {', '.join(SUFFIXES)} (by extension).")],
    feature_set: FeatureSetOpt = "standard",
    rejects: RejectsOpt = None,
    quiet: Quiet = False,
    json_out: JsonOut = False,
    engine: spark_engine.EngineOpt = "local",
    master: spark_engine.MasterOpt = None,
) -> None:
    """Compute per-transaction features (unscaled), in input order.

    Example: [bold]txanomaly features tx.json -o features.parquet --feature-set seed[/]
    """
    out = Output(quiet, json_out)
    check_output(output)
    fs = resolve_feature_set(feature_set)
    if spark_engine.use_spark(engine):
        spark_engine.features(input, output, fs, rejects, master, out)
        return
    start = time.perf_counter()
    result = read_input(input, output, rejects, out, fs.input_columns, categorical=True)
    table = compute_features(result.frame, fs)
    write_results(table, output)
    seconds = time.perf_counter() - start
    out.print(f"wrote {table.height:,} rows x {table.width - 1} features ({fs.name}) "
              f"to {output} in {seconds:.2f} s")
    out.summary({"input": str(input), "output": str(output), "rows": table.height,
                 "rejected": len(result.rejects), "exact_duplicates": result.exact_duplicates,
                 "feature_set": fs.name, "features": table.columns[1:],
                 "seconds": round(seconds, 3)})


def register(app: typer.Typer) -> None:
    app.command("features")(features)
