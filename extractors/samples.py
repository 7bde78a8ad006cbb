"""Synthetic sample clips for the offline demo on machines without real data.

They are *not* emotional recordings: a drawn face whose mouth and brows follow the label
and a voice-like harmonic tone whose pitch, loudness and tempo follow it, enough for the
demo's pipeline (ingest, extract, index, similar, train) to run end to end and for
similar clips to share labels. Real work uses real clips (``emofs ingest DIR``).
"""

from __future__ import annotations

import csv
from fractions import Fraction
from pathlib import Path

import numpy as np

__all__ = ["write_sample_clips", "SAMPLE_LABELS"]

#: label -> (pitch Hz, loudness, syllables per second, mouth curve, brow tilt)
SAMPLE_LABELS: dict[str, tuple[float, float, float, float, float]] = {
    "neutral": (120.0, 0.25, 3.0, 0.0, 0.0),
    "happy": (220.0, 0.45, 5.0, 1.0, 0.2),
    "sad": (95.0, 0.15, 2.0, -1.0, -0.5),
    "angry": (170.0, 0.70, 6.0, -0.6, 0.8),
}
_FPS = 15
_RATE = 16_000
_SIZE = 160


def write_sample_clips(folder: str | Path, *, per_label: int = 3, seconds: float = 2.0) -> Path:
    """Write ``per_label`` mp4 (face video + voice) and wav clips per label, plus labels.csv.

    Returns:
        The path of the labels CSV (columns path, label, speaker, split, subtitle).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for label, params in SAMPLE_LABELS.items():
        for i in range(per_label):
            speaker = f"spk{i % 3}"
            split = "test" if i == per_label - 1 else "train"
            jitter = 1.0 + 0.05 * rng.standard_normal()
            audio = _voice(params, seconds, jitter, rng)
            video_path = folder / "video" / f"{label}_{i:02d}.mp4"
            _write_mp4(video_path, _face_frames(params, seconds, rng), audio)
            wav_path = folder / "audio" / f"{label}_{i:02d}.wav"
            _write_wav(wav_path, _voice(params, seconds, jitter * 1.02, rng))
            subtitle = f"this is a {label} sample number {i}"
            for path in (video_path, wav_path):
                rows.append([path.relative_to(folder).as_posix(), label, speaker, split, subtitle])
    labels = folder / "labels.csv"
    with open(labels, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "speaker", "split", "subtitle"])
        writer.writerows(rows)
    return labels


def _voice(params, seconds: float, jitter: float, rng) -> np.ndarray:
    """A harmonic tone with syllable-rate amplitude modulation.  # (T,) float32"""
    pitch, loud, rate, _, _ = params
    t = np.arange(int(seconds * _RATE)) / _RATE
    f0 = pitch * jitter * (1 + 0.03 * np.sin(2 * np.pi * 0.7 * t))
    phase = 2 * np.pi * np.cumsum(f0) / _RATE
    tone = sum(np.sin(k * phase) / k for k in range(1, 6))
    envelope = np.clip(np.sin(np.pi * rate * t), 0, None) ** 2
    noise = 0.01 * rng.standard_normal(t.shape)
    return (loud * 0.5 * tone * envelope + noise).astype(np.float32)


def _face_frames(params, seconds: float, rng) -> np.ndarray:
    """Frames of a drawn face.  # (N, H, W, 3) uint8"""
    import cv2

    _, _, _, curve, brow = params
    frames = []
    for n in range(int(seconds * _FPS)):
        img = np.full((_SIZE, _SIZE, 3), 40, np.uint8)
        sway = int(4 * np.sin(n / 3))
        cx, cy = _SIZE // 2 + sway, _SIZE // 2
        cv2.ellipse(img, (cx, cy), (48, 62), 0, 0, 360, (150, 180, 220), -1)
        for dx in (-18, 18):
            cv2.circle(img, (cx + dx, cy - 15), 5, (30, 30, 30), -1)
            tilt = int(brow * 6) * (1 if dx < 0 else -1)
            cv2.line(img, (cx + dx - 9, cy - 28 + tilt), (cx + dx + 9, cy - 28 - tilt), (30, 30, 30), 2)
        open_mouth = 3 + int(3 * abs(np.sin(n / 2)))
        start, end = (20, 160) if curve >= 0 else (200, 340)
        axes = (20, max(2, int(abs(curve) * 12) + open_mouth))
        cv2.ellipse(img, (cx, cy + 28), axes, 0, start, end, (40, 20, 120), 3)
        img = np.clip(img.astype(np.int16) + rng.integers(-6, 7, img.shape), 0, 255).astype(np.uint8)
        frames.append(img)
    return np.stack(frames)


def _write_mp4(path: Path, frames: np.ndarray, audio: np.ndarray) -> None:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        vstream = out.add_stream(codec, rate=_FPS)
        vstream.width, vstream.height, vstream.pix_fmt = _SIZE, _SIZE, "yuv420p"
        astream = out.add_stream("aac", rate=_RATE)
        astream.layout = "mono"
        for img in frames:
            out.mux(vstream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(vstream.encode())
        _encode_audio(out, astream, audio)


def _write_wav(path: Path, audio: np.ndarray) -> None:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=_RATE)
        stream.layout = "mono"
        _encode_audio(out, stream, audio)


def _encode_audio(out, stream, audio: np.ndarray, chunk: int = 1024) -> None:
    import av

    pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
    for start in range(0, len(pcm), chunk):
        frame = av.AudioFrame.from_ndarray(pcm[None, start : start + chunk], format="s16", layout="mono")
        frame.sample_rate = _RATE
        frame.pts = start
        frame.time_base = Fraction(1, _RATE)
        out.mux(stream.encode(frame))
    out.mux(stream.encode())
