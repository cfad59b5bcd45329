"""What the app holds while it runs: settings, the loaded model, the storage, the metrics.

Built once at startup (the app's lifespan, or the Lambda handler's cold start), never at import.
Ingestion itself is the core's (:func:`txanomaly.ingest.ingest`): the runtime hands it the
scorer and the SQL storage, and counts what came back.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import torch
from starlette.concurrency import run_in_threadpool

from txanomaly.ingest import Ingested, WorkBudgetError, ingest
from txanomaly.scoring import Scorer
from txanomaly.service.errors import ApiError
from txanomaly.service.metrics import Metrics
from txanomaly.service.settings import Settings
from txanomaly.storage.base import StorageBusy
from txanomaly.storage.sql import SqlStorage
from txanomaly.storage.sql_review import ReviewStore

logger = logging.getLogger(__name__)
T = TypeVar("T")

class Runtime:
    """The model, the storage and the metrics of one app.

    Database work runs in the thread pool, for SQLite too: the event loop only parses and
    answers, so ``/healthz`` answers while a slow request runs. The one exception is
    :meth:`ingest_request`'s fast path for single transactions on a free SQLite database.
    A request whose late arrivals would move more than ``settings.max_moved_rows`` stored key
    rows (each back-dated transaction moves every later row of its keys, one UPDATE per key;
    docs/service.md, "Late arrivals and the work budget") is refused with 429 before anything
    is written.
    """

    def __init__(self, settings: Settings, scorer: Scorer, store: SqlStorage,
                 metrics: Metrics):
        self.settings = settings
        self.scorer = scorer
        self.store = store
        self.metrics = metrics
        #: The analysts' queue and feedback (tables and trigger installed if missing).
        self.review = ReviewStore(store)
        self._sqlite_thread = (ThreadPoolExecutor(1, thread_name_prefix="txanomaly-sqlite")
                               if store.dialect == "sqlite" else None)

    @classmethod
    def open(cls, settings: Settings, metrics: Metrics | None = None) -> Runtime:
        """Load the model and open (creating if needed) the database."""
        # A request scores a few rows: torch's intra-op threads only add latency there. On
        # the 2-core machines a 100 x 23 by 23 x 100 product took 6 ms with 2 threads and
        # 6 us with 1 (torch 2.13 CPU); a worker scores one request at a time anyway.
        torch.set_num_threads(1)
        scorer = Scorer.load(settings.model_dir, top=settings.top_reasons,
                             key=settings.model_key)
        store = SqlStorage(settings.db_url, schema=settings.db_schema,
                           synchronous=settings.sqlite_synchronous,
                           pool_size=settings.pool_size)
        runtime = cls(settings, scorer, store, metrics if metrics is not None else Metrics())
        runtime.metrics.ready.set(1)
        logger.info("model %s loaded; database %s", scorer.version, store.dialect)
        return runtime

    def close(self) -> None:
        self.metrics.ready.set(0)
        if self._sqlite_thread is not None:
            self._sqlite_thread.shutdown(wait=True)
        self.store.close()

    async def ingest_request(self, records: Sequence[Mapping[str, Any]], persist: bool
                             ) -> list[Ingested]:
        """:meth:`ingest` for one request, off the event loop, except on the fast path.

        Fast path (SQLite, one transaction): it runs inline when the database is free
        (``wait=False``), since handing a ~1 ms request to the database thread cost about a
        fifth of single-request throughput on the 2-core machines. When another writer holds
        the database it goes to the database thread instead, so the loop never waits on a
        lock; its own work is bounded by ``settings.max_moved_rows``.
        """
        if self._sqlite_thread is not None and len(records) == 1:
            try:
                return self.ingest(records, persist, wait=False)
            except StorageBusy:
                pass
        return await self.call(self.ingest, records, persist)

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run blocking database work in a thread: the event loop stays free for probes.

        SQLite: in the runtime's one database thread (one writer: more threads would only
        queue on its lock, and hand the GIL to and fro); PostgreSQL: in the thread pool.
        """
        if self._sqlite_thread is None:
            return await run_in_threadpool(fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(
            self._sqlite_thread, functools.partial(fn, *args, **kwargs))

    def ingest(self, records: Sequence[Mapping[str, Any]], persist: bool, wait: bool = True
               ) -> list[Ingested]:
        """Features from the stored history, verdicts, and (``persist``) storage.

        Raises
        ------
        ApiError
            429 when the request's late arrivals exceed the work budget (nothing stored).
        """
        try:
            out = ingest(records, self.scorer, self.store, persist=persist,
                         max_moved_rows=self.settings.max_moved_rows, wait=wait)
        except WorkBudgetError as exc:
            self.metrics.count("refused", len(records))
            raise ApiError(429, str(exc), code="work_budget_exceeded") from None
        if persist:
            replayed = sum(1 for r in out if r.replayed)
            self.metrics.count("replayed", replayed)
            self.metrics.count("stored", len(out) - replayed)
        else:
            self.metrics.count("scored", len(out))
        self.metrics.count("flagged", sum(1 for r in out
                                          if not r.replayed and r.result.get("isAnomaly")))
        return out
