"""Fuzz the routes by hand-written strategies (Hypothesis), beyond what the OpenAPI document
lets schemathesis generate: raw bodies (hostile JSON, repeated keys, deep nesting, NUL, any
value in any field), path parameters, query parameters and the cursor decoder. Whatever is
sent, the answer is a 2xx, or a 4xx in the standard error body; a 422 names the field.
Real SQLite file and real PostgreSQL (where NUL and integer ranges bite)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from service_fixtures import model_dir, postgres_url, unique_schema
from txanomaly.schema.rules import MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS
from txanomaly.service import Settings, create_app
from txanomaly.service.errors import ApiError
from txanomaly.service.routers.anomalies import decode_cursor
from txanomaly.service.runtime import Runtime

__all__ = ["model_dir"]  # the fixture, imported for pytest

# Bounded so that the file runs in seconds; raise locally to search harder.
FUZZ = settings(max_examples=40, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

ROUTES = ["/v1/transactions", "/v1/score", "/invocations"]
KNOWN = ["transactionId", "timestamp", "type", "transactionState", "originUserId",
         "destinationUserId", "originAmountDetails", "destinationAmountDetails",
         "originPaymentDetails", "destinationPaymentDetails"]
AMOUNT_KEYS = ["transactionAmount", "transactionCurrency", "country", "method"]

# Any text JSON can carry (NUL and the other controls included; no lone surrogates).
text = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
edge_ints = st.sampled_from([0, -1, 2**63 - 1, 2**63, 2**64, -(2**63) - 1,
                             MAX_TIMESTAMP_MS, MAX_TIMESTAMP_MS - 1, 10**30])
scalars = (st.none() | st.booleans() | st.integers() | edge_ints
           | st.floats(allow_nan=False, allow_infinity=False) | text)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(text, inner, max_size=4), max_leaves=12)


def dumps(value: Any) -> bytes:
    """JSON text of any drawn value (the standard library's: orjson refuses integers beyond
    64 bits, which clients may well send)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def valid(i: int) -> dict[str, Any]:
    return {"transactionId": f"f{i}", "timestamp": 1_700_000_000_000 + i, "originUserId": "u1",
            "originAmountDetails": {"transactionAmount": 5.0, "transactionCurrency": "EUR"}}


@st.composite
def transactions(draw: st.DrawFn) -> dict[str, Any]:
    """A valid transaction with some of its fields (known, nested or new) set to anything."""
    record = valid(draw(st.integers(0, 10**6)))
    for key in draw(st.lists(st.sampled_from(KNOWN) | text, max_size=4)):
        record[key] = draw(json_values)
    if draw(st.booleans()):
        details = record.get("originAmountDetails")
        details = dict(details) if isinstance(details, dict) else {}
        details[draw(st.sampled_from(AMOUNT_KEYS) | text)] = draw(json_values)
        record["originAmountDetails"] = details
    return record


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """A request body: a transaction or a list, then perhaps made hostile."""
    payload: Any = draw(st.lists(transactions(), min_size=0, max_size=3) | transactions()
                        | json_values)
    body = dumps(payload)
    how = draw(st.sampled_from(["as is", "repeat a key", "nest deep", "cut", "bytes"]))
    if how == "repeat a key" and body.startswith(b"{") and len(body) > 2:
        body = body.replace(b"{", b'{"transactionId":"dup",', 1)
    elif how == "nest deep":
        # Around the limits: the rule's 128, orjson's 254 (writing) and 1,024 (reading).
        depth = draw(st.sampled_from([127, 128, 253, 254, 255, 1023, 1024])
                     | st.integers(1, 1100))
        at = body.find(b"{") + 1  # into the first object, else around the whole body
        body = (body[:at] + b'"deep":' + b"[" * depth + b"]" * depth + b"," + body[at:]
                if at else b"[" * depth + body + b"]" * depth)
    elif how == "cut":
        body = body[:draw(st.integers(0, len(body)))]
    elif how == "bytes":
        body = draw(st.binary(max_size=64))
    return body


def check_answer(status: int, content_type: str | None, body: bytes) -> None:
    """2xx, or 4xx with the standard error body; a 422 names the field of each error."""
    event(f"status {status}")  # --hypothesis-show-statistics shows the mix
    assert status < 500, body[:2000]
    assert content_type is not None and content_type.startswith("application/json"), body
    if status >= 400:
        error = orjson.loads(body)
        assert set(error) == {"error", "message", "errors"}, error
        if status == 422:
            assert error["errors"] and all(e.get("field") for e in error["errors"]), error


@pytest.fixture(scope="module",
                params=[pytest.param("postgresql", marks=pytest.mark.postgres), "sqlite"])
def client(request: pytest.FixtureRequest, model_dir: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    if request.param == "postgresql":
        cfg = Settings(model_dir=model_dir, db_url=postgres_url(), db_schema=unique_schema(),
                       allow_unauthenticated=True, max_batch=5, max_body_bytes=200_000)
    else:
        db = tmp_path_factory.mktemp("fuzz-routes") / "fuzz.db"
        cfg = Settings(model_dir=model_dir, db_url=f"sqlite:///{db}",
                       allow_unauthenticated=True, max_batch=5, max_body_bytes=200_000)
    runtime = Runtime.open(cfg)
    try:
        yield TestClient(create_app(cfg, runtime=runtime), raise_server_exceptions=False)
    finally:
        if runtime.store.dialect == "postgresql":
            runtime.store.drop_tables()
        runtime.close()


@FUZZ
@given(route=st.sampled_from(ROUTES), body=bodies())
def test_any_body_is_answered_2xx_or_4xx_naming_the_field(client: TestClient, route: str,
                                                         body: bytes):
    r = client.post(route, content=body, headers={"content-type": "application/json"})
    check_answer(r.status_code, r.headers.get("content-type"), r.content)


csv_cells = st.sampled_from(["1", "-0", "1e308", "1e309", "nan", "inf", "", " ", "x", "\x00",
                             "0x10", "1_000", "٣"]) | st.floats().map(repr) | text
# Rows of any cells, or of numbers only around the model's width (its 24 features).
csv_rows = (st.lists(csv_cells, max_size=25)
            | st.lists(st.floats(allow_nan=False).map(repr), min_size=23, max_size=25))
csv_bodies = st.lists(csv_rows.map(",".join), max_size=5).map(
    lambda rows: "\n".join(rows).encode()) | st.binary(max_size=64)


@FUZZ
@given(body=csv_bodies, content_type=st.sampled_from(
    ["text/csv", "text/csv; charset=utf-8", "TEXT/CSV", "text/plain", "", "application/json;x"]))
def test_any_invocations_csv_body_is_answered_2xx_or_4xx(client: TestClient, body: bytes,
                                                        content_type: str):
    r = client.post("/invocations", content=body, headers={"content-type": content_type})
    check_answer(r.status_code, r.headers.get("content-type"), r.content)


@FUZZ
@given(tid=text | st.sampled_from(["a/b", "/", "%00", "..", "a/../b", "x" * 300]))
def test_any_transaction_id_path_is_answered_2xx_or_4xx(client: TestClient, tid: str):
    r = client.get(f"/v1/transactions/{quote(tid, safe='/')}")
    check_answer(r.status_code, r.headers.get("content-type"), r.content)
    # 405: an id of dot segments, which the client folds into the collection's path.
    assert r.status_code in (200, 404, 405, 422)


def cursor_of(value: Any) -> str:
    return base64.urlsafe_b64encode(dumps(value)).decode()


cursors = st.one_of(st.builds(lambda ts, tid: cursor_of([ts, tid]), edge_ints | st.integers(),
                              text | st.sampled_from(["\x00", "a\x00", "x" * 257])),
                    st.builds(cursor_of, json_values), text)


@FUZZ
@given(start=st.none() | text | edge_ints.map(str), end=st.none() | text | edge_ints.map(str),
       limit=st.none() | st.integers(-5, 2000).map(str) | text, cursor=st.none() | cursors)
def test_any_anomalies_query_is_answered_2xx_or_4xx(client: TestClient, start: str | None,
                                                     end: str | None, limit: str | None,
                                                     cursor: str | None):
    params = {k: v for k, v in {"from": start, "to": end, "limit": limit,
                                "cursor": cursor}.items() if v is not None}
    r = client.get("/v1/anomalies", params=params)
    check_answer(r.status_code, r.headers.get("content-type"), r.content)


@settings(max_examples=300, deadline=None, database=None)
@given(cursor=cursors)
def test_cursor_decoder_returns_values_within_the_input_rules_or_422(cursor: str):
    try:
        ts, tid = decode_cursor(cursor)
    except ApiError as exc:
        assert exc.status == 422
        assert [e["field"] for e in exc.errors] == ["cursor"]
        return
    assert MIN_TIMESTAMP_MS <= ts < MAX_TIMESTAMP_MS and type(ts) is int
    assert isinstance(tid, str) and 0 < len(tid) <= 256 and "\x00" not in tid


@settings(max_examples=100, deadline=None, database=None)
@given(ts=st.integers(MIN_TIMESTAMP_MS, MAX_TIMESTAMP_MS - 1),
       tid=st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"),
                   min_size=1, max_size=256))
def test_cursor_of_any_storable_row_decodes_to_itself(ts: int, tid: str):
    assert decode_cursor(cursor_of([ts, tid])) == (ts, tid)
