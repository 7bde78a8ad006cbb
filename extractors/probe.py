"""Media facts for ``clips.lance``: PyAV probe + sha256, with a clear reason on failure."""

from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["VIDEO_EXTENSIONS", "AUDIO_EXTENSIONS", "MEDIA_EXTENSIONS", "ProbeError", "probe", "sha256_file"]

VIDEO_EXTENSIONS = frozenset({".mp4", ".mkv", ".avi", ".mov", ".webm", ".flv"})
AUDIO_EXTENSIONS = frozenset({".wav", ".mp3", ".flac", ".m4a", ".ogg"})
MEDIA_EXTENSIONS = VIDEO_EXTENSIONS | AUDIO_EXTENSIONS

# A stream that demuxes to fewer packets than this share of its declared frame count is
# treated as truncated (containers round their declared counts a little).
_TRUNCATION_SHARE = 0.9


class ProbeError(Exception):
    """The file cannot be read as media; ``str()`` is the reason shown to the user."""


@dataclass(frozen=True)
class _StreamCount:
    declared: int
    demuxed: int


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    from featurestore.remote import is_remote, open_media

    digest = hashlib.sha256()
    with (open_media(path) if is_remote(str(path)) else open(path, "rb")) as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def probe(path: str | os.PathLike) -> dict[str, Any]:
    """Read a media file's facts with PyAV.

    Demuxes every packet (cheap: no decoding) so truncated files are caught, and decodes
    the first frame of each stream so files with undecodable payloads are caught too.

    Returns:
        dict with ``container, duration_s, has_audio, has_video, modality, fps, n_frames,
        width, height, video_codec, sample_rate, channels, audio_codec``.

    Raises:
        ProbeError: empty, unreadable, truncated or stream-less files.
    """
    import av

    from featurestore.remote import ObjectPath, is_remote, open_media

    path = ObjectPath(str(path)) if is_remote(str(path)) else Path(path)
    if path.stat().st_size == 0:
        raise ProbeError("empty file (0 bytes)")
    source = open_media(path)  # a bucket object: a seekable file of ranged reads
    try:
        container = av.open(source, metadata_errors="ignore")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        _close(source)
        raise ProbeError(f"not a readable media file ({_reason(exc)})") from exc
    with container, _closing(source):
        video = next((s for s in container.streams.video), None)
        audio = next((s for s in container.streams.audio), None)
        if video is None and audio is None:
            raise ProbeError("no audio or video stream in the file")
        facts: dict[str, Any] = {
            "container": container.format.name.split(",")[0],
            "has_video": video is not None,
            "has_audio": audio is not None,
        }
        counts = _demux_and_decode_first(container, [s for s in (video, audio) if s is not None])
        duration = container.duration / 1_000_000 if container.duration else None
        if video is not None:
            rate = video.average_rate or video.guessed_rate
            fps = float(rate) if rate else None
            n_frames = counts[video.index].demuxed
            facts.update(
                fps=fps,
                n_frames=n_frames,
                width=video.codec_context.width,
                height=video.codec_context.height,
                video_codec=video.codec_context.name,
            )
            if duration is None and fps:
                duration = n_frames / fps
        if audio is not None:
            facts.update(
                sample_rate=audio.codec_context.sample_rate or audio.rate,
                channels=audio.codec_context.channels,
                audio_codec=audio.codec_context.name,
            )
            if duration is None and audio.duration and audio.time_base:
                duration = float(audio.duration * audio.time_base)
    facts["duration_s"] = duration
    facts["modality"] = "+".join(m for m in ("audio", "video") if facts[f"has_{m}"])
    return facts


def _demux_and_decode_first(container, streams) -> dict[int, _StreamCount]:
    """Count packets per stream over the whole file; decode each stream's first frame."""
    import av

    demuxed = {s.index: 0 for s in streams}
    decoded = {s.index: False for s in streams}
    try:
        for packet in container.demux(*streams):
            if packet.size == 0:  # flush packet at end of stream
                continue
            demuxed[packet.stream.index] += 1
            if not decoded[packet.stream.index]:
                if packet.decode():
                    decoded[packet.stream.index] = True
    except (av.error.FFmpegError, ValueError) as exc:
        raise ProbeError(f"corrupt or truncated media ({_reason(exc)})") from exc
    counts = {s.index: _StreamCount(s.frames or 0, demuxed[s.index]) for s in streams}
    for stream in streams:
        count = counts[stream.index]
        if count.demuxed == 0:
            raise ProbeError(f"{stream.type} stream has no data (truncated or empty file)")
        if not decoded[stream.index]:
            raise ProbeError(f"{stream.type} stream cannot be decoded")
        if count.declared and count.demuxed < _TRUNCATION_SHARE * count.declared:
            raise ProbeError(
                f"truncated file: {stream.type} stream holds {count.demuxed} of "
                f"{count.declared} declared frames"
            )
    return counts


def _close(source) -> None:
    if not isinstance(source, str):
        source.close()


@contextmanager
def _closing(source):
    try:
        yield source
    finally:
        _close(source)


def _reason(exc: BaseException) -> str:
    text = (getattr(exc, "strerror", None) or str(exc)).strip()
    return text.splitlines()[0] if text else type(exc).__name__
