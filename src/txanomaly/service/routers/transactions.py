"""``/v1/transactions``: score and store (idempotently), and read back one transaction."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from starlette.responses import Response

from txanomaly.schema import MAX_STRING_LENGTH, to_raw
from txanomaly.service.deps import AuthorizedRuntime
from txanomaly.service.errors import ApiError
from txanomaly.service.responses import (
    VERDICT_RESPONSES,
    checked_path_id,
    json_response,
    verdicts_response,
)
from txanomaly.service.schemas import (
    StoredTransactionOut,
    error_responses,
    transactions_body_schema,
)


def register(max_batch: int) -> APIRouter:
    """The router, with the body schema's batch limit filled in."""
    router = APIRouter(prefix="/v1", tags=["transactions"])
    body = {"requestBody": transactions_body_schema(max_batch)}

    @router.post("/transactions", response_model=None, openapi_extra=body,
                 responses={**VERDICT_RESPONSES, **error_responses(400, 401, 409, 413, 415, 422)},
                 summary="Score and store transactions",
                 description="One transaction or a list (up to the batch limit). Each is scored "
                             "from the per-user history in the store and stored with its "
                             "features and verdict, in one database transaction. Idempotent by "
                             "transactionId: a repeat returns the stored verdict and changes "
                             "nothing; the same id with different content is a 409. A list "
                             "with any invalid transaction is rejected whole (422).")
    async def post_transactions(request: Request, runtime: AuthorizedRuntime) -> Response:
        return await verdicts_response(request, runtime, persist=True)

    # ":path": ids may hold "/" (the input rules allow any text), sent as is or as %2F; the
    # router sees the decoded path either way.
    router.add_api_route("/transactions/{transaction_id:path}", get_transaction,
                         response_model=StoredTransactionOut, methods=["GET"],
                         responses=error_responses(401, 404, 422),
                         summary="A stored transaction, its features and its verdict",
                         description="Percent-encode the id as a path segment (`?`, `#`, `%` "
                                     "and non-ASCII must be; `/` may be).")
    return router


async def get_transaction(
    runtime: AuthorizedRuntime,
    transaction_id: Annotated[str, Path(min_length=1, max_length=MAX_STRING_LENGTH)],
) -> Response:
    checked_path_id(transaction_id)
    found = await runtime.call(runtime.store.get, transaction_id)
    if found is None:
        raise ApiError(404, f"no stored transaction {transaction_id!r}")
    names = runtime.scorer.feature_names
    features = dict(zip(names, found.features, strict=False))
    return json_response({**found.result, "timestamp": found.timestamp,
                          "transaction": to_raw(found.record), "features": features})
