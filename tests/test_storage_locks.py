"""PostgreSQL advisory locks are per database, not per schema: two schemas' writers of the
same user ids must not wait for each other (found while measuring issue 12's PostgreSQL
path: a benchmark's requests waited seconds for test runs in other schemas)."""

from __future__ import annotations

import pytest

from service_fixtures import pg_store, postgres_url, unique_schema
from test_ingest import SCORER, flat
from txanomaly.ingest import lock_order
from txanomaly.storage.sql import SqlStorage

__all__ = ["pg_store"]  # the fixture, imported for pytest

pytestmark = pytest.mark.postgres


def test_advisory_locks_of_two_schemas_in_one_database_do_not_collide(pg_store: SqlStorage):
    other = SqlStorage(postgres_url(), schema=unique_schema())
    recs = flat([{"timestamp": 0, "origin_user_id": "u", "destination_user_id": "v",
                  "destination_amount": 1.0}])
    try:
        with pg_store.transaction(write=True) as held:
            held.lock(lock_order(recs, SCORER.online))
            held.existing(["t0"])  # the locks go with this query
            with other.transaction(write=True) as tx:
                tx.cur.execute("SELECT bool_and(pg_try_advisory_xact_lock(h)) "
                               "FROM unnest(CAST(%s AS bigint[])) AS t(h)",
                               (sorted(h ^ tx.lock_salt for h in lock_order(recs,
                                                                             SCORER.online)),))
                assert tx.cur.fetchone()[0] is True
                tx.cur.execute("SELECT pg_try_advisory_xact_lock(%s)",
                               (held.lock_salt ^ lock_order(recs, SCORER.online)[0],))
                assert tx.cur.fetchone()[0] is False  # the same schema's key is held
    finally:
        other.drop_tables()
        other.close()
