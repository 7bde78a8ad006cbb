"""Search by a media file the analyst drops on the page (not in the store).

``POST /api/upload?name=FILE.mp4&k=&index=&where=&run=`` with the file's bytes as the
body. The size limit is checked on the declared length and again while reading; the
extension must be a media type emofs ingests; the bytes go to a fresh temporary folder
that is removed afterwards, whatever happens. The file is extracted with the index's
encoders (:func:`workflows.similar.find_similar`) and never added to the store; a file
that does not decode is a 422 and the server keeps running.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from extractors import MEDIA_EXTENSIONS
from featurestore.errors import InputError, QueryError, StoreError
from workflows.similar import find_similar

from .api import reply, similar_payload
from .errors import PayloadError
from .queries import int_param

__all__ = ["upload_route", "UPLOAD_PREFIX"]

UPLOAD_PREFIX = "emofs-app-upload-"


def _check_name(name: str) -> str:
    base = Path(name or "").name
    suffix = Path(base).suffix.lower()
    if not base or suffix not in MEDIA_EXTENSIONS:
        raise PayloadError(f"{base or 'the upload'} is not a media file emofs reads "
                           f"(extensions: {', '.join(sorted(MEDIA_EXTENSIONS))})", 415)
    return "query" + suffix  # the folder is ours: the name is never taken from the request


async def upload_route(request):
    """``POST /api/upload``: similar clips for an uploaded media file."""
    from starlette.concurrency import run_in_threadpool

    config = request.app.state.config
    params = request.query_params
    target_name = _check_name(params.get("name", ""))
    k = int_param(params, "k", 10)
    if k < 1:
        raise InputError(f"-k must be >= 1 (got {k})")  # before the upload is read
    limit = config.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadError(f"the file is {int(declared) / 2**20:.1f} MiB; the limit is "
                           f"{config.max_upload_mb:g} MiB (emofs app --max-upload-mb)", 413)
    folder = Path(tempfile.mkdtemp(prefix=UPLOAD_PREFIX))
    try:
        path = folder / target_name
        size = 0
        with open(path, "wb") as handle:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise PayloadError(f"the file is over the {config.max_upload_mb:g} MiB limit "
                                       "(emofs app --max-upload-mb)", 413)
                handle.write(chunk)
        if size == 0:
            raise PayloadError("the upload is empty: send the media file's bytes as the body", 422)
        return await run_in_threadpool(_search, request, path, params, k)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _search(request, path: Path, params, k: int):
    store = request.app.state.store
    try:
        result = find_similar(store, path, k=k, index=params.get("index") or None,
                              where=params.get("where") or None, add=False, warn_stale=False)
    except (QueryError, StoreError):  # a bad filter or index: the request's fault, not the file's
        raise
    except Exception as exc:  # noqa: BLE001 - a file that fails to decode is the user's 422
        line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise PayloadError(f"cannot read the uploaded file: {line}", 422) from exc
    payload = similar_payload(store, result, params.get("run") or None)
    payload["query"] = {"source": "upload", "name": params.get("name")}
    return reply(payload)

