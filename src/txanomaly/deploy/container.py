"""The container image's entry point (the Dockerfile's ``ENTRYPOINT``).

``docker run IMAGE serve`` is SageMaker's contract; anything else is run as given::

    docker run IMAGE serve                  txanomaly serve --sagemaker, port 8080 (or
                                            SAGEMAKER_BIND_TO_PORT), TXANOMALY_WORKERS workers
    docker run IMAGE serve --top-reasons 5  the same with more ``txanomaly serve`` options
    docker run IMAGE txanomaly serve ...    a plain service (TXANOMALY_HOST=0.0.0.0 in the
                                            image, so an API key is required)
    docker run IMAGE healthcheck            exit 0 when GET /ping answers 200 (HEALTHCHECK)

Every other setting comes from the ``TXANOMALY_*`` variables by the service's one rule
(docs/service.md). One more variable is read here, before the server starts:
``TXANOMALY_DB_SECRET`` names a Secrets Manager secret holding the PostgreSQL URL (or an RDS
credentials secret: JSON with username, password, host, port, dbname); its value becomes
``TXANOMALY_DB`` for the server, so the password never appears in the model's definition.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from txanomaly.errors import TxAnomalyError

logger = logging.getLogger(__name__)

#: SageMaker's port; SageMaker sets SAGEMAKER_BIND_TO_PORT when it wants another one
#: (inference pipelines), and the tests use it to run the same command on a free port.
SAGEMAKER_PORT = 8080
PLAIN_PORT = 8000
SECRET_VAR = "TXANOMALY_DB_SECRET"


class ContainerError(TxAnomalyError):
    """The container cannot start with this environment (the message says why)."""


def sagemaker_port(environ: Mapping[str, str]) -> int:
    """The port ``serve`` listens on."""
    text = environ.get("SAGEMAKER_BIND_TO_PORT", "").strip()
    if not text:
        return SAGEMAKER_PORT
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ContainerError(f"SAGEMAKER_BIND_TO_PORT must be a port number, got {text!r}")
    return int(text)


def serve_command(extra: Sequence[str], environ: Mapping[str, str]) -> list[str]:
    """The ``txanomaly serve`` command line of SageMaker's ``serve``.

    >>> serve_command([], {"TXANOMALY_WORKERS": "2"})
    ['txanomaly', 'serve', '--sagemaker', '--port', '8080', '--workers', '2']
    """
    workers = environ.get("TXANOMALY_WORKERS", "").strip() or "1"
    if not workers.isdigit() or int(workers) < 1:
        raise ContainerError(f"TXANOMALY_WORKERS must be a positive integer, got {workers!r}")
    return ["txanomaly", "serve", "--sagemaker", "--port", str(sagemaker_port(environ)),
            "--workers", workers, *extra]


def database_url(secret: str) -> str:
    """The PostgreSQL URL in a secret's text: the URL itself, or an RDS credentials secret.

    >>> database_url('{"username": "app", "password": "p@ss/w", "host": "db.local", '
    ...              '"port": 5432, "dbname": "tx"}')
    'postgresql://app:p%40ss%2Fw@db.local:5432/tx'
    """
    text = secret.strip()
    if text.startswith(("postgresql://", "postgres://")):
        return text
    try:
        fields: Any = json.loads(text)
    except ValueError:
        fields = None
    if not isinstance(fields, dict):
        raise ContainerError(f"the secret in {SECRET_VAR} is neither a postgresql:// URL nor "
                             "RDS credentials JSON")
    missing = [k for k in ("username", "password", "host") if not fields.get(k)]
    if missing:
        raise ContainerError(f"the RDS credentials secret in {SECRET_VAR} lacks "
                             f"{', '.join(missing)}")
    user, password = quote(str(fields["username"]), safe=""), quote(str(fields["password"]),
                                                                   safe="")
    port = fields.get("port") or 5432
    dbname = quote(str(fields.get("dbname") or "postgres"), safe="")
    return f"postgresql://{user}:{password}@{fields['host']}:{port}/{dbname}"


def resolve_database(environ: Mapping[str, str], client: Any = None) -> dict[str, str]:
    """The server's environment: ``environ`` with TXANOMALY_DB read from the secret named
    by TXANOMALY_DB_SECRET, when it names one (``client``: a boto3 Secrets Manager client)."""
    env = dict(environ)
    secret_id = env.pop(SECRET_VAR, "").strip()
    if not secret_id:
        return env
    if env.get("TXANOMALY_DB", "").strip():
        raise ContainerError(f"give TXANOMALY_DB or {SECRET_VAR}, not both")
    if client is None:
        import boto3  # in the image; only needed when a secret is named

        client = boto3.client("secretsmanager")
    try:
        value = client.get_secret_value(SecretId=secret_id)
    except Exception as exc:  # botocore's errors: the message names the cause
        raise ContainerError(f"cannot read the database secret {secret_id}: {exc}") from exc
    env["TXANOMALY_DB"] = database_url(value.get("SecretString") or "")
    return env


def healthcheck(environ: Mapping[str, str], timeout: float = 4.0) -> int:
    """0 when ``GET /ping`` answers 200 on the serve port, TXANOMALY_HEALTHCHECK_PORT or the
    plain service's 8000; 1 otherwise (Docker's HEALTHCHECK convention)."""
    chosen = environ.get("TXANOMALY_HEALTHCHECK_PORT", "").strip()
    ports = [chosen] if chosen else [str(sagemaker_port(environ)), str(PLAIN_PORT)]
    for port in ports:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping",
                                        timeout=timeout) as answer:
                if answer.status == 200:
                    return 0
        except (urllib.error.URLError, OSError):
            continue
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command ``argv`` selects (see the module docstring); replaces this process."""
    args = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    try:
        if args[:1] == ["healthcheck"]:
            return healthcheck(os.environ)
        command = serve_command(args[1:], os.environ) if args[:1] in ([], ["serve"]) else args
        env = resolve_database(os.environ)
    except ContainerError as exc:
        logger.error("%s", exc)
        return 1
    logger.info("starting: %s", " ".join(command))
    os.execvpe(command[0], command, env)


if __name__ == "__main__":
    sys.exit(main())
