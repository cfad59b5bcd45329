"""Authorisation: one rule for every route that reads or writes data, whatever starts the app.

A key is required on every data route whenever keys are configured; without keys the app
serves data only where the operator allows unauthenticated access explicitly (with a startup
warning), and otherwise refuses to start. Probes and the API description stay open.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service_fixtures import API_KEY, model_dir
from test_service_settings import clean_env, free_port, running, tx
from txanomaly.cli.serve import serve_settings
from txanomaly.service import Settings, create_app
from txanomaly.service.settings import SettingsError

__all__ = ["model_dir"]  # the fixture, imported for pytest

OPEN = {"/healthz", "/readyz", "/ping", "/docs", "/docs/oauth2-redirect", "/redoc",
        "/openapi.json"}
KEY = {"X-API-Key": API_KEY}


def keyed_client(model_dir: Path, tmp_path: Path, sagemaker: bool) -> TestClient:
    settings = Settings(model_dir=model_dir, db_url=f"sqlite:///{tmp_path}/auth.db",
                        api_keys=(API_KEY,), sagemaker=sagemaker)
    return TestClient(create_app(settings), raise_server_exceptions=False)


def data_requests(client: TestClient) -> list[tuple[str, str, dict]]:
    """(method, path, request arguments) for every operation of the app's OpenAPI document
    that is not open (each route is documented); /invocations once per content type."""
    out = []
    for template, operations in client.get("/openapi.json").json()["paths"].items():
        path = re.sub(r"\{[^}]+\}", "t0", template)
        for method in operations:
            if path in OPEN:
                continue
            if path == "/invocations":
                out.append((method, path, {"content": b"1.0",
                                           "headers": {"content-type": "text/csv"}}))
            out.append((method, path, {"json": tx(0)} if method == "post" else {}))
    return out


@pytest.mark.parametrize("sagemaker", [False, True])
def test_every_data_route_requires_the_key(model_dir: Path, tmp_path: Path, sagemaker: bool):
    with keyed_client(model_dir, tmp_path, sagemaker) as client:
        requests = data_requests(client)
        paths = {path for _, path, _ in requests}
        assert paths == {"/invocations", "/metrics", "/v1/transactions", "/v1/score",
                         "/v1/transactions/t0", "/v1/anomalies", "/v1/flag-rate", "/v1/model",
                         "/v1/transactions/t0/feedback", "/v1/feedback"}
        for method, path, kwargs in requests:
            refused = client.request(method, path, **kwargs)
            assert refused.status_code == 401, (method, path, refused.text)
            assert refused.json()["error"] == "unauthorized"
            wrong = {**kwargs, "headers": {**kwargs.get("headers", {}), "X-API-Key": "nope"}}
            assert client.request(method, path, **wrong).status_code == 401
            keyed = {**kwargs, "headers": {**kwargs.get("headers", {}), **KEY}}
            assert client.request(method, path, **keyed).status_code != 401, (method, path)
        for path in ("/healthz", "/readyz", "/ping", "/openapi.json", "/docs"):
            assert client.get(path).status_code == 200, path


def test_sagemaker_json_invocations_require_the_key(model_dir: Path, tmp_path: Path):
    """Regression: in SageMaker mode with an API key, JSON /invocations answered without one
    while scoring against the stored user history (its scores and reasons leak it)."""
    with keyed_client(model_dir, tmp_path, sagemaker=True) as client:
        assert client.post("/invocations", json=[tx(0)]).status_code == 401
        assert client.post("/invocations", json=[tx(0)], headers=KEY).status_code == 200


def test_factory_without_key_or_allowance_refuses_to_start(model_dir: Path, tmp_path: Path):
    """Regression: create_app trusted TXANOMALY_HOST (default 127.0.0.1) for the address
    uvicorn binds, so ``--host 0.0.0.0`` without a key served everything to anyone."""
    for host in ("127.0.0.1", "0.0.0.0"):
        with pytest.raises(SettingsError, match=r"no API key is configured.*"
                                                r"TXANOMALY_ALLOW_UNAUTHENTICATED=1"):
            create_app(Settings(model_dir=model_dir, db_url=f"sqlite:///{tmp_path}/x.db",
                                host=host))
    with pytest.raises(SettingsError, match="no API key"):
        create_app(Settings(model_dir=model_dir, sagemaker=True))


def test_uvicorn_factory_without_key_does_not_serve(model_dir: Path, tmp_path: Path):
    """The documented ``uvicorn --factory`` command, for real: without a key or the
    allowance it exits with the reason instead of serving data unauthenticated."""
    port, log = free_port(), tmp_path / "uvicorn.log"
    env = clean_env(TXANOMALY_MODEL=str(model_dir), TXANOMALY_DB=f"sqlite:///{tmp_path}/u.db")
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "txanomaly.service.app:create_app",
           "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=60,
                              check=False)
    assert proc.returncode != 0
    assert "no API key is configured" in log.read_text()
    # With the explicit allowance the same command serves, and says so in its log.
    allowed = {**env, "TXANOMALY_ALLOW_UNAUTHENTICATED": "1"}
    with running(cmd, allowed, port, log) as url:
        import httpx

        assert httpx.post(f"{url}/v1/score", json=tx(0)).status_code == 200
    assert "unauthenticated access is allowed" in log.read_text()


def test_unauthenticated_access_is_explicit_and_logged(model_dir: Path, tmp_path: Path,
                                                       caplog):
    settings = Settings(model_dir=model_dir, db_url=f"sqlite:///{tmp_path}/a.db",
                        allow_unauthenticated=True)
    with caplog.at_level(logging.WARNING, logger="txanomaly"):
        app = create_app(settings)
    assert any(r.levelno == logging.WARNING and "unauthenticated access is allowed"
               in r.getMessage() for r in caplog.records)
    with TestClient(app) as client:
        assert client.post("/v1/score", json=tx(0)).status_code == 200
        assert client.get("/metrics").status_code == 200
        # The allowance is the only way without a key: take it away and data is refused.
        app.state.settings = Settings(model_dir=model_dir)
        refused = client.post("/v1/score", json=tx(0))
        assert refused.status_code == 403 and "ALLOW_UNAUTHENTICATED" in refused.text


def test_keys_win_over_the_allowance(model_dir: Path, tmp_path: Path):
    settings = Settings(model_dir=model_dir, db_url=f"sqlite:///{tmp_path}/k.db",
                        api_keys=(API_KEY,), allow_unauthenticated=True)
    with TestClient(create_app(settings)) as client:
        assert client.post("/v1/score", json=tx(0)).status_code == 401


def test_serve_allows_itself_only_on_a_loopback_host():
    """``serve`` knows the address it binds: on loopback without a key its own default
    allows unauthenticated access; beyond loopback the operator must say so."""
    env = {"TXANOMALY_MODEL": "m"}
    assert serve_settings({}, env).allow_unauthenticated
    assert serve_settings({"host": "::1"}, env).allow_unauthenticated
    with pytest.raises(SettingsError, match="no API key"):
        serve_settings({"host": "0.0.0.0"}, env)
    with pytest.raises(SettingsError, match="no API key"):
        serve_settings({"sagemaker": True}, env)  # binds 0.0.0.0
    assert serve_settings({"host": "0.0.0.0", "allow_unauthenticated": True}, env
                          ).allow_unauthenticated
    assert serve_settings({"sagemaker": True},
                          {**env, "TXANOMALY_ALLOW_UNAUTHENTICATED": "1"}).allow_unauthenticated
    # The environment still decides over serve's loopback default.
    with pytest.raises(SettingsError):
        serve_settings({}, {**env, "TXANOMALY_ALLOW_UNAUTHENTICATED": "0"})
    keyed = serve_settings({"host": "0.0.0.0", "api_keys": (API_KEY,)}, env)
    assert keyed.api_keys == (API_KEY,) and not keyed.allow_unauthenticated
