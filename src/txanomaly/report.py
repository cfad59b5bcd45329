"""The analyst's report: one self-contained HTML file with the model, its map and its flags.

:func:`build_report` scores the given transactions (optional) with a trained
:class:`~txanomaly.pipeline.TransactionModel` and assembles the sections below; every image
is a PNG embedded as base64, so the file opens anywhere, offline.

1. Model summary (and, with data, a summary of the scored data).
2. The U-matrix, the hit map, the component planes (prototypes in original units).
3. The prototypes projected on the data's first two principal components, before and after
   training. The initial prototypes are recomputed the way the detector made them (same seed,
   same initialisation); they are exactly the training ones when the data given is the
   training data.
4. The anomaly-score histogram with the threshold.
5. The top anomalies with their reasons: each top feature's value next to its prototype's
   (the typical value), in original units.
6. Per-feature distributions of flagged vs normal transactions.
7. Optionally, an evaluation against labels and peer detectors (:mod:`txanomaly.evaluate`).
8. The feature definitions.
"""

from __future__ import annotations

import base64
import html
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from txanomaly import plots
from txanomaly.detector import AnomalyDetector
from txanomaly.evaluate import Evaluation, pr_figure
from txanomaly.features.batch import feature_matrix
from txanomaly.features.spec import Feature
from txanomaly.pipeline import TransactionModel

logger = logging.getLogger(__name__)

#: Rows drawn (seeded) for the PCA scatter: more only blurs the picture and slows the PNG.
SCATTER_ROWS = 5_000
DEFAULT_TOP = 50
#: Below this magnitude a value is float rounding noise (e.g. cos(pi/2) = 6e-17): shown as 0.
ROUNDING_NOISE = 1e-9
_TRANSFORM_AXIS = {"log1p": "log(1 + value)", "signed_log1p": "sign * log(1 + |value|)",
                   "scaled_signed_log1p": "sign * log(1 + |value| / s)", "none": "value"}


@dataclass(frozen=True)
class ScoredData:
    """Transactions scored by a model: what the data-dependent sections need.

    ``table`` is :meth:`TransactionModel.score_frame
    <txanomaly.pipeline.TransactionModel.score_frame>`'s output for the rows (scores, flags,
    risk levels, BMUs and the top reasons), so every number the report shows comes from the
    model's one scoring path.
    """

    frame: pl.DataFrame
    X: np.ndarray
    inputs: np.ndarray
    table: pl.DataFrame
    #: Indices of the rows the model was trained on, when known: the "before training"
    #: picture is then rebuilt from exactly those rows.
    training_rows: np.ndarray | None = None
    #: Per row, a label to show beside the top anomalies ("normal", "anomaly" or the
    #: anomaly's kind), when the data is labelled.
    labels: np.ndarray | None = None

    @property
    def scores(self) -> np.ndarray:
        """Anomaly scores (higher = more anomalous)."""
        return self.table.get_column("anomaly_score").to_numpy()

    @property
    def bmu(self) -> np.ndarray:
        """Flat index of each row's best-matching unit."""
        return self.table.get_column("bmu").to_numpy()

    @property
    def flags(self) -> np.ndarray:
        """The model's flags (anomaly score strictly above the threshold)."""
        return self.table.get_column("is_anomaly").to_numpy()

    def top_rows(self, top: int) -> np.ndarray:
        """Indices of the ``top`` highest-scoring flagged rows, highest first."""
        flagged = np.flatnonzero(self.flags)
        return flagged[np.argsort(-self.scores[flagged], kind="stable")][:top]


def score_data(model: TransactionModel, frame: pl.DataFrame, *, X: np.ndarray | None = None,
               training_rows: np.ndarray | None = None, labels: np.ndarray | None = None,
               top: int = 3) -> ScoredData:
    """Score the transactions of ``frame`` with ``model`` (features computed unless ``X``)."""
    if X is None:
        X = feature_matrix(frame, model.feature_set_)
    features = pl.DataFrame(X, schema=model.feature_names).insert_column(
        0, frame.get_column("transaction_id"))
    return ScoredData(frame, X, model.feature_set_.transform(X),
                      model.score_frame(features, top=top), training_rows, labels)


def label_names(y: np.ndarray, kind: np.ndarray | None = None) -> np.ndarray:
    """Per row, ``"normal"``, or the anomaly's kind (``"anomaly"`` when it has none).

    >>> label_names(np.array([0, 1, 1]), np.array([None, "burst", None])).tolist()
    ['normal', 'burst', 'anomaly']
    """
    kind = np.full(len(y), None, dtype=object) if kind is None else kind
    return np.array(["normal" if not flag else str(k or "anomaly") for flag, k in zip(
        np.asarray(y).tolist(), kind.tolist(), strict=True)], dtype=object)


def initial_prototypes(detector: AnomalyDetector, inputs: np.ndarray) -> np.ndarray:
    """The prototypes the detector's map started from, in scaled space.

    Rebuilt with the detector's own map factory (same seed) and initialisation over
    ``inputs`` (model inputs, before scaling); equal to the real ones when ``inputs`` are the
    training rows.
    """
    return detector.initial_weights(np.asarray(inputs, dtype=np.float64))


# --------------------------------------------------------------------------- assembly
def build_report(model: TransactionModel, metadata: dict[str, Any] | None = None,
                 data: ScoredData | None = None, *, top: int = DEFAULT_TOP,
                 title: str = "txanomaly report", seed: int = 0,
                 evaluation: Evaluation | None = None,
                 on_step: Callable[[str], None] | None = None) -> str:
    """The report as one HTML string.

    Parameters
    ----------
    model : TransactionModel
        A trained model.
    metadata : dict, optional
        ``model.json`` (adds the package version, training summary...).
    data : ScoredData, optional
        Transactions scored by ``model`` (:func:`score_data`); without them the
        data-dependent sections are left out.
    top : int
        How many of the highest-scoring transactions to list with reasons.
    evaluation : Evaluation, optional
        Adds a section with the metrics against labels and the precision-recall curves.
    """
    step = on_step or (lambda name: None)
    if data is not None and not len(data.scores):
        data = None
    sections = [_summary_section(model, metadata or {}, data)]
    step("map plots")
    sections.append(_map_section(model, data))
    if data is not None:
        step("projection")
        sections.append(_projection_section(model, data, seed))
        step("scores")
        sections.append(_scores_section(model, data))
        step("top anomalies")
        sections.append(_top_section(model, data, top))
        step("distributions")
        sections.append(_distributions_section(model, data))
    else:
        sections.append("<section><h2>Data</h2><p>No transactions to score: pass "
                        "<code>--data INPUT</code> for the hit map, the PCA projection, the "
                        "score histogram, the top anomalies and the distributions.</p></section>")
    if evaluation is not None:
        step("evaluation")
        sections.append(_evaluation_section(evaluation))
    sections.append(_features_section(model))
    return _page(title, sections)


def write_report(path: str | Path, document: str) -> Path:
    """Write the HTML to ``path`` (parent folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(document, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- sections
def _summary_section(model: TransactionModel, meta: dict[str, Any],
                     data: ScoredData | None) -> str:
    det = model.detector_
    summary = dict(det.training_summary_ or {})
    rows: list[tuple[str, Any]] = [
        ("feature set", f"{model.feature_set_.name} ({len(model.feature_names)} features)"),
        ("map", f"{det.som_.rows} x {det.som_.cols} units, algorithm {det.algorithm}, "
                f"{det.epochs} epochs, init {det.init}, scaling {det.scaling}"),
        ("threshold", f"{model.threshold:.4g} (contamination {det.contamination})"),
        ("training rows", _fmt_count(summary.get("rows"))),
        ("training quantization error", format_value(summary.get("quantization_error"))),
        ("training topographic error", format_value(summary.get("topographic_error"))),
        ("training time", f"{summary['seconds']} s" if "seconds" in summary else "n/a"),
        ("saved by", f"txanomaly {meta.get('package_version', 'n/a')}"),
    ]
    if data is not None:
        flagged = int(data.flags.sum())
        rows += [("scored transactions", f"{len(data.scores):,}"),
                 ("flagged", f"{flagged:,} ({flagged / len(data.scores):.2%})"),
                 ("quantization error on these", format_value(float(data.scores.mean()))),
                 ("topographic error on these", format_value(det.topographic_error(data.inputs)))]
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                   for k, v in rows)
    return f"<section><h2>Model</h2><table class='kv'>{body}</table></section>"


def _map_section(model: TransactionModel, data: ScoredData | None) -> str:
    det = model.detector_
    rows, cols = det.som_.rows, det.som_.cols
    parts = ["<section><h2>The map</h2>",
             "<p>The U-matrix shows how far each prototype is from its neighbours: bright "
             "ridges separate groups of similar transactions.</p>",
             _img(plots.u_matrix(det.u_matrix()), "U-matrix")]
    if data is not None:
        units = rows * cols
        hits = np.bincount(data.bmu, minlength=units).reshape(rows, cols)
        flagged = np.bincount(data.bmu[data.flags], minlength=units).reshape(rows, cols)
        parts += ["<p>Where the transactions land, and which share of each unit's transactions is "
                  "flagged: units that mostly hold flagged transactions are where the unusual "
                  "behaviour lives.</p>",
                  _img(plots.hit_map(hits, flagged), "hit map")]
    protos = _prototypes_original(model)
    logs = [f.transform != "none" for f in model.feature_set_.features]
    parts += ["<p>Component planes: each feature's value on every prototype, in the "
              "feature's original units (log-transformed features on a symmetric-log colour "
              "scale).</p>",
              _img(plots.component_planes(protos, model.feature_names, rows, cols, logs),
                   "component planes"), "</section>"]
    return "".join(parts)


def _projection_section(model: TransactionModel, data: ScoredData, seed: int) -> str:
    det = model.detector_
    rng = np.random.default_rng(seed)
    take = rng.choice(len(data.inputs), min(SCATTER_ROWS, len(data.inputs)), replace=False)
    scaled = (data.inputs[take] - det.center_) / det.scale_
    start = data.inputs if data.training_rows is None else data.inputs[data.training_rows]
    before = initial_prototypes(det, start)
    after = det.som_.weights.detach().cpu().numpy()
    fig = plots.prototype_projection(scaled, before, after, det.som_.rows, det.som_.cols)
    return ("<section><h2>Prototypes before and after training</h2><p>Transactions (grey, a "
            f"sample of {len(take):,}) and the map's prototypes on the first two principal "
            "components of the scaled features; lines join neighbouring units.</p>"
            f"{_img(fig, 'PCA projection')}</section>")


def _scores_section(model: TransactionModel, data: ScoredData) -> str:
    fig = plots.score_histogram(data.scores, model.threshold,
                                "Anomaly scores of the scored transactions")
    return f"<section><h2>Anomaly scores</h2>{_img(fig, 'score histogram')}</section>"


def _top_section(model: TransactionModel, data: ScoredData, top: int) -> str:
    flagged = int(data.flags.sum())
    order = data.top_rows(top)
    head = (f"<section><h2>Top anomalies</h2><p>{flagged:,} transactions are flagged "
            f"(score &gt; {model.threshold:.4g}); the {len(order):,} highest are listed. Each "
            "reason gives the feature in words, the transaction's value, the typical value (the "
            "prototype of the transaction's best-matching unit) and the feature's share of the "
            "distance. Values are the features' raw values, before the transforms and clipping "
            "the model applies (the feature table below lists them); a value beyond a "
            "feature's clipping range says what the model saw instead.</p>")
    if not len(order):
        return head + "</section>"
    records = top_anomalies(model, data, order)
    labelled = data.labels is not None
    features = {f.name: f for f in model.feature_set_.features}
    cells = "".join(_anomaly_row(i + 1, rec, labelled, features)
                    for i, rec in enumerate(records))
    header = ("<tr><th>#</th><th>transaction</th><th>time (UTC)</th><th>amount</th>"
              "<th>origin &rarr; destination</th><th>score</th><th>risk</th>"
              + ("<th>label</th>" if labelled else "") + "<th>reasons</th></tr>")
    return f"{head}<table class='top'>{header}{cells}</table></section>"


def top_anomalies(model: TransactionModel, data: ScoredData, rows: np.ndarray
                  ) -> list[dict[str, Any]]:
    """Records of the given rows: id, time, amount, users, score, risk level, the top reasons
    (from the scores table) and, for labelled data, the label."""
    rows = np.asarray(rows, dtype=np.int64)
    table = data.table[rows.tolist()]
    frame = data.frame[rows.tolist()]
    n_reasons = sum(1 for c in table.columns if c.startswith("reason_") and c[7:].isdigit())
    out = []
    for i, (scored, row) in enumerate(zip(table.iter_rows(named=True),
                                          frame.iter_rows(named=True), strict=True)):
        amount = row.get("destination_amount") or row.get("origin_amount")
        currency = row.get("destination_currency") or row.get("origin_currency") or ""
        reasons = [{"feature": scored[f"reason_{r}"], "share": scored[f"reason_{r}_share"],
                    "value": scored[f"reason_{r}_value"],
                    "prototype": scored[f"reason_{r}_prototype"]}
                   for r in range(1, n_reasons + 1)]
        rec = {"transaction_id": row["transaction_id"], "time": _iso(row.get("timestamp")),
               "amount": amount, "currency": currency,
               "origin_user_id": row.get("origin_user_id"),
               "destination_user_id": row.get("destination_user_id"),
               "anomaly_score": scored["anomaly_score"], "is_anomaly": scored["is_anomaly"],
               "risk_level": scored["risk_level"], "bmu": scored["bmu"], "reasons": reasons}
        if data.labels is not None:
            rec["label"] = str(data.labels[rows[i]])
        out.append(rec)
    return out


def format_reason(reason: dict[str, Any], feature: Feature | None = None) -> str:
    """One reason as text: ``words = value (typical prototype; share of the distance)``.

    With the :class:`~txanomaly.features.spec.Feature`, the feature is named in words and a
    value beyond its clipping range says what the model saw.

    >>> format_reason({"feature": "amount", "value": 12500.0, "prototype": 80.5, "share": 0.71})
    'amount = 12,500 (typical 80.50; 71%)'
    >>> from txanomaly.features.spec import Feature
    >>> z = Feature("origin_log_amount_zscore", "log_amount_zscore", "origin", clip=(-10, 10))
    >>> format_reason({"feature": z.name, "value": -13.9, "prototype": 0.1, "share": 0.5}, z)
    "amount vs the sender's usual amounts (z-score) = -13.90, model sees -10.00 (typical 0.1; 50%)"
    """
    name = feature.label if feature is not None else reason["feature"]
    value = format_value(reason["value"])
    if feature is not None and feature.clip is not None:
        low, high = feature.clip
        if not low <= reason["value"] <= high:
            value += f", model sees {format_value(min(max(reason['value'], low), high))}"
    return (f"{name} = {value} (typical {format_value(reason['prototype'])}; "
            f"{reason['share']:.0%})")


def _anomaly_row(rank: int, rec: dict[str, Any], labelled: bool,
                 features: dict[str, Feature] | None = None) -> str:
    features = features or {}
    reasons = "<br>".join(
        f"<span title='{html.escape(r['feature'])}'>"
        f"{html.escape(format_reason(r, features.get(r['feature'])))}</span>"
        for r in rec["reasons"])
    amount = "" if rec["amount"] is None else f"{format_value(rec['amount'])} {rec['currency']}"
    users = (f"{html.escape(str(rec['origin_user_id'] or '–'))} &rarr; "
             f"{html.escape(str(rec['destination_user_id'] or '–'))}")
    label = f"<td>{html.escape(rec['label'])}</td>" if labelled else ""
    return (f"<tr><td>{rank}</td><td>{html.escape(str(rec['transaction_id']))}</td>"
            f"<td>{rec['time']}</td><td class='num'>{html.escape(amount)}</td>"
            f"<td>{users}</td><td class='num'>{rec['anomaly_score']:.3f}</td>"
            f"<td>{html.escape(rec['risk_level'])}</td>{label}<td>{reasons}</td></tr>")


def _distributions_section(model: TransactionModel, data: ScoredData) -> str:
    axes = [_TRANSFORM_AXIS[f.transform] for f in model.feature_set_.features]
    fig = plots.feature_distributions(data.inputs, model.feature_names, data.flags, axes)
    return ("<section><h2>Flagged vs normal, per feature</h2><p>Values on the model's input "
            "scale (heavy-tailed features log-transformed, as the x-axis labels say).</p>"
            f"{_img(fig, 'feature distributions')}</section>")


_METRIC_COLUMNS = (("roc_auc", "ROC-AUC"), ("pr_auc", "PR-AUC"),
                   ("precision_at_threshold", "precision at threshold"),
                   ("recall_at_threshold", "recall at threshold"),
                   ("precision_at_k", "precision at k"), ("recall_at_k", "recall at k"))


def _evaluation_section(evaluation: Evaluation) -> str:
    setup = evaluation.setup
    head = "".join(f"<th>{t}</th>" for _, t in _METRIC_COLUMNS)
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td>"
        + "".join(f"<td class='num'>{_metric(m[key])}</td>" for key, _ in _METRIC_COLUMNS)
        + "</tr>" for name, m in evaluation.metrics.items())
    kinds = next(iter(evaluation.metrics.values())).get("by_kind") or {}
    kind_head = "".join(f"<th>{html.escape(k)} (n={v['n']:,})</th>" for k, v in kinds.items())
    kind_rows = "".join(
        f"<tr><td>{html.escape(name)}</td>" + "".join(
            f"<td class='num'>{_metric(m['by_kind'][k]['recall_at_threshold'])} / "
            f"{_metric(m['by_kind'][k]['recall_at_k'])}</td>" for k in kinds) + "</tr>"
        for name, m in evaluation.metrics.items())
    kind_table = (f"<p>Recall per anomaly kind, at the threshold / in the top k:</p><table>"
                  f"<tr><th>detector</th>{kind_head}</tr>{kind_rows}</table>") if kinds else ""
    return (f"<section><h2>Against labels and peer detectors</h2><p>Scored on the "
            f"{setup['test_rows']:,} latest transactions ({setup['test_anomalies']:,} labelled "
            f"anomalies; k = {setup['k']:,}); every detector trained on the "
            f"{setup['train_rows']:,} earlier ones, with the same features.</p>"
            f"<table><tr><th>detector</th>{head}</tr>{rows}</table>{kind_table}"
            f"{_img(pr_figure(evaluation), 'precision-recall curves')}</section>")


def _features_section(model: TransactionModel) -> str:
    body = "".join(
        f"<tr><td>{html.escape(f.label)}<br><code>{html.escape(f.name)}</code></td>"
        f"<td>{html.escape(f.describe())}</td><td>{html.escape(_model_input(f))}</td></tr>"
        for f in model.feature_set_.features)
    return ("<section><h2>Features</h2><p>Reasons show each feature's raw value; the model "
            "sees it after the transform and clipping listed here.</p><table><tr>"
            "<th>feature</th><th>definition</th><th>what the model sees</th></tr>"
            f"{body}</table></section>")


def _model_input(feature: Feature) -> str:
    """The feature's transform and clipping in words, e.g. ``log(1 + value), clipped to
    [-10, 10]``."""
    text = _TRANSFORM_AXIS[feature.transform]
    if feature.transform_scale is not None:  # the fitted s, in the feature's units
        text = f"sign * log(1 + |value| / {format_value(feature.transform_scale)})"
    if feature.clip is not None:
        text += f", clipped to [{format_value(feature.clip[0])}, {format_value(feature.clip[1])}]"
    return text


# --------------------------------------------------------------------------- helpers
def _prototypes_original(model: TransactionModel) -> np.ndarray:
    det = model.detector_
    inputs = det.som_.weights.detach().cpu().double().numpy() * det.scale_ + det.center_
    return model.feature_set_.inverse_transform(inputs)


def _img(fig: Any, alt: str) -> str:
    encoded = base64.b64encode(plots.to_png(fig)).decode("ascii")
    return f"<figure><img alt='{html.escape(alt)}' src='data:image/png;base64,{encoded}'></figure>"


def format_value(value: Any) -> str:
    """A number for people: thousands separators, 2 decimals from 1, 3 significant below.

    >>> format_value(1234567.8), format_value(-3.14159), format_value(0.001234), format_value(1e-16)
    ('1,234,568', '-3.14', '0.00123', '0')
    """
    if value is None:
        return "n/a"
    v = float(value)
    if not np.isfinite(v):
        return str(v)
    if abs(v) < ROUNDING_NOISE:
        return "0"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 1:
        return f"{v:,.2f}"
    return f"{v:.3g}"


def _metric(value: Any) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{float(value):.3f}"


def _fmt_count(value: Any) -> str:
    return "n/a" if value is None else f"{int(value):,}"


def _iso(ms: Any) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;
max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;
margin-top:1.8em}
table{border-collapse:collapse;font-size:.88em}th,td{border:1px solid #ddd;padding:.3em .5em;
text-align:left;vertical-align:top}th{background:#f5f5f5}td.num{text-align:right;
white-space:nowrap}table.kv th{width:16em}figure{margin:1em 0}img{max-width:100%}
"""


def _page(title: str, sections: Sequence[str]) -> str:
    stamp = datetime.now(tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p>Generated {stamp} by txanomaly.</p>"
            + "".join(sections) + "</body></html>\n")
