"""Media bytes (HTTP ranges, so video seeks) and peak-frame face thumbnails.

``/media/{clip_id}`` serves only files registered in the store, found by clip id: the
request never carries a path. The file must still be where the clip row says, a regular
file, and (symlinks resolved) inside one of the store's ingested roots; anything else is
404. Thumbnails decode the peak frame with the extractors' media and face code and keep
the JPEG in the store (``app/thumbs/``), so each clip is decoded once.
"""

from __future__ import annotations

import hashlib
import mimetypes
import threading
from pathlib import Path

from featurestore.index.files import read_bytes, write_bytes
from featurestore.schema import CLIPS

from .errors import NotFoundError
from .queries import clip_rows

__all__ = ["media_route", "thumb_route", "media_file", "peak_face_jpeg", "THUMB_DIR", "THUMB_SIZE"]

THUMB_DIR = "app/thumbs"
THUMB_SIZE = 160
_MIME = {".wav": "audio/wav", ".mp3": "audio/mpeg", ".flac": "audio/flac", ".m4a": "audio/mp4",
         ".ogg": "audio/ogg", ".mp4": "video/mp4", ".webm": "video/webm", ".mkv": "video/x-matroska",
         ".mov": "video/quicktime", ".avi": "video/x-msvideo", ".flv": "video/x-flv"}
_ROOTS: dict[tuple[str, int | None], list[Path]] = {}
_DECODE = threading.Semaphore(2)  # thumbnails decode at most two clips at once


def _roots(store) -> list[Path]:
    key = (store.uri, store.version(CLIPS))
    if key not in _ROOTS:
        table = store.table(CLIPS, columns=["root"])
        roots = {r for r in (table.column("root").to_pylist() if table is not None else []) if r}
        _ROOTS[key] = [Path(r).resolve() for r in roots]
    return _ROOTS[key]


def media_file(store, clip_id: str) -> tuple[Path, dict]:
    """The media file of a stored clip, checked, and its clip row.

    Raises:
        NotFoundError: unknown clip, no media, file gone or not a regular file, or the
            file (symlinks resolved) lies outside every ingested root.
    """
    rows = clip_rows(store, [clip_id])
    if not rows or not rows[0].get("uri") or rows[0].get("has_media") is False:
        raise NotFoundError(f"no media for clip {clip_id!r} in the store")
    row = rows[0]
    try:
        real = Path(row["uri"]).resolve(strict=True)
    except (OSError, RuntimeError):
        raise NotFoundError(f"the media file of clip {clip_id!r} is gone: re-ingest it") from None
    if not real.is_file() or not any(real.is_relative_to(root) for root in _roots(store)):
        raise NotFoundError(f"no media for clip {clip_id!r} in the store")
    return real, row


def media_route(request):
    """``GET /media/{clip_id}``: the clip's bytes (``Accept-Ranges``, ``206`` for a range)."""
    from starlette.responses import FileResponse

    path, _ = media_file(request.app.state.store, request.path_params["clip_id"])
    mime = _MIME.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return FileResponse(path, media_type=mime, headers={"cache-control": "private, max-age=3600"})


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
