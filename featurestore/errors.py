"""Typed exceptions. Every message says what went wrong *and* how to fix it.

The CLI prints ``str(exc)`` on one line and exits with code 1; set ``EMOFS_DEBUG=1`` for
the traceback. Library callers can catch :class:`EmofsError` for all of them.
"""

from __future__ import annotations

__all__ = [
    "EmofsError",
    "StoreError",
    "StoreNotFoundError",
    "SchemaVersionError",
    "InputError",
    "LabelsError",
    "QueryError",
]


class EmofsError(Exception):
    """Base class of every error emofs raises on purpose (bad input, bad store, ...)."""


class StoreError(EmofsError):
    """The store path or its contents cannot be used."""


class StoreNotFoundError(StoreError):
    """A command that reads the store was pointed at a store that does not exist."""


class SchemaVersionError(StoreError):
    """The store was written by a newer emofs than the one running."""


class InputError(EmofsError):
    """A path, file or flag value given by the user is unusable."""


class LabelsError(InputError):
    """A labels / annotations file is malformed."""


class QueryError(EmofsError):
    """A ``--where`` filter or another query could not be evaluated."""
