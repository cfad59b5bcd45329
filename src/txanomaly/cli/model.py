"""``txanomaly train`` and ``txanomaly score``: the model on the command line.

Thin: read transactions (rejects as in ``features``), compute features, call
:class:`~txanomaly.pipeline.TransactionModel`, write the model directory or the scores.

PyTorch (seconds and ~350 MB) is imported inside the commands, after their paths are
checked: ``--help`` and a mistyped file name answer at once.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from txanomaly.cli import spark_engine
from txanomaly.cli._common import JsonOut, Output, Quiet, check_exists, handle_errors
from txanomaly.cli.data import FeatureSetOpt, RejectsOpt, check_output, read_input
from txanomaly.errors import TxAnomalyError
from txanomaly.features import FeatureSet
from txanomaly.features.batch import compute_features
from txanomaly.features.files import resolve_feature_set
from txanomaly.features.roles import CHOICES as COUNTERPARTY_CHOICES
from txanomaly.features.roles import resolve_counterparty
from txanomaly.io import SUFFIXES, write_results

if TYPE_CHECKING:
    import polars as pl

    from txanomaly.detector import AnomalyDetector
    from txanomaly.pipeline import TransactionModel

_TOP_REASONS = 3

InputArg = Annotated[Path, typer.Argument(help="Transactions: .json, .jsonl, .csv or .parquet.")]


@handle_errors
def train(
    input: InputArg,
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
    signing_key_file: Annotated[Path | None, typer.Option(
        help="Sign the model with the key in this file (HMAC-SHA256), as `txanomaly model "
             "sign` does; a server given the key refuses any other model.")] = None,
    rejects: RejectsOpt = None,
    quiet: Quiet = False,
    json_out: JsonOut = False,
    engine: spark_engine.EngineOpt = "local",
    master: spark_engine.MasterOpt = None,
) -> None:
    """Train a model on historical transactions and save it to a directory.

    Example: [bold]txanomaly train tx.json -o model/ --map 10x10 --epochs 20[/]
    """
    out = Output(quiet, json_out)
    check_exists(input)
    check_exists(signing_key_file, what="key file")
    fs = resolve_feature_set(feature_set)
    if counterparty not in COUNTERPARTY_CHOICES:
        raise TxAnomalyError(f"--counterparty must be one of {', '.join(COUNTERPARTY_CHOICES)}, "
                             f"got {counterparty!r}")
    from txanomaly.artifact import read_key  # PyTorch: see the module's docstring
    from txanomaly.detector import AnomalyDetector

    key = read_key(signing_key_file) if signing_key_file is not None else None

    detector = AnomalyDetector(map_size=map_size, epochs=epochs, algorithm=algorithm,
                               contamination=contamination, random_state=seed, device=device)
    _check_options(detector)
    if spark_engine.use_spark(engine):
        spark_engine.train(input, output, fs, counterparty, detector, rejects, master, key, out)
        return
    started = time.perf_counter()
    result = read_input(input, output, rejects, out)
    if result.frame.height < 2:
        raise TxAnomalyError(f"{input}: {result.frame.height} valid transaction(s); "
                             "training needs at least 2")
    fs, evidence = resolve_counterparty(fs, result.frame, counterparty)
    if evidence is not None:
        out.print(escape(evidence.describe()))
    model = _fit(detector, fs, compute_features(result.frame, fs), out)
    model.save(output, key=key)
    train = model.detector_.training_summary_
    summary = {**train, "train_seconds": train["seconds"],
               "seconds": round(time.perf_counter() - started, 3), "model": str(output),
               "feature_set": fs.name, "counterparty": fs.counterparty, "map": map_size,
               "rejected": len(result.rejects)}
    out.print(f"trained on {summary['rows']:,} rows: QE {summary['quantization_error']:.4f}, "
              f"TE {summary['topographic_error']:.4f}, threshold {summary['threshold']:.4f}, "
              f"{summary['seconds']:.2f} s -> {escape(str(output))}")
    out.summary(summary)


def _fit(detector: AnomalyDetector, fs: FeatureSet, features: pl.DataFrame, out: Output
         ) -> TransactionModel:
    """Fit a :class:`TransactionModel` on ``features``, with a bar over the epochs."""
    from txanomaly.pipeline import TransactionModel

    model = TransactionModel(fs, detector)
    with out.progress() as bar:
        task = bar.add_task("training", total=detector.epochs)
        model.fit(features.select(fs.names), callback=lambda done, _: bar.update(
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
    input: InputArg,
    model_dir: Annotated[Path, typer.Option("--model", "-m", help="Model directory.")],
    output: Annotated[Path, typer.Option(
        "--output", "-o", help=f"Scores: {', '.join(SUFFIXES)} (by extension).")],
    rejects: RejectsOpt = None,
    quiet: Quiet = False,
    json_out: JsonOut = False,
    engine: spark_engine.EngineOpt = "local",
    master: spark_engine.MasterOpt = None,
) -> None:
    """Score transactions with a trained model: score, verdict, BMU and top-3 reasons.

    Rows come out in input order with columns transaction_id, anomaly_score, is_anomaly, bmu
    and reason_1..3 (feature name) with their _share, _value and _prototype.

    Example: [bold]txanomaly score new.jsonl --model model/ -o scores.csv[/]
    """
    out = Output(quiet, json_out)
    check_output(output)
    check_exists(input)
    check_exists(model_dir, what="model directory")
    if spark_engine.use_spark(engine):
        spark_engine.score(input, model_dir, output, rejects, master, out)
        return
    started = time.perf_counter()
    from txanomaly.pipeline import TransactionModel  # PyTorch: see the module's docstring

    model = TransactionModel.load(model_dir)
    result = read_input(input, output, rejects, out)
    features = compute_features(result.frame, model.feature_set_)
    table = score_table(model, features, out)
    write_results(table, output)
    flagged = int(table["is_anomaly"].sum()) if table.height else 0
    seconds = time.perf_counter() - started
    out.print(f"scored {table.height:,} rows: {flagged:,} anomalies (threshold "
              f"{model.threshold:.4f}) -> {escape(str(output))} in {seconds:.2f} s")
    out.summary({"input": str(input), "output": str(output), "model": str(model_dir),
                 "rows": table.height, "anomalies": flagged, "threshold": model.threshold,
                 "rejected": len(result.rejects), "seconds": round(seconds, 3)})


def score_table(model: TransactionModel, features: pl.DataFrame, out: Output) -> pl.DataFrame:
    """Scores and reasons for every row (:meth:`TransactionModel.score_frame`), with a bar."""
    with out.progress() as bar:
        task = bar.add_task("scoring", total=features.height)
        return model.score_frame(features, top=_TOP_REASONS,
                                 on_progress=lambda rows: bar.update(task, advance=rows))


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("score")(score)
