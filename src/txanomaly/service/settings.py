"""Service settings: a frozen dataclass read from ``TXANOMALY_*`` environment variables.

``get_settings()`` is cached; tests build a :class:`Settings` directly and pass it to
:func:`txanomaly.service.create_app`, or clear the cache with ``get_settings.cache_clear()``.

=============================  ===========================================  =================
variable                       meaning                                      default
=============================  ===========================================  =================
TXANOMALY_MODEL                model directory                              (required)
TXANOMALY_DB                   ``sqlite:///PATH`` or ``postgresql://...``   sqlite:///txanomaly.db
TXANOMALY_DB_SCHEMA            PostgreSQL schema                            search_path
TXANOMALY_HOST                 the address the server binds                 127.0.0.1
TXANOMALY_API_KEYS             comma-separated accepted API keys            none
TXANOMALY_MAX_BODY_BYTES       largest request body                         1048576
TXANOMALY_MAX_BATCH            most transactions per request                1000
TXANOMALY_MAX_CSV_ROWS         most rows per SageMaker text/csv request     10000
TXANOMALY_SQLITE_SYNCHRONOUS   NORMAL (survives kill -9) or FULL (power)    NORMAL
TXANOMALY_SAGEMAKER            1: SageMaker mode (see docs/service.md)      0
TXANOMALY_TOP_REASONS          reasons per verdict                          3
TXANOMALY_POOL_SIZE            database connections per process             8
=============================  ===========================================  =================
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from txanomaly.errors import TxAnomalyError
from txanomaly.storage import DEFAULT_DB_URL

API_KEY_HEADER = "X-API-Key"
_LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


class SettingsError(TxAnomalyError):
    """The settings are invalid or unsafe (e.g. no API key on a public address)."""


@dataclass(frozen=True)
class Settings:
    """Everything the service needs to start; see the module docstring for the env vars."""

    model_dir: Path
    db_url: str = DEFAULT_DB_URL
    db_schema: str | None = None
    host: str = "127.0.0.1"
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    max_body_bytes: int = 1 << 20
    max_batch: int = 1000
    max_csv_rows: int = 10_000
    sqlite_synchronous: str = "NORMAL"
    sagemaker: bool = False
    top_reasons: int = 3
    pool_size: int = 8

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_batch", "max_csv_rows", "top_reasons",
                     "pool_size"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.sqlite_synchronous.upper() not in ("NORMAL", "FULL"):
            raise SettingsError("sqlite_synchronous must be NORMAL or FULL, got "
                                f"{self.sqlite_synchronous!r}")
        if any(not key for key in self.api_keys):
            raise SettingsError("an API key must not be empty")

    @property
    def loopback(self) -> bool:
        """Whether the server binds to a loopback address only."""
        return is_loopback(self.host)

    @property
    def auth_required(self) -> bool:
        """API keys are checked when any is configured (they must be beyond loopback)."""
        return bool(self.api_keys)

    @property
    def serve_v1(self) -> bool:
        """SageMaker mode without a key serves only /ping and /invocations (IAM guards
        those); the /v1 API is mounted whenever it can be protected or is loopback-only."""
        return bool(self.api_keys) or self.loopback

    def check_exposure(self) -> None:
        """Refuse to serve the /v1 API beyond loopback without an API key."""
        if not self.loopback and not self.api_keys and not self.sagemaker:
            raise SettingsError(
                f"binding to {self.host} exposes the API beyond this machine: give an API key "
                "(--api-key or TXANOMALY_API_KEYS), or bind to 127.0.0.1")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        """Read the ``TXANOMALY_*`` variables (see the module docstring)."""
        env = os.environ if environ is None else environ
        model = env.get("TXANOMALY_MODEL")
        if not model:
            raise SettingsError("TXANOMALY_MODEL is not set: give the model directory")

        def integer(name: str, default: int) -> int:
            text = env.get(name)
            if text is None or text == "":
                return default
            try:
                return int(text)
            except ValueError:
                raise SettingsError(f"{name} must be an integer, got {text!r}") from None

        keys = tuple(k.strip() for k in env.get("TXANOMALY_API_KEYS", "").split(",")
                     if k.strip())
        return cls(
            model_dir=Path(model),
            db_url=env.get("TXANOMALY_DB") or cls.db_url,
            db_schema=env.get("TXANOMALY_DB_SCHEMA") or None,
            host=env.get("TXANOMALY_HOST") or cls.host,
            api_keys=keys,
            max_body_bytes=integer("TXANOMALY_MAX_BODY_BYTES", cls.max_body_bytes),
            max_batch=integer("TXANOMALY_MAX_BATCH", cls.max_batch),
            max_csv_rows=integer("TXANOMALY_MAX_CSV_ROWS", cls.max_csv_rows),
            sqlite_synchronous=env.get("TXANOMALY_SQLITE_SYNCHRONOUS") or "NORMAL",
            sagemaker=env.get("TXANOMALY_SAGEMAKER", "0").lower() in ("1", "true", "yes"),
            top_reasons=integer("TXANOMALY_TOP_REASONS", cls.top_reasons),
            pool_size=integer("TXANOMALY_POOL_SIZE", cls.pool_size),
        )

    def to_env(self) -> dict[str, str]:
        """The environment variables that :meth:`from_env` reads back to these settings
        (used to hand settings to uvicorn worker processes)."""
        env = {
            "TXANOMALY_MODEL": str(self.model_dir), "TXANOMALY_DB": self.db_url,
            "TXANOMALY_HOST": self.host, "TXANOMALY_API_KEYS": ",".join(self.api_keys),
            "TXANOMALY_MAX_BODY_BYTES": str(self.max_body_bytes),
            "TXANOMALY_MAX_BATCH": str(self.max_batch),
            "TXANOMALY_MAX_CSV_ROWS": str(self.max_csv_rows),
            "TXANOMALY_SQLITE_SYNCHRONOUS": self.sqlite_synchronous,
            "TXANOMALY_SAGEMAKER": "1" if self.sagemaker else "0",
            "TXANOMALY_TOP_REASONS": str(self.top_reasons),
            "TXANOMALY_POOL_SIZE": str(self.pool_size),
        }
        if self.db_schema:
            env["TXANOMALY_DB_SCHEMA"] = self.db_schema
        return env


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
