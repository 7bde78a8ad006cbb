"""Typed exceptions. Every message says what went wrong *and* how to fix it.

The CLI prints ``str(exc)`` on one line and exits with code 1; set ``EMOFS_DEBUG=1`` for
the traceback. Library callers can catch :class:`EmofsError` for all of them.
"""

from __future__ import annotations

__all__ = [
    "EmofsError",
    "StoreError",
    "StoreNotFoundError",
    "DatasetChangedError",
    "SchemaVersionError",
    "MissingFeatureSetError",
    "InputError",
    "LabelsError",
    "QueryError",
    "IndexNotFoundError",
    "IndexCorruptError",
    "DimensionMismatchError",
    "DiskFullError",
]


class EmofsError(Exception):
    """Base class of every error emofs raises on purpose (bad input, bad store, ...)."""


class StoreError(EmofsError):
    """The store path or its contents cannot be used."""


class StoreNotFoundError(StoreError):
    """A command that reads the store was pointed at a store that does not exist."""


class DatasetChangedError(StoreError):
    """A read kept losing its files to a concurrent vacuum (retried on the latest version
    first); running it again usually succeeds."""


class SchemaVersionError(StoreError):
    """The store was written by a newer emofs than the one running."""

    @classmethod
    def of(cls, uri: str, found: int, readable: int) -> "SchemaVersionError":
        """The error for a store at ``uri`` with schema ``found`` (this emofs reads up to
        ``readable``)."""
        return cls(f"store {uri} was written by a newer emofs (schema {found}; this emofs "
                   f"reads up to {readable}): upgrade with `pip install -U emofs`")


class MissingFeatureSetError(StoreError):
    """A feature set named by the caller is not in the store.

    Build it with :meth:`of` so every command words it the same way (what exists, and the
    ``emofs extract`` that builds it); the plain constructor takes the message, so the
    error survives pickling (Ray workers) like every other :class:`EmofsError`.

    Attributes:
        name: the missing feature set (None when built from a bare message).
    """

    name: str | None = None

    @classmethod
    def of(cls, store, name: str, *, alternative: str | None = None) -> "MissingFeatureSetError":
        """The error for feature set ``name`` missing from ``store``.

        Args:
            store: the :class:`~featurestore.store.Store` searched.
            name: the feature set asked for.
            alternative: a second way out appended to the fix (``"leave it out of
                --encoders"``).
        """
        import difflib

        sets = store.feature_sets()
        available = ", ".join(sets) or "none"
        close = difflib.get_close_matches(name, sets, n=1, cutoff=0.75)
        fix = (f"did you mean {close[0]!r}?" if close
               else f"run `emofs extract --encoders {name}` first")
        if alternative:
            fix += f", or {alternative}"
        error = cls(f"no feature set {name!r} in {store.uri} (available: {available}): {fix}")
        error.name = name
        return error


class InputError(EmofsError):
    """A path, file or flag value given by the user is unusable."""


class LabelsError(InputError):
    """A labels / annotations file is malformed."""


class QueryError(EmofsError):
    """A ``--where`` filter or another query could not be evaluated."""


class IndexNotFoundError(StoreError):
    """The store has no index of that name (the message names the build command)."""


class IndexCorruptError(StoreError):
    """An index file exists but cannot be read back (the message names the rebuild)."""


class DimensionMismatchError(InputError):
    """A query vector's dimension differs from the index's."""


class DiskFullError(StoreError):
    """A write ran out of disk space (ENOSPC): the message names the path, the space the
    write needed (where known) and what is free; what was committed before is intact.

    Built by :func:`featurestore.diskspace.disk_full_error`.
    """
