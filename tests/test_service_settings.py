"""Settings: one precedence rule (options over environment over defaults) for ``txanomaly
serve``, the app factory and the Lambda handler; the settings in force are logged.

The serve tests start the real command in a child process on a free loopback port.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from service_fixtures import API_KEY, model_dir, postgres_url, unique_schema
from txanomaly.artifact import read_key
from txanomaly.cli.serve import serve_settings
from txanomaly.errors import TxAnomalyError
from txanomaly.service import create_app
from txanomaly.service.settings import ENV_VARS, Settings, SettingsError, get_settings

__all__ = ["model_dir"]  # the fixture, imported for pytest

SERVE = [sys.executable, "-c", "from txanomaly.cli import main; main()", "serve"]


def tx(i: int, user: str = "u1") -> dict[str, Any]:
    return {"transactionId": f"s{i}", "timestamp": 1_700_000_000_000 + i * 1000,
            "originUserId": user, "destinationUserId": "u2",
            "originAmountDetails": {"transactionAmount": 10.0 + i, "transactionCurrency": "EUR"}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**variables: str) -> dict[str, str]:
    """This process's environment without any TXANOMALY_* variable, plus ``variables``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TXANOMALY_")}
    return {**env, **variables}


@contextmanager
def running(cmd: list[str], env: dict[str, str], port: int, log: Path,
            ready: str = "/readyz") -> Iterator[str]:
    """Run ``cmd`` until ``GET ready`` answers 200 on ``port``; yield its base URL, then stop
    it. An AssertionError holds the log when the process exits first."""
    url = f"http://127.0.0.1:{port}"
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=out, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"exited {proc.returncode}: {log.read_text()[-3000:]}")
            try:
                if httpx.get(url + ready, timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"not ready: {log.read_text()[-3000:]}"
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# ----------------------------------------------------------------------- the rule itself
# For each field: the environment text, its value, and an option value that differs.
SAMPLES: dict[str, tuple[str, Any, Any]] = {
    "model_dir": ("env-model", Path("env-model"), Path("opt-model")),
    "db_url": ("sqlite:///env.db", "sqlite:///env.db", "sqlite:///opt.db"),
    "db_schema": ("env_schema", "env_schema", "opt_schema"),
    "host": ("10.0.0.1", "10.0.0.1", "127.0.0.2"),
    "api_keys": (" k1 , k2 ", ("k1", "k2"), ("k3",)),
    "allow_unauthenticated": ("yes", True, False),
    "max_body_bytes": ("2000", 2000, 3000),
    "max_batch": ("5", 5, 7),
    "max_csv_rows": ("2", 2, 4),
    "sqlite_synchronous": ("FULL", "FULL", "NORMAL"),
    "sagemaker": ("1", True, False),
    "top_reasons": ("1", 1, 2),
    "pool_size": ("3", 3, 4),
    "max_moved_rows": ("500", 500, 600),
    "model_key": ("env-secret\n", "env-secret", "opt-secret"),
}


def test_every_setting_has_an_environment_variable_and_a_sample():
    assert set(SAMPLES) == set(ENV_VARS) == {f.name for f in Settings.__dataclass_fields__
                                              .values()}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_options_over_environment_over_defaults(name: str):
    text, from_env, from_option = SAMPLES[name]
    base = {"TXANOMALY_MODEL": "m"}
    env = {**base, ENV_VARS[name]: text}
    default = getattr(Settings.load(environ=base), name)
    assert getattr(Settings.load(environ=env), name) == from_env != default
    assert getattr(Settings.load({name: None}, env), name) == from_env  # not given
    assert getattr(Settings.load({name: from_option}, env), name) == from_option
    if name != "model_dir":  # an empty variable counts as unset
        assert getattr(Settings.load(environ={**base, ENV_VARS[name]: ""}), name) == default


def test_bad_environment_values_name_the_variable():
    with pytest.raises(SettingsError, match="TXANOMALY_MAX_BATCH must be an integer"):
        Settings.load(environ={"TXANOMALY_MODEL": "m", "TXANOMALY_MAX_BATCH": "five"})
    with pytest.raises(SettingsError, match="TXANOMALY_SAGEMAKER must be 1 or 0"):
        Settings.load(environ={"TXANOMALY_MODEL": "m", "TXANOMALY_SAGEMAKER": "maybe"})
    with pytest.raises(SettingsError, match="TXANOMALY_MODEL"):
        Settings.load(environ={})


def test_settings_travel_to_workers_unchanged():
    settings = Settings.load(environ={k: v[0] for k, v in SAMPLES.items()
                                      for k in [ENV_VARS[k]]})
    assert Settings.from_env(settings.to_env()) == settings


def test_model_key_from_a_file_beats_the_environment_and_is_never_shown(tmp_path: Path,
                                                                        caplog):
    key_file = tmp_path / "model.key"
    key_file.write_text("file-secret\n")
    env = {"TXANOMALY_MODEL": "m", "TXANOMALY_MODEL_KEY": "env-secret",
           "TXANOMALY_API_KEYS": API_KEY, "TXANOMALY_DB": "postgresql://app:pw@db/tx"}
    settings = serve_settings({"model_key": read_key(key_file)}, env)
    assert settings.model_key == "file-secret"
    assert serve_settings({}, env).model_key == "env-secret"
    shown = repr(settings) + settings.describe()
    for secret in ("file-secret", API_KEY, ":pw@"):
        assert secret not in shown
    assert "model_key=set" in shown and "api_keys=1 configured" in shown
    key_file.write_text("\n")
    with pytest.raises(TxAnomalyError, match="empty"):
        read_key(key_file)


def test_settings_in_force_are_logged_with_secrets_redacted(model_dir: Path, tmp_path: Path,
                                                           caplog):
    settings = Settings(model_dir=model_dir, db_url=f"sqlite:///{tmp_path}/a.db",
                        api_keys=(API_KEY,), max_batch=5, model_key="model-secret")
    with caplog.at_level(logging.INFO, logger="txanomaly"):
        create_app(settings)
    line = next(r.getMessage() for r in caplog.records
                if r.getMessage().startswith("settings in force"))
    assert "max_batch=5" in line and "sqlite_synchronous=NORMAL" in line
    assert API_KEY not in caplog.text and "model-secret" not in caplog.text


# ----------------------------------------------------------------------- the entry points
def test_serve_honours_the_environment_variables(model_dir: Path, tmp_path: Path):
    """Regression: ``serve`` built its settings from its options only and wrote them over the
    environment: TXANOMALY_MAX_BATCH=5 still took 50 items, SQLITE_SYNCHRONOUS=FULL gave
    NORMAL, and MAX_BODY_BYTES, MAX_CSV_ROWS and TOP_REASONS were ignored likewise."""
    port, log = free_port(), tmp_path / "serve.log"
    env = clean_env(TXANOMALY_MAX_BATCH="5", TXANOMALY_MAX_BODY_BYTES="3000",
                    TXANOMALY_MAX_CSV_ROWS="2", TXANOMALY_TOP_REASONS="1",
                    TXANOMALY_SQLITE_SYNCHRONOUS="FULL", TXANOMALY_POOL_SIZE="3")
    cmd = [*SERVE, "--model", str(model_dir), "--db", f"sqlite:///{tmp_path}/s.db",
           "--port", str(port), "--pool-size", "2"]  # the option beats the environment
    with running(cmd, env, port, log) as url, httpx.Client(base_url=url) as client:
        assert client.post("/v1/score", json=[tx(i) for i in range(5)]).status_code == 200
        assert client.post("/v1/score", json=[tx(i) for i in range(6)]).status_code == 413
        padded = b'{"transactionId": "p"' + b" " * 3000 + b"}"
        assert client.post("/v1/score", content=padded,
                           headers={"content-type": "application/json"}).status_code == 413
        verdicts = client.post("/v1/score", json=[tx(i) for i in range(5)]).json()
        assert max(len(v["reasons"]) for v in verdicts) == 1
        names = client.get("/v1/model").json()["featureNames"]
        csv = "\n".join(",".join(["1.0"] * len(names)) for _ in range(3))
        assert client.post("/invocations", content=csv, headers={"content-type": "text/csv"}
                           ).status_code == 413
    line = next(ln for ln in log.read_text().splitlines() if "settings in force" in ln)
    assert "sqlite_synchronous=FULL" in line and "pool_size=2" in line


def test_factory_honours_the_environment(model_dir: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch):
    """``uvicorn --factory``'s path: SQLITE_SYNCHRONOUS=FULL reaches the connection."""
    for name, value in clean_env().items():
        monkeypatch.setenv(name, value)
    for name in [n for n in os.environ if n.startswith("TXANOMALY_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("TXANOMALY_MODEL", str(model_dir))
    monkeypatch.setenv("TXANOMALY_DB", f"sqlite:///{tmp_path}/f.db")
    monkeypatch.setenv("TXANOMALY_API_KEYS", API_KEY)
    monkeypatch.setenv("TXANOMALY_SQLITE_SYNCHRONOUS", "FULL")
    monkeypatch.setenv("TXANOMALY_MAX_BATCH", "5")
    get_settings.cache_clear()
    try:
        with TestClient(create_app()) as client:
            with client.app.state.runtime.store.engine.connect() as conn:  # type: ignore
                assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
            assert client.post("/v1/score", json=[tx(i) for i in range(6)],
                               headers={"X-API-Key": API_KEY}).status_code == 413
    finally:
        get_settings.cache_clear()


@pytest.mark.postgres
def test_db_schema_from_the_environment_creates_nothing_outside_it(model_dir: Path,
                                                                   tmp_path: Path):
    """Regression: with TXANOMALY_DB_SCHEMA, serve's startup check opened the database
    without the schema and created the tables in the search_path (``public``). Here the
    search_path is a decoy schema, so the test leaves ``public`` alone."""
    url, target, decoy = postgres_url(), unique_schema(), unique_schema()
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{decoy}"')
    port = free_port()
    env = clean_env(TXANOMALY_DB=url, TXANOMALY_DB_SCHEMA=target,
                    PGOPTIONS=f"-csearch_path={decoy}")
    try:
        with running([*SERVE, "--model", str(model_dir), "--port", str(port)], env, port,
                     tmp_path / "pg.log") as base:
            assert httpx.post(f"{base}/v1/transactions", json=tx(1)).status_code == 200
        inspector = sa.inspect(engine)
        assert inspector.get_table_names(schema=decoy) == []
        assert inspector.get_table_names(schema=target) != []
    finally:
        with engine.begin() as conn:
            for schema in (target, decoy):
                conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        engine.dispose()
