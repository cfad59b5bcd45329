"""What reading a request body costs: the service's ``parse_json`` (orjson, then the repeated-key
check) against plain ``orjson.loads``, and against the standard library with an
``object_pairs_hook`` (the obvious way to see repeated keys).

    .venv/bin/python benchmarks/bench_json_body.py            # medians of 7 repeats
    .venv/bin/python benchmarks/bench_json_body.py --repeat 15

Prints microseconds per body. Single requests run at ~1,000/s (~1 ms each), so a microsecond
here is about 0.1% of one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import timeit
from collections.abc import Callable
from typing import Any

import orjson

from txanomaly.service.inputs import parse_json

TRANSACTION = {
    "transactionId": "t-1001", "timestamp": 1662358419786, "type": "TRANSFER",
    "originUserId": "u-1", "destinationUserId": "u-2",
    "originAmountDetails": {"transactionAmount": 120.5, "transactionCurrency": "EUR",
                            "country": "DE"},
    "destinationAmountDetails": {"transactionAmount": 120.5, "transactionCurrency": "EUR",
                                 "country": "DE"},
    "originPaymentDetails": {"method": "CARD"}}


def bodies() -> dict[str, bytes]:
    iso = {**TRANSACTION, "timestamp": "2022-09-05T06:13:39.786+00:00"}
    return {"single": orjson.dumps(TRANSACTION), "single, ISO time": orjson.dumps(iso),
            "list of 100": orjson.dumps([{**TRANSACTION, "transactionId": f"t{i}"}
                                         for i in range(100)])}


def median_us(fn: Callable[[], Any], number: int, repeat: int) -> float:
    return statistics.median(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    print(f"{'body':18s} {'bytes':>6s} {'orjson.loads':>13s} {'parse_json':>11s} "
          f"{'json + hook':>12s}  (us, median of {args.repeat})")
    for name, body in bodies().items():
        number = 20_000 if len(body) < 1000 else 500
        plain = median_us(lambda b=body: orjson.loads(b), number, args.repeat)
        ours = median_us(lambda b=body: parse_json(b), number, args.repeat)
        hook = median_us(lambda b=body: json.loads(b, object_pairs_hook=dict), number,
                         args.repeat)
        print(f"{name:18s} {len(body):6d} {plain:13.2f} {ours:11.2f} {hook:12.2f}")


if __name__ == "__main__":
    main()
