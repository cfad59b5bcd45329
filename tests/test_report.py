"""The HTML report: valid embedded PNGs, the flagged transactions listed with their reasons."""

from __future__ import annotations

import base64
import html
import io
import re

import matplotlib.image as mpimg
import numpy as np
import polars as pl
import pytest

from txanomaly import evaluate as ev
from txanomaly import report, synth
from txanomaly.detector import AnomalyDetector
from txanomaly.features.batch import feature_matrix
from txanomaly.pipeline import TransactionModel
from txanomaly.som import SelfOrganizingMap

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IMAGE = re.compile(r"alt='([^']*)' src='data:image/png;base64,([A-Za-z0-9+/=]+)'")


@pytest.fixture(scope="module")
def trained():
    data = synth.generate(2_000, users=50, days=10, anomaly_rate=0.03, seed=5)
    fs = "seed"  # 9 features: fewer panels to draw than "standard", same code paths
    model = TransactionModel(fs, AnomalyDetector(map_size="4x4", epochs=5))
    model.fit(feature_matrix(data.transactions, fs))
    return model, data


@pytest.fixture(scope="module")
def document(trained):
    model, data = trained
    scored = report.score_data(model, data.transactions)
    return report.build_report(model, {"package_version": "test"}, scored, top=20), scored


def _images(text: str) -> dict[str, bytes]:
    return {alt: base64.b64decode(b64) for alt, b64 in IMAGE.findall(text)}


def test_every_image_is_a_valid_png(document):
    text, _ = document
    images = _images(text)
    assert set(images) == {"U-matrix", "hit map", "component planes", "PCA projection",
                           "score histogram", "feature distributions"}
    for name, blob in images.items():
        assert blob.startswith(PNG_SIGNATURE), name
        pixels = mpimg.imread(io.BytesIO(blob), format="png")
        assert pixels.ndim == 3 and min(pixels.shape[:2]) > 100, name


def test_the_top_flagged_transactions_are_listed_in_score_order(document):
    text, scored = document
    flagged = np.flatnonzero(scored.flags)
    assert len(flagged) > 0
    expected = scored.frame["transaction_id"].to_numpy()[
        flagged[np.argsort(-scored.scores[flagged], kind="stable")][:20]]
    positions = [text.index(f"<td>{tid}</td>") for tid in expected]
    assert positions == sorted(positions)
    assert f"{len(flagged):,} transactions are flagged" in text
    # An unflagged transaction is not in the table.
    calm = scored.frame["transaction_id"][int(np.argmin(scored.scores))]
    assert f"<td>{calm}</td>" not in text


def test_reasons_name_features_with_value_and_typical_value(trained, document):
    model, _ = trained
    text, scored = document
    top = int(np.argmax(scored.scores))
    reason = model.explain(scored.X[[top]])[0]["reasons"][0]
    feature = next(f for f in model.feature_set_.features if f.name == reason["feature"])
    shown = html.escape(report.format_reason(reason, feature))
    assert shown in text
    assert shown.startswith(html.escape(feature.label))  # in words, not the internal name
    assert f"title='{reason['feature']}'" in text  # which the reason's tooltip still gives


def test_a_labelled_reports_top_table_has_a_label_column(trained):
    """Regression: the demo report's top-anomalies table had no label column although the
    console showed the labels."""
    model, data = trained
    y = data.labels["is_anomaly"].to_numpy()
    kind = np.asarray(data.labels["kind"].to_list(), dtype=object)
    scored = report.score_data(model, data.transactions, labels=report.label_names(y, kind))
    text = report.build_report(model, None, scored, top=5)
    assert "<th>label</th>" in text
    first = report.top_anomalies(model, scored, scored.top_rows(1))[0]
    row = int(np.flatnonzero(scored.frame["transaction_id"] == first["transaction_id"])[0])
    assert first["label"] == (str(kind[row] or "anomaly") if y[row] else "normal")
    assert f"<td>{first['label']}</td>" in text


def test_report_scores_come_from_the_models_scoring_path(trained, document):
    model, _ = trained
    _, scored = document
    table = model.score_frame(pl.DataFrame(scored.X, schema=model.feature_names)
                              .insert_column(0, scored.frame["transaction_id"]))
    assert scored.table.equals(table)
    assert scored.flags.tolist() == model.is_anomaly(scored.X).tolist()


def test_a_clipped_reason_says_what_the_model_saw():
    from txanomaly.features.spec import Feature

    z = Feature("z", "log_amount_zscore", "origin", clip=(-10.0, 10.0))
    text = report.format_reason({"feature": "z", "value": 12.5, "prototype": 0.2,
                                 "share": 0.4}, z)
    assert "12.50, model sees 10" in text
    inside = report.format_reason({"feature": "z", "value": 3.0, "prototype": 0.2,
                                   "share": 0.4}, z)
    assert "model sees" not in inside


def test_without_data_the_map_sections_remain(trained):
    model, _ = trained
    text = report.build_report(model)
    assert set(_images(text)) == {"U-matrix", "component planes"}
    assert "--data INPUT" in text


def test_initial_prototypes_reproduce_the_training_start(trained, monkeypatch):
    model, data = trained
    inputs = model.feature_set_.transform(feature_matrix(data.transactions, model.feature_set_))
    trained_weights = model.detector_.som_.weights.numpy().copy()
    # Fit again with training switched off: the map keeps its initial prototypes.
    monkeypatch.setattr(SelfOrganizingMap, "fit", lambda self, *a, **k: self)
    frozen = AnomalyDetector(**model.detector_.get_params()).fit(inputs)
    before = report.initial_prototypes(model.detector_, inputs)
    np.testing.assert_allclose(before, frozen.som_.weights.numpy(), rtol=1e-6, atol=1e-6)
    assert not np.allclose(before, trained_weights)  # training did move the map


def test_write_report_creates_folders(tmp_path):
    path = report.write_report(tmp_path / "a" / "b" / "r.html", "<!DOCTYPE html>\n")
    assert path.read_text() == "<!DOCTYPE html>\n"


def test_an_evaluation_adds_metrics_and_pr_curves(trained):
    model, data = trained
    prepared = ev.prepare(data.transactions, data.labels, "seed", 0.6)
    evaluation = ev.evaluate(prepared, model=model, baselines=["iforest"])
    text = report.build_report(model, evaluation=evaluation)
    assert _images(text)["precision-recall curves"].startswith(PNG_SIGNATURE)
    assert "<td>som</td>" in text and "<td>iforest</td>" in text
    assert "Recall per anomaly kind" in text and "(n=" in text


def test_every_transform_has_words_for_the_report():
    # Regression: a model with a scaled_signed_log1p feature made `report` fail (KeyError).
    from txanomaly.features.spec import TRANSFORMS, Feature
    from txanomaly.report import _model_input

    for transform in TRANSFORMS:
        scale = 2.5 if transform == "scaled_signed_log1p" else None
        text = _model_input(Feature("x", "amount", transform=transform, transform_scale=scale))
        assert "value" in text
    assert "/ 2.5" in _model_input(Feature("x", "amount", transform="scaled_signed_log1p",
                                           transform_scale=2.5))
