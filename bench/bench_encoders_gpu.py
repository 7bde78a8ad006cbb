"""GPU check and benchmark of the frozen encoders at real size (random weights).

The GPU machine has torch, transformers and timm but not PyAV or Lance, so the work is
split in two steps:

1. ``--prepare DIR`` (here): decode the shared audio+video clips with the real pipeline
   code (``extractors.prepare.prepare_clip``: 16 kHz audio, face crops, peak frame) and
   save the exact encoder inputs to ``DIR/inputs.npz``.
2. ``--run DIR`` (on the GPU machine): build HuBERT-large, ViT-MAE-large, VideoMAE-large
   and EVA-CLIP-g from their real configs with random weights (no hub), load them through
   the registry by directory, and time ``Encoder.encode`` on those inputs: CUDA with
   autocast (the pipeline's path) vs CUDA fp32 vs CPU (a few clips), per encoder. Also
   checks the autocast outputs against fp32 (cosine) and that every value is finite.
   Each encoder runs twice: with its default settings and with Emotion-LLaMA's recipe
   (``--recipe emotion-llama``: MERTools HuBERT pooling, utterance-level MAE / VideoMAE,
   EVA-CLIP-g at 448 px in MiniGPT-v2's layout); peak GPU memory per encoder.
3. ``--llm`` (with ``--run``): a 1.0B-parameter LLaMA (24 x 2048, random) under a
   released-layout Emotion-LLaMA checkpoint at the paper's widths, imported with
   ``llm.emotion_llama.import_checkpoint``: prompt forward and greedy generation on the
   GPU in bf16 vs fp32 (logit agreement, top-1 agreement, tokens/s).

Prints a markdown table and a JSON object (``--json PATH``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

ENCODERS = ("hubert", "mae", "videomae", "eva")
#: settings -> encoder options (``recipe``: Emotion-LLaMA's, extractors.recipes)
SETTINGS = ("default", "recipe")


def _options(setting: str) -> dict[str, dict]:
    from extractors.recipes import RECIPES

    return RECIPES["emotion-llama"].options if setting == "recipe" else {}


def prepare(out: Path, limit: int, recipe_limit: int) -> None:
    """Decode shared clips once and save each encoder's inputs (uint8 / float32), for the
    default settings (``limit`` clips) and the recipe's (``recipe_limit`` clips)."""
    from bench_extract import audio_video_clips

    from extractors.media import MediaConfig
    from extractors.prepare import Job, need_key, prepare_clip
    from extractors.registry import build_encoder

    payload = {}
    for setting, count in (("default", limit), ("recipe", recipe_limit)):
        options = _options(setting)
        needs = tuple(build_encoder(f"{n}:tiny", options=options.get(n)).need for n in ENCODERS)
        for i, path in enumerate(audio_video_clips()[:count]):
            job = Job(clip_id=path.name, uri=str(path), subtitle=None, needs=needs, todo=ENCODERS)
            item = prepare_clip(job, MediaConfig())
            if item["error"]:
                raise SystemExit(f"{path}: {item['error']}")
            for name, need in zip(ENCODERS, needs):
                payload[f"{setting}.{name}_{i}"] = item["inputs"][need_key(need)]
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "inputs.npz", **payload)
    print(f"saved inputs of {limit} + {recipe_limit} clips to {out / 'inputs.npz'}")


def _time_encode(encoder, inputs, batch: int, repeat: int) -> float:
    """Seconds per clip over ``repeat`` passes (after one warm-up batch)."""
    import torch

    encoder.encode(inputs[:batch])
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeat):
        for i in range(0, len(inputs), batch):
            encoder.encode(inputs[i : i + batch])
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / (repeat * len(inputs))


def run(folder: Path, args) -> dict:
    import torch
    from bench_extract import large_encoders

    from extractors.registry import build_encoder

    data = np.load(folder / "inputs.npz")
    if args.tiny:  # a quick check of this script's own code path
        refs = {n: "tiny" for n in ENCODERS}
    else:
        refs = dict(r.split(":", 1) for r in large_encoders(folder / "weights") if ":" in r)
    device = args.device
    results = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
               "weights": "tiny" if args.tiny else "real-size random", "encoders": {}}
    for setting in SETTINGS:
        inputs = {n: [data[k] for k in sorted((k for k in data.files if k.startswith(f"{setting}.{n}_")),
                                              key=lambda k: int(k.rsplit("_", 1)[1]))] for n in ENCODERS}
        results[f"clips_{setting}"] = len(inputs["mae"])
        for name in ENCODERS:
            key = name if setting == "default" else f"{name}+recipe"
            results["encoders"][key] = _encoder_row(f"{name}:{refs[name]}", _options(setting).get(name),
                                                    inputs[name], device, args)
            print(key, json.dumps(results["encoders"][key]), flush=True)
            if args.json:  # what a run cut short by its time limit still returns
                args.json.write_text(json.dumps(results, indent=2))
    for setting in SETTINGS:
        rows = [r for k, r in results["encoders"].items() if ("+recipe" in k) == (setting == "recipe")]
        results[f"all_four_clips_per_s_{setting}_cuda"] = 1000 / sum(r["cuda_autocast_ms_per_clip"] for r in rows)
        results[f"all_four_clips_per_s_{setting}_cpu"] = 1000 / sum(r["cpu_ms_per_clip"] for r in rows)
    return results


def _encoder_row(ref: str, options: dict | None, inputs: list, device: str, args) -> dict:
    """Timings, agreement and memory of one encoder (one setting) on its prepared inputs."""
    import torch

    from extractors.registry import build_encoder

    row: dict = {}
    gpu = build_encoder(ref, device=device, options=options)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    batch = args.batch
    row["cuda_autocast_ms_per_clip"] = 1000 * _time_encode(gpu, inputs, batch, args.repeat)
    fast = gpu.encode(inputs[:batch])
    gpu.autocast = contextlib.nullcontext  # the fp32 reference
    row["cuda_fp32_ms_per_clip"] = 1000 * _time_encode(gpu, inputs, batch, args.repeat)
    exact = gpu.encode(inputs[:batch])
    cos = [float(np.dot(a.vector, b.vector) / (np.linalg.norm(a.vector) * np.linalg.norm(b.vector)))
           for a, b in zip(fast, exact)]
    row["autocast_vs_fp32_min_cosine"] = min(cos)
    row["finite"] = bool(all(np.isfinite(e.vector).all() for e in fast))
    row["dim"] = int(fast[0].vector.shape[0])
    row["tokens_shape"] = list(fast[0].tokens.shape) if fast[0].tokens is not None else None
    if device == "cuda":
        row["gpu_peak_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
    del gpu
    if device == "cuda":
        torch.cuda.empty_cache()
    cpu = build_encoder(ref, device="cpu", options=options)
    row["cpu_ms_per_clip"] = 1000 * _time_encode(cpu, inputs[: args.cpu_clips], 1, 1)
    row["speedup_cuda_vs_cpu"] = row["cpu_ms_per_clip"] / row["cuda_autocast_ms_per_clip"]
    del cpu
    return row


def run_llm(folder: Path, device: str) -> dict:
    """The 1.0B LLaMA under a released-layout checkpoint: bf16 vs fp32 on ``device``."""
    import torch
    from bench_real_size import LLM_LAYERS, LLM_WIDTH, llm_weights, released_checkpoint

    from llm.emotion_llama import EMOTION_LLAMA_LABELS, import_checkpoint
    from llm.model import EmotionLLM
    from llm.prompts import emotion_instruction, user_prompt

    base, params = llm_weights(folder / "weights")
    ckpt = released_checkpoint(folder / "weights" / "released.pth", LLM_WIDTH, LLM_LAYERS)
    run_dir = folder / "emotion-llama-1b"
    if not (run_dir / "config.json").is_file():
        import_checkpoint(ckpt, str(base), run_dir, precision="32")
    rng = np.random.default_rng(0)
    prompt = user_prompt("emotion", emotion_instruction(EMOTION_LLAMA_LABELS), "I am on my way to the meeting",
                         has_video=True, present_features=["mae", "videomae", "hubert", "eva"],
                         style="emotion-llama")
    examples = [{"prompt": prompt, "video": rng.standard_normal((256, 5632)).astype(np.float32),
                 "features": {"mae": rng.standard_normal(1024), "videomae": rng.standard_normal(1024),
                              "hubert": rng.standard_normal(1024), "eva": rng.standard_normal(1408)}}
                for _ in range(4)]
    out = {"parameters": params, "batch": len(examples)}
    logits = {}
    for precision in ("32", "bf16"):
        model = EmotionLLM.load(run_dir, device=device)
        if precision == "bf16":
            model.lm.to(torch.bfloat16)
            model.projectors.to(torch.bfloat16)
        torch.cuda.synchronize() if device == "cuda" else None
        logits[precision] = model.prompt_logits(examples)[:, -1].float().cpu()  # (B, V) next token
        start = time.perf_counter()
        for _ in range(3):
            model.prompt_logits(examples)
        torch.cuda.synchronize() if device == "cuda" else None
        out[f"prompt_forward_ms_{precision}"] = 1000 * (time.perf_counter() - start) / 3
        start = time.perf_counter()
        gens = model.generate_detailed(examples, max_new_tokens=16)
        torch.cuda.synchronize() if device == "cuda" else None
        out[f"generate_tokens_per_s_{precision}"] = sum(g.tokens for g in gens) / (time.perf_counter() - start)
        out["prompt_tokens"] = int(model.batch_inputs(examples[:1], with_answer=False)[0].shape[1])
        del model
        torch.cuda.empty_cache() if device == "cuda" else None
    a, b = logits["32"], logits["bf16"]
    out["bf16_vs_fp32_max_abs_logit_diff"] = float((a - b).abs().max())
    out["bf16_vs_fp32_top1_agreement"] = float((a.argmax(-1) == b.argmax(-1)).float().mean())
    out["fp32_logit_std"] = float(a.std())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepare", type=Path)
    parser.add_argument("--run", type=Path)
    parser.add_argument("--limit", type=int, default=8, help="clips to prepare (default settings)")
    parser.add_argument("--recipe-limit", type=int, default=4, help="clips to prepare (recipe settings)")
    parser.add_argument("--llm", action="store_true", help="also the 1B LLaMA under the imported layout")
    parser.add_argument("--no-encoders", action="store_true", help="only --llm")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cpu-clips", type=int, default=2)
    parser.add_argument("--device", default="cuda", help="cuda (the point) or cpu (to check the script)")
    parser.add_argument("--tiny", action="store_true", help="tiny encoders (to check the script)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.prepare:
        prepare(args.prepare, args.limit, args.recipe_limit)
        return
    if not args.run:
        parser.error("give --prepare DIR or --run DIR")
    results = {} if args.no_encoders else run(args.run, args)
    if args.llm:
        results["llm"] = run_llm(args.run, args.device)
        print(json.dumps(results["llm"], indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if args.no_encoders:
        return
    print(f"\n{results['device']}, {results['clips_default']} + {results['clips_recipe']} real clips, batch {args.batch}\n")
    dev = args.device.upper()
    print(f"| encoder | dim | {dev} autocast ms/clip | {dev} fp32 ms/clip | CPU ms/clip | {dev} vs CPU | "
          f"autocast≈fp32 (min cos) | peak GPU GB |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results["encoders"].items():
        print(f"| {name} | {r['dim']} | {r['cuda_autocast_ms_per_clip']:.2f} | {r['cuda_fp32_ms_per_clip']:.2f} | "
              f"{r['cpu_ms_per_clip']:.0f} | {r['speedup_cuda_vs_cpu']:.0f}x | {r['autocast_vs_fp32_min_cosine']:.4f} | "
              f"{r.get('gpu_peak_mem_gb', 0):.2f} |")
    for setting in SETTINGS:
        print(f"all four encoders ({setting}): {results[f'all_four_clips_per_s_{setting}_cuda']:.1f} clips/s on {dev}, "
              f"{results[f'all_four_clips_per_s_{setting}_cpu']:.2f} clips/s on CPU")


if __name__ == "__main__":
    main()
