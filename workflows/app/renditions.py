"""Browser-playable renditions of media the browser cannot play, cached in the store.

Browsers play a short list of containers and codecs (MP4 / WebM / Ogg / WAV / MP3 / FLAC
with H.264, VP8/VP9/AV1, AAC, MP3, Opus, Vorbis, FLAC, PCM); archives hold FLV, AVI, MKV,
MOV, MPEG-2 and the like. :func:`probe` reads a file's container and codecs and
:func:`plan_for` decides what the page needs:

- ``direct``: the browser plays the file as it is (served byte for byte);
- ``remux``: every stream is playable, only the container is not (H.264/AAC in FLV or MKV,
  VP9/Opus in MKV): the packets are copied into MP4 (or WebM), no decoding;
- ``transcode``: a stream the browser cannot decode (VP6, MJPEG, MPEG-2, AC-3, PCM outside
  WAV ...) is re-encoded with PyAV to H.264 (long side at most :data:`MAX_SIDE`, CRF
  :data:`CRF` under a bitrate cap, 8-bit 4:2:0) and AAC (mono or stereo) in MP4; a stream
  that is playable is still copied. VP9/Opus in WebM only where PyAV lacks libx264.

:func:`ensure_rendition` makes a rendition once per media file. It lives in the store at
``app/renditions/<sha256>.<profile>.<ext>`` (the clip row's content hash; the profile
names the encoding settings, so changing them never reuses an old file), is written to a
temporary file and moved into place (an object store's PUT is atomic), and a per-key lock
makes concurrent first requests wait for one encode instead of each running it.
:func:`make_renditions` makes them ahead for a whole store (``emofs app renditions``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any, Iterator

from extractors.media import error_reason, open_container as open_media_container
from featurestore.diskspace import disk_full_as_error
from featurestore.errors import InputError
from featurestore.progress import track_progress
from featurestore.remote import filesystem, is_remote

log = logging.getLogger(__name__)

__all__ = ["MediaUnplayableError", "StreamInfo", "Probe", "Plan", "Rendition", "probe", "plan_for", "plan_of",
           "render", "ensure_rendition", "make_renditions", "media_key", "video_encoder", "open_container",
           "first_streams", "KeyLocks", "ENCODE_SLOTS", "REND_DIR", "PROFILE", "MAX_SIDE", "CRF"]

REND_DIR = "app/renditions"
#: Names the encoding settings below: bump it when they change (new cache files).
PROFILE = "r1"
MAX_SIDE = 720  # long side of a transcoded video, pixels
CRF = 23
MAX_VIDEO_KBPS = 2500  # VBV cap over the CRF, so no rendition balloons on noisy video
AUDIO_BPS = 64_000  # per channel

# What Chromium, Firefox and Safari decode. H.264 only as 8-bit 4:2:0 (High 10 / 4:4:4 fail).
_H264_PIX = {"yuv420p", "yuvj420p"}
MP4_VIDEO = frozenset({"h264", "vp9", "av1"})
MP4_AUDIO = frozenset({"aac", "mp3", "opus", "flac"})
WEBM_VIDEO = frozenset({"vp8", "vp9", "av1"})
WEBM_AUDIO = frozenset({"opus", "vorbis"})
_PCM = frozenset({"pcm_u8", "pcm_s16le", "pcm_s24le", "pcm_s32le", "pcm_f32le"})
_NONE: frozenset[str] = frozenset()
#: audio-only containers (PyAV's first format name) the browser plays, with their codecs
_DIRECT_AUDIO = {"wav": _PCM, "mp3": frozenset({"mp3"}), "flac": frozenset({"flac"}),
                 "ogg": frozenset({"vorbis", "opus", "flac"}), "aac": frozenset({"aac"})}
_MP4_SUFFIXES = {".mp4", ".m4a", ".m4v"}
_AAC_RATES = {8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000}

ENCODE_SLOTS = threading.Semaphore(2)  # at most two encodes (or waveform decodes) at once
_PLANS: dict[str, "Plan"] = {}  # media key -> plan (a probe opens the file: once per file)
_MADE: set[str] = set()  # store paths of renditions known to exist


class MediaUnplayableError(InputError):
    """A media file that cannot be opened or decoded for the browser (corrupt, truncated,
    or without an audio or video stream)."""


@dataclass(frozen=True)
class StreamInfo:
    """The facts of one stream that decide whether a browser plays it."""

    codec: str
    pix_fmt: str | None = None
    width: int | None = None
    height: int | None = None
    channels: int | None = None
    sample_rate: int | None = None


@dataclass(frozen=True)
class Probe:
    """A media file's container (PyAV format name), suffix, first video and audio stream."""

    container: str
    suffix: str
    video: StreamInfo | None = None
    audio: StreamInfo | None = None


@dataclass(frozen=True)
class Plan:
    """What the page needs of a file.

    ``action``: ``direct``, ``remux`` or ``transcode``; ``container``: ``mp4`` or ``webm``
    (None when direct); ``video`` / ``audio``: ``copy``, an encoder (``libx264``,
    ``libvpx-vp9``, ``aac``, ``libopus``) or None (the file has no such stream).
    """

    action: str
    container: str | None = None
    video: str | None = None
    audio: str | None = None
    reason: str = ""


@dataclass(frozen=True)
class Rendition:
    """A rendition in the store: store-relative path, MIME type, the plan it was made by."""

    rel: str
    mime: str
    plan: Plan


class KeyLocks:
    """One lock per key, dropped when nobody holds or waits for it (no growth per clip)."""

    def __init__(self):
        self._guard = threading.Lock()
        self._locks: dict[str, list] = {}  # key -> [lock, holders + waiters]

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._guard:
            entry = self._locks.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._guard:
                entry[1] -= 1
                if not entry[1]:
                    del self._locks[key]


_LOCKS = KeyLocks()


# ------------------------------------------------------------------ probe and plan
def open_container(uri: str):
    """A PyAV input container over a local path or a bucket object (ranged reads);
    :class:`MediaUnplayableError` when it cannot be opened."""
    return open_media_container(uri, MediaUnplayableError)


def first_streams(container) -> tuple[Any, Any]:
    """The first video stream (cover art left out) and the first audio stream."""
    import av

    cover = av.stream.Disposition.attached_pic
    video = next((s for s in container.streams.video if not s.disposition & cover), None)
    return video, next(iter(container.streams.audio), None)


def probe(uri: str) -> Probe:
    """Container and codecs of the media file at ``uri`` (local path or ``s3://`` object).

    Raises:
        MediaUnplayableError: the file cannot be opened, or has neither audio nor video.
    """
    with open_container(uri) as container:
        v, a = first_streams(container)
        if v is None and a is None:
            raise MediaUnplayableError("no audio or video stream in the file")
        video = audio = None
        if v is not None:
            cc = v.codec_context
            video = StreamInfo(cc.codec.canonical_name if cc.codec else "unknown", cc.pix_fmt, cc.width, cc.height)
        if a is not None:
            cc = a.codec_context
            audio = StreamInfo(cc.codec.canonical_name if cc.codec else "unknown", channels=cc.channels,
                               sample_rate=cc.sample_rate)
        _decodes(container, v or a)
        suffix = os.path.splitext(str(uri).rsplit("/", 1)[-1])[1].lower()
        return Probe(container.format.name, suffix, video, audio)


def _decodes(container, stream, packets: int = 64) -> None:
    """Raise unless the first packets of ``stream`` decode to a frame: a file of zeros or
    noise still opens by its extension, yet plays nowhere."""
    import av

    try:
        for i, packet in enumerate(container.demux(stream)):
            if packet.decode():
                return
            if i >= packets:
                break
    except (av.error.FFmpegError, ValueError) as exc:
        raise MediaUnplayableError(f"corrupt media ({error_reason(exc)})") from None
    raise MediaUnplayableError("corrupt media (nothing in its first packets decodes)")


def _fits(stream: StreamInfo | None, codecs: frozenset[str]) -> bool:
    if stream is None:
        return True
    if stream.codec == "h264" and stream.pix_fmt not in _H264_PIX:
        return False
    return stream.codec in codecs


def video_encoder() -> str:
    """``libx264`` when PyAV's FFmpeg has it (the wheels do), else ``libvpx-vp9``."""
    import av

    try:
        av.codec.Codec("libx264", "w")
        return "libx264"
    except Exception:  # noqa: BLE001 - av raises UnknownCodecError / ValueError by version
        return "libvpx-vp9"


def _desc(p: Probe) -> str:
    streams = [s.codec for s in (p.video, p.audio) if s is not None]
    return f"{p.container.split(',')[0]} with {'/'.join(streams)}"


def plan_for(p: Probe, encoder: str | None = None) -> Plan:
    """What the page needs to play the file ``p`` describes (see the module doc).

    Args:
        p: the probe of the file.
        encoder: the video encoder of a transcode (default :func:`video_encoder`); with
            ``libvpx-vp9`` renditions are WebM with Opus.
    """
    family = p.container.split(",")[0]
    what = _desc(p)
    video_ok, audio_ok = _NONE, _DIRECT_AUDIO.get(family)
    if family == "mov" and p.suffix in _MP4_SUFFIXES:
        video_ok, audio_ok = MP4_VIDEO, MP4_AUDIO
    elif family == "matroska" and p.suffix == ".webm":
        video_ok, audio_ok = WEBM_VIDEO, WEBM_AUDIO
    if audio_ok is not None and _fits(p.video, video_ok) and _fits(p.audio, audio_ok):
        return Plan("direct", reason=f"{what} plays in the browser as it is")
    streams = dict(video="copy" if p.video else None, audio="copy" if p.audio else None)
    for container, video_ok, audio_ok in (("webm", WEBM_VIDEO, WEBM_AUDIO), ("mp4", MP4_VIDEO, MP4_AUDIO)):
        if _fits(p.video, video_ok) and _fits(p.audio, audio_ok):  # WebM first: VP9/Opus's own home
            return Plan("remux", container, **streams, reason=f"{what}: codecs play, the container does not")
    encoder = encoder or video_encoder()
    mp4 = encoder == "libx264"
    video_ok, audio_ok = (MP4_VIDEO, MP4_AUDIO) if mp4 else (WEBM_VIDEO, WEBM_AUDIO)
    video = None if p.video is None else "copy" if _fits(p.video, video_ok) else encoder
    audio = None if p.audio is None else "copy" if _fits(p.audio, audio_ok) else ("aac" if mp4 else "libopus")
    return Plan("transcode", "mp4" if mp4 else "webm", video, audio, reason=f"{what}: re-encoded for the browser")


# ------------------------------------------------------------------ remux / transcode
def _bounded(width: int, height: int, max_side: int = MAX_SIDE) -> tuple[int, int]:
    """Even dimensions with the long side at most ``max_side``, aspect kept."""
    scale = min(1.0, max_side / max(width, height, 1))
    return max(2, int(round(width * scale / 2)) * 2), max(2, int(round(height * scale / 2)) * 2)


class _VideoEncoder:
    """Decoded frames -> scaled 8-bit 4:2:0 -> H.264 (or VP9) packets, timestamps kept."""

    def __init__(self, out, vin, encoder: str):
        rate = vin.average_rate or vin.guessed_rate or Fraction(25)
        if not 1 <= rate <= 240:
            rate = Fraction(25)
        self.rate = Fraction(rate).limit_denominator(1001)
        cc = vin.codec_context
        self.width, self.height = _bounded(cc.width, cc.height)
        options = ({"crf": str(CRF), "preset": "veryfast", "maxrate": f"{MAX_VIDEO_KBPS}k",
                    "bufsize": f"{2 * MAX_VIDEO_KBPS}k"} if encoder == "libx264"
                   else {"crf": "33", "b": "0", "deadline": "realtime", "cpu-used": "8", "row-mt": "1"})
        self.stream = out.add_stream(encoder, rate=self.rate, options=options)
        self.stream.width, self.stream.height, self.stream.pix_fmt = self.width, self.height, "yuv420p"
        self.stream.codec_context.gop_size = max(1, round(2 * self.rate))  # a keyframe each 2 s: seeks land fast
        self.last = None

    def encode(self, frame) -> list:
        if frame is None:
            return self.stream.encode(None)
        if frame.time is not None:
            pts = int(round(frame.time * self.rate))
        else:  # no timestamp (some AVIs): the next frame slot
            pts = 0 if self.last is None else self.last + 1
        if self.last is not None and pts <= self.last:
            pts = self.last + 1  # variable-rate or duplicate stamps: keep them increasing
        self.last = pts
        out = frame.reformat(width=self.width, height=self.height, format="yuv420p")
        out.pts, out.time_base = pts, 1 / self.rate
        return self.stream.encode(out)


class _AudioEncoder:
    """Decoded audio -> mono/stereo AAC (or Opus); PyAV resamples and re-frames."""

    def __init__(self, out, ain, encoder: str):
        cc = ain.codec_context
        channels = 1 if (cc.channels or 1) == 1 else 2
        rate = cc.sample_rate if encoder == "aac" and cc.sample_rate in _AAC_RATES else 48000
        self.stream = out.add_stream(encoder, rate=rate)
        self.stream.layout = "mono" if channels == 1 else "stereo"
        self.stream.bit_rate = AUDIO_BPS * channels

    def encode(self, frame) -> list:
        return self.stream.encode(frame)


def _write(uri: str, out_path: str, plan: Plan) -> None:
    import av

    options = {"movflags": "+faststart"} if plan.container == "mp4" else {}
    with open_container(uri) as inp, av.open(out_path, "w", format=plan.container, options=options) as out:
        vin, ain = first_streams(inp)
        handlers: dict[int, Any] = {}  # input stream index -> output stream (a copy) or an encoder
        for stream, how, cls in ((vin, plan.video, _VideoEncoder), (ain, plan.audio, _AudioEncoder)):
            if stream is None or how is None:
                continue
            stream.thread_type = "AUTO"
            if how == "copy":
                copy = out.add_stream_from_template(stream)
                copy.codec_tag = "\0\0\0\0"  # let the muxer pick its tag (an AVI fourcc is refused by MP4)
                handlers[stream.index] = copy
            else:
                handlers[stream.index] = cls(out, stream, how)
        selected = [s for s in (vin, ain) if s is not None and s.index in handlers]
        for packet in inp.demux(*selected):
            handler = handlers[packet.stream.index]
            if not isinstance(handler, (_VideoEncoder, _AudioEncoder)):
                if packet.dts is None or not packet.size:
                    continue  # a demuxer's end-of-stream marker
                packet.stream = handler
                out.mux(packet)
                continue
            for frame in packet.decode():
                out.mux(handler.encode(frame))
        for handler in handlers.values():
            if isinstance(handler, (_VideoEncoder, _AudioEncoder)):
                out.mux(handler.encode(None))


def render(uri: str, out_path: str, plan: Plan) -> Plan:
    """Write the rendition ``plan`` describes of ``uri`` to the local file ``out_path``.

    A copy the target container refuses (odd timestamps, a codec tag) is retried as a
    full transcode. Returns the plan the file was made by.

    Raises:
        MediaUnplayableError: the media cannot be decoded or encoded (corrupt, truncated).
    """
    import av

    try:
        _write(uri, out_path, plan)
        return plan
    except (av.error.FFmpegError, ValueError) as exc:
        first = error_reason(exc)
    if "copy" not in (plan.video, plan.audio):
        raise MediaUnplayableError(f"cannot re-encode the media ({first})")
    mp4 = plan.container == "mp4"
    full = Plan("transcode", plan.container,
                video=("libx264" if mp4 else "libvpx-vp9") if plan.video else None,
                audio=("aac" if mp4 else "libopus") if plan.audio else None)
    full = replace(full, reason=f"{plan.reason}; copying failed ({first}), so re-encoded")
    log.info(f"rendition of {uri}: {full.reason}")
    try:
        _write(uri, out_path, full)
    except (av.error.FFmpegError, ValueError) as exc:
        raise MediaUnplayableError(f"cannot re-encode the media ({error_reason(exc)})") from None
    return full


# ------------------------------------------------------------------ the cache in the store
def media_key(row: dict, uri: str | None = None) -> str:
    """The cache key of a clip's media: its content sha256 (from ingest), unless the local
    file at ``uri`` changed since (size or mtime differ from the row's, the test ``emofs
    ingest`` uses); then, as for rows without a hash, a hash of where the file is, its size and
    modification time."""
    size, mtime = row.get("size_bytes"), row.get("mtime_ns")
    sha = row.get("sha256")
    if uri and not is_remote(uri) and size is not None and mtime is not None:
        try:
            st = os.stat(uri)
        except OSError:
            st = None
        if st is not None and (size, mtime) != (st.st_size, st.st_mtime_ns):
            sha, size, mtime = None, st.st_size, st.st_mtime_ns
    if sha:
        return str(sha)
    return "u" + hashlib.sha256(f"{row.get('uri')}|{size}|{mtime}".encode()).hexdigest()


def plan_of(uri: str, key: str) -> Plan:
    """The plan of the file at ``uri`` whose content is ``key`` (probed once per process)."""
    plan = _PLANS.get(key)
    if plan is None:
        plan = plan_for(probe(uri))
        if len(_PLANS) > 100_000:
            _PLANS.clear()
        _PLANS[key] = plan
    return plan


def _exists(store, rel: str) -> bool:
    import pyarrow.fs as pafs

    fs, path = filesystem(store.path(rel))
    return fs.get_file_info(path).type == pafs.FileType.File


def _mime(plan: Plan) -> str:
    return f"{'video' if plan.video else 'audio'}/{plan.container}"


def ensure_rendition(store, uri: str, row: dict, plan: Plan | None = None) -> Rendition | None:
    """The browser rendition of a clip's media, made now if the store has none yet.

    Args:
        store: the store (renditions are kept in it, under ``app/renditions/``).
        uri: the media file (already checked to be the clip's, inside the store's roots).
        row: the clip row (``sha256`` keys the cache).
        plan: the plan, when already known (default: probe the file).

    Returns:
        None when the browser plays the file as it is (``direct``), else the rendition.

    Raises:
        MediaUnplayableError: the file cannot be decoded or re-encoded.
        DiskFullError: no room for the rendition.
    """
    key = media_key(row, uri)
    plan = plan or plan_of(uri, key)
    if plan.action == "direct":
        return None
    rel = f"{REND_DIR}/{key}.{PROFILE}.{plan.container}"
    done = Rendition(rel, _mime(plan), plan)
    target = store.path(rel)
    if target in _MADE or _exists(store, rel):
        _MADE.add(target)
        return done
    with _LOCKS.hold(target):
        if _exists(store, rel):  # another request made it while this one waited
            _MADE.add(target)
            return done
        with ENCODE_SLOTS:
            started = time.perf_counter()
            made = _make(store, rel, uri, plan)
        log.info(f"rendition {rel} of {uri} ({made.action}, {time.perf_counter() - started:.2f} s)")
    _MADE.add(target)
    return done


def _make(store, rel: str, uri: str, plan: Plan) -> Plan:
    """Render into a temporary file, then move it into place (local) or upload it (bucket)."""
    target = store.path(rel)
    local = store.is_local
    folder = os.path.dirname(target) if local else None
    if folder:
        os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=f".{plan.container}", dir=folder)
    os.close(fd)
    try:
        with disk_full_as_error(target):
            made = render(uri, tmp, plan)
            if local:
                os.replace(tmp, target)
            else:
                fs, path = filesystem(target)
                fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
                with open(tmp, "rb") as src, fs.open_output_stream(path) as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)  # the object appears whole, on close
        return made
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def make_renditions(store, where: str | None = None, *, force: bool = False,
                    progress: bool = True) -> dict[str, Any]:
    """Make the renditions of every clip in the store (or those ``where`` selects) ahead,
    so no page view waits for an encode.

    Args:
        store: the store.
        where: a SQL filter over the clip rows (as ``emofs clips --where``).
        force: remake renditions that exist (after a change of encoder build, say).
        progress: report progress to the installed reporter (the CLI's bar).

    Returns:
        ``clips`` (looked at), ``direct`` (play as they are), ``made``, ``cached`` (there
        already), ``failed`` (``[{clip_id, error}]``), ``bytes`` (of the renditions made),
        ``seconds``.
    """
    from .media import media_source  # the same checks as the page's requests

    cond = "has_media AND uri IS NOT NULL"
    rows = store.clips(where=f"({where}) AND {cond}" if where else cond,
                       columns=["clip_id", "uri", "sha256", "size_bytes", "mtime_ns"]).to_dicts()
    report: dict[str, Any] = {"clips": len(rows), "direct": 0, "made": 0, "cached": 0, "failed": [],
                              "bytes": 0, "seconds": 0.0}
    started = time.perf_counter()
    with track_progress(len(rows), "renditions", enabled=progress) as advance:
        for row in rows:
            try:
                uri = media_source(store, row)
                key = media_key(row, str(uri))
                plan = plan_of(str(uri), key)
                rel = f"{REND_DIR}/{key}.{PROFILE}.{plan.container}"
                if plan.action == "direct":
                    report["direct"] += 1
                elif _exists(store, rel) and not force:
                    report["cached"] += 1
                else:
                    with _LOCKS.hold(store.path(rel)):
                        _make(store, rel, str(uri), plan)
                    _MADE.add(store.path(rel))
                    fs, path = filesystem(store.path(rel))
                    report["made"] += 1
                    report["bytes"] += fs.get_file_info(path).size or 0
            except InputError as exc:
                report["failed"].append({"clip_id": row["clip_id"], "error": str(exc).splitlines()[0]})
            advance(1)
    report["seconds"] = round(time.perf_counter() - started, 2)
    return report
