"""``txanomaly report``, ``evaluate``, ``tune`` and ``demo``: the analyst's workflows.

Thin: parse options, call :mod:`txanomaly.report`, :mod:`txanomaly.evaluate`,
:mod:`txanomaly.tune` or :mod:`txanomaly.demo`, print tables and progress. Exit codes: 0 ok,
1 a txanomaly error (bad input, labels or model), 2 a usage error.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from txanomaly import baselines as bl
from txanomaly.cli._common import JsonOut, Output, Quiet, check_exists, handle_errors
from txanomaly.cli.data import FEATURE_SET_HELP, RejectsOpt, read_input
from txanomaly.defaults import DEMO_DIR, DEMO_ROWS, TUNE_MAPS
from txanomaly.features import FeatureSet
from txanomaly.features.files import resolve_feature_set

if TYPE_CHECKING:
    import numpy as np
    import polars as pl
    from matplotlib.figure import Figure

    from txanomaly import demo as demo_core
    from txanomaly import evaluate as ev
    from txanomaly import tune as tune_core

# The commands import the model, report, evaluation and tuning modules when they run: those
# load PyTorch, scikit-learn and matplotlib (seconds, hundreds of MB), which ``--help`` and a
# mistyped path do not need. For the same reason the defaults the options show come from
# txanomaly.defaults, which loads nothing heavy.

InputArg = Annotated[Path, typer.Argument(help="Transactions: .json, .jsonl, .csv or .parquet.")]
LabelsOpt = Annotated[Path, typer.Option(
    "--labels", "-l", help="Labels CSV: transactionId,is_anomaly[,kind].")]
ModelOpt = Annotated[Path, typer.Option("--model", "-m", help="Model directory.")]
FeatureSetOpt = Annotated[str | None, typer.Option(
    "--feature-set", "-f", help=f"{FEATURE_SET_HELP} Default: the model's, else standard.",
    envvar="TXANOMALY_FEATURE_SET")]
FractionOpt = Annotated[float, typer.Option(
    "--train-fraction", help="Share of the rows, earliest first, that train; the rest test.")]
EpochsOpt = Annotated[int, typer.Option(help="Training passes over the data.")]
SeedOpt = Annotated[int, typer.Option(help="Random seed (map, baselines, samples).")]
MaxRowsOpt = Annotated[int, typer.Option(
    "--max-rows", min=0,
    help="Hold at most this many valid transactions in memory: a larger input is read a "
         "chunk at a time and a uniform random sample of this many (drawn with --seed, in "
         "input order; their features computed on the whole input's history) is used. "
         "0 = every row.")]
#: --max-rows' default: a million rows of features, scores and reasons take ~1 GB here.
MAX_ROWS = 1_000_000
#: The flat columns the report and the evaluation read beside the features.
_SHOWN_COLUMNS = ["origin_user_id", "destination_user_id", "origin_amount", "origin_currency",
                  "destination_amount", "destination_currency"]
TopKOpt = Annotated[int | None, typer.Option(
    "--top-k", help="k of precision/recall at top-k (default: the number of labelled "
                    "anomalies in the test rows).")]

REPORT_EXAMPLE = ("Example: [bold]txanomaly report --model model/ --data tx.parquet "
                  "-o report.html[/]")
EVALUATE_EXAMPLE = ("Example: [bold]txanomaly evaluate tx.parquet --labels tx.labels.csv "
                    "--baselines iforest,lof,knn,ecod -o metrics.json --plot pr.png[/]")
TUNE_EXAMPLE = ("Example: [bold]txanomaly tune tx.parquet --labels tx.labels.csv --maps "
                "5x5,10x10,15x15,20x20 --epochs 10[/]")
DEMO_EXAMPLE = ("Example: [bold]txanomaly demo[/] (200k transactions into ./txanomaly-demo/), "
                "or [bold]txanomaly demo --dir /tmp/demo -n 50000[/]")


def register(app: typer.Typer) -> None:
    """Add ``report``, ``evaluate``, ``tune`` and ``demo`` to ``app``."""
    app.command("report", epilog=REPORT_EXAMPLE)(report)
    app.command("evaluate", epilog=EVALUATE_EXAMPLE)(evaluate)
    app.command("tune", epilog=TUNE_EXAMPLE)(tune)
    app.command("demo", epilog=DEMO_EXAMPLE)(demo)


# --------------------------------------------------------------------------- report
@handle_errors
def report(
    model_dir: ModelOpt,
    output: Annotated[Path, typer.Option("--output", "-o", help="The HTML file to write.")] =
    Path("report.html"),
    data: Annotated[Path | None, typer.Option(
        "--data", "-d", help="Transactions to score and show (hit map, flags, "
                             "distributions); without them only the map is shown.")] = None,
    top: Annotated[int, typer.Option(help="How many top anomalies to list.", min=1)] = 50,
    labels: Annotated[Path | None, typer.Option(
        "--labels", "-l", help="Labels CSV (transactionId,is_anomaly[,kind]) of --data: the "
                               "top anomalies then show each one's label.")] = None,
    rejects: RejectsOpt = None,
    max_rows: MaxRowsOpt = MAX_ROWS,
    seed: SeedOpt = 0,
    quiet: Quiet = False,
    as_json: JsonOut = False,
) -> None:
    """Write one self-contained HTML report: the model, its map, its flags and their reasons.

    Above --max-rows valid transactions in --data, the report shows a uniform sample of them
    (said in the report's summary line and in the output).
    """
    out = Output(quiet, as_json)
    check_exists(model_dir, what="model directory")
    check_exists(data)
    check_exists(labels, what="labels file")
    if labels is not None and data is None:
        raise typer.BadParameter("--labels needs --data (the transactions they label)",
                                 param_hint="--labels")
    from txanomaly import evaluate as ev
    from txanomaly import report as report_core
    from txanomaly.artifact import METADATA_FILE
    from txanomaly.pipeline import TransactionModel

    started = time.perf_counter()
    model = TransactionModel.load(model_dir)
    metadata = json.loads((model_dir / METADATA_FILE).read_text())
    scored = None
    if data is not None:
        sample = read_sample(data, output, model.feature_set_, rejects, out, max_rows, seed)
        frame = sample.frame
        names = None
        if labels is not None and frame.height:
            names = report_core.label_names(*ev.align_labels(frame["transaction_id"],
                                                             ev.load_labels(labels)))
        scored = (report_core.score_data(model, frame, X=sample.X, labels=names)
                  if frame.height else None)
    with _steps(out, "report", 6) as step:
        document = report_core.build_report(model, metadata, scored, top=top, on_step=step)
    report_core.write_report(output, document)
    flagged = int(scored.flags.sum()) if scored is not None else None
    seconds = round(time.perf_counter() - started, 3)
    rows = len(scored.scores) if scored is not None else 0
    sampled = (f" (a uniform sample of the {sample.valid:,} valid)"
               if data is not None and sample.valid > rows else "")
    out.print(f"wrote {escape(str(output))} ({len(document) / 1e6:.1f} MB"
              + (f"; {rows:,} transactions{sampled}, {flagged:,} flagged"
                 if scored is not None else "")
              + f") in {seconds:.1f} s", highlight=False)
    out.summary({"output": str(output), "model": str(model_dir), "rows": rows,
                 "valid_rows": sample.valid if data is not None else 0,
                 "flagged": flagged, "seconds": seconds})


# --------------------------------------------------------------------------- evaluate
@handle_errors
def evaluate(
    input: InputArg,
    labels: Annotated[Path | None, typer.Option(
        "--labels", "-l", help="Labels CSV: transactionId,is_anomaly[,kind]. Or --feedback-db."
    )] = None,
    feedback_db: Annotated[str | None, typer.Option(
        "--feedback-db", help="Take the labels from the analysts' decisions in the service's "
                              "database (sqlite:///PATH or postgresql://...): fraud = 1, not "
                              "fraud = 0, escalations unlabelled.")] = None,
    db_schema: Annotated[str | None, typer.Option(
        "--db-schema", help="PostgreSQL schema of --feedback-db.")] = None,
    unreviewed: Annotated[str, typer.Option(
        help="With --feedback-db, the transactions without a fraud / not fraud decision: "
             "'normal' (taken as legitimate) or 'skip' (left out).")] = "normal",
    model_dir: Annotated[Path | None, typer.Option(
        "--model", "-m", help="Evaluate this trained model as is (no retraining).")] = None,
    feature_set: FeatureSetOpt = None,
    train_fraction: FractionOpt = 0.6,
    baselines: Annotated[str | None, typer.Option(
        help=f"Comma-separated peers from {', '.join(bl.BASELINES)}, or 'none' (default: "
             "iforest,lof,knn and ecod when PyOD is installed).")] = None,
    map_size: Annotated[str, typer.Option("--map", help="Map size when training.")] = "10x10",
    epochs: EpochsOpt = 20,
    contamination: Annotated[float, typer.Option(
        help="Share of training rows above every detector's threshold.")] = 0.05,
    top_k: TopKOpt = None,
    baseline_rows: Annotated[int, typer.Option(
        min=0, help="Fit LOF and k-NN on at most this many training rows, drawn at random "
                    "(their cost grows with train x test rows); 0 = all.")] = bl.MAX_FIT_ROWS,
    seed: SeedOpt = 0,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Write the metrics as JSON here.")] = None,
    plot: Annotated[Path | None, typer.Option(
        help="Draw the precision-recall curves into this PNG.")] = None,
    rejects: RejectsOpt = None,
    max_rows: MaxRowsOpt = MAX_ROWS,
    quiet: Quiet = False,
    as_json: JsonOut = False,
) -> None:
    """Measure the SOM and peer detectors against labels on the same time-ordered split.

    Every detector sees the same features and is scored on the same test rows (the latest
    1 - TRAIN_FRACTION of them): ROC-AUC, PR-AUC, precision and recall at the threshold and
    at top-k, and recall per anomaly kind when the labels have a kind column. Above
    --max-rows valid transactions, a uniform sample of them is split and measured.
    """
    out = Output(quiet, as_json)
    check_exists(input, labels)
    check_exists(model_dir, what="model directory")
    if (labels is None) == (feedback_db is None):
        raise typer.BadParameter("give --labels FILE or --feedback-db URL (one of them)",
                                 param_hint="--labels")
    names = _baseline_names(baselines)
    from txanomaly import evaluate as ev
    from txanomaly import plots
    from txanomaly.pipeline import TransactionModel

    model = TransactionModel.load(model_dir) if model_dir is not None else None
    params = _detector_params(map_size, epochs, contamination, seed)
    chosen = resolve_feature_set(feature_set) if feature_set is not None else None
    if model is not None and chosen is not None and chosen.name != model.feature_set_.name:
        raise typer.BadParameter(f"the model uses the {model.feature_set_.name!r} feature set",
                                 param_hint="--feature-set")
    fs = model.feature_set_ if model is not None else (chosen or resolve_feature_set("standard"))
    sample = read_sample(input, output or input.with_suffix(".json"), fs, rejects, out,
                         max_rows, seed, counterparty=model is None)
    frame, X = sample.frame, sample.X
    if labels is not None:
        label_table = ev.load_labels(labels)
    else:
        kept, label_table = _feedback_labels(out, frame, str(feedback_db), db_schema,
                                             unreviewed)
        X = X[frame["transaction_id"].is_in(kept["transaction_id"].implode()).to_numpy()]
        frame = kept
    if sample.valid > frame.height:
        out.print(f"evaluating a uniform sample of {frame.height:,} of the {sample.valid:,} "
                  "valid transactions (--max-rows)", highlight=False)
    prepared = ev.prepare(frame, label_table, sample.feature_set, train_fraction, X=X)
    with _steps(out, "evaluating", 1 + len(names)) as step:
        result = ev.evaluate(prepared, model=model, detector_params=params, baselines=names,
                             top_k=top_k, seed=seed, on_step=step,
                             max_fit_rows=baseline_rows or len(prepared.split.train))
    if output is not None:
        result.write_json(output)
    if plot is not None:
        plots.save_png(ev.pr_figure(result), plot)
    _print_evaluation(out, result)
    written = ", ".join(escape(str(p)) for p in (output, plot) if p is not None)
    if written:
        out.print(f"wrote {written}", highlight=False)
    out.summary(result.to_dict())


@dataclass(frozen=True)
class Sample:
    """Valid transactions of a file (all, or a uniform sample) and their features."""

    frame: pl.DataFrame
    X: np.ndarray
    #: How many valid transactions the file holds.
    valid: int
    #: The feature set, its counterparty resolved from every row when asked.
    feature_set: FeatureSet


def read_sample(path: Path, output: Path, fs: FeatureSet, rejects: Path | None, out: Output,
                max_rows: int, seed: int, counterparty: bool = False) -> Sample:
    """The valid transactions of ``path`` with their features, read a chunk at a time; above
    ``max_rows`` (0: no limit) a uniform random sample of that many (each row gets a random
    key from ``seed``; the smallest keys stay), in input order. Features come from the
    whole file's history either way. ``counterparty``: resolve ``fs``'s role from every row
    (``auto``, as ``train`` does)."""
    import numpy as np
    import polars as pl

    from txanomaly.cli.model import ChunkReader
    from txanomaly.counterparty_tally import CounterpartyTally

    rng = np.random.default_rng(seed)
    tally = CounterpartyTally() if counterparty else None
    kept: list[tuple[pl.DataFrame, np.ndarray, np.ndarray, np.ndarray]] = []
    held = 0
    reader = ChunkReader(path, output, fs, rejects, out, columns=_SHOWN_COLUMNS)
    for chunk in reader:
        if tally is not None:
            tally.add(chunk.records)
        keys = rng.random(chunk.records.height)
        kept.append((chunk.records, chunk.values, chunk.index, keys))
        held += chunk.records.height
        if max_rows and held > 2 * max_rows:  # thin out now and then, not every chunk
            kept = [_smallest_keys(kept, max_rows)]
            held = max_rows
    if max_rows and held > max_rows:
        kept = [_smallest_keys(kept, max_rows)]
    if tally is not None and fs.counterparty is None and any(
            f.merchant_direction is not None for f in fs.features):
        fs = fs.for_counterparty(tally.result().role)
    if not kept:
        return Sample(pl.DataFrame(schema={"transaction_id": pl.String, "timestamp": pl.Int64}),
                      np.empty((0, len(fs.features))), 0, fs)
    records = pl.concat([k[0] for k in kept], how="vertical_relaxed")
    values = np.concatenate([k[1] for k in kept])
    order = np.argsort(np.concatenate([k[2] for k in kept]), kind="stable")
    return Sample(records[order], values[order], reader.counts.accepted, fs)


def _smallest_keys(kept: list[tuple[pl.DataFrame, np.ndarray, np.ndarray, np.ndarray]],
                   k: int) -> tuple[pl.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """The ``k`` rows of ``kept`` with the smallest random keys (one uniform sample)."""
    import numpy as np
    import polars as pl

    keys = np.concatenate([part[3] for part in kept])
    take = np.sort(np.argpartition(keys, k - 1)[:k])
    records = pl.concat([part[0] for part in kept], how="vertical_relaxed")[take]
    return (records, np.concatenate([part[1] for part in kept])[take],
            np.concatenate([part[2] for part in kept])[take], keys[take])


def _feedback_labels(out: Output, frame: pl.DataFrame, db: str, schema: str | None,
                     unreviewed: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The input (only the decided rows with ``skip``) and its labels from the analysts'
    decisions in force."""
    import polars as pl

    from txanomaly.calibrate import LABELS, feedback_labels
    from txanomaly.cli.calibrate import open_review
    from txanomaly.errors import TxAnomalyError

    review = open_review(db, schema)
    try:
        decisions = review.decisions()
    finally:
        review.close()
    table = feedback_labels(decisions, frame["transaction_id"].to_list(), unreviewed)
    if unreviewed == "skip":
        frame = frame.filter(pl.col("transaction_id").is_in(table["transaction_id"].to_list()))
    decided = sum(1 for d in decisions.values() if d in LABELS)
    frauds = sum(1 for d in decisions.values() if d == "fraud")
    out.print(f"labels from {decided:,} analysts' decisions ({frauds:,} fraud); "
              f"{frame.height:,} transactions evaluated ({unreviewed} for the unreviewed)",
              highlight=False)
    if not frame.height:
        raise TxAnomalyError("none of the input's transactions has a decision")
    return frame, table


def _baseline_names(text: str | None) -> list[str]:
    if text is None:
        return list(bl.default_baselines())
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    if names in ([], ["none"]):
        return []
    unknown = [n for n in names if n not in bl.BASELINES]
    if unknown:
        raise typer.BadParameter(f"unknown baseline(s) {unknown}; choose from "
                                 f"{', '.join(bl.BASELINES)} or 'none'", param_hint="--baselines")
    return names


def _detector_params(map_size: str, epochs: int, contamination: float, seed: int
                     ) -> dict[str, Any]:
    params: dict[str, Any] = {"map_size": map_size, "epochs": epochs,
                              "contamination": contamination, "random_state": seed}
    from txanomaly.detector import AnomalyDetector

    try:
        AnomalyDetector(**params).check_params()
    except ValueError as exc:
        hint = {"map_size": "--map", "epochs": "--epochs", "contamination": "--contamination"}
        name = str(exc).split()[0]
        raise typer.BadParameter(str(exc), param_hint=hint.get(name, name)) from None
    return params


def _print_evaluation(out: Output, result: ev.Evaluation) -> None:
    setup = result.setup
    table = Table(title=f"{setup['feature_set']} features: {setup['test_rows']:,} test rows, "
                        f"{setup['test_anomalies']:,} labelled anomalies, k = {setup['k']:,}")
    for column in ("detector", "ROC-AUC", "PR-AUC", "P@thr", "R@thr", "flagged", "P@k",
                   "R@k", "s"):
        table.add_column(column, justify="left" if column == "detector" else "right")
    for name, m in result.metrics.items():
        table.add_row(name, *(_num(m[key]) for key in (
            "roc_auc", "pr_auc", "precision_at_threshold", "recall_at_threshold")),
            f"{m['flagged']:,}", _num(m["precision_at_k"]), _num(m["recall_at_k"]),
            f"{m['seconds']:.1f}")
    out.print(table)
    kinds = next(iter(result.metrics.values())).get("by_kind")
    if kinds:
        out.print(_kinds_table(result, list(kinds)))


def _kinds_table(result: ev.Evaluation, kinds: Sequence[str]) -> Table:
    """Detectors down, anomaly kinds across; each cell: recall at the threshold / in the top k."""
    first = next(iter(result.metrics.values()))["by_kind"]
    table = Table(title="recall per anomaly kind: at the threshold / in the top k")
    table.add_column("detector")
    for kind in kinds:
        # One word a line keeps five kinds within an 80-column terminal.
        table.add_column(kind.replace("_", "\n") + f"\n(n={first[kind]['n']:,})",
                         justify="right")
    for name, m in result.metrics.items():
        table.add_row(name, *(f"{_num(m['by_kind'][kind]['recall_at_threshold'], 2)}/"
                              f"{_num(m['by_kind'][kind]['recall_at_k'], 2)}" for kind in kinds))
    return table


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or value != value else f"{value:.{digits}f}"


# --------------------------------------------------------------------------- tune
@handle_errors
def tune(
    input: InputArg,
    labels: Annotated[Path | None, typer.Option(
        "--labels", "-l", help="Labels CSV; with it the PR-AUC decides, without it the "
                               "silhouette.")] = None,
    maps: Annotated[str, typer.Option(help="Comma-separated map sizes to try.")] =
    ",".join(TUNE_MAPS),
    epochs: EpochsOpt = 20,
    feature_set: FeatureSetOpt = None,
    train_fraction: FractionOpt = 0.6,
    seed: SeedOpt = 0,
    output: Annotated[Path, typer.Option(
        "--output", "-o", help="The table: .csv or .json.")] = Path("tune.csv"),
    plot: Annotated[Path, typer.Option(help="The metrics against map size, as PNG.")] =
    Path("tune.png"),
    rejects: RejectsOpt = None,
    quiet: Quiet = False,
    as_json: JsonOut = False,
) -> None:
    """Train one map per size, measure each, recommend one and say why.

    Each map trains on the earliest TRAIN_FRACTION of the rows and is measured on the rest:
    quantization error, topographic error, silhouette and, with labels, ROC-AUC, PR-AUC and
    precision at k. The rule: the best PR-AUC with labels, else the best silhouette; near-ties
    (within 0.005) go to the smaller map.
    """
    out = Output(quiet, as_json)
    if output.suffix.lower() not in (".csv", ".json"):
        raise typer.BadParameter("output must end in .csv or .json", param_hint="--output")
    check_exists(input, labels)
    from txanomaly import evaluate as ev
    from txanomaly import plots
    from txanomaly import tune as tune_core

    sizes = _maps(maps)
    params = _detector_params(sizes[0], epochs, 0.05, seed)
    params.pop("map_size")
    frame = read_input(input, output, rejects, out).frame
    label_frame = ev.load_labels(labels) if labels is not None else None
    prepared = ev.prepare(frame, label_frame, resolve_feature_set(feature_set or "standard"),
                          train_fraction)
    with _steps(out, "training", len(sizes)) as step:
        result = tune_core.tune(prepared, sizes, labelled=label_frame is not None,
                                detector_params=params, on_step=step)
    _write_tune_table(result, output)
    plots.save_png(_tune_figure(result), plot)
    out.print(_tune_table(result))
    out.print(f"[bold]recommended: {result.recommendation.map_size}[/] -- "
              f"{result.recommendation.reason}", highlight=False)
    out.print(f"wrote {escape(str(output))} and {escape(str(plot))}", highlight=False)
    out.summary(result.to_dict())


def _maps(text: str) -> list[str]:
    from txanomaly import tune as tune_core

    try:
        return tune_core.parse_maps(text)
    except Exception as exc:
        raise typer.BadParameter(str(exc), param_hint="--maps") from None


_TUNE_COLUMNS = (("quantization_error", "QE"), ("topographic_error", "TE"),
                 ("silhouette", "silhouette"), ("roc_auc", "ROC-AUC"), ("pr_auc", "PR-AUC"),
                 ("precision_at_k", "P@k"))


def _tune_columns(result: tune_core.TuneResult) -> list[tuple[str, str]]:
    """The measured columns: the labelled ones only when labels were given."""
    labelled = result.setup.get("labelled", False)
    return [c for c in _TUNE_COLUMNS if labelled or c[0] not in ("roc_auc", "pr_auc",
                                                                 "precision_at_k")]


def _tune_table(result: tune_core.TuneResult) -> Table:
    columns = _tune_columns(result)
    table = Table(title=f"map sizes ({result.setup['test_rows']:,} test rows)")
    table.add_column("map")
    for _, title in (*columns, ("", "s")):
        table.add_column(title, justify="right")
    for c in result.candidates:
        mark = " *" if c.map_size == result.recommendation.map_size else ""
        table.add_row(c.map_size + mark, *(_num(getattr(c, key)) for key, _ in columns),
                      f"{c.seconds:.1f}")
    return table


def _write_tune_table(result: tune_core.TuneResult, path: Path) -> None:
    import polars as pl

    path.parent.mkdir(parents=True, exist_ok=True)
    data = result.to_dict()
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps(data, indent=2) + "\n")
    else:
        pl.DataFrame(data["candidates"]).with_columns(
            pl.col("map_size").eq(result.recommendation.map_size).alias("recommended")
        ).write_csv(path)


def _tune_figure(result: tune_core.TuneResult) -> Figure:
    from txanomaly import plots
    from txanomaly import tune as tune_core

    columns = _tune_columns(result)
    order = tune_core.units_order(result.candidates)
    cands = [result.candidates[i] for i in order]
    metrics = {f"{title} ({'lower' if key.endswith('error') else 'higher'} is better)":
               [getattr(c, key) for c in cands] for key, title in columns}
    return plots.tune_curves([c.map_size for c in cands], metrics,
                             result.recommendation.map_size)


# --------------------------------------------------------------------------- demo
@handle_errors
def demo(
    directory: Annotated[Path, typer.Option(
        "--dir", help="Where to write everything.")] = DEMO_DIR,
    n: Annotated[int, typer.Option("-n", "--transactions", min=1_000,
                                   help="Synthetic transactions to generate.")] =
    DEMO_ROWS,
    feature_set: Annotated[str, typer.Option(
        "--feature-set", "-f", help=FEATURE_SET_HELP)] = "standard",
    baselines: Annotated[str | None, typer.Option(
        help="Peers to compare with (comma-separated, or 'none').")] = None,
    top: Annotated[int, typer.Option(help="Top anomalies to print.", min=1)] = 5,
    seed: SeedOpt = 0,
    quiet: Quiet = False,
    as_json: JsonOut = False,
) -> None:
    """The whole workflow on synthetic data: generate, train, score, evaluate, report.

    Generates N labelled transactions, trains on the earliest 60 %, scores all of them,
    compares the SOM with peer detectors on the latest 40 % and writes an HTML report;
    then prints where everything is and the top anomalies with their reasons.
    """
    out = Output(quiet, as_json)
    names = _baseline_names(baselines)
    fs = resolve_feature_set(feature_set)
    from txanomaly import demo as demo_core

    started = time.perf_counter()
    with _steps(out, "demo", len(demo_core.STEPS)) as step:
        result = demo_core.run_demo(directory, n, seed=seed, feature_set=fs,
                                    baselines=names, top=top, on_step=step)
    seconds = time.perf_counter() - started
    _print_demo(out, result, seconds)
    out.summary({**result.summary(), "total_seconds": round(seconds, 3)})


def _print_demo(out: Output, result: demo_core.DemoResult, seconds: float) -> None:
    from txanomaly import report as report_core

    out.print(f"[bold]{result.rows:,} transactions[/], {result.flagged:,} flagged; "
              f"everything is in {escape(str(result.directory))}/ ({seconds:.1f} s)",
              highlight=False)
    _print_evaluation(out, result.evaluation)
    out.print(f"[bold]top {len(result.top)} anomalies[/] (reasons: value, typical value, "
              "share of the distance; \\[label] is the synthetic ground truth)", highlight=False)
    for i, rec in enumerate(result.top, start=1):
        amount = report_core.format_value(rec["amount"])
        out.print(f"{i:>2}. {rec['transaction_id']}  score {rec['anomaly_score']:.2f}  "
                  f"{rec['time']}  {amount} {rec['currency']}  "
                  f"{rec['origin_user_id'] or '-'} -> {rec['destination_user_id'] or '-'}  "
                  f"[{rec.get('label', '?')}]", highlight=False, markup=False)
        for reason in rec["reasons"]:
            out.print(f"      {report_core.format_reason(reason)}", highlight=False,
                      markup=False)
    out.print(f"report: [bold]{escape(str(result.files['report']))}[/]  (open it in a browser)",
              highlight=False)


# --------------------------------------------------------------------------- progress
@contextmanager
def _steps(out: Output, label: str, total: int) -> Iterator[Callable[[str], None]]:
    """A progress bar over named steps; yields the ``on_step(name)`` callback."""
    with out.progress() as bar:
        task = bar.add_task(label, total=total)
        done = [-1]

        def step(name: str) -> None:
            done[0] += 1
            bar.update(task, completed=done[0], description=f"{label}: {name}")

        yield step
        bar.update(task, completed=total)
