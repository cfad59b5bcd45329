"""The model directory: round trips, and refusing tampered, truncated or mismatched models."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from txanomaly import artifact
from txanomaly.detector import AnomalyDetector
from txanomaly.errors import ModelFileError
from txanomaly.features.spec import SEED, STANDARD
from txanomaly.pipeline import TransactionModel


def raw_seed_features(n: int = 400, seed: int = 0) -> np.ndarray:
    """Plausible raw values for the 9 ``seed`` features (amounts, angles, mean diffs)."""
    rng = np.random.default_rng(seed)
    amount = rng.lognormal(4, 1, n)
    hour, day = rng.uniform(0, 2 * np.pi, n), rng.uniform(0, 2 * np.pi, n)
    diffs = rng.normal(0, 30, (n, 4))
    return np.column_stack([amount, np.sin(hour), np.sin(day), np.cos(hour), np.cos(day),
                            diffs])


@pytest.fixture(scope="module")
def model() -> TransactionModel:
    return TransactionModel(SEED, AnomalyDetector(map_size="4x4", epochs=5)).fit(
        raw_seed_features())


@pytest.fixture
def saved(model, tmp_path) -> Path:
    return model.save(tmp_path / "model")


def edit(directory: Path, change: Callable[[dict[str, Any]], Any],
         record_version: bool = False) -> dict[str, Any]:
    """Apply ``change`` to model.json; ``record_version``: also write the version its new
    content gives (where the file records one), as someone who edits it on purpose would."""
    path = directory / "model.json"
    meta = json.loads(path.read_text())
    change(meta)
    if record_version and "model_version" in meta:
        meta["model_version"] = artifact.model_version(meta)
    path.write_text(json.dumps(meta))
    return meta


def test_regression_threshold_lost_on_save(saved, model):
    # The prototype kept its threshold in an attribute that was never saved: after a reload
    # every record was flagged. The threshold must survive, and with it the flags.
    again = TransactionModel.load(saved)
    X = raw_seed_features(seed=1)
    assert again.threshold == model.threshold
    assert again.is_anomaly(X).mean() < 0.2
    np.testing.assert_array_equal(again.is_anomaly(X), model.is_anomaly(X))


def test_reloaded_model_gives_identical_scores_and_explanations(saved, model):
    again = TransactionModel.load(saved)
    X = raw_seed_features(seed=2)
    np.testing.assert_array_equal(again.anomaly_score(X), model.anomaly_score(X))
    assert again.explain(X[:5]) == model.explain(X[:5])
    assert again.feature_set_ == SEED
    assert again.detector_.get_params() == model.detector_.get_params()


def test_model_json_records_what_the_design_asks_for(saved, model):
    meta = json.loads((saved / "model.json").read_text())
    assert meta["format_version"] == artifact.FORMAT_VERSION == 2
    assert meta["model_version"] == artifact.model_version(meta)
    assert meta["model_version"].startswith("seed-") and "signature" not in meta
    assert meta["feature_names"] == SEED.names
    assert meta["feature_set"]["name"] == "seed"
    assert meta["map"] == {"rows": 4, "cols": 4, "n_features": 9}
    assert meta["threshold"] == model.threshold and meta["contamination"] == 0.05
    assert meta["params"]["epochs"] == 5
    assert {"rows", "quantization_error", "topographic_error", "seconds"} <= set(
        meta["training_summary"])
    assert len(meta["tensors"]["sha256"]) == 64
    assert sorted(p.name for p in saved.iterdir()) == ["model.json", "model.safetensors"]


def test_no_pickle_in_the_tensors_file(saved):
    blob = (saved / "model.safetensors").read_bytes()
    header_len = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + header_len])  # safetensors: a JSON header, raw numbers
    assert set(header) - {"__metadata__"} == {"som.weights", "scaler.center", "scaler.scale",
                                              "som.active_units"}
    assert b"\x80\x04" not in blob[:2]


def _rewrite_tensors(directory: Path, change: Callable[[dict[str, np.ndarray]], None]) -> None:
    """Change the tensors and record their new SHA-256 (and version), as a deliberate edit."""
    from safetensors.numpy import load_file, save_file

    path = directory / "model.safetensors"
    tensors = load_file(path)
    change(tensors)
    save_file(tensors, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    edit(directory, lambda m: m["tensors"].update(sha256=digest), record_version=True)


def test_the_scoring_units_round_trip(model, saved):
    again = TransactionModel.load(saved)
    np.testing.assert_array_equal(again.detector_.active_units_, model.detector_.active_units_)
    assert not model.detector_.active_units_.all()  # some units score, not all
    X = raw_seed_features()
    np.testing.assert_array_equal(again.anomaly_score(X), model.anomaly_score(X))


def test_a_model_saved_before_scoring_units_scores_on_every_unit(model, saved):
    _rewrite_tensors(saved, lambda t: t.pop("som.active_units"))
    old = TransactionModel.load(saved)
    assert old.detector_.active_units_.all()
    every = AnomalyDetector(map_size="4x4", epochs=5, min_unit_share=0.0)
    X = raw_seed_features()
    expected = TransactionModel(SEED, every).fit(X).anomaly_score(X)
    np.testing.assert_allclose(old.anomaly_score(X), expected, rtol=1e-12)


@pytest.mark.parametrize("mask", [np.zeros(16, np.uint8), np.ones(15, np.uint8),
                                  np.full(16, 2, np.uint8)])
def test_a_bad_scoring_units_mask_is_refused(saved, mask):
    _rewrite_tensors(saved, lambda t: t.update({"som.active_units": mask}))
    with pytest.raises(ModelFileError, match=r"som\.active_units"):
        artifact.load(saved)


def test_tampered_tensors_are_refused(saved):
    path = saved / "model.safetensors"
    blob = bytearray(path.read_bytes())
    blob[-3] ^= 0x01
    path.write_bytes(bytes(blob))
    with pytest.raises(ModelFileError, match=r"SHA-256 .* does not match"):
        artifact.load(saved)


def test_truncated_tensors_are_refused(saved):
    path = saved / "model.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ModelFileError, match="modified or truncated"):
        artifact.load(saved)


def test_truncated_json_is_refused(saved):
    path = saved / "model.json"
    path.write_text(path.read_text()[:200])
    with pytest.raises(ModelFileError, match="not valid JSON"):
        artifact.load(saved)


@pytest.mark.parametrize("name", ["model.json", "model.safetensors"])
def test_missing_files_are_refused(saved, name):
    (saved / name).unlink()
    with pytest.raises(ModelFileError, match=f"{name} is missing"):
        artifact.load(saved)


def test_missing_directory_is_refused(tmp_path):
    with pytest.raises(ModelFileError, match="no such model directory"):
        artifact.load(tmp_path / "nowhere")


def test_other_format_version_is_refused(saved):
    meta = json.loads((saved / "model.json").read_text())
    meta["format_version"] = 99
    (saved / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="format version 99 is not supported"):
        artifact.load(saved)


def test_feature_name_mismatch_is_refused(saved):
    with pytest.raises(ModelFileError, match=r"feature names do not match.*unexpected"):
        artifact.load(saved, feature_names=STANDARD.names)
    swapped = [SEED.names[1], SEED.names[0], *SEED.names[2:]]
    with pytest.raises(ModelFileError, match="another order"):
        artifact.load(saved, feature_names=swapped)
    assert artifact.load(saved, feature_names=SEED.names).feature_names == SEED.names


def test_json_that_disagrees_with_the_tensors_is_refused(saved):
    # Map and params edited together, and the version recorded again: only the tensors'
    # shapes are left to disagree.
    edit(saved, lambda m: (m["map"].update(rows=5), m["params"].update(map_size="5x4")),
         record_version=True)
    with pytest.raises(ModelFileError, match=r"som\.weights has shape"):
        artifact.load(saved)


def test_edited_feature_set_is_refused(saved):
    meta = json.loads((saved / "model.json").read_text())
    meta["feature_set"]["features"][0]["name"] = "renamed"
    (saved / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="feature names do not match"):
        artifact.load(saved)


def test_bare_detector_round_trip_keeps_dataframe_feature_names(tmp_path):
    pd = pytest.importorskip("pandas")
    X = pd.DataFrame(np.random.default_rng(0).normal(size=(200, 3)), columns=["a", "b", "c"])
    det = AnomalyDetector(map_size=(3, 3), epochs=3, contamination=0.1).fit(X)
    loaded = artifact.load(artifact.save(tmp_path / "m", det))
    assert loaded.feature_set is None and loaded.feature_names == ["a", "b", "c"]
    np.testing.assert_array_equal(loaded.detector.anomaly_score(X), det.anomaly_score(X))
    assert loaded.detector.threshold_ == det.threshold_
    assert loaded.detector.contamination == 0.1


def test_saving_replaces_files_atomically_and_leaves_no_temporaries(model, tmp_path):
    target = tmp_path / "m"
    model.save(target)
    first = (target / "model.json").read_text()
    model.save(target)
    assert (target / "model.json").read_text() == first
    assert sorted(p.name for p in target.iterdir()) == ["model.json", "model.safetensors"]


def test_unfitted_detector_cannot_be_saved(tmp_path):
    with pytest.raises(Exception, match="not fitted"):
        artifact.save(tmp_path / "m", AnomalyDetector())


def test_array_parameters_are_saved_as_numbers(tmp_path):
    """feature_weights given as a NumPy array was recorded as its str(): unreadable, and now
    refused by the parameter checks."""
    X = np.random.default_rng(0).normal(size=(100, 2))
    det = AnomalyDetector(map_size=(2, 2), epochs=2, feature_weights=np.array([1.0, 2.0])).fit(X)
    loaded = artifact.load(artifact.save(tmp_path / "m", det))
    assert loaded.metadata["params"]["feature_weights"] == [1.0, 2.0]
    np.testing.assert_array_equal(loaded.detector.anomaly_score(X), det.anomaly_score(X))
