"""``txanomaly synth``: write labelled synthetic transactions (see docs/synthetic-data.md)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from txanomaly import synth as core
from txanomaly.cli._common import JsonOut, Output, Quiet, handle_errors
from txanomaly.io import SUFFIXES, format_for, write_table

EXAMPLE = (
    "Example: [bold]txanomaly synth -n 1000000 --users 10000 --days 30 --anomaly-rate 0.01 "
    "--seed 7 -o data/tx.parquet[/] writes data/tx.parquet and data/tx.labels.csv; add "
    "[bold]--domain card_terminal[/] for card payments at shop terminals."
)


def register(app: typer.Typer) -> None:
    """Add the ``synth`` command to ``app``."""
    app.command("synth", epilog=EXAMPLE)(synth)


@handle_errors
def synth(
    output: Annotated[Path, typer.Option(
        "--output", "-o", help=f"Where to write: {', '.join(SUFFIXES)} (by extension; JSON "
                               "in the Flagright shape, tables in the flat columns).")],
    n: Annotated[int, typer.Option("-n", "--transactions",
                                   help="Number of transactions, anomalies included.")] = 100_000,
    users: Annotated[int, typer.Option(
        help="Number of account holders: card holders or shoppers in the card and e-commerce "
             "domains, accounts in p2p and aml.")] = 1_000,
    days: Annotated[int, typer.Option(help="Days the transactions span.")] = 30,
    anomaly_rate: Annotated[float, typer.Option(
        help="Share of transactions labelled anomalous.")] = 0.01,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same data.")] = 0,
    domain: Annotated[str, typer.Option(
        help=f"Payment domain: {', '.join(core.DOMAINS)} (docs/synthetic-data.md).")] = "p2p",
    counterparties: Annotated[int | None, typer.Option(
        help="Merchants (card_merchant, ecommerce) or terminals (card_terminal). Default: "
             "derived from --users.")] = None,
    labels: Annotated[Path | None, typer.Option(
        help="Labels CSV (transactionId,is_anomaly,kind). Default: OUTPUT's stem + "
             ".labels.csv, next to it.")] = None,
    number_long_share: Annotated[float, typer.Option(
        help='JSON only: share of timestamps written as {"$numberLong": "<ms>"}.')] = 0.0,
    quiet: Quiet = False,
    as_json: JsonOut = False,
) -> None:
    """Write labelled synthetic transactions in the Flagright shape."""
    out = Output(quiet, as_json)
    format_for(output)  # refuse an unknown extension before generating anything
    core.domain_kinds(domain)  # and an unknown domain
    labels_path = labels if labels is not None else core.default_labels_path(output)
    began = time.perf_counter()
    result = core.generate(n, users=users, days=days, anomaly_rate=anomaly_rate, seed=seed,
                           domain=domain, counterparties=counterparties)
    write_table(result.transactions, output, number_long_share=number_long_share, seed=seed)
    core.write_labels(result.labels, labels_path)
    summary = _summary(result, output, labels_path, users, days, time.perf_counter() - began)
    summary["domain"] = domain
    _print_summary(out, summary)
    out.summary(summary)


def _summary(result: core.SynthResult, output: Path, labels: Path, users: int, days: int,
             seconds: float) -> dict[str, Any]:
    counts = result.anomaly_counts()
    return {"rows": result.transactions.height, "users": users, "days": days,
            "anomalies": sum(counts.values()), "anomalies_by_kind": counts,
            "output": str(output), "labels": str(labels), "seconds": round(seconds, 3)}


def _print_summary(out: Output, summary: dict[str, Any]) -> None:
    by_kind = ", ".join(f"{kind} {count:,}" for kind, count in
                        summary["anomalies_by_kind"].items())
    out.print(f"Wrote {summary['rows']:,} transactions ({summary['domain']}, "
              f"{summary['users']:,} users, {summary['days']} days) to {summary['output']} in "
              f"{summary['seconds']:.1f} s",
              highlight=False, soft_wrap=True)
    out.print(f"Anomalies: {summary['anomalies']:,} ({by_kind}); labels in {summary['labels']}",
              highlight=False, soft_wrap=True)
