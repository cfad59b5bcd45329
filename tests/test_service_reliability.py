"""Reliability over a real server (``txanomaly serve``, uvicorn, SQLite) on loopback, spoken to
through raw keep-alive sockets, so that a connection the server drops is seen, not retried:

* an internal error is a 500 JSON answer on a connection that stays open, logged once with
  its trace, and the next request on that connection is served (issue 12, finding 4);
* a client that disconnects mid-request is one log line, without a trace (finding 6);
* a mix of valid, invalid and hostile requests from a few connections for a few seconds: no
  5xx, no dropped connection, every acknowledged transaction stored and nothing else.

Run on its own to see the figures: ``pytest tests/test_service_reliability.py -s``.
"""

from __future__ import annotations

import base64
import socket
import sqlite3
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote

import orjson
import pytest

from service_fixtures import model_dir
from test_service_durability import Server

__all__ = ["model_dir"]  # the fixture, imported for pytest

pytestmark = pytest.mark.slow

MIX_SECONDS = 3.0
CONNECTIONS = 3


class Connection:
    """One HTTP/1.1 keep-alive connection; a closed or reset connection raises."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.buffer = b""

    def request(self, method: str, path: str, body: bytes = b"",
                content_type: str = "application/json") -> tuple[int, dict[str, str], bytes]:
        kind = f"Content-Type: {content_type}\r\n" if content_type else ""
        head = (f"{method} {path} HTTP/1.1\r\nHost: test\r\n{kind}"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        self.sock.sendall(head + body)
        status, headers = self._read_head()
        return status, headers, self._read(int(headers.get("content-length", "0")))

    def _read_head(self) -> tuple[int, dict[str, str]]:
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:])
        return int(lines[0].split()[1]), headers

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self._fill()
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buffer += chunk

    def close(self) -> None:
        self.sock.close()


class Served(NamedTuple):
    server: Server
    db: Path
    log: Path


@pytest.fixture(scope="module")
def served(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One server for the module (a start takes seconds); each test reads its own log lines."""
    where = tmp_path_factory.mktemp("reliability")
    server = Server(model_dir, where / "reliability.db", where / "server.log")
    try:
        yield Served(server, where / "reliability.db", where / "server.log")
    finally:
        server.stop()


@pytest.fixture
def new_log(served: Served) -> Callable[[], str]:
    """Reads what the server logged since the test began."""
    start = served.log.stat().st_size

    def read() -> str:
        with served.log.open("rb") as log:
            log.seek(start)
            return log.read().decode(errors="replace")

    return read


def tx(tid: str, user: str = "u1", amount: float = 10.0, **kw: Any) -> dict[str, Any]:
    return {"transactionId": tid, "timestamp": 1_700_000_000_000 + zlib.crc32(tid.encode()),
            "originUserId": user, "destinationUserId": "u2",
            "originAmountDetails": {"transactionAmount": amount, "transactionCurrency": "EUR"},
            **kw}


def wait_for(predicate: Any, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_internal_error_keeps_the_connection_usable(served: Served, new_log: Callable[[], str]):
    conn = Connection(served.server.port)
    status, _, _ = conn.request("POST", "/v1/transactions", orjson.dumps(tx("t-corrupt")))
    assert status == 200
    # Something real to fail on: a stored row damaged on disk behind the server's back.
    with sqlite3.connect(served.db) as db:
        db.execute("UPDATE transactions SET result = '{' WHERE transaction_id = 't-corrupt'")
    status, headers, body = conn.request("GET", "/v1/transactions/t-corrupt")
    assert status == 500
    assert headers["content-type"] == "application/json"
    assert headers.get("connection") != "close"
    assert orjson.loads(body)["error"] == "internal_error"
    # The same connection serves the next request, and its transaction is stored.
    status, _, body = conn.request("POST", "/v1/transactions", orjson.dumps(tx("t-after")))
    assert status == 200, body
    assert conn.request("GET", "/v1/transactions/t-after")[0] == 200
    conn.close()
    log = new_log()
    assert log.count("unhandled error on GET /v1/transactions/t-corrupt") == 1
    assert log.count("Traceback") == 1  # logged once, with the trace
    assert "Exception in ASGI application" not in log


def test_client_disconnect_is_one_log_line_without_a_trace(served: Served,
                                                          new_log: Callable[[], str]):
    sock = socket.create_connection(("127.0.0.1", served.server.port))
    sock.sendall(b"POST /v1/transactions HTTP/1.1\r\nHost: test\r\n"
                 b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"transac")
    time.sleep(0.2)  # the server is waiting for the rest of the body
    sock.close()
    assert wait_for(lambda: "client disconnected" in new_log())
    conn = Connection(served.server.port)  # still serving
    assert conn.request("GET", "/healthz")[0] == 200
    status, _, metrics = conn.request("GET", "/metrics")
    conn.close()
    assert status == 200
    assert b'route="/v1/transactions",status="499"} 1.0' in metrics  # not counted as a 500
    log = new_log()
    assert log.count("client disconnected") == 1
    assert "Traceback" not in log
    assert "unhandled error" not in log


def test_ids_with_slash_and_percent_read_back_over_http(served: Served):
    conn = Connection(served.server.port)
    for tid in ("a/b", "a%2Fb", "50%", "q?#x", "/x/"):
        assert conn.request("POST", "/v1/transactions", orjson.dumps(tx(tid)))[0] == 200
        for path in (quote(tid, safe=""), quote(tid, safe="/")):
            status, _, body = conn.request("GET", f"/v1/transactions/{path}")
            assert status == 200, (tid, path, body)
            assert orjson.loads(body)["transactionId"] == tid
    conn.close()


# ---------------------------------------------------------------- the mix


def cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(value)).decode()


def hostile_requests(i: int) -> list[tuple[str, str, bytes, str]]:
    """(method, path, body, content type) of requests that must each be answered 4xx."""
    deep = orjson.dumps(tx(f"h{i}"))[:-1] + b',"deep":' + b"[" * 300 + b"]" * 300 + b"}"
    repeated = orjson.dumps(tx(f"h{i}")).replace(b'"timestamp"', b'"type":"A","type":"B",'
                                                                  b'"timestamp"', 1)
    big = orjson.dumps([tx(f"b{i}-{k}") for k in range(2000)])
    return [
        ("POST", "/v1/transactions", deep, "application/json"),
        ("POST", "/v1/score", repeated, "application/json"),
        ("POST", "/invocations", deep, "application/json"),
        ("POST", "/v1/transactions", b'{"transactionId": "x", ', "application/json"),
        ("POST", "/v1/transactions", orjson.dumps(tx(f"h{i}", timestamp=-1)),
         "application/json"),
        ("POST", "/v1/transactions", orjson.dumps(tx("a\u0000b")), "application/json"),
        ("POST", "/v1/transactions", b"transactionId=x", "application/x-www-form-urlencoded"),
        ("POST", "/v1/transactions", big, "application/json"),
        ("GET", f"/v1/anomalies?cursor={cursor([9223372036854775808, 'x'])}", b"", ""),
        ("GET", f"/v1/anomalies?cursor={cursor([1, chr(0)])}", b"", ""),
        ("GET", "/v1/anomalies?from=yesterday", b"", ""),
        ("GET", "/v1/transactions/a%00b", b"", ""),
        ("GET", "/v1/transactions/never-stored", b"", ""),
        ("DELETE", "/v1/transactions", b"", ""),
        ("GET", "/nowhere", b"", ""),
    ]


def mix_plan(worker: int, i: int) -> list[tuple[str, str, bytes, str, list[str]]]:
    """Round ``i`` of one connection: valid single and batch posts, a replay, a conflict, a
    score, a read, and three hostile requests; with the ids a 200 acknowledges."""
    tid = f"w{worker}-{i}"
    batch = [tx(f"{tid}-{k}", user=f"u{k % 5}") for k in range(5)]
    single = orjson.dumps(tx(tid, user=f"u{i % 7}"))
    plan = [("POST", "/v1/transactions", single, "application/json", [tid]),
            ("POST", "/v1/transactions", orjson.dumps(batch), "application/json",
             [r["transactionId"] for r in batch]),
            ("POST", "/v1/transactions", single, "application/json", []),  # replay
            ("POST", "/v1/transactions", orjson.dumps(tx(tid, amount=99.0)),
             "application/json", []),  # conflict: 409
            ("POST", "/v1/score", orjson.dumps(tx(f"s{tid}")), "application/json", []),
            ("GET", f"/v1/transactions/{tid}", b"", "", [])]
    return plan + [(*h, []) for h in hostile_requests(i)[i % 15: i % 15 + 3]]


def drive(port: int, worker: int, until: float, figures: Counter[str],
          acknowledged: set[str], lock: threading.Lock) -> None:
    """One keep-alive connection, round after round until ``until``; every answer is counted
    by status, a connection the server drops as "lost"."""
    conn = Connection(port)
    seen: Counter[str] = Counter()
    mine: set[str] = set()
    i = 0
    try:
        while time.monotonic() < until:
            for method, path, body, ctype, ids in mix_plan(worker, i):
                status, _, _ = conn.request(method, path, body, ctype)
                seen[str(status)] += 1
                if status == 200:
                    mine.update(ids)
            i += 1
    except OSError:
        seen["lost"] += 1
    finally:
        conn.close()
        with lock:
            figures.update(seen)
            acknowledged.update(mine)


def test_mixed_valid_invalid_and_hostile_requests(served: Served, new_log: Callable[[], str]):
    figures: Counter[str] = Counter()
    acknowledged: set[str] = set()
    lock = threading.Lock()
    until = time.monotonic() + MIX_SECONDS
    workers = [threading.Thread(target=drive, args=(served.server.port, w, until, figures,
                                                    acknowledged, lock))
               for w in range(CONNECTIONS)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    with sqlite3.connect(served.db) as db:  # the mix's ids start with "w"
        stored = {row[0] for row in db.execute(
            "SELECT transaction_id FROM transactions WHERE transaction_id LIKE 'w%'")}
    tried = sum(figures.values())
    print(f"\nreliability mix: {tried} requests on {CONNECTIONS} keep-alive connections in "
          f"{MIX_SECONDS:.0f} s; status codes {dict(sorted(figures.items()))}; transactions "
          f"acknowledged {len(acknowledged)}, stored {len(stored)}")
    assert tried > 50
    assert not [s for s in figures if s.startswith("5") or s == "lost"]
    assert {"200", "400", "404", "405", "409", "413", "415", "422"} <= set(figures)
    assert stored == acknowledged
    assert "Traceback" not in new_log()
