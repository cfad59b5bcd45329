"""``txanomaly serve``: refuses unsafe or broken setups with a one-line message, exit 1.

(The durability test starts the real server through this command.)"""

from __future__ import annotations

import socket
from pathlib import Path

from typer.testing import CliRunner

from service_fixtures import model_dir
from test_service_settings import free_port  # 8000 may be taken by another server here
from txanomaly.cli import app

__all__ = ["model_dir"]  # the fixture, imported for pytest
runner = CliRunner()


def test_public_bind_without_api_key_is_refused(model_dir: Path, monkeypatch):
    monkeypatch.delenv("TXANOMALY_API_KEYS", raising=False)
    out = runner.invoke(app, ["serve", "--model", str(model_dir), "--host", "0.0.0.0"])
    assert out.exit_code == 1
    assert "API key" in out.output and "Traceback" not in out.output


def test_missing_model_directory_is_refused(tmp_path: Path):
    out = runner.invoke(app, ["serve", "--model", str(tmp_path / "nope"),
                              "--port", str(free_port())])
    assert out.exit_code == 1 and "nope" in out.output


def test_bad_database_url_is_refused(model_dir: Path):
    out = runner.invoke(app, ["serve", "--model", str(model_dir), "--db", "mysql://x/y",
                              "--sqlite-synchronous", "NORMAL", "--port", str(free_port())])
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
    out = runner.invoke(app, ["serve", "--help"], env={"COLUMNS": "200"})  # no "..." cut
    assert out.exit_code == 0
    for option in ("--model", "--db", "--host", "--port", "--workers", "--api-key",
                   "--db-schema", "--max-csv-rows", "--top-reasons", "--pool-size",
                   "--allow-unauthenticated", "--model-key-file"):
        assert option in out.output


def test_model_key_file_that_is_empty_is_refused(model_dir: Path, tmp_path: Path):
    empty = tmp_path / "model.key"
    empty.write_text("\n")
    out = runner.invoke(app, ["serve", "--model", str(model_dir), "--model-key-file",
                              str(empty)])
    assert out.exit_code == 1 and "is empty" in out.output and "Traceback" not in out.output


def test_public_bind_with_the_explicit_allowance_passes_the_access_check(
        model_dir: Path, tmp_path: Path, monkeypatch):
    """TXANOMALY_ALLOW_UNAUTHENTICATED=1 is honoured by serve: the next check (a busy port)
    is the one that stops it."""
    monkeypatch.delenv("TXANOMALY_API_KEYS", raising=False)
    monkeypatch.setenv("TXANOMALY_ALLOW_UNAUTHENTICATED", "1")
    monkeypatch.chdir(tmp_path)
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = runner.invoke(app, ["serve", "--model", str(model_dir), "--host", "0.0.0.0",
                                  "--port", str(port)])
    assert out.exit_code == 1 and "is in use" in out.output
