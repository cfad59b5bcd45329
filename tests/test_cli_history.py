"""``txanomaly history load``: after loading a history file, the service answers exactly what
batch scoring of the history and the new transactions gives; without it, it does not."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import polars as pl
import pytest
from typer.testing import CliRunner

from service_fixtures import assert_close, model, model_dir, raw_records
from test_service import make_client
from txanomaly.cli import app
from txanomaly.features.batch import feature_matrix
from txanomaly.pipeline import TransactionModel
from txanomaly.synth import generate

__all__ = ["model", "model_dir"]  # fixtures, imported for pytest

runner = CliRunner()


@pytest.fixture(scope="module")
def log() -> pl.DataFrame:
    """Six days of transactions in timestamp order: the first 260 are the history."""
    frame = generate(300, users=15, days=6, anomaly_rate=0.03, seed=21).transactions
    return frame.sort("timestamp", maintain_order=True)


def write_history(frame: pl.DataFrame, path: Path) -> Path:
    """The history as raw JSON, in a shuffled order (the command must put it in time order)."""
    shuffled = frame.sample(fraction=1.0, shuffle=True, seed=4)
    path.write_bytes(orjson.dumps(raw_records(shuffled)))
    return path


def load(history: Path, model_dir: Path, db: str, *extra: str) -> Any:
    return runner.invoke(app, ["history", "load", str(history), "--model", str(model_dir),
                               "--db", db, *extra])


def post_new(model_dir: Path, tmp_path: Path, new: pl.DataFrame
             ) -> tuple[np.ndarray, np.ndarray]:
    """POST the new transactions one by one to an app on ``tmp_path/api.db``; their scores
    and stored features."""
    scores, features = [], []
    with make_client(model_dir, tmp_path) as client:
        names = client.get("/v1/model").json()["featureNames"]
        for rec in raw_records(new):
            r = client.post("/v1/transactions", json=rec)
            assert r.status_code == 200, r.text
            scores.append(r.json()["anomalyScore"])
            stored = client.get(f"/v1/transactions/{rec['transactionId']}").json()
            features.append([stored["features"][n] for n in names])
    return np.array(scores), np.array(features)


def test_after_loading_the_history_the_service_answers_batch_scoring(
        model_dir: Path, model: TransactionModel, log: pl.DataFrame, tmp_path: Path):
    history, new = log.head(260), log.tail(40)
    loaded = tmp_path / "loaded"
    loaded.mkdir()
    result = load(write_history(history, tmp_path / "h.json"), model_dir,
                  f"sqlite:///{loaded}/api.db")
    assert result.exit_code == 0, result.output
    assert "260 stored, 0 replayed" in result.output

    scores, features = post_new(model_dir, loaded, new)
    batch = feature_matrix(log, model.feature_set_)[-len(new):]
    assert_close(features, batch)
    assert_close(scores, model.anomaly_score(batch))

    # Why it matters: on a database without the history, users look new, and the verdicts
    # of the same transactions are not batch scoring's.
    empty = tmp_path / "empty"
    empty.mkdir()
    cold_scores, cold_features = post_new(model_dir, empty, new)
    assert not np.allclose(cold_features, batch, rtol=1e-9)
    assert not np.allclose(cold_scores, scores, rtol=1e-9)


def test_loading_again_replays_and_changes_nothing(model_dir: Path, log: pl.DataFrame,
                                                   tmp_path: Path):
    history = write_history(log.head(50), tmp_path / "h.json")
    db = f"sqlite:///{tmp_path}/api.db"
    first = load(history, model_dir, db, "--batch-size", "7", "--json")
    again = load(history, model_dir, db, "--json", "--quiet")
    assert first.exit_code == 0 and again.exit_code == 0, first.output + again.output
    one, two = json.loads(first.stdout), json.loads(again.stdout)
    assert (one["stored"], one["replayed"]) == (50, 0)
    assert (two["stored"], two["replayed"], two["flagged"]) == (0, 50, 0)
    with make_client(model_dir, tmp_path) as client:  # a transaction of the file: a replay
        rec = raw_records(log.head(1))[0]
        stored = client.get(f"/v1/transactions/{rec['transactionId']}").json()
        r = client.post("/v1/transactions", json=rec)
        assert r.status_code == 200
        assert r.json() == {k: stored[k] for k in r.json()}


def test_rejects_are_written_next_to_the_input_and_the_rest_loaded(model_dir: Path,
                                                                    tmp_path: Path):
    good = {"transactionId": "g", "timestamp": 1_700_000_000_000, "originUserId": "u",
            "originAmountDetails": {"transactionAmount": 5.0}}
    bad = {"transactionId": "b", "timestamp": "soon"}
    history = tmp_path / "h.json"
    history.write_text(json.dumps([good, bad]))
    result = load(history, model_dir, f"sqlite:///{tmp_path}/api.db")
    assert result.exit_code == 0, result.output
    assert "1 rejected" in result.output and "1 stored" in result.output
    assert json.loads((tmp_path / "h.rejects.jsonl").read_text())["transactionId"] == "b"


def test_errors_are_one_line_and_exit_1(model_dir: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch):
    history = tmp_path / "h.json"
    result = load(history, model_dir, f"sqlite:///{tmp_path}/x.db")
    assert result.exit_code == 1 and "no such file" in result.output
    history.write_text("[]")
    result = load(history, model_dir, "mysql://localhost/db")
    assert result.exit_code == 1 and "sqlite:///PATH or postgresql://" in result.output
    result = load(history, model_dir, f"sqlite:///{tmp_path}/x.db", "--engine", "dask")
    assert result.exit_code == 2 and "local, spark" in result.output  # a usage error
    # Without the [serve] extra (SQLAlchemy), one line says what to install.
    monkeypatch.setitem(sys.modules, "sqlalchemy", None)
    monkeypatch.delitem(sys.modules, "txanomaly.storage.sql", raising=False)
    result = load(history, model_dir, f"sqlite:///{tmp_path}/x.db")
    assert result.exit_code == 1
    assert "pip install 'txanomaly[serve]'" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "x.db").exists()
