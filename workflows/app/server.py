"""The analyst app: a Starlette ASGI application over one store.

:func:`create_app` wires the routes of :mod:`.api`, :mod:`.media`, :mod:`.uploads`,
:mod:`.corrections`, :mod:`.projection` and :mod:`.runs` behind :class:`.security.Guard`,
serves the page from ``static/`` (plain HTML/CSS/JS, every asset local) and the OpenAPI
schema at ``/api/openapi.json`` (no docs page: it would need assets from a CDN).
:func:`serve` runs it with uvicorn.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from featurestore.store import Store

from .config import AppConfig

log = logging.getLogger(__name__)

__all__ = ["create_app", "serve", "openapi_schema", "STATIC_DIR", "ROUTES"]

STATIC_DIR = Path(__file__).resolve().parent / "static"

#: (path, method, module, handler, query parameters) for every route of the API.
ROUTES: list[tuple[str, str, str, str, tuple[str, ...]]] = [
    ("/api/info", "GET", "api", "info_route", ()),
    ("/api/clips", "GET", "api", "clips_route",
     ("where", "limit", "offset", "run", "pred_label", "conf_min", "conf_max", "wrong")),
    ("/api/similar/{clip_id:path}", "GET", "api", "similar_route", ("k", "where", "index", "run")),
    ("/api/clip/{clip_id:path}", "GET", "api", "clip_route", ()),
    ("/api/upload", "POST", "uploads", "upload_route", ("name", "k", "where", "index", "run")),
    ("/api/corrections", "GET", "corrections", "list_corrections_route", ("clip_id", "limit")),
    ("/api/corrections", "POST", "corrections", "correct_route", ()),
    ("/api/corrections/{correction_id}/undo", "POST", "corrections", "undo_route", ()),
    ("/api/map", "GET", "projection", "map_route", ("source", "colour", "run", "format")),
    ("/api/runs", "GET", "runs", "runs_route", ()),
    ("/api/runs/{run}", "GET", "runs", "run_route", ()),
    ("/api/spaces", "GET", "spaces", "spaces_route", ()),
    ("/api/spaces", "POST", "spaces", "build_space_route", ()),
    ("/media/{clip_id:path}", "GET", "media", "media_route", ("original",)),
    ("/peaks/{clip_id:path}", "GET", "media", "peaks_route", ()),
    ("/thumb/{clip_id:path}", "GET", "media", "thumb_route", ()),
]


def _handler(module: str, name: str):
    import importlib

    return getattr(importlib.import_module(f"{__package__}.{module}"), name)


def openapi_schema() -> dict[str, Any]:
    """The OpenAPI 3 document of :data:`ROUTES` (summaries from the handlers' docstrings)."""
    paths: dict[str, Any] = {}
    for path, method, module, name, params in ROUTES:
        handler = _handler(module, name)
        clean = path.replace(":path", "")
        summary = (handler.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        parameters = [{"name": p, "in": "query", "required": False, "schema": {"type": "string"}}
                      for p in params]
        parameters += [{"name": seg[1:-1], "in": "path", "required": True, "schema": {"type": "string"}}
                       for seg in clean.split("/") if seg.startswith("{")]
        paths.setdefault(clean, {})[method.lower()] = {
            "summary": summary, "operationId": name, "parameters": parameters,
            "responses": {"200": {"description": "JSON (media and thumbnails: bytes)"},
                          "4XX": {"description": '{"error": one line saying how to fix it}'}}}
    return {"openapi": "3.0.3", "info": {"title": "emofs analyst app", "version": "1"}, "paths": paths}


def create_app(config: AppConfig, store: Store | None = None):
    """The ASGI application serving ``config.store``.

    Args:
        config: the app's settings (host, token, read-only, upload limit).
        store: an open store (default: ``Store(config.store, create=False)``).

    Raises:
        StoreNotFoundError: the store does not exist.
    """
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import FileResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    from .api import reply
    from .errors import error_body, status_of
    from .security import Guard

    store = store or Store(config.store, create=False)
    routes = [Route(path, _handler(module, name), methods=[method])
              for path, method, module, name, _ in ROUTES]
    routes += [
        Route("/api/openapi.json", lambda request: reply(openapi_schema()), methods=["GET"]),
        Route("/", lambda request: FileResponse(STATIC_DIR / "index.html"), methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]

    def on_error(request, exc):
        return reply(error_body(exc), status=status_of(exc))

    def not_found(request, exc):
        return reply({"error": f"no such page: {request.url.path}"}, status=getattr(exc, "status_code", 404))

    app = Starlette(routes=routes, middleware=[Middleware(Guard, config=config)],
                    exception_handlers={Exception: on_error, 404: not_found, 405: not_found})
    app.state.store = store
    app.state.config = config
    return app


def serve(config: AppConfig) -> None:
    """Run the app with uvicorn until interrupted (the store is opened first)."""
    import uvicorn

    from .memory import tune_allocator, warm_in_background

    tune_allocator()  # before the store is read and the threads start
    app = create_app(config)
    warm_in_background(app.state.store)  # the index and clip columns a search needs, then trimmed
    try:  # one search per request thread (as many as cores): FAISS's own threads would only contend
        import faiss

        faiss.omp_set_num_threads(1)
    except ImportError:
        pass
    log.info(f"emofs app on {config.url()} (store {app.state.store.uri}"
             + (", read-only" if config.read_only else "") + ")")
    # httptools (C parser) when installed, else h11; no access log: both cost per request
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning", access_log=False,
                http="auto", loop="auto", timeout_keep_alive=30)
