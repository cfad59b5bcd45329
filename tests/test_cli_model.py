"""``txanomaly train`` and ``txanomaly score`` through a CLI runner, on real files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from txanomaly.artifact import load
from txanomaly.cli import app
from txanomaly.errors import ModelFileError

runner = CliRunner()


@pytest.fixture(scope="module")
def transactions(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "tx.jsonl"
    result = runner.invoke(app, ["synth", "-o", str(path), "-n", "3000", "--users", "80",
                                 "--days", "10", "--seed", "3", "-q"])
    assert result.exit_code == 0, result.output
    return path


@pytest.fixture(scope="module")
def model_dir(transactions, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("models") / "model"
    result = runner.invoke(app, ["train", str(transactions), "-o", str(out), "--map", "5x5",
                                 "--epochs", "5", "--contamination", "0.02", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert "trained on 3,000 rows" in result.output and "threshold" in result.output
    return out


def test_train_writes_a_loadable_model_with_the_options_given(model_dir):
    loaded = load(model_dir)
    assert loaded.feature_set is not None and loaded.feature_set.name == "standard"
    params = loaded.detector.get_params()
    assert params["map_size"] == "5x5" and params["epochs"] == 5
    assert params["contamination"] == 0.02 and params["random_state"] == 1
    assert loaded.metadata["training_summary"]["rows"] == 3000


def test_train_signs_the_model_with_the_key_file(transactions, tmp_path):
    key = tmp_path / "model.key"
    key.write_text("0123456789abcdef0123456789abcdef\n")
    out = tmp_path / "signed"
    result = runner.invoke(app, ["train", str(transactions), "-o", str(out), "--map", "3x3",
                                 "--epochs", "2", "--feature-set", "seed", "-q",
                                 "--signing-key-file", str(key)])
    assert result.exit_code == 0, result.output
    assert load(out, key="0123456789abcdef0123456789abcdef").feature_set is not None
    with pytest.raises(ModelFileError):
        load(out, key="another key")


def test_train_json_summary(transactions, tmp_path):
    result = runner.invoke(app, ["train", str(transactions), "-o", str(tmp_path / "m"),
                                 "--map", "3x3", "--epochs", "2", "--algorithm", "online",
                                 "--feature-set", "seed", "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["rows"] == 3000 and summary["algorithm"] == "online"
    assert {"quantization_error", "topographic_error", "threshold", "seconds"} <= set(summary)
    assert summary["feature_set"] == "seed"


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_score_writes_scores_and_reasons_in_input_order(transactions, model_dir, tmp_path,
                                                        suffix):
    out = tmp_path / f"scores{suffix}"
    result = runner.invoke(app, ["score", str(transactions), "--model", str(model_dir),
                                 "-o", str(out)])
    assert result.exit_code == 0, result.output
    table = {".csv": pl.read_csv, ".parquet": pl.read_parquet,
             ".jsonl": pl.read_ndjson}[suffix](out)
    ids = [json.loads(line)["transactionId"] for line in transactions.read_text().splitlines()]
    assert table["transaction_id"].to_list() == ids
    assert table.columns[:6] == ["transaction_id", "anomaly_score", "is_anomaly", "risk_level",
                                 "bmu", "reason_1"]
    assert {"reason_3", "reason_3_share", "reason_3_value", "reason_3_prototype"} <= set(
        table.columns)
    threshold = load(model_dir).detector.threshold_
    flagged = table.filter(pl.col("is_anomaly"))
    assert 0 < flagged.height < 0.1 * table.height
    assert (flagged["anomaly_score"] > threshold).all()
    assert (table["reason_1_share"] >= table["reason_2_share"]).all()
    assert table["bmu"].max() < 25


def test_score_reports_rejects(model_dir, transactions, tmp_path):
    src = tmp_path / "mixed.jsonl"
    lines = transactions.read_text().splitlines()[:20]
    bad = json.dumps({"transactionId": "bad", "timestamp": "soon",
                      "destinationAmountDetails": {"transactionAmount": 1}})
    src.write_text("\n".join([*lines[:5], bad, *lines[5:]]) + "\n")
    out = tmp_path / "s.csv"
    result = runner.invoke(app, ["score", str(src), "--model", str(model_dir), "-o", str(out),
                                 "--json", "-q"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["rejected"] == 1
    assert pl.read_csv(out).height == 20
    rejected = (tmp_path / "s.rejects.jsonl").read_text().splitlines()
    assert json.loads(rejected[0])["transactionId"] == "bad"


def test_bad_options_and_bad_models_fail_clearly(transactions, model_dir, tmp_path):
    result = runner.invoke(app, ["train", str(transactions), "-o", str(tmp_path / "m"),
                                 "--map", "ten"])
    assert result.exit_code == 2 and "map_size" in result.output
    result = runner.invoke(app, ["score", str(transactions), "--model", str(tmp_path / "none"),
                                 "-o", str(tmp_path / "s.csv")])
    assert result.exit_code == 1 and "no such model directory" in result.output
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    for name in ("model.json", "model.safetensors"):
        (tampered / name).write_bytes((model_dir / name).read_bytes())
    (tampered / "model.safetensors").write_bytes(b"x" * 64)
    result = runner.invoke(app, ["score", str(transactions), "--model", str(tampered),
                                 "-o", str(tmp_path / "s.csv")])
    assert result.exit_code == 1 and "SHA-256" in result.output
    result = runner.invoke(app, ["score", str(transactions), "--model", str(model_dir),
                                 "-o", str(tmp_path / "s.txt")])
    assert result.exit_code == 2


def test_help_shows_examples():
    for command in ("train", "score"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0 and f"txanomaly {command} " in result.output


def test_all_rejected_input(model_dir, tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_text(json.dumps({"transactionId": "bad", "timestamp": "soon",
                               "destinationAmountDetails": {"transactionAmount": 1}}) + "\n")
    result = runner.invoke(app, ["score", str(src), "--model", str(model_dir),
                                 "-o", str(tmp_path / "s.parquet")])
    assert result.exit_code == 0, result.output
    assert pl.read_parquet(tmp_path / "s.parquet").columns[:2] == ["transaction_id",
                                                                  "anomaly_score"]
    result = runner.invoke(app, ["train", str(src), "-o", str(tmp_path / "m")])
    assert result.exit_code == 1 and "training needs at least 2" in result.output


def test_chunked_train_and_score_equal_the_whole_table_in_memory(transactions, model_dir,
                                                                  tmp_path):
    """Chunk borders change nothing: the model equals TransactionModel.fit on the whole
    feature table bit for bit, and the scores equal score_frame's."""
    from txanomaly.detector import AnomalyDetector
    from txanomaly.features.batch import compute_features
    from txanomaly.features.roles import resolve_counterparty
    from txanomaly.io import read_transactions
    from txanomaly.pipeline import TransactionModel

    chunked = tmp_path / "chunked"
    result = runner.invoke(app, ["train", str(transactions), "-o", str(chunked), "--map", "5x5",
                                 "--epochs", "5", "--contamination", "0.02", "--seed", "1",
                                 "--chunk-rows", "700", "-q"])
    assert result.exit_code == 0, result.output
    frame = read_transactions(transactions)
    fs, _ = resolve_counterparty("standard", frame, "auto")
    memory = TransactionModel(fs, AnomalyDetector(map_size="5x5", epochs=5, contamination=0.02,
                                                  random_state=1)).fit(
        compute_features(frame, fs).select(fs.names))
    for path in (chunked, model_dir):
        loaded = TransactionModel.load(path)
        assert loaded.feature_set_ == memory.feature_set_
        assert np.array_equal(loaded.detector_.som_.weights.numpy(),
                              memory.detector_.som_.weights.numpy())
        assert loaded.threshold == memory.threshold
    out = tmp_path / "s.parquet"
    result = runner.invoke(app, ["score", str(transactions), "--model", str(chunked), "-o",
                                 str(out), "--chunk-rows", "512", "-q"])
    assert result.exit_code == 0, result.output
    expected = memory.score_frame(compute_features(frame, fs))
    assert pl.read_parquet(out).equals(expected)


def test_train_on_a_sample(transactions, tmp_path):
    result = runner.invoke(app, ["train", str(transactions), "-o", str(tmp_path / "m"),
                                 "--map", "4x4", "--epochs", "3", "--sample", "1000", "--json",
                                 "-q"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["sample"] == 1000 and summary["rows"] == 3000
    assert summary["map_rows"] == 1000
    meta = load(tmp_path / "m").metadata["training_summary"]
    assert meta["rows"] == 3000 and meta["map_rows"] == 1000


def test_sample_auto_trains_on_every_row_below_the_cap_and_a_sample_above(
        transactions, tmp_path, monkeypatch):
    from txanomaly import detector

    assert detector.auto_sample(1_000_000, 100) is None
    assert detector.auto_sample(1_000_001, 100) == 1_000_000
    assert detector.auto_sample(5_000_000, 30 * 30) is None  # 10,000 a unit: 9M
    assert detector.auto_sample(10_000_000, 30 * 30) == 9_000_000
    assert detector.auto_sample(50_000_000, 40 * 40) == 16_000_000

    def train(name: str, *options: str) -> tuple[dict, str]:
        result = runner.invoke(app, ["train", str(transactions), "-o", str(tmp_path / name),
                                     "--map", "4x4", "--epochs", "3", *options])
        assert result.exit_code == 0, result.output
        return load(tmp_path / name).metadata["training_summary"], result.output

    # 3,000 rows, below the cap: "auto" (the default) is every row, the same model as "all".
    auto, printed = train("auto")
    every, _ = train("all", "--sample", "all")
    assert auto["map_rows"] == every["map_rows"] == 3000 and "uniform sample" not in printed
    assert (tmp_path / "auto" / "model.safetensors").read_bytes() == (
        tmp_path / "all" / "model.safetensors").read_bytes()
    # Above the cap (lowered for the test), the map trains on a sample of the cap's rows
    # and says so; the threshold still comes from every row.
    monkeypatch.setattr(detector, "AUTO_SAMPLE_ROWS", 1200)
    monkeypatch.setattr(detector, "AUTO_SAMPLE_PER_UNIT", 10)
    capped, printed = train("capped")
    assert capped["rows"] == 3000 and capped["map_rows"] == 1200
    assert "on a uniform sample of 1,200" in " ".join(printed.split())
    assert train("asked", "--sample", "1200")[0]["map_rows"] == 1200
    assert (tmp_path / "capped" / "model.safetensors").read_bytes() == (
        tmp_path / "asked" / "model.safetensors").read_bytes()
    for bad in ("1", "some", "-5"):
        result = runner.invoke(app, ["train", str(transactions), "-o", str(tmp_path / "x"),
                                     "--sample", bad])
        assert result.exit_code != 0 and "--sample" in result.output


def test_score_keeps_the_input_order_of_a_file_not_in_time_order(transactions, model_dir,
                                                                   tmp_path):
    from txanomaly.features.batch import compute_features
    from txanomaly.io import read_transactions, write_table
    from txanomaly.pipeline import TransactionModel

    shuffled = read_transactions(transactions).sample(fraction=1.0, shuffle=True, seed=4)
    src = write_table(shuffled, tmp_path / "shuffled.csv")
    out = tmp_path / "s.csv"
    result = runner.invoke(app, ["score", str(src), "--model", str(model_dir), "-o", str(out),
                                 "--chunk-rows", "1000", "-q"])
    assert result.exit_code == 0, result.output
    model = TransactionModel.load(model_dir)
    expected = model.score_frame(compute_features(read_transactions(src), model.feature_set_))
    got = pl.read_csv(out)
    assert got["transaction_id"].to_list() == shuffled["transaction_id"].to_list()
    assert np.allclose(got["anomaly_score"].to_numpy(), expected["anomaly_score"].to_numpy(),
                       rtol=1e-12)
    assert got["reason_1"].equals(expected["reason_1"])
