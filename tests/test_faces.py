"""Face detectors (YuNet from the yuface wheel, Haar fallback), per-clip face columns."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import copy_to
from featurestore.errors import InputError

yuface = pytest.importorskip("yuface", reason="yuface (YuNet) wheels exist for Linux x86_64, Python <= 3.11")


@pytest.fixture(scope="module")
def av_frames(shared_data):
    """Sampled frames of a CREMA-D audio+video clip ``(F, H, W, 3)``."""
    from extractors.media import MediaConfig, decode_clip

    path = sorted((shared_data / "crema_d" / "mp4").glob("*.mp4"))[0]
    return decode_clip(path, audio=False, video=True, config=MediaConfig(max_frames=8)).frames


def _wide(frame: np.ndarray) -> np.ndarray:
    """The frame shrunk to 1/3 inside a grey frame of the same size (a wide shot)."""
    import cv2

    h, w = frame.shape[:2]
    canvas = np.full_like(frame, 110)
    canvas[h // 3 : h // 3 + h // 3, w // 3 : w // 3 + w // 3] = cv2.resize(frame, (w // 3, h // 3))
    return canvas


def test_auto_resolves_to_yunet_and_env_or_option_picks_haar(monkeypatch):
    from extractors.detectors import resolve_detector
    from extractors.media import MediaConfig

    monkeypatch.delenv("EMOFS_FACE_DETECTOR", raising=False)
    assert resolve_detector("auto") == "yunet" == MediaConfig().face_detector
    assert MediaConfig(face_detector="haar").face_detector == "haar"
    monkeypatch.setenv("EMOFS_FACE_DETECTOR", "haar")
    assert MediaConfig().face_detector == "haar"
    with pytest.raises(InputError, match="unknown face detector 'mtcnn'"):
        MediaConfig(face_detector="mtcnn")


def test_haar_is_the_fallback_without_yuface(monkeypatch):
    from extractors import detectors
    from extractors.media import MediaConfig

    monkeypatch.delenv("EMOFS_FACE_DETECTOR", raising=False)
    monkeypatch.setattr(detectors, "yunet_available", lambda: False)
    assert MediaConfig().face_detector == "haar"
    with pytest.raises(InputError, match="pip install yuface"):
        MediaConfig(face_detector="yunet")


def test_yunet_finds_the_face_with_a_confidence(av_frames):
    from extractors.faces import track_faces

    track = track_faces(av_frames, detector="yunet")
    assert track.detector == "yunet" and not track.fallback and track.face_ratio == 1.0
    assert 0.5 <= track.confidence <= 1.0
    haar = track_faces(av_frames, detector="haar")
    assert haar.detector == "haar" and haar.confidence is None
    # both boxes are on the same face: the YuNet box centre lies inside Haar's box
    (x, y, w, h), (hx, hy, hw, hh) = track.boxes[0], haar.boxes[0]
    assert hx <= x + w / 2 <= hx + hw and hy <= y + h / 2 <= hy + hh


def test_yunet_finds_small_faces_in_wide_shots_that_haar_misses(av_frames):
    from extractors.faces import track_faces

    wide = np.stack([_wide(f) for f in av_frames])  # (F, H, W, 3), face ~1/9 of the area
    yunet, haar = track_faces(wide, detector="yunet"), track_faces(wide, detector="haar")
    assert yunet.face_ratio >= 0.75 and haar.face_ratio <= 0.25
    x, y, w, h = yunet.boxes[0]
    height, width = wide.shape[1:3]
    assert height // 3 - h <= y <= 2 * height // 3 and width // 3 - w <= x <= 2 * width // 3


def test_tracking_around_the_last_face_matches_the_whole_frame(av_frames):
    from extractors.detectors import detect

    whole = detect("yunet", av_frames[-1])
    near = detect("yunet", av_frames[-1], near=detect("yunet", av_frames[0]).box)
    assert whole is not None and near is not None
    overlap = _iou(whole.box, near.box)
    assert overlap > 0.6, overlap
    blank = np.full((240, 320, 3), 128, np.uint8)
    assert detect("yunet", blank) is None and detect("haar", blank) is None


def _iou(a, b) -> float:
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw, ih = max(0, min(ax1, bx1) - max(a[0], b[0])), max(0, min(ay1, by1) - max(a[1], b[1]))
    inter = iw * ih
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def test_the_detector_is_part_of_the_face_spec():
    from extractors.media import MediaConfig
    from extractors.registry import build_encoder
    from featurestore.features import spec_fingerprint

    enc = build_encoder("mae:tiny")
    yunet, haar = enc.spec("float16", MediaConfig()), enc.spec("float16", MediaConfig(face_detector="haar"))
    assert yunet["faces"]["detector"]["name"] == "yunet" and "YuNet" in yunet["faces"]["detector"]["model"]
    assert haar["faces"]["detector"]["name"] == "haar"
    assert spec_fingerprint(yunet) != spec_fingerprint(haar)  # a change of detector re-extracts


def test_extract_records_detector_and_confidence_per_clip_on_an_old_store(tmp_path, shared_data):
    """A store made before the face columns gains them; video clips get the detector and
    confidence, audio-only clips stay null."""
    from extractors import extract, ingest
    from featurestore import Store
    from featurestore.schema import CLIPS

    crema = shared_data / "crema_d"
    copy_to(sorted(crema.glob("*.flv"))[0], tmp_path / "clips" / "a.flv")
    copy_to(sorted((crema / "wav16k").glob("*.wav"))[0], tmp_path / "clips" / "b.wav")
    store = Store(tmp_path / "store")
    ingest([tmp_path / "clips"], store, progress=False)
    store.dataset(CLIPS).drop_columns(["face_detector", "face_confidence"])  # as an older store
    assert "face_detector" not in store.dataset(CLIPS).schema.names
    report = extract(store, ["mae:tiny"], workers=0, progress=False)
    assert report.decode_errors == 0
    rows = {r["rel_path"]: r for r in store.clips(
        columns=["rel_path", "face_ratio", "face_detector", "face_confidence"]).to_dicts()}
    assert rows["a.flv"]["face_detector"] == "yunet" and rows["a.flv"]["face_ratio"] == 1.0
    assert 0.5 <= rows["a.flv"]["face_confidence"] <= 1.0
    assert rows["b.wav"]["face_detector"] is None and rows["b.wav"]["face_confidence"] is None
