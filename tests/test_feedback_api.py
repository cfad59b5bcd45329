"""Feedback through the API and the console's access rules, against the real ``txanomaly
serve`` on a loopback port (SQLite, and PostgreSQL for the round trip), with a trained model
and a stream of synthetic transactions stored through ``POST /v1/transactions``.
"""

from __future__ import annotations

import csv
import io
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
from fastapi.testclient import TestClient

from service_fixtures import (
    API_KEY,
    model_dir,
    postgres_url,
    raw_records,
    stream,
    unique_schema,
)
from test_service_settings import SERVE, clean_env, free_port, running
from txanomaly.evaluate import load_labels
from txanomaly.service import Settings, create_app
from txanomaly.storage.sql import SqlStorage
from txanomaly.storage.sql_review import QueueFilter, ReviewStore

__all__ = ["model_dir", "stream"]  # fixtures, imported for pytest

KEY = {"X-API-Key": API_KEY}


@dataclass
class Server:
    """A running ``txanomaly serve`` with the stream stored."""

    url: str
    db_url: str
    schema: str | None
    flagged: list[str]
    ids: list[str]

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)

    @contextmanager
    def review(self) -> Iterator[ReviewStore]:
        """The server's database, opened beside it."""
        store = SqlStorage(self.db_url, schema=self.schema, create=False)
        try:
            yield ReviewStore(store, install=False)
        finally:
            store.close()


@contextmanager
def serving(model: Path, tmp: Path, frame: pl.DataFrame, db_url: str,
            schema: str | None = None) -> Iterator[Server]:
    port = free_port()
    args = [*SERVE, "--model", str(model), "--db", db_url, "--port", str(port),
            "--api-key", API_KEY]
    if schema is not None:
        args += ["--db-schema", schema]
    with running(args, clean_env(), port, tmp / "serve.log") as url:
        records = raw_records(frame)
        with httpx.Client(base_url=url, timeout=60) as client:
            answer = client.post("/v1/transactions", json=records, headers=KEY)
        assert answer.status_code == 200, answer.text
        verdicts = answer.json()
        flagged = [v["transactionId"] for v in verdicts if v["isAnomaly"]]
        assert len(flagged) >= 5
        yield Server(url, db_url, schema, flagged, [r["transactionId"] for r in records])


@pytest.fixture(scope="module")
def server(model_dir: Path, stream: pl.DataFrame, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("feedback-api")
    with serving(model_dir, tmp, stream, f"sqlite:///{tmp}/api.db") as running_server:
        yield running_server


def test_a_decision_is_stored_with_its_author_and_a_later_one_supersedes_it(server: Server):
    tid = server.flagged[0]
    path = f"/v1/transactions/{tid}/feedback"
    with server.client(headers=KEY) as client:
        first = client.post(path, json={"decision": "escalate", "note": "ask the bank",
                                        "analyst": "alice"})
        assert first.status_code == 201, first.text
        body = first.json()
        assert body["transactionId"] == tid and body["decision"] == "escalate"
        assert body["author"].startswith("alice (key ") and body["current"] is True
        second = client.post(path, json={"decision": "fraud", "analyst": "bob"})
        assert second.status_code == 201 and second.json()["id"] > body["id"]
        history = client.get("/v1/feedback", params={"transactionId": tid}).json()["items"]
        assert [(h["decision"], h["current"]) for h in history] == [
            ("escalate", False), ("fraud", True)]
    with server.review() as review:
        assert review.decisions()[tid] == "fraud"
        assert [h.note for h in review.history(tid)] == ["ask the bank", ""]
        assert tid in [i.transaction_id for i in review.queue(QueueFilter(state="fraud"),
                                                              limit=1000)]


def test_unknown_ids_bad_bodies_and_missing_keys_are_refused(server: Server):
    with server.client() as client:
        unknown = client.post("/v1/transactions/no-such-tx/feedback",
                              json={"decision": "fraud"}, headers=KEY)
        assert unknown.status_code == 404
        assert unknown.json()["message"] == "no stored transaction 'no-such-tx'"
        bad = client.post(f"/v1/transactions/{server.flagged[1]}/feedback",
                          json={"decision": "maybe"}, headers=KEY)
        assert bad.status_code == 422 and bad.json()["error"] == "validation_error"
        for method, path, kwargs in (
                ("POST", f"/v1/transactions/{server.flagged[1]}/feedback",
                 {"json": {"decision": "fraud"}}),
                ("GET", "/v1/feedback", {}), ("GET", "/v1/feedback?format=csv", {})):
            assert client.request(method, path, **kwargs).status_code == 401
            assert client.request(method, path, headers={"X-API-Key": "wrong"},
                                  **kwargs).status_code == 401
    with server.review() as review:
        assert review.history(server.flagged[1]) == []


def test_feedback_pages_filters_and_the_labels_csv(server: Server):
    decided = {tid: ("fraud" if i % 3 == 0 else "not_fraud" if i % 3 == 1 else "escalate")
               for i, tid in enumerate(server.flagged[2:9])}
    with server.client(headers=KEY) as client:
        for tid, decision in decided.items():
            answer = client.post(f"/v1/transactions/{tid}/feedback",
                                 json={"decision": decision, "analyst": "pager"})
            assert answer.status_code == 201
        seen, cursor = [], None
        while True:
            params = {"author": answer.json()["author"], "limit": 2,
                      **({"cursor": cursor} if cursor else {})}
            page = client.get("/v1/feedback", params=params).json()
            seen += page["items"]
            cursor = page["nextCursor"]
            if cursor is None:
                break
        assert [s["transactionId"] for s in seen] == list(decided)
        assert [s["id"] for s in seen] == sorted(s["id"] for s in seen)
        frauds = client.get("/v1/feedback", params={"decision": "fraud", "current": "true",
                                                    "author": answer.json()["author"]})
        assert {i["transactionId"] for i in frauds.json()["items"]} == {
            t for t, d in decided.items() if d == "fraud"}
        export = client.get("/v1/feedback", params={"format": "csv"})
        assert export.status_code == 200 and export.headers["content-type"].startswith(
            "text/csv")
        assert client.get("/v1/feedback", params={"cursor": "garbage"}).status_code == 422
    rows = list(csv.DictReader(io.StringIO(export.text)))
    labels = {r["transactionId"]: r["is_anomaly"] for r in rows}
    for tid, decision in decided.items():
        assert labels.get(tid) == {"fraud": "1", "not_fraud": "0"}.get(decision)
    # The file is what `txanomaly evaluate --labels` reads.
    path = Path(server.db_url.removeprefix("sqlite:///")).with_suffix(".labels.csv")
    path.write_text(export.text)
    parsed = load_labels(path)
    assert dict(zip(parsed["transaction_id"].to_list(), parsed["is_anomaly"].to_list(),
                    strict=True)) == {k: int(v) for k, v in labels.items()}


def test_concurrent_decisions_through_the_api_lose_nothing(server: Server):
    targets = server.flagged[9:12] or server.flagged[:3]
    answers: list[int] = []
    lock = threading.Lock()

    def analyst(k: int) -> None:
        with server.client(headers=KEY) as client:
            for i in range(6):
                status = client.post(f"/v1/transactions/{targets[i % len(targets)]}/feedback",
                                     json={"decision": ("fraud", "not_fraud")[(k + i) % 2],
                                           "analyst": f"c{k}"}).status_code
                with lock:
                    answers.append(status)

    threads = [threading.Thread(target=analyst, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers == [201] * 24
    with server.review() as review:
        rows = [r for tid in targets for r in review.history(tid)
                if r.author.startswith("c")]
        assert len(rows) == 24 and len({r.id for r in rows}) == 24
        in_force = review.decisions()
        for tid in targets:
            mine = [r for r in rows if r.transaction_id == tid]
            assert in_force[tid] == max(mine, key=lambda r: r.id).decision
            assert sum(r.current for r in review.history(tid)) == 1


def test_the_console_needs_a_session_and_refuses_cross_site_posts(server: Server):
    tid = server.flagged[12 % len(server.flagged)]
    with server.client() as client:
        page = client.get("/console/")
        assert page.status_code == 303 and page.headers["location"].startswith("/console/login")
        assert client.get("/console/model/u-matrix.png").status_code == 401
        refused = client.post(f"/console/transactions/{tid}/decision",
                              data={"decision": "fraud", "csrf": "x"})
        assert refused.status_code == 401
        wrong = client.post("/console/login", data={"name": "eve", "key": "not-the-key"})
        assert wrong.status_code == 401 and "not valid" in wrong.text
        signed = client.post("/console/login", data={"name": "Dana", "key": API_KEY})
        assert signed.status_code == 303
        cookie = signed.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
        page = client.get(f"/console/transactions/{tid}")
        assert page.status_code == 200 and "Why it was flagged" in page.text
        token = re.search(r"name='csrf' value='([^']+)'", page.text).group(1)
        action = f"/console/transactions/{tid}/decision"
        form = {"decision": "not_fraud", "note": "known customer", "csrf": token}
        cross = client.post(action, data=form, headers={"Origin": "https://evil.example"})
        assert cross.status_code == 403
        stale = client.post(action, data={**form, "csrf": "0" * 32})
        assert stale.status_code == 403
        done = client.post(action, data=form, headers={"Origin": server.url})
        assert done.status_code == 303 and "notice=" in done.headers["location"]
    with server.review() as review:
        (row,) = review.history(tid)
        assert row.decision == "not_fraud" and row.author.startswith("Dana (key ")
        assert row.note == "known customer"


def test_without_a_key_the_console_answers_only_loopback(model_dir: Path, tmp_path: Path):
    settings = Settings(model_dir=model_dir, db_url=f"sqlite:///{tmp_path}/open.db",
                        allow_unauthenticated=True)
    # The test client's address is "testclient": not loopback.
    with TestClient(create_app(settings), follow_redirects=False) as client:
        assert client.get("/console/login").status_code == 403
        assert client.post("/console/login", data={"name": "x"}).status_code == 403
    with TestClient(create_app(settings), follow_redirects=False,
                    client=("127.0.0.1", 5000)) as client:
        assert client.get("/console/login").status_code == 200
        assert client.post("/console/login", data={"name": "x"}).status_code == 303
        assert client.get("/console/").status_code == 200


@pytest.mark.postgres
def test_feedback_round_trip_on_postgresql(model_dir: Path, stream: pl.DataFrame,
                                           tmp_path: Path):
    schema = unique_schema()
    url = postgres_url()
    try:
        with serving(model_dir, tmp_path, stream, url, schema) as pg:
            tid = pg.flagged[0]
            with pg.client(headers=KEY) as client:
                assert client.post(f"/v1/transactions/{tid}/feedback",
                                   json={"decision": "fraud"}).status_code == 201
                items = client.get("/v1/feedback").json()["items"]
                assert [(i["transactionId"], i["decision"]) for i in items] == [(tid, "fraud")]
            with pg.review() as review:
                assert review.decisions() == {tid: "fraud"}
                assert review.counts(QueueFilter(state="any"))["total"] == len(pg.flagged)
    finally:
        store = SqlStorage(url, schema=schema, create=False)
        store.drop_tables()
        store.close()


def test_flag_rate_through_the_api_matches_the_stored_verdicts(server: Server):
    with server.client(headers=KEY) as client:
        verdicts = [client.get(f"/v1/transactions/{tid}").json() for tid in server.ids]
        rate = client.get("/v1/flag-rate", params={"bucketSeconds": 21_600})
        assert rate.status_code == 200, rate.text
        body = rate.json()
        refused = [client.get("/v1/flag-rate", params=p) for p in (
            {"from": "2024-01-02", "to": "2024-01-01"},
            {"from": "0", "to": "4000000000000", "bucketSeconds": 60},
            {"bucketSeconds": 0}, {"from": "yesterday"})]
        no_key = client.get("/v1/flag-rate", headers={"X-API-Key": "wrong"})
    stamps = [(v["timestamp"], v["isAnomaly"]) for v in verdicts]
    last = max(ts for ts, _ in stamps)
    bucket = 21_600_000
    assert body["end"] == (last // bucket + 1) * bucket
    assert body["start"] == body["end"] - 7 * 86_400_000
    inside = [(ts, flag) for ts, flag in stamps if ts >= body["start"]]
    assert (body["stored"], body["flagged"]) == (len(inside), sum(f for _, f in inside))
    assert body["flagRate"] == pytest.approx(body["flagged"] / body["stored"])
    for item in body["items"]:
        mine = [flag for ts, flag in inside if item["start"] <= ts < item["start"] + bucket]
        assert (item["stored"], item["flagged"]) == (len(mine), sum(mine))
        assert item["flagRate"] == pytest.approx(item["flagged"] / item["stored"])
    assert [r.status_code for r in refused] == [422, 422, 422, 422]
    assert "at most 10,000 buckets" in refused[1].text
    assert no_key.status_code == 401
