"""Importing a released-layout Emotion-LLaMA checkpoint (scaled down): emofs' logits equal a
reference forward written here from MiniGPT-v2's ``encode_img`` / ``prompt_wrap``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cli import app
from llm.emotion_llama import EMOTION_LLAMA_LABELS

R, ALPHA = 4, 16
#: the tiny stand-ins of the recipe's encoders: mae/videomae/hubert 32-d, EVA 64-d tokens
DIMS = {"feats_llama_proj1": 32, "feats_llama_proj2": 32, "feats_llama_proj3": 32,
        "cls_tk_llama_proj": 64, "llama_proj": 4 * 64}
SUBTITLE = "I think I have a doctor's appointment"


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    from llm.tiny import build_tiny_llama

    # with a chat template: the imported run must still use the released "[INST]" turns
    return build_tiny_llama(tmp_path_factory.mktemp("llama") / "base", EMOTION_LLAMA_LABELS,
                            extra_text=[SUBTITLE], chat_template=True)


def released_state(hidden: int = 64, layers: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under the released key names (MiniGPT-v2 runner: trainable params)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for i in range(layers):
        for module in ("q_proj", "v_proj"):
            prefix = f"llama_model.base_model.model.model.layers.{i}.self_attn.{module}"
            state[f"{prefix}.lora_A.default.weight"] = torch.randn(R, hidden, generator=g) * 0.2
            state[f"{prefix}.lora_B.default.weight"] = torch.randn(hidden, R, generator=g) * 0.2
    for name, width in DIMS.items():
        state[f"{name}.weight"] = torch.randn(hidden, width, generator=g) * 0.05
        state[f"{name}.bias"] = torch.randn(hidden, generator=g) * 0.05
    state["attention.fc_out.weight"] = torch.randn(6, 128, generator=g)  # MiniGPTBase's unused head
    return state


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "Emotion_LLaMA.pth"
    torch.save({"model": released_state(), "epoch": 29,
                "config": {"model": {"lora_r": R, "lora_alpha": ALPHA}}}, path)
    return path


@pytest.fixture(scope="module")
def imported(checkpoint, tiny_llama, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "emotion-llama"
    res = CliRunner().invoke(app, ["llm", "import-checkpoint", str(checkpoint), "--base", str(tiny_llama),
                                   "--out", str(run), "--precision", "32"])
    assert res.exit_code == 0, res.output
    return run


def reference_logits(base, state, eva_hidden, mae, videomae, audio, subtitle):
    """MiniGPT-v2 / Emotion-LLaMA's forward, written from its source, on a LoRA-merged LLaMA."""
    import torch.nn.functional as F
    from transformers import AutoTokenizer, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(base)
    llama = LlamaForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    with torch.no_grad():
        for i, layer in enumerate(llama.model.layers):  # W + (alpha / r) B A
            for module in ("q_proj", "v_proj"):
                key = f"llama_model.base_model.model.model.layers.{i}.self_attn.{module}"
                lin = getattr(layer.self_attn, module)
                lin.weight += (ALPHA / R) * state[f"{key}.lora_B.default.weight"] @ state[f"{key}.lora_A.default.weight"]

    def proj(name, x):
        return x @ state[f"{name}.weight"].T + state[f"{name}.bias"]

    def embed(text):
        return llama.model.embed_tokens(tok(text, return_tensors="pt", add_special_tokens=False).input_ids[0])

    with torch.no_grad():
        image = F.layer_norm(eva_hidden, eva_hidden.shape[-1:])  # ln_vision: (1+N, D)
        cls_tk = proj("cls_tk_llama_proj", image[:1])  # (1, H)
        patches = image[1:]  # (N, D)
        merged = patches.view(patches.shape[0] // 4, patches.shape[1] * 4)  # (N/4, 4D)
        video_tokens = proj("llama_proj", merged)  # (N/4, H)
        feats = torch.stack([proj("feats_llama_proj1", mae), proj("feats_llama_proj2", videomae),
                             proj("feats_llama_proj3", audio)])  # (3, H)
        features = torch.cat([feats, cls_tk])  # [FaceMAE, VideoMAE, audio, CLS]: (4, H)
        instruction = ("<video><VideoHere></video> <feature><FeatureHere></feature> "
                       f"The person in video says: {subtitle}.  [emotion] Please determine which emotion label "
                       "in the video represents: happy, sad, neutral, angry, worried, surprise, fear, contempt, "
                       "doubt. ")
        prompt = "[INST] {} [/INST]".format(instruction)
        before_video, rest = prompt.split("<VideoHere>")
        before_feats, after = rest.split("<FeatureHere>")
        bos = llama.model.embed_tokens(torch.tensor([tok.bos_token_id]))
        embeds = torch.cat([bos, embed(before_video), video_tokens, embed(before_feats), features, embed(after)])
        return llama(inputs_embeds=embeds[None]).logits[0]  # (L, V)


def test_imported_logits_equal_the_reference_forward(imported, tiny_llama):
    from llm.config import LLMConfig
    from llm.data import ClipRecord, make_example
    from llm.generate import MemoryFeatures
    from llm.model import EmotionLLM

    g = torch.Generator().manual_seed(1)
    eva_hidden = torch.randn(1 + 16, 64, generator=g) * 3 + 1  # CLS + 16 patches (tiny EVA)
    mae, videomae, audio = (torch.randn(32, generator=g) for _ in range(3))
    ln = torch.nn.functional.layer_norm(eva_hidden, (64,))
    extracted = {"mae": {"vector": mae.numpy(), "tokens": None},
                 "videomae": {"vector": videomae.numpy(), "tokens": None},
                 "hubert": {"vector": audio.numpy(), "tokens": None},
                 "eva": {"vector": ln[0].numpy(), "tokens": ln[1:].numpy()}}

    model = EmotionLLM.load(imported, device="cpu")
    cfg = model.config
    assert isinstance(cfg, LLMConfig) and cfg.prompt_style == "emotion-llama" and cfg.merge == 4
    features = MemoryFeatures("c", extracted, cfg.feature_encoders, cfg.video_encoder)
    example = make_example(ClipRecord("c", None, SUBTITLE, None), features, cfg, model.labels, "emotion",
                           with_answer=False)
    ours = model.prompt_logits([example])[0]
    ref = reference_logits(tiny_llama, released_state(), eva_hidden, mae, videomae, audio, SUBTITLE)
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)
    # the LoRA weights matter: without them the logits differ
    with model.lm.disable_adapter():
        plain = model.prompt_logits([example])[0]
    assert (plain - ref).abs().max() > 1e-3


def test_import_records_provenance(imported, checkpoint):
    meta = json.loads((imported / "config.json").read_text())
    assert meta["imported"]["epoch"] == 29 and meta["imported"]["lora"] == {
        "r": R, "alpha": ALPHA, "targets": ["q_proj", "v_proj"], "tensors": 8}
    assert meta["labels"] == list(EMOTION_LLAMA_LABELS)
    assert meta["dims"] == {"mae": 32, "videomae": 32, "hubert": 32, "eva": 64, "video": 256}


@pytest.mark.parametrize("change, message", [
    (lambda s: s.update({"visual_encoder.blocks.0.attn.qkv.weight": torch.zeros(3, 3)}), "keys outside"),
    (lambda s: [s.pop(k) for k in ("cls_tk_llama_proj.weight", "cls_tk_llama_proj.bias")], "missing cls_tk_llama_proj.weight"),
    (lambda s: s.update({k: torch.zeros(32, v.shape[1]) for k, v in list(s.items()) if k.startswith("llama_proj.w")}),
     "output 32 wide"),
    (lambda s: [s.pop(k) for k in list(s) if ".layers.1." in k], "covers fewer layers"),
    (lambda s: s.update({k: torch.zeros(8, 64) for k in list(s) if k.endswith("layers.0.self_attn.q_proj.lora_A.default.weight")}),
     "LoRA ranks differ"),
])
def test_a_checkpoint_that_does_not_match_is_refused_naming_what(change, message, tiny_llama, tmp_path):
    state = released_state()
    change(state)
    path = tmp_path / "bad.pth"
    torch.save({"model": state}, path)
    res = CliRunner().invoke(app, ["llm", "import-checkpoint", str(path), "--base", str(tiny_llama),
                                   "--out", str(tmp_path / "run"), "--precision", "32"])
    assert res.exit_code != 0 and message in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1


class Payload:
    """An arbitrary object: unpickling it would run code of the file's choosing."""


def test_a_pickled_object_is_not_loaded(tmp_path, tiny_llama):
    """weights_only: a checkpoint holding arbitrary objects is refused, never unpickled."""
    path = tmp_path / "evil.pth"
    torch.save({"model": {"x": Payload()}}, path)
    res = CliRunner().invoke(app, ["llm", "import-checkpoint", str(path), "--base", str(tiny_llama),
                                   "--out", str(tmp_path / "run")])
    assert res.exit_code != 0 and "weights_only=True" in res.output


def test_ask_and_label_use_the_imported_model_on_recipe_features(imported, tmp_path, shared_data):
    """End to end on real clips: recipe features (tiny encoders) -> the imported run answers."""
    folder = tmp_path / "clips"
    folder.mkdir()
    for p in sorted((shared_data / "crema_d" / "mp4").glob("*.mp4"))[:2]:
        (folder / p.name).symlink_to(p)
    store = str(tmp_path / "store")
    runner = CliRunner()
    assert runner.invoke(app, ["ingest", str(folder), "--store", store]).exit_code == 0
    res = runner.invoke(app, ["extract", "--recipe", "emotion-llama", "--encoders",
                              "mae:tiny,videomae:tiny,hubert:tiny,eva:tiny", "--workers", "0", "--store", store])
    assert res.exit_code == 0, res.output
    clip = json.loads(runner.invoke(app, ["clips", "--store", store, "--format", "json"]).stdout)[0]["clip_id"]
    res = runner.invoke(app, ["llm", "ask", clip, "--run", str(imported), "--store", store, "--json",
                              "--max-new-tokens", "4"])
    assert res.exit_code == 0, res.output
    answer = json.loads(res.stdout)
    assert answer["prompt"].endswith("contempt, doubt. ") and "says nothing.  [emotion]" in answer["prompt"]
    assert answer["tokens"] > 0
    # a new clip in the archive: extracted as the store holds the recipe's sets, then answered
    (folder / "new").mkdir()
    new = sorted((shared_data / "crema_d" / "mp4").glob("*.mp4"))[2]
    (folder / "new" / new.name).symlink_to(new)
    out = tmp_path / "llm-labels.csv"
    res = runner.invoke(app, ["label", str(folder), "--llm", str(imported), "--store", store,
                              "--out", str(out), "--batch-size", "2", "--workers", "0"])
    assert res.exit_code == 0, res.output
    import polars as pl

    rows = pl.read_csv(out)
    assert rows.height == 3 and rows["error"].null_count() == 3 and rows["answer"].null_count() == 0
    from featurestore import Store
    from featurestore.features import feature_spec
    from featurestore.schema import features_name

    opened = Store(store)
    assert opened.dataset(features_name("eva")).count_rows() == 3  # the new clip, extracted
    assert feature_spec(opened, "eva")["options"]["layout"] == "minigptv2"
    res = runner.invoke(app, ["label", str(folder), "--store", store])
    assert res.exit_code != 0 and "one of --run" in res.output
