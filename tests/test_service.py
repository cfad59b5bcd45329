"""The REST API in process (real SQLite file, real model): verdicts, idempotency, bad input,
limits, auth, SageMaker routes, and the stream property against the batch engine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient

from service_fixtures import API_KEY, assert_close, model, model_dir, raw_records, stream
from txanomaly.errors import TxAnomalyError
from txanomaly.features.batch import feature_matrix
from txanomaly.pipeline import TransactionModel
from txanomaly.scoring import Scorer
from txanomaly.service import Settings, create_app
from txanomaly.service.settings import SettingsError, is_loopback

__all__ = ["model", "model_dir", "stream"]  # fixtures, imported for pytest

VERDICT_FIELDS = {"transactionId", "anomalyScore", "isAnomaly", "verdict", "riskLevel",
                  "threshold", "reasons", "modelVersion"}


def make_client(model_dir: Path, tmp_path: Path, **overrides: Any) -> TestClient:
    # Without a key the app serves data only when told so (the auth tests give a key).
    overrides = {"allow_unauthenticated": True, **overrides}
    settings = Settings(model_dir=model_dir, db_url=f"sqlite:///{tmp_path}/api.db", **overrides)
    return TestClient(create_app(settings), raise_server_exceptions=False)


@pytest.fixture
def client(model_dir: Path, tmp_path: Path) -> Iterator[TestClient]:
    with make_client(model_dir, tmp_path, max_batch=50, max_body_bytes=64_000) as c:
        yield c


@pytest.fixture(scope="module")
def records(stream: pl.DataFrame) -> list[dict[str, Any]]:
    return raw_records(stream)


def tx(i: int = 0, **kw: Any) -> dict[str, Any]:
    base = {"transactionId": f"t{i}", "timestamp": 1_700_000_000_000 + i * 1000,
            "originUserId": "u1", "destinationUserId": "u2",
            "originAmountDetails": {"transactionAmount": 10.0 + i,
                                    "transactionCurrency": "EUR"}}
    return {**base, **kw}


def stored_count(client: TestClient) -> float:
    text = client.get("/metrics").text
    line = next((ln for ln in text.splitlines()
                 if ln.startswith('txanomaly_transactions_total{outcome="stored"}')), None)
    return float(line.split()[-1]) if line else 0.0


# ---------------------------------------------------------------------------- verdicts
def test_single_transaction_gets_a_full_verdict_and_is_stored(client: TestClient):
    r = client.post("/v1/transactions", json=tx())
    assert r.status_code == 200
    body = r.json()
    assert set(body) == VERDICT_FIELDS
    assert body["verdict"] == ("FLAG" if body["isAnomaly"] else "ALLOW")
    assert body["isAnomaly"] == (body["anomalyScore"] > body["threshold"])
    assert body["riskLevel"] in {"LOW", "MEDIUM", "HIGH", "CRITICAL"}
    assert len(body["reasons"]) == 3
    assert set(body["reasons"][0]) == {"feature", "share", "value", "prototype"}
    got = client.get("/v1/transactions/t0").json()
    assert {k: got[k] for k in VERDICT_FIELDS} == body
    assert got["timestamp"] == tx()["timestamp"]
    assert got["transaction"]["originUserId"] == "u1"


def test_batch_answers_one_verdict_per_item_in_order(client: TestClient):
    r = client.post("/v1/transactions", json=[tx(i) for i in range(5)])
    assert r.status_code == 200
    assert [v["transactionId"] for v in r.json()] == [f"t{i}" for i in range(5)]
    counts = client.get("/v1/transactions/t4").json()["features"]["origin_count_24h"]
    assert counts == 5.0  # the batch is a stream: each item saw the earlier ones


def test_repeat_returns_the_stored_verdict_and_changes_no_state(client: TestClient):
    first = client.post("/v1/transactions", json=tx()).json()
    before = client.get("/v1/transactions/t0").json()
    again = client.post("/v1/transactions", json=tx())
    assert again.status_code == 200 and again.json() == first
    nxt = client.post("/v1/transactions", json=tx(1)).json()
    features = client.get("/v1/transactions/t1").json()["features"]
    assert features["origin_count_24h"] == 2.0  # t0 counted once, not twice
    assert client.get("/v1/transactions/t0").json() == before
    assert nxt["transactionId"] == "t1" and stored_count(client) == 2


def test_same_id_with_different_content_is_409_and_stores_nothing(client: TestClient):
    client.post("/v1/transactions", json=tx())
    r = client.post("/v1/transactions", json=[tx(1), tx(0, originUserId="other")])
    assert r.status_code == 409
    assert r.json()["errors"][0] == {"index": 1, "transactionId": "t0",
                                     "field": "transactionId",
                                     "message": "already used with different content"}
    assert client.get("/v1/transactions/t1").status_code == 404


def test_unknown_extra_fields_are_kept(client: TestClient):
    client.post("/v1/transactions", json=tx(tags=["vip"], originAmountDetails={
        "transactionAmount": 3.0, "transactionCurrency": "EUR", "bank": "X"}))
    got = client.get("/v1/transactions/t0").json()["transaction"]
    assert got["tags"] == ["vip"] and got["originAmountDetails"]["bank"] == "X"


def test_score_does_not_store(client: TestClient):
    r = client.post("/v1/score", json=[tx(0), tx(1)])
    assert r.status_code == 200 and set(r.json()[1]) == VERDICT_FIELDS
    assert client.get("/v1/transactions/t0").status_code == 404


# ---------------------------------------------------------------------------- bad input
def test_invalid_batch_is_rejected_whole_listing_every_error(client: TestClient):
    bad = [tx(0), tx(1, timestamp="yesterday"),
           tx(2, originAmountDetails={"transactionAmount": -5}), {"foo": 1}]
    r = client.post("/v1/transactions", json=bad)
    assert r.status_code == 422
    errors = r.json()["errors"]
    assert {(e["index"], e["field"]) for e in errors} >= {
        (1, "timestamp"), (2, "originAmountDetails.transactionAmount"), (3, "transactionId"),
        (3, "timestamp")}
    assert errors[0]["transactionId"] == "t1"
    assert client.get("/v1/transactions/t0").status_code == 404  # nothing stored


@pytest.mark.parametrize(("body", "ctype", "status"), [
    (b"{not json", "application/json", 400),
    (b'{"transactionId": "t", "timestamp": 1, "originAmountDetails": '
     b'{"transactionAmount": NaN}}', "application/json", 400),
    (b'{"transactionId": "t", "timestamp": 1, "originAmountDetails": '
     b'{"transactionAmount": 1e999}}', "application/json", 400),
    (b'{"transactionId": "t", "timestamp": 1, "originAmountDetails": '
     b'{"transactionAmount": 1e300}}', "application/json", 422),
    (b'{"transactionId": "t", "timestamp": ' + b"9" * 40 + b', "originAmountDetails": '
     b'{"transactionAmount": 1}}', "application/json", 422),
    (b"[" * 5000 + b"]" * 5000, "application/json", 400),
    (b'{"transactionId": 5, "timestamp": true, "originUserId": {}, "originAmountDetails": '
     b'{"transactionAmount": "12"}}', "application/json", 422),
    (b'{"transactionId": "a\\u0000b", "timestamp": 1, "originAmountDetails": '
     b'{"transactionAmount": 1}}', "application/json", 422),
    (b'"just a string"', "application/json", 422),
    (b"[]", "application/json", 422),
    (b'{"transactionId": "t"}', "text/plain", 415),
    (b'{"transactionId": "t"}', "", 415),
    (b"\xff\xfe\x00", "application/json", 400),
])
def test_bad_input_is_a_4xx_with_the_error_body(client: TestClient, body: bytes, ctype: str,
                                                status: int):
    headers = {"content-type": ctype} if ctype else {}
    for path in ("/v1/transactions", "/v1/score"):
        r = client.post(path, content=body, headers=headers)
        assert r.status_code == status, r.text
        assert set(r.json()) == {"error", "message", "errors"}
        assert "Traceback" not in r.text


def test_body_and_batch_limits_are_413(client: TestClient):
    r = client.post("/v1/transactions", json=[tx(i) for i in range(51)])
    assert r.status_code == 413 and "limit is 50" in r.json()["message"]
    big = tx(note="x" * 70_000)
    assert client.post("/v1/transactions", json=big).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        yield b'{"transactionId": "t", "note": "'
        for _ in range(100):
            yield b"y" * 1000
        yield b'"}'

    r = client.post("/v1/transactions", content=chunks(),
                    headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_unknown_route_and_method_are_json_4xx(client: TestClient):
    assert client.get("/v2/nothing").status_code == 404
    r = client.delete("/v1/transactions")
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"


# ---------------------------------------------------------------------------- reading
def test_anomalies_by_time_range_with_cursor_pagination(client: TestClient,
                                                        records: list[dict[str, Any]]):
    verdicts = []
    for start in range(0, len(records), 50):
        verdicts += client.post("/v1/transactions", json=records[start:start + 50]).json()
    all_flagged = [v["transactionId"] for v in verdicts if v["isAnomaly"]]
    assert len(all_flagged) >= 3, "the fixture stream should contain flagged transactions"
    pages, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/v1/anomalies", params=params).json()
        pages.extend(item["transactionId"] for item in page["items"])
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert pages == all_flagged
    first = client.get(f"/v1/transactions/{all_flagged[1]}").json()["timestamp"]
    window = client.get("/v1/anomalies", params={"from": first, "to": first + 1}).json()
    assert [item["transactionId"] for item in window["items"]] == [all_flagged[1]]
    assert client.get("/v1/anomalies", params={"cursor": "!!"}).status_code == 422
    assert client.get("/v1/anomalies", params={"from": "soon"}).status_code == 422
    assert client.get("/v1/anomalies", params={"limit": 0}).status_code == 422


def test_model_health_readiness_metrics(client: TestClient, model_dir: Path):
    info = client.get("/v1/model").json()
    assert info["featureSet"] == "standard" and len(info["featureNames"]) == 24
    assert info["modelVersion"].startswith("standard-")
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    client.post("/v1/transactions", json=tx())
    metrics = client.get("/metrics").text
    assert 'txanomaly_http_requests_total{method="POST",route="/v1/transactions",status="200"}' \
        in metrics
    assert "txanomaly_ready 1.0" in metrics
    assert client.get("/openapi.json").json()["paths"]["/v1/transactions"]["post"]


# ---------------------------------------------------------------------------- auth
def test_binding_beyond_loopback_needs_an_api_key(model_dir: Path, tmp_path: Path):
    with pytest.raises(SettingsError, match="API key"):
        create_app(Settings(model_dir=model_dir, host="0.0.0.0"))
    assert is_loopback("::1") and not is_loopback("10.0.0.5")


def test_api_key_is_checked_when_configured(model_dir: Path, tmp_path: Path):
    with make_client(model_dir, tmp_path, host="0.0.0.0", api_keys=(API_KEY,)) as c:
        assert c.post("/v1/transactions", json=tx()).status_code == 401
        wrong = c.post("/v1/transactions", json=tx(), headers={"X-API-Key": "nope"})
        assert wrong.status_code == 401 and wrong.json()["error"] == "unauthorized"
        ok = c.post("/v1/transactions", json=tx(), headers={"X-API-Key": API_KEY})
        assert ok.status_code == 200
        assert c.get("/v1/model").status_code == 401
        assert c.get("/healthz").status_code == 200  # probes stay open
        assert c.post("/invocations", content=b"1", headers={"content-type": "text/csv"}
                      ).status_code == 401


# ---------------------------------------------------------------------------- SageMaker
def test_sagemaker_ping_and_csv_invocations(client: TestClient, model: TransactionModel,
                                            stream: pl.DataFrame):
    assert client.get("/ping").status_code == 200
    X_all = feature_matrix(stream, "standard")
    # 45 rows (within the 64 kB body limit), some of them flagged.
    X = np.vstack([X_all[:40], X_all[model.is_anomaly(X_all)][:5]])
    flags = model.is_anomaly(X)
    assert flags.any()
    csv = "\n".join(",".join(repr(float(v)) for v in row) for row in X)
    r = client.post("/invocations", content=csv, headers={"content-type": "text/csv"})
    assert r.status_code == 200
    assert r.json() == [{"anomaly_index": int(i)} for i in np.flatnonzero(flags)]
    header = ",".join(model.feature_names) + "\n"
    with_header = client.post("/invocations", content=header + csv,
                              headers={"content-type": "text/csv; charset=utf-8"})
    assert with_header.json() == r.json()
    bad = client.post("/invocations", content="1,2\nx", headers={"content-type": "text/csv"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["index"] == 0
    nan = ",".join(["nan"] * len(model.feature_names))
    assert client.post("/invocations", content=nan, headers={"content-type": "text/csv"}
                       ).status_code == 422


def test_sagemaker_json_invocations_score_like_v1_score(client: TestClient):
    r = client.post("/invocations", json=[tx(0), tx(1)])
    assert r.json() == client.post("/v1/score", json=[tx(0), tx(1)]).json()
    assert client.post("/invocations", content=b"x", headers={"content-type": "image/png"}
                       ).status_code == 415


def test_sagemaker_mode_without_key_serves_only_the_contract(model_dir: Path, tmp_path: Path):
    with make_client(model_dir, tmp_path, host="0.0.0.0", sagemaker=True) as c:
        assert c.get("/ping").status_code == 200
        assert c.post("/invocations", json=tx()).status_code == 200
        assert c.post("/v1/transactions", json=tx()).status_code == 404


# ---------------------------------------------------------------------------- the property
@pytest.mark.parametrize("chunk", [1, 37])
def test_stream_through_the_api_gives_batch_features_and_scores(
        model_dir: Path, tmp_path: Path, model: TransactionModel, stream: pl.DataFrame,
        records: list[dict[str, Any]], chunk: int):
    """In timestamp order, the API's stored features and scores are the batch engine's and
    the model's batch scores (relative error <= 1e-9)."""
    with make_client(model_dir, tmp_path, max_batch=100) as c:
        scores = []
        for start in range(0, len(records), chunk):
            part = records[start:start + chunk]
            r = c.post("/v1/transactions", json=part if chunk > 1 else part[0])
            assert r.status_code == 200
            out = r.json() if chunk > 1 else [r.json()]
            scores.extend(v["anomalyScore"] for v in out)
        stored = [c.get(f"/v1/transactions/{r['transactionId']}").json() for r in records]
    batch = feature_matrix(stream, "standard")
    online = np.array([[s["features"][n] for n in model.feature_names] for s in stored])
    assert_close(online, batch)
    assert_close(np.array(scores), model.anomaly_score(batch))
    assert [s["isAnomaly"] for s in stored] == model.is_anomaly(batch).tolist()


def test_verdicts_carry_the_models_explanations(model_dir: Path, model: TransactionModel,
                                                stream: pl.DataFrame):
    """A verdict is the model's one scoring path put in JSON: same score, flag, risk level
    and reasons as ``TransactionModel.explain``; non-finite features are refused."""
    scorer = Scorer.load(model_dir)
    X = feature_matrix(stream, "standard")
    verdicts = [s.result for s in scorer.verdicts(X, [None] * len(X))]
    plain = model.explain(X, top=3)
    assert [v["anomalyScore"] for v in verdicts] == [e["anomaly_score"] for e in plain]
    assert [v["reasons"] for v in verdicts] == [e["reasons"] for e in plain]
    assert [v["isAnomaly"] for v in verdicts] == [e["is_anomaly"] for e in plain]
    assert [v["riskLevel"] for v in verdicts] == [e["risk_level"] for e in plain]
    assert [v["verdict"] == "FLAG" for v in verdicts] == model.is_anomaly(X).tolist()
    with pytest.raises(TxAnomalyError, match="finite"):
        scorer.verdicts(np.full((1, X.shape[1]), np.nan), [None])
