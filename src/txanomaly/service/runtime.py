"""What the app holds while it runs: settings, the loaded model, the storage, the metrics.

Built once at startup (the app's lifespan, or the Lambda handler's cold start), never at import.
Ingestion itself is the core's (:func:`txanomaly.ingest.ingest`): the runtime hands it the
scorer and the SQL storage, and counts what came back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import torch
from starlette.concurrency import run_in_threadpool

from txanomaly.ingest import Ingested, ingest
from txanomaly.scoring import Scorer
from txanomaly.service.metrics import Metrics
from txanomaly.service.settings import Settings
from txanomaly.storage.sql import SqlStorage

logger = logging.getLogger(__name__)
T = TypeVar("T")


class Runtime:
    """The model, the storage and the metrics of one app.

    Database work runs inline on the event loop for SQLite (one writer: handing each request
    to a thread costs more than the transaction itself and overlaps nothing) and in the thread
    pool for PostgreSQL (network round trips, many concurrent writers).
    """

    def __init__(self, settings: Settings, scorer: Scorer, store: SqlStorage,
                 metrics: Metrics):
        self.settings = settings
        self.scorer = scorer
        self.store = store
        self.metrics = metrics
        self.inline = store.dialect == "sqlite"

    @classmethod
    def open(cls, settings: Settings, metrics: Metrics | None = None) -> Runtime:
        """Load the model and open (creating if needed) the database."""
        # A request scores a few rows: torch's intra-op threads only add latency there. On
        # the 2-core machines a 100 x 23 by 23 x 100 product took 6 ms with 2 threads and
        # 6 us with 1 (torch 2.13 CPU); a worker scores one request at a time anyway.
        torch.set_num_threads(1)
        scorer = Scorer.load(settings.model_dir, top=settings.top_reasons)
        store = SqlStorage(settings.db_url, schema=settings.db_schema,
                           synchronous=settings.sqlite_synchronous,
                           pool_size=settings.pool_size)
        runtime = cls(settings, scorer, store, metrics if metrics is not None else Metrics())
        runtime.metrics.ready.set(1)
        logger.info("model %s loaded; database %s", scorer.version, store.dialect)
        return runtime

    def close(self) -> None:
        self.metrics.ready.set(0)
        self.store.close()

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run blocking database work (inline for SQLite, in a thread for PostgreSQL)."""
        if self.inline:
            return fn(*args, **kwargs)
        return await run_in_threadpool(fn, *args, **kwargs)

    def ingest(self, records: Sequence[Mapping[str, Any]], persist: bool) -> list[Ingested]:
        """Features from the stored history, verdicts, and (``persist``) storage."""
        out = ingest(records, self.scorer, self.store, persist=persist)
        if persist:
            replayed = sum(1 for r in out if r.replayed)
            self.metrics.count("replayed", replayed)
            self.metrics.count("stored", len(out) - replayed)
        else:
            self.metrics.count("scored", len(out))
        self.metrics.count("flagged", sum(1 for r in out
                                          if not r.replayed and r.result.get("isAnomaly")))
        return out
