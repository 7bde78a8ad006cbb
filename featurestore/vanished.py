"""Reads that survive maintenance: a file removed under a reader is read again, not an error.

A Lance read opens one version (its manifest) and then reads the data and deletion files
that version lists. ``emofs vacuum`` (another process, or a thread of this one) may delete
those files once a newer version is committed: with ``--older-than 0`` at once, otherwise
once the version has not been current for that long (:mod:`featurestore.maintenance`). The
reader then gets ``Not found: <store>/<name>.lance/data/...``, as an ``OSError``, an
``ArrowInvalid`` or a ``ValueError`` depending on where pylance noticed.

:func:`is_vanished` recognises such an error, and :func:`read_latest` (behind
:meth:`featurestore.store.Store.read`, ``Store.table`` and ``versioned.per_version``) runs a
read again on the dataset's latest version when it happens: the latest version is never
deleted, so the retry reads files that are still there. A read that keeps losing its files
(a vacuum on every commit of a busy writer) ends with a :class:`DatasetChangedError` that
says so, never with a blamed ``--where`` filter.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, TypeVar

from .errors import DatasetChangedError

log = logging.getLogger(__name__)

__all__ = ["is_vanished", "is_vanished_manifest", "is_storage_error", "read_latest", "ATTEMPTS"]

T = TypeVar("T")

#: Reads of one dataset before giving up: the first, then a reopen at the latest version
#: (enough unless a commit and a vacuum both land while the retry reads), then one more.
ATTEMPTS = 3

#: Phrases of a missing file in pylance / object_store errors (local, S3, GCS, Azure).
_MISSING = ("not found", "no such file", "does not exist")
#: Parts of a Lance dataset's own files: a message naming one is about storage, not SQL.
_LANCE_PARTS = (".lance/", "/data/", "/_versions/", "_deletions/", ".manifest", ".lance")
#: Phrases of a filter's own failure (parse, plan, evaluation): never a storage error, even
#: when the filter's text quotes a path or the words "not found".
_FILTER = ("filter expression", "error during planning", "sql parser", "cast error",
           "cannot coerce", "compute error", "no field named", "schema error")
#: Phrases of a storage failure other than a vanished file.
_STORAGE = ("permission denied", "io error", "object at location", "connection", "timed out",
            "corrupt", "unexpected eof", "not found", "no such file")


def is_vanished(exc: BaseException) -> bool:
    """True when ``exc`` says a file of a Lance dataset is gone (a concurrent vacuum).

    Matches ``FileNotFoundError``, and ``OSError`` / ``ValueError`` (``ArrowInvalid``
    included) whose message says "Not found" (or "no such file") about a path inside a
    ``.lance`` dataset; a filter naming an unknown column ("No field named x") is not one.
    """
    if isinstance(exc, FileNotFoundError):
        return True
    if not isinstance(exc, (OSError, ValueError)):
        return False
    text = str(exc)
    lowered = text.lower()
    if any(f in lowered for f in _FILTER):
        return False
    return any(m in lowered for m in _MISSING) and any(p in text for p in _LANCE_PARTS)


def is_vanished_manifest(exc: BaseException) -> bool:
    """True when opening a dataset failed because the manifest it picked as the latest was
    deleted meanwhile (not because the dataset does not exist: that names ``_versions``)."""
    return is_vanished(exc) and ".manifest" in str(exc)


def is_storage_error(exc: BaseException) -> bool:
    """True when a failed scan is the storage's fault (a missing or unreadable file, a lost
    connection), not its filter's: such an error must never be reported as a bad ``--where``."""
    if isinstance(exc, OSError) and type(exc) is not OSError:  # FileNotFoundError, PermissionError...
        return True
    lowered = str(exc).lower()
    if any(f in lowered for f in _FILTER):
        return False
    return any(s in lowered for s in _STORAGE)


def read_latest(open_latest: Callable[[], Any], read: Callable[[Any], T], *, what: str,
                first: Any = None, attempts: int = ATTEMPTS) -> T:
    """``read(dataset)``, reopened at the latest version when its files vanish mid-read.

    Args:
        open_latest: opens the dataset's latest version (may return None: no dataset).
        read: the read; gets the opened dataset (or None).
        what: names the dataset in the error (``clips.lance``).
        first: an already opened dataset for the first attempt (default: open one).
        attempts: reads in all before giving up.

    Raises:
        DatasetChangedError: every attempt lost a file to a concurrent vacuum.
    """
    ds = first if first is not None else open_latest()
    for attempt in range(1, attempts + 1):
        try:
            return read(ds)
        except (OSError, ValueError) as exc:
            if not is_vanished(exc):
                raise
            if attempt == attempts:
                raise DatasetChangedError(
                    f"{what}: files of the version being read were deleted {attempts} times in a "
                    f"row by a concurrent `emofs vacuum` ({_first_line(exc)}): run it again, or "
                    "vacuum with a longer --older-than while readers are running"
                ) from exc
            log.info("%s: a file vanished mid-read (%s); reading the latest version again",
                     what, _first_line(exc))
            ds = open_latest()
    raise AssertionError("unreachable")  # pragma: no cover


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    line = lines[0] if lines else type(exc).__name__
    return line.split(", /home/")[0].split(", /rust")[0]
