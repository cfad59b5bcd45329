"""Service settings: a frozen dataclass, built by one precedence rule for every way the app
starts.

**Command-line options over environment variables over defaults**, field by field:
``txanomaly serve`` (and the SageMaker container, which runs it) passes the options it was
given; ``uvicorn --factory txanomaly.service.app:create_app`` and the Lambda handler have no
options, so the environment decides. An option that was not given never overrides the
environment. ``get_settings()`` is cached; tests build a :class:`Settings` directly and pass
it to :func:`txanomaly.service.create_app`, or clear the cache with
``get_settings.cache_clear()``.

================================  =========================================  ================
variable (``serve`` option)       meaning                                    default
================================  =========================================  ================
TXANOMALY_MODEL (--model)         model directory                            (required)
TXANOMALY_DB (--db)               ``sqlite:///PATH`` or ``postgresql://...``  sqlite:///txanomaly.db
TXANOMALY_DB_SCHEMA               PostgreSQL schema                          search_path
TXANOMALY_HOST (--host)           the address ``serve`` binds                127.0.0.1 (0.0.0.0
                                                                             with SageMaker)
TXANOMALY_API_KEYS (--api-key)    comma-separated accepted API keys          none
TXANOMALY_ALLOW_UNAUTHENTICATED   1: serve data without a key (no key set)   0
TXANOMALY_MAX_BODY_BYTES          largest request body                       1048576
TXANOMALY_MAX_BATCH               most transactions per request              1000
TXANOMALY_MAX_CSV_ROWS            most rows per SageMaker text/csv request   10000
TXANOMALY_SQLITE_SYNCHRONOUS      NORMAL (survives kill -9) or FULL (power)  NORMAL
TXANOMALY_SAGEMAKER (--sagemaker) 1: SageMaker mode (see docs/service.md)    0
TXANOMALY_TOP_REASONS             reasons per verdict                        3
TXANOMALY_POOL_SIZE               database connections per process           8
TXANOMALY_MAX_MOVED_ROWS          stored key rows one request's late         100000
                                  arrivals may move (else 429)
TXANOMALY_MODEL_KEY               key that verifies the model's signature    none
================================  =========================================  ================

Every variable has a ``serve`` option of the same name (``--db-schema``, ``--max-batch``...),
except ``TXANOMALY_MODEL_KEY``, whose option is ``--model-key-file PATH`` (a key on a command
line is visible to every user of the machine).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from txanomaly.errors import TxAnomalyError
from txanomaly.storage import DEFAULT_DB_URL

API_KEY_HEADER = "X-API-Key"
_LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")

#: Field -> environment variable: the one table that reading, writing and logging use.
ENV_VARS: dict[str, str] = {
    "model_dir": "TXANOMALY_MODEL", "db_url": "TXANOMALY_DB",
    "db_schema": "TXANOMALY_DB_SCHEMA", "host": "TXANOMALY_HOST",
    "api_keys": "TXANOMALY_API_KEYS", "allow_unauthenticated": "TXANOMALY_ALLOW_UNAUTHENTICATED",
    "max_body_bytes": "TXANOMALY_MAX_BODY_BYTES", "max_batch": "TXANOMALY_MAX_BATCH",
    "max_csv_rows": "TXANOMALY_MAX_CSV_ROWS",
    "sqlite_synchronous": "TXANOMALY_SQLITE_SYNCHRONOUS", "sagemaker": "TXANOMALY_SAGEMAKER",
    "top_reasons": "TXANOMALY_TOP_REASONS", "pool_size": "TXANOMALY_POOL_SIZE",
    "max_moved_rows": "TXANOMALY_MAX_MOVED_ROWS", "model_key": "TXANOMALY_MODEL_KEY",
}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class SettingsError(TxAnomalyError):
    """The settings are invalid or unsafe (e.g. data served to anyone without saying so)."""


@dataclass(frozen=True)
class Settings:
    """Everything the service needs to start; see the module docstring for the env vars."""

    model_dir: Path
    db_url: str = DEFAULT_DB_URL
    db_schema: str | None = None
    host: str = "127.0.0.1"
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    allow_unauthenticated: bool = False
    max_body_bytes: int = 1 << 20
    max_batch: int = 1000
    max_csv_rows: int = 10_000
    sqlite_synchronous: str = "NORMAL"
    sagemaker: bool = False
    top_reasons: int = 3
    pool_size: int = 8
    #: The work budget of one request's late arrivals (stored key rows they may move):
    #: 100,000 took about 0.1 s on SQLite and 0.5 s on PostgreSQL on the 2-core test machine.
    max_moved_rows: int = 100_000
    model_key: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_batch", "max_csv_rows", "top_reasons",
                     "pool_size", "max_moved_rows"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.sqlite_synchronous.upper() not in ("NORMAL", "FULL"):
            raise SettingsError("sqlite_synchronous must be NORMAL or FULL, got "
                                f"{self.sqlite_synchronous!r}")
        # A comma would split the key when the settings travel to worker processes.
        if any(not key or "," in key for key in self.api_keys):
            raise SettingsError("an API key must not be empty or contain a comma")
        if self.model_key is not None and not self.model_key:
            raise SettingsError("the model key is empty")

    @property
    def auth_required(self) -> bool:
        """API keys are checked on every data route when any is configured."""
        return bool(self.api_keys)

    @property
    def serve_v1(self) -> bool:
        """SageMaker mode without a key serves only /ping and /invocations (IAM guards
        those); otherwise the /v1 API is mounted."""
        return bool(self.api_keys) or not self.sagemaker

    def check_access(self) -> None:
        """Refuse to serve data to anyone unless the operator said so explicitly.

        Whatever address the server believes it binds: an app factory under uvicorn, or a
        Lambda function, cannot know who reaches it.
        """
        if not self.api_keys and not self.allow_unauthenticated:
            raise SettingsError(
                "no API key is configured: give one (--api-key or TXANOMALY_API_KEYS), or "
                "allow unauthenticated access explicitly (--allow-unauthenticated or "
                "TXANOMALY_ALLOW_UNAUTHENTICATED=1) where something else guards the server "
                "(loopback only, SageMaker's IAM-protected endpoint)")

    @classmethod
    def load(cls, options: Mapping[str, Any] | None = None,
             environ: Mapping[str, str] | None = None,
             defaults: Mapping[str, Any] | None = None) -> Settings:
        """Options (``None`` = not given) over the environment over ``defaults`` over the
        class defaults, field by field.

        >>> s = Settings.load({"max_batch": 7, "top_reasons": None},
        ...                   {"TXANOMALY_MODEL": "m", "TXANOMALY_MAX_BATCH": "5",
        ...                    "TXANOMALY_TOP_REASONS": "2"})
        >>> s.max_batch, s.top_reasons, s.host
        (7, 2, '127.0.0.1')
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = dict(defaults or {})
        for name, var in ENV_VARS.items():
            text = env.get(var, "").strip()
            if text:  # an empty variable counts as unset
                values[name] = _parse(name, var, text)
        values.update({k: v for k, v in (options or {}).items() if v is not None})
        if not values.get("model_dir"):
            raise SettingsError("no model directory: give --model or TXANOMALY_MODEL")
        # SageMaker reaches the container on every interface; anywhere else, loopback.
        values.setdefault("host", "0.0.0.0" if values.get("sagemaker") else cls.host)
        return cls(**values)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The environment over the defaults (see the module docstring)."""
        return cls.load(environ=environ)

    def to_env(self) -> dict[str, str]:
        """The environment variables that :meth:`from_env` reads back to these settings
        (used to hand settings to uvicorn worker processes); unset fields are left out."""
        return {var: _format(getattr(self, name)) for name, var in ENV_VARS.items()
                if getattr(self, name) is not None}

    def __repr__(self) -> str:
        return f"Settings({self.describe()})"

    def describe(self) -> str:
        """The settings in force, for the startup log: keys counted, secrets redacted."""
        shown = []
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if item.name == "api_keys":
                value = f"{len(value)} configured"
            elif item.name == "model_key":
                value = "set" if value else "none"
            elif item.name == "db_url":
                value = redact_url(value)
            shown.append(f"{item.name}={value}")
        return " ".join(shown)


def _parse(name: str, var: str, text: str) -> Any:
    """One environment variable's text as the field's type; SettingsError naming it."""
    parser = _PARSERS.get(name, str)
    try:
        return parser(text)
    except ValueError:
        expected = "an integer" if parser is int else "1 or 0 (true/false, yes/no, on/off)"
        raise SettingsError(f"{var} must be {expected}, got {text!r}") from None


def _boolean(text: str) -> bool:
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise ValueError(text)


def _keys(text: str) -> tuple[str, ...]:
    return tuple(key.strip() for key in text.split(",") if key.strip())


_PARSERS: dict[str, Callable[[str], Any]] = {
    "model_dir": Path, "api_keys": _keys, "allow_unauthenticated": _boolean,
    "sagemaker": _boolean, **dict.fromkeys(
        ("max_body_bytes", "max_batch", "max_csv_rows", "top_reasons", "pool_size",
         "max_moved_rows"), int)}


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value)


def redact_url(url: str) -> str:
    """The URL without its password.

    >>> redact_url("postgresql://app:s3cret@db:5432/tx")
    'postgresql://app:***@db:5432/tx'
    """
    return re.sub(r"^([^:/]+://[^:/@]*):[^@]*@", r"\1:***@", url)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost; False for 0.0.0.0, :: and anything else.

    >>> is_loopback("127.0.0.1"), is_loopback("0.0.0.0"), is_loopback("localhost")
    (True, False, True)
    """
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once from the environment."""
    return Settings.from_env()
