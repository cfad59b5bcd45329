"""A model file cannot switch detection off (issue 12, finding 2): every field of model.json
is checked, the version covers everything that decides a verdict, and a key makes the server
refuse any model not signed with it."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load as load_tensors
from safetensors.numpy import save as save_tensors

from test_artifact import edit, model, raw_seed_features
from txanomaly import artifact
from txanomaly.detector import AnomalyDetector
from txanomaly.errors import ModelFileError
from txanomaly.pipeline import TransactionModel
from txanomaly.scoring import Scorer

__all__ = ["model"]  # the fixture, imported for pytest

KEY = "3f1c9a0b7e5d2c4a8b6f0e1d2c3b4a59"


@pytest.fixture
def saved(model: TransactionModel, tmp_path: Path) -> Path:
    return model.save(tmp_path / "model")


def write_literal(directory: Path, field: str, literal: str) -> None:
    """Set a top-level field to a JSON literal as written by hand (``NaN``, ``true``...)."""
    path = directory / "model.json"
    meta = json.loads(path.read_text())
    meta[field] = "@@"
    path.write_text(json.dumps(meta).replace('"@@"', literal))


# --------------------------------------------------------------------------- the threshold
@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_regression_nan_or_infinite_threshold_switched_detection_off(saved, literal):
    # Was accepted: every verdict ALLOW/LOW, "threshold": null in the answers, nothing logged.
    write_literal(saved, "threshold", literal)
    with pytest.raises(ModelFileError, match=f"threshold = {literal}: NaN and Infinity"):
        artifact.load(saved)


@pytest.mark.parametrize(("literal", "rule"), [
    ("0", "must be a finite number > 0"), ("-1", "must be a finite number > 0"),
    ("true", "must be a finite number > 0"), ('"2.5"', "must be a finite number > 0"),
    ("1000000000.0", r"is above 10 x the largest training score"),
    ("1e-06", "is below the median training score")])
def test_regression_out_of_range_threshold_loaded_normally(saved, literal, rule):
    # Was accepted with the same modelVersion. The version is recorded again here, as by
    # someone editing on purpose: the range rule alone refuses these.
    edit(saved, lambda m: m.update(threshold=json.loads(literal)), record_version=True)
    with pytest.raises(ModelFileError, match=f"model.json: threshold = {literal}: {rule}"):
        artifact.load(saved)


def test_threshold_within_the_training_scores_is_accepted(saved, model):
    quantiles = model.detector_.training_summary_["score_quantiles"]
    for value in (quantiles["p50"], 10 * quantiles["max"]):
        edit(saved, lambda m, v=value: m.update(threshold=v), record_version=True)
        assert artifact.load(saved).detector.threshold_ == value


def test_absurd_fixed_threshold_is_refused_before_anything_is_written(tmp_path):
    det = AnomalyDetector(map_size=(3, 3), epochs=2, threshold=1e9).fit(
        np.random.default_rng(0).normal(size=(100, 2)))
    with pytest.raises(ModelFileError, match=r"threshold = 1000000000\.0: is above"):
        artifact.save(tmp_path / "m", det)
    assert not (tmp_path / "m").exists()


# --------------------------------------------------------------------------- other fields
@pytest.mark.parametrize(("change", "message"), [
    (lambda m: m.update(contamination=0.0), "contamination = 0.0: must be a number in"),
    (lambda m: m.update(contamination=0.6), "contamination = 0.6: must be a number in"),
    (lambda m: m.update(contamination="0.05"), r'contamination = "0.05"'),
    (lambda m: m.update(contamination=0.1), r"must equal params.contamination \(0.05\)"),
    (lambda m: m["map"].update(rows=0), "map.rows = 0: must be an integer >= 1"),
    (lambda m: m["map"].update(cols=True), "map.cols = true: must be an integer >= 1"),
    (lambda m: m["map"].update(n_features=8), "map.n_features = 8: must equal"),
    (lambda m: m["params"].update(epochs=0), "params.epochs must be an integer >= 1"),
    (lambda m: m["params"].update(map_size="5x5"), 'params.map_size = "5x5": must agree'),
    (lambda m: m["params"].update(sneaky=1), r'params = \["sneaky"\]: unknown'),
    (lambda m: m["params"].update(feature_weights=[1.0, -1.0]), "feature_weights must be"),
    (lambda m: m.update(format_version=True), "format version true is not supported"),
    (lambda m: m.update(extra=1), r"unknown field\(s\) extra"),
    (lambda m: m.update(feature_names=["a"] * 9), "must be one or more distinct names"),
    (lambda m: m["tensors"].update(file="../other"), 'tensors.file = "../other"'),
    (lambda m: m.update(fitted_with_feature_names="yes"), "fitted_with_feature_names"),
    (lambda m: m["training_summary"]["score_quantiles"].update(p50=99.0),
     "training_summary.score_quantiles"),
    (lambda m: m.update(signature={"algorithm": "md5", "value": "0"}), "signature = "),
])
def test_every_field_is_checked_and_named(saved, change, message):
    edit(saved, change, record_version=True)
    with pytest.raises(ModelFileError, match=message):
        artifact.load(saved)


def feature(meta: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in meta["feature_set"]["features"] if f["name"] == name)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("window_ms", 0, "window_ms = 0: must be an integer >= 1"),
    ("window_ms", -3_600_000, "window_ms = -3600000"),
    ("window_ms", 1.5, "window_ms = 1.5"),
    ("window_ms", True, "window_ms = true"),
    ("clip", [10.0, -10.0], r"clip = \[10.0, -10.0\]: must be \[low, high\] with low < high"),
    ("clip", [0.0], r"clip = \[0.0\]"),
    ("weight", 0, "weight = 0: must be a number > 0"),
    ("weight", True, "weight = true"),
    ("transform", "exp", "transform must be one of"),
    ("op", "nonsense", "unknown op 'nonsense'"),
    ("key", "nobody", "key must be one of"),
    ("colour", "red", r'features\[7\] = \["colour"\]: unknown field'),
])
def test_every_feature_field_is_checked_and_named(saved, key, value, message):
    edit(saved, lambda m: feature(m, "origin_sliding_mean_diff").update({key: value}),
         record_version=True)
    with pytest.raises(ModelFileError, match=message):
        artifact.load(saved)


def rewrite_tensors(directory: Path, name: str, index: int, value: float) -> None:
    """Set one tensor value, and record the new hash and version (a deliberate edit)."""
    blob = (directory / "model.safetensors").read_bytes()
    tensors = {k: v.copy() for k, v in load_tensors(blob).items()}
    tensors[name].flat[index] = value
    blob = save_tensors(tensors)
    (directory / "model.safetensors").write_bytes(blob)
    edit(directory, lambda m: m["tensors"].update(sha256=hashlib.sha256(blob).hexdigest()),
         record_version=True)


@pytest.mark.parametrize(("name", "value", "message"), [
    ("som.weights", np.nan, "som.weights must be finite, got nan at"),
    ("scaler.center", np.inf, "scaler.center must be finite, got inf at"),
    ("scaler.scale", 0.0, "scaler.scale must be > 0, got 0.0 at feature 3"),
    ("scaler.scale", -2.0, "scaler.scale must be > 0"),
])
def test_non_finite_or_non_positive_tensors_are_refused(saved, name, value, message):
    rewrite_tensors(saved, name, 3, value)
    with pytest.raises(ModelFileError, match=message):
        artifact.load(saved)


# --------------------------------------------------------------------------- the version
@pytest.mark.parametrize("change", [
    lambda m: feature(m, "origin_sliding_mean_diff").update(window_ms=3_600_000),
    lambda m: feature(m, "destination_amount").update(transform="log1p"),
    lambda m: feature(m, "hour_sin").update(clip=[-0.5, 0.5]),
    lambda m: m.update(threshold=m["threshold"] * 1.01),
    lambda m: m["params"].update(scaling="robust"),
], ids=["window", "transform", "clip", "threshold", "params"])
def test_regression_edited_window_or_transform_kept_the_same_model_version(saved, change):
    before = Scorer.load(saved).version
    edit(saved, change)
    # With the recorded version: refused (model.json edited after it was saved).
    with pytest.raises(ModelFileError, match=r"model_version .* does not match its content"):
        Scorer.load(saved)
    # With the version recorded again: a model of its own, with another version.
    edit(saved, lambda m: None, record_version=True)
    after = Scorer.load(saved).version
    assert after != before and after.startswith("seed-") and len(after) == len("seed-") + 12


def test_version_ignores_what_decides_no_verdict(saved, model, tmp_path):
    """Package version and training summary (seconds...) are descriptive: same version.
    Saving the same fitted model again gives the same version."""
    before = artifact.load(saved).version
    edit(saved, lambda m: (m.update(package_version="9.9"),
                           m["training_summary"].update(seconds=123.0)))
    assert artifact.load(saved).version == before
    assert artifact.load(model.save(tmp_path / "again")).version == before


def test_scorer_reports_the_version_of_everything_that_decides_a_verdict(saved):
    loaded = artifact.load(saved)
    assert Scorer.load(saved).version == loaded.version == artifact.model_version(
        loaded.metadata) == loaded.metadata["model_version"]


def test_format_1_models_still_load_with_a_warning(saved, model, caplog):
    """Models saved before format 2 (no model_version) load; their version is computed."""
    meta = edit(saved, lambda m: (m.pop("model_version"), m.update(format_version=1)))
    with caplog.at_level(logging.WARNING, logger="txanomaly.artifact"):
        loaded = artifact.load(saved)
    assert loaded.version == artifact.model_version(meta)
    assert "records no version" in caplog.text
    np.testing.assert_array_equal(loaded.detector.anomaly_score(
        model.feature_set_.transform(raw_seed_features(seed=3))),
        model.anomaly_score(raw_seed_features(seed=3)))
    version = artifact.sign(saved, KEY)  # signing upgrades it to format 2
    upgraded = artifact.load(saved, key=KEY)
    assert upgraded.metadata["format_version"] == 2 and upgraded.version == version


# --------------------------------------------------------------------------- the signature
def test_signed_model_loads_with_the_right_key(model, tmp_path):
    signed = artifact.save(tmp_path / "m", model.detector_, model.feature_set_, key=KEY)
    loaded = artifact.load(signed, key=KEY)
    assert loaded.verified and loaded.metadata["signature"]["algorithm"] == "hmac-sha256"
    assert Scorer.load(signed, key=KEY.encode()).version == loaded.version


def test_signed_model_is_refused_with_a_wrong_key(model, tmp_path):
    signed = artifact.save(tmp_path / "m", model.detector_, model.feature_set_, key=KEY)
    with pytest.raises(ModelFileError, match="the signature does not verify"):
        artifact.load(signed, key="another-key")


def test_unsigned_model_is_refused_when_a_key_is_required(saved):
    with pytest.raises(ModelFileError, match="the model is not signed, and a model key is"):
        Scorer.load(saved, key=KEY)


def test_edit_with_the_version_recorded_again_is_refused_by_the_signature(model, tmp_path):
    """What the signature adds: an edit that also rewrites the hash and version still fails
    without the key."""
    signed = artifact.save(tmp_path / "m", model.detector_, model.feature_set_, key=KEY)
    edit(signed, lambda m: m.update(threshold=m["threshold"] * 2), record_version=True)
    assert not artifact.load(signed).verified  # loads without a key: nothing to check with
    with pytest.raises(ModelFileError, match="the signature does not verify"):
        artifact.load(signed, key=KEY)
    rewrite_tensors(signed, "som.weights", 0, 0.5)
    with pytest.raises(ModelFileError, match="the signature does not verify"):
        artifact.load(signed, key=KEY)


def test_signed_model_loads_without_a_key_and_says_it_is_not_checked(saved, caplog):
    artifact.sign(saved, KEY)
    with caplog.at_level(logging.INFO, logger="txanomaly.artifact"):
        loaded = artifact.load(saved)
    assert not loaded.verified and "signature is not checked" in caplog.text


def test_empty_key_is_refused(saved, tmp_path):
    with pytest.raises(Exception, match="key is empty"):
        artifact.sign(saved, "")
    (tmp_path / "k").write_text("\n")
    with pytest.raises(Exception, match="the key file is empty"):
        artifact.read_key(tmp_path / "k")


def test_models_saved_before_reference_width_score_against_the_bmus_own_prototype(saved, model):
    """Step 8 (docs/detection.md): a model file without params.reference_width was trained
    and thresholded on distances to the BMU's own prototype; it loads with width 0 and scores
    as it did, while a model saved now keeps its width and its scores."""
    X = model.feature_set_.transform(raw_seed_features(seed=4))
    now = artifact.load(saved).detector
    assert now.reference_width == model.detector_.reference_width > 0
    np.testing.assert_array_equal(now.anomaly_score(X), model.detector_.anomaly_score(X))
    edit(saved, lambda m: m["params"].pop("reference_width"), record_version=True)
    before = artifact.load(saved).detector
    assert before.reference_width == 0.0
    np.testing.assert_array_equal(before.reference_, before.som_.weights.numpy())
    det = model.detector_
    own = AnomalyDetector(**{**det.get_params(), "reference_width": 0.0}).restore(
        det.som_.weights.numpy(), det.center_, det.scale_, det.threshold_,
        active_units=det.active_units_)
    np.testing.assert_array_equal(before.anomaly_score(X), own.anomaly_score(X))
    assert not np.array_equal(before.anomaly_score(X), now.anomaly_score(X))
