"""The service with a model file it must refuse: it never reports ready, and says why
(issue 12, finding 2). A model key makes it serve only a model signed with that key."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from service_fixtures import API_KEY, model_dir
from test_service_durability import free_port
from txanomaly import artifact
from txanomaly.cli import app as cli
from txanomaly.errors import ModelFileError
from txanomaly.service import Settings, create_app

__all__ = ["model_dir"]  # the fixture, imported for pytest

MODEL_KEY = "9d0f6b3a1c7e4f2a8b5d0c9e7f1a3b6c"


@pytest.fixture
def nan_model(model_dir: Path, tmp_path: Path) -> Path:
    """A copy of the service's model whose threshold reads ``NaN``."""
    bad = tmp_path / "nan-model"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes((model_dir / "model.safetensors").read_bytes())
    meta = json.loads((model_dir / "model.json").read_text())
    meta["threshold"] = float("nan")
    (bad / "model.json").write_text(json.dumps(meta))  # Python writes the literal NaN
    return bad


def settings(model: Path, tmp_path: Path, **overrides: object) -> Settings:
    return Settings(model_dir=model, db_url=f"sqlite:///{tmp_path}/api.db",
                    api_keys=(API_KEY,), **overrides)  # type: ignore[arg-type]


def test_regression_nan_threshold_model_reported_ready(nan_model: Path, tmp_path: Path):
    # Was: the model loaded, /readyz answered 200 and every verdict was ALLOW.
    app = create_app(settings(nan_model, tmp_path))
    with pytest.raises(ModelFileError, match="threshold = NaN"), TestClient(app) as client:
        client.get("/readyz")


def test_serve_refuses_a_bad_model_in_one_line(nan_model: Path, tmp_path: Path):
    out = CliRunner().invoke(cli, ["serve", "--model", str(nan_model), "--api-key", API_KEY,
                                   "--db", f"sqlite:///{tmp_path}/x.db"])
    assert out.exit_code == 1 and "Traceback" not in out.output
    assert f"{nan_model / 'model.json'}: threshold = NaN" in out.output


@pytest.mark.slow
def test_uvicorn_factory_with_a_bad_model_never_reports_ready_and_logs_why(
        nan_model: Path, tmp_path: Path):
    """The app as ``uvicorn --factory`` starts it (a real server on loopback)."""
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("TXANOMALY_")},
           "TXANOMALY_MODEL": str(nan_model), "TXANOMALY_DB": f"sqlite:///{tmp_path}/u.db",
           "TXANOMALY_API_KEYS": API_KEY}
    log = tmp_path / "server.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "txanomaly.service.app:create_app",
             "--port", str(port)], stdout=sink, stderr=sink, env=env)
        statuses = []
        deadline = time.monotonic() + 60
        try:
            while proc.poll() is None and time.monotonic() < deadline:
                with contextlib.suppress(httpx.TransportError):
                    statuses.append(httpx.get(f"http://127.0.0.1:{port}/readyz",
                                              timeout=1.0).status_code)
                time.sleep(0.1)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
    assert 200 not in statuses
    assert proc.returncode not in (0, None)
    assert "threshold = NaN: NaN and Infinity are not numbers a model holds" in log.read_text()


AUTH = {"X-API-Key": API_KEY}


def signed_copy(model_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "signed"
    copy.mkdir()
    for name in ("model.json", "model.safetensors"):
        (copy / name).write_bytes((model_dir / name).read_bytes())
    artifact.sign(copy, MODEL_KEY)
    return copy


def test_server_with_a_model_key_serves_the_model_signed_with_it(model_dir: Path,
                                                                 tmp_path: Path):
    signed = signed_copy(model_dir, tmp_path)
    with TestClient(create_app(settings(signed, tmp_path, model_key=MODEL_KEY))) as client:
        assert client.get("/readyz").status_code == 200
        assert client.app.state.runtime.scorer.version == artifact.load(signed).version
        info = client.get("/v1/model", headers=AUTH).json()
        assert info["signature"] == {"signed": True, "algorithm": "hmac-sha256",
                                     "verified": True}


def test_server_without_a_model_key_says_the_signature_was_not_checked(model_dir: Path,
                                                                       tmp_path: Path):
    signed = signed_copy(model_dir, tmp_path)
    with TestClient(create_app(settings(signed, tmp_path))) as client:
        assert client.get("/v1/model", headers=AUTH).json()["signature"] == {
            "signed": True, "algorithm": "hmac-sha256", "verified": False}
    with TestClient(create_app(settings(model_dir, tmp_path))) as client:
        assert client.get("/v1/model", headers=AUTH).json()["signature"] == {
            "signed": False, "algorithm": None, "verified": False}


@pytest.mark.parametrize("which", ["unsigned", "other key"])
def test_server_with_a_model_key_refuses_any_other_model(model_dir: Path, tmp_path: Path,
                                                         which: str):
    model = model_dir if which == "unsigned" else signed_copy(model_dir, tmp_path)
    key = MODEL_KEY if which == "unsigned" else "another-key-entirely"
    message = "is not signed" if which == "unsigned" else "signature does not verify"
    app = create_app(settings(model, tmp_path, model_key=key))
    with pytest.raises(ModelFileError, match=message), TestClient(app):
        pass
