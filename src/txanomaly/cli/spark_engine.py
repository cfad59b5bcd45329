"""``--engine spark`` for ``txanomaly features``, ``train``, ``score`` and ``history load``: the
options and the terminal side of the jobs in :mod:`txanomaly.spark.jobs` (docs/spark.md).

PySpark (the ``[spark]`` extra) is imported only when a command runs with ``--engine spark``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from txanomaly.cli._common import Output, check_exists, default_rejects_path
from txanomaly.errors import TxAnomalyError

if TYPE_CHECKING:
    from txanomaly.detector import AnomalyDetector
    from txanomaly.features.spec import FeatureSet

ENGINES = ("local", "spark")
EngineOpt = Annotated[str, typer.Option(
    "--engine", envvar="TXANOMALY_ENGINE",
    help="local (this machine) or spark (Apache Spark: the same results; outputs are "
         "directories of part files; docs/spark.md).")]
MasterOpt = Annotated[str | None, typer.Option(
    "--master", envvar="TXANOMALY_SPARK_MASTER",
    help="Spark master URL for --engine spark (local[4], spark://host:7077, yarn...). "
         "Default: spark-submit's, else local[*].")]


def use_spark(engine: str) -> bool:
    """Whether ``--engine`` asks for Spark (a usage error names the choices)."""
    if engine not in ENGINES:
        raise typer.BadParameter(f"must be one of {', '.join(ENGINES)}, got {engine!r}",
                                 param_hint="--engine")
    return engine == "spark"


def is_url(location: str) -> bool:
    """Whether ``location`` is a URL (``s3://``, ``hdfs://``, ``file://``...), not a path.

    >>> is_url("s3://lake/tx.jsonl"), is_url("lake/tx.jsonl"), is_url("C:/tx.jsonl")
    (True, False, False)
    """
    scheme, sep, _ = location.partition("://")
    return bool(sep) and len(scheme) > 1 and scheme.replace("+", "").replace(
        "-", "").replace(".", "").isalnum()


def local_path(location: str) -> Path | None:
    """The file ``location`` names on this machine: a plain path or a ``file://`` URL; None
    for any other URL and for a glob (Spark resolves those, wherever they are)."""
    if location.startswith("file://"):
        from urllib.parse import unquote, urlsplit

        location = unquote(urlsplit(location).path)
    elif is_url(location):
        return None
    return None if any(c in location for c in "*?[{") else Path(location)


def input_path(location: str, spark: bool) -> Path:
    """INPUT as this machine's commands take it, checked before any slow import.

    With ``--engine spark`` INPUT stays the string given (a :class:`Path` would fold a URL's
    ``//``: ``s3://b/k`` -> ``s3:/b/k``) and only a local file or directory is checked (the
    same ``no such file`` as without Spark). Without Spark a URL is refused: this machine's
    readers read local files.
    """
    if spark:
        local = local_path(location)
        if local is not None:
            check_exists(local)
    elif is_url(location):
        raise TxAnomalyError(f"{location}: a URL is read with --engine spark only (this "
                             "machine's engine reads local files)")
    return Path(location)


def _rejects(output: str | Path, rejects: Path | None) -> tuple[Path, bool]:
    """The rejects file: ``--rejects``, else next to a local OUTPUT (``out.rejects.jsonl``),
    else (a URL) that name in the current directory: the driver writes it."""
    if rejects is not None:
        return rejects, True
    output = str(output).rstrip("/")
    local = local_path(output)
    return default_rejects_path(local if local is not None else Path(
        output.rsplit("/", 1)[-1])), False


def _read_line(input: str | Path, summary: dict, out: Output) -> None:
    where = f" -> {summary['rejects']}" if summary["rejects"] else ""
    note = f", {summary['exact_duplicates']:,} exact repeat(s) counted once" if (
        summary["exact_duplicates"]) else ""
    out.print(f"read {summary['records']:,} records from {input}: {summary['valid']:,} valid, "
              f"{summary['rejected']:,} rejected{where}{note}")


def check_output(output: str | Path) -> None:
    """Refuse (a usage error) an output Spark does not write."""
    from txanomaly.spark.jobs import check_output as check

    try:
        check(output)
    except TxAnomalyError as exc:
        raise typer.BadParameter(str(exc), param_hint="--output") from None


def features(input: str, output: str, fs: FeatureSet, rejects: Path | None,
             master: str | None, out: Output) -> None:
    """``txanomaly features --engine spark``."""
    from txanomaly.spark.jobs import features_job

    check_output(output)
    path, keep = _rejects(output, rejects)
    summary = features_job(input, output, fs, path, master, keep)
    _read_line(input, summary, out)
    out.print(f"wrote {summary['rows']:,} rows x {len(fs.names)} features ({fs.name}) to "
              f"{output} (Spark part files) in {summary['seconds']:.2f} s")
    out.summary({**summary, "engine": "spark"})


def train(input: str, output: Path, fs: FeatureSet, counterparty: str,
          detector: AnomalyDetector, rejects: Path | None, master: str | None,
          key: bytes | str | None, out: Output) -> None:
    """``txanomaly train --engine spark``."""
    from txanomaly.spark.jobs import train_job

    path, keep = _rejects(output, rejects)
    with out.progress() as bar:
        task = bar.add_task("training", total=detector.epochs)
        summary, evidence = train_job(
            input, output, fs, counterparty, detector, path, master, key,
            callback=lambda done, _: bar.update(task, completed=done), keep_empty=keep)
    _read_line(input, summary, out)
    if evidence is not None:
        out.print(escape(evidence.describe()))
    out.print(f"trained on {summary['rows']:,} rows (Spark): QE "
              f"{summary['quantization_error']:.4f}, TE {summary['topographic_error']:.4f}, "
              f"threshold {summary['threshold']:.4f}, {summary['seconds']:.2f} s -> "
              f"{escape(str(output))}")
    out.summary(summary)


def score(input: str, model_dir: Path, output: str, rejects: Path | None,
          master: str | None, out: Output) -> None:
    """``txanomaly score --engine spark``."""
    from txanomaly.spark.jobs import score_job

    check_output(output)
    path, keep = _rejects(output, rejects)
    summary = score_job(input, model_dir, output, path, master, keep)
    _read_line(input, summary, out)
    out.print(f"scored {summary['rows']:,} rows: {summary['anomalies']:,} anomalies (threshold "
              f"{summary['threshold']:.4f}) -> {escape(str(output))} in "
              f"{summary['seconds']:.2f} s")
    out.summary({**summary, "engine": "spark"})


def history(input: str, model_dir: Path, db: str, db_schema: str | None,
            rejects: Path | None, master: str | None, batch_size: int | None,
            out: Output) -> None:
    """``txanomaly history load --engine spark``."""
    from txanomaly.spark.history import LOAD_BATCH
    from txanomaly.spark.jobs import history_job

    # INPUT stays a string for Spark (Path would fold a URL's "//"); the rejects go next to
    # a local file or directory, else into this directory.
    local = local_path(input.rstrip("/"))
    if local is not None:
        check_exists(local)
    path = rejects or default_rejects_path(local if local is not None
                                           else Path("history.jsonl"))
    keep = rejects is not None
    with out.progress() as bar:
        tasks: dict[str, Any] = {}
        done: dict[str, int] = {}

        def progress(table: str, rows: int) -> None:
            # How many rows a table gets is known only once it is written: the bars count.
            if table not in tasks:
                tasks[table], done[table] = bar.add_task(f"loading {table}", total=0), 0
            done[table] += rows
            bar.update(tasks[table], completed=done[table], total=done[table])

        summary = history_job(input, model_dir, db, db_schema, path, master,
                              batch_size or LOAD_BATCH, keep, progress)
    _read_line(input, summary, out)
    how = "PostgreSQL COPY" if summary["bulk"] == "copy" else "batched inserts"
    out.print(f"loaded {escape(str(input))} into {escape(summary['db'])}: "
              f"{summary['stored']:,} stored, 0 replayed, {summary['flagged']:,} flagged, "
              f"{summary['key_rows']:,} key rows ({how}, Spark) in {summary['seconds']:.1f} s",
              highlight=False)
    out.summary(summary)
