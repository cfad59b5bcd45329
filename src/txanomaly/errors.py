"""The project's exceptions. Adapters (CLI, service) map them to exit codes / HTTP statuses."""

from __future__ import annotations

from dataclasses import dataclass


class TxAnomalyError(Exception):
    """Base class of every error txanomaly raises on purpose (bad input, bad model file...)."""


@dataclass(frozen=True)
class FieldError:
    """One problem with one field of one record."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class RecordError(TxAnomalyError):
    """A record failed validation. Names the record (index, transactionId) and every bad field."""

    def __init__(self, index: int | None, transaction_id: str | None, errors: list[FieldError]):
        self.index = index
        self.transaction_id = transaction_id
        self.errors = errors
        where = f"record {index}" if index is not None else "record"
        if transaction_id is not None:
            where += f" (transactionId={transaction_id!r})"
        super().__init__(f"{where}: " + "; ".join(str(e) for e in errors))


class InputFormatError(TxAnomalyError):
    """A whole input file cannot be read (unknown extension, not JSON, missing columns...)."""


class ModelFileError(TxAnomalyError):
    """A model directory is missing, tampered with, truncated or does not match."""


class NotFittedError(TxAnomalyError, ValueError):
    """A model method that needs a fitted model was called before ``fit``."""
