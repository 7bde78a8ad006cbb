"""Face crops: a face detector (:mod:`extractors.detectors`: YuNet, or the Haar cascade),
crop with margin.

The detector runs on a few frames spread over the clip. The first searches the whole
frame; each later one first searches only around the last face found, at scales near its
size (a fraction of the windows, so a few times cheaper), and falls back to the whole frame
when the face is not there. Frames where no face is found borrow the box of the nearest
frame where one was; a clip with no face at all falls back to a centre crop. Which happened
is returned (``detected`` per frame, ``fallback``, the mean box ``confidence`` and the
``detector``) so the pipeline can record them per clip.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .detectors import CASCADE, TRACKING, detect, resolve_detector
from .detectors import HAAR_SIDE as DETECT_SIDE

__all__ = ["DETECT_SIDE", "MAX_DETECT", "TRACKING", "FaceTrack", "detect_faces", "track_faces", "crop",
           "centre_square", "CASCADE"]

#: The detector runs on at most this many frames spread over the clip; the others borrow
#: the box of the nearest frame it ran on (faces move little between sampled frames).
MAX_DETECT = 8


@dataclass
class FaceTrack:
    """Face boxes over a clip's sampled frames.

    Attributes:
        boxes: ``(F, 4)`` int boxes ``x, y, w, h`` (a square with margin) per frame.
        detected: ``(F,)`` bool, True where the detector found a face in that frame.
        fallback: True when no frame had a face and every box is a centre crop.
        probed: how many frames the detector ran on.
        detector: the detector that ran (``yunet`` | ``haar``).
        confidence: mean box confidence over the frames with a face (None when the
            detector gives none, as Haar, or no face was found).
    """

    boxes: np.ndarray
    detected: np.ndarray
    fallback: bool
    probed: int = 0
    detector: str = "haar"
    confidence: float | None = None

    @property
    def face_ratio(self) -> float:
        """Share of the frames the detector ran on where it found a face."""
        return float(self.detected.sum() / self.probed) if self.probed else 0.0


def detect_faces(frame: np.ndarray, near: tuple[int, int, int, int] | None = None, *,
                 detector: str = "auto") -> tuple[int, int, int, int] | None:
    """The largest face in an RGB frame ``(H, W, 3)`` as ``x, y, w, h``, or None.

    With ``near`` (a box found in a nearby frame) only the region around it is searched,
    at sizes close to it; None is returned when the face is not there.
    """
    found = detect(resolve_detector(detector), frame, near)
    return None if found is None else found.box


def centre_square(height: int, width: int) -> tuple[int, int, int, int]:
    """The largest centred square of a ``height x width`` frame as ``x, y, w, h``."""
    side = min(height, width)
    return (width - side) // 2, (height - side) // 2, side, side


def _with_margin(box, height: int, width: int, margin: float) -> tuple[int, int, int, int]:
    x, y, w, h = box
    side = int(max(w, h) * (1 + 2 * margin))
    side = min(side, height, width)
    cx, cy = x + w / 2, y + h / 2
    x0 = int(np.clip(cx - side / 2, 0, width - side))
    y0 = int(np.clip(cy - side / 2, 0, height - side))
    return x0, y0, side, side


def track_faces(frames: np.ndarray, *, margin: float = 0.25, max_detect: int = MAX_DETECT,
                detector: str = "auto") -> FaceTrack:
    """Boxes for every frame ``(F, H, W, 3)``: the detector runs on at most ``max_detect``
    evenly spaced frames; every frame takes the box of the nearest frame with a face.

    ``detected`` is True for frames where the detector itself found a face (frames it did
    not run on are False), so ``face_ratio`` is computed over the frames it ran on.
    ``detector`` is ``auto``, ``yunet`` or ``haar`` (see :func:`~extractors.detectors.resolve_detector`).
    """
    name = resolve_detector(detector)
    n, height, width = frames.shape[:3]
    probe_idx = np.unique(np.linspace(0, n - 1, min(n, max_detect)).round().astype(int))
    raw: list = [None] * n
    last = None
    for i in probe_idx:
        found = detect(name, frames[i], near=last) if last is not None else None
        raw[i] = found if found is not None else detect(name, frames[i])
        last = raw[i].box if raw[i] is not None else last
    detected = np.array([b is not None for b in raw], bool)
    if not detected.any():
        box = centre_square(height, width)
        return FaceTrack(np.tile(np.array(box), (n, 1)), detected, True, len(probe_idx), name)
    hits = np.flatnonzero(detected)
    confs = [raw[j].confidence for j in hits if raw[j].confidence is not None]
    boxes = []
    for i in range(n):
        j = hits[np.argmin(np.abs(hits - i))]
        boxes.append(_with_margin(raw[j].box, height, width, margin))
    return FaceTrack(np.array(boxes, np.int64), detected, False, len(probe_idx), name,
                     float(np.mean(confs)) if confs else None)


def crop(frame: np.ndarray, box, size: int) -> np.ndarray:
    """Cut ``box`` (x, y, w, h) out of an RGB frame and resize to ``size x size``.  # (S, S, 3)"""
    import cv2

    x, y, w, h = (int(v) for v in box)
    patch = frame[y : y + h, x : x + w]
    interp = cv2.INTER_AREA if min(w, h) > size else cv2.INTER_CUBIC
    return cv2.resize(patch, (size, size), interpolation=interp)
