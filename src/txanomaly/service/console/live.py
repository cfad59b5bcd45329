"""The live picture of the service, from the Prometheus metrics it already keeps.

The metrics are running totals; :class:`LiveSampler` keeps a short series of snapshots (taken
when the console's model page asks, at most every :data:`MIN_INTERVAL` seconds) and turns
consecutive snapshots into rates: API requests a second, the share of stored transactions
flagged, server errors, and latency percentiles from the histogram's buckets. Counts are this
worker process's (as ``/metrics`` are).
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from txanomaly.service.metrics import Metrics

MIN_INTERVAL = 2.0
#: An hour of snapshots at the model page's 5-second refresh.
MAX_SAMPLES = 720
#: Routes that are not API traffic: the console itself and the probes.
_NOT_API = ("/console", "/healthz", "/readyz", "/metrics", "/ping", "other")


@dataclass(frozen=True)
class Snapshot:
    at: float
    requests: float
    errors: float
    stored: float
    flagged: float
    buckets: tuple[tuple[float, float], ...]  # (upper bound s, cumulative count)


def snapshot(metrics: Metrics) -> Snapshot:
    """The running totals now."""
    requests = errors = stored = flagged = 0.0
    buckets: dict[float, float] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            route = sample.labels.get("route", "")
            api = not route.startswith(_NOT_API)
            if sample.name == "txanomaly_http_requests_total" and api:
                requests += sample.value
                if sample.labels.get("status", "").startswith("5"):
                    errors += sample.value
            elif sample.name == "txanomaly_http_request_seconds_bucket" and api:
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
            elif sample.name == "txanomaly_transactions_total":
                outcome = sample.labels.get("outcome")
                if outcome == "stored":
                    stored += sample.value
                elif outcome == "flagged":
                    flagged += sample.value
    return Snapshot(time.time(), requests, errors, stored, flagged,
                    tuple(sorted(buckets.items())))


def quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """The ``q`` quantile (seconds) of a cumulative histogram, interpolated in its bucket.

    >>> quantile([(0.001, 50.0), (0.01, 100.0), (math.inf, 100.0)], 0.75)
    0.0055
    """
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return None
    rank, low, below = q * total, 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return low
            width = count - below
            return low + (bound - low) * ((rank - below) / width if width else 1.0)
        low, below = bound, count
    return low


class LiveSampler:
    """Snapshots of one app's metrics, and the rates between them."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics
        self.samples: deque[Snapshot] = deque(maxlen=MAX_SAMPLES)
        self._lock = threading.Lock()

    def series(self) -> dict[str, Any]:
        """Take a snapshot (unless one is fresh) and return the rates between snapshots,
        oldest first, plus the totals since the process started."""
        with self._lock:
            now = snapshot(self.metrics)
            if not self.samples or now.at - self.samples[-1].at >= MIN_INTERVAL:
                self.samples.append(now)
            samples = list(self.samples)
        points = [_rates(a, b) for a, b in itertools.pairwise(samples)]
        last = samples[-1]
        return {"points": points, "totals": {
            "requests": last.requests, "errors": last.errors, "stored": last.stored,
            "flagged": last.flagged,
            "p50Ms": _ms(quantile(list(last.buckets), 0.5)),
            "p95Ms": _ms(quantile(list(last.buckets), 0.95)),
            "p99Ms": _ms(quantile(list(last.buckets), 0.99))}}


def _rates(a: Snapshot, b: Snapshot) -> dict[str, Any]:
    seconds = max(b.at - a.at, 1e-9)
    stored = b.stored - a.stored
    delta = [(bound, count - dict(a.buckets).get(bound, 0.0)) for bound, count in b.buckets]
    return {"t": int(b.at * 1000), "rps": (b.requests - a.requests) / seconds,
            "errors": b.errors - a.errors,
            "flagRate": (b.flagged - a.flagged) / stored if stored > 0 else None,
            "p95Ms": _ms(quantile(delta, 0.95))}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


__all__ = ["LiveSampler", "Snapshot", "quantile", "snapshot"]
