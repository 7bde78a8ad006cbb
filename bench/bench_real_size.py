"""Every encoder of the Emotion-LLaMA recipe, and a >= 1B LLaMA, at real size on CPU.

Real-size random weights (no hub): HuBERT-large, ViT-MAE-large, VideoMAE-large (their
real configs, transformers) and EVA-CLIP-g (timm), saved to ``--weights`` and loaded by
directory as a user's checkpoints are; a 24-layer LLaMA of 2048 width (1.0B parameters)
with a released-layout Emotion-LLaMA checkpoint at the paper's widths (LoRA r=64 on q/v,
``llama_proj`` 5632 -> H, three 1024-d feature projectors, ``cls_tk_llama_proj`` 1408 -> H).

Each step runs as the CLI in a child process, timed with GNU time (peak RSS, wall):
``emofs extract --recipe emotion-llama --encoders NAME:DIR`` per encoder, then
``emofs llm import-checkpoint`` and ``emofs llm ask`` on each clip. Figures go to
``--json`` (default ``bench/results/real_size_cpu.json``).

    python bench/bench_real_size.py --clips 3
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

SHARED = REPO.parent / "shared" / "data"
EMOFS = [sys.executable, "-c", "import sys; from cli import main; sys.argv[0] = 'emofs'; main()"]
LLM_WIDTH, LLM_LAYERS, LLM_HEADS = 2048, 24, 32


def audio_video_clips(n: int) -> list[Path]:
    """The first ``n`` shared clips that hold both audio and video."""
    with open(SHARED / "labels.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["modalities"] == "audio+video"]
    return [SHARED / r["path"] for r in rows[:n]]


def timed(args: list[str], env: dict | None = None) -> dict:
    """Run the CLI in a child under GNU time: exit code, wall seconds, peak RSS (MB), stdout."""
    cmd = ["/usr/bin/time", "-f", "TIME %e %M", *EMOFS, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env={**os.environ, **(env or {})})
    line = next(ln for ln in reversed(proc.stderr.splitlines()) if ln.startswith("TIME "))
    _, wall, rss_kb = line.split()
    if proc.returncode:
        print(proc.stderr[-2000:], file=sys.stderr)
    return {"exit": proc.returncode, "wall_s": float(wall), "peak_rss_mb": int(rss_kb) / 1024,
            "stdout": proc.stdout}


def llm_weights(root: Path) -> tuple[Path, int]:
    """A 1.0B-parameter LLaMA (random) + tokenizer, saved by directory; its parameter count."""
    from llm.emotion_llama import EMOTION_LLAMA_LABELS
    from llm.tiny import build_tiny_llama

    out = root / "llama-1b"
    if not (out / "config.json").is_file():
        build_tiny_llama(out, EMOTION_LLAMA_LABELS, hidden_size=LLM_WIDTH, layers=LLM_LAYERS, heads=LLM_HEADS,
                         chat_template=False)
    from safetensors import safe_open

    count = 0
    for file in out.glob("*.safetensors"):
        with safe_open(str(file), "pt") as f:
            count += sum(_numel(f.get_slice(k).get_shape()) for k in f.keys())
    return out, count


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def released_checkpoint(path: Path, hidden: int, layers: int, rank: int = 64) -> Path:
    """Random weights under Emotion-LLaMA's key names and the paper's widths."""
    import torch

    if path.is_file():
        return path
    g = torch.Generator().manual_seed(0)
    state = {}
    for i in range(layers):
        for module in ("q_proj", "v_proj"):
            key = f"llama_model.base_model.model.model.layers.{i}.self_attn.{module}"
            state[f"{key}.lora_A.default.weight"] = torch.randn(rank, hidden, generator=g) * 0.01
            state[f"{key}.lora_B.default.weight"] = torch.randn(hidden, rank, generator=g) * 0.01
    for name, width in (("llama_proj", 4 * 1408), ("feats_llama_proj1", 1024), ("feats_llama_proj2", 1024),
                        ("feats_llama_proj3", 1024), ("cls_tk_llama_proj", 1408)):
        state[f"{name}.weight"] = torch.randn(hidden, width, generator=g) * width ** -0.5
        state[f"{name}.bias"] = torch.zeros(hidden)
    torch.save({"model": state, "epoch": 0}, path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=3)
    parser.add_argument("--weights", type=Path, default=Path(os.environ.get("EMOFS_CACHE", Path.home() / ".cache" / "emofs")) / "real-size")
    parser.add_argument("--work", type=Path, default=Path("/tmp/emofs-real-size"))
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "real_size_cpu.json")
    args = parser.parse_args()
    from bench_extract import large_encoders

    args.weights.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if not all((args.weights / f"w_{n}").is_dir() for n in ("hubert", "mae", "videomae", "eva")):
        large_encoders(args.weights)
    refs = {n: args.weights / f"w_{n}" for n in ("mae", "videomae", "hubert", "eva")}
    base, params = llm_weights(args.weights)
    ckpt = released_checkpoint(args.weights / "Emotion_LLaMA-1b-layout.pth", LLM_WIDTH, LLM_LAYERS)
    print(f"weights ready in {time.perf_counter() - started:.0f}s (LLaMA {params / 1e9:.2f}B parameters)")

    work = args.work
    subprocess.run(["rm", "-rf", str(work)], check=True)
    (work / "clips").mkdir(parents=True)
    for clip in audio_video_clips(args.clips):
        (work / "clips" / clip.name).symlink_to(clip)
    store = str(work / "store")
    assert timed(["ingest", str(work / "clips"), "--store", store])["exit"] == 0
    env = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(os.cpu_count())}
    result = {"clips": args.clips, "cpu_cores": os.cpu_count(), "weights": "real-size random (no hub)",
              "recipe": "emotion-llama", "encoders": {}}
    for name, path in refs.items():
        run = timed(["extract", "--recipe", "emotion-llama", "--encoders", f"{name}:{path}", "--workers", "0",
                     "--store", store, "--json"], env)
        report = json.loads(run["stdout"]) if run["exit"] == 0 else {}
        enc = (report.get("encoders") or {}).get(name, {})
        result["encoders"][name] = {"exit": run["exit"], "extracted": enc.get("extracted"),
                                    "peak_rss_mb": round(run["peak_rss_mb"]), "wall_s": run["wall_s"],
                                    "extract_s_per_clip": round(report.get("seconds", 0) / args.clips, 2)}
        print(name, result["encoders"][name])
    run_dir = work / "emotion-llama-1b"
    imp = timed(["llm", "import-checkpoint", str(ckpt), "--base", str(base), "--out", str(run_dir),
                 "--precision", "32"], env)
    result["llm"] = {"architecture": f"LlamaForCausalLM, {LLM_LAYERS} layers x {LLM_WIDTH}", "parameters": params,
                     "import": {"exit": imp["exit"], "wall_s": imp["wall_s"], "peak_rss_mb": round(imp["peak_rss_mb"])},
                     "ask": []}
    clips = json.loads(timed(["clips", "--store", store, "--format", "json"])["stdout"])
    for row in clips:
        ask = timed(["llm", "ask", row["clip_id"], "--run", str(run_dir), "--store", store, "--json",
                     "--max-new-tokens", "8"], env)
        answer = json.loads(ask["stdout"]) if ask["exit"] == 0 else {}
        result["llm"]["ask"].append({"exit": ask["exit"], "wall_s": ask["wall_s"],
                                     "peak_rss_mb": round(ask["peak_rss_mb"]), "tokens": answer.get("tokens")})
        print("ask", result["llm"]["ask"][-1])
    result["total_s"] = round(time.perf_counter() - started)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
