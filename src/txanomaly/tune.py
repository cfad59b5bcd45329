"""Pick a map size: train each candidate, measure it, recommend one and say why.

Every candidate is trained on the training rows of a time-ordered split (see
:mod:`txanomaly.evaluate`) and measured on the test rows: quantization error (QE, mean distance
to the best-matching unit), topographic error (TE, share of rows whose two nearest units are
not grid neighbours), the silhouette of the BMU clusters (the prototype's objective) and, when
labels are given, ROC-AUC, PR-AUC and precision at k.

The rule (:func:`recommend`):

* **with labels**: the highest PR-AUC on the test rows -- precision at the top of the ranking
  is what an analyst's review queue feels;
* **without labels**: the highest silhouette, as the prototype did.

Candidates within :data:`TIE_TOLERANCE` of the best are a tie, and the smallest map among them
wins: fewer units train and score faster and overfit less. QE always falls as the map grows,
so it is reported but never decides.

>>> rows = [Candidate("2x2", 2, 2, 0.5, 0.0, 0.80), Candidate("4x4", 4, 4, 0.3, 0.1, 0.805)]
>>> recommend(rows).map_size
'2x2'
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from txanomaly.defaults import TUNE_MAPS
from txanomaly.detector import AnomalyDetector, parse_map_size
from txanomaly.errors import TxAnomalyError
from txanomaly.evaluate import Prepared, detection_metrics, json_safe
from txanomaly.pipeline import TransactionModel

logger = logging.getLogger(__name__)

#: Absolute difference in the deciding metric under which two candidates count as tied.
TIE_TOLERANCE = 0.005
DEFAULT_MAPS = TUNE_MAPS


@dataclass(frozen=True)
class Candidate:
    """One trained map size and its measurements (labelled ones are None without labels)."""

    map_size: str
    rows: int
    cols: int
    quantization_error: float
    topographic_error: float
    silhouette: float
    roc_auc: float | None = None
    pr_auc: float | None = None
    precision_at_k: float | None = None
    seconds: float = 0.0

    @property
    def units(self) -> int:
        """Number of map units, ``rows * cols``."""
        return self.rows * self.cols


@dataclass(frozen=True)
class Recommendation:
    """The chosen map size, the metric that decided and a sentence saying why."""

    map_size: str
    metric: str
    reason: str


@dataclass
class TuneResult:
    """All candidates, in the order given, and the recommendation."""

    candidates: list[Candidate]
    recommendation: Recommendation
    setup: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN becomes None)."""
        rows = [{**asdict(c), "units": c.units} for c in self.candidates]
        return json_safe({"setup": self.setup, "candidates": rows,
                          "recommendation": asdict(self.recommendation)})


def parse_maps(text: str | Sequence[str]) -> list[str]:
    """``"5x5,10x10"`` -> ``["5x5", "10x10"]``, each checked.

    >>> parse_maps("5x5, 10x8")
    ['5x5', '10x8']
    """
    items = text.split(",") if isinstance(text, str) else list(text)
    out = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        try:
            rows, cols = parse_map_size(item)
        except ValueError:
            raise TxAnomalyError(f"map size {item!r} is not ROWSxCOLS, e.g. 10x10") from None
        out.append(f"{rows}x{cols}")
    if not out:
        raise TxAnomalyError("no map sizes given; e.g. --maps 5x5,10x10,15x15")
    return list(dict.fromkeys(out))


def tune(data: Prepared, maps: Sequence[str], *, labelled: bool,
         detector_params: dict[str, Any] | None = None, top_k: int | None = None,
         on_step: Callable[[str], None] | None = None) -> TuneResult:
    """Train one model per map size on ``data``'s training rows and measure it on its test rows.

    ``detector_params`` go to every :class:`AnomalyDetector` (epochs, algorithm, seed...);
    ``labelled`` says whether ``data.y`` holds real labels.
    """
    test = data.split.test
    y_test = data.y[test]
    if labelled and not y_test.any():
        raise TxAnomalyError("the test rows have no labelled anomalies; use a smaller "
                             "--train-fraction or tune without labels")
    k = int(y_test.sum()) if top_k is None else top_k
    candidates = []
    for size in parse_maps(list(maps)):
        if on_step is not None:
            on_step(size)
        candidates.append(_measure(data, size, detector_params or {}, labelled, k))
    setup = {"feature_set": data.feature_set.name, "train_rows": len(data.split.train),
             "test_rows": len(test), "labelled": labelled, "k": k if labelled else None,
             "params": detector_params or {}}
    return TuneResult(candidates, recommend(candidates), setup)


def _measure(data: Prepared, size: str, params: dict[str, Any], labelled: bool,
             k: int) -> Candidate:
    started = time.perf_counter()
    model = TransactionModel(data.feature_set, AnomalyDetector(map_size=size, **params))
    model.fit(data.X[data.split.train])
    X_test = data.X[data.split.test]
    scored = model.explanation(X_test)
    inputs = model.feature_set_.transform(X_test)
    det = model.detector_
    scores = scored.anomaly_score
    extra: dict[str, Any] = {}
    if labelled:
        m = detection_metrics(data.y[data.split.test], scores, scored.threshold, k)
        extra = {"roc_auc": m["roc_auc"], "pr_auc": m["pr_auc"],
                 "precision_at_k": m["precision_at_k"]}
    rows, cols = parse_map_size(size)
    found = Candidate(size, rows, cols, float(scores.mean()), det.topographic_error(inputs),
                      det.silhouette(inputs), **extra,
                      seconds=round(time.perf_counter() - started, 3))
    logger.info("map %s: %s", size, found)
    return found


def recommend(candidates: Sequence[Candidate]) -> Recommendation:
    """Apply the rule in the module docstring to measured candidates."""
    if not candidates:
        raise TxAnomalyError("no candidates to recommend from")
    labelled = all(c.pr_auc is not None for c in candidates)
    metric, label = ("pr_auc", "PR-AUC") if labelled else ("silhouette", "silhouette")

    def value(c: Candidate) -> float:
        v = getattr(c, metric)
        return float(v) if v is not None and math.isfinite(v) else -math.inf

    best = max(value(c) for c in candidates)
    if best == -math.inf:
        raise TxAnomalyError(f"no candidate has a finite {label}; try other map sizes")
    tied = [c for c in candidates if value(c) >= best - TIE_TOLERANCE]
    chosen = min(tied, key=lambda c: (c.units, -value(c)))
    return Recommendation(chosen.map_size, metric, _reason(chosen, candidates, tied, value,
                                                          label, labelled))


def _reason(chosen: Candidate, candidates: Sequence[Candidate], tied: Sequence[Candidate],
            value: Callable[[Candidate], float], label: str, labelled: bool) -> str:
    where = "on the labelled test rows" if labelled else "of the BMU clusters (no labels given)"
    text = f"{chosen.map_size}: {label} {value(chosen):.3f} {where}"
    others = sorted((c for c in candidates if c is not chosen), key=value, reverse=True)
    if others:
        runner = others[0]
        text += f"; next best {runner.map_size} at {value(runner):.3f}"
    larger = [c.map_size for c in tied if c is not chosen]
    if larger:
        text += (f"; {', '.join(larger)} within {TIE_TOLERANCE} of the best, so the smaller "
                 "map wins")
    if chosen.topographic_error > 0.5:
        text += (f". Caution: topographic error {chosen.topographic_error:.2f} means the map "
                 "folds; try more epochs")
    return text + "."


def units_order(candidates: Sequence[Candidate]) -> np.ndarray:
    """Indices that sort candidates by number of units (for plots)."""
    return np.argsort([c.units for c in candidates], kind="stable")


__all__ = ["DEFAULT_MAPS", "Candidate", "Recommendation", "TuneResult", "parse_maps",
           "recommend", "tune"]
