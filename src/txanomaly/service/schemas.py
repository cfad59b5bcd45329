"""Request and response schemas (the OpenAPI contract at /docs).

Requests are validated by :func:`txanomaly.schema.parse_record` (one rule set for files and
the API); these pydantic models document the same limits so that clients and fuzzers see them.
Responses are serialised with orjson straight from dicts of these shapes.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from txanomaly.schema import MAX_AMOUNT, MAX_STRING_LENGTH

Text = Field(default=None, min_length=1, max_length=MAX_STRING_LENGTH)


class AmountDetails(BaseModel):
    model_config = ConfigDict(extra="allow")
    # Optional on one side (a currency without an amount is kept); the input rules require an
    # amount on at least one side (txanomaly.schema).
    transactionAmount: float | None = Field(default=None, ge=0, le=MAX_AMOUNT)
    transactionCurrency: str | None = Text
    country: str | None = Text


class PaymentDetails(BaseModel):
    model_config = ConfigDict(extra="allow")
    method: str | None = Text


class TransactionIn(BaseModel):
    """A raw transaction in the Flagright shape; unknown fields are kept as they are.

    ``timestamp`` is ms since the epoch (UTC); ``{"$numberLong": "<ms>"}``, numeric strings
    and ISO-8601 strings are accepted too. At least one of the amount details is required.
    """

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [{
        "transactionId": "t-1001", "timestamp": 1662358419786, "type": "TRANSFER",
        "originUserId": "u-1", "destinationUserId": "u-2",
        "originAmountDetails": {"transactionAmount": 120.5, "transactionCurrency": "EUR",
                                "country": "DE"},
        "destinationAmountDetails": {"transactionAmount": 120.5,
                                     "transactionCurrency": "EUR", "country": "DE"},
        "originPaymentDetails": {"method": "CARD"}}]})
    transactionId: str = Field(min_length=1, max_length=MAX_STRING_LENGTH)
    timestamp: int | str | dict[str, str] = Field(
        description="ms since epoch (0 .. 253402300799999), {'$numberLong': '<ms>'}, a numeric "
                    "string or ISO-8601")
    type: str | None = Text
    transactionState: str | None = Text
    originUserId: str | None = Text
    destinationUserId: str | None = Text
    originAmountDetails: AmountDetails | None = None
    destinationAmountDetails: AmountDetails | None = None
    originPaymentDetails: PaymentDetails | None = None
    destinationPaymentDetails: PaymentDetails | None = None


def transactions_body_schema(max_batch: int) -> dict[str, Any]:
    """OpenAPI requestBody: one transaction or a list of 1..max_batch."""
    ref = {"$ref": "#/components/schemas/TransactionIn"}
    return {"required": True, "content": {"application/json": {"schema": {"oneOf": [
        ref, {"type": "array", "items": ref, "minItems": 1, "maxItems": max_batch}]}}}}


class Reason(BaseModel):
    feature: str
    share: float = Field(description="the feature's share of the squared distance to the BMU")
    value: float = Field(description="the transaction's value (raw feature units)")
    prototype: float = Field(description="the best-matching prototype's value")


class Verdict(BaseModel):
    transactionId: str | None
    anomalyScore: float = Field(description="distance to the best-matching unit; higher = "
                                            "more anomalous")
    isAnomaly: bool = Field(description="anomalyScore > threshold")
    verdict: Literal["ALLOW", "FLAG"]
    riskLevel: Literal["LOW", "MEDIUM", "HIGH", "CRITICAL"]
    threshold: float
    reasons: list[Reason]
    modelVersion: str


class StoredVerdict(Verdict):
    timestamp: int = Field(description="ms since epoch (UTC)")


class StoredTransactionOut(StoredVerdict):
    transaction: dict[str, Any] = Field(description="the transaction as received (normalised)")
    features: dict[str, float] = Field(description="raw feature values, by name")


class AnomalyPage(BaseModel):
    items: list[StoredVerdict]
    nextCursor: str | None = Field(description="pass as `cursor` for the next page")


class FlagRateBucket(BaseModel):
    start: int = Field(description="the bucket's start, ms since epoch (UTC)")
    stored: int = Field(description="transactions stored with a timestamp in the bucket")
    flagged: int = Field(description="of which flagged")
    flagRate: float = Field(description="flagged / stored")


class FlagRate(BaseModel):
    start: int | None = Field(description="inclusive, ms (null: nothing stored)")
    end: int | None = Field(description="exclusive, ms")
    bucketSeconds: int
    stored: int
    flagged: int
    flagRate: float | None = Field(description="over the whole range; null when nothing "
                                                "is stored in it")
    items: list[FlagRateBucket] = Field(description="buckets with at least one stored "
                                                    "transaction, oldest first")


class SignatureInfo(BaseModel):
    signed: bool = Field(description="model.json carries a signature")
    algorithm: str | None = Field(description="its algorithm (hmac-sha256), if signed")
    verified: bool = Field(description="the server was given a key and the signature "
                                       "verified with it (without a key nothing is checked)")


class ModelInfo(BaseModel):
    modelVersion: str
    featureSet: str
    featureNames: list[str]
    threshold: float
    contamination: float | None
    map: dict[str, Any] | None
    packageVersion: str | None
    formatVersion: int | None
    trainingSummary: dict[str, Any]
    thresholdSource: dict[str, Any] | None = Field(
        description="where the threshold came from when it was set after training "
                    "(txanomaly calibrate --write); null: the training quantile")
    signature: SignatureInfo


class ItemError(BaseModel):
    index: int | None = None
    transactionId: str | None = None
    field: str | None = None
    message: str


class ErrorBody(BaseModel):
    error: str
    message: str
    errors: list[ItemError]


class Status(BaseModel):
    status: str


class AnomalyIndex(BaseModel):
    anomaly_index: int


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for error statuses."""
    return {s: {"model": ErrorBody} for s in statuses}
