"""The AWS deployment's configuration: CDK context values checked into one frozen object,
and the environment the SageMaker container gets from it.

Plain Python (no aws_cdk import): the container test uses :func:`container_environment` to
run the image's entry point with exactly the environment the stack gives the endpoint.

Context keys (``cdk deploy -c KEY=VALUE`` or ``cdk.json``):

================  =================================================================  =========
key               meaning                                                            default
================  =================================================================  =========
model_dir         the model directory to deploy (``txanomaly train`` output)         required
history           where the per-user history lives: ``none`` (nothing kept: every    required
                  transaction is scored as its user's first), ``secret`` (an
                  existing PostgreSQL, its URL in Secrets Manager) or ``rds`` (a
                  PostgreSQL instance the stack creates in a VPC)
database_secret   ``history=secret``: the secret's full ARN                           (none)
db_schema         PostgreSQL schema for the history                                  search_path
allowed_origins   comma-separated browser origins allowed by CORS (never ``*``)      none
max_batch         most transactions per batch request                                1000
max_body_bytes    largest request body                                               1048576
workers           server processes per endpoint instance                             1
log_retention     days the logs are kept                                             30
================  =================================================================  =========
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from txanomaly.errors import TxAnomalyError

HISTORY_CHOICES = ("none", "secret", "rds")
#: The SQLite file of ``history=none``: inside the instance, lost with it (said, not hidden).
EPHEMERAL_DB = "sqlite:////tmp/txanomaly.db"
_SECRET_ARN = re.compile(r"^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[\w/+=.@-]+$")
#: API Gateway's request limit is 10 MB; SageMaker's InvokeEndpoint payload limit is 6 MB.
MAX_BODY_LIMIT = 6 * 1024 * 1024
#: CloudWatch Logs accepts only these retention periods (days).
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096,
                      1827, 2192, 2557, 2922, 3288, 3653)


class DeployConfigError(TxAnomalyError):
    """A context value is missing or invalid (the message names it)."""


@dataclass(frozen=True)
class DeployConfig:
    """The deployment's choices (see the module docstring)."""

    model_dir: Path
    history: str
    database_secret: str | None = None
    db_schema: str | None = None
    allowed_origins: tuple[str, ...] = ()
    max_batch: int = 1000
    max_body_bytes: int = 1 << 20
    workers: int = 1
    log_retention: int = 30

    def __post_init__(self) -> None:
        if self.history not in HISTORY_CHOICES:
            raise DeployConfigError(
                f"context 'history' must be one of {', '.join(HISTORY_CHOICES)} (where the "
                f"per-user history lives; see docs/deploy-aws.md), got {self.history!r}")
        if self.history == "secret":
            if not self.database_secret or not _SECRET_ARN.match(self.database_secret):
                raise DeployConfigError(
                    "history=secret needs context 'database_secret': the full ARN of the "
                    "Secrets Manager secret holding the postgresql:// URL, got "
                    f"{self.database_secret!r}")
        elif self.database_secret:
            raise DeployConfigError(f"context 'database_secret' is only for history=secret "
                                    f"(history is {self.history!r})")
        for origin in self.allowed_origins:
            if origin == "*" or not re.match(r"^https?://[^/*\s]+$", origin):
                raise DeployConfigError(f"context 'allowed_origins': {origin!r} is not an "
                                        "origin (scheme://host[:port], no wildcard)")
        for name, low, high in (("max_batch", 1, 100_000),
                                ("max_body_bytes", 1, MAX_BODY_LIMIT), ("workers", 1, 64)):
            value = getattr(self, name)
            if not low <= value <= high:
                raise DeployConfigError(f"context {name!r} must be in {low}..{high}, got {value}")
        if self.log_retention not in LOG_RETENTION_DAYS:
            raise DeployConfigError(f"context 'log_retention' must be one of CloudWatch's "
                                    f"periods {LOG_RETENTION_DAYS}, got {self.log_retention}")
        if self.db_schema is not None and not re.match(r"^[a-z_][a-z0-9_]{0,62}$",
                                                       self.db_schema):
            raise DeployConfigError(f"context 'db_schema' must be a lower-case SQL name, "
                                    f"got {self.db_schema!r}")

    @property
    def stores_history(self) -> bool:
        """Transactions are stored in a shared database that outlives the instances."""
        return self.history != "none"

    @classmethod
    def from_context(cls, get: Callable[[str], Any]) -> DeployConfig:
        """Read the context through ``get`` (``node.try_get_context``): missing keys take
        the defaults, except the two that must be chosen."""
        model_dir = get("model_dir")
        if not model_dir:
            raise DeployConfigError("context 'model_dir' is required: the model directory to "
                                    "deploy (cdk deploy -c model_dir=models/standard)")
        path = Path(str(model_dir)).expanduser().resolve()
        missing = [n for n in ("model.json", "model.safetensors") if not (path / n).is_file()]
        if missing:
            raise DeployConfigError(f"context 'model_dir': {path} is not a txanomaly model "
                                    f"directory (no {', '.join(missing)})")
        history = get("history")
        if history is None:
            raise DeployConfigError(
                "context 'history' is required: none (nothing kept), secret (an existing "
                "PostgreSQL) or rds (a PostgreSQL the stack creates); see docs/deploy-aws.md")
        origins = get("allowed_origins") or ()
        if isinstance(origins, str):
            origins = [o.strip() for o in origins.split(",") if o.strip()]
        return cls(model_dir=path, history=str(history),
                   database_secret=get("database_secret") or None,
                   db_schema=get("db_schema") or None, allowed_origins=tuple(origins),
                   **{name: _integer(get, name, default) for name, default in (
                       ("max_batch", cls.max_batch), ("max_body_bytes", cls.max_body_bytes),
                       ("workers", cls.workers), ("log_retention", cls.log_retention))})


def _integer(get: Callable[[str], Any], name: str, default: int) -> int:
    value = get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise DeployConfigError(f"context {name!r} must be an integer, got {value!r}") from None


def container_environment(config: DeployConfig, secret_arn: str | None = None
                          ) -> dict[str, str]:
    """The SageMaker model's container environment.

    SageMaker's InvokeEndpoint is authorised by IAM and calls ``/invocations`` without an API
    key, so the container serves it unauthenticated (docs/service.md, SageMaker); the API key
    is checked by API Gateway. ``secret_arn``: the database secret (``secret`` and ``rds``).

    >>> env = container_environment(DeployConfig(Path("m"), "none"))
    >>> env["TXANOMALY_DB"], env["TXANOMALY_ALLOW_UNAUTHENTICATED"]
    ('sqlite:////tmp/txanomaly.db', '1')
    """
    env = {"TXANOMALY_ALLOW_UNAUTHENTICATED": "1",
           "TXANOMALY_MAX_BATCH": str(config.max_batch),
           "TXANOMALY_MAX_BODY_BYTES": str(config.max_body_bytes),
           "TXANOMALY_WORKERS": str(config.workers)}
    if config.stores_history:
        if not secret_arn:
            raise DeployConfigError(f"history={config.history} needs the database secret")
        env["TXANOMALY_DB_SECRET"] = secret_arn
        if config.db_schema:
            env["TXANOMALY_DB_SCHEMA"] = config.db_schema
    else:
        env["TXANOMALY_DB"] = EPHEMERAL_DB
    return env
