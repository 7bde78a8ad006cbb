"""Emotion-LLaMA's feature recipe: MERTools' HuBERT pooling, MiniGPT-v2's EVA layout,
utterance-level face features, and ``emofs extract --recipe emotion-llama``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cli import app
from extractors.registry import build_encoder
from featurestore.errors import InputError


@pytest.fixture(scope="module")
def long_speech(shared_data):
    """23 s of real speech: RAVDESS lines end to end (two full 10 s pieces and a remainder)."""
    from extractors.media import decode_audio

    waves = [decode_audio(p) for p in sorted((shared_data / "ravdess_actor05" / "wav").glob("*.wav"))[:8]]
    return np.concatenate(waves)[: 23 * 16000]


def test_mertools_pooling_equals_the_direct_computation(long_speech):
    """HL-UTT: normalise, 10 s pieces run alone, sum of the last 4 hidden layers, mean of
    every frame; computed here straight from ``output_hidden_states``."""
    import torch
    from transformers import HubertConfig, HubertModel

    from extractors.encoders.hubert import _TINY

    config = dict(_TINY, num_hidden_layers=5)  # 6 hidden states: the last four are a strict subset
    enc = build_encoder("hubert:tiny", options={"pooling": "mertools"})
    torch.manual_seed(1)
    enc.model = HubertModel(HubertConfig(**config)).eval()
    got = enc.encode([long_speech])[0].vector

    wave = (long_speech - long_speech.mean()) / np.sqrt(long_speech.var() + 1e-7)
    frames = []
    with torch.no_grad():
        for start in range(0, len(wave), 160_000):
            piece = torch.from_numpy(wave[start : start + 160_000].astype(np.float32))[None]
            states = enc.model(piece, output_hidden_states=True).hidden_states
            assert len(states) == 6
            frames.append((states[-1] + states[-2] + states[-3] + states[-4])[0])  # (T, D)
    expected = torch.cat(frames).mean(0).numpy()
    assert len(frames) == 3
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    # the default pooling is another vector: the option really changes the recipe
    plain = build_encoder("hubert:tiny")
    plain.model = enc.model
    assert not np.allclose(plain.encode([long_speech])[0].vector, got, atol=1e-3)


def test_eva_minigptv2_layout_is_the_second_last_block_after_ln_vision(media_samples):
    """448 px first frame, block depth-1 of depth, LayerNorm without affine; CLS apart."""
    import torch
    import torch.nn.functional as F
    from PIL import Image

    from extractors.media import MediaConfig, decode_clip
    from extractors.prepare import Job, prepare_clip
    from extractors.encoders.vision import to_pixels

    enc = build_encoder("eva:tiny", options={"layout": "minigptv2"})
    assert enc.need.kind == "first_image" and enc.need.size == 448
    item = prepare_clip(Job("c", str(media_samples["mp4"]), None, (enc.need,), ("eva",)), MediaConfig())
    image = item["inputs"]["first_image:448:16"]
    decoded = decode_clip(media_samples["mp4"], audio=False, video=True)
    assert decoded.frame_indices[0] == 0  # the clip's first frame
    first = np.asarray(Image.fromarray(decoded.frames[0]).resize((448, 448), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(image, first)

    out = enc.encode([image])[0]
    model = enc.model
    with torch.no_grad():
        x = to_pixels(image[None], 448, enc.mean, enc.std, "cpu")
        x = model.patch_embed(x)
        x, rope = model._pos_embed(x)
        x = model.norm_pre(x)
        for block in model.blocks[:-1]:
            x = block(x, rope=rope)
        ln = F.layer_norm(x, x.shape[-1:])[0].numpy()  # (1 + 1024, D)
    assert out.tokens.shape == (1024, 64) and out.vector.shape == (64,)
    np.testing.assert_allclose(out.vector, ln[0], atol=1e-5)
    np.testing.assert_allclose(out.tokens, ln[1:], atol=1e-5)


def test_default_settings_keep_their_fingerprint():
    """Named settings at their default are not recorded: stores extracted before keep
    their features up to date; a non-default one is recorded."""
    spec = build_encoder("hubert:tiny").spec("float16")
    assert spec["options"] == {"tokens": 64}
    spec = build_encoder("hubert:tiny", options={"pooling": "mertools"}).spec("float16")
    assert spec["options"] == {"pooling": "mertools", "tokens": 64} and "MERTools" in spec["pooling"]


def test_bad_settings_fail_with_the_valid_values():
    with pytest.raises(InputError, match="valid values are last, mertools"):
        build_encoder("hubert:tiny", options={"pooling": "mean4"})
    with pytest.raises(InputError, match="takes no option"):
        build_encoder("mae:tiny", options={"pooling": "mertools"})
    with pytest.raises(InputError, match="drop --tokens eva"):
        build_encoder("eva:tiny", options={"layout": "minigptv2", "tokens": 64})


def test_recipe_extracts_the_paper_features(tmp_path, shared_data):
    """``--recipe emotion-llama`` with tiny stand-ins for the user's checkpoints: every
    set written with the recipe's settings, in shapes the imported model takes."""
    from featurestore import Store
    from featurestore.features import feature_spec
    from featurestore.schema import features_name

    folder = tmp_path / "clips"
    folder.mkdir()
    for p in sorted((shared_data / "crema_d" / "mp4").glob("*.mp4"))[:2]:
        (folder / p.name).symlink_to(p)
    store = tmp_path / "store"
    runner = CliRunner()
    res = runner.invoke(app, ["ingest", str(folder), "--store", str(store)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["extract", "--recipe", "emotion-llama", "--encoders",
                              "mae:tiny,videomae:tiny,hubert:tiny,eva:tiny", "--workers", "0",
                              "--dtype", "float32", "--store", str(store), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert {n: e["extracted"] for n, e in report["encoders"].items()} == {
        "mae": 2, "videomae": 2, "hubert": 2, "eva": 2}
    opened = Store(store)
    options = {}
    for name in ("mae", "videomae", "hubert", "eva"):
        spec = feature_spec(opened, name)
        options[name] = {k: v for k, v in spec["options"].items() if k != "tokens"}
    assert options == {"mae": {"frames": "utterance"}, "videomae": {"frames": "utterance"},
                       "hubert": {"pooling": "mertools"}, "eva": {"layout": "minigptv2"}}
    eva = opened.dataset(features_name("eva")).to_table(columns=["tokens"]).column("tokens")[0]
    assert len(eva) == 1024  # every patch token: the LLM merges 4 into one (256 x 4D)


def test_recipe_errors_are_one_line():
    runner = CliRunner()
    res = runner.invoke(app, ["extract", "--recipe", "minigpt5", "--store", "/nonexistent"])
    assert res.exit_code != 0 and "valid recipes are emotion-llama" in res.output
    res = runner.invoke(app, ["extract", "--encoders", "egemaps", "--recipe", "emotion-llama"])
    assert res.exit_code != 0 and "names none of them" in res.output
    res = runner.invoke(app, ["extract", "--encoders", "hubert", "--option", "hubert:pooling"])
    assert res.exit_code != 0 and "ENCODER.NAME=VALUE" in res.output
