"""``txanomaly history load``: store a history file, so that the service starts where batch
scoring is.

A new database has no history: the service's first verdicts then see each user as new, and
differ from batch scoring of the same transactions after their history. Loading the history
first (through the one ingestion path, :func:`txanomaly.ingest.ingest_history`) makes the
service answer what batch scoring gives.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from txanomaly.cli._common import (
    JsonOut,
    Output,
    Quiet,
    add_group,
    check_exists,
    handle_errors,
)
from txanomaly.cli.data import read_input
from txanomaly.cli.spark_engine import EngineOpt, MasterOpt, use_spark
from txanomaly.ingest import ingest_history
from txanomaly.storage import DEFAULT_DB_URL, Storage, sql_storage

if TYPE_CHECKING:
    import polars as pl

    from txanomaly.scoring import Scorer

EXAMPLE = ("Example: [bold]txanomaly history load tx.json --model model/ --db sqlite:///tx.db[/] "
           "then [bold]txanomaly serve --model model/ --db sqlite:///tx.db[/]; a lake's "
           "history: [bold]txanomaly history load lake/tx/ --model model/ --db "
           "postgresql://app@db/tx --engine spark[/]")


def register(app: typer.Typer) -> None:
    """Add the ``history`` group (``history load``) to ``app``."""
    add_group(app, "history", "The per-user history the scoring service keeps.", EXAMPLE,
              {"load": load})


@handle_errors
def load(
    input: Annotated[str, typer.Argument(
        help="Past transactions: .json, .jsonl, .csv or .parquet (--engine spark: a file, "
             "directory or glob of .jsonl, .json or .parquet, any URL Spark reads).")],
    model: Annotated[Path, typer.Option("--model", "-m", envvar="TXANOMALY_MODEL",
                                        help="Model directory (the one the service serves).")],
    db: Annotated[str, typer.Option(
        envvar="TXANOMALY_DB", help="The service's database: sqlite:///PATH or "
                                    "postgresql://USER@HOST:PORT/DB.")] = DEFAULT_DB_URL,
    db_schema: Annotated[str | None, typer.Option(
        envvar="TXANOMALY_DB_SCHEMA", help="PostgreSQL schema (default: search_path).")
                         ] = None,
    batch_size: Annotated[int | None, typer.Option(
        min=1, help="Rows per database transaction (default 1,000; --engine spark: 20,000, "
                    "one COPY each on PostgreSQL).")] = None,
    rejects: Annotated[Path | None, typer.Option(
        help="Where rejected records go (JSON lines with reasons). Default: next to INPUT, "
             "INPUT.rejects.jsonl (a URL or glob: history.rejects.jsonl here), written only "
             "when a record is rejected.")] = None,
    engine: EngineOpt = "local",
    master: MasterOpt = None,
    quiet: Quiet = False,
    json_out: JsonOut = False,
) -> None:
    """Load past transactions into the service's database, scored as the service would.

    In timestamp order (ties in file order): the stored history, features and verdicts are
    then exactly batch scoring's. Running it again changes nothing (all are replayed).

    --engine spark: the history is built on a Spark cluster (a file, directory or glob of
    .jsonl, .json or .parquet) and bulk-loaded (PostgreSQL: COPY) into an empty database;
    the same stored rows and verdicts (docs/spark.md).
    """
    out = Output(quiet, json_out)
    spark = use_spark(engine)
    check_exists(model, what="model directory")
    if spark:
        from txanomaly.cli import spark_engine

        spark_engine.history(input, model, db, db_schema, rejects, master, batch_size, out)
        return
    path = Path(input)
    check_exists(path)
    started = time.perf_counter()
    from txanomaly.scoring import Scorer  # PyTorch: only once the inputs are known to exist

    result = read_input(path, path, rejects, out)
    scorer = Scorer.load(model)
    storage = sql_storage(db, schema=db_schema)
    try:
        stored, replayed, flagged = _load(result.frame, scorer, storage, batch_size or 1000,
                                          out)
        location = storage.location
    finally:
        storage.close()
    seconds = time.perf_counter() - started
    out.print(f"loaded {escape(str(input))} into {escape(location)}: {stored:,} stored, "
              f"{replayed:,} replayed, {flagged:,} flagged in {seconds:.1f} s", highlight=False)
    out.summary({"input": str(input), "db": location, "stored": stored, "replayed": replayed,
                 "flagged": flagged, "rejected": len(result.rejects),
                 "seconds": round(seconds, 3), "engine": "local"})


def _load(frame: pl.DataFrame, scorer: Scorer, storage: Storage, batch_size: int,
          out: Output) -> tuple[int, int, int]:
    """Ingest the history with a progress bar; (stored, replayed, flagged) counts."""
    stored = replayed = flagged = 0
    with out.progress() as bar:
        task = bar.add_task("loading", total=frame.height)
        for outcomes in ingest_history(frame, scorer, storage, batch_size):
            fresh = [o for o in outcomes if not o.replayed]
            stored += len(fresh)
            replayed += len(outcomes) - len(fresh)
            flagged += sum(1 for o in fresh if o.result["isAnomaly"])
            bar.advance(task, len(outcomes))
    return stored, replayed, flagged
