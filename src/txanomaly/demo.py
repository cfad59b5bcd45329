"""The whole workflow on synthetic data, in one call: what ``txanomaly demo`` runs.

:func:`run_demo` generates labelled transactions, trains a model on the first 60 % of them in
time order, scores all of them, evaluates the model against scikit-learn's and PyOD's detectors
on the later 40 %, and writes the HTML report. Everything lands in one directory::

    txanomaly-demo/
      transactions.parquet   the synthetic transactions (flat records)
      labels.csv             transactionId,is_anomaly,kind
      model/                 the trained model (model.json + model.safetensors)
      scores.parquet         as `txanomaly score` writes (scores, BMU, top-3 reasons) + split
      metrics.json           the evaluation (our SOM vs the baselines, per anomaly kind)
      pr_curves.png          precision-recall curves of every detector
      report.html            the analyst's report
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from txanomaly import evaluate as ev
from txanomaly import plots, report, synth
from txanomaly.artifact import METADATA_FILE
from txanomaly.defaults import DEMO_DIR, DEMO_ROWS
from txanomaly.detector import AnomalyDetector
from txanomaly.features.spec import FeatureSet
from txanomaly.io import write_results, write_table
from txanomaly.pipeline import TransactionModel

logger = logging.getLogger(__name__)

#: The demo's transactions per user: 200k rows -> 2,000 users, ~3 transactions a day each.
ROWS_PER_USER = 100
#: The neighbour-based peers (LOF, k-NN) fit on at most this many training rows in the demo: half
#: of :data:`txanomaly.baselines.MAX_FIT_ROWS`, which halves their share of the demo's time.
DEMO_FIT_ROWS = 10_000
#: The demo's steps, in order (for progress bars).
STEPS = ("synthesise", "features", "train", "score", "evaluate", "report")


@dataclass
class DemoResult:
    """Where the demo wrote its files, what it found and how long each step took."""

    directory: Path
    files: dict[str, Path]
    rows: int
    flagged: int
    evaluation: ev.Evaluation
    top: list[dict[str, Any]]
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary: files, counts, timings, the headline metrics, top anomalies."""
        headline = {name: {k: m[k] for k in ("roc_auc", "pr_auc", "precision_at_k",
                                             "recall_at_threshold")}
                    for name, m in self.evaluation.metrics.items()}
        return ev.json_safe({
            "directory": str(self.directory), "files": {k: str(v) for k, v in self.files.items()},
            "rows": self.rows, "flagged": self.flagged, "seconds": self.seconds,
            "metrics": headline, "top_anomalies": self.top})


def run_demo(directory: str | Path = DEMO_DIR, n: int = DEMO_ROWS, *, seed: int = 0,
             feature_set: str | FeatureSet = "standard", map_size: str = "10x10", epochs: int = 20,
             train_fraction: float = 0.6, baselines: Sequence[str] | None = None,
             top: int = 10, on_step: Callable[[str], None] | None = None) -> DemoResult:
    """Synthesise ``n`` transactions, train, score, evaluate and report into ``directory``.

    ``on_step(name)`` is called as each of :data:`STEPS` starts.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    files = {"transactions": out / "transactions.parquet", "labels": out / "labels.csv",
             "model": out / "model", "scores": out / "scores.parquet",
             "metrics": out / "metrics.json", "pr_curves": out / "pr_curves.png",
             "report": out / "report.html"}
    clock = _Clock(on_step)

    clock.start("synthesise")
    data = synth.generate(n, users=max(10, n // ROWS_PER_USER), days=30, seed=seed)
    write_table(data.transactions, files["transactions"])
    synth.write_labels(data.labels, files["labels"])
    clock.start("features")
    prepared = ev.prepare(data.transactions, data.labels, feature_set, train_fraction)
    clock.start("train")
    model = TransactionModel(prepared.feature_set, AnomalyDetector(
        map_size=map_size, epochs=epochs, random_state=seed))
    model.fit(prepared.X[prepared.split.train])
    model.save(files["model"])
    clock.start("score")
    scored = report.score_data(model, data.transactions, X=prepared.X,
                               training_rows=prepared.split.train,
                               labels=report.label_names(prepared.y, prepared.kind))
    _write_scores(scored, prepared, files["scores"])
    clock.start("evaluate")
    evaluation = ev.evaluate(prepared, model=model, baselines=baselines, seed=seed,
                             max_fit_rows=DEMO_FIT_ROWS)
    evaluation.write_json(files["metrics"])
    plots.save_png(ev.pr_figure(evaluation), files["pr_curves"])
    clock.start("report")
    metadata = json.loads((files["model"] / METADATA_FILE).read_text())
    report.write_report(files["report"], report.build_report(
        model, metadata, scored, title="txanomaly demo report", evaluation=evaluation))
    top_rows = scored.top_rows(top)
    found = report.top_anomalies(model, scored, top_rows) if len(top_rows) else []
    clock.stop()
    logger.info("demo finished in %.1f s: %s", sum(clock.seconds.values()), out)
    return DemoResult(out, files, len(scored.scores), int(scored.flags.sum()), evaluation,
                      found, clock.seconds)


def _write_scores(scored: report.ScoredData, prepared: ev.Prepared, path: Path) -> None:
    """The scores table as `txanomaly score` writes it, plus each row's split."""
    split = np.full(len(scored.X), "test", dtype=object)
    split[prepared.split.train] = "train"
    write_results(scored.table.with_columns(split=pl.Series(split.tolist(), dtype=pl.Utf8)),
                  path)


class _Clock:
    """Times consecutive steps and announces each one."""

    def __init__(self, on_step: Callable[[str], None] | None):
        self.on_step = on_step
        self.seconds: dict[str, float] = {}
        self._name: str | None = None
        self._began = 0.0

    def start(self, name: str) -> None:
        """End the running step (if any) and start ``name``."""
        self.stop()
        if self.on_step is not None:
            self.on_step(name)
        self._name, self._began = name, time.perf_counter()

    def stop(self) -> None:
        """Record the running step's seconds."""
        if self._name is not None:
            self.seconds[self._name] = round(time.perf_counter() - self._began, 3)
            self._name = None
