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
    if request.app.state.config.read_only:
        raise ReadOnlyError()
    raw = await request.body()
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise InputError("the request body must be a JSON object, e.g. "
                         '{"clip_id": "...", "who": "Ana", "label": "sad"}') from None
    if not isinstance(body, dict):
        raise InputError("the request body must be a JSON object")
    return body


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
    tags = body.get("tags") or []
    if isinstance(tags, str):
        tags = [t.strip() for t in tags.split(",") if t.strip()]

    def run():
        clip_id = resolve_clip(store, str(body.get("clip_id") or ""))
        return correct_clip(store, clip_id, who=str(body.get("who") or ""), label=body.get("label"),
                            tags=[str(t) for t in tags])

    written = await run_in_threadpool(run)
    return reply({"corrections": written}, status=201 if written else 200)


async def undo_route(request):
    """``POST /api/corrections/{correction_id}/undo`` ``{"who"}``: revert one correction."""
    from starlette.concurrency import run_in_threadpool

    body = await _body(request)
    store = request.app.state.store
    undo = await run_in_threadpool(undo_correction, store, request.path_params["correction_id"],
                                   who=str(body.get("who") or ""))
    return reply({"correction": undo}, status=201)
