"""Correction routes: set or fix a clip's label, add tags, undo; off with ``--read-only``.

The writes are :mod:`featurestore.corrections`: a ``corrections.lance`` row (who, when,
before, after) and the clip row's update, each a new store version; ``emofs clips``
shows the corrected label at once.
"""

from __future__ import annotations

import json

from featurestore.corrections import correct_clip, read_corrections, undo_correction
from featurestore.store import sql_quote

from .api import reply
from .errors import InputError, PayloadError
from .queries import int_param, resolve_clip

__all__ = ["list_corrections_route", "correct_route", "undo_route"]


class ReadOnlyError(PayloadError):
    """The app runs ``--read-only`` (403)."""

    def __init__(self) -> None:
        super().__init__("this app runs --read-only: corrections are off (restart it without "
                         "--read-only to correct labels)", 403)


async def _body(request) -> dict:
    """The JSON object of a write (the Guard has bounded its size and checked its origin)."""
    if request.app.state.config.read_only:
        raise ReadOnlyError()
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise PayloadError(f"send the correction as JSON (Content-Type: application/json, got "
                           f"{content_type or 'none'})", 415)
    raw = await request.body()
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InputError("the request body must be a JSON object, e.g. "
                         '{"clip_id": "...", "who": "Ana", "label": "sad"}') from None
    if not isinstance(body, dict):
        raise InputError("the request body must be a JSON object")
    return body


def _text_field(body: dict, name: str, required: bool = True) -> str | None:
    """``body[name]`` as a string; a number, list or object there is the caller's 400."""
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise InputError(f'"{name}" must be a string (got {type(value).__name__})')
    return value


def _tags_field(body: dict) -> list[str]:
    tags = body.get("tags")
    if tags is None:
        return []
    if isinstance(tags, str):
        return [t.strip() for t in tags.split(",") if t.strip()]
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise InputError('"tags" must be a list of strings or one comma-separated string')
    if len(tags) > 50:
        raise InputError(f'"tags" holds {len(tags)} tags; add at most 50 at a time')
    return tags


def list_corrections_route(request):
    """``GET /api/corrections?clip_id=&limit=``: corrections, newest first."""
    store = request.app.state.store
    clip_id = request.query_params.get("clip_id")
    where = f"clip_id = {sql_quote(resolve_clip(store, clip_id))}" if clip_id else None
    frame = read_corrections(store, where=where).head(int_param(request.query_params, "limit", 100))
    return reply({"corrections": frame.to_dicts()})


async def correct_route(request):
    """``POST /api/corrections`` ``{"clip_id", "who", "label"?, "tags"?: [...]}``."""
    from starlette.concurrency import run_in_threadpool

    body = await _body(request)
    store = request.app.state.store
    clip_id, who = _text_field(body, "clip_id"), _text_field(body, "who")
    label, tags = _text_field(body, "label", required=False), _tags_field(body)

    def run():
        return correct_clip(store, resolve_clip(store, clip_id), who=who, label=label, tags=tags)

    written = await run_in_threadpool(run)
    return reply({"corrections": written}, status=201 if written else 200)


async def undo_route(request):
    """``POST /api/corrections/{correction_id}/undo`` ``{"who"}``: revert one correction."""
    from starlette.concurrency import run_in_threadpool

    body = await _body(request)
    store = request.app.state.store
    undo = await run_in_threadpool(undo_correction, store, request.path_params["correction_id"],
                                   who=_text_field(body, "who"))
    return reply({"correction": undo}, status=201)
