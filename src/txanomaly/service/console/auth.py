"""Who is at the console: a session cookie over the service's one authorisation rule.

* **With API keys** (``TXANOMALY_API_KEYS``): the analyst enters a key once, on the sign-in
  page, with their name; the server answers a cookie ``txanomaly_console`` (HttpOnly,
  SameSite=Strict, Path=/console, Secure over HTTPS) that holds the name, the key's
  fingerprint and the time, signed with HMAC-SHA256 under that key. Removing the key from
  the configuration ends its sessions; a session lasts :data:`SESSION_SECONDS`.
* **Without a key** (unauthenticated access allowed, as for the API): the console answers
  only clients on loopback; the sign-in page asks for a name only.

Decisions are POSTs that need the session cookie (never sent cross-site: SameSite=Strict),
a CSRF token derived from it, and, when the browser sends one, an ``Origin`` naming the
server's own host. Each decision records ``name (key <fingerprint>)``: who, and with which key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import orjson
from starlette.requests import Request

from txanomaly.service.settings import Settings, is_loopback

COOKIE = "txanomaly_console"
#: A working day and a half: long enough for a shift, short enough that a lost laptop's
#: session ends by itself.
SESSION_SECONDS = 12 * 3600
MAX_NAME = 80


class ConsoleDenied(Exception):
    """The request may not use the console; ``status`` 401 (sign in) or 403 (never)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Analyst:
    """A signed-in analyst: the name they gave and the fingerprint of the key they used."""

    name: str
    key_fingerprint: str | None
    cookie: str

    @property
    def author(self) -> str:
        """What a decision records as its author."""
        if self.key_fingerprint is None:
            return f"{self.name} (no key, loopback)"
        return f"{self.name} (key {self.key_fingerprint})"


def fingerprint(key: str) -> str:
    """A key's public name: the first 12 hex digits of its SHA-256.

    >>> fingerprint("test-key")
    '62af8704764f'
    """
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def _no_key_secret(settings: Settings) -> bytes:
    """The signing secret when no key is configured (loopback only): stable across worker
    processes of one configuration, so a session works on each of them."""
    seed = f"txanomaly-console\x1f{settings.model_dir.resolve()}\x1f{settings.db_url}"
    return hashlib.sha256(seed.encode()).digest()


def _secret(settings: Settings, fp: str | None) -> bytes | None:
    if not settings.api_keys:
        return _no_key_secret(settings) if fp is None else None
    for key in settings.api_keys:
        if fp is not None and hmac.compare_digest(fingerprint(key), fp):
            return key.encode()
    return None


def _mac(secret: bytes, payload: str) -> str:
    return hmac.new(secret, payload.encode(), hashlib.sha256).hexdigest()


def check_client(request: Request) -> None:
    """Without a key the console serves loopback clients only (403 otherwise)."""
    settings: Settings = request.app.state.settings
    if settings.api_keys:
        return
    host = request.client.host if request.client is not None else ""
    if not is_loopback(host):
        raise ConsoleDenied(403, "no API key is configured: the console answers only on "
                                 "this machine (loopback); configure a key to use it from "
                                 "elsewhere")


def sign_in(request: Request, name: str, key: str | None) -> str:
    """Check the name and key; return the session cookie's value.

    Raises
    ------
    ConsoleDenied
        401: a key is configured and this one is not among them; 403: not on loopback
        without a key.
    """
    check_client(request)
    settings: Settings = request.app.state.settings
    name = " ".join(name.split())[:MAX_NAME]
    if not name:
        raise ConsoleDenied(401, "give your name: every decision records who made it")
    fp: str | None = None
    if settings.api_keys:
        if not key or not any(hmac.compare_digest(key.encode(), k.encode())
                              for k in settings.api_keys):
            raise ConsoleDenied(401, "that API key is not valid")
        fp = fingerprint(key)
    payload = base64.urlsafe_b64encode(orjson.dumps(
        {"n": name, "k": fp, "t": int(time.time())})).decode()
    secret = _secret(settings, fp)
    assert secret is not None
    return f"{payload}.{_mac(secret, payload)}"


def current_analyst(request: Request) -> Analyst:
    """The signed-in analyst of this request; :class:`ConsoleDenied` (401) otherwise."""
    check_client(request)
    settings: Settings = request.app.state.settings
    cookie = request.cookies.get(COOKIE, "")
    payload, _, mac = cookie.partition(".")
    try:
        data = orjson.loads(base64.urlsafe_b64decode(payload.encode("ascii")))
        name, fp, issued = str(data["n"]), data["k"], int(data["t"])
    except (ValueError, KeyError, TypeError, UnicodeEncodeError):
        raise ConsoleDenied(401, "sign in to use the console") from None
    secret = _secret(settings, fp if isinstance(fp, str) else None)
    if secret is None or not hmac.compare_digest(_mac(secret, payload), mac):
        raise ConsoleDenied(401, "sign in to use the console")
    if not 0 <= time.time() - issued <= SESSION_SECONDS:
        raise ConsoleDenied(401, "your session has ended: sign in again")
    return Analyst(name, fp if isinstance(fp, str) else None, cookie)


def csrf_token(analyst: Analyst, request: Request) -> str:
    """The token every console form carries: tied to this session."""
    secret = _secret(request.app.state.settings, analyst.key_fingerprint) or b""
    return _mac(secret, "csrf\x1f" + analyst.cookie)[:32]


def check_post(request: Request, analyst: Analyst, token: str) -> None:
    """A console POST: same-origin (when the browser says) and the session's CSRF token."""
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host", ""):
        # The host only: behind a TLS-terminating proxy the scheme the app sees differs.
        raise ConsoleDenied(403, "cross-site request refused")
    if not hmac.compare_digest(token.encode(), csrf_token(analyst, request).encode()):
        raise ConsoleDenied(403, "the form is stale or was not sent by the console: reload "
                                 "the page and try again")


__all__ = ["COOKIE", "SESSION_SECONDS", "Analyst", "ConsoleDenied", "check_client",
           "check_post", "csrf_token", "current_analyst", "fingerprint", "sign_in"]
