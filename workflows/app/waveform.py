"""Waveform peaks of a clip's audio for the page's click-to-seek strip.

The server decodes the audio once, in one streaming pass (10 ms min/max blocks, so an hour
of audio needs a few MB, not the whole signal), reduces it to :data:`PEAK_BINS` min/max
pairs and keeps the JSON in the store (``app/peaks/<sha256>.<bins>.json``): the page then
draws any length of file from ~12 KB, without downloading or decoding the media itself.
"""

from __future__ import annotations

import json
from itertools import chain
from typing import Any

from extractors.media import error_reason
from featurestore.index.files import read_bytes, write_bytes

from .renditions import ENCODE_SLOTS, KeyLocks, MediaUnplayableError, first_streams, media_key, open_container

__all__ = ["waveform", "PEAKS_DIR", "PEAK_BINS"]

PEAKS_DIR = "app/peaks"
PEAK_BINS = 1000
_LOCKS = KeyLocks()


def _peaks(uri: str, bins: int) -> dict[str, Any]:
    """Min/max of the mono mix in ``bins`` equal slices of the whole audio, decoded in one
    streaming pass (10 ms blocks kept, so memory stays small for hours of audio)."""
    import av
    import numpy as np

    with open_container(uri) as container:
        _, stream = first_streams(container)
        if stream is None:
            raise MediaUnplayableError("no audio stream, so no waveform")
        rate = stream.codec_context.sample_rate or 48000
        block = max(1, rate // 100)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        lows, highs, carry, total = [], [], np.zeros(0, np.float32), 0
        try:
            for frame in chain(container.decode(stream), [None]):  # None flushes the resampler
                for mono in resampler.resample(frame):
                    samples = mono.to_ndarray().reshape(-1)  # (S,) float32
                    total += len(samples)
                    x = np.concatenate([carry, samples])
                    n = len(x) // block * block
                    if n:
                        blocks = x[:n].reshape(-1, block)  # (B, block)
                        lows.append(blocks.min(1))
                        highs.append(blocks.max(1))
                    carry = x[n:]
        except (av.error.FFmpegError, ValueError) as exc:
            raise MediaUnplayableError(f"corrupt or truncated audio ({error_reason(exc)})") from None
    if len(carry):
        lows.append(carry.min(keepdims=True))
        highs.append(carry.max(keepdims=True))
    if not lows:
        raise MediaUnplayableError("the audio stream decoded to no samples")
    low, high = np.concatenate(lows), np.concatenate(highs)  # (B,)
    n = min(bins, len(low))
    starts = np.linspace(0, len(low), n + 1).astype(np.int64)[:-1]  # (n,) first block of each bin
    low, high = np.minimum.reduceat(low, starts), np.maximum.reduceat(high, starts)  # (n,)
    return {"duration": round(total / rate, 3), "bins": n,
            "min": np.round(low.astype(np.float64), 3).tolist(), "max": np.round(high.astype(np.float64), 3).tolist()}


def waveform(store, uri: str, row: dict, bins: int = PEAK_BINS) -> dict[str, Any]:
    """Min/max peaks of a clip's audio (``duration``, ``bins``, ``min``, ``max`` in [-1, 1]),
    computed once and kept in the store (``app/peaks/``).

    Raises:
        MediaUnplayableError: no audio stream, or it cannot be decoded.
    """
    rel = f"{PEAKS_DIR}/{media_key(row, uri)}.{bins}.json"
    data = read_bytes(store, rel)
    if data is None:
        with _LOCKS.hold(store.path(rel)):
            data = read_bytes(store, rel)
            if data is None:
                with ENCODE_SLOTS:
                    data = json.dumps(_peaks(uri, bins), separators=(",", ":")).encode()
                write_bytes(store, rel, data)
    return json.loads(data)
