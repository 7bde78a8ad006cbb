"""Errors as JSON answers: the CLI's one-line message, a 4xx status, never a traceback."""

from __future__ import annotations

import json
import logging
from typing import Any

from featurestore.errors import (
    DatasetChangedError,
    EmofsError,
    IndexNotFoundError,
    MissingFeatureSetError,
    StoreNotFoundError,
)
from featurestore.errors import InputError

log = logging.getLogger(__name__)

__all__ = ["NotFoundError", "PayloadError", "status_of", "error_body", "json_bytes"]


class NotFoundError(InputError):
    """A clip, run, correction or file the request names is not in the store (404)."""


class PayloadError(InputError):
    """An upload is too large (413) or not a media file (415); ``status`` says which."""

    def __init__(self, message: str, status: int = 415):
        super().__init__(message)
        self.status = status


def status_of(exc: BaseException) -> int:
    """The HTTP status of an exception: 404 for missing things, 4xx for bad input, 503 when a
    concurrent vacuum kept deleting what a read was reading (try again), else 500."""
    if isinstance(exc, PayloadError):
        return exc.status
    if isinstance(exc, DatasetChangedError):
        return 503
    if isinstance(exc, (NotFoundError, StoreNotFoundError, IndexNotFoundError, MissingFeatureSetError)):
        return 404
    if isinstance(exc, EmofsError):
        return 400
    return 500


def error_body(exc: BaseException) -> dict[str, Any]:
    """``{"error": one line}``; unexpected exceptions are logged and named, not shown."""
    if isinstance(exc, EmofsError):
        lines = str(exc).strip().splitlines()
        return {"error": lines[0] if lines else type(exc).__name__, "type": type(exc).__name__}
    log.exception("unexpected error in the app", exc_info=exc)
    return {"error": f"internal error ({type(exc).__name__}): see the server log", "type": "InternalError"}


def json_bytes(value: Any) -> bytes:
    """JSON for the page (dates, paths and the like as strings; NaN as null)."""
    try:  # the C encoder alone when every float is finite (a search's answer: no NaN)
        return json.dumps(value, default=str, separators=(",", ":"), allow_nan=False).encode()
    except ValueError:  # a NaN or inf somewhere: walk the value once to make them null
        return json.dumps(_finite(value), default=str, separators=(",", ":")).encode()


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
