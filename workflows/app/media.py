"""Media bytes (HTTP ranges, so video seeks), browser renditions, waveform peaks and
peak-frame face thumbnails.

``/media/{clip_id}`` serves only files registered in the store, found by clip id: the
request never carries a path. A local file must still be where the clip row says, a
regular file, and (symlinks resolved) inside one of the store's ingested roots; an object
in a bucket (``s3://...``, media ingested from a bucket) must have a clean key under one
of the ingested ``s3://`` roots and still exist. Anything else is 404.

What the browser cannot play (FLV, AVI, MKV, VP6, MJPEG ...) is served as a rendition
made once and kept in the store (:mod:`.renditions`); ``?original=1`` downloads the file
as it is. Bucket objects and renditions in a bucket are streamed with ranged reads (the
page's CSP allows media from its own origin only, so no redirect to the bucket).
``/peaks/{clip_id}`` gives the audio's min/max peaks for the page's waveform strip.
Thumbnails decode the peak frame with the extractors' media and face code and keep the
JPEG in the store (``app/thumbs/``), so each clip is decoded once.
"""

from __future__ import annotations

import hashlib
import mimetypes
import threading
from pathlib import Path
from urllib.parse import quote

from featurestore.index.files import read_bytes, write_bytes
from featurestore.remote import filesystem, is_remote
from featurestore.schema import CLIPS

from .errors import NotFoundError, json_bytes
from .queries import clip_rows
from .renditions import MediaUnplayableError, ensure_rendition
from .waveform import waveform

__all__ = ["media_route", "peaks_route", "thumb_route", "media_file", "media_source", "peak_face_jpeg",
           "THUMB_DIR", "THUMB_SIZE"]

THUMB_DIR = "app/thumbs"
THUMB_SIZE = 160
_MIME = {".wav": "audio/wav", ".mp3": "audio/mpeg", ".flac": "audio/flac", ".m4a": "audio/mp4",
         ".ogg": "audio/ogg", ".mp4": "video/mp4", ".webm": "video/webm", ".mkv": "video/x-matroska",
         ".mov": "video/quicktime", ".avi": "video/x-msvideo", ".flv": "video/x-flv"}
_ROOTS: dict[tuple[str, int | None], tuple[list[Path], list[str]]] = {}
_DECODE = threading.Semaphore(2)  # thumbnails decode at most two clips at once
_CHUNK = 1 << 20


def _clean_object_uri(uri: str) -> str | None:
    """``scheme://bucket/key`` with no trailing '/', or None when the key has '.', '..' or
    empty segments (which could name something outside a root once a server normalises it)."""
    scheme, sep, rest = str(uri).partition("://")
    parts = rest.rstrip("/").split("/")
    if not sep or not scheme or any(p in ("", ".", "..") or "\\" in p for p in parts):
        return None
    return f"{scheme}://{'/'.join(parts)}"


def _roots(store) -> tuple[list[Path], list[str]]:
    """The store's ingested roots: local folders (resolved) and bucket prefixes."""
    key = (store.uri, store.version(CLIPS))
    if key not in _ROOTS:
        table = store.table(CLIPS, columns=["root"])
        roots = {r for r in (table.column("root").to_pylist() if table is not None else []) if r}
        local = [Path(r).resolve() for r in roots if not is_remote(r)]
        remote = [c for c in (_clean_object_uri(r) for r in roots if is_remote(r)) if c]
        _ROOTS[key] = (local, remote)
    return _ROOTS[key]


def media_source(store, row: dict) -> Path | str:
    """The checked media file of a clip row: a resolved local path, or a bucket object URI.

    Raises:
        NotFoundError: no media, the file is gone or not a regular file, or it lies
            (symlinks resolved) outside every ingested root.
    """
    clip_id, uri = row.get("clip_id"), row.get("uri")
    if not uri or row.get("has_media") is False:
        raise NotFoundError(f"no media for clip {clip_id!r} in the store")
    local_roots, remote_roots = _roots(store)
    if is_remote(uri):
        clean = _clean_object_uri(uri)
        if clean is None or not any(clean.startswith(root + "/") for root in remote_roots):
            raise NotFoundError(f"no media for clip {clip_id!r} in the store")
        fs, path = filesystem(clean)
        try:
            size = fs.get_file_info(path).size
        except OSError:
            size = None
        if size is None:
            raise NotFoundError(f"the media file of clip {clip_id!r} is gone: re-ingest it")
        return clean
    try:
        real = Path(uri).resolve(strict=True)
    except (OSError, RuntimeError):
        raise NotFoundError(f"the media file of clip {clip_id!r} is gone: re-ingest it") from None
    if not real.is_file() or not any(real.is_relative_to(root) for root in local_roots):
        raise NotFoundError(f"no media for clip {clip_id!r} in the store")
    return real


def media_file(store, clip_id: str) -> tuple[Path | str, dict]:
    """The media file of a stored clip, checked (:func:`media_source`), and its clip row.

    Raises:
        NotFoundError: unknown clip, or :func:`media_source` refuses its file.
    """
    rows = clip_rows(store, [clip_id])
    if not rows:
        raise NotFoundError(f"no media for clip {clip_id!r} in the store")
    return media_source(store, rows[0]), rows[0]


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None | bool:
    """``(start, end)`` (inclusive) of a single ``Range: bytes=`` header; None for no or an
    unusable header (serve it all, as RFC 9110 allows); False when unsatisfiable (416)."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, _, last = header[6:].strip().partition("-")
    try:
        if not first:  # the last N bytes
            n = int(last)
            return (max(0, size - n), size - 1) if n > 0 and size else False
        start, end = int(first), int(last) if last else size - 1
    except ValueError:
        return None
    if start >= size or end < start:
        return False
    return start, min(end, size - 1)


def _object_response(request, uri: str, mime: str, headers: dict):
    """A bucket object's bytes with ranges, read in 1 MiB ranged GETs as they are sent."""
    from starlette.responses import Response, StreamingResponse

    fs, path = filesystem(uri)
    size = fs.get_file_info(path).size or 0
    span = _byte_range(request.headers.get("range"), size)
    headers = {**headers, "accept-ranges": "bytes"}
    if span is False:
        return Response(status_code=416, headers={**headers, "content-range": f"bytes */{size}"})
    start, end = span or (0, size - 1)

    def body():
        with fs.open_input_file(path) as handle:
            handle.seek(start)
            left = end - start + 1
            while left > 0:
                chunk = handle.read(min(_CHUNK, left))
                if not chunk:
                    return
                left -= len(chunk)
                yield chunk

    headers["content-length"] = str(max(0, end - start + 1))
    if span:
        headers["content-range"] = f"bytes {start}-{end}/{size}"
    return StreamingResponse(body(), status_code=206 if span else 200, media_type=mime, headers=headers)


def _send(request, where: Path | str, mime: str, headers: dict):
    from starlette.responses import FileResponse

    if isinstance(where, str) and is_remote(where):
        return _object_response(request, where, mime, headers)
    return FileResponse(where, media_type=mime, headers=headers)


def _unplayable(clip_id: str, exc: Exception):
    from starlette.responses import Response

    body = {"error": f"the media of clip {clip_id!r} cannot be played: {exc}; download it with "
                     f"?original=1 or re-ingest a good copy", "type": type(exc).__name__}
    return Response(json_bytes(body), status_code=422, media_type="application/json")


def media_route(request):
    """``GET /media/{clip_id}``: the clip's media as the browser can play it (the file, or
    its cached rendition); ``?original=1``: the file as it is, as a download. Ranges
    (``Accept-Ranges``, ``206``) either way, so video seeks."""
    store = request.app.state.store
    clip_id = request.path_params["clip_id"]
    source, row = media_file(store, clip_id)
    name = str(source).rsplit("/", 1)[-1]
    mime = _MIME.get(Path(name).suffix.lower()) or mimetypes.guess_type(name)[0] or "application/octet-stream"
    headers = {"cache-control": "private, max-age=3600"}
    if request.query_params.get("original") in ("1", "true", "yes"):
        headers["content-disposition"] = f"attachment; filename*=UTF-8''{quote(name)}"
        return _send(request, source, mime, headers)
    try:
        rendition = ensure_rendition(store, str(source), row)
    except MediaUnplayableError as exc:
        return _unplayable(clip_id, exc)
    if rendition is None:
        return _send(request, source, mime, headers)
    headers["x-emofs-rendition"] = rendition.plan.action
    target = store.path(rendition.rel)
    return _send(request, Path(target) if store.is_local else target, rendition.mime, headers)


def peaks_route(request):
    """``GET /peaks/{clip_id}``: min/max peaks of the clip's audio in 1000 slices
    (``duration``, ``bins``, ``min``, ``max``) for the waveform strip, cached in the store."""
    from starlette.responses import Response

    store = request.app.state.store
    clip_id = request.path_params["clip_id"]
    source, row = media_file(store, clip_id)
    if row.get("has_audio") is False:
        raise NotFoundError(f"clip {clip_id!r} has no audio, so no waveform")
    try:
        peaks = waveform(store, str(source), row)
    except MediaUnplayableError as exc:
        return _unplayable(clip_id, exc)
    return Response(json_bytes(peaks), media_type="application/json",
                    headers={"cache-control": "private, max-age=86400"})


def peak_face_jpeg(path: Path, peak_frame: int | None, size: int = THUMB_SIZE) -> bytes:
    """The face crop of a video's peak frame as JPEG bytes.

    Args:
        path: the video file.
        peak_frame: index in the stream of the peak frame (the clip row's ``peak_frame``,
            set by ``emofs extract``); None: the peak is found here the same way.
        size: side of the square thumbnail.

    Raises:
        NotFoundError: the file has no decodable video.
    """
    import cv2
    import numpy as np

    from extractors.faces import crop, track_faces
    from extractors.media import MediaError, decode_clip
    from extractors.peak import peak_index

    try:
        decoded = decode_clip(path, audio=False, video=True, threads=1)
    except MediaError as exc:
        raise NotFoundError(f"no face thumbnail: {exc}") from None
    frames = decoded.frames  # (F, H, W, 3)
    track = track_faces(frames)
    if peak_frame is not None:
        i = int(np.argmin(np.abs(decoded.frame_indices - peak_frame)))
    else:
        faces = np.stack([crop(f, b, 96) for f, b in zip(frames, track.boxes)])  # (F, 96, 96, 3)
        i = peak_index(faces)
    face = crop(frames[i], track.boxes[i], size)  # (S, S, 3) RGB
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(face, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:  # pragma: no cover - OpenCV always encodes a uint8 image
        raise NotFoundError("no face thumbnail: JPEG encoding failed")
    return data.tobytes()


def thumb_route(request):
    """``GET /thumb/{clip_id}``: the peak-frame face crop (JPEG), cached in the store."""
    from starlette.responses import Response

    store = request.app.state.store
    path, row = media_file(store, request.path_params["clip_id"])
    if not row.get("has_video"):
        raise NotFoundError(f"clip {row['clip_id']!r} has no video, so no face thumbnail")
    key = hashlib.sha1(f"{row['clip_id']}|{row.get('sha256')}|{row.get('peak_frame')}".encode()).hexdigest()
    rel = f"{THUMB_DIR}/{key}.jpg"
    data = read_bytes(store, rel)
    if data is None:
        with _DECODE:
            data = peak_face_jpeg(path, row.get("peak_frame"))
        write_bytes(store, rel, data)
    return Response(data, media_type="image/jpeg", headers={"cache-control": "private, max-age=86400"})
