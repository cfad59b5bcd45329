"""``txanomaly train`` and ``txanomaly score``: the model on the command line.

Thin: read transactions chunk by chunk (rejects as in ``features``), compute their features,
call :class:`~txanomaly.pipeline.TransactionModel`, write the model directory or the scores.
Memory does not grow with the rows: ``train`` keeps the features, transformed as they are
read (:class:`~txanomaly.pipeline.TrainingRows`), in a temporary file (float64) that the
model reads back in blocks (:meth:`TransactionModel.fit_stored`);
``score`` scores, explains and writes each chunk before reading the next.

PyTorch (seconds and ~350 MB) is imported inside the commands, after their paths are
checked: ``--help`` and a mistyped file name answer at once.
"""

from __future__ import annotations

import gc
import itertools
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import polars as pl
import typer
from rich.markup import escape

from txanomaly.cli import spark_engine
from txanomaly.cli._common import (
    JsonOut,
    Output,
    Quiet,
    check_exists,
    default_rejects_path,
    handle_errors,
)
from txanomaly.cli.data import (
    ChunkRowsOpt,
    FeatureSetOpt,
    RejectsOpt,
    check_output,
    in_input_order,
)
from txanomaly.counterparty_tally import CounterpartyTally
from txanomaly.errors import TxAnomalyError
from txanomaly.features import FeatureSet
from txanomaly.features.chunked import (
    DEFAULT_CHUNK_ROWS,
    FeatureChunk,
    ReadCounts,
    count_rows,
    feature_chunks,
)
from txanomaly.features.files import resolve_feature_set
from txanomaly.features.roles import CHOICES as COUNTERPARTY_CHOICES
from txanomaly.features.roles import Counterparty, resolve_counterparty
from txanomaly.io import SUFFIXES, Rejected, write_rejects
from txanomaly.io.prefetch import prefetch
from txanomaly.io.sink import ResultSink

if TYPE_CHECKING:
    from txanomaly.detector import AnomalyDetector
    from txanomaly.pipeline import TrainingRows, TransactionModel

_TOP_REASONS = 3

# A string, not a Path: with --engine spark it may be a URL, whose "//" a Path would fold.
InputArg = Annotated[str, typer.Argument(
    metavar="INPUT", help="Transactions: .json, .jsonl, .csv or .parquet (--engine spark: a "
                          "file, directory or glob of .jsonl, .json or .parquet, or a URL "
                          "Spark reads: s3://, hdfs://, file://).")]

@handle_errors
def train(
    location: InputArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="Model directory to write.")],
    feature_set: FeatureSetOpt = "standard",
    counterparty: Annotated[str, typer.Option(
        help="What the destinations are: merchant (shops, terminals: their velocity is their "
             "trade), person (P2P, AML: a burst of inflow is risky), or auto (detected from "
             "the data: merchants when destinations never pay). Saved in the model.")] = "auto",
    map_size: Annotated[str, typer.Option("--map", help="Map rows x columns.")] = "10x10",
    epochs: Annotated[int, typer.Option(help="Passes over the data.")] = 20,
    algorithm: Annotated[str, typer.Option(help="batch, online or seed.")] = "batch",
    contamination: Annotated[float, typer.Option(
        help="Share of training rows above the threshold.")] = 0.05,
    seed: Annotated[int, typer.Option(help="Random seed (initialisation, shuffling).")] = 0,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    sample: Annotated[str, typer.Option(
        metavar="auto|all|N",
        help="Rows the map trains on: auto (every row up to 1,000,000, or 10,000 per map "
             "unit if more; above that a uniform random sample of that many, drawn with "
             "--seed), all (every row, read from a temporary file each epoch) or a number "
             "(a uniform sample of that many). The scaler and the threshold always come "
             "from every row.")] = "auto",
    signing_key_file: Annotated[Path | None, typer.Option(
        help="Sign the model with the key in this file (HMAC-SHA256), as `txanomaly model "
             "sign` does; a server given the key refuses any other model.")] = None,
    rejects: RejectsOpt = None,
    chunk_rows: ChunkRowsOpt = DEFAULT_CHUNK_ROWS,
    quiet: Quiet = False,
    json_out: JsonOut = False,
    engine: spark_engine.EngineOpt = "local",
    master: spark_engine.MasterOpt = None,
) -> None:
    """Train a model on historical transactions and save it to a directory.

    Example: [bold]txanomaly train tx.json -o model/ --map 10x10 --epochs 20[/]
    """
    out = Output(quiet, json_out)
    spark = spark_engine.use_spark(engine)
    input = spark_engine.input_path(location, spark)
    if not spark:
        check_exists(input)
    check_exists(signing_key_file, what="key file")
    fs = resolve_feature_set(feature_set)
    if counterparty not in COUNTERPARTY_CHOICES:
        raise TxAnomalyError(f"--counterparty must be one of {', '.join(COUNTERPARTY_CHOICES)}, "
                             f"got {counterparty!r}")
    from txanomaly.artifact import read_key  # PyTorch: see the module's docstring
    from txanomaly.detector import AnomalyDetector
    from txanomaly.pipeline import TrainingRows

    key = read_key(signing_key_file) if signing_key_file is not None else None
    _freeze_imports()

    detector = AnomalyDetector(map_size=map_size, epochs=epochs, algorithm=algorithm,
                               contamination=contamination, random_state=seed, device=device)
    _check_options(detector)
    sample_rows = _sample_option(sample)
    if spark:
        spark_engine.train(location, output, fs, counterparty, detector, rejects, master, key,
                           out)
        return
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="txanomaly-train-") as folder:
        store = TrainingRows(Path(folder) / "features.f64", fs)
        detect = (counterparty == "auto" and fs.counterparty is None
                  and any(f.merchant_direction is not None for f in fs.features))
        tally = CounterpartyTally() if detect else None
        reader = ChunkReader(input, output, fs, rejects, out, chunk_rows,
                             columns=["origin_user_id", "destination_user_id"] if detect
                             else None)
        for chunk in reader:
            store.append(chunk.values)
            if tally is not None:
                tally.add(chunk.records)
        if store.n_rows < 2:
            raise TxAnomalyError(f"{input}: {store.n_rows} valid transaction(s); "
                                 "training needs at least 2")
        evidence: Counterparty | None = None
        if tally is not None:
            evidence = tally.result()
            fs = fs.for_counterparty(evidence.role)
        else:
            fs, evidence = resolve_counterparty(fs, None, counterparty)
        if evidence is not None:
            out.print(escape(evidence.describe()))
        model = _fit(detector, fs, store, sample_rows, out)
    model.save(output, key=key)
    train = model.detector_.training_summary_
    summary = {**train, "train_seconds": train["seconds"],
               "seconds": round(time.perf_counter() - started, 3), "model": str(output),
               "feature_set": fs.name, "counterparty": fs.counterparty, "map": map_size,
               "sample": sample_rows, "rejected": reader.counts.rejected}
    on = (f"{summary['rows']:,} rows" if train["map_rows"] == train["rows"] else
          f"{summary['rows']:,} rows (the map on a uniform sample of {train['map_rows']:,})")
    out.print(f"trained on {on}: QE {summary['quantization_error']:.4f}, "
              f"TE {summary['topographic_error']:.4f}, threshold {summary['threshold']:.4f}, "
              f"{summary['seconds']:.2f} s -> {escape(str(output))}")
    out.summary(summary)


class ChunkReader:
    """The feature chunks of ``path`` (:func:`feature_chunks`: time order), with a progress
    bar over its records; once they are all read, the rejects file is written (as
    ``features`` does: only when a record was rejected, or always when ``--rejects`` is
    given) and the counts said. ``counts`` holds them (:class:`ReadCounts`); ``columns``:
    more flat columns for the chunks' records."""

    def __init__(self, path: Path, output: Path, fs: FeatureSet, rejects: Path | None,
                 out: Output, chunk_rows: int = DEFAULT_CHUNK_ROWS, label: str = "reading",
                 columns: list[str] | None = None):
        self.path, self.output, self.fs, self.rejects_path = path, output, fs, rejects
        self.out, self.chunk_rows, self.label, self.columns = out, chunk_rows, label, columns
        self.counts = ReadCounts()

    def __iter__(self) -> Iterator[FeatureChunk]:
        found: list[Rejected] = []
        rows = 0
        with self.out.progress() as bar:
            task = bar.add_task(self.label, total=count_rows(self.path))
            # The next chunk's features are computed while this one is trained on or scored.
            for chunk in prefetch(feature_chunks(self.path, self.fs, chunk_rows=self.chunk_rows,
                                                 rejects=found, columns=self.columns,
                                                 counts=self.counts)):
                yield chunk
                rows += chunk.records.height
                bar.update(task, completed=rows + len(found))
        where = ""
        if found or self.rejects_path is not None:
            written = write_rejects(self.rejects_path or default_rejects_path(self.output), found)
            where = f" -> {written}"
        counts = self.counts
        note = f", {counts.exact_duplicates:,} exact repeat(s) counted once" if (
            counts.exact_duplicates) else ""
        self.out.print(escape(f"read {counts.records:,} records from {self.path}: "
                              f"{counts.accepted:,} valid, {counts.rejected:,} rejected"
                              f"{where}{note}"))


def _sample_option(value: str) -> int | str | None:
    """``--sample``: ``auto``, ``all`` (``None``: every row) or a number of rows >= 2."""
    if value in ("auto", "all"):
        return None if value == "all" else value
    try:
        rows = int(value.replace("_", "").replace(",", ""))
    except ValueError:
        rows = 0
    if rows < 2:
        raise typer.BadParameter(f"expected auto, all or a number of rows >= 2, got {value!r}",
                                 param_hint="--sample")
    return rows


def _fit(detector: AnomalyDetector, fs: FeatureSet, store: TrainingRows,
         sample: int | str | None, out: Output) -> TransactionModel:
    """Fit a :class:`TransactionModel` on the stored features, with a bar over the epochs."""
    from txanomaly.pipeline import TransactionModel

    model = TransactionModel(fs, detector)
    with out.progress() as bar:
        task = bar.add_task("training", total=detector.epochs)
        model.fit_stored(store, sample=sample, callback=lambda done, _: bar.update(
            task, completed=done))
    return model


def _check_options(detector: AnomalyDetector) -> None:
    try:
        detector.check_params()
    except ValueError as exc:
        option = str(exc).split()[0].replace("map_size", "map").replace("random_state", "seed")
        raise typer.BadParameter(str(exc), param_hint=f"--{option.replace('_', '-')}"
                                 ) from None


@handle_errors
def score(
    location: InputArg,
    model_dir: Annotated[Path, typer.Option("--model", "-m", help="Model directory.")],
    output_location: Annotated[str, typer.Option(
        "--output", "-o", help=f"Scores: {', '.join(SUFFIXES)} (by extension; --engine "
                               "spark: a directory of part files, a path or a URL).")],
    rejects: RejectsOpt = None,
    chunk_rows: ChunkRowsOpt = DEFAULT_CHUNK_ROWS,
    quiet: Quiet = False,
    json_out: JsonOut = False,
    engine: spark_engine.EngineOpt = "local",
    master: spark_engine.MasterOpt = None,
) -> None:
    """Score transactions with a trained model: score, verdict, BMU and top-3 reasons.

    Rows come out in time order (the input order when the input is in time order: ties keep
    the input order) with columns transaction_id, anomaly_score, is_anomaly, risk_level, bmu
    and reason_1..3 (feature name) with their _share, _value and _prototype. The input is
    read, scored and written a chunk at a time: memory does not grow with its size.

    Example: [bold]txanomaly score new.jsonl --model model/ -o scores.csv[/]
    """
    out = Output(quiet, json_out)
    output = Path(output_location)
    check_output(output)
    spark = spark_engine.use_spark(engine)
    input = spark_engine.input_path(location, spark)
    if not spark:
        check_exists(input)
    check_exists(model_dir, what="model directory")
    if spark:
        spark_engine.score(location, model_dir, output_location, rejects, master, out)
        return
    started = time.perf_counter()
    from txanomaly.pipeline import TransactionModel  # PyTorch: see the module's docstring

    model = TransactionModel.load(model_dir)
    _freeze_imports()
    reader = ChunkReader(input, output, model.feature_set_, rejects, out, chunk_rows,
                         "scoring")
    flagged = 0
    with tempfile.TemporaryDirectory(prefix="txanomaly-score-") as folder:
        chunks = iter(reader)
        first = next(chunks, None)
        # Chunks come in time order: the input's order unless it had to be sorted; then the
        # rows go through a temporary file and a sort by input position (on disk, too).
        restore = reader.counts.sorted_out_of_core
        target = Path(folder, "by_time.parquet") if restore else output
        with ResultSink(target) as sink:
            for chunk in itertools.chain([first] if first else [], chunks):
                table = model.score_values(chunk.records.get_column("transaction_id"),
                                           chunk.values, top=_TOP_REASONS)
                flagged += int(table["is_anomaly"].sum())
                sink.write(table.with_columns(_index=chunk.index) if restore else table)
            if sink.rows == 0:
                empty = model.score_frame(_no_features(model))
                sink.write(empty.with_columns(_index=pl.lit(0, pl.Int64)) if restore else empty)
        rows = sink.rows
        if restore:
            in_input_order(target, output)
    seconds = time.perf_counter() - started
    out.print(f"scored {rows:,} rows: {flagged:,} anomalies (threshold "
              f"{model.threshold:.4f}) -> {escape(str(output))} in {seconds:.2f} s")
    out.summary({"input": str(input), "output": str(output), "model": str(model_dir),
                 "rows": rows, "anomalies": flagged, "threshold": model.threshold,
                 "rejected": reader.counts.rejected, "seconds": round(seconds, 3)})


def _freeze_imports() -> None:
    """Leave the objects made so far (PyTorch's, Polars', the modules': a million or so) out
    of the garbage collector's full passes (``gc.freeze``): a 2M-row ``train`` spent about 4 %
    of its CPU time walking them again and again."""
    gc.freeze()


def _no_features(model: TransactionModel) -> pl.DataFrame:
    return pl.DataFrame(schema={"transaction_id": pl.String,
                                **dict.fromkeys(model.feature_names, pl.Float64)})


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("score")(score)
