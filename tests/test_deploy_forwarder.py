"""The forwarding Lambda (API Gateway -> SageMaker endpoint) with real API Gateway REST API
proxy events (payload format 1.0). The SageMaker runtime is botocore's real client: its
answers come from botocore's ``Stubber`` (the one mock: a cloud API that cannot run here), its
timeouts and refused connections from real sockets on loopback."""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config as BotoConfig
from botocore.response import StreamingBody
from botocore.stub import Stubber

from txanomaly.deploy.forwarder import lambda_function as fwd

ENDPOINT = "txanomaly-endpoint"
TX = {"transactionId": "t-1", "timestamp": 1_700_000_000_000, "originUserId": "u1",
      "originAmountDetails": {"transactionAmount": 42.0, "transactionCurrency": "EUR"}}
VERDICT = {"transactionId": "t-1", "anomalyScore": 1.2, "isAnomaly": False, "verdict": "ALLOW",
           "riskLevel": "LOW", "threshold": 2.5, "reasons": [], "modelVersion": "0123abcd"}


def api_event(body: str | None, resource: str = fwd.SINGLE_ROUTE, method: str = "POST",
              headers: dict[str, str] | None = None, base64_body: bool = False
              ) -> dict[str, Any]:
    """An API Gateway REST API proxy event (payload 1.0) as a method with a Lambda proxy
    integration receives it; API Gateway has already checked the key (``apiKeyId``)."""
    headers = {"Host": "abc123.execute-api.eu-west-1.amazonaws.com",
               "Content-Type": "application/json", "User-Agent": "curl/8.4.0",
               "X-Api-Key": "k" * 40, "X-Forwarded-For": "203.0.113.7",
               "X-Forwarded-Port": "443", "X-Forwarded-Proto": "https", **(headers or {})}
    if base64_body and body is not None:
        body = base64.b64encode(body.encode()).decode()
    return {
        "resource": resource, "path": resource, "httpMethod": method, "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": None, "multiValueQueryStringParameters": None,
        "pathParameters": None, "stageVariables": None,
        "requestContext": {
            "resourceId": "a1b2c3", "resourcePath": resource, "httpMethod": method,
            "extendedRequestId": "Pq9xYHdqDoEFkKw=", "requestTime": "01/Jan/2024:00:00:00 +0000",
            "path": f"/prod{resource}", "accountId": "123456789012", "protocol": "HTTP/1.1",
            "stage": "prod", "domainPrefix": "abc123", "requestTimeEpoch": 1704067200000,
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "identity": {"sourceIp": "203.0.113.7", "userAgent": "curl/8.4.0",
                         "apiKey": "k" * 40, "apiKeyId": "abcdef1234",
                         "cognitoIdentityPoolId": None, "accountId": None, "caller": None,
                         "user": None, "userArn": None, "accessKey": None},
            "domainName": "abc123.execute-api.eu-west-1.amazonaws.com", "apiId": "abc123"},
        "body": body, "isBase64Encoded": base64_body,
    }


def runtime_client(**config: Any) -> Any:
    return boto3.client("sagemaker-runtime", region_name="eu-west-1",
                        aws_access_key_id="AKIDTESTING", aws_secret_access_key="testing",
                        config=BotoConfig(**config) if config else None)


@pytest.fixture
def stubbed() -> Iterator[tuple[fwd.Forwarder, Stubber]]:
    client = runtime_client()
    config = fwd.Config(endpoint_name=ENDPOINT, max_body_bytes=4096, max_batch=3,
                        allowed_origins=("https://console.example.com",))
    with Stubber(client) as stubber:
        yield fwd.Forwarder(config, client), stubber
        stubber.assert_no_pending_responses()


def answer_body(data: Any) -> dict[str, Any]:
    raw = json.dumps(data).encode()
    return {"Body": StreamingBody(io.BytesIO(raw), len(raw)), "ContentType": "application/json"}


def expected(body: Any, store: bool = True) -> dict[str, Any]:
    params = {"EndpointName": ENDPOINT, "Body": json.dumps(body, separators=(",", ":")).encode(),
              "ContentType": "application/json", "Accept": "application/json"}
    if store:
        params["CustomAttributes"] = fwd.STORE_ATTRIBUTE
    return params


def parsed(answer: dict[str, Any]) -> Any:
    assert answer["headers"]["Content-Type"] == "application/json"
    assert answer["isBase64Encoded"] is False
    return json.loads(answer["body"])


def test_one_transaction_is_forwarded_and_its_verdict_returned(stubbed):
    forwarder, stubber = stubbed
    stubber.add_response("invoke_endpoint", answer_body(VERDICT), expected(TX))
    answer = forwarder.handle(api_event(json.dumps(TX)))
    assert answer["statusCode"] == 200
    assert parsed(answer) == VERDICT


def test_a_batch_is_forwarded_as_one_call(stubbed):
    forwarder, stubber = stubbed
    batch = [TX, {**TX, "transactionId": "t-2"}]
    verdicts = [VERDICT, {**VERDICT, "transactionId": "t-2", "isAnomaly": True, "verdict": "FLAG"}]
    stubber.add_response("invoke_endpoint", answer_body(verdicts), expected(batch))
    answer = forwarder.handle(api_event(json.dumps(batch), resource=fwd.BATCH_ROUTE))
    assert answer["statusCode"] == 200
    assert parsed(answer) == verdicts


def test_base64_bodies_are_decoded(stubbed):
    forwarder, stubber = stubbed
    stubber.add_response("invoke_endpoint", answer_body(VERDICT), expected(TX))
    answer = forwarder.handle(api_event(json.dumps(TX), base64_body=True))
    assert answer["statusCode"] == 200


def test_score_only_sends_no_store_attribute():
    client = runtime_client()
    forwarder = fwd.Forwarder(fwd.Config(endpoint_name=ENDPOINT, store_history=False), client)
    with Stubber(client) as stubber:
        stubber.add_response("invoke_endpoint", answer_body(VERDICT), expected(TX, store=False))
        assert forwarder.handle(api_event(json.dumps(TX)))["statusCode"] == 200
        stubber.assert_no_pending_responses()


@pytest.mark.parametrize(("body", "status", "words"), [
    (None, 400, "no body"),
    ('{"transactionId": ', 400, "not valid JSON"),
    ('{"amount": NaN}', 400, "NaN is not a JSON number"),
    ("[1, 2]", 422, "one transaction"),
    ('"text"', 422, "one transaction"),
])
def test_malformed_bodies_are_the_callers_mistake(stubbed, body, status, words):
    forwarder, _ = stubbed  # nothing queued: a call to the endpoint would fail the test
    answer = forwarder.handle(api_event(body))
    assert answer["statusCode"] == status
    data = parsed(answer)
    assert words in data["message"]
    assert data["requestId"] == "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"


def test_non_utf8_and_bad_base64_are_400(stubbed):
    forwarder, _ = stubbed
    event = api_event("x")
    event["body"], event["isBase64Encoded"] = base64.b64encode(b"\xff\xfe{").decode(), True
    assert "not UTF-8" in parsed(forwarder.handle(event))["message"]
    event["body"] = "***not base64***"
    assert "not valid base64" in parsed(forwarder.handle(event))["message"]


def test_oversized_bodies_and_batches_are_413_without_a_call(stubbed):
    forwarder, _ = stubbed
    big = {**TX, "note": "x" * 5000}
    answer = forwarder.handle(api_event(json.dumps(big)))
    assert answer["statusCode"] == 413
    assert "larger than 4096 bytes" in parsed(answer)["message"]
    answer = forwarder.handle(api_event(json.dumps([TX] * 4), resource=fwd.BATCH_ROUTE))
    assert answer["statusCode"] == 413
    assert "4 transactions in one request; the limit is 3" in parsed(answer)["message"]


def test_batch_shape_errors_name_the_items(stubbed):
    forwarder, _ = stubbed
    answer = forwarder.handle(api_event("[]", resource=fwd.BATCH_ROUTE))
    assert answer["statusCode"] == 422
    answer = forwarder.handle(api_event(json.dumps([TX, 7]), resource=fwd.BATCH_ROUTE))
    assert answer["statusCode"] == 422
    assert parsed(answer)["errors"] == [{"index": 1, "field": "$",
                                         "message": "expected an object"}]


def test_wrong_content_type_route_and_method(stubbed):
    forwarder, _ = stubbed
    answer = forwarder.handle(api_event(json.dumps(TX), headers={"Content-Type": "text/plain"}))
    assert answer["statusCode"] == 415
    assert forwarder.handle(api_event(json.dumps(TX), resource="/v1/other"))["statusCode"] == 404
    assert forwarder.handle(api_event(json.dumps(TX), method="PUT"))["statusCode"] == 405


def test_the_containers_refusal_is_passed_on_with_its_fields(stubbed):
    forwarder, stubber = stubbed
    refusal = {"error": "validation_error", "message": "invalid transactions; nothing was scored",
               "errors": [{"index": 0, "transactionId": "t-1", "field": "timestamp",
                           "message": "unparseable timestamp"}]}
    stubber.add_client_error(
        "invoke_endpoint", service_error_code="ModelError", http_status_code=424,
        service_message="Received client error (422) from primary", modeled_fields={
            "OriginalStatusCode": 422, "OriginalMessage": json.dumps(refusal),
            "LogStreamArn": "arn:aws:logs:eu-west-1:123456789012:log-group:/aws/sagemaker/"
                            "Endpoints/txanomaly-endpoint"},
        expected_params=expected(TX))
    answer = forwarder.handle(api_event(json.dumps(TX)))
    assert answer["statusCode"] == 422
    data = parsed(answer)
    assert data["message"] == refusal["message"]
    assert data["errors"] == refusal["errors"]


@pytest.mark.parametrize(("code", "http", "fields", "status", "retry"), [
    ("ModelError", 424, {"OriginalStatusCode": 500,
                         "OriginalMessage": '{"error": "internal_error"}'}, 502, False),
    # The container demanding an API key is the deployment's mistake, not the caller's.
    ("ModelError", 424, {"OriginalStatusCode": 401, "OriginalMessage": "{}"}, 502, False),
    ("ValidationError", 400, {}, 502, False),  # e.g. "Endpoint ... not found"
    ("ServiceUnavailable", 503, {}, 502, False),
    ("InternalFailure", 500, {}, 502, False),
    ("ThrottlingException", 400, {}, 429, True),
    ("ModelNotReadyException", 429, {}, 503, True),
])
def test_endpoint_failures_map_to_clear_statuses(stubbed, code, http, fields, status, retry):
    forwarder, stubber = stubbed
    stubber.add_client_error("invoke_endpoint", service_error_code=code,
                             service_message=f"{code} happened", http_status_code=http,
                             modeled_fields=fields or None, expected_params=expected(TX))
    answer = forwarder.handle(api_event(json.dumps(TX)))
    assert answer["statusCode"] == status
    assert parsed(answer)["error"] == fwd._CODES[status]
    assert ("Retry-After" in answer["headers"]) is retry


def test_cors_headers_only_for_configured_origins(stubbed):
    forwarder, stubber = stubbed
    stubber.add_response("invoke_endpoint", answer_body(VERDICT), expected(TX))
    answer = forwarder.handle(api_event(json.dumps(TX),
                                        headers={"Origin": "https://console.example.com"}))
    assert answer["headers"]["Access-Control-Allow-Origin"] == "https://console.example.com"
    answer = forwarder.handle(api_event("{", headers={"Origin": "https://evil.example"}))
    assert "Access-Control-Allow-Origin" not in answer["headers"]


class SilentServer:
    """A loopback socket that accepts connections and never answers (a hung endpoint)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        for conn in self.held:
            conn.close()
        self.sock.close()


def test_an_endpoint_that_does_not_answer_in_time_is_504():
    server = SilentServer()
    try:
        client = boto3.client("sagemaker-runtime", region_name="eu-west-1",
                              endpoint_url=f"http://127.0.0.1:{server.port}",
                              aws_access_key_id="AKIDTESTING", aws_secret_access_key="testing",
                              config=BotoConfig(read_timeout=0.3, connect_timeout=1,
                                                retries={"total_max_attempts": 1}))
        forwarder = fwd.Forwarder(fwd.Config(endpoint_name=ENDPOINT, read_timeout_s=0.3), client)
        answer = forwarder.handle(api_event(json.dumps(TX)))
    finally:
        server.close()
    assert answer["statusCode"] == 504
    assert "did not answer within 0.3 s" in parsed(answer)["message"]


def test_an_unreachable_endpoint_is_502():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = boto3.client("sagemaker-runtime", region_name="eu-west-1",
                          endpoint_url=f"http://127.0.0.1:{port}",
                          aws_access_key_id="AKIDTESTING", aws_secret_access_key="testing",
                          config=BotoConfig(connect_timeout=1, retries={"total_max_attempts": 1}))
    forwarder = fwd.Forwarder(fwd.Config(endpoint_name=ENDPOINT), client)
    answer = forwarder.handle(api_event(json.dumps(TX)))
    assert answer["statusCode"] == 502
    assert "cannot be reached" in parsed(answer)["message"]


def test_config_from_the_environment():
    config = fwd.Config.from_env({"ENDPOINT_NAME": "ep", "MAX_BATCH": "50",
                                  "STORE_HISTORY": "0",
                                  "ALLOWED_ORIGINS": "https://a.example, https://b.example"})
    assert (config.max_batch, config.store_history, config.allowed_origins) == (
        50, False, ("https://a.example", "https://b.example"))
    with pytest.raises(ValueError, match="ENDPOINT_NAME is not set"):
        fwd.Config.from_env({})
    with pytest.raises(ValueError, match="MAX_BATCH must be a number, got 'many'"):
        fwd.Config.from_env({"ENDPOINT_NAME": "ep", "MAX_BATCH": "many"})


def test_the_module_handler_reads_its_environment(monkeypatch):
    """``handler`` (what Lambda calls) builds its client from the environment: pointed at a
    hung socket through botocore's per-service endpoint variable, it answers 504."""
    server = SilentServer()
    monkeypatch.setattr(fwd, "_forwarder", None)
    for name, value in {"ENDPOINT_NAME": ENDPOINT, "READ_TIMEOUT_S": "0.3",
                        "AWS_DEFAULT_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": "AKIDTESTING",
                        "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": f"http://127.0.0.1:{server.port}",
                        }.items():
        monkeypatch.setenv(name, value)
    try:
        answer = fwd.handler(api_event(json.dumps(TX)), None)
    finally:
        server.close()
        fwd._forwarder = None
    assert answer["statusCode"] == 504


def test_one_log_line_per_request_without_the_body(stubbed, caplog):
    forwarder, stubber = stubbed
    stubber.add_response("invoke_endpoint", answer_body(VERDICT), expected(TX))
    with caplog.at_level("INFO", logger="txanomaly.forwarder"):
        forwarder.handle(api_event(json.dumps(TX)))
        forwarder.handle(api_event("{"))
    lines = [json.loads(r.getMessage()) for r in caplog.records
             if r.name == "txanomaly.forwarder"]
    assert [(line["route"], line["status"]) for line in lines] == [
        (fwd.SINGLE_ROUTE, 200), (fwd.SINGLE_ROUTE, 400)]
    assert all(line["requestId"] == "c6af9ac6-7b61-11e6-9a41-93e8deadbeef" for line in lines)
    assert "u1" not in caplog.text and "42.0" not in caplog.text  # no transaction content
