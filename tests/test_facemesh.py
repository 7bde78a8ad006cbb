"""``facemesh``: MediaPipe Face Mesh geometry and action-unit proxies on real clips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli import app
from conftest import copy_to
from extractors.media import MediaConfig
from extractors.prepare import Job, need_key, prepare_clip
from featurestore import Store
from featurestore.errors import InputError
from featurestore.features import feature_spec, read_features


@pytest.fixture(scope="module")
def enc():
    from extractors.registry import build_encoder

    try:
        return build_encoder("facemesh")
    except InputError as exc:
        pytest.skip(f"facemesh unavailable ({exc})")


def _crops(enc, path: Path) -> np.ndarray:
    job = Job(path.name, str(path), None, (enc.need,), ())
    return prepare_clip(job, MediaConfig())["inputs"][need_key(enc.need)]  # (16, 224, 224, 3)


def _features(enc, path: Path) -> dict[str, float]:
    from extractors.encoders.facemesh import FEATURE_NAMES

    return dict(zip(FEATURE_NAMES, enc.encode([_crops(enc, path)])[0].vector))


def _facecrop(shared_data: Path, emotion: str, take: int = 2) -> list[Path]:
    """RAVDESS actor 05 face-crop clips of one emotion code (01 neutral, 03 happy, 08 surprised)."""
    return sorted((shared_data / "ravdess_actor05" / "facecrop").glob(f"01-01-{emotion}-*.avi"))[:take]


def _blank_clip(path: Path, frames: int = 12) -> Path:
    """A video without a face: a slowly shifting grey gradient (mpeg4)."""
    import av

    ramp = np.linspace(60, 200, 160, dtype=np.float32)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for n in range(frames):
            img = np.broadcast_to((ramp + n)[None, :, None], (120, 160, 3)).astype(np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")))
        out.mux(stream.encode())
    return path


def test_feature_names_and_spec(enc):
    from extractors.encoders.facemesh import FEATURE_NAMES, MEASURES, MODEL_FILES

    assert enc.dim == len(FEATURE_NAMES) == len(set(FEATURE_NAMES)) == 170
    assert enc.in_worker and enc.need.kind == "face_clip"
    spec = enc.spec("float32")
    assert set(spec["models"]) == set(MODEL_FILES) and all(len(h) == 64 for h in spec["models"].values())
    assert spec["measures"] == dict(MEASURES) and "action units" in spec["measures_are"]
    assert "inter-ocular" in spec["normalisation"] and spec["sha256"]
    assert spec["feature_names"] == list(FEATURE_NAMES)


def test_landmarks_on_a_real_face_clip(enc, shared_data):
    crops = _crops(enc, sorted((shared_data / "crema_d").glob("*.flv"))[0])
    found = [lm for lm in enc.landmarks(crops) if lm is not None]
    assert len(found) == len(crops) == 16
    for lm in found:  # (478, 3) in crop pixels; the subject's right eye on the image's left
        assert lm.shape == (478, 3) and np.isfinite(lm).all()
        assert 0 <= lm[:, 0].min() and lm[:, 0].max() <= 224 and lm[33, 0] < lm[263, 0]
        assert lm[10, 1] < lm[1, 1] < lm[152, 1]  # forehead above nose tip above chin
    vector = enc.encode([crops])[0].vector
    assert vector.shape == (enc.dim,) and vector.dtype == np.float32 and np.isfinite(vector).all()


def test_measures_follow_the_acted_expression(enc, shared_data):
    """Same actor: smiles widen the mouth and raise its corners; surprise opens the eyes."""
    neutral = [_features(enc, p) for p in _facecrop(shared_data, "01")]
    happy = [_features(enc, p) for p in _facecrop(shared_data, "03")]
    surprised = [_features(enc, p) for p in _facecrop(shared_data, "08")]
    for name in ("mouth_width_max", "lip_corner_raise_max"):  # AU12 (measured: 1.08 vs 0.84)
        assert min(f[name] for f in happy) > max(f[name] for f in neutral), name
    assert min(f["eye_open_max"] for f in surprised) > max(f["eye_open_max"] for f in neutral)  # AU5
    for f in neutral + happy:  # speech opens and closes the mouth within each clip
        assert f["mouth_open_max"] > f["mouth_open_min"] + 0.03 and f["face_frames"] >= 0.75


def test_intensity_peaks_on_the_odd_frame():
    from extractors.encoders.facemesh import MEASURES, expression_intensity

    rng = np.random.default_rng(0)
    frames = 0.3 + 0.002 * rng.standard_normal((9, len(MEASURES))).astype(np.float32)  # (9, M)
    frames[6, 0] += 0.2  # one wide-open mouth
    frames[2, -1] += 0.5  # a head roll is not expression
    assert int(np.argmax(expression_intensity(frames))) == 6


def test_no_face_is_a_clip_error_not_zeros(enc, tmp_path):
    from extractors.encoders.facemesh import NoFaceError
    from extractors.prepare import encode_isolated

    blank = np.full((16, 224, 224, 3), 128, np.uint8)
    with pytest.raises(NoFaceError, match="no face in any of the 16"):
        enc.encode([blank])
    clip = _blank_clip(tmp_path / "noface.mp4")
    result = prepare_clip(Job("noface", str(clip), None, (enc.need,), ("facemesh",)), MediaConfig(), [enc])
    assert result["error"] is None and result["encoded"]["facemesh"].startswith("NoFaceError: Face Mesh found no face")
    assert encode_isolated(enc, [blank])[0].startswith("NoFaceError")


def test_cli_extract_facemesh_end_to_end(enc, shared_data, tmp_path):
    folder = tmp_path / "clips"
    copy_to(sorted((shared_data / "crema_d").glob("*.flv"))[0], folder / "a.flv")
    copy_to(_facecrop(shared_data, "03", 1)[0], folder / "b.avi")
    _blank_clip(folder / "c_noface.mp4")
    copy_to(sorted((shared_data / "crema_d" / "wav16k").glob("*.wav"))[0], folder / "d.wav")
    store = tmp_path / "store"
    runner = CliRunner()
    assert runner.invoke(app, ["ingest", str(folder), "--store", str(store)]).exit_code == 0
    result = runner.invoke(app, ["extract", "--store", str(store), "--encoders", "facemesh", "--workers", "0",
                                 "--json"])
    assert result.exit_code == 0, result.output
    counts = json.loads(result.stdout)["encoders"]["facemesh"]
    assert counts["extracted"] == 2 and counts["not_applicable"] == 1
    features = read_features(Store(store), "facemesh")
    assert features.vectors.shape == (2, 170) and np.isfinite(features.vectors).all()
    assert feature_spec(Store(store), "facemesh")["ref"] == "facemesh:mediapipe"
    errors = Store(store).errors().to_dicts()
    assert [(e["stage"], e["encoder"]) for e in errors] == [("encode", "facemesh")]
    assert "NoFaceError" in errors[0]["message"]


def test_missing_mediapipe_or_new_protobuf_fail_with_the_install_line(monkeypatch):
    import importlib.metadata

    from extractors.encoders import facemesh
    from extractors.registry import build_encoder, encoder_table

    with pytest.raises(InputError, match="unknown facemesh tag"):
        build_encoder("facemesh:tiny")  # real weights only: no random-weight variant
    monkeypatch.setattr(facemesh, "bundled_location", lambda: None)
    with pytest.raises(InputError, match=r"pip install --no-deps mediapipe==0\.10\.14"):
        build_encoder("facemesh")
    assert [r["available"] for r in encoder_table() if r["encoder"] == "facemesh"] == [False]
    monkeypatch.setattr(facemesh, "bundled_location", lambda: "/nowhere")
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda n: "7.36.2" if n == "protobuf" else real(n))
    with pytest.raises(InputError, match=r"protobuf 4 \(found 7\.36\.2\).*'protobuf>=4\.25\.3,<5'"):
        build_encoder("facemesh")
