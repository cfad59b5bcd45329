"""Fuzz the API from its own OpenAPI schema (schemathesis): whatever a client sends, the
server answers with a documented status, content type and body shape, never a 5xx."""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks

from service_fixtures import API_KEY, model_dir
from txanomaly.service import Settings, create_app
from txanomaly.service.runtime import Runtime

__all__ = ["model_dir"]  # the fixture, imported for pytest

CHECKS = [checks.not_a_server_error, checks.status_code_conformance,
          checks.content_type_conformance, checks.response_schema_conformance,
          checks.ignored_auth]


@pytest.fixture(scope="module")
def api_schema(model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    db = tmp_path_factory.mktemp("fuzz") / "fuzz.db"
    cfg = Settings(model_dir=model_dir, db_url=f"sqlite:///{db}", host="0.0.0.0",
                   api_keys=(API_KEY,), max_batch=5, max_body_bytes=20_000)
    runtime = Runtime.open(cfg)
    yield schemathesis.openapi.from_asgi("/openapi.json", create_app(cfg, runtime=runtime)), runtime
    runtime.close()


def test_api_answers_every_generated_request_as_documented(api_schema):
    schema, runtime = api_schema
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
        def fuzz(case):
            case.call_and_validate(headers={"X-API-Key": API_KEY}, checks=CHECKS)

        fuzz()
    sent = sum(sample.value for metric in runtime.metrics.registry.collect()
               if metric.name == "txanomaly_http_requests" for sample in metric.samples
               if sample.name.endswith("_total"))
    assert sent >= 10 * len(operations)  # the fuzzer really called the app
