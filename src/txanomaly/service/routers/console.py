"""The analysts' console at ``/console``: the review queue, a transaction, a user, the model,
the decisions; HTML pages, their PNG pictures and the live metrics (docs/console.md).

Access (:mod:`txanomaly.service.console.auth`): with API keys, a signed session cookie from
the sign-in page; without, loopback clients only. Decisions are form POSTs with the session's
CSRF token; each is stored as feedback (:class:`~txanomaly.storage.sql_review.ReviewStore`),
the same as ``POST /v1/transactions/{id}/feedback``. Pages are not part of the OpenAPI
document; the static files (style, script) are public and hold no data.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any, TypeVar, cast
from urllib.parse import quote, urlencode

import numpy as np
from fastapi import APIRouter, FastAPI, Form, Query, Request
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, RedirectResponse, Response

from txanomaly import plots
from txanomaly.schema import MAX_STRING_LENGTH, check_string, parse_timestamp
from txanomaly.service.console import auth, charts, pages
from txanomaly.service.console.auth import Analyst, ConsoleDenied
from txanomaly.service.console.live import LiveSampler
from txanomaly.service.deps import get_runtime
from txanomaly.service.responses import json_response
from txanomaly.service.routers.feedback import feedback_csv, queue_cursor, read_queue_cursor
from txanomaly.service.runtime import Runtime
from txanomaly.storage.sql_review import (
    FeedbackError,
    QueueFilter,
    UnknownTransaction,
    UserTransaction,
)

PREFIX = pages.PREFIX
PAGE_SIZE = 50
TIMELINE_ROWS = 150
#: Stored transactions whose best-matching units make the live hit map.
HIT_ROWS = 20_000
#: Seconds a model picture (and the flag rate under it) is reused before it is read again.
PICTURE_TTL = 60.0
#: The model page's flag rate: hourly buckets over the last week of transaction time.
RATE_BUCKET_MS = 3_600_000
RATE_BUCKET_WORDS = "hour"
RATE_DAYS = 7

router = APIRouter(prefix=PREFIX, include_in_schema=False)
T = TypeVar("T")


def install(app: FastAPI) -> None:
    """Mount the console on ``app``: routes, static files, the denial handler, the sampler."""
    app.include_router(router)
    static = resources.files("txanomaly.service.console") / "static"
    app.mount(f"{PREFIX}/static", StaticFiles(directory=str(static)), name="console-static")
    app.state.console_cache = {}

    async def denied(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ConsoleDenied)
        wants_page = request.method == "GET" and not request.url.path.endswith(
            (".png", ".csv")) and "/api/" not in request.url.path
        if exc.status == 401 and wants_page:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"{PREFIX}/login?{urlencode({'next': target})}", 303)
        if exc.status == 401 and request.method == "POST":
            return HTMLResponse(pages.login_page(bool(request.app.state.settings.api_keys),
                                                 exc.message, PREFIX + "/"), exc.status)
        return HTMLResponse(pages.message_page("Not allowed", exc.message), exc.status)

    app.add_exception_handler(ConsoleDenied, denied)


def _session(request: Request) -> tuple[Analyst, str, Runtime]:
    analyst = auth.current_analyst(request)
    return analyst, auth.csrf_token(analyst, request), get_runtime(request)


def _html(text: str, status: int = 200) -> HTMLResponse:
    # The pages hold stored transactions: never cached by the browser or a proxy.
    return HTMLResponse(text, status, headers={"Cache-Control": "no-store",
                                               "X-Frame-Options": "DENY",
                                               "Content-Security-Policy": _CSP})


def _png(data: bytes) -> Response:
    return Response(data, media_type="image/png", headers={"Cache-Control": "no-store"})


#: Everything from this server; no inline script; inline style attributes for the bars.
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'")


def _features(runtime: Runtime) -> dict[str, Any]:
    return {f.name: f for f in runtime.scorer.model.feature_set_.features}


# --------------------------------------------------------------------------- sign-in
@router.get("")
async def root() -> Response:
    return RedirectResponse(f"{PREFIX}/", 307)


@router.get("/login")
async def login_form(request: Request, next: str = PREFIX + "/") -> Response:
    auth.check_client(request)
    return _html(pages.login_page(bool(request.app.state.settings.api_keys), None, next))


@router.post("/login")
async def login(request: Request, name: Annotated[str, Form(max_length=200)] = "",
                key: Annotated[str | None, Form(max_length=1000)] = None,
                next: Annotated[str, Form(max_length=2000)] = PREFIX + "/") -> Response:
    try:
        cookie = auth.sign_in(request, name, key)
    except ConsoleDenied as exc:
        if exc.status == 403:
            raise
        return _html(pages.login_page(bool(request.app.state.settings.api_keys), exc.message,
                                      next), 401)
    target = next if next.startswith(PREFIX + "/") and "//" not in next else PREFIX + "/"
    response = RedirectResponse(target, 303)
    response.set_cookie(auth.COOKIE, cookie, max_age=auth.SESSION_SECONDS, path=PREFIX,
                        httponly=True, samesite="strict", secure=request.url.scheme == "https")
    return response


@router.post("/logout")
async def logout(request: Request, csrf: Annotated[str, Form(max_length=200)] = ""
                 ) -> Response:
    analyst = auth.current_analyst(request)
    auth.check_post(request, analyst, csrf)
    response = RedirectResponse(f"{PREFIX}/login", 303)
    response.delete_cookie(auth.COOKIE, path=PREFIX)
    return response


# --------------------------------------------------------------------------- the queue
def _time(name: str, value: str | None) -> int | None:
    if not value:
        return None
    try:
        return parse_timestamp(value)
    except ValueError as exc:
        raise ConsoleDenied(422, f"{name}: {exc}") from None


@router.get("/")
async def queue(request: Request,
                state: Annotated[str, Query(max_length=20)] = "open",
                risk: Annotated[str, Query(max_length=20)] = "",
                user: Annotated[str, Query(max_length=MAX_STRING_LENGTH)] = "",
                start: Annotated[str, Query(alias="from", max_length=64)] = "",
                end: Annotated[str, Query(alias="to", max_length=64)] = "",
                order: Annotated[str, Query(max_length=20)] = "newest",
                cursor: Annotated[str | None, Query(max_length=1024)] = None,
                notice: Annotated[str | None, Query(max_length=300)] = None) -> Response:
    analyst, csrf, runtime = _session(request)
    try:
        where = QueueFilter(state=state, risk=risk.upper() or None, user=user or None,
                            start=_time("from", start), end=_time("to", end), order=order)
    except FeedbackError as exc:
        raise ConsoleDenied(422, str(exc)) from None
    after = read_queue_cursor(cursor, order) if cursor else None
    items = await runtime.call(runtime.review.queue, where, PAGE_SIZE, after)
    counts = await runtime.call(runtime.review.counts, where)
    filters = {k: v for k, v in (("state", state), ("risk", risk), ("user", user),
                                 ("from", start), ("to", end), ("order", order)) if v}
    next_query = (urlencode({**filters, "cursor": queue_cursor(items[-1], order)})
                  if len(items) == PAGE_SIZE else None)
    return _html(pages.queue_page(items, where, counts, next_query, _features(runtime),
                                  analyst.name, csrf, notice, filters))


# --------------------------------------------------------------------------- a transaction
def _checked_id(value: str) -> str:
    try:
        return check_string(value)
    except ValueError as exc:
        raise ConsoleDenied(422, f"invalid id: {exc}") from None


async def _stored(runtime: Runtime, transaction_id: str) -> Any:
    found = await runtime.call(runtime.store.get, _checked_id(transaction_id))
    if found is None:
        raise ConsoleDenied(404, f"no stored transaction {transaction_id!r}")
    return found


def _timeline_user(record: dict[str, Any]) -> str | None:
    """Whose history the transaction page plots: the sender's, else the recipient's."""
    return record.get("origin_user_id") or record.get("destination_user_id")


@router.get("/transactions/{transaction_id:path}/timeline.png")
async def transaction_timeline(request: Request, transaction_id: str) -> Response:
    _, _, runtime = _session(request)
    found = await _stored(runtime, transaction_id)
    user = _timeline_user(found.record)
    if user is None:
        raise ConsoleDenied(404, "this transaction has no user ids")
    rows = await runtime.call(runtime.review.user_transactions, user, TIMELINE_ROWS,
                              found.timestamp + 1)
    if not any(r.transaction_id == transaction_id for r in rows):
        rows = [*rows, *(await runtime.call(runtime.review.user_transactions, user, 1,
                                            found.timestamp + 1))]
    marked = next((i for i, r in enumerate(rows) if r.transaction_id == transaction_id), None)
    title = f"{user}: the {len(rows)} transactions up to this one"
    return _png(await run_in_threadpool(_timeline_png, rows, marked, title))


def _timeline_png(rows: list[UserTransaction], marked: int | None, title: str) -> bytes:
    times = np.array([r.timestamp for r in rows], dtype=np.int64)
    amounts = np.array([np.nan if r.amount is None else r.amount for r in rows])
    flags = np.array([r.is_anomaly for r in rows], dtype=bool)
    return plots.to_png(plots.transaction_timeline(times, np.nan_to_num(amounts), flags,
                                                   marked, title))


@router.post("/transactions/{transaction_id:path}/decision")
async def decide(request: Request, transaction_id: str,
                 decision: Annotated[str, Form(max_length=20)] = "",
                 note: Annotated[str, Form(max_length=2000)] = "",
                 csrf: Annotated[str, Form(max_length=200)] = "") -> Response:
    analyst = auth.current_analyst(request)
    auth.check_post(request, analyst, csrf)
    runtime = get_runtime(request)
    try:
        await runtime.call(runtime.review.record, _checked_id(transaction_id), decision,
                           note.strip(), analyst.author)
    except UnknownTransaction as exc:
        raise ConsoleDenied(404, str(exc)) from None
    except FeedbackError as exc:
        raise ConsoleDenied(422, str(exc)) from None
    words = pages.STATE_WORDS.get(decision, decision)
    notice = f"Recorded {words} for {transaction_id}."
    return RedirectResponse(f"{PREFIX}/?{urlencode({'notice': notice})}", 303)


@router.get("/transactions/{transaction_id:path}")
async def transaction(request: Request, transaction_id: str) -> Response:
    analyst, csrf, runtime = _session(request)
    found = await _stored(runtime, transaction_id)
    history = await runtime.call(runtime.review.history, found.transaction_id)
    user = _timeline_user(found.record)
    earlier = [] if user is None else [
        r for r in await runtime.call(runtime.review.user_transactions, user, TIMELINE_ROWS,
                                      found.timestamp + 1)
        if r.transaction_id != found.transaction_id]
    return _html(pages.transaction_page(
        found.transaction_id, found.timestamp, found.record, found.result, _features(runtime),
        history, user, analyst.name, csrf, earlier))


# --------------------------------------------------------------------------- a user
@router.get("/users")
async def find_user(request: Request,
                    user: Annotated[str, Query(max_length=MAX_STRING_LENGTH)] = "") -> Response:
    auth.current_analyst(request)
    if not user.strip():
        return RedirectResponse(f"{PREFIX}/", 303)
    return RedirectResponse(f"{PREFIX}/users/{quote(user.strip(), safe='')}", 303)


@router.get("/users/{user:path}/timeline.png")
async def user_timeline(request: Request, user: str) -> Response:
    _, _, runtime = _session(request)
    rows = await runtime.call(runtime.review.user_transactions, _checked_id(user),
                              TIMELINE_ROWS * 2)
    if not rows:
        raise ConsoleDenied(404, f"no stored transactions of {user!r}")
    title = f"{user}: the latest {len(rows)} transactions"
    return _png(await run_in_threadpool(_timeline_png, rows, None, title))


@router.get("/users/{user:path}")
async def user_page(request: Request, user: str) -> Response:
    analyst, csrf, runtime = _session(request)
    rows = await runtime.call(runtime.review.user_transactions, _checked_id(user),
                              TIMELINE_ROWS * 2)
    return _html(pages.user_page(user, rows, analyst.name, csrf))


# --------------------------------------------------------------------------- the model
@router.get("/model")
async def model_page(request: Request) -> Response:
    analyst, csrf, runtime = _session(request)
    info = {**runtime.scorer.describe(),
            "thresholdSource": runtime.scorer.metadata.get("threshold_source")}
    # Counting every stored row took ~80 ms of PostgreSQL at 1,000,000 (bench_console):
    # read with the flag rate, at most once a minute.
    stored = await _stored_count(request, runtime)
    window = await _flag_rate(request, runtime)
    return _html(pages.model_page(info, runtime.scorer.model.feature_set_.features, stored,
                                  pages.RateSummary.of(window.rows, window.start, window.end,
                                                       RATE_BUCKET_WORDS),
                                  analyst.name, csrf))


async def _cached(request: Request, name: str, read: Callable[[], Awaitable[T]]) -> T:
    """``read()``, reused for :data:`PICTURE_TTL` seconds: the model page's pictures and
    figures (one cache per app)."""
    cache: dict[str, tuple[float, Any]] = request.app.state.console_cache
    hit = cache.get(name)
    if hit is not None and time.monotonic() - hit[0] < PICTURE_TTL:
        return cast(T, hit[1])
    value = await read()
    cache[name] = (time.monotonic(), value)
    return value


async def _picture(request: Request, name: str, draw: Callable[[], Awaitable[bytes]]
                   ) -> Response:
    """A model picture, drawn at most every :data:`PICTURE_TTL` seconds."""
    return _png(await _cached(request, f"picture:{name}", draw))


@router.get("/model/u-matrix.png")
async def u_matrix(request: Request) -> Response:
    _, _, runtime = _session(request)
    detector = runtime.scorer.model.detector_

    async def draw() -> bytes:
        return await run_in_threadpool(lambda: plots.to_png(plots.u_matrix(detector.u_matrix())))

    return await _picture(request, "u-matrix", draw)


@router.get("/model/hits.png")
async def hits(request: Request) -> Response:
    _, _, runtime = _session(request)

    async def draw() -> bytes:
        features, flags = await runtime.call(runtime.review.recent_features, HIT_ROWS)
        return await run_in_threadpool(_hits_png, runtime, features, flags)

    return await _picture(request, "hits", draw)


def _hits_png(runtime: Runtime, features: list[list[float]], flags: list[bool]) -> bytes:
    model = runtime.scorer.model
    som = model.detector_.som_
    units = som.rows * som.cols
    if features:
        bmu = np.asarray(model.explanation(np.asarray(features, dtype=np.float64)).bmu,
                         dtype=np.int64)
        flagged = np.asarray(flags, dtype=bool)
    else:
        bmu, flagged = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
    counts = np.bincount(bmu, minlength=units).reshape(som.rows, som.cols)
    flagged_counts = np.bincount(bmu[flagged], minlength=units).reshape(som.rows, som.cols)
    return plots.to_png(plots.hit_map(counts, flagged_counts))


@router.get("/model/flag-rate.png")
async def flag_rate_picture(request: Request) -> Response:
    _, _, runtime = _session(request)

    async def draw() -> bytes:
        window = await _flag_rate(request, runtime)
        title = f"Share flagged per {RATE_BUCKET_WORDS}, last {RATE_DAYS} days of data"
        return await run_in_threadpool(lambda: plots.to_png(
            charts.flag_rate(window.rows, RATE_BUCKET_MS, title, f"per {RATE_BUCKET_WORDS}")))

    return await _picture(request, "flag-rate", draw)


@dataclass(frozen=True)
class RateWindow:
    """The flag rate over the model page's window: ``rows`` are the store's
    ``(bucket start, stored, flagged)``; ``end`` is None when nothing is stored."""

    start: int | None
    end: int | None
    rows: list[tuple[int, int, int]]


async def _stored_count(request: Request, runtime: Runtime) -> int:
    """The number of stored transactions, read at most every :data:`PICTURE_TTL` seconds."""
    return await _cached(request, "stored", lambda: runtime.call(runtime.store.count))


async def _flag_rate(request: Request, runtime: Runtime) -> RateWindow:
    """The store's flag rate over the :data:`RATE_DAYS` days of transaction time up to the
    latest stored transaction, read at most every :data:`PICTURE_TTL` seconds (the page and
    its picture share it)."""

    async def read() -> RateWindow:
        last = await runtime.call(runtime.store.last_timestamp)
        if last is None:
            return RateWindow(None, None, [])
        end = (last // RATE_BUCKET_MS + 1) * RATE_BUCKET_MS  # the end of the latest bucket
        start = end - RATE_DAYS * 86_400_000
        rows = await runtime.call(runtime.store.flag_rate, start, end, RATE_BUCKET_MS)
        return RateWindow(start, end, rows)

    return await _cached(request, "flag-rate", read)


@router.get("/api/live")
async def live(request: Request) -> Response:
    _, _, runtime = _session(request)
    sampler: LiveSampler | None = getattr(request.app.state, "console_sampler", None)
    if sampler is None or sampler.metrics is not runtime.metrics:
        sampler = request.app.state.console_sampler = LiveSampler(runtime.metrics)
    # Each worker process keeps its own metrics: say which one answered.
    return json_response({**sampler.series(), "worker": os.getpid()})


# --------------------------------------------------------------------------- decisions
@router.get("/feedback")
async def feedback_list(request: Request,
                        cursor: Annotated[int | None, Query(ge=0)] = None) -> Response:
    analyst, csrf, runtime = _session(request)
    rows = await runtime.call(lambda: runtime.review.feedback(limit=PAGE_SIZE, after=cursor))
    next_query = urlencode({"cursor": rows[-1].id}) if len(rows) == PAGE_SIZE else None
    return _html(pages.feedback_page(rows, next_query, analyst.name, csrf))


@router.get("/feedback.csv")
async def feedback_export(request: Request) -> Response:
    _, _, runtime = _session(request)
    return await feedback_csv(runtime)
