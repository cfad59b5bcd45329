"""Risk directions and counterparty roles: declared in the spec, used by the score and the
reasons, detected from data, saved in the model (issue 11)."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from txanomaly.cli import app
from txanomaly.detector import AnomalyDetector
from txanomaly.errors import ModelFileError, TxAnomalyError
from txanomaly.features.roles import detect_counterparty, resolve_counterparty
from txanomaly.features.spec import STANDARD, Feature, FeatureSet
from txanomaly.io import write_table
from txanomaly.pipeline import TransactionModel
from txanomaly.synth import generate


def data(n: int = 400) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.column_stack([rng.normal(0, 1, n), rng.normal(5, 2, n)])


def one_unit(directions: list[int] | None) -> AnomalyDetector:
    return AnomalyDetector(map_size="1x1", epochs=3, scaling="standard",
                           feature_directions=directions).fit(data())


def test_only_the_risky_side_of_a_deviation_counts():
    plain, up = one_unit(None), one_unit([0, 1])
    centre = plain.center_
    above = np.array([[centre[0], centre[1] + 4 * plain.scale_[1]]])
    below = np.array([[centre[0], centre[1] - 4 * plain.scale_[1]]])
    # Above the prototype: the same distance as without a direction; below: nothing counts.
    assert up.anomaly_score(above)[0] == pytest.approx(plain.anomaly_score(above)[0], rel=1e-6)
    assert plain.anomaly_score(below)[0] > 3.9
    assert up.anomaly_score(below)[0] < 0.05
    down = one_unit([0, -1])
    assert down.anomaly_score(below)[0] == pytest.approx(plain.anomaly_score(below)[0],
                                                         rel=1e-6)
    assert down.anomaly_score(above)[0] < 0.05


def test_explanations_share_out_the_directed_score_and_agree_with_it_exactly():
    det = AnomalyDetector(map_size="3x3", epochs=3, feature_directions=[1, -1]).fit(data())
    rows = np.array([[3.0, 9.0], [-3.0, 1.0], [0.0, 5.0]])
    exp = det.explain(rows)
    np.testing.assert_array_equal(exp.anomaly_score, det.anomaly_score(rows))
    proto = exp.prototype
    # A feature on the safe side of its prototype has no share of the score.
    safe = ((rows - proto) * np.array([1, -1])) <= 0
    assert np.all(exp.share[safe] == 0.0)
    sums = exp.share.sum(1)
    assert np.all((np.abs(sums - 1) < 1e-9) | (sums == 0))
    # The training threshold is on the same directed score.
    assert det.threshold_ == pytest.approx(np.quantile(det.anomaly_score(data()), 0.95),
                                           rel=1e-6)


@pytest.mark.parametrize("directions", [[1, 2], [1, "up"], [[1, 0]], [0.5, 1]])
def test_bad_directions_are_rejected_naming_the_parameter(directions):
    with pytest.raises(ValueError, match="feature_directions"):
        AnomalyDetector(feature_directions=directions).fit(data())


def test_wrong_number_of_directions_is_rejected():
    with pytest.raises(ValueError, match="feature_directions has 3"):
        AnomalyDetector(feature_directions=[1, 0, 1]).fit(data())


def test_a_feature_declares_a_known_direction():
    with pytest.raises(TxAnomalyError, match="direction must be one of"):
        Feature("a", "amount", direction="sideways")
    with pytest.raises(TxAnomalyError, match="merchant_direction must be one of"):
        Feature("a", "amount", merchant_direction="left")


def test_the_standard_set_declares_directions_per_counterparty_role():
    person, merchant = (STANDARD.for_counterparty(r) for r in ("person", "merchant"))
    direction = {fs.counterparty: dict(zip(fs.names, fs.directions or [], strict=True))
                 for fs in (person, merchant)}
    for role, count, gap in (("person", 1, -1), ("merchant", -1, 1)):
        assert direction[role]["destination_count_1h"] == count
        assert direction[role]["destination_log_seconds_since_prev"] == gap
        assert direction[role]["origin_count_1h"] == 1  # the payer's burst is risky in both
        assert direction[role]["origin_log_amount_zscore"] == 1
        assert direction[role]["hour_sin"] == 0
    assert all(f.merchant_direction is None for f in merchant.features)
    with pytest.raises(TxAnomalyError, match="already resolved"):
        merchant.for_counterparty("person")
    assert FeatureSet.from_dict(merchant.to_dict()) == merchant


def test_merchants_are_detected_when_destinations_never_pay():
    card = generate(3_000, users=100, days=10, domain="card_terminal", seed=1).transactions
    aml = generate(3_000, users=100, days=10, domain="aml", seed=1).transactions
    assert detect_counterparty(card).role == "merchant"
    assert detect_counterparty(card).share == 0.0
    assert detect_counterparty(aml).role == "person"
    assert detect_counterparty(aml).share > 0.5
    # The user's choice wins over detection; a set without role-dependent directions is kept.
    fs, evidence = resolve_counterparty("standard", card, "person")
    assert fs.counterparty == "person" and evidence is not None
    assert resolve_counterparty("seed", card)[0].counterparty is None
    with pytest.raises(TxAnomalyError, match="counterparty must be one of"):
        resolve_counterparty("standard", card, "shop")


def trained(tmp_path, domain: str = "card_terminal") -> tuple[TransactionModel, np.ndarray]:
    from txanomaly.features.batch import feature_matrix

    frame = generate(4_000, users=100, days=10, domain=domain, seed=2).transactions
    fs, _ = resolve_counterparty("standard", frame)
    X = feature_matrix(frame, fs)
    model = TransactionModel(fs, AnomalyDetector(map_size="4x4", epochs=3)).fit(X)
    model.save(tmp_path / "m")
    return model, X


def test_directions_and_the_role_are_saved_and_give_the_same_scores_after_reload(tmp_path):
    model, X = trained(tmp_path)
    loaded = TransactionModel.load(tmp_path / "m")
    assert loaded.feature_set_.counterparty == "merchant"
    assert loaded.feature_set_ == model.feature_set_
    assert loaded.detector_.feature_directions == model.feature_set_.directions
    np.testing.assert_array_equal(loaded.anomaly_score(X[:500]), model.anomaly_score(X[:500]))


def test_a_model_file_whose_directions_disagree_with_its_feature_set_is_refused(tmp_path):
    trained(tmp_path)
    path = tmp_path / "m" / "model.json"
    meta = json.loads(path.read_text())
    names = meta["feature_names"]
    meta["feature_set"]["features"][names.index("destination_count_1h")]["direction"] = "up"
    path.write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="feature_directions"):
        TransactionModel.load(tmp_path / "m")


def test_a_detector_with_other_directions_than_the_feature_set_is_refused():
    fs = STANDARD.for_counterparty("person")
    X = np.ones((10, len(fs.names)))
    detector = AnomalyDetector(feature_directions=[0] * len(fs.names))
    with pytest.raises(TxAnomalyError, match="declare directions in the feature set"):
        TransactionModel(fs, detector).fit(X)


def test_train_prints_and_saves_the_detected_counterparty(tmp_path):
    result = generate(3_000, users=80, days=10, domain="ecommerce", seed=3)
    data_path = write_table(result.transactions, tmp_path / "tx.jsonl")
    runner = CliRunner()
    out = runner.invoke(app, ["train", str(data_path), "-o", str(tmp_path / "m"), "--map",
                              "3x3", "--epochs", "2", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["counterparty"] == "merchant"
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["feature_set"]["counterparty"] == "merchant"
    forced = runner.invoke(app, ["train", str(data_path), "-o", str(tmp_path / "p"), "--map",
                                 "3x3", "--epochs", "2", "--counterparty", "person"])
    assert forced.exit_code == 0, forced.output
    assert "counterparty: person" in forced.output
    bad = runner.invoke(app, ["train", str(data_path), "-o", str(tmp_path / "x"),
                              "--counterparty", "shop"])
    assert bad.exit_code == 1 and "--counterparty must be one of" in bad.output
    assert not (tmp_path / "x").exists()


def test_detection_ignores_rows_without_ids():
    frame = pl.DataFrame({"origin_user_id": ["a", None, "b", "a", "c"],
                          "destination_user_id": [None, "a", "a", "b", "d"]})
    found = detect_counterparty(frame)
    # 3 of the 4 named payees also pay; 2 of the 3 pairs are paid both ways, against 3 of the
    # 3 x 3 possible pairs occurring: 2 times chance.
    assert (found.role, found.rows, found.share) == ("person", 4, 0.75)
    assert found.reciprocity == pytest.approx(2.0)


def test_customers_and_terminals_numbered_from_one_range_are_still_merchants():
    # Regression: ids such as customer "17" and terminal "17" made half the payees look like
    # payers, and the terminals were taken for persons; no terminal ever pays a customer back.
    frame = generate(6_000, users=150, days=10, domain="card_terminal", seed=4).transactions
    numeric = frame.with_columns(
        pl.col("origin_user_id").str.replace(r"^\D+", ""),
        pl.col("destination_user_id").str.replace(r"^\D+", ""))
    found = detect_counterparty(numeric)
    assert found.share > 0.05  # the ids overlap...
    assert found.reciprocity < 2 and found.role == "merchant"  # ...the pairs do not
    assert "paid both ways" in found.describe()
    # Accounts that pay each other back stay persons.
    assert detect_counterparty(generate(6_000, users=150, days=10, domain="aml",
                                        seed=4).transactions).role == "person"
