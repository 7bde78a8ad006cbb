"""``facemesh``: face geometry and action-unit proxies from MediaPipe Face Mesh (offline).

Face Mesh (Kartynnik et al. 2019; the attention mesh of Grishchenko et al. 2020: 468 face
landmarks + 10 iris landmarks) and its BlazeFace short-range detector are trained TFLite
networks shipped inside the ``mediapipe`` 0.10.14 wheel (Apache-2.0; later releases ship
no models). They run through the legacy ``mediapipe.solutions.face_mesh`` graph with
``static_image_mode`` (detect, then landmark, on every crop) and ``refine_landmarks``
(irises), 1 face, on the 16 face crops of the clip's face track (``face_clip``, 224 px,
25% margin: BlazeFace finds the face in them and Face Mesh cuts its own ROI).

Each frame's landmarks are put into a canonical face frame by a similarity transform
(:func:`align`): origin at the eyes' midpoint, x along the eye line, y from the nose
bridge (168) towards the subnasale (2), z their normal, scale 1 = the inter-ocular
distance (eye-corner centres): head pose, face size and position are removed. From them:

* ``peak_<point>_<x|y>``: the :data:`KEY_POINTS` (brows, lids, irises, nose, cheeks, lips,
  chin) of the clip's peak frame, the frame of highest :func:`expression_intensity`;
* ``std_<point>_<x|y>``: how much each key point moves over the clip (std over frames);
* ``<measure>_<mean|std|min|max>``: the :data:`MEASURES` per frame summarised over the
  clip: mouth opening, jaw drop, mouth width, lip-corner raise, lip thickness, upper-lip
  to nose, brow raise, inner-brow raise, inner-brow gap (furrow), eye aperture, nose width
  (all in inter-ocular distances), and head yaw / pitch / roll (radians). They are an
  OFFLINE PROXY for action units (each names the AUs it tracks), not OpenFace AU
  intensities;
* ``peak_intensity`` and ``face_frames`` (share of the crops where a face was found).

Crops where Face Mesh finds no face are skipped; a clip where it finds none raises
:class:`NoFaceError`, which becomes that clip's ``errors.lance`` row (never zeros). The
encoder runs in the decoding workers (``in_worker``), like ``egemaps``: ~10 ms a crop, +75
MiB RSS. On the 44 shared face clips (8 acted labels, mostly one actor), leave-one-out
logistic regression on the vector is right on 29/44 (0.66); trained on RAVDESS actor 05,
6 of the 12 CREMA-D clips (6 labels, chance 0.17).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from featurestore.errors import InputError

from ..registry import register
from ..probe import sha256_file
from .base import Encoded, Encoder, Need, Tag

__all__ = ["FaceMeshEncoder", "NoFaceError", "FEATURE_NAMES", "KEY_POINTS", "MEASURES", "AU_PROXIES",
           "MODEL_FILES", "INTENSITY_METHOD", "bundled_location", "align", "measures",
           "expression_intensity", "clip_features"]

#: Files of the mediapipe wheel the encoder runs (relative to the package), hashed into the spec.
MODEL_FILES = ("modules/face_detection/face_detection_short_range.tflite",
               "modules/face_landmark/face_landmark_with_attention.tflite",
               "modules/face_landmark/face_landmark_front_cpu.binarypb")
N_LANDMARKS = 478  # 468 mesh + 2 x 5 iris (refine_landmarks)

#: Key points of the pose-normalised geometry: (name, Face Mesh index); r/l = the subject's.
KEY_POINTS = (
    ("brow_r_outer", 70), ("brow_r_mid", 105), ("brow_r_inner", 107),
    ("brow_l_outer", 300), ("brow_l_mid", 334), ("brow_l_inner", 336),
    ("lid_r_upper", 159), ("lid_r_lower", 145), ("lid_l_upper", 386), ("lid_l_lower", 374),
    ("iris_r", 468), ("iris_l", 473),
    ("nose_tip", 1), ("ala_r", 98), ("ala_l", 327), ("cheek_r", 205), ("cheek_l", 425),
    ("lip_corner_r", 61), ("lip_corner_l", 291), ("lip_upper_outer", 0), ("lip_upper_inner", 13),
    ("lip_lower_inner", 14), ("lip_lower_outer", 17), ("lip_upper_r", 40), ("lip_upper_l", 270),
    ("lip_lower_r", 91), ("lip_lower_l", 321), ("chin", 152),
)
_KEY_IDX = np.array([i for _, i in KEY_POINTS])

#: Per-frame measures: (name, definition and the action units it is a proxy for).
MEASURES = (
    ("mouth_open", "inner-lip gap 13-14 (AU25/26/27)"),
    ("jaw_drop", "nose tip 1 to chin 152 (AU26/27)"),
    ("mouth_width", "lip corners 61-291 (AU12 pull, AU20 stretch)"),
    ("lip_corner_raise", "mid-lip line (13, 14) minus lip-corner height: + up (AU12), - down (AU15)"),
    ("lip_thickness", "upper 0-13 + lower 14-17 lip heights (AU23/24 press: thinner)"),
    ("nose_to_lip", "subnasale 2 to upper lip 0 (AU10 raise: shorter)"),
    ("brow_raise", "eye-centre height minus mean brow height, 5 points a brow (AU1+2 +, AU4 -)"),
    ("inner_brow_raise", "inner eye corner 133/362 height minus inner brow 107/336 (AU1)"),
    ("brow_gap", "inner brows 107-336 (AU4 furrow: smaller)"),
    ("eye_open", "lid gaps 159-145, 386-374 (AU5 +, AU7/43 -)"),
    ("nose_width", "alae 98-327 (AU9/38)"),
    ("head_yaw", "face-frame yaw, radians"),
    ("head_pitch", "face-frame pitch, radians"),
    ("head_roll", "face-frame roll, radians"),
)
#: The measures that are action-unit proxies (head pose is not expression).
AU_PROXIES = tuple(name for name, _ in MEASURES if not name.startswith("head_"))
_STATS = ("mean", "std", "min", "max")

FEATURE_NAMES = (
    *(f"peak_{p}_{a}" for p, _ in KEY_POINTS for a in "xy"),
    *(f"std_{p}_{a}" for p, _ in KEY_POINTS for a in "xy"),
    *(f"{m}_{s}" for m, _ in MEASURES for s in _STATS),
    "peak_intensity", "face_frames",
)
DIM = len(FEATURE_NAMES)  # 170 = 2 x 28 x 2 key-point coordinates + 14 x 4 measure stats + 2

#: Floor of the robust unit of a measure (inter-ocular distances, or radians for pose).
_MAD_FLOOR = 0.01
INTENSITY_METHOD = ("landmark-au-deviation: sum over the AU-proxy measures of |value - clip median| / "
                    f"max(1.4826 * clip MAD, {_MAD_FLOOR})")


class NoFaceError(ValueError):
    """Face Mesh found no face in any crop of a clip (that clip's errors row)."""


def bundled_location() -> str | None:
    """The installed ``mediapipe`` package's folder when it holds :data:`MODEL_FILES`
    (found without importing mediapipe), or None."""
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations)))
    return str(root) if all((root / f).is_file() for f in MODEL_FILES) else None


# -------------------------------------------------------------- geometry (numpy only)
def align(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Landmarks ``(F, N, 3)`` (pixels, y down) in the canonical face frame.

    A similarity transform per frame: origin at the mean of the eye corners (33, 133, 362,
    263), x from the right to the left eye centre, y from the nose bridge 168 towards the
    subnasale 2 (made orthogonal to x), z = x cross y; divided by the inter-ocular distance.

    Returns:
        ``(aligned (F, N, 3), rotation (F, 3, 3))``: rotation rows are the frame's axes.
    """
    right = landmarks[:, [33, 133]].mean(1)  # (F, 3)
    left = landmarks[:, [362, 263]].mean(1)  # (F, 3)
    origin = (right + left) / 2  # (F, 3)
    x = left - right
    iod = np.linalg.norm(x, axis=1, keepdims=True)  # (F, 1)
    x = x / iod
    down = landmarks[:, 2] - landmarks[:, 168]  # (F, 3)
    y = down - (down * x).sum(1, keepdims=True) * x
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    z = np.cross(x, y)
    rot = np.stack([x, y, z], axis=1)  # (F, 3, 3)
    aligned = np.einsum("fij,fnj->fni", rot, landmarks - origin[:, None]) / iod[:, :, None]  # (F, N, 3)
    return aligned, rot


def measures(aligned: np.ndarray, rot: np.ndarray) -> np.ndarray:
    """The :data:`MEASURES` of each aligned frame ``(F, N, 3)``.  # (F, M)"""
    p = aligned[..., :2]  # (F, N, 2): x right, y down, in inter-ocular distances

    def dist(a: int, b: int) -> np.ndarray:
        return np.linalg.norm(p[:, a] - p[:, b], axis=1)  # (F,)

    y = p[..., 1]  # (F, N)
    brows = [70, 63, 105, 66, 107, 300, 293, 334, 296, 336]
    eye_centre = y[:, [33, 133, 362, 263]].mean(1)
    out = [
        dist(13, 14),
        dist(1, 152),
        dist(61, 291),
        y[:, [13, 14]].mean(1) - y[:, [61, 291]].mean(1),
        dist(0, 13) + dist(14, 17),
        dist(2, 0),
        eye_centre - y[:, brows].mean(1),
        (y[:, 133] - y[:, 107] + y[:, 362] - y[:, 336]) / 2,
        dist(107, 336),
        (dist(159, 145) + dist(386, 374)) / 2,
        dist(98, 327),
        np.arcsin(np.clip(rot[:, 0, 2], -1, 1)),  # yaw: the eye line's depth slope
        np.arcsin(np.clip(rot[:, 1, 2], -1, 1)),  # pitch: the nose line's depth slope
        np.arctan2(rot[:, 0, 1], rot[:, 0, 0]),  # roll: the eye line's image slope
    ]
    return np.stack(out, axis=1).astype(np.float32)  # (F, M)


def expression_intensity(frame_measures: np.ndarray) -> np.ndarray:
    """Landmark expression intensity of each frame (:data:`INTENSITY_METHOD`).  # (F,)

    The AU-proxy columns of ``frame_measures (F, M)`` (:func:`measures`) are compared with
    the clip's median frame in robust units (1.4826 x the clip's median absolute
    deviation, floored so a still measure does not amplify noise) and summed: an offline
    stand-in for Emotion-LLaMA's sum of OpenFace AU intensities.
    """
    cols = [i for i, (name, _) in enumerate(MEASURES) if name in AU_PROXIES]
    m = frame_measures[:, cols]  # (F, A)
    median = np.median(m, axis=0)  # (A,)
    unit = np.maximum(1.4826 * np.median(np.abs(m - median), axis=0), _MAD_FLOOR)  # (A,)
    return (np.abs(m - median) / unit).sum(1)  # (F,)


def clip_features(landmarks: np.ndarray, frames: int) -> np.ndarray:
    """The :data:`FEATURE_NAMES` vector of a clip from the landmarks of the crops where a
    face was found ``(F, 478, 3)`` (pixels) out of ``frames`` crops.  # (DIM,)"""
    aligned, rot = align(landmarks.astype(np.float64))  # (F, 478, 3), (F, 3, 3)
    per_frame = measures(aligned, rot)  # (F, M)
    intensity = expression_intensity(per_frame)  # (F,)
    peak = int(np.argmax(intensity))
    key = aligned[:, _KEY_IDX, :2]  # (F, K, 2)
    stats = np.stack([per_frame.mean(0), per_frame.std(0), per_frame.min(0), per_frame.max(0)], axis=1)  # (M, 4)
    vector = np.concatenate([key[peak].reshape(-1), key.std(0).reshape(-1), stats.reshape(-1),
                             [intensity[peak], len(landmarks) / frames]])
    return vector.astype(np.float32)  # (DIM,)


# ----------------------------------------------------------------- the encoder
@register
class FaceMeshEncoder(Encoder):
    """Pose-normalised Face Mesh geometry + action-unit proxies of the face track (170-d)."""

    name = "facemesh"
    modality = "video"
    input_description = "16 face crops over the clip (224 px)"
    need = Need("face_clip", size=224, frames=16)
    tags = {"mediapipe": Tag("bundled", DIM, None,
                             "Face Mesh + BlazeFace from the mediapipe 0.10.14 wheel: "
                             "pip install --no-deps mediapipe==0.10.14 'protobuf>=4.25.3,<5'")}
    default_tag = "mediapipe"
    in_worker = True  # ~10-30 ms of single-threaded TFLite per crop: run it beside decoding

    @classmethod
    def bundled_location(cls, tag: str | None = None) -> str | None:
        """The installed mediapipe folder holding the models, or None."""
        return bundled_location()

    def _load(self) -> None:
        # The Face Mesh graph is built on the first encode, in the decoding workers: the
        # main process only needs the spec (model hashes).
        from importlib.metadata import PackageNotFoundError, version

        if self.weights.source != "bundled":
            raise InputError(f"facemesh runs only the models inside the mediapipe wheel: use "
                             f"`facemesh` (not facemesh:{self.weights.location or self.weights.tag})")
        root = bundled_location()
        if root is None:
            raise InputError("facemesh needs mediapipe's bundled models: pip install --no-deps "
                             "mediapipe==0.10.14 'protobuf>=4.25.3,<5'")
        try:
            protobuf = version("protobuf")
        except PackageNotFoundError:
            protobuf = "missing"
        if not protobuf.split(".")[0].isdigit() or int(protobuf.split(".")[0]) >= 5:
            raise InputError(f"mediapipe 0.10.14 needs protobuf 4 (found {protobuf}): "
                             "pip install 'protobuf>=4.25.3,<5'")
        hashes = {f: sha256_file(Path(root) / f) for f in MODEL_FILES}
        combined = hashlib.sha256("".join(hashes.values()).encode()).hexdigest()[:32]
        self.identity = {"checkpoint": f"mediapipe=={version('mediapipe')} (bundled)", "sha256": combined}
        self._hashes = hashes
        self.dim = DIM
        self._mesh = None
        self._broken: str | None = None

    def mesh(self):
        """The Face Mesh solution (static images, irises, 1 face), built once; a build that
        failed fails every later clip at once with the same one-line reason."""
        if self._broken is not None:
            raise InputError(self._broken)
        if self._mesh is None:
            try:
                with _quiet_stderr():  # TFLite / absl start-up lines written to fd 2 by C++
                    from mediapipe.python.solutions import face_mesh

                    mesh = face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True,
                                              max_num_faces=1, min_detection_confidence=0.5)
                    mesh.process(np.zeros((64, 64, 3), np.uint8))  # the graph starts here
                self._mesh = mesh
            except Exception as exc:  # noqa: BLE001 - a broken install (protobuf, native library)
                self._broken = (f"mediapipe Face Mesh cannot start ({type(exc).__name__}: {exc}): "
                                "pip install --no-deps mediapipe==0.10.14 'protobuf>=4.25.3,<5'")
                raise InputError(self._broken) from exc
        return self._mesh

    def landmarks(self, crops: np.ndarray) -> list[np.ndarray | None]:
        """Face Mesh on each RGB crop ``(F, S, S, 3)``: ``(478, 3)`` pixel landmarks (z in
        the same scale as x) per crop, None where no face was found."""
        import warnings

        mesh = self.mesh()
        out: list[np.ndarray | None] = []
        for crop in crops:
            h, w = crop.shape[:2]
            with warnings.catch_warnings():  # mediapipe 0.10.14 calls a deprecated protobuf 4 API
                warnings.filterwarnings("ignore", "SymbolDatabase.GetPrototype", UserWarning)
                found = mesh.process(np.ascontiguousarray(crop)).multi_face_landmarks
            if not found:
                out.append(None)
                continue
            pts = np.array([(p.x, p.y, p.z) for p in found[0].landmark], np.float64)  # (478, 3)
            out.append(pts * np.array([w, h, w]))
        return out

    def _describe(self) -> dict[str, Any]:
        return {"architecture": "MediaPipe Face Mesh (BlazeFace short-range + attention mesh, 478 "
                                "landmarks), mediapipe.solutions.face_mesh, static_image_mode, "
                                "refine_landmarks, 1 face, min_detection_confidence 0.5",
                "models": dict(self._hashes),
                "preprocessing": {"frames": self.need.frames, "size": self.need.size,
                                  "no_face": "crop skipped; no face in any crop: NoFaceError"},
                "normalisation": "similarity transform per frame: eye midpoint origin, eye line x, "
                                 "nose bridge 168 -> subnasale 2 y, 1 = inter-ocular distance",
                "key_points": dict(KEY_POINTS), "measures": dict(MEASURES),
                "measures_are": "offline proxies for action units, not OpenFace AU intensities",
                "peak": INTENSITY_METHOD,
                "pooling": "key points at the peak frame + their std over frames; measures "
                           "mean/std/min/max over frames; peak intensity; share of crops with a face",
                "feature_names": list(FEATURE_NAMES), "tokens": None}

    def encode(self, inputs: list[np.ndarray]) -> list[Encoded]:
        out = []
        for crops in inputs:  # (F, S, S, 3) uint8 RGB
            found = [lm for lm in self.landmarks(crops) if lm is not None]
            if not found:
                raise NoFaceError(f"Face Mesh found no face in any of the {len(crops)} face crops "
                                  "(no visible face: check the clip and its face_ratio)")
            out.append(Encoded(clip_features(np.stack(found), len(crops))))  # (DIM,)
        return out


@contextlib.contextmanager
def _quiet_stderr():
    """Send file descriptor 2 to /dev/null for the block (native libraries' log lines)."""
    import os
    import sys

    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (embedded interpreters): stay as is
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


