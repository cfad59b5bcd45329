"""``txanomaly serve``: the REST API (uvicorn) over a model directory and a database."""

from __future__ import annotations

import copy
import errno
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from txanomaly.cli._common import handle_errors
from txanomaly.errors import TxAnomalyError
from txanomaly.storage import DEFAULT_DB_URL

if TYPE_CHECKING:  # the service package needs the [serve] extra: imported when serving
    from txanomaly.service.settings import Settings

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
    model: Annotated[Path | None, typer.Option(
        "--model", "-m", help="Model directory (txanomaly train output). Env: TXANOMALY_MODEL.",
        show_default=False)] = None,
    db: Annotated[str | None, typer.Option(
        help="sqlite:///PATH (embedded, one machine) or postgresql://USER@HOST:PORT/DB "
             f"(several replicas). Env: TXANOMALY_DB. Default {DEFAULT_DB_URL}.")] = None,
    db_schema: Annotated[str | None, typer.Option(
        help="PostgreSQL schema (created if missing). Env: TXANOMALY_DB_SCHEMA. Default: "
             "the search_path.")] = None,
    host: Annotated[str | None, typer.Option(
        help="Address to bind. Env: TXANOMALY_HOST. Default 127.0.0.1 (0.0.0.0 with "
             "--sagemaker).")] = None,
    port: Annotated[int | None, typer.Option(
        help="Port. Default 8000 (8080 with --sagemaker).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    api_key: Annotated[list[str] | None, typer.Option(
        "--api-key", help="Accepted API key (header X-API-Key); repeat for several. Env: "
                          "TXANOMALY_API_KEYS (comma-separated).")] = None,
    allow_unauthenticated: Annotated[bool | None, typer.Option(
        "--allow-unauthenticated", show_default=False,
        help="Without an API key, serve data to anyone who reaches the server (behind "
             "SageMaker's IAM, say). Env: TXANOMALY_ALLOW_UNAUTHENTICATED. Default: on for a "
             "loopback --host, off otherwise.")] = None,
    max_batch: Annotated[int | None, typer.Option(
        min=1, help="Most transactions per request. Env: TXANOMALY_MAX_BATCH. Default 1000."
    )] = None,
    max_body_bytes: Annotated[int | None, typer.Option(
        min=1, help="Largest request body (bytes). Env: TXANOMALY_MAX_BODY_BYTES. Default "
                    "1048576.")] = None,
    max_csv_rows: Annotated[int | None, typer.Option(
        min=1, help="Most rows per SageMaker text/csv request. Env: TXANOMALY_MAX_CSV_ROWS. "
                    "Default 10000.")] = None,
    sqlite_synchronous: Annotated[str | None, typer.Option(
        help="SQLite: NORMAL survives a crash of the server (kill -9), FULL also a power "
             "loss (an fsync per commit). Env: TXANOMALY_SQLITE_SYNCHRONOUS. Default NORMAL."
    )] = None,
    sagemaker: Annotated[bool | None, typer.Option(
        "--sagemaker", show_default=False,
        help="SageMaker container mode: 0.0.0.0:8080; without an API key only /ping, "
             "/invocations and the probes are served. Env: TXANOMALY_SAGEMAKER.")] = None,
    top_reasons: Annotated[int | None, typer.Option(
        min=1, help="Reasons per verdict. Env: TXANOMALY_TOP_REASONS. Default 3.")] = None,
    pool_size: Annotated[int | None, typer.Option(
        min=1, help="Database connections per process. Env: TXANOMALY_POOL_SIZE. Default 8."
    )] = None,
    max_moved_rows: Annotated[int | None, typer.Option(
        min=1, help="Work budget: the stored key rows one request's late (back-dated) "
                    "arrivals may move; beyond it the request gets 429 and nothing is "
                    "written. Env: TXANOMALY_MAX_MOVED_ROWS. Default 100000.")] = None,
    model_key_file: Annotated[Path | None, typer.Option(
        help="File holding the key that verifies the model's signature. Env: "
             "TXANOMALY_MODEL_KEY (the key itself).")] = None,
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = False,
    log_level: Annotated[str, typer.Option(help="Log level (uvicorn and txanomaly).")
                         ] = "info",
) -> None:
    """Serve the scoring API: raw transactions in, verdicts and reasons out.

    Every setting: its option if given, else its TXANOMALY_* environment variable, else
    the default (a flag not given leaves the decision to the environment).
    """
    # The [serve] extra, imported here, in this process: when it is missing, handle_errors
    # says so in one line (in uvicorn's worker it would be a traceback).
    import uvicorn

    from txanomaly.service.app import create_app
    from txanomaly.service.runtime import Runtime
    from txanomaly.service.settings import get_settings

    settings = serve_settings({
        "model_dir": model, "db_url": db, "db_schema": db_schema, "host": host,
        "api_keys": tuple(api_key) if api_key else None,
        "allow_unauthenticated": allow_unauthenticated, "max_batch": max_batch,
        "max_body_bytes": max_body_bytes, "max_csv_rows": max_csv_rows,
        "sqlite_synchronous": sqlite_synchronous, "sagemaker": sagemaker,
        "top_reasons": top_reasons, "pool_size": pool_size, "max_moved_rows": max_moved_rows,
        "model_key": _read_key(model_key_file) if model_key_file else None})
    port = port or (8080 if settings.sagemaker else 8000)
    # Before the database is opened: a busy port must not leave a new database file behind.
    check_port_free(settings.host, port)
    # A bad model directory or database fails here, with its message, not inside a worker.
    Runtime.open(settings).close()
    # The settings in force (options and environment merged) travel to the workers, which
    # build the app by name and read them back with Settings.from_env.
    os.environ.update(settings.to_env())
    get_settings.cache_clear()
    uvicorn.run(f"{create_app.__module__}:{create_app.__name__}", factory=True, host=settings.host,
                port=port, workers=workers, access_log=access_log, log_level=log_level,
                log_config=log_config(log_level))


def serve_settings(options: dict[str, Any], environ: Mapping[str, str] | None = None
                   ) -> Settings:
    """The settings ``serve`` runs with: ``options`` (``None`` = not given) over the
    environment over the defaults; refused when they would serve data to anyone unasked.

    ``serve`` binds the socket itself, so on a loopback host without a key it knows that only
    this machine reaches the server: there its own default allows unauthenticated access (an
    option or the environment still decide). The app factory cannot know the address uvicorn
    binds, so it has no such default.
    """
    from txanomaly.service.settings import Settings, is_loopback

    settings = Settings.load(options, environ)
    if not settings.api_keys and is_loopback(settings.host):
        settings = Settings.load(options, environ, defaults={"allow_unauthenticated": True})
    settings.check_access()
    return settings


def _read_key(path: Path) -> str:
    """The model key in ``path`` (:func:`txanomaly.artifact.read_key`: the rule ``txanomaly
    model sign`` uses too, so both derive the same key)."""
    from txanomaly.artifact import read_key  # PyTorch: only when a key file is given

    return read_key(path)


def log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging configuration, with txanomaly's loggers on its handler at ``level``
    (the settings in force and the warnings of the app are logged there)."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["txanomaly"] = {"handlers": ["default"], "level": level.upper(),
                                      "propagate": False}
    return config


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
