"""Per-clip preparation (runs in the decoding processes): decode once, faces, peak frame,
every encoder's input, and the ``in_worker`` encoders.

Kept free of the store and of torch, so a decoding process starts light.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from .media import DecodedClip, MediaConfig, MediaError, decode_clip

__all__ = ["Job", "need_key", "prepare_clip", "empty_result", "error_message", "encode_isolated",
           "encoder_outputs", "chunked_outputs", "finite_output", "in_worker_refs", "built_in_this_process"]


@dataclass
class Job:
    """One clip to prepare: which streams to decode and which inputs to compute."""

    clip_id: str
    uri: str | None
    subtitle: str | None
    needs: tuple  # of Need
    todo: tuple[str, ...]  # encoder names to run on this clip

    @property
    def decode_audio(self) -> bool:
        return any(n.modality == "audio" for n in self.needs)

    @property
    def decode_video(self) -> bool:
        return any(n.modality == "video" for n in self.needs)


def need_key(need) -> str:
    return f"{need.kind}:{need.size}:{need.frames}"


def prepare_clip(job: Job, media: MediaConfig, worker_encoders: Iterable = (),
                 decode_threads: int = 0) -> dict[str, Any]:
    """Decode a clip once and compute every input its encoders need (runs in a worker).

    ``worker_encoders`` (encoders with ``in_worker``) are run here too, on this clip;
    ``decode_threads`` caps FFmpeg's threads (0: one per core).

    Returns:
        ``{"clip_id", "uri", "todo", "inputs": {need_key: array|str}, "encoded": {name:
        Encoded | error message}, "peak_frame", "face_ratio", "face_detector",
        "face_confidence", "error"}``; ``error`` is a message when decoding failed.
    """
    result = empty_result(job)
    decoded = DecodedClip()
    if job.decode_audio or job.decode_video:
        try:
            decoded = decode_clip(job.uri, audio=job.decode_audio, video=job.decode_video,
                                  config=media, threads=decode_threads)
        except MediaError as exc:
            result["error"] = str(exc)
            return result
        except (OSError, ValueError) as exc:
            result["error"] = f"cannot read media ({exc})"
            return result
    visual = None
    if decoded.frames is not None:
        visual = _Visual(decoded, media.face_detector)
        result["peak_frame"] = int(decoded.frame_indices[visual.peak])
        result["face_ratio"] = visual.track.face_ratio
        result["face_detector"] = visual.track.detector
        result["face_confidence"] = visual.track.confidence
    for need in job.needs:
        key = need_key(need)
        if need.kind == "audio":
            result["inputs"][key] = decoded.audio
        elif need.kind == "subtitle":
            result["inputs"][key] = job.subtitle
        elif need.kind == "peak_face":
            result["inputs"][key] = visual.peak_face(need.size)
        elif need.kind == "face_clip":
            result["inputs"][key] = visual.face_clip(need.frames, need.size)
        elif need.kind == "peak_image":
            result["inputs"][key] = visual.peak_image(need.size)
        elif need.kind == "first_image":
            result["inputs"][key] = visual.first_image(need.size)
        else:  # pragma: no cover - registry invariant
            raise AssertionError(f"unknown input kind {need.kind}")
    for enc in worker_encoders:
        if enc.name in job.todo:
            try:
                result["encoded"][enc.name] = enc.encode([result["inputs"][need_key(enc.need)]])[0]
            except Exception as exc:  # noqa: BLE001 - becomes this clip's errors row
                result["encoded"][enc.name] = error_message(exc)
    return result


def empty_result(job: Job, error: str | None = None) -> dict[str, Any]:
    """A clip's result before (or instead of, with ``error``) its preparation."""
    return {"clip_id": job.clip_id, "uri": job.uri, "todo": job.todo, "inputs": {}, "encoded": {},
            "peak_frame": None, "face_ratio": None, "face_detector": None, "face_confidence": None,
            "error": error}


def encode_isolated(enc, inputs: list) -> list:
    """``enc`` over ``inputs`` as one batch; clip by clip if the batch crashes, so only the
    clip that crashes it fails. Each result is an ``Encoded`` or an error message."""
    try:
        return list(enc.encode(inputs))
    except Exception:  # noqa: BLE001 - isolate the clip that crashes the encoder
        outputs: list = []
        for x in inputs:
            try:
                outputs.append(enc.encode([x])[0])
            except Exception as exc:  # noqa: BLE001
                outputs.append(error_message(exc))
        return outputs


def in_worker_refs(encoders: Iterable) -> tuple:
    """``(ref, option items)`` of the ``in_worker`` encoders: what a decoding process (local
    worker or Ray task) needs to build them again."""
    return tuple((e.ref, tuple(sorted(e.options.items()))) for e in encoders if e.in_worker)


_BUILT: dict[tuple, list] = {}


def built_in_this_process(refs: tuple) -> list:
    """The encoders of :func:`in_worker_refs`, built on CPU once per process."""
    if refs not in _BUILT:
        from .registry import build_encoder

        _BUILT[refs] = [build_encoder(ref, device="cpu", options=dict(opts) or None) for ref, opts in refs]
    return _BUILT[refs]


def encoder_outputs(enc, items: list[dict[str, Any]], dtype: str | None = None) -> list:
    """``enc``'s result for each prepared item: the one its decoding process computed
    (``in_worker`` encoders), else encoded here (:func:`encode_isolated`). Each result is an
    ``Encoded`` with finite values (also once cast to the storage ``dtype``: a float32 value
    past 65504 is inf in float16), or an error message (an ``encode`` errors row)."""
    outputs = [it.get("encoded", {}).get(enc.name) for it in items]
    missing = [i for i, out in enumerate(outputs) if out is None]
    if missing:
        key = need_key(enc.need)
        for i, out in zip(missing, encode_isolated(enc, [items[i]["inputs"][key] for i in missing])):
            outputs[i] = out
    return [out if isinstance(out, str) or finite_output(out, dtype) else _nonfinite_message(out, dtype)
            for out in outputs]


def chunked_outputs(enc, items: list[dict[str, Any]], max_clips: int, max_bytes: int,
                    dtype: str | None = None) -> list:
    """:func:`encoder_outputs` over ``items`` in forwards of at most ``max_clips`` clips and
    ``max_bytes`` of input (a clip over ``max_bytes`` goes alone): what one forward holds
    in memory stays bounded whatever the batch."""
    key = need_key(enc.need)
    outputs: list = []
    chunk: list = []
    size = 0
    for it in items:
        nbytes = getattr(it["inputs"].get(key), "nbytes", 0)
        if chunk and (size + nbytes > max_bytes or len(chunk) >= max_clips):
            outputs += encoder_outputs(enc, chunk, dtype)
            chunk, size = [], 0
        chunk.append(it)
        size += nbytes
    return outputs + (encoder_outputs(enc, chunk, dtype) if chunk else [])


def finite_output(out, dtype: str | None = None) -> bool:
    """Whether an encoder's ``Encoded`` (vector and tokens) is finite, also once cast to the
    storage ``dtype``."""
    from featurestore.finite import finite_rows

    vector = np.asarray(out.vector).reshape(1, -1)  # (1, D)
    return bool(finite_rows(vector, [out.tokens], dtype)[0])


def _nonfinite_message(out, dtype: str | None) -> str:
    from featurestore.finite import NONFINITE_MESSAGE

    if dtype and finite_output(out):
        return f"{NONFINITE_MESSAGE} once stored as {dtype} (values past its range): extract with --dtype float32"
    return f"{NONFINITE_MESSAGE}: the encoder's output for this clip is not finite"


def error_message(exc: BaseException) -> str:
    """``Type: first line`` of an exception, as stored in ``errors.lance``."""
    text = str(exc)
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"[:500]


class _Visual:
    """Faces and the peak frame of one decoded clip (computed once for all encoders)."""

    def __init__(self, decoded: DecodedClip, detector: str = "auto"):
        from .faces import crop, track_faces
        from .peak import peak_index

        self.frames = decoded.frames  # (F, H, W, 3)
        self.track = track_faces(self.frames, detector=detector)
        faces = np.stack([crop(f, b, 96) for f, b in zip(self.frames, self.track.boxes)])  # (F, 96, 96, 3)
        self.peak = peak_index(faces)  # every frame competes: its box is a detected face's

    def peak_face(self, size: int) -> np.ndarray:
        from .faces import crop

        return crop(self.frames[self.peak], self.track.boxes[self.peak], size)  # (S, S, 3)

    def face_clip(self, n: int, size: int) -> np.ndarray:
        from .faces import crop

        idx = np.linspace(0, len(self.frames) - 1, n).round().astype(int)
        return np.stack([crop(self.frames[i], self.track.boxes[i], size) for i in idx])  # (n, S, S, 3)

    def first_image(self, size: int) -> np.ndarray:
        """The first decoded frame squashed to ``size`` x ``size`` with PIL's bicubic filter
        (MiniGPT-v2's ``Resize((448, 448), BICUBIC)`` on a PIL image)."""
        from PIL import Image

        image = Image.fromarray(self.frames[0]).resize((size, size), Image.Resampling.BICUBIC)
        return np.array(image)  # (S, S, 3), writable

    def peak_image(self, size: int) -> np.ndarray:
        import cv2

        frame = self.frames[self.peak]
        h, w = frame.shape[:2]
        scale = size / min(h, w)
        resized = cv2.resize(frame, (max(size, round(w * scale)), max(size, round(h * scale))),
                             interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
        h2, w2 = resized.shape[:2]
        y0, x0 = (h2 - size) // 2, (w2 - size) // 2
        return np.ascontiguousarray(resized[y0 : y0 + size, x0 : x0 + size])  # (S, S, 3)
