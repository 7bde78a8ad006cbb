"""LLM commands: ``llm train``, ``llm ask``, ``llm eval``, ``llm tiny``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from featurestore.errors import InputError

from .common import JsonOpt, StoreOpt, WhereOpt, csv_list, echo_json, open_store, sub_app

__all__ = ["llm_app", "llm_train_command", "llm_ask_command", "llm_eval_command", "llm_tiny_command",
           "llm_import_command"]

llm_app = sub_app("LoRA LLaMA instruction tuning from cached features: train, ask, eval.")

_MaxNewTokensOpt = Annotated[Optional[int], typer.Option("--max-new-tokens")]


@llm_app.command("train")
def llm_train_command(
    base: Annotated[str, typer.Option("--base", help="gemma3-270m (built in, from its PyPI package), a hub id or a local directory of a causal LM.")],
    out: Annotated[
        Optional[Path], typer.Option("--out", help="Run directory to create. [default: runs/llm-<time>]")
    ] = None,
    encoders: Annotated[
        str, typer.Option("--encoders", help="Feature sets giving one <FeatureHere> token each ('none': no such tokens).")
    ] = "mae,videomae,hubert,eva",
    video: Annotated[str, typer.Option("--video", help="Feature set whose tokens fill <VideoHere> ('none' to skip).")] = "eva",
    task: Annotated[str, typer.Option("--task", help="Tasks and mix: emotion | emotion,reason | emotion=0.7,reason=0.3.")] = "emotion",
    epochs: Annotated[int, typer.Option("--epochs")] = 3,
    max_steps: Annotated[Optional[int], typer.Option("--max-steps", help="Stop after N steps (overrides --epochs).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 4,
    lr: Annotated[float, typer.Option("--lr")] = 1e-4,
    lora_r: Annotated[int, typer.Option("--lora-r")] = 64,
    lora_alpha: Annotated[int, typer.Option("--lora-alpha")] = 16,
    lora_dropout: Annotated[float, typer.Option("--lora-dropout")] = 0.05,
    lora_targets: Annotated[str, typer.Option("--lora-targets", help="auto (the base's query/value projections), attention (all its attention projections) or module names.")] = "auto",
    merge: Annotated[int, typer.Option("--merge", help="Adjacent video tokens merged into one (MiniGPT-v2: 4).")] = 4,
    max_video_tokens: Annotated[Optional[int], typer.Option("--max-video-tokens")] = None,
    labels: Annotated[Optional[str], typer.Option("--labels", help="Label set (default: the clips' labels).")] = None,
    where: WhereOpt = None,
    split_by: Annotated[Optional[str], typer.Option("--split-by", help="Group column (speaker): hold out test groups as `train head --split-by` does.")] = None,
    no_standardize: Annotated[bool, typer.Option("--no-standardize", help="Feed raw vectors to the projectors.")] = False,
    description_column: Annotated[str, typer.Option("--description-column", help="Clip column with reasoning answers.")] = "description",
    precision: Annotated[str, typer.Option("--precision", help="auto, 32, bf16 or 16.")] = "auto",
    gradient_checkpointing: Annotated[bool, typer.Option("--gradient-checkpointing")] = False,
    projectors_from: Annotated[Optional[str], typer.Option("--projectors-from", help="Head run to initialise projectors.")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    threads: Annotated[int, typer.Option("--threads", help="Torch CPU threads (0: torch default; 1 is often faster on a busy CPU).")] = 0,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train LoRA adapters + projectors from the store's cached features (Lightning).

    Saves adapter/ (safetensors), projectors.safetensors, config.json and metrics.csv.
    --base gemma3-270m is converted once into $EMOFS_CACHE (default ~/.cache/emofs).

    Examples:
      emofs llm train --base gemma3-270m --encoders egemaps,fer --video none --split-by speaker --lr 3e-3 --out runs/g1
      emofs llm train --base meta-llama/Llama-2-7b-chat-hf --out runs/llm1
      emofs llm train --base ./tiny-llama --encoders mae,hubert --video none --task emotion,reason --out runs/t
    """
    from llm import LLMConfig, parse_tasks, train

    config = LLMConfig(
        base=base, feature_encoders=tuple(csv_list(encoders, "--encoders")),
        video_encoder=(csv_list(video, "--video") or [None])[0], tasks=parse_tasks(task), epochs=epochs,
        max_steps=max_steps, batch_size=batch_size, lr=lr, lora_r=lora_r, lora_alpha=lora_alpha,
        lora_dropout=lora_dropout, target_modules=tuple(csv_list(lora_targets, "--lora-targets")), merge=merge,
        max_video_tokens=max_video_tokens, labels=csv_list(labels, "--labels") or None, where=where,
        split_by=split_by, standardize=not no_standardize, description_column=description_column, precision=precision,
        gradient_checkpointing=gradient_checkpointing, projectors_from=projectors_from, seed=seed,
        threads=threads,
    )
    if out is None:
        import time

        out = Path("runs") / time.strftime("llm-%Y%m%d-%H%M%S")
    result = train(open_store(store), config, out, progress=not as_json)
    if as_json:
        echo_json(result.as_dict())
        return
    loss = "n/a" if result.final_loss is None else f"{result.final_loss:.4f}"
    per_step = f", {result.step_seconds:.2f}s/step" if result.step_seconds else ""
    typer.echo(f"trained {result.steps} steps on {result.clips} clips in {result.seconds:.1f}s{per_step} "
               f"(final loss {loss}, {result.trainable_params:,} trainable parameters) -> {result.run_dir}")
    if result.split:
        typer.echo(f"{result.split}; {result.dropped.get('held_out', 0)} test clips held out "
                   f"(emofs llm eval {result.run_dir} --split test)")


@llm_app.command("ask")
def llm_ask_command(
    target: Annotated[str, typer.Argument(help="A clip_id in the store, or a media file (extracted on the fly).")],
    run: Annotated[Path, typer.Option("--run", help="An `emofs llm train` run directory.")],
    question: Annotated[Optional[str], typer.Option("--question", help="Replace the task instruction.")] = None,
    task: Annotated[str, typer.Option("--task", help="emotion or reason.")] = "emotion",
    subtitle: Annotated[Optional[str], typer.Option("--subtitle", help="What the person says (default: the clip's).")] = None,
    max_new_tokens: _MaxNewTokensOpt = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Print the run's answer for one clip (greedy decoding); an empty answer is said, with why.

    Examples:
      emofs llm ask crema_d/mp4/1001_DFA_ANG_XX --run runs/llm1
      emofs llm ask new.mp4 --run runs/llm1 --task reason
    """
    from workflows.ask import ask, check_target

    check_target(target)  # before the store and the model are opened
    if max_new_tokens is not None and max_new_tokens < 1:
        raise InputError(f"--max-new-tokens must be >= 1 (got {max_new_tokens})")
    result = ask(run, target, open_store(store), question=question, task=task, subtitle=subtitle,
                 max_new_tokens=max_new_tokens)
    if as_json:
        echo_json(result)
        return
    typer.echo(result["answer"] if not result["empty"] else f"(empty answer: {result['note']})")


@llm_app.command("eval")
def llm_eval_command(
    run: Annotated[Path, typer.Argument(help="An `emofs llm train` run directory.")],
    where: WhereOpt = None,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 16,
    out: Annotated[Optional[Path], typer.Option("--out", help="Report folder [default: RUN/eval].")] = None,
    max_new_tokens: _MaxNewTokensOpt = None,
    split: Annotated[Optional[str], typer.Option("--split", help="Only the run's splits.csv part: test (held-out groups), val or train.")] = None,
    head: Annotated[Optional[Path], typer.Option("--head", help="A head run scored on the same clips (default: the run's --projectors-from, when a head run).")] = None,
    rank_labels: Annotated[bool, typer.Option("--rank-labels", help="Also rank the label words by log-probability (the top one always names a label).")] = False,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Generate answers for labelled clips; report accuracy, weighted F1, UAR, WAR, confusion.

    With --head, a head run's figures on the same clips are shown beside the LLM's.

    Examples:
      emofs llm eval runs/llm1 --where "split = 'test'"
      emofs llm eval runs/g1 --split test --head runs/head1
    """
    from llm import evaluate

    if batch_size < 1:
        raise InputError(f"--batch-size must be >= 1 (got {batch_size})")
    result = evaluate(run, open_store(store), where=where, batch_size=batch_size, out_dir=out,
                      max_new_tokens=max_new_tokens, progress=not as_json, split=split, head=head,
                      rank_labels=rank_labels)
    if as_json:
        echo_json(result.as_dict())
        return
    m = result.metrics
    empty = f", {result.empty} empty" if result.empty else ""
    typer.echo(f"{result.n} clips: accuracy {m['accuracy']:.3f}  weighted F1 {m['weighted_f1']:.3f}  "
               f"UAR {m['uar']:.3f}  WAR {m['war']:.3f}  ({result.unmatched} answers named no label{empty}) "
               f"-> {result.out_dir}")
    if "ranked" in m:
        r = m["ranked"]
        typer.echo(f"ranked label words: accuracy {r['accuracy']:.3f}  weighted F1 {r['weighted_f1']:.3f}  UAR {r['uar']:.3f}")
    h = result.head
    if h and h["n"]:
        seen = f"; it trained on {h['seen_in_training']} of them" if h["seen_in_training"] else ""
        typer.echo(f"head {h['run']} on {h['n']} of these clips: accuracy {h['accuracy']:.3f}  weighted F1 "
                   f"{h['weighted_f1']:.3f}  UAR {h['uar']:.3f}{seen}")


@llm_app.command("import-checkpoint")
def llm_import_command(
    checkpoint: Annotated[Path, typer.Argument(help="The released Emotion_LLaMA.pth (MiniGPT-v2 layout).")],
    base: Annotated[str, typer.Option("--base", help="The LLaMA-2-7b-chat directory (or hub id) it was tuned from.")],
    out: Annotated[Path, typer.Option("--out", help="Run directory to write.")],
    encoders: Annotated[str, typer.Option("--encoders", help="Feature sets for FaceMAE, VideoMAE and audio, in that order.")] = "mae,videomae,hubert",
    video: Annotated[str, typer.Option("--video", help="Feature set of the EVA tokens (llama_proj) and CLS vector (cls_tk_llama_proj).")] = "eva",
    labels: Annotated[Optional[str], typer.Option("--labels", help="Label list of the instruction (default: the released nine).")] = None,
    lora_alpha: Annotated[Optional[float], typer.Option("--lora-alpha", help="Default: the checkpoint's, else 16.")] = None,
    precision: Annotated[str, typer.Option("--precision", help="auto, 32, bf16 or 16.")] = "auto",
) -> None:
    """Import the published Emotion-LLaMA as an llm run: its LoRA adapter, projectors, token
    layout and prompt; then `llm ask`, `llm eval` and `label --llm` use it.

    Examples:
      emofs llm import-checkpoint Emotion_LLaMA.pth --base /models/Llama-2-7b-chat-hf --out runs/emotion-llama
      emofs llm ask crema_d/mp4/1001_DFA_ANG_XX --run runs/emotion-llama
    """
    from llm.emotion_llama import EMOTION_LLAMA_LABELS, import_checkpoint

    if out.exists() and any(out.iterdir()):
        raise InputError(f"--out {out} exists and is not empty: pass a new run directory")
    path = import_checkpoint(checkpoint, base, out, feature_sets=csv_list(encoders, "--encoders"), video_set=video,
                             labels=csv_list(labels, "--labels") or EMOTION_LLAMA_LABELS, lora_alpha=lora_alpha,
                             precision=precision)
    typer.echo(f"imported {checkpoint} onto {base} -> {path} (extract features with "
               f"`emofs extract --recipe emotion-llama`, then `emofs llm ask CLIP --run {path}`)")


@llm_app.command("tiny")
def llm_tiny_command(
    folder: Annotated[Path, typer.Argument(help="Folder to write the tiny model and tokenizer into.")],
    labels: Annotated[Optional[str], typer.Option("--labels", help="Label words (default: the store's labels).")] = None,
    no_chat_template: Annotated[bool, typer.Option("--no-chat-template", help="LLaMA: use the [INST] fallback.")] = False,
    arch: Annotated[str, typer.Option("--arch", help="llama, or gemma (gemma3-270m's architecture, Gemma turns).")] = "llama",
    store: StoreOpt = None,
) -> None:
    """Build a tiny random LLaMA or Gemma 3 + tokenizer offline (for demos and tests; not a real model).

    Examples:
      emofs llm tiny tiny-llama && emofs llm train --base tiny-llama --out runs/demo
      emofs llm tiny tiny-gemma --arch gemma
    """
    from llm.tiny import build_tiny_gemma, build_tiny_llama, vocabulary_from_store

    if arch not in ("llama", "gemma"):
        raise InputError(f"--arch must be llama or gemma (got {arch!r})")
    words, texts = csv_list(labels, "--labels"), []
    if not words or store:  # the store's labels, and its subtitles / descriptions for the tokenizer
        words, texts = vocabulary_from_store(open_store(store), words)
    if arch == "gemma":
        path = build_tiny_gemma(folder, words, extra_text=texts)
    else:
        path = build_tiny_llama(folder, words, extra_text=texts, chat_template=not no_chat_template)
    typer.echo(f"wrote a tiny {'Gemma 3' if arch == 'gemma' else 'LLaMA'} ({len(words)} label words) to {path}")
