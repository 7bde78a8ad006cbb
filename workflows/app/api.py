"""JSON API routes: store summary, clips, similar clips, one clip's page.

Every handler is a plain function (Starlette runs it in a thread, so Lance and FAISS
calls never block the event loop) that parses the query string, calls the library and
returns JSON; errors become 4xx JSON in :mod:`.security` / :mod:`.server`.
"""

from __future__ import annotations

import os
from typing import Any

from featurestore import store_info
from featurestore.corrections import read_corrections
from featurestore.predictions import VOCABULARY_KEY, read_predictions
from featurestore.schema import CLIPS, predictions_name
from featurestore.store import sql_quote
from workflows.similar import find_similar

from .memory import maybe_release
from .rundirs import clip_modality_weights
from .spaces import default_index, describe_space, spaces
from .queries import ClipQuery, card_facts, clip_rows, int_param, predictions_for, query_clips, resolve_clip

__all__ = ["reply", "info_route", "clips_route", "similar_route", "clip_route", "similar_payload", "json_body"]


def reply(value: Any, status: int = 200):
    """A JSON response (dates as strings, NaN as null)."""
    from starlette.responses import Response

    from .errors import json_bytes

    return Response(json_bytes(value), status_code=status, media_type="application/json")


def _store(request):
    return request.app.state.store


async def json_body(request, example: str) -> dict:
    """The JSON object of a write that changes the store (the Guard has bounded its size and
    checked its origin); refused with ``--read-only``."""
    import json

    from .errors import InputError, PayloadError

    if request.app.state.config.read_only:
        raise PayloadError("this app runs --read-only: it writes nothing to the store (restart it "
                           "without --read-only)", 403)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise PayloadError(f"send JSON (Content-Type: application/json, got {content_type or 'none'})", 415)
    try:
        body = json.loads(await request.body() or b"{}")
    except (ValueError, UnicodeDecodeError, RecursionError):
        body = None
    if not isinstance(body, dict):
        raise InputError(f"the request body must be a JSON object: {example}")
    return body


def info_route(request):
    """``GET /api/info``: the store summary of ``emofs info --json`` plus the app's mode."""
    store = _store(request)
    summary = store_info(store)
    config = request.app.state.config
    summary["app"] = {"read_only": config.read_only, "max_upload_mb": config.max_upload_mb}
    clips = store.dataset(CLIPS)
    summary["clip_columns"] = clips.schema.names if clips is not None else []
    summary["spaces"] = spaces(store)  # learned emotion spaces first: the page's default
    return reply(summary)


def clips_route(request):
    """``GET /api/clips?where=&limit=&offset=&run=&pred_label=&conf_min=&conf_max=&wrong=``."""
    return reply(query_clips(_store(request), ClipQuery.from_params(request.query_params)))


def similar_payload(store, result, run: str | None, facts=None) -> dict[str, Any]:
    """The JSON of a :class:`featurestore.index.SimilarResult`, rows joined with clip facts
    (modality, duration; ``facts``: the store's :func:`.queries.card_facts`, read when not
    given) and ``run``'s prediction."""
    rows = [dict(r) for r in result.rows]  # copies: the payload adds clip facts
    ids = [r["clip_id"] for r in rows]
    facts = (card_facts(store) if facts is None else facts).rows(ids)
    preds = predictions_for(store, run, ids)
    for row, fact in zip(rows, facts):
        row.update({k: fact.get(k) for k in ("modality", "has_video", "has_audio", "duration_s",
                                              "split", "speaker", "tags")})
        row.update(preds.get(row["clip_id"], {"prediction": None, "confidence": None}))
    return {"index": result.index, "space": describe_space(store, result.index),
            "query": {k: v for k, v in result.query.items() if k != "vector"},
            "notes": result.notes, "vote": result.vote(), "results": rows}


async def similar_route(request):
    """``GET /api/similar/{clip_id}?k=&where=&index=&run=``: neighbours of a stored clip.

    The clip id may come percent-encoded (``a%2Fb.wav``) or as a plain path (``a/b.wav``);
    a stored relative path or file path also resolves. Nothing outside the store is read.
    """
    import asyncio

    # a plain executor hop: half the CPU of anyio's (limiter, cancel scope, checkpoints)
    return await asyncio.get_running_loop().run_in_executor(search_threads(), _similar, request)


def _similar(request):
    store = _store(request)
    params = request.query_params
    facts = card_facts(store)  # once a request: each look is a listing of the clips' versions
    clip_id = resolve_clip(store, request.path_params["clip_id"], facts)
    index = params.get("index") or default_index(store, clip_id)  # a learned space first
    result = find_similar(store, clip_id, k=int_param(params, "k", 10), index=index,
                          where=params.get("where") or None, warn_stale=False)
    answer = reply(similar_payload(store, result, params.get("run") or None, facts))
    maybe_release()  # a cache rebuilt after a store change: its freed pages go back
    return answer


_THREADS: list[Any] = []


def search_threads():
    """The threads searches run on: as many as cores. FAISS and Lance release the GIL,
    so that many run in parallel; more would only queue on the GIL and add switches."""
    from concurrent.futures import ThreadPoolExecutor

    if not _THREADS:
        _THREADS.append(ThreadPoolExecutor(max(1, os.cpu_count() or 1), thread_name_prefix="emofs-search"))
    return _THREADS[0]


def clip_route(request):
    """``GET /api/clip/{clip_id}``: the clip row, every run's prediction (with class
    probabilities, the attention head's modality weights and the LLM's explanation when
    there are), its errors and corrections."""
    store = _store(request)
    runs_dir = request.app.state.config.runs_dir
    clip_id = resolve_clip(store, request.path_params["clip_id"])
    row = clip_rows(store, [clip_id])[0]
    where = f"clip_id = {sql_quote(clip_id)}"
    predictions = []
    for run in store.prediction_runs():
        frame = read_predictions(store, run, where=where)
        if not frame.height:
            continue
        pred = frame.to_dicts()[0]
        vocabulary = _vocabulary(store, run)
        probs = pred.get("probs") or []
        predictions.append({
            "run": run, "label": pred.get("label"), "confidence": pred.get("confidence"),
            "probs": dict(zip(vocabulary, probs)), "explanation": pred.get("explanation"),
            "modality_weights": clip_modality_weights(store, runs_dir, run, clip_id),
            "modalities": pred.get("modalities"), "predicted_at": pred.get("predicted_at")})
    errors_where = where + (f" OR uri = {sql_quote(row['uri'])}" if row.get("uri") else "")
    errors = store.errors(where=errors_where).drop("error_key").to_dicts()
    corrections = read_corrections(store, where=where).to_dicts()
    return reply({"clip": row, "predictions": predictions, "errors": errors, "corrections": corrections})


def _vocabulary(store, run: str) -> list[str]:
    import json

    ds = store.dataset(predictions_name(run))
    raw = (ds.schema.metadata or {}).get(VOCABULARY_KEY.encode(), b"[]") if ds is not None else b"[]"
    return json.loads(raw)
