"""Face crops: OpenCV's bundled Haar cascade (opencv-python-headless 4.x), crop with margin.

The detector runs on a few frames spread over the clip. The first searches the whole
frame; each later one first searches only around the last face found, at scales near its
size (a fraction of the windows, so a few times cheaper), and falls back to the whole frame
when the face is not there. Frames where no face is found borrow the box of the nearest
frame where one was; a clip with no face at all falls back to a centre crop. Which happened
is returned (``detected`` per frame, ``fallback``) so the pipeline can record the face ratio.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DETECT_SIDE", "MAX_DETECT", "TRACKING", "FaceTrack", "detect_faces", "track_faces", "crop",
           "centre_square", "CASCADE"]

#: The cascade file inside ``cv2.data.haarcascades``.
CASCADE = "haarcascade_frontalface_default.xml"
DETECT_SIDE = 240  # frames are downscaled to this long side for detection
#: The detector runs on at most this many frames spread over the clip; the others borrow
#: the box of the nearest frame it ran on (faces move little between sampled frames).
MAX_DETECT = 8
#: Search window around the last face: its box grown by this share of its side on each
#: side, at face sizes within this factor of the last one (recorded in the spec).
TRACKING = {"window": 0.5, "scale_range": 1.4}
_detector = None


def _get_detector():
    global _detector
    if _detector is None:
        import cv2

        path = cv2.data.haarcascades + CASCADE
        _detector = cv2.CascadeClassifier(path)
        if _detector.empty():
            raise RuntimeError(f"cannot load the OpenCV face cascade {path}")
    return _detector


@dataclass
class FaceTrack:
    """Face boxes over a clip's sampled frames.

    Attributes:
        boxes: ``(F, 4)`` int boxes ``x, y, w, h`` (a square with margin) per frame.
        detected: ``(F,)`` bool, True where the detector found a face in that frame.
        fallback: True when no frame had a face and every box is a centre crop.
        probed: how many frames the detector ran on.
    """

    boxes: np.ndarray
    detected: np.ndarray
    fallback: bool
    probed: int = 0

    @property
    def face_ratio(self) -> float:
        """Share of the frames the detector ran on where it found a face."""
        return float(self.detected.sum() / self.probed) if self.probed else 0.0


def detect_faces(frame: np.ndarray, near: tuple[int, int, int, int] | None = None
                 ) -> tuple[int, int, int, int] | None:
    """The largest frontal face in an RGB frame ``(H, W, 3)`` as ``x, y, w, h``, or None.

    With ``near`` (a box found in a nearby frame) only the region around it is searched,
    at sizes close to it; None is returned when the face is not there.
    """
    h, w = frame.shape[:2]
    if near is None:  # whole frame, long side at DETECT_SIDE, faces >= 12% of the short side
        scale = min(1.0, DETECT_SIDE / max(h, w))
        gray = _gray(frame, scale)
        min_side = max(_WINDOW, int(0.12 * min(gray.shape)))
        return _largest(gray, scale, 0, 0, min_side, 0)
    # Around the last face, rescaled so that the smallest size searched is the cascade's
    # own window: a few small scales over a small region.
    side = max(near[2], near[3])
    grow = int(TRACKING["window"] * side)
    x0, y0 = max(0, near[0] - grow), max(0, near[1] - grow)
    x1, y1 = min(w, near[0] + near[2] + grow), min(h, near[1] + near[3] + grow)
    scale = min(1.0, _WINDOW * TRACKING["scale_range"] / side)
    gray = _gray(frame[y0:y1, x0:x1], scale)
    max_side = int(side * scale * TRACKING["scale_range"]) + 1
    if min(gray.shape) < _WINDOW:
        return None
    return _largest(gray, scale, x0, y0, _WINDOW, max_side)


_WINDOW = 24  # the default frontal cascade's window (its smallest detectable face), px


def _gray(rgb: np.ndarray, scale: float) -> np.ndarray:
    """Equalised grey image of ``rgb`` resized by ``scale``.  # (h, w) uint8"""
    import cv2

    if scale < 1.0:
        h, w = rgb.shape[:2]
        rgb = cv2.resize(rgb, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA)
    return cv2.equalizeHist(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY))


def _largest(gray: np.ndarray, scale: float, x0: int, y0: int, min_side: int, max_side: int):
    """The largest detection in ``gray``, mapped back to frame coordinates (or None)."""
    found = _get_detector().detectMultiScale(
        gray, scaleFactor=1.15, minNeighbors=5, minSize=(min_side, min_side),
        maxSize=(max_side, max_side),  # (0, 0): no upper bound
    )
    if len(found) == 0:
        return None
    x, y, bw, bh = max(found, key=lambda b: b[2] * b[3])
    return int(x0 + x / scale), int(y0 + y / scale), int(bw / scale), int(bh / scale)


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


def track_faces(frames: np.ndarray, *, margin: float = 0.25, max_detect: int = MAX_DETECT) -> FaceTrack:
    """Boxes for every frame ``(F, H, W, 3)``: the detector runs on at most ``max_detect``
    evenly spaced frames; every frame takes the box of the nearest frame with a face.

    ``detected`` is True for frames where the detector itself found a face (frames it did
    not run on are False), so ``face_ratio`` is computed over the frames it ran on.
    """
    n, height, width = frames.shape[:3]
    probe_idx = np.unique(np.linspace(0, n - 1, min(n, max_detect)).round().astype(int))
    raw: list = [None] * n
    last = None
    for i in probe_idx:
        box = detect_faces(frames[i], near=last) if last is not None else None
        raw[i] = box if box is not None else detect_faces(frames[i])
        last = raw[i] or last
    detected = np.array([b is not None for b in raw], bool)
    if not detected.any():
        box = centre_square(height, width)
        return FaceTrack(np.tile(np.array(box), (n, 1)), detected, True, len(probe_idx))
    hits = np.flatnonzero(detected)
    boxes = []
    for i in range(n):
        j = hits[np.argmin(np.abs(hits - i))]
        boxes.append(_with_margin(raw[j], height, width, margin))
    return FaceTrack(np.array(boxes, np.int64), detected, False, len(probe_idx))


def crop(frame: np.ndarray, box, size: int) -> np.ndarray:
    """Cut ``box`` (x, y, w, h) out of an RGB frame and resize to ``size x size``.  # (S, S, 3)"""
    import cv2

    x, y, w, h = (int(v) for v in box)
    patch = frame[y : y + h, x : x + w]
    interp = cv2.INTER_AREA if min(w, h) > size else cv2.INTER_CUBIC
    return cv2.resize(patch, (size, size), interpolation=interp)
