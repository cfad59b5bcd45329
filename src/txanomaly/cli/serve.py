"""``txanomaly serve``: the REST API (uvicorn) over a model directory and a database."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from txanomaly.cli._common import handle_errors

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
             "(several replicas).")] = "sqlite:///txanomaly.db",
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
    import uvicorn

    from txanomaly.service.runtime import Runtime
    from txanomaly.service.settings import Settings, get_settings

    env_keys = [k for k in os.environ.get("TXANOMALY_API_KEYS", "").split(",") if k.strip()]
    settings = Settings(
        model_dir=model, db_url=db, host=host or ("0.0.0.0" if sagemaker else "127.0.0.1"),
        api_keys=tuple(api_key or env_keys), max_batch=max_batch,
        max_body_bytes=max_body_bytes, sqlite_synchronous=sqlite_synchronous,
        sagemaker=sagemaker)
    settings.check_exposure()
    # A bad model directory or database fails here, with its message, not inside a worker.
    Runtime.open(settings).close()
    os.environ.update(settings.to_env())
    get_settings.cache_clear()
    uvicorn.run("txanomaly.service.app:create_app", factory=True, host=settings.host,
                port=port or (8080 if sagemaker else 8000), workers=workers,
                access_log=access_log, log_level=log_level)
