"""``txanomaly serve``: refuses unsafe or broken setups with a one-line message, exit 1.

(The durability test starts the real server through this command.)"""

from __future__ import annotations

import socket
from pathlib import Path

from typer.testing import CliRunner

from service_fixtures import model_dir
from txanomaly.cli import app

__all__ = ["model_dir"]  # the fixture, imported for pytest
runner = CliRunner()


def test_public_bind_without_api_key_is_refused(model_dir: Path, monkeypatch):
    monkeypatch.delenv("TXANOMALY_API_KEYS", raising=False)
    out = runner.invoke(app, ["serve", "--model", str(model_dir), "--host", "0.0.0.0"])
    assert out.exit_code == 1
    assert "API key" in out.output and "Traceback" not in out.output


def test_missing_model_directory_is_refused(tmp_path: Path):
    out = runner.invoke(app, ["serve", "--model", str(tmp_path / "nope")])
    assert out.exit_code == 1 and "nope" in out.output


def test_bad_database_url_is_refused(model_dir: Path):
    out = runner.invoke(app, ["serve", "--model", str(model_dir), "--db", "mysql://x/y",
                              "--sqlite-synchronous", "NORMAL"])
    assert out.exit_code == 1 and "unsupported database URL" in out.output


def test_serve_on_a_busy_port_is_one_line_and_creates_no_database(model_dir: Path, tmp_path,
                                                                   monkeypatch):
    """Regression: uvicorn's own error, exit code 3, and a new txanomaly.db left behind."""
    monkeypatch.chdir(tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = runner.invoke(app, ["serve", "--model", str(model_dir), "--port", str(port)])
    assert out.exit_code == 1
    assert out.output.strip().splitlines() == [
        f"error: port {port} on 127.0.0.1 is in use (another server?): stop it or choose "
        "another with --port"]
    assert list(tmp_path.iterdir()) == []


def test_help_names_the_options():
    out = runner.invoke(app, ["serve", "--help"])
    assert out.exit_code == 0
    for option in ("--model", "--db", "--host", "--port", "--workers", "--api-key"):
        assert option in out.output
