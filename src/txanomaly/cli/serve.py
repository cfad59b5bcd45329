"""``txanomaly serve``: the REST API (uvicorn) over a model directory and a database."""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path
from typing import Annotated

import typer

from txanomaly.cli._common import handle_errors
from txanomaly.errors import TxAnomalyError
from txanomaly.storage import DEFAULT_DB_URL

EXAMPLE = (
    "Example: [bold]txanomaly serve --model models/standard --db sqlite:///tx.db[/] then "
    "POST transactions to http://127.0.0.1:8000/v1/transactions (OpenAPI at /docs). "
    "SageMaker: [bold]txanomaly serve --model /opt/ml/model --sagemaker[/] (0.0.0.0:8080)."
)


def register(app: typer.Typer) -> None:
    """Add the ``serve`` command to ``app``."""
    app.command("serve", epilog=EXAMPLE)(serve)


@handle_errors
def serve(
    model: Annotated[Path, typer.Option("--model", "-m", envvar="TXANOMALY_MODEL",
                                        help="Model directory (txanomaly train output).")],
    db: Annotated[str, typer.Option(
        envvar="TXANOMALY_DB",
        help="sqlite:///PATH (embedded, one machine) or postgresql://USER@HOST:PORT/DB "
             "(several replicas).")] = DEFAULT_DB_URL,
    host: Annotated[str | None, typer.Option(
        help="Address to bind; beyond loopback an API key is required. Default 127.0.0.1 "
             "(0.0.0.0 with --sagemaker).")] = None,
    port: Annotated[int | None, typer.Option(
        help="Port. Default 8000 (8080 with --sagemaker).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    api_key: Annotated[list[str] | None, typer.Option(
        "--api-key", help="Accepted API key (header X-API-Key); repeat for several. Also "
                          "TXANOMALY_API_KEYS (comma-separated).")] = None,
    max_batch: Annotated[int, typer.Option(min=1, help="Most transactions per request.")
                         ] = 1000,
    max_body_bytes: Annotated[int, typer.Option(min=1, help="Largest request body (bytes).")
                              ] = 1 << 20,
    sqlite_synchronous: Annotated[str, typer.Option(
        help="SQLite: NORMAL survives a crash of the server (kill -9), FULL also a power "
             "loss (an fsync per commit).")] = "NORMAL",
    sagemaker: Annotated[bool, typer.Option(
        "--sagemaker", help="SageMaker container mode: 0.0.0.0:8080; without an API key only "
                            "/ping, /invocations and the probes are served.")] = False,
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = False,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve the scoring API: raw transactions in, verdicts and reasons out."""
    # The [serve] extra, imported here, in this process: when it is missing, handle_errors
    # says so in one line (in uvicorn's worker it would be a traceback).
    import uvicorn

    from txanomaly.service.app import create_app
    from txanomaly.service.runtime import Runtime
    from txanomaly.service.settings import Settings, get_settings

    env_keys = [k for k in os.environ.get("TXANOMALY_API_KEYS", "").split(",") if k.strip()]
    settings = Settings(
        model_dir=model, db_url=db, host=host or ("0.0.0.0" if sagemaker else "127.0.0.1"),
        api_keys=tuple(api_key or env_keys), max_batch=max_batch,
        max_body_bytes=max_body_bytes, sqlite_synchronous=sqlite_synchronous,
        sagemaker=sagemaker)
    settings.check_exposure()
    port = port or (8080 if sagemaker else 8000)
    # Before the database is opened: a busy port must not leave a new database file behind.
    check_port_free(settings.host, port)
    # A bad model directory or database fails here, with its message, not inside a worker.
    Runtime.open(settings).close()
    os.environ.update(settings.to_env())
    get_settings.cache_clear()
    # By name: each worker process imports the app itself.
    uvicorn.run(f"{create_app.__module__}:{create_app.__name__}", factory=True, host=settings.host,
                port=port, workers=workers, access_log=access_log, log_level=log_level)


def check_port_free(host: str, port: int) -> None:
    """Raise :class:`TxAnomalyError` unless a server could listen on ``host:port`` now.

    Binds and closes a socket as uvicorn will (``SO_REUSEADDR``: a port left in TIME_WAIT by
    a server that just stopped is free; one another server listens on is not).
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise TxAnomalyError(f"cannot listen on {host}: {exc.strerror}") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise TxAnomalyError(
                    f"port {port} on {host} is in use (another server?): stop it or "
                    "choose another with --port") from None
            raise TxAnomalyError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
