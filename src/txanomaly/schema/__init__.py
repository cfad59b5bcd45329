"""The transaction record and its input rules, written once for files and the API.

A raw record is the nested camelCase object payment platforms such as Flagright export::

    {"transactionId": "t1", "timestamp": {"$numberLong": "1662358419786"},
     "originUserId": "u1", "destinationUserId": "u2",
     "originAmountDetails": {"transactionAmount": 12.5, "transactionCurrency": "EUR",
                             "country": "DE"},
     "destinationAmountDetails": {"transactionAmount": 12.5, "transactionCurrency": "EUR"},
     "originPaymentDetails": {"method": "CARD"}}

It flattens to the snake_case record of :data:`FLAT_COLUMNS` plus ``extra``: a JSON object with
every field the model does not use (unknown top-level fields and unknown sub-fields of known
objects), so nothing is lost. A flat table (CSV, Parquet) holds the same record in those
columns.

- :mod:`~txanomaly.schema.columns`: the columns and where each sits in the raw record;
- :mod:`~txanomaly.schema.rules`: the rules, per field (text, timestamp, amount) and for the
  required fields, for one value and for a whole Polars column;
- :mod:`~txanomaly.schema.record`: the three parsers that apply them: :func:`parse_record`
  (JSON files and the API), :func:`parse_flat_row` (one row of a CSV or Parquet table), and
  :func:`~txanomaly.schema.rules.bulk_check` (a whole flat table at once: it only finds the
  rows the per-row parser must look at, so every message comes from the same code);
  and :func:`to_raw`, the way back.

>>> rec = parse_record({"transactionId": "t1", "timestamp": "2022-09-05T06:13:39.786Z",
...                     "destinationAmountDetails": {"transactionAmount": 10}, "note": "x"})
>>> rec["timestamp"], rec["destination_amount"], rec["origin_amount"], rec["extra"]
(1662358419786, 10.0, None, '{"note":"x"}')
>>> parse_record({"transactionId": "t2", "timestamp": "yesterday"}, index=7)
Traceback (most recent call last):
...
txanomaly.errors.RecordError: record 7 (transactionId='t2'): timestamp: ...
"""

from txanomaly.schema.columns import (
    AMOUNT_COLUMNS,
    CATEGORICAL_COLUMNS,
    EXTRA_COLUMN,
    FLAT_COLUMNS,
    NESTED_FIELDS,
    RAW_PATHS,
    REQUIRED_COLUMNS,
    STRING_COLUMNS,
    TOP_LEVEL_FIELDS,
    TRANSACTION_STATES,
    TRANSACTION_TYPES,
)
from txanomaly.schema.record import parse_flat_row, parse_record, to_raw
from txanomaly.schema.rules import (
    FLAT_SCHEMA,
    MAX_AMOUNT,
    MAX_STRING_LENGTH,
    MAX_TIMESTAMP_MS,
    MIN_TIMESTAMP_MS,
    RULES,
    Rule,
    bulk_check,
    check_amount,
    check_required,
    check_string,
    parse_timestamp,
)

__all__ = [
    "AMOUNT_COLUMNS", "CATEGORICAL_COLUMNS", "EXTRA_COLUMN", "FLAT_COLUMNS", "FLAT_SCHEMA",
    "MAX_AMOUNT", "MAX_STRING_LENGTH", "MAX_TIMESTAMP_MS", "MIN_TIMESTAMP_MS", "NESTED_FIELDS",
    "RAW_PATHS", "REQUIRED_COLUMNS", "RULES", "STRING_COLUMNS", "TOP_LEVEL_FIELDS",
    "TRANSACTION_STATES", "TRANSACTION_TYPES", "Rule", "bulk_check", "check_amount",
    "check_required", "check_string", "parse_flat_row", "parse_record", "parse_timestamp",
    "to_raw",
]
