"""Check detectors against labelled transactions: our SOM and the usual peers, same rows.

The protocol, written once:

1. Features are computed over the whole input (they only look back in time, so a row's
   features are what the online engine would have given it), then the rows are split **in time
   order**: the first ``train_fraction`` of them (by timestamp, ties in input order) train, the
   rest are the test rows every metric is computed on.
2. Every detector sees the same model inputs: the feature set's transforms (log1p, clipping),
   then standardisation with the training mean and standard deviation.
3. Every detector's threshold follows the same contamination rule as ours: the ``1 -
   contamination`` quantile of its scores on the rows it was fitted on.
4. Scores are anomaly scores: **higher = more anomalous**, for every detector.

Metrics (:func:`detection_metrics`): ROC-AUC, PR-AUC (average precision), precision and recall
of the flags at the threshold, precision and recall among the ``k`` highest scores, and per
anomaly kind the recall at the threshold, the recall in the top ``k`` and the ROC-AUC of that
kind against the normal rows.

>>> y = np.array([0, 0, 1, 0, 1])
>>> m = detection_metrics(y, np.array([0.1, 0.2, 0.9, 0.3, 0.4]), threshold=0.35, k=2)
>>> m["roc_auc"], m["precision_at_threshold"], m["precision_at_k"]
(1.0, 1.0, 1.0)
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from matplotlib.figure import Figure
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from txanomaly import plots
from txanomaly.baselines import MAX_FIT_ROWS, check_baselines, default_baselines
from txanomaly.detector import AnomalyDetector
from txanomaly.errors import TxAnomalyError
from txanomaly.features.batch import feature_matrix
from txanomaly.features.roles import resolve_counterparty
from txanomaly.features.spec import FeatureSet
from txanomaly.pipeline import TransactionModel
from txanomaly.scaling import apply_scaler, fit_scaler
from txanomaly.threshold import QuantileThreshold, exceeds

logger = logging.getLogger(__name__)

#: Our detector's name in tables and JSON.
SOM_NAME = "som"

Step = Callable[[str], None]


# --------------------------------------------------------------------------- labels and split
def load_labels(path: str | Path) -> pl.DataFrame:
    """Read a labels CSV: ``transactionId`` (or ``transaction_id``), ``is_anomaly``, ``kind``.

    ``is_anomaly`` takes 0/1 or true/false; ``kind`` is optional (empty for normal rows).
    Returns columns ``transaction_id`` (str), ``is_anomaly`` (int8) and ``kind`` (str or null).
    """
    path = Path(path)
    if not path.is_file():
        raise TxAnomalyError(f"{path}: no such labels file")
    try:
        raw = pl.read_csv(path, infer_schema_length=0)  # all strings: we parse ourselves
    except (pl.exceptions.ComputeError, pl.exceptions.NoDataError) as exc:
        raise TxAnomalyError(f"{path}: not a readable CSV: {exc}") from None
    raw = raw.rename({"transactionId": "transaction_id"}) if "transactionId" in raw.columns \
        else raw
    missing = [c for c in ("transaction_id", "is_anomaly") if c not in raw.columns]
    if missing:
        raise TxAnomalyError(f"{path}: missing column(s) {missing}; expected a header like "
                             "transactionId,is_anomaly,kind")
    flag = raw["is_anomaly"].str.strip_chars().str.to_lowercase()
    parsed = flag.replace_strict({"1": 1, "0": 0, "true": 1, "false": 0, "1.0": 1, "0.0": 0},
                                 default=None, return_dtype=pl.Int8)
    bad = parsed.is_null()
    if bad.any():
        row = int(bad.arg_true()[0])
        raise TxAnomalyError(f"{path}: row {row + 2}: is_anomaly must be 0/1 or true/false, got "
                             f"{raw['is_anomaly'][row]!r}")
    kind = raw["kind"] if "kind" in raw.columns else pl.Series("kind", [None] * raw.height,
                                                                dtype=pl.Utf8)
    kind = pl.Series("kind", [k if k else None for k in kind.to_list()], dtype=pl.Utf8)
    return pl.DataFrame({"transaction_id": raw["transaction_id"], "is_anomaly": parsed,
                         "kind": kind})


def align_labels(transaction_ids: pl.Series, labels: pl.DataFrame
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``(y, kind)`` for each transaction id, in order; every id must have a label.

    ``kind`` is an object array (None for normal rows). Labels of ids that are not among the
    transactions (rejected records, say) are ignored.
    """
    if labels["transaction_id"].is_duplicated().any():
        dup = labels.filter(pl.col("transaction_id").is_duplicated())["transaction_id"][0]
        raise TxAnomalyError(f"the labels file has transactionId {dup!r} more than once")
    joined = pl.DataFrame({"transaction_id": transaction_ids}).join(
        labels, on="transaction_id", how="left", maintain_order="left")
    unlabelled = joined["is_anomaly"].is_null()
    if unlabelled.any():
        first = joined["transaction_id"].filter(unlabelled).head(3).to_list()
        raise TxAnomalyError(f"{int(unlabelled.sum()):,} transaction(s) have no label, e.g. "
                             f"{first}; the labels file must cover every transaction")
    ignored = labels.height - joined.height
    if ignored > 0:
        logger.info("%d label(s) name transactions that are not in the input", ignored)
    return joined["is_anomaly"].to_numpy().astype(np.int8), np.asarray(
        joined["kind"].to_list(), dtype=object)


@dataclass(frozen=True)
class Split:
    """Row indices of a time-ordered split: ``train`` come before ``test`` in time."""

    train: np.ndarray
    test: np.ndarray


def time_ordered_split(timestamps: np.ndarray, train_fraction: float) -> Split:
    """First ``train_fraction`` of the rows by timestamp (ties in input order) vs the rest.

    >>> s = time_ordered_split(np.array([30, 10, 20, 40, 50]), 0.6)
    >>> s.train.tolist(), s.test.tolist()
    ([1, 2, 0], [3, 4])
    """
    if not 0.0 < train_fraction < 1.0:
        raise TxAnomalyError(f"train fraction must be between 0 and 1, got {train_fraction}")
    order = np.argsort(np.asarray(timestamps), kind="stable")
    n_train = math.floor(len(order) * train_fraction)
    if n_train < 2 or len(order) - n_train < 1:
        raise TxAnomalyError(f"{len(order)} rows are too few to split {train_fraction:.0%} / "
                             f"{1 - train_fraction:.0%} into train and test rows")
    return Split(order[:n_train], order[n_train:])


# --------------------------------------------------------------------------- metrics
def detection_metrics(y: np.ndarray, scores: np.ndarray, threshold: float, k: int,
                      kind: np.ndarray | None = None) -> dict[str, Any]:
    """Ranking and flagging metrics of anomaly ``scores`` (higher = more anomalous) vs ``y``.

    A row is flagged when its score is strictly above ``threshold`` (the one rule,
    :func:`txanomaly.threshold.exceeds`). The top ``k`` are the ``k``
    highest scores (ties broken by row order). AUCs are NaN when ``y`` has a single class.
    """
    y = np.asarray(y).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    flags = exceeds(scores, threshold)
    top = top_k_mask(scores, k)
    positives = int(y.sum())
    out: dict[str, Any] = {
        "rows": len(y), "positives": positives,
        "roc_auc": _auc(roc_auc_score, y, scores),
        "pr_auc": _auc(average_precision_score, y, scores),
        "threshold": float(threshold), "flagged": int(flags.sum()),
        "precision_at_threshold": _ratio(int((flags & y).sum()), int(flags.sum())),
        "recall_at_threshold": _ratio(int((flags & y).sum()), positives),
        "k": int(top.sum()),
        "precision_at_k": _ratio(int((top & y).sum()), int(top.sum())),
        "recall_at_k": _ratio(int((top & y).sum()), positives),
    }
    if kind is not None:
        out["by_kind"] = per_kind_metrics(y, scores, flags, top, kind)
    return out


def per_kind_metrics(y: np.ndarray, scores: np.ndarray, flags: np.ndarray, top: np.ndarray,
                     kind: np.ndarray) -> dict[str, dict[str, float | int]]:
    """Per anomaly kind: count, recall at the threshold and in the top k, ROC-AUC vs normals."""
    normal = ~np.asarray(y, dtype=bool)
    out: dict[str, dict[str, float | int]] = {}
    kinds = sorted({str(k) for k in kind[~normal] if k is not None})
    for name in kinds:
        rows = np.asarray(kind == name, dtype=bool) & ~normal
        both = rows | normal
        out[name] = {"n": int(rows.sum()),
                     "recall_at_threshold": _ratio(int((flags & rows).sum()), int(rows.sum())),
                     "recall_at_k": _ratio(int((top & rows).sum()), int(rows.sum())),
                     "roc_auc": _auc(roc_auc_score, rows[both], scores[both])}
    return out


def top_k_mask(scores: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of the ``k`` highest scores (earlier rows win ties).

    >>> top_k_mask(np.array([0.2, 0.9, 0.2, 0.5]), 2).tolist()
    [False, True, False, True]
    """
    scores = np.asarray(scores)
    k = max(0, min(int(k), len(scores)))
    mask = np.zeros(len(scores), dtype=bool)
    mask[np.argsort(-scores, kind="stable")[:k]] = True
    return mask


def pr_curve(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(recall, precision)`` points of the precision-recall curve."""
    precision, recall, _ = precision_recall_curve(np.asarray(y).astype(bool), scores)
    return recall, precision


def _auc(metric: Callable[..., Any], y: np.ndarray, scores: np.ndarray) -> float:
    if y.all() or not y.any():
        return float("nan")
    return float(metric(y, scores))


def _ratio(num: int, den: int) -> float:
    return num / den if den else float("nan")


# --------------------------------------------------------------------------- the evaluation
@dataclass(frozen=True)
class Prepared:
    """Raw features of an input, labelled and split in time order."""

    feature_set: FeatureSet
    X: np.ndarray
    y: np.ndarray
    kind: np.ndarray
    transaction_id: np.ndarray
    split: Split

    @property
    def has_kinds(self) -> bool:
        """Whether any row has an anomaly kind (the labels had a ``kind`` column)."""
        return any(k is not None for k in self.kind)


def prepare(frame: pl.DataFrame, labels: pl.DataFrame | None,
            feature_set: str | FeatureSet, train_fraction: float,
            counterparty: str = "auto", X: np.ndarray | None = None) -> Prepared:
    """Compute the features of ``frame``, align ``labels`` (optional) and split in time order.

    The feature set's directions are resolved for ``counterparty`` (``auto``: detected from
    ``frame``, as ``txanomaly train`` does; :func:`txanomaly.features.roles.resolve_counterparty`),
    and its fitted transforms are fitted on the training rows. ``X``: the rows' features,
    already computed (on a larger history: ``txanomaly evaluate --max-rows`` samples rows
    of a file whose features came from every row).
    """
    fs, _ = resolve_counterparty(feature_set, frame, counterparty)
    split = time_ordered_split(frame["timestamp"].to_numpy(), train_fraction)
    X = feature_matrix(frame, fs) if X is None else np.asarray(X, dtype=np.float64)
    if len(X) != frame.height:
        raise TxAnomalyError(f"X has {len(X)} rows, the frame {frame.height}")
    fs = fs.fit_transforms(X[split.train])  # every detector sees the same model inputs
    ids = frame["transaction_id"]
    if labels is not None:
        y, kind = align_labels(ids, labels)
    else:
        y, kind = np.zeros(frame.height, np.int8), np.full(frame.height, None, dtype=object)
    return Prepared(fs, X, y, kind, ids.to_numpy(), split)


@dataclass
class Evaluation:
    """The outcome of :func:`evaluate`: one metrics dict per detector, PR curves, the setup."""

    setup: dict[str, Any]
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: NaN becomes None."""
        return json_safe({"setup": self.setup, "detectors": self.metrics})

    def write_json(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as indented JSON (parent folders are created)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path


def pr_figure(evaluation: Evaluation) -> Figure:
    """The precision-recall curves of every evaluated detector."""
    setup = evaluation.setup
    return plots.pr_curves(
        evaluation.curves, {k: m["pr_auc"] for k, m in evaluation.metrics.items()},
        setup["test_anomalies"] / setup["test_rows"],
        f"Precision-recall on {setup['test_rows']:,} test rows ({setup['feature_set']} "
        "features)")


def evaluate(data: Prepared, *, model: TransactionModel | None = None,
             detector_params: dict[str, Any] | None = None,
             baselines: Sequence[str] | None = None, top_k: int | None = None,
             seed: int = 0, max_fit_rows: int = MAX_FIT_ROWS,
             on_step: Step | None = None) -> Evaluation:
    """Evaluate our SOM and ``baselines`` on the test rows of ``data``.

    Parameters
    ----------
    data : Prepared
        From :func:`prepare`.
    model : TransactionModel, optional
        A trained model to evaluate as is; otherwise a new one is trained on the training rows
        with ``AnomalyDetector(**detector_params)``.
    baselines : sequence of str, optional
        Names from :data:`txanomaly.baselines.BASELINES`; default
        :func:`txanomaly.baselines.default_baselines`.
    top_k : int, optional
        ``k`` of the top-k metrics; default the number of labelled anomalies in the test rows.
    seed : int
        Seeds the baselines and the subsample of training rows they fit on.
    on_step : callable, optional
        Called with a step's name before each detector is fitted (progress bars).
    """
    chosen = check_baselines(default_baselines() if baselines is None else baselines)
    if model is not None and model.feature_names != data.feature_set.names:
        raise TxAnomalyError("the model's features differ from the prepared feature set")
    y_test = data.y[data.split.test]
    if not y_test.any():
        raise TxAnomalyError("the test rows have no labelled anomalies; nothing to evaluate "
                             "(use a smaller --train-fraction or more data)")
    k = int(y_test.sum()) if top_k is None else top_k
    som, contamination = _som_scores(data, model, detector_params or {}, on_step)
    result = Evaluation(_setup(data, k, contamination, model is not None, max_fit_rows, seed))
    _record(result, SOM_NAME, data, som, k)
    Xs_fit, Xs_test = _baseline_inputs(data)
    rng = np.random.default_rng(seed)
    for base in chosen:
        if on_step is not None:
            on_step(base.name)
        rows = _fit_rows(len(Xs_fit), max_fit_rows, rng) if base.subsample else slice(None)
        started = time.perf_counter()
        fit_scores, test_scores = base.fit_score(Xs_fit[rows], Xs_test, seed)
        threshold = QuantileThreshold.fit(fit_scores, contamination).value
        _record(result, base.name, data, (test_scores, threshold,
                                          time.perf_counter() - started), k)
    return result


def _som_scores(data: Prepared, model: TransactionModel | None, params: dict[str, Any],
                on_step: Step | None) -> tuple[tuple[np.ndarray, float, float], float]:
    if on_step is not None:
        on_step(SOM_NAME)
    started = time.perf_counter()
    if model is None:
        model = TransactionModel(data.feature_set, AnomalyDetector(**params))
        model.fit(data.X[data.split.train])
    scores = model.anomaly_score(data.X[data.split.test])
    seconds = time.perf_counter() - started
    return (scores, model.threshold, seconds), float(model.detector_.contamination)


def _baseline_inputs(data: Prepared) -> tuple[np.ndarray, np.ndarray]:
    """Transformed, then standardised with the training rows' mean and standard deviation."""
    Z = data.feature_set.transform(data.X)
    train, test = Z[data.split.train], Z[data.split.test]
    center, scale = fit_scaler(train, "standard")
    return apply_scaler(train, center, scale), apply_scaler(test, center, scale)


def _fit_rows(n: int, limit: int, rng: np.random.Generator) -> np.ndarray | slice:
    if n <= limit:
        return slice(None)
    return np.sort(rng.choice(n, limit, replace=False))


def _record(result: Evaluation, name: str, data: Prepared,
            scored: tuple[np.ndarray, float, float], k: int) -> None:
    scores, threshold, seconds = scored
    test = data.split.test
    kind = data.kind[test] if data.has_kinds else None
    metrics = detection_metrics(data.y[test], scores, threshold, k, kind)
    metrics["seconds"] = round(seconds, 3)
    result.metrics[name] = metrics
    result.curves[name] = pr_curve(data.y[test], scores)
    logger.info("%s: ROC-AUC %.4f, PR-AUC %.4f", name, metrics["roc_auc"], metrics["pr_auc"])


def _setup(data: Prepared, k: int, contamination: float, given_model: bool,
           max_fit_rows: int, seed: int) -> dict[str, Any]:
    train, test = data.split.train, data.split.test
    return {"feature_set": data.feature_set.name, "features": data.feature_set.names,
            "train_rows": len(train), "test_rows": len(test),
            "test_anomalies": int(data.y[test].sum()), "k": k,
            "contamination": contamination, "model": "given" if given_model else "trained",
            "baseline_max_fit_rows": max_fit_rows, "seed": seed,
            "protocol": "time-ordered split; transforms + train-standardised inputs for "
                        "baselines; thresholds = (1 - contamination) quantile of fit scores"}


def json_safe(value: Any) -> Any:
    """``value`` with NaN/inf floats as None and NumPy scalars as Python ones (for JSON).

    >>> json_safe({"a": [float("nan"), np.float64(1.5)]})
    {'a': [None, 1.5]}
    """
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return json_safe(value.item())
    return value


__all__ = ["Evaluation", "Prepared", "Split", "align_labels", "detection_metrics", "evaluate",
           "json_safe", "load_labels", "pr_figure", "prepare", "time_ordered_split"]
