"""The shape of a transaction: the flat columns and where each sits in the raw record.

The raw record is Flagright's nested camelCase object; the flat record is one snake_case column
per field the model reads (:data:`FLAT_COLUMNS`) plus ``extra``, a JSON object holding every
other field. :data:`RAW_PATHS` maps one to the other, and error messages name fields by it.
"""

from __future__ import annotations

#: Columns of the flattened record, in order (DESIGN section 2). ``extra`` follows them.
FLAT_COLUMNS: tuple[str, ...] = (
    "transaction_id",
    "timestamp",
    "type",
    "state",
    "origin_user_id",
    "destination_user_id",
    "origin_amount",
    "origin_currency",
    "origin_country",
    "destination_amount",
    "destination_currency",
    "destination_country",
    "origin_method",
    "destination_method",
)
EXTRA_COLUMN = "extra"
AMOUNT_COLUMNS = ("origin_amount", "destination_amount")
STRING_COLUMNS = tuple(c for c in FLAT_COLUMNS if c not in ("timestamp", *AMOUNT_COLUMNS))
#: The text columns with few distinct values per row (ids, codes, enums): what
#: ``load_transactions(..., categorical=True)`` holds as categoricals.
CATEGORICAL_COLUMNS = tuple(c for c in STRING_COLUMNS if c != "transaction_id")
#: Every record has these, and at least one of :data:`AMOUNT_COLUMNS`.
REQUIRED_COLUMNS = ("transaction_id", "timestamp")

#: The values Flagright documents. Not enforced: tenants add their own, and DESIGN section 2
#: does not count an unknown type or state as an error (the model reads them as categories).
TRANSACTION_TYPES = ("DEPOSIT", "TRANSFER", "EXTERNAL_PAYMENT", "WITHDRAWAL", "REFUND", "OTHER")
TRANSACTION_STATES = ("CREATED", "PROCESSING", "SENT", "EXPIRED", "DECLINED", "SUSPENDED",
                      "REFUNDED", "SUCCESSFUL", "REVERSED")

#: Raw top-level field -> flat column (the scalar fields).
TOP_LEVEL_FIELDS: dict[str, str] = {
    "transactionId": "transaction_id",
    "type": "type",
    "transactionState": "state",
    "originUserId": "origin_user_id",
    "destinationUserId": "destination_user_id",
}
#: Raw nested object -> {sub-field: flat column}.
NESTED_FIELDS: dict[str, dict[str, str]] = {
    "originAmountDetails": {"transactionAmount": "origin_amount",
                            "transactionCurrency": "origin_currency",
                            "country": "origin_country"},
    "destinationAmountDetails": {"transactionAmount": "destination_amount",
                                 "transactionCurrency": "destination_currency",
                                 "country": "destination_country"},
    "originPaymentDetails": {"method": "origin_method"},
    "destinationPaymentDetails": {"method": "destination_method"},
}
#: Flat column -> the raw field path that error messages name.
RAW_PATHS: dict[str, str] = {
    **{flat: raw for raw, flat in TOP_LEVEL_FIELDS.items()},
    "timestamp": "timestamp",
    **{flat: f"{obj}.{sub}" for obj, subs in NESTED_FIELDS.items() for sub, flat in subs.items()},
}
