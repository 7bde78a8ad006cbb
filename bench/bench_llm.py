"""Benchmark: LoRA LLaMA training steps from cached features vs encoders on the fly.

Emotion-LLaMA loads MAE / VideoMAE / HuBERT features from disk but decodes a frame and
runs EVA on it in every training step. This script times one training step (data
loading + forward + backward + optimiser) of the same tiny LLaMA + LoRA + projectors in
three modes. Step times are taken with the modes interleaved step by step in one process
(so load from other processes hits all modes alike); peak memory is measured for each
mode alone in its own process:

* ``store``      EVA patch tokens and every vector read from the emofs store;
* ``eva``        frames decoded once up front, EVA run on them every step;
* ``decode+eva`` the Emotion-LLaMA way: decode the frame from the video file and run
  EVA every step.

The EVA is the extraction registry's ``eva:tiny`` (timm Eva, random weights) at 224 px;
its tokens are cached in the store for the ``store`` mode. Frames come from the real
clips of ../shared/data.

Usage::

    python bench/bench_llm.py [--steps 30] [--batch-size 8] [--clips 16] [--threads 1] [--device cpu]
                              [--base gemma3-270m]

``--base`` times another LM than the tiny LLaMA (a built-in name, hub id or directory).

Prints a markdown table and one JSON line with the figures and the speed-ups.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = (REPO / ".." / "shared" / "data").resolve()
MODES = ("store", "eva", "decode+eva")
VECTOR_SETS = {"mae": 64, "videomae": 64, "hubert": 64}


def _video_clips(n: int) -> list[tuple[Path, str]]:
    import csv

    with open(DATA / "labels.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if "video" in r["modalities"]]
    if not rows:
        sys.exit(f"no video clips in {DATA}/labels.csv")
    return [(DATA / rows[i % len(rows)]["path"], rows[i % len(rows)]["label"]) for i in range(n)]


def _decode_frame(path: Path):
    from extractors.media import MediaConfig, decode_clip

    import cv2

    clip = decode_clip(path, audio=False, video=True, config=MediaConfig(max_frames=1, max_side=480))
    frame = clip.frames[0]  # (H, W, 3) uint8
    h, w = frame.shape[:2]
    scale = 224 / min(h, w)
    frame = cv2.resize(frame, (max(224, round(w * scale)), max(224, round(h * scale))),
                       interpolation=cv2.INTER_CUBIC)
    top, left = (frame.shape[0] - 224) // 2, (frame.shape[1] - 224) // 2
    return frame[top:top + 224, left:left + 224]  # (224, 224, 3) short side + centre crop


def prepare(work: Path, n_clips: int, device: str) -> None:
    """Tiny LLaMA, clip rows, cached EVA tokens + vectors (the same EVA the on-the-fly modes run)."""
    import numpy as np
    import pyarrow as pa

    from extractors.registry import build_encoder
    from featurestore import Store
    from featurestore.features import write_features
    from llm.tiny import build_tiny_llama

    clips = _video_clips(n_clips)
    labels = sorted({label for _, label in clips})
    build_tiny_llama(work / "llama", labels)
    store = Store(work / "store")
    ids = [f"c{i:03d}" for i in range(n_clips)]
    store.upsert_clips(pa.table({"clip_id": ids, "name": ids, "uri": [str(p) for p, _ in clips],
                                 "label": [lab for _, lab in clips], "subtitle": ["Dogs are sitting by the door"] * n_clips}))
    eva = build_encoder("eva:tiny", device=device, options={"tokens": 256})
    encoded = eva.encode([_decode_frame(p) for p, _ in clips])
    write_features(store, "eva", ids, np.stack([e.vector for e in encoded]), eva.spec("float16"),
                   tokens=[e.tokens for e in encoded])
    rng = np.random.default_rng(0)
    for name, dim in VECTOR_SETS.items():
        write_features(store, name, ids, rng.normal(size=(n_clips, dim)), {"encoder": name, "synthetic": True})


def make_steps(work: Path, steps_modes, batch_size: int, device: str, base: str | None = None):
    """One training-step function per mode, all on the same model and optimiser."""
    import torch

    from extractors.registry import build_encoder
    from featurestore import Store
    from llm import LLMConfig
    from llm.data import merge_tokens
    from llm.model import EmotionLLM
    from llm.train import prepare_training

    store = Store(work / "store")
    config = LLMConfig(base=base or str(work / "llama"), batch_size=batch_size, lr=1e-3,
                       precision="32" if device == "cpu" else "auto")
    dataset, _, _, dims, _ = prepare_training(store, config)
    model = EmotionLLM.create(config, dims, device=device)
    model.train()
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=config.lr)
    clips = store.clips(columns=["clip_id", "uri"])
    uris = dict(zip(clips["clip_id"].to_list(), clips["uri"].to_list()))
    eva = build_encoder("eva:tiny", device=device, options={"tokens": 256}) if set(steps_modes) - {"store"} else None
    frames = {cid: _decode_frame(Path(u)) for cid, u in uris.items()} if "eva" in steps_modes else {}
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device != "cpu"
                else torch.autocast("cpu", enabled=False))
    counter = {"i": 0}

    def make(mode: str):
        def step() -> None:
            i = counter["i"]
            counter["i"] += 1
            idx = [(i * batch_size + k) % len(dataset) for k in range(batch_size)]
            batch = [dataset[j] for j in idx]  # cached vectors (+ EVA tokens from the store)
            if mode != "store":
                images = [frames[e["clip_id"]] if mode == "eva" else _decode_frame(Path(uris[e["clip_id"]]))
                          for e in batch]
                encoded = eva.encode(images)  # EVA forward on the raw frames, every step
                for e, enc in zip(batch, encoded):
                    e["video"] = merge_tokens(enc.tokens, config.merge)  # (T/4, 4*Dt)
            with autocast:
                loss = model.loss(batch)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if device != "cpu":
                torch.cuda.synchronize()
        return step

    return {mode: make(mode) for mode in steps_modes}


def time_modes(work: Path, steps: int, batch_size: int, device: str, base: str | None = None) -> dict:
    """Per-step times, the modes interleaved step by step (fair on a shared machine)."""
    fns = make_steps(work, MODES, batch_size, device, base)
    for fn in fns.values():
        for _ in range(3):
            fn()  # warm-up
    times = {m: [] for m in MODES}
    for _ in range(steps):
        for mode, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[mode].append(time.perf_counter() - start)
    return {m: {"step_ms_median": 1000 * statistics.median(t), "step_ms_mean": 1000 * statistics.fmean(t)}
            for m, t in times.items()}


def _peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM; ru_maxrss would inherit the parent's)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_memory(work: Path, mode: str, steps: int, batch_size: int, device: str, base: str | None = None) -> dict:
    """Peak memory of training in one mode alone (run in its own process)."""
    import torch

    if device != "cpu":
        torch.cuda.reset_peak_memory_stats()
    fn = make_steps(work, [mode], batch_size, device, base)[mode]
    for _ in range(steps):
        fn()
    out = {"peak_rss_mib": _peak_rss_mib()}
    if device != "cpu":
        out["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per mode")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--base", default=None, help="LM to time instead of the tiny LLaMA (e.g. gemma3-270m)")
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    if args.mode:  # child process: peak memory of one mode
        print(json.dumps(peak_memory(Path(args.work), args.mode, 5, args.batch_size, args.device, args.base)))
        return
    if not (DATA / "labels.csv").is_file():
        sys.exit(f"real clips not found at {DATA}")
    with tempfile.TemporaryDirectory(prefix="bench-llm-") as tmp:
        work = Path(tmp)
        prepare(work, args.clips, args.device)
        results = time_modes(work, args.steps, args.batch_size, args.device, args.base)
        for mode in MODES:
            cmd = [sys.executable, __file__, "--mode", mode, "--work", str(work),
                   "--batch-size", str(args.batch_size), "--threads", str(args.threads), "--device", args.device]
            cmd += ["--base", args.base] if args.base else []
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
            if proc.returncode != 0:
                sys.exit(f"mode {mode} failed:\n{proc.stderr[-3000:]}")
            results[mode].update(json.loads(proc.stdout.strip().splitlines()[-1]))
    base = results["store"]["step_ms_median"]
    mem = "peak_cuda_mib" if args.device != "cpu" else "peak_rss_mib"
    print(f"\nLoRA training step, {args.base or 'tiny LLaMA'} + tiny EVA, batch {args.batch_size}, {args.steps} steps, "
          f"device {args.device}, {args.threads} thread(s)\n")
    print(f"| mode | step ms (median) | step ms (mean) | {mem} | store speed-up |")
    print("|---|---|---|---|---|")
    for mode in MODES:
        r = results[mode]
        print(f"| {mode} | {r['step_ms_median']:.1f} | {r['step_ms_mean']:.1f} | {r[mem]:.0f} | "
              f"{r['step_ms_median'] / base:.2f}x |")
    summary = {"device": args.device, "base": args.base or "tiny-llama", "batch_size": args.batch_size,
               "steps": args.steps, "threads": args.threads,
               "results": results,
               "speedup_vs_eva": results["eva"]["step_ms_median"] / base,
               "speedup_vs_decode_eva": results["decode+eva"]["step_ms_median"] / base,
               "target": 3.0}
    print()
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
