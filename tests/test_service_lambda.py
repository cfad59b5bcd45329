"""The AWS Lambda handler (Mangum) with events of the real shapes: API Gateway REST API
(payload 1.0) and Lambda Function URL (payload 2.0)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from service_fixtures import API_KEY, model_dir
from txanomaly.service import lambda_handler
from txanomaly.service.settings import SettingsError

__all__ = ["model_dir"]  # the fixture, imported for pytest

TX = {"transactionId": "lam-1", "timestamp": 1_700_000_000_000, "originUserId": "u1",
      "originAmountDetails": {"transactionAmount": 42.0, "transactionCurrency": "EUR"}}


class Context:
    """The attributes of a real LambdaContext that code may read."""

    function_name = "txanomaly"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:txanomaly"
    memory_limit_in_mb = 1024
    aws_request_id = "6f1c2f1e-0b5e-4a8f-9d1e-1b2c3d4e5f60"
    log_group_name = "/aws/lambda/txanomaly"
    log_stream_name = "2024/01/01/[$LATEST]abcdef"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 30_000


def rest_v1_event(method: str, path: str, body: str | None = None,
                  headers: dict[str, str] | None = None,
                  query: dict[str, str] | None = None) -> dict[str, Any]:
    """An API Gateway REST API proxy event (payload format 1.0)."""
    headers = {"Host": "abc123.execute-api.eu-west-1.amazonaws.com",
               "User-Agent": "curl/8.4.0", "X-Forwarded-For": "203.0.113.7",
               "X-Forwarded-Port": "443", "X-Forwarded-Proto": "https", **(headers or {})}
    return {
        "resource": "/{proxy+}", "path": path, "httpMethod": method,
        "headers": headers, "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": query,
        "multiValueQueryStringParameters": {k: [v] for k, v in query.items()} if query
        else None,
        "pathParameters": {"proxy": path.lstrip("/")}, "stageVariables": None,
        "requestContext": {
            "resourceId": "a1b2c3", "resourcePath": "/{proxy+}", "httpMethod": method,
            "extendedRequestId": "Pq9xYHdqDoEFkKw=", "requestTime": "01/Jan/2024:00:00:00 +0000",
            "path": f"/prod{path}", "accountId": "123456789012", "protocol": "HTTP/1.1",
            "stage": "prod", "domainPrefix": "abc123", "requestTimeEpoch": 1704067200000,
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "identity": {"sourceIp": "203.0.113.7", "userAgent": "curl/8.4.0",
                         "cognitoIdentityPoolId": None, "accountId": None, "caller": None,
                         "user": None, "userArn": None, "accessKey": None},
            "domainName": "abc123.execute-api.eu-west-1.amazonaws.com", "apiId": "abc123"},
        "body": body, "isBase64Encoded": False,
    }


def function_url_event(method: str, path: str, body: str | None = None,
                       headers: dict[str, str] | None = None, query: str = "",
                       base64_body: bool = False) -> dict[str, Any]:
    """A Lambda Function URL event (payload format 2.0)."""
    headers = {"host": "abcdefg.lambda-url.eu-west-1.on.aws", "user-agent": "curl/8.4.0",
               "x-forwarded-for": "203.0.113.7", "x-forwarded-proto": "https",
               "x-forwarded-port": "443", "x-amzn-trace-id": "Root=1-65920000-abcdef",
               **(headers or {})}
    if base64_body and body is not None:
        body = base64.b64encode(body.encode()).decode()
    return {
        "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": "anonymous", "apiId": "abcdefg",
            "domainName": "abcdefg.lambda-url.eu-west-1.on.aws", "domainPrefix": "abcdefg",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1",
                     "sourceIp": "203.0.113.7", "userAgent": "curl/8.4.0"},
            "requestId": "8f5a2c1e-1111-2222-3333-444455556666", "routeKey": "$default",
            "stage": "$default", "time": "01/Jan/2024:00:00:00 +0000",
            "timeEpoch": 1704067200000},
        "body": body, "isBase64Encoded": base64_body,
    }


@pytest.fixture
def handler(model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The module's real ``handler``, configured through the environment."""
    monkeypatch.setenv("TXANOMALY_MODEL", str(model_dir))
    monkeypatch.setenv("TXANOMALY_DB", f"sqlite:///{tmp_path}/lambda.db")
    monkeypatch.setenv("TXANOMALY_API_KEYS", API_KEY)
    monkeypatch.setattr(lambda_handler, "_handler", None)
    return lambda_handler.handler


def body_of(response: dict[str, Any]) -> Any:
    text = response["body"]
    if response.get("isBase64Encoded"):
        text = base64.b64decode(text).decode()
    return json.loads(text)


def test_rest_api_event_scores_and_stores(handler: Any):
    key = {"X-API-Key": API_KEY, "Content-Type": "application/json"}
    out = handler(rest_v1_event("POST", "/v1/transactions", json.dumps(TX), key), Context())
    assert out["statusCode"] == 200
    assert body_of(out)["transactionId"] == "lam-1"
    got = handler(rest_v1_event("GET", "/v1/transactions/lam-1", headers=key), Context())
    assert got["statusCode"] == 200 and body_of(got)["features"]["log_amount"] > 0
    page = handler(rest_v1_event("GET", "/v1/anomalies", headers=key, query={"limit": "5"}),
                   Context())
    assert page["statusCode"] == 200 and "items" in body_of(page)


def test_function_url_event_with_base64_body(handler: Any):
    headers = {"x-api-key": API_KEY, "content-type": "application/json"}
    out = handler(function_url_event("POST", "/v1/score", json.dumps([TX]), headers,
                                     base64_body=True), Context())
    assert out["statusCode"] == 200 and body_of(out)[0]["transactionId"] == "lam-1"
    stored = handler(function_url_event("GET", "/v1/transactions/lam-1", headers=headers),
                     Context())
    assert stored["statusCode"] == 404  # /v1/score stores nothing
    ready = handler(function_url_event("GET", "/readyz", query="x=1"), Context())
    assert ready["statusCode"] == 200


def test_lambda_requires_the_api_key(handler: Any):
    out = handler(function_url_event("POST", "/v1/transactions", json.dumps(TX),
                                     {"content-type": "application/json"}), Context())
    assert out["statusCode"] == 401 and body_of(out)["error"] == "unauthorized"


def test_bad_input_through_lambda_is_a_4xx(handler: Any):
    out = handler(rest_v1_event("POST", "/v1/transactions", "{oops",
                                {"X-API-Key": API_KEY, "Content-Type": "application/json"}),
                  Context())
    assert out["statusCode"] == 400 and "Traceback" not in out["body"]


def test_lambda_honours_the_environment(handler: Any, monkeypatch: pytest.MonkeyPatch):
    """The same precedence rule as ``serve``: the environment over the defaults."""
    monkeypatch.setenv("TXANOMALY_MAX_BATCH", "1")
    monkeypatch.setenv("TXANOMALY_TOP_REASONS", "1")
    headers = {"x-api-key": API_KEY, "content-type": "application/json"}
    two = handler(function_url_event("POST", "/v1/score", json.dumps([TX, TX]), headers),
                  Context())
    assert two["statusCode"] == 413
    one = handler(function_url_event("POST", "/v1/score", json.dumps(TX), headers), Context())
    assert one["statusCode"] == 200 and len(body_of(one)["reasons"]) == 1


def test_lambda_without_key_or_allowance_refuses_to_start(handler: Any,
                                                          monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("TXANOMALY_API_KEYS")
    event = function_url_event("POST", "/v1/score", json.dumps(TX),
                               {"content-type": "application/json"})
    with pytest.raises(SettingsError, match="no API key is configured"):
        handler(event, Context())
    # Behind an IAM-authorised function URL the operator may allow it explicitly.
    monkeypatch.setenv("TXANOMALY_ALLOW_UNAUTHENTICATED", "1")
    assert handler(event, Context())["statusCode"] == 200
