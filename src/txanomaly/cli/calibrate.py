"""``txanomaly calibrate``: a threshold from the analysts' decisions (docs/console.md).

Thin: read the decisions in force and the stored scores from the service's database, call
:func:`txanomaly.calibrate.calibrate`, print the trade-off, draw it, and (``--write``) save
the model with the recommended threshold and where it came from.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from txanomaly.cli._common import JsonOut, Output, Quiet, check_exists, handle_errors
from txanomaly.errors import TxAnomalyError

if TYPE_CHECKING:
    from txanomaly.calibrate import Calibration
    from txanomaly.storage.sql_review import ReviewStore

EXAMPLE = ("Example: [bold]txanomaly calibrate --model model/ --db sqlite:///tx.db "
           "--target-precision 0.5 --plot tradeoff.png --write model-calibrated/[/]")
DbOpt = Annotated[str, typer.Option(
    "--db", help="The service's database (sqlite:///PATH or postgresql://...), where the "
                 "console and the API store the decisions. Env: TXANOMALY_DB.",
    envvar="TXANOMALY_DB")]
SchemaOpt = Annotated[str | None, typer.Option(
    "--db-schema", help="PostgreSQL schema. Env: TXANOMALY_DB_SCHEMA.",
    envvar="TXANOMALY_DB_SCHEMA")]


def register(app: typer.Typer) -> None:
    """Add ``calibrate`` to ``app``."""
    app.command("calibrate", epilog=EXAMPLE)(calibrate)


def open_review(db: str, schema: str | None) -> ReviewStore:
    """The review tables of the service's database; a one-line error when there are none."""
    if db.startswith("sqlite:///"):
        check_exists(Path(db.removeprefix("sqlite:///")), what="database file")
    from txanomaly.storage.sql_review import ReviewStore

    return ReviewStore.open_existing(db, schema)


@handle_errors
def calibrate(
    model_dir: Annotated[Path, typer.Option("--model", "-m", help="Model directory.")],
    db: DbOpt,
    db_schema: SchemaOpt = None,
    target_precision: Annotated[float | None, typer.Option(
        min=0.0, max=1.0, help="Wanted share of alerts that are fraud, by the analysts' "
                               "decisions: the lowest threshold that reaches it.")] = None,
    daily_budget: Annotated[float | None, typer.Option(
        min=0.0, help="Most alerts a day the team can review (on the stored traffic).")
    ] = None,
    min_labels: Annotated[int, typer.Option(
        min=1, help="Decisions needed above a threshold before its precision counts.")] = 20,
    min_reviewed: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Share of the alerts above a threshold that must have been "
                               "reviewed before its precision counts.")] = 0.5,
    plot: Annotated[Path | None, typer.Option(
        help="Draw the trade-off (precision, recall, alerts a day) into this PNG.")] = None,
    write: Annotated[Path | None, typer.Option(
        "--write", help="Save the model here with the recommended threshold, recording where "
                        "it came from (may be --model itself).")] = None,
    key_file: Annotated[Path | None, typer.Option(
        "--key-file", help="Sign the written model with this key (txanomaly model sign).")
    ] = None,
    quiet: Quiet = False,
    as_json: JsonOut = False,
) -> None:
    """Recommend a threshold from the analysts' decisions, for a target precision or a daily
    alert budget (or both), and show the trade-off.

    Labels: fraud = 1, not fraud = 0; escalations are left out. Scores are those stored with
    each transaction when it was scored.
    """
    out = Output(quiet, as_json)
    check_exists(model_dir, what="model directory")
    check_exists(key_file)
    if target_precision is None and daily_budget is None:
        raise typer.BadParameter("give --target-precision or --daily-budget (or both)",
                                 param_hint="--target-precision")
    import numpy as np

    from txanomaly import artifact, plots
    from txanomaly.calibrate import LABELS
    from txanomaly.calibrate import calibrate as calibrate_core

    loaded = artifact.load(model_dir)
    current = float(loaded.detector.threshold_)
    review = open_review(db, db_schema)
    try:
        labelled = [(s, LABELS[d]) for _, _, s, d in review.labelled_scores() if d in LABELS]
        times, scores = review.scores()
    finally:
        review.close()
    result = calibrate_core(
        np.array([s for s, _ in labelled]), np.array([y for _, y in labelled], dtype=np.int8),
        np.array(scores), np.array(times, dtype=np.int64), current,
        target_precision=target_precision, daily_budget=daily_budget, min_labels=min_labels,
        min_reviewed=min_reviewed, bounds=_bounds(loaded.metadata))
    _print(out, result)
    written: dict[str, Any] = {}
    if plot is not None:
        plots.save_png(plots.threshold_tradeoff(
            result.thresholds, result.precision, result.recall, result.alerts_per_day,
            current, result.recommended), plot)
        out.print(f"wrote {escape(str(plot))}", highlight=False)
    if write is not None:
        if result.recommended is None:
            raise TxAnomalyError("no threshold meets the target: nothing written")
        key = artifact.read_key(key_file) if key_file is not None else None
        origin = {"method": "calibrate", "rule": result.rule, "previous": current,
                  "decisions": result.labels, "frauds": result.frauds,
                  "days": round(result.days, 3), "database": _redact(db),
                  "at": datetime.now(tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                  **result.to_dict()["recommended"]}
        version = artifact.set_threshold(model_dir, write, result.recommended, origin, key)
        out.print(f"wrote {escape(str(write))}: threshold {result.recommended:.6g}, model "
                  f"version {version}" + ("" if key else " (unsigned)"), highlight=False)
        written = {"written": str(write), "modelVersion": version}
    out.summary({**result.to_dict(), **written})


def _print(out: Output, result: Calibration) -> None:
    table = Table(title=f"{result.labels:,} decisions ({result.frauds:,} fraud) over "
                        f"{result.days:.1f} days of stored traffic")
    for column in ("", "threshold", "precision", "recall", "decided above",
                   "reviewed share", "alerts a day"):
        table.add_column(column, justify="left" if not column else "right")
    rows: list[tuple[str, float]] = [("in force", result.current)]
    if result.recommended is not None:
        rows.append(("recommended", result.recommended))
    for q in (0.5, 0.75, 0.9, 0.95):
        i = int(q * (len(result.thresholds) - 1))
        rows.append(("", float(result.thresholds[i])))
    for name, threshold in sorted(rows, key=lambda r: r[1]):
        row = result.at(threshold)
        table.add_row(name, f"{row['threshold']:.4g}", _share(row["precision"]),
                      _share(row["recall"]), f"{row['labelled_above']:,}",
                      _share(row["reviewed_share"]), f"{row['alerts_per_day']:,.1f}",
                      style="bold" if name == "recommended" else None)
    out.print(table)
    if result.recommended is not None:
        out.print(f"recommended threshold {result.recommended:.6g} ({result.rule}); in force "
                  f"{result.current:.6g}", highlight=False)
    for warning in result.warnings:
        out.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)


def _bounds(meta: dict[str, Any]) -> tuple[float, float] | None:
    """The thresholds the model file accepts (txanomaly.artifact_rules): from the median
    training score to 10 x the largest, when the training summary keeps them."""
    from txanomaly.artifact_rules import THRESHOLD_MAX_FACTOR

    quantiles = (meta.get("training_summary") or {}).get("score_quantiles")
    if not quantiles:
        return None
    return float(quantiles["p50"]), THRESHOLD_MAX_FACTOR * float(quantiles["max"])


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _redact(url: str) -> str:
    from txanomaly.service.settings import redact_url

    return redact_url(url)

