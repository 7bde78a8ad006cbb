"""LLM side: prompts, token merge, splicing, LoRA + projectors, training, ask, eval.

Everything runs offline on a tiny LLaMA + tokenizer built in tmp (random weights, saved
with save_pretrained and loaded back by path) and synthetic feature sets in a tiny store.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from cli import app
from featurestore import InputError, Store, StoreError
from featurestore.features import write_features

LABELS = ["happy", "sad", "angry", "neutral"]
SUBTITLE = "It is eleven o'clock"
DESCRIPTIONS = {
    "happy": "The person smiles widely and speaks brightly",
    "sad": "The person frowns and speaks softly",
    "angry": "The person glares and raises the voice",
    "neutral": "The person looks calm and speaks evenly",
}
DIMS = {"mae": 24, "videomae": 32, "hubert": 16}
EVA_T, EVA_D = 16, 12
runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _make_store(path: Path, n: int = 8, seed: int = 0) -> tuple[Store, list[str], list[str]]:
    """8 labelled clips; clip7 has no hubert row (a missing modality)."""
    rng = np.random.default_rng(seed)
    store = Store(path)
    ids = [f"clip{i}" for i in range(n)]
    labels = [LABELS[i % len(LABELS)] for i in range(n)]
    store.upsert_clips(pa.table({
        "clip_id": ids, "name": ids, "label": labels, "subtitle": [SUBTITLE] * n,
        "description": [DESCRIPTIONS[x] for x in labels],
    }))
    for enc, dim in DIMS.items():
        centre = {x: rng.normal(size=dim) for x in LABELS}
        vectors = np.stack([centre[x] + 0.3 * rng.normal(size=dim) for x in labels])
        keep = [i for i in range(n) if not (enc == "hubert" and ids[i] == "clip7")]
        write_features(store, enc, [ids[i] for i in keep], vectors[keep],
                       {"encoder": enc, "weights": "synthetic", "dim": dim})
    centre = {x: rng.normal(size=(EVA_T, EVA_D)) for x in LABELS}
    tokens = [centre[x] + 0.3 * rng.normal(size=(EVA_T, EVA_D)) for x in labels]
    write_features(store, "eva", ids, np.stack([t.mean(0) for t in tokens]),
                   {"encoder": "eva", "weights": "synthetic"}, tokens=tokens)
    return store, ids, labels


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    from llm.tiny import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "llama", LABELS,
                            extra_text=[SUBTITLE, *DESCRIPTIONS.values()])


@pytest.fixture(scope="module")
def llm_store(tmp_path_factory):
    return _make_store(tmp_path_factory.mktemp("llmstore") / "store")


@pytest.fixture(scope="module")
def trained(tiny_base, llm_store, tmp_path_factory):
    """One overfitting run on the 8 clips (library call; the run is reused by CLI tests)."""
    from llm import LLMConfig, train

    store, _, _ = llm_store
    config = LLMConfig(base=str(tiny_base), epochs=60, batch_size=8, lr=3e-3, lora_dropout=0.0)
    result = train(store, config, tmp_path_factory.mktemp("runs") / "run", progress=False)
    return result


def _examples(model, store, task="emotion"):
    from llm.data import StoreFeatures, load_records, make_example

    records = load_records(store, None)
    features = StoreFeatures(store, model.config.feature_encoders, model.config.video_encoder)
    return records, [make_example(r, features, model.config, model.labels, task, with_answer=False)
                     for r in records]


# ----------------------------------------------------------------- pure helpers
def test_merge_tokens_concatenates_adjacent_tokens():
    from llm.data import merge_tokens

    tokens = np.arange(10 * 3, dtype=np.float32).reshape(10, 3)  # (T, Dt)
    merged = merge_tokens(tokens, 4)
    assert merged.shape == (2, 12)  # trailing 2 tokens dropped
    np.testing.assert_array_equal(merged[1], tokens[4:8].reshape(-1))
    assert merge_tokens(tokens, 1, max_tokens=3).shape == (3, 3)
    with pytest.raises(InputError, match="--merge"):
        merge_tokens(tokens[:3], 4)


def test_prompt_follows_emotion_llama_and_names_missing_modalities():
    from llm.prompts import REASON_INSTRUCTIONS, emotion_instruction, user_prompt

    instruction = emotion_instruction(LABELS)
    text = user_prompt("emotion", instruction, "Hello there.", has_video=True,
                       present_features=["mae", "hubert"])
    assert text == ("<video><VideoHere></video> <feature><FeatureHere></feature> The person in video "
                    "says: Hello there. [emotion] Please determine which emotion label in the video "
                    "represents: happy, sad, angry, neutral.")
    missing = user_prompt("reason", REASON_INSTRUCTIONS[1], None, has_video=False,
                          present_features=["mae"], missing=["eva video", "hubert"])
    assert "<VideoHere>" not in missing and "(missing modalities: eva video, hubert)" in missing
    assert "says nothing" in missing and "[reason]" in missing
    assert len(set(REASON_INSTRUCTIONS)) == 5


def test_answer_to_label_takes_last_whole_word():
    from llm.generate import answer_to_label

    assert answer_to_label("Happy", LABELS) == "happy"
    assert answer_to_label("They look sad at first. Therefore ... state is: angry.", LABELS) == "angry"
    assert answer_to_label("sadness everywhere", LABELS) is None
    assert answer_to_label("", LABELS) is None


def test_config_checks_name_the_flag():
    from llm import LLMConfig, parse_tasks

    assert parse_tasks("emotion=3,reason=1") == {"emotion": 0.75, "reason": 0.25}
    with pytest.raises(InputError, match="--task"):
        parse_tasks("emotion,caption")
    with pytest.raises(InputError, match="--lora-r"):
        LLMConfig(base="x", lora_r=0)
    with pytest.raises(InputError, match="--precision"):
        LLMConfig(base="x", precision="fp8")
    with pytest.raises(InputError, match="--encoders"):
        LLMConfig(base="x", feature_encoders=(), video_encoder=None)
    cfg = LLMConfig(base="x")
    assert (cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.target_modules) == (64, 16, 0.05, ("auto",))
    with pytest.raises(InputError, match="--lora-targets auto stands alone"):
        LLMConfig(base="x", target_modules=("auto", "q_proj"))
    assert LLMConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_precision_flags():
    from llm.train import lightning_precision

    assert lightning_precision("bf16") == "bf16-mixed"
    assert lightning_precision("16") == "16-mixed"
    assert lightning_precision("32") == "32-true"


def test_dataset_mixes_tasks_with_paper_phrasings(llm_store):
    from llm import LLMConfig
    from llm.data import LLMDataset, StoreFeatures, load_records
    from llm.prompts import INFER_PREFIX, REASON_INSTRUCTIONS

    store, ids, labels = llm_store
    config = LLMConfig(base="unused", tasks={"emotion": 0.5, "reason": 0.5})
    features = StoreFeatures(store, config.feature_encoders, config.video_encoder)
    ds = LLMDataset(load_records(store, None), features, config, LABELS, seed=1)
    seen = [ds[i % len(ds)] for i in range(64)]
    assert {ex["task"] for ex in seen} == {"emotion", "reason"}
    for ex in seen:
        if ex["task"] == "reason":
            assert ex["answer"] == f"{DESCRIPTIONS[ex['label']]} {INFER_PREFIX} {ex['label']}."
            assert any(p in ex["prompt"] for p in REASON_INSTRUCTIONS)
        else:
            assert ex["answer"] == ex["label"]
    ex7 = next(ex for ex in seen if ex["clip_id"] == "clip7")
    assert list(ex7["features"]) == ["mae", "videomae", "eva"] and "missing modalities: hubert" in ex7["prompt"]
    assert ex7["video"].shape == (EVA_T // 4, 4 * EVA_D)


def test_a_task_no_clip_can_serve_is_said(llm_store, caplog):
    """--task reason on clips without descriptions trained nothing, silently."""
    from llm import LLMConfig
    from llm.data import LLMDataset, StoreFeatures, load_records

    store, ids, labels = llm_store
    config = LLMConfig(base="unused", tasks={"emotion": 0.5, "reason": 0.5})
    features = StoreFeatures(store, config.feature_encoders, config.video_encoder)
    records = [r.__class__(r.clip_id, r.label, r.subtitle, None) for r in load_records(store, None)]
    with caplog.at_level("WARNING"):
        ds = LLMDataset(records, features, config, LABELS, seed=1)
    assert len(ds) == len(records) and "--task reason: none of the" in caplog.text


# ------------------------------------------------------------------- the model
def test_splicing_puts_projected_tokens_in_place_and_loss_on_answer_only(tiny_base, llm_store):
    import torch

    from llm import LLMConfig
    from llm.model import EmotionLLM
    from llm.train import prepare_training

    store, _, _ = llm_store
    config = LLMConfig(base=str(tiny_base), tasks={"emotion": 1.0})
    dataset, _, labels, dims, _ = prepare_training(store, config)
    assert dims == {"mae": 24, "videomae": 32, "hubert": 16, "eva": EVA_D, "video": 4 * EVA_D}
    model = EmotionLLM.create(config, dims)
    model.eval()
    idx = [r.clip_id for r in dataset.records].index("clip7")
    ex = dataset[idx]
    embeds, mask, lab = model.batch_inputs([ex], with_answer=True)
    rendered = model.render(ex["prompt"])
    assert rendered.startswith("<s>USER: <video><VideoHere></video>") and rendered.endswith("ASSISTANT:")
    before, rest = rendered.split("<VideoHere>")
    between, after = rest.split("<FeatureHere>")
    n_before = len(model._ids(before))
    n_video = EVA_T // 4
    n_between = len(model._ids(between))
    with torch.no_grad():
        video = model.projectors["video"](torch.as_tensor(ex["video"]))  # (4, H)
        torch.testing.assert_close(embeds[0, n_before:n_before + n_video], video)
        start = n_before + n_video + n_between
        feats = torch.stack([model.projectors[k](torch.as_tensor(v)) for k, v in ex["features"].items()])
        assert feats.shape[0] == 3  # hubert missing: left out, not zero-filled
        torch.testing.assert_close(embeds[0, start:start + 3], feats)
    answer_ids = model._ids(" " + ex["answer"]) + [model.tokenizer.eos_token_id]
    supervised = lab[0][lab[0] != -100].tolist()
    assert supervised == answer_ids and lab[0, -len(answer_ids):].tolist() == answer_ids
    assert int(mask.sum()) == embeds.shape[1]


def test_trainable_parameters_are_lora_plus_projectors(tiny_base, llm_store):
    from transformers import AutoConfig

    from llm import LLMConfig
    from llm.model import EmotionLLM
    from llm.train import prepare_training

    store, _, _ = llm_store
    config = LLMConfig(base=str(tiny_base), lora_r=8)
    _, _, _, dims, _ = prepare_training(store, config)
    model = EmotionLLM.create(config, dims)
    cfg = AutoConfig.from_pretrained(tiny_base)
    h, layers = cfg.hidden_size, cfg.num_hidden_layers
    kv = cfg.num_key_value_heads * (h // cfg.num_attention_heads)
    lora = layers * (8 * (h + h) + 8 * (h + kv))  # q_proj: H->H, v_proj: H->kv
    projectors = sum((d + 1) * h for d in dims.values())
    trainable = {n for n, p in model.lm.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert sum(p.numel() for p in model.trainable_parameters()) == lora + projectors


def test_inst_fallback_without_chat_template(tiny_base, tmp_path, llm_store):
    from llm import LLMConfig
    from llm.model import EmotionLLM

    plain = tmp_path / "plain"
    shutil.copytree(tiny_base, plain)
    (plain / "chat_template.jinja").unlink(missing_ok=True)
    tok_cfg = json.loads((plain / "tokenizer_config.json").read_text())
    tok_cfg.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(tok_cfg))
    model = EmotionLLM.create(LLMConfig(base=str(plain)), {"mae": 24, "video": 48})
    assert model.render("hi <FeatureHere>") == "<s>[INST] hi <FeatureHere> [/INST]"


def test_gradient_checkpointing_is_wired(tiny_base, llm_store):
    from llm import LLMConfig
    from llm.model import EmotionLLM
    from llm.train import prepare_training

    store, _, _ = llm_store
    config = LLMConfig(base=str(tiny_base), gradient_checkpointing=True, lora_r=4)
    dataset, _, _, dims, _ = prepare_training(store, config)
    model = EmotionLLM.create(config, dims)
    model.train()
    assert model.checkpointing
    loss = model.loss([dataset[0], dataset[1]])
    loss.backward()
    grads = [p.grad for p in model.trainable_parameters()]
    assert all(g is not None for g in grads) and any(float(g.abs().sum()) > 0 for g in grads)


def test_bad_inputs_raise_typed_errors(tiny_base, llm_store, tmp_path):
    from llm import LLMConfig, train
    from llm.model import EmotionLLM

    store, _, _ = llm_store
    with pytest.raises(StoreError, match="emofs extract"):
        train(store, LLMConfig(base=str(tiny_base), feature_encoders=("nope",)), tmp_path / "r1")
    with pytest.raises(InputError, match="cannot load --base"):
        EmotionLLM.create(LLMConfig(base=str(tmp_path / "missing-model")), {"mae": 4})
    with pytest.raises(InputError, match="--lora-targets"):
        EmotionLLM.create(LLMConfig(base=str(tiny_base), target_modules=("qkv",)), {"mae": 4})
    with pytest.raises(InputError, match="no clips match"):
        train(store, LLMConfig(base=str(tiny_base), where="label = 'bored'"), tmp_path / "r2")


def test_projectors_init_from_head_run_and_llm_run(tiny_base, tmp_path, trained):
    import torch

    from llm import LLMConfig
    from llm.model import EmotionLLM

    h = 64
    head = tmp_path / "head-run"
    (head / "checkpoints").mkdir(parents=True)
    w, b = torch.randn(h, 24), torch.randn(h)
    mean, std = torch.randn(24), torch.rand(24) + 0.5
    torch.save({"hyper_parameters": {"encoders": ["hubert", "mae"]},
                "state_dict": {"head.projectors.1.weight": w, "head.projectors.1.bias": b,
                               "head.mean_1": mean, "head.std_1": std}}, head / "checkpoints" / "best.ckpt")
    model = EmotionLLM.create(LLMConfig(base=str(tiny_base), projectors_from=str(head), lora_r=4),
                              {"mae": 24, "video": 48})
    x = torch.randn(24)
    with torch.no_grad():
        torch.testing.assert_close(model.projectors["mae"](x), w @ ((x - mean) / std) + b, rtol=1e-4, atol=1e-4)
    # The trained run standardises its vectors; its projectors are unfolded to take raw ones
    # here (no standardisation) and refolded for a model that standardises with other stats.
    mean_t, std_t = trained.model.standardize["mae"]
    with torch.no_grad():
        expected = trained.model.projectors["mae"]((x - mean_t) / std_t)
    from_run = EmotionLLM.create(LLMConfig(base=str(tiny_base), projectors_from=str(trained.run_dir), lora_r=4),
                                 {"mae": 24, "video": 48})
    stats = {"mae": (torch.randn(24), torch.rand(24) + 0.5)}
    refolded = EmotionLLM.create(LLMConfig(base=str(tiny_base), projectors_from=str(trained.run_dir), lora_r=4),
                                 {"mae": 24, "video": 48}, standardize=stats)
    with torch.no_grad():
        torch.testing.assert_close(from_run.projectors["mae"](x), expected, rtol=1e-4, atol=1e-4)
        z = (x - stats["mae"][0]) / stats["mae"][1]
        torch.testing.assert_close(refolded.projectors["mae"](z), expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(InputError, match="LM hidden size"):
        _mismatch(tiny_base, head)


def _mismatch(tiny_base, head):
    import torch

    from llm import LLMConfig
    from llm.model import EmotionLLM

    torch.save({"hyper_parameters": {"encoders": ["mae"]},
                "state_dict": {"head.projectors.0.weight": torch.randn(32, 24)}}, head / "checkpoints" / "best.ckpt")
    EmotionLLM.create(LLMConfig(base=str(tiny_base), projectors_from=str(head), lora_r=4), {"mae": 24})


# ---------------------------------------------------------------- train / run
def test_training_overfits_saves_and_reloads(trained, llm_store):
    from llm.model import EmotionLLM

    store, ids, labels = llm_store
    run = trained.run_dir
    for name in ("adapter/adapter_model.safetensors", "adapter/adapter_config.json",
                 "projectors.safetensors", "config.json", "metrics.csv"):
        assert (run / name).is_file(), name
    meta = json.loads((run / "config.json").read_text())
    assert meta["labels"] == sorted(LABELS) and meta["config"]["lora_r"] == 64
    assert trained.steps == 60 and trained.clips == 8
    header = (run / "metrics.csv").read_text().splitlines()[0]
    assert "train_loss_step" in header

    records, examples = _examples(trained.model, store)
    before = trained.model.generate(examples, 6)
    right = sum(a.strip().lower() == r.label for a, r in zip(before, records))
    assert right >= 7, list(zip(before, [r.label for r in records]))

    loaded = EmotionLLM.load(run)
    assert loaded.generate(examples, 6) == before
    one_by_one = [loaded.generate([e], 6)[0] for e in examples[:3]]
    assert one_by_one == before[:3]  # left padding does not change answers


def test_cli_eval_reports_metrics(trained, llm_store, tmp_path):
    store, _, _ = llm_store
    result = runner.invoke(app, ["llm", "eval", str(trained.run_dir), "--store", store.uri,
                                 "--out", str(tmp_path / "ev"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["n"] == 8 and report["accuracy"] >= 7 / 8
    assert report["war"] == report["accuracy"] and 0 <= report["uar"] <= 1
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert np.asarray(metrics["confusion"]).sum() == 8 and metrics["labels"][-1] == "(none)"
    assert (tmp_path / "ev" / "confusion.png").stat().st_size > 1000
    assert (tmp_path / "ev" / "answers.csv").read_text().count("\n") == 9

    sad_only = runner.invoke(app, ["llm", "eval", str(trained.run_dir), "--store", store.uri,
                                   "--where", "label = 'sad'", "--out", str(tmp_path / "ev2"), "--json"])
    assert json.loads(sad_only.stdout)["n"] == 2


def test_ranked_label_words_score_each_answer_after_the_prompt(trained, llm_store, tmp_path):
    """--rank-labels: each label's log-probability is the sum over its answer tokens (and
    the end token) of the model's next-token log-probabilities, computed here by hand."""
    import torch

    store, _, _ = llm_store
    model = trained.model
    records, examples = _examples(model, store)
    scores = model.answer_logprobs(examples[:2], model.labels)  # (2, C)
    assert scores.shape == (2, len(model.labels)) and (scores < 0).all()
    label = model.labels[1]
    embeds, mask, labels = model.batch_inputs([dict(examples[0], answer=label)], with_answer=True)
    with torch.no_grad():
        logp = torch.log_softmax(model.lm(inputs_embeds=embeds, attention_mask=mask).logits[0].float(), -1)
    positions = (labels[0] != -100).nonzero().flatten()
    by_hand = sum(float(logp[p - 1, labels[0, p]]) for p in positions)
    assert abs(float(scores[0, 1]) - by_hand) < 1e-4
    # the trained run ranks the true label first for the clips it overfit
    top = [model.labels[i] for i in model.answer_logprobs(examples, model.labels).argmax(1).tolist()]
    assert sum(t == r.label for t, r in zip(top, records)) >= 7
    result = runner.invoke(app, ["llm", "eval", str(trained.run_dir), "--store", store.uri, "--rank-labels",
                                 "--out", str(tmp_path / "ev")])
    assert result.exit_code == 0 and "ranked label words: accuracy" in result.output, result.output
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["ranked"]["accuracy"] >= 7 / 8


def test_cli_ask_clip_file_and_errors(trained, llm_store, tmp_path, monkeypatch):
    from llm.data import StoreFeatures

    store, ids, labels = llm_store
    result = runner.invoke(app, ["llm", "ask", "clip1", "--run", str(trained.run_dir), "--store", store.uri,
                                 "--json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["source"] == "store" and answer["label"] == labels[1]
    assert "The person in video says: It is eleven o'clock." in answer["prompt"]

    # A new media file goes through workflows.ask's extract_file (here: serving clip2's features).
    features = StoreFeatures(store, ["mae", "videomae", "hubert", "eva"], "eva")
    calls = []

    def extract_file(path, feature_sets, st, **kwargs):
        calls.append((Path(path).name, list(feature_sets)))
        return {n: {"vector": features.vector(n, "clip2"),
                    "tokens": features.video_tokens("clip2") if n == "eva" else None} for n in feature_sets}

    import workflows.ask

    monkeypatch.setattr(workflows.ask, "extract_file", extract_file)
    media = tmp_path / "new.mp4"
    media.write_bytes(b"\0")
    result = runner.invoke(app, ["llm", "ask", str(media), "--run", str(trained.run_dir),
                                 "--store", store.uri, "--subtitle", SUBTITLE, "--json"])
    assert result.exit_code == 0, result.output
    assert calls == [("new.mp4", ["mae", "videomae", "hubert", "eva"])]
    assert json.loads(result.stdout)["label"] == labels[2]

    bad = runner.invoke(app, ["llm", "ask", "no-such-clip", "--run", str(trained.run_dir), "--store", store.uri])
    assert bad.exit_code == 1 and "neither a clip id" in bad.output
    bad = runner.invoke(app, ["llm", "ask", "clip1", "--run", str(tmp_path), "--store", store.uri])
    assert bad.exit_code == 1 and "not an llm run" in bad.output


def test_cli_train_smoke_and_refuses_existing_run(tiny_base, llm_store, tmp_path):
    store, _, _ = llm_store
    out = tmp_path / "cli-run"
    (out / "adapter").mkdir(parents=True)  # what a killed run leaves: no config.json
    (out / "metrics.csv").write_text("epoch,step,stale\n9,9,9\n")
    args = ["llm", "train", "--base", str(tiny_base), "--out", str(out), "--store", store.uri,
            "--encoders", "mae,hubert", "--video", "none", "--task", "emotion=1,reason=1",
            "--max-steps", "2", "--lora-r", "4", "--batch-size", "4", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "unfinished llm run" in result.output and "stale" not in (out / "metrics.csv").read_text()
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["steps"] == 2
    meta = json.loads((out / "config.json").read_text())
    assert meta["dims"] == {"mae": 24, "hubert": 16} and meta["config"]["tasks"] == {"emotion": 0.5, "reason": 0.5}
    again = runner.invoke(app, args)
    assert again.exit_code == 1 and "already holds an llm run" in again.output
    bad = runner.invoke(app, ["llm", "train", "--base", str(tiny_base), "--out", str(tmp_path / "x"),
                              "--store", store.uri, "--task", "dance"])
    assert bad.exit_code == 1 and "--task" in bad.output


# ------------------------------------------------------------- real clips (slow)
def test_real_clips_extract_train_eval_ask(shared_data, tmp_path):
    """Ingest the real clips, extract tiny encoders, train, eval, and ask a new media file."""
    labels_csv = shared_data / "labels.csv"
    store_dir = str(tmp_path / "store")
    assert runner.invoke(app, ["ingest", str(shared_data), "--labels", str(labels_csv),
                               "--store", store_dir]).exit_code == 0
    where = "modality = 'audio+video'"
    result = runner.invoke(app, ["extract", "--encoders", "hubert:tiny,mae:tiny,eva:tiny", "--tokens", "eva=16",
                                 "--where", where, "--workers", "0", "--store", store_dir])
    assert result.exit_code == 0, result.output
    assert runner.invoke(app, ["llm", "tiny", str(tmp_path / "llama"), "--store", store_dir]).exit_code == 0
    run = tmp_path / "run"
    result = runner.invoke(app, ["llm", "train", "--base", str(tmp_path / "llama"), "--out", str(run),
                                 "--encoders", "mae,hubert,eva", "--where", where, "--max-steps", "4",
                                 "--batch-size", "4", "--store", store_dir, "--json"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["llm", "eval", str(run), "--where", where, "--store", store_dir, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["n"] == 15 and 0 <= report["accuracy"] <= 1
    media = next((shared_data / "ravdess_actor05" / "av").glob("*.mp4"))
    result = runner.invoke(app, ["llm", "ask", str(media), "--run", str(run), "--store", store_dir, "--json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["source"] == "file" and "<VideoHere>" in answer["prompt"]


def test_unfinished_llm_run_is_refused(tmp_path):
    """A run killed before config.json (written last) is named unfinished, not loaded."""
    from featurestore import InputError
    from llm.model import EmotionLLM

    run = tmp_path / "killed"
    (run / "adapter").mkdir(parents=True)
    (run / "projectors.safetensors").write_bytes(b"")
    with pytest.raises(InputError, match="unfinished llm run .*killed.*replaces it"):
        EmotionLLM.load(run)
    with pytest.raises(InputError, match="not an llm run"):
        EmotionLLM.load(tmp_path)


def test_uncached_hub_base_fails_at_once_offline(monkeypatch):
    """An uncached hub id offline is one line naming the ways out, before transformers'
    minute of retries."""
    import transformers

    from llm.bases import resolve_base

    def never(*args, **kwargs):
        raise AssertionError("transformers was asked to fetch an uncached hub id offline")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", never)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError, match="not in the local Hugging Face cache and HF_HUB_OFFLINE is set.*gemma3-270m"):
        resolve_base("nobody/no-such-llm")
