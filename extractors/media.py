"""PyAV decoding: audio to 16 kHz mono float32, video frames sampled at a bounded rate.

Both streams are decoded in ONE pass over the container (packets are demuxed once and
routed to the audio resampler or the frame sampler), so a clip is read once however many
encoders need it. Memory is bounded for any clip length: audio stops at ``max_audio_s``
and at most ``max_frames`` frames (at most ``video_fps`` per second, each at most
``max_side`` pixels on its long side) are kept.
"""

from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from typing import Iterator

import numpy as np

__all__ = ["MediaConfig", "DecodedClip", "MediaError", "decode_clip", "decode_audio", "open_container", "error_reason"]


class MediaError(Exception):
    """A clip cannot be decoded; ``str()`` is the reason stored in ``errors.lance``."""


@dataclass(frozen=True)
class MediaConfig:
    """How clips are decoded (part of every encoder's spec).

    Attributes:
        sample_rate: audio sample rate in Hz (mono float32).
        max_audio_s: audio beyond this many seconds is not decoded.
        video_fps: at most this many frames per second are kept.
        max_frames: at most this many frames per clip are kept (spread over the clip).
        max_side: kept frames are downscaled so their long side is at most this.
        face_detector: ``auto`` | ``yunet`` | ``haar`` (see :mod:`extractors.detectors`);
            ``auto`` is resolved when the config is made, so specs record the real one.
    """

    sample_rate: int = 16_000
    max_audio_s: float = 120.0
    video_fps: float = 8.0
    max_frames: int = 64
    max_side: int = 720
    face_detector: str = "auto"

    def __post_init__(self):
        from .detectors import resolve_detector

        object.__setattr__(self, "face_detector", resolve_detector(self.face_detector))
        if self.sample_rate < 1000:
            raise ValueError(f"sample_rate must be >= 1000 Hz (got {self.sample_rate})")
        if self.video_fps <= 0 or self.max_frames < 1 or self.max_side < 32 or self.max_audio_s <= 0:
            raise ValueError(f"invalid media config {self}")

    def as_dict(self) -> dict:
        """JSON-friendly form (stored in specs)."""
        return asdict(self)


@dataclass
class DecodedClip:
    """What one decoding pass produced.

    Attributes:
        audio: ``(N,)`` float32 mono samples at ``sample_rate``, or None.
        frames: ``(F, H, W, 3)`` uint8 RGB frames, or None.
        frame_indices: ``(F,)`` index of each kept frame in the source stream.
        fps: the video stream's frame rate (None without video).
    """

    audio: np.ndarray | None = None
    frames: np.ndarray | None = None
    frame_indices: np.ndarray | None = None
    fps: float | None = None


def decode_audio(path: str | os.PathLike, config: MediaConfig = MediaConfig()) -> np.ndarray:
    """Decode a file's first audio stream to mono float32 at ``config.sample_rate``.  # (N,)"""
    clip = decode_clip(path, audio=True, video=False, config=config)
    return clip.audio


@contextmanager
def open_container(path: str | os.PathLike, error: type[Exception] = None) -> Iterator:
    """A PyAV input container over a local path or a bucket object (ranged reads), closed
    (with its source) on exit.

    Raises:
        ``error`` (default :class:`MediaError`): the file cannot be opened as media.
    """
    import av

    from featurestore.remote import open_media

    source = None
    try:
        source = open_media(path)  # a path, or a seekable file over a bucket (ranged reads)
        container = av.open(source, metadata_errors="ignore")
    except (av.error.FFmpegError, OSError, UnicodeDecodeError, ValueError) as exc:
        if source is not None and not isinstance(source, str):
            source.close()
        raise (error or MediaError)(f"cannot open media ({error_reason(exc)})") from None
    with container, (source if not isinstance(source, str) else nullcontext()):
        yield container


def decode_clip(
    path: str | os.PathLike, *, audio: bool, video: bool, config: MediaConfig = MediaConfig(),
    threads: int = 0,
) -> DecodedClip:
    """Decode the requested streams of ``path`` in one pass.

    ``threads`` caps FFmpeg's decoding threads (0: its default, one per core). Threads
    cut latency but cost about 12% more CPU in all, so processes that already share out
    the cores decode with their share (the output is the same).

    Raises:
        MediaError: the file is unreadable, corrupt, or lacks a requested stream.
    """
    import av

    with open_container(path) as container:
        astream = next(iter(container.streams.audio), None) if audio else None
        vstream = next(iter(container.streams.video), None) if video else None
        if audio and astream is None:
            raise MediaError("no audio stream to decode")
        if video and vstream is None:
            raise MediaError("no video stream to decode")
        streams = [s for s in (astream, vstream) if s is not None]
        if not streams:
            return DecodedClip()
        for stream in streams:
            stream.thread_type = "AUTO"
            if threads:
                stream.codec_context.thread_count = threads
        audio_sink = _AudioSink(config) if astream is not None else None
        video_sink = _FrameSampler(vstream, container, config) if vstream is not None else None
        try:
            for packet in container.demux(*streams):
                if packet.stream is astream:
                    if audio_sink.full:
                        if video_sink is None:
                            break
                        continue
                    for frame in packet.decode():
                        audio_sink.add(frame)
                elif packet.stream is vstream:
                    for frame in packet.decode():
                        video_sink.add(frame)
        except (av.error.FFmpegError, ValueError, MemoryError) as exc:
            raise MediaError(f"corrupt or truncated media ({error_reason(exc)})") from exc
        out = DecodedClip()
        if audio_sink is not None:
            out.audio = audio_sink.result()
            if out.audio.size == 0:
                raise MediaError("audio stream decoded to no samples")
        if video_sink is not None:
            out.frames, out.frame_indices = video_sink.result()
            if out.frames is None:
                raise MediaError("video stream decoded to no frames")
            out.fps = video_sink.fps
        return out


class _AudioSink:
    """Resamples decoded audio frames to mono float32 and concatenates them."""

    def __init__(self, config: MediaConfig):
        import av

        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=config.sample_rate)
        self._limit = int(config.max_audio_s * config.sample_rate)
        self._chunks: list[np.ndarray] = []
        self._n = 0

    @property
    def full(self) -> bool:
        return self._n >= self._limit

    def add(self, frame) -> None:
        if self.full:
            return
        for out in self._resampler.resample(frame):
            self._push(out)

    def _push(self, out) -> None:
        samples = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)  # (n,)
        self._chunks.append(samples)
        self._n += samples.size

    def result(self) -> np.ndarray:
        if not self.full:
            for out in self._resampler.resample(None):
                self._push(out)
        if not self._chunks:
            return np.zeros(0, np.float32)
        audio = np.concatenate(self._chunks)[: self._limit]  # (N,)
        return np.ascontiguousarray(audio, dtype=np.float32)


class _FrameSampler:
    """Keeps at most ``video_fps`` frames per second and ``max_frames`` per clip.

    The minimum spacing between kept frames starts at ``1 / video_fps`` (or the clip
    duration over ``max_frames`` when the duration is known); when more than
    ``max_frames`` are kept anyway, every other kept frame is dropped and the spacing
    doubles, so memory never exceeds ``max_frames`` frames.
    """

    def __init__(self, stream, container, config: MediaConfig):
        rate = stream.average_rate or stream.guessed_rate
        self.fps = float(rate) if rate else None
        duration = None
        if stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        elif container.duration:
            duration = container.duration / 1_000_000
        self._step = 1.0 / config.video_fps
        if duration:
            self._step = max(self._step, duration / config.max_frames)
        self._config = config
        self._next_t = 0.0
        self._count = 0
        self._frames: list[np.ndarray] = []
        self._indices: list[int] = []

    def add(self, frame) -> None:
        index = self._count
        self._count += 1
        t = frame.time if frame.time is not None else (index / self.fps if self.fps else index)
        if t + 1e-6 < self._next_t:
            return
        self._next_t = t + self._step
        self._frames.append(_to_rgb(frame, self._config.max_side))
        self._indices.append(index)
        if len(self._frames) > self._config.max_frames:
            self._frames = self._frames[::2]
            self._indices = self._indices[::2]
            self._step *= 2

    def result(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        if not self._frames:
            return None, None
        shapes = {f.shape for f in self._frames}
        frames = self._frames
        if len(shapes) > 1:  # resolution change mid-stream: conform to the first frame
            import cv2

            h, w = frames[0].shape[:2]
            frames = [f if f.shape[:2] == (h, w) else cv2.resize(f, (w, h)) for f in frames]
        return np.stack(frames), np.asarray(self._indices, np.int64)  # (F, H, W, 3), (F,)


def _to_rgb(frame, max_side: int) -> np.ndarray:
    w, h = frame.width, frame.height
    scale = min(1.0, max_side / max(w, h))
    if scale < 1.0:
        w2, h2 = max(2, int(round(w * scale / 2)) * 2), max(2, int(round(h * scale / 2)) * 2)
        return frame.reformat(width=w2, height=h2, format="rgb24").to_ndarray()  # (H, W, 3)
    return frame.to_ndarray(format="rgb24")  # (H, W, 3)


def error_reason(exc: BaseException) -> str:
    """What a media error says, in one short line: FFmpeg's ``strerror`` (no path) or the
    first line of the message, at most 200 characters; the type's name when empty."""
    text = (getattr(exc, "strerror", None) or str(exc)).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
