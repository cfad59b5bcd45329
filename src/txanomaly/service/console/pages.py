"""The console's HTML: plain functions from data to a page (no template engine, no HTTP).

Every page is the same frame (:func:`page`: the bar with the queue, the model, a user search
and the analyst's name) around sections in the HTML report's style. Every value that comes
from a transaction is escaped. Pictures are ``<img>`` of the console's PNG routes; the one
script (``static/console.js``) adds keyboard shortcuts and draws the live charts.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from txanomaly.features.spec import Feature
from txanomaly.report import format_value
from txanomaly.storage.sql_review import (
    DECISIONS,
    QUEUE_STATES,
    FeedbackRow,
    QueueFilter,
    QueueItem,
    UserTransaction,
)

PREFIX = "/console"
STATE_WORDS = {"open": "open", "fraud": "fraud", "not_fraud": "not fraud",
               "escalate": "escalated", "decided": "decided", "any": "all"}
#: Ops whose raw value is an amount: shown with the transaction's currency.
_AMOUNT_OPS = frozenset({"amount", "mean_diff"})
#: Ops whose raw value is 0 or 1.
_YES_NO_OPS = frozenset({"is_first_pair", "cross_border", "currency_mismatch"})


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def path_id(transaction_id: str) -> str:
    """A transaction or user id as one path segment (``/`` and ``%`` encoded too)."""
    return quote(transaction_id, safe="")


def when(ms: int | None) -> str:
    """``2023-11-15 10:00:00`` (UTC) from ms since the epoch."""
    if ms is None:
        return ""
    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def badge(kind: str, text: str | None = None) -> str:
    label = STATE_WORDS.get(kind, kind) if text is None else text
    return f"<span class='badge b-{esc(kind.lower())}'>{esc(label)}</span>"


def page(title: str, body: str, analyst: str | None = None, csrf: str | None = None,
         active: str = "") -> str:
    """The frame of every console page."""
    nav = ""
    if analyst is not None:
        links = "".join(
            f"<a href='{PREFIX}/{href}' class='{'on' if active == key else ''}'>{text}</a>"
            for key, href, text in (("queue", "", "Queue"), ("model", "model", "Model"),
                                    ("feedback", "feedback", "Decisions")))
        nav = (f"<nav>{links}<form class='search' method='get' action='{PREFIX}/users'>"
               "<input name='user' placeholder='user id' aria-label='user id' required>"
               "<button>Find user</button></form>"
               f"<form class='who' method='post' action='{PREFIX}/logout'>"
               f"<input type='hidden' name='csrf' value='{esc(csrf)}'>"
               f"<span>{esc(analyst)}</span><button>Sign out</button></form></nav>")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{esc(title)} · txanomaly console</title>"
            f"<link rel='stylesheet' href='{PREFIX}/static/console.css'>"
            f"<script defer src='{PREFIX}/static/console.js'></script></head><body>"
            f"<header><a class='brand' href='{PREFIX}/'>txanomaly <b>console</b></a>{nav}"
            f"</header><main><h1>{esc(title)}</h1>{body}</main></body></html>")


def message_page(title: str, text: str) -> str:
    return page(title, f"<p class='notice'>{esc(text)}</p>"
                       f"<p><a href='{PREFIX}/'>Back to the queue</a></p>")


def login_page(needs_key: bool, error: str | None, next_url: str) -> str:
    key = ("<label>API key <input type='password' name='key' autocomplete='current-password' "
           "required></label>") if needs_key else (
        "<p class='hint'>No API key is configured: the console answers on this machine "
        "only.</p>")
    err = f"<p class='error'>{esc(error)}</p>" if error else ""
    body = (f"<section class='card narrow'>{err}<form method='post' action='{PREFIX}/login'>"
            "<label>Your name <input name='name' autocomplete='username' required "
            "maxlength='80'></label>"
            f"{key}<input type='hidden' name='next' value='{esc(next_url)}'>"
            "<button class='primary'>Sign in</button></form>"
            "<p class='hint'>Your name is recorded with every decision you make.</p></section>")
    return page("Sign in", body)


# --------------------------------------------------------------------------- the queue
def queue_page(items: Sequence[QueueItem], where: QueueFilter, counts: Mapping[str, Any],
               next_query: str | None, features: Mapping[str, Feature], analyst: str,
               csrf: str, notice: str | None = None, filters: Mapping[str, str] | None = None
               ) -> str:
    filters = filters or {}
    states = "".join(
        f"<option value='{s}'{' selected' if s == where.state else ''}>{STATE_WORDS[s]}"
        "</option>" for s in QUEUE_STATES)
    risks = "".join(
        f"<option value='{r}'{' selected' if r == (where.risk or '') else ''}>"
        f"{r.lower() if r else 'any'}</option>" for r in ("", "HIGH", "CRITICAL"))
    orders = "".join(
        f"<option value='{o}'{' selected' if o == where.order else ''}>{o} first</option>"
        for o in ("newest", "riskiest"))
    form = (f"<form class='filters' method='get' action='{PREFIX}/'>"
            f"<label>State <select name='state'>{states}</select></label>"
            f"<label>Risk <select name='risk'>{risks}</select></label>"
            f"<label>User <input name='user' value='{esc(where.user)}' size='12'></label>"
            f"<label>From (UTC) <input type='datetime-local' name='from' "
            f"value='{esc(filters.get('from'))}'></label>"
            f"<label>To <input type='datetime-local' name='to' "
            f"value='{esc(filters.get('to'))}'></label>"
            f"<label>Order <select name='order'>{orders}</select></label>"
            "<button class='primary'>Apply</button>"
            f"<a href='{PREFIX}/'>Reset</a></form>")
    chips = " ".join(
        f"<a class='chip' href='{PREFIX}/?{urlencode({**filters, 'state': s})}'>"
        f"{badge(s)} {counts['states'].get(s, 0):,}</a>" for s in ("open", *DECISIONS))
    chips += " · " + " ".join(
        f"<a class='chip' href='{PREFIX}/?{urlencode({**filters, 'risk': r})}'>"
        f"{badge(r, r.lower())} {counts['risks'].get(r, 0):,}</a>" for r in ("HIGH", "CRITICAL"))
    head = (f"<p class='counts'><b>{counts['total']:,}</b> flagged transactions match "
            f"({STATE_WORDS[where.state]}). {chips}</p>")
    note = f"<p class='notice' role='status'>{esc(notice)}</p>" if notice else ""
    if items:
        rows = "".join(_queue_row(item, features) for item in items)
        table = ("<table class='queue'><thead><tr><th>time (UTC)</th><th>transaction</th>"
                 "<th class='num'>amount</th><th>sender &rarr; recipient</th>"
                 "<th class='num'>score</th><th>risk</th><th>state</th><th>main reason</th>"
                 f"</tr></thead><tbody>{rows}</tbody></table>")
    else:
        table = "<p class='empty'>Nothing to review here.</p>"
    more = (f"<p class='pager'><a href='{PREFIX}/?{esc(next_query)}' rel='next'>Next page "
            "&rarr;</a></p>") if next_query else ""
    return page("Review queue", note + form + head + table + more, analyst, csrf, "queue")


def _queue_row(item: QueueItem, features: Mapping[str, Feature]) -> str:
    rec, res = item.record, item.result
    reasons = res.get("reasons") or []
    main = ""
    if reasons:
        feature = features.get(reasons[0]["feature"])
        main = feature.label if feature is not None else reasons[0]["feature"]
    link = f"{PREFIX}/transactions/{path_id(item.transaction_id)}"
    return (f"<tr><td class='nowrap'>{when(item.timestamp)}</td>"
            f"<td><a href='{link}'>{esc(item.transaction_id)}</a></td>"
            f"<td class='num'>{esc(_amount(rec))}</td><td>{_users(rec)}</td>"
            f"<td class='num'>{item.anomaly_score:.3f}</td>"
            f"<td>{badge(item.risk_level or 'n/a')}</td><td>{badge(item.state)}</td>"
            f"<td>{esc(main)}</td></tr>")


def _amount(rec: Mapping[str, Any]) -> str:
    amount = rec.get("destination_amount")
    currency = rec.get("destination_currency")
    if amount is None:
        amount, currency = rec.get("origin_amount"), rec.get("origin_currency")
    return "" if amount is None else f"{format_value(amount)} {currency or ''}".strip()


def _user_link(user: str | None) -> str:
    if not user:
        return "<span class='muted'>unknown</span>"
    return f"<a href='{PREFIX}/users/{path_id(user)}'>{esc(user)}</a>"


def _users(rec: Mapping[str, Any]) -> str:
    return (f"{_user_link(rec.get('origin_user_id'))} &rarr; "
            f"{_user_link(rec.get('destination_user_id'))}")


# --------------------------------------------------------------------------- a transaction
def transaction_page(transaction_id: str, timestamp: int, record: Mapping[str, Any],
                     result: Mapping[str, Any], features: Mapping[str, Feature],
                     history: Sequence[FeedbackRow], timeline_user: str | None,
                     analyst: str, csrf: str,
                     earlier: Sequence[UserTransaction] = ()) -> str:
    score, threshold = float(result["anomalyScore"]), float(result["threshold"])
    level = str(result.get("riskLevel", ""))
    state = history[-1].decision if history else "open"
    badges = (f"{badge('flag' if result.get('isAnomaly') else 'allow', result.get('verdict'))} "
              f"{badge(level)} {badge(state)}")
    ratio = score / threshold if threshold > 0 else float("inf")
    scale = max(2.5 * threshold, 1.1 * score, 1e-9)
    gauge = (f"<div class='gauge' aria-hidden='true'><div class='fill b-{esc(level.lower())}' "
             f"style='width:{min(100.0, 100 * score / scale):.1f}%'></div>"
             f"<div class='mark' style='left:{100 * threshold / scale:.1f}%'></div></div>")
    verdict = (f"<section class='card'><div class='badges'>{badges}</div>"
               f"<p class='score'>Score <b>{score:.3f}</b> against threshold "
               f"<b>{threshold:.3f}</b>: {ratio:.2f} &times; the threshold.</p>{gauge}"
               f"{_usual_amount(record, timeline_user, earlier)}"
               f"<p class='hint'>Model {esc(result.get('modelVersion'))}. Risk levels: high "
               "above the threshold, critical above twice it.</p></section>")
    details = _details(transaction_id, timestamp, record)
    reasons = _reasons(result.get("reasons") or [], features, record)
    plot = ""
    if timeline_user is not None:
        src = (f"{PREFIX}/transactions/{path_id(transaction_id)}/timeline.png")
        plot = (f"<section class='card'><h2>{esc(timeline_user)}'s recent transactions</h2>"
                f"<img class='plot' src='{src}' alt='timeline of {esc(timeline_user)}&#39;s "
                "recent transactions, this one ringed' width='700' height='260'>"
                f"<p class='hint'>Amounts on a log scale; flagged ones in red. "
                f"<a href='{PREFIX}/users/{path_id(timeline_user)}'>All of this user's "
                "transactions</a></p></section>")
    decide = _decision_form(transaction_id, csrf, history)
    body = (f"<div class='grid'><div>{verdict}{reasons}{plot}</div>"
            f"<div>{decide}{details}</div></div>")
    return page(f"Transaction {transaction_id}", body, analyst, csrf, "queue")


def _usual_amount(rec: Mapping[str, Any], user: str | None,
                  earlier: Sequence[UserTransaction]) -> str:
    """The amount beside the user's usual one (median of their earlier transactions in the
    same currency), in real units."""
    amount = _amount(rec)
    if not amount or user is None:
        return ""
    currency = rec.get("destination_currency") or rec.get("origin_currency")
    same = sorted(r.amount for r in earlier if r.amount is not None and r.currency == currency)
    if not same:
        usual = f"{_user_link(user)} has no earlier transactions in {esc(currency or 'it')}"
    else:
        mid = len(same) // 2
        median = same[mid] if len(same) % 2 else (same[mid - 1] + same[mid]) / 2
        usual = (f"{_user_link(user)} usually: <b>{esc(format_value(median))} "
                 f"{esc(currency or '')}</b> (median of {len(same):,} earlier "
                 f"transaction{'s' if len(same) != 1 else ''})")
    return f"<p class='usual'>Amount <b>{esc(amount)}</b> &middot; {usual}</p>"


def _details(transaction_id: str, timestamp: int, rec: Mapping[str, Any]) -> str:
    def side(prefix: str) -> str:
        amount = rec.get(f"{prefix}_amount")
        currency = rec.get(f"{prefix}_currency") or ""
        text = "" if amount is None else f"{format_value(amount)} {currency}"
        extra = [v for v in (rec.get(f"{prefix}_country"), rec.get(f"{prefix}_method")) if v]
        return esc(" · ".join([t for t in [text.strip(), *map(str, extra)] if t]) or "–")

    rows = [("transaction", esc(transaction_id)), ("time (UTC)", when(timestamp)),
            ("type", esc(rec.get("type") or "–")), ("state", esc(rec.get("state") or "–")),
            ("sender", _user_link(rec.get("origin_user_id"))),
            ("sent", side("origin")),
            ("recipient", _user_link(rec.get("destination_user_id"))),
            ("received", side("destination"))]
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<section class='card'><h2>Details</h2><table class='kv'>{body}</table></section>"


def reason_words(reason: Mapping[str, Any], feature: Feature | None,
                 currency: str | None) -> tuple[str, str, str, str]:
    """(what, this transaction's value, the usual value, how it differs) in words.

    >>> reason_words({"feature": "amount", "value": 950.0, "prototype": 42.0},
    ...              Feature("amount", "amount"), "EUR")
    ('amount', '950.00 EUR', '42.00 EUR', 'higher than usual')
    """
    name = feature.label if feature is not None else str(reason["feature"])
    value, usual = float(reason["value"]), float(reason["prototype"])
    op = feature.op if feature is not None else ""
    if op in _YES_NO_OPS:
        shown = ("yes" if value >= 0.5 else "no", "yes" if usual >= 0.5 else "no")
    else:
        unit = f" {currency}" if currency and op in _AMOUNT_OPS else ""
        shown = (format_value(value) + unit, format_value(usual) + unit)
    if feature is not None and feature.clip is not None:
        low, high = feature.clip
        if not low <= value <= high:
            shown = (f"{shown[0]} (the model sees {format_value(min(max(value, low), high))})",
                     shown[1])
    if abs(value - usual) <= 1e-9 * max(1.0, abs(usual)):
        how = "as usual"
    else:
        how = "higher than usual" if value > usual else "lower than usual"
    return name, shown[0], shown[1], how


def _reasons(reasons: Sequence[Mapping[str, Any]], features: Mapping[str, Feature],
             rec: Mapping[str, Any]) -> str:
    if not reasons:
        return ""
    currency = rec.get("destination_currency") or rec.get("origin_currency")
    rows = []
    for r in reasons:
        feature = features.get(str(r["feature"]))
        what, value, usual, how = reason_words(r, feature, currency)
        share = float(r.get("share", 0.0))
        title = esc(feature.describe()) if feature is not None else ""
        rows.append(f"<tr><td><span title='{title}'>{esc(what)}</span>"
                    f"<div class='why'>{esc(how)}</div></td>"
                    f"<td class='num'><b>{esc(value)}</b></td><td class='num'>{esc(usual)}</td>"
                    f"<td><div class='share'><div style='width:{100 * share:.0f}%'></div></div>"
                    f"{share:.0%}</td></tr>")
    return ("<section class='card'><h2>Why it was flagged</h2><table class='reasons'><thead>"
            "<tr><th>reason</th><th class='num'>this transaction</th>"
            "<th class='num'>usual</th><th>share of the score</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table><p class='hint'>Usual: the value of the "
            "map prototype nearest to this transaction (what transactions like this one "
            "look like), in the feature's own units. Hover a reason for its definition.</p>"
            "</section>")


def _decision_form(transaction_id: str, csrf: str, history: Sequence[FeedbackRow]) -> str:
    action = f"{PREFIX}/transactions/{path_id(transaction_id)}/decision"
    buttons = "".join(
        f"<button name='decision' value='{d}' class='d-{d}' data-key='{key}'>{label} "
        f"<kbd>{key}</kbd></button>"
        for d, label, key in (("fraud", "Fraud", "f"), ("not_fraud", "Not fraud", "n"),
                              ("escalate", "Escalate", "e")))
    past = "".join(
        f"<li>{badge(h.decision)} by {esc(h.author)}, {when(h.created_at)}"
        + (f"<div class='note'>{esc(h.note)}</div>" if h.note else "")
        + ("" if h.current else " <span class='muted'>(superseded)</span>") + "</li>"
        for h in reversed(history))
    past_html = (f"<h3>Decisions so far</h3><ul class='history'>{past}</ul>" if past
                 else "<p class='hint'>No decision yet.</p>")
    return (f"<section class='card'><h2>Decision</h2><form method='post' action='{action}' "
            f"class='decide'><input type='hidden' name='csrf' value='{esc(csrf)}'>"
            "<label>Note (optional) <textarea name='note' rows='3' maxlength='2000'>"
            f"</textarea></label><div class='buttons'>{buttons}</div></form>{past_html}"
            "</section>")


# --------------------------------------------------------------------------- a user
def user_page(user: str, rows: Sequence[UserTransaction], analyst: str, csrf: str) -> str:
    if not rows:
        return page(f"User {user}", f"<p class='empty'>No stored transactions of "
                                    f"{esc(user)}.</p>", analyst, csrf)
    flagged = sum(1 for r in rows if r.is_anomaly)
    decided = {d: sum(1 for r in rows if r.decision == d) for d in DECISIONS}
    summary = (f"<p class='counts'>{len(rows):,} latest transactions shown, {flagged:,} "
               "flagged; decisions: " + ", ".join(f"{STATE_WORDS[d]} {n:,}"
                                                  for d, n in decided.items()) + ".</p>")
    src = f"{PREFIX}/users/{path_id(user)}/timeline.png"
    plot = (f"<section class='card'><img class='plot' src='{src}' alt='timeline of "
            f"{esc(user)}&#39;s transactions' width='700' height='260'></section>")
    body = "".join(
        f"<tr><td class='nowrap'>{when(r.timestamp)}</td><td><a href='{PREFIX}/transactions/"
        f"{path_id(r.transaction_id)}'>{esc(r.transaction_id)}</a></td>"
        f"<td class='num'>{esc('' if r.amount is None else format_value(r.amount))} "
        f"{esc(r.currency or '')}</td><td class='num'>{r.anomaly_score:.3f}</td>"
        f"<td>{badge('flag', 'flagged') if r.is_anomaly else ''}</td>"
        f"<td>{badge(r.decision) if r.decision else ''}</td></tr>" for r in rows)
    table = ("<table class='queue'><thead><tr><th>time (UTC)</th><th>transaction</th>"
             "<th class='num'>amount</th><th class='num'>score</th><th>flag</th>"
             f"<th>decision</th></tr></thead><tbody>{body}</tbody></table>")
    return page(f"User {user}", summary + plot + table, analyst, csrf)


# --------------------------------------------------------------------------- the model
@dataclass(frozen=True)
class RateSummary:
    """The flag rate in words: over the window and in its latest bucket with transactions."""

    start: int | None
    end: int | None
    stored: int
    flagged: int
    last_start: int | None
    last_stored: int
    last_flagged: int
    bucket_words: str

    @classmethod
    def of(cls, rows: Sequence[tuple[int, int, int]], start: int | None, end: int | None,
           bucket_words: str) -> RateSummary:
        """From the store's ``(bucket start, stored, flagged)`` rows."""
        last = rows[-1] if rows else (None, 0, 0)
        return cls(start, end, sum(r[1] for r in rows), sum(r[2] for r in rows), last[0],
                   last[1], last[2], bucket_words)

    def html(self) -> str:
        if not self.stored:
            return "<p class='rate empty'>No stored transactions yet.</p>"
        last = (f"; latest {esc(self.bucket_words)} ({when(self.last_start)[:16]}): "
                f"<b data-k='lastRate'>{_percent(self.last_flagged, self.last_stored)}</b> "
                f"({self.last_flagged:,} of {self.last_stored:,})")
        return (f"<p class='rate'>From {when(self.start)[:16]} to {when(self.end)[:16]} "
                f"(UTC): <b data-k='windowRate'>{_percent(self.flagged, self.stored)}</b> "
                f"flagged ({self.flagged:,} of {self.stored:,} stored){last}.</p>")


def _percent(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.2f}\u00a0%" if whole else "n/a"


def model_page(info: Mapping[str, Any], features: Sequence[Feature], stored: int,
               rate: RateSummary, analyst: str, csrf: str) -> str:
    summary = info.get("trainingSummary") or {}
    source = info.get("thresholdSource") or {}
    source_text = ", ".join(f"{k} {v}" for k, v in source.items()) or "training quantile"
    m = info.get("map") or {}
    rows = [("model version", info.get("modelVersion")),
            ("feature set", f"{info.get('featureSet')} ({len(features)} features)"),
            ("map", f"{m.get('rows')} x {m.get('cols')} units"),
            ("threshold in force", f"{float(info['threshold']):.4g}"),
            ("where the threshold came from", source_text),
            ("contamination", info.get("contamination")),
            ("training rows", _count(summary.get("rows"))),
            ("training epochs", summary.get("epochs")),
            ("training quantization error", format_value(summary.get("quantization_error"))),
            ("training topographic error", format_value(summary.get("topographic_error"))),
            ("training time", f"{summary['seconds']} s" if "seconds" in summary else "n/a"),
            ("package", info.get("packageVersion")),
            ("stored transactions", f"{stored:,}")]
    kv = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows)
    feats = "".join(
        f"<tr><td>{esc(f.label)}<br><code>{esc(f.name)}</code></td><td>{esc(f.describe())}"
        f"</td><td>{esc(f.direction)}</td></tr>" for f in features)
    live = ("<section class='card' id='live' data-src='" + PREFIX + "/api/live'>"
            "<h2>The service now</h2><p class='hint'>From the metrics of the worker process "
            "that answers, refreshed every 5 seconds while the page is open. Each worker "
            "(<code>--workers</code>) and replica counts its own requests: with several, "
            "these tiles show one of them.</p><div class='tiles'>"
            "<div><span>requests / s</span><b data-k='rps'>–</b><svg data-s='rps'></svg></div>"
            "<div><span>flagged share</span><b data-k='flagRate'>–</b>"
            "<svg data-s='flagRate'></svg></div>"
            "<div><span>p95 latency (ms)</span><b data-k='p95Ms'>–</b>"
            "<svg data-s='p95Ms'></svg></div>"
            "<div><span>since start</span><b class='small' data-k='totals'>–</b></div></div>"
            "</section>")
    rate_card = ("<section class='card' id='flag-rate'><h2>Flag rate over time</h2>"
                 "<p class='hint'>From the database: every transaction stored, by every "
                 "worker and replica, by transaction time (also <code>GET /v1/flag-rate"
                 f"</code>).</p>{rate.html()}<img class='plot' src='{PREFIX}/model/"
                 "flag-rate.png' alt='share of stored transactions flagged per hour, and "
                 "transactions stored and flagged per hour' width='440' height='320'>"
                 "</section>")
    body = (f"<div class='grid top'><section class='card'><h2>Summary</h2>"
            f"<table class='kv'>{kv}</table></section><div>{live}{rate_card}</div></div>"
            "<section class='card'><h2>The map</h2><p class='hint'>The U-matrix: how far "
            "each prototype is from its neighbours. The hit map and the share flagged per "
            "unit: where the latest stored transactions land.</p><div class='pictures'>"
            f"<img class='plot' src='{PREFIX}/model/u-matrix.png' alt='U-matrix' width='550' "
            f"height='450'><img class='plot' src='{PREFIX}/model/hits.png' alt='hit map and "
            "share flagged per unit' width='1100' height='450'></div></section>"
            "<section class='card'><h2>Features</h2><table><thead><tr><th>feature</th>"
            "<th>definition</th><th>risky side</th></tr></thead>"
            f"<tbody>{feats}</tbody></table></section>")
    return page("Model", body, analyst, csrf, "model")


def _count(value: Any) -> str:
    return "n/a" if value is None else f"{int(value):,}"


# --------------------------------------------------------------------------- decisions
def feedback_page(rows: Sequence[FeedbackRow], next_query: str | None, analyst: str,
                  csrf: str) -> str:
    body = "".join(
        f"<tr><td class='nowrap'>{when(r.created_at)}</td><td><a href='{PREFIX}/transactions/"
        f"{path_id(r.transaction_id)}'>{esc(r.transaction_id)}</a></td><td>{badge(r.decision)}"
        f"{'' if r.current else ' <span class=muted>(superseded)</span>'}</td>"
        f"<td>{esc(r.author)}</td><td>{esc(r.note)}</td></tr>" for r in rows)
    table = ("<table class='queue'><thead><tr><th>recorded (UTC)</th><th>transaction</th>"
             f"<th>decision</th><th>by</th><th>note</th></tr></thead><tbody>{body}</tbody>"
             "</table>") if rows else "<p class='empty'>No decisions yet.</p>"
    more = (f"<p class='pager'><a href='{PREFIX}/feedback?{esc(next_query)}' rel='next'>"
            "Next page &rarr;</a></p>") if next_query else ""
    export = (f"<p><a href='{PREFIX}/feedback.csv'>Export the labels (CSV)</a> "
              "<span class='hint'>the decisions in force, in the labels format of "
              "<code>txanomaly evaluate</code> (escalations left out).</span></p>")
    return page("Decisions", export + table + more, analyst, csrf, "feedback")
