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


def prepare(out: Path, limit: int) -> None:
    """Decode shared clips once and save each encoder's inputs (uint8 / float32)."""
    from bench_extract import audio_video_clips

    from extractors.media import MediaConfig
    from extractors.prepare import Job, need_key, prepare_clip
    from extractors.registry import encoder_class

    needs = tuple(encoder_class(n).need for n in ENCODERS)
    arrays: dict[str, list[np.ndarray]] = {n: [] for n in ENCODERS}
    for path in audio_video_clips()[:limit]:
        job = Job(clip_id=path.name, uri=str(path), subtitle=None, needs=needs, todo=ENCODERS)
        item = prepare_clip(job, MediaConfig())
        if item["error"]:
            raise SystemExit(f"{path}: {item['error']}")
        for name, need in zip(ENCODERS, needs):
            arrays[name].append(item["inputs"][need_key(need)])
    out.mkdir(parents=True, exist_ok=True)
    payload = {}
    for name, items in arrays.items():
        for i, value in enumerate(items):
            payload[f"{name}_{i}"] = value
    np.savez(out / "inputs.npz", **payload)
    print(f"saved inputs of {len(arrays['mae'])} clips to {out / 'inputs.npz'}")


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
    inputs = {n: [data[k] for k in sorted(data.files, key=lambda k: int(k.rsplit("_", 1)[1]))
                  if k.startswith(n + "_")] for n in ENCODERS}
    if args.tiny:  # a quick check of this script's own code path
        refs = {n: "tiny" for n in ENCODERS}
    else:
        refs = dict(r.split(":", 1) for r in large_encoders(folder / "weights") if ":" in r)
    device = args.device
    results = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
               "clips": len(inputs["mae"]), "weights": "tiny" if args.tiny else "real-size random",
               "encoders": {}}
    for name in ENCODERS:
        row: dict = {}
        gpu = build_encoder(f"{name}:{refs[name]}", device=device)
        batch = args.batch
        row["cuda_autocast_ms_per_clip"] = 1000 * _time_encode(gpu, inputs[name], batch, args.repeat)
        fast = gpu.encode(inputs[name][:batch])
        gpu.autocast = contextlib.nullcontext  # the fp32 reference
        row["cuda_fp32_ms_per_clip"] = 1000 * _time_encode(gpu, inputs[name], batch, args.repeat)
        exact = gpu.encode(inputs[name][:batch])
        cos = [float(np.dot(a.vector, b.vector) / (np.linalg.norm(a.vector) * np.linalg.norm(b.vector)))
               for a, b in zip(fast, exact)]
        row["autocast_vs_fp32_min_cosine"] = min(cos)
        row["finite"] = bool(all(np.isfinite(e.vector).all() for e in fast))
        row["dim"] = int(fast[0].vector.shape[0])
        del gpu
        if device == "cuda":
            torch.cuda.empty_cache()
        cpu = build_encoder(f"{name}:{refs[name]}", device="cpu")
        row["cpu_ms_per_clip"] = 1000 * _time_encode(cpu, inputs[name][: args.cpu_clips], 1, 1)
        row["speedup_cuda_vs_cpu"] = row["cpu_ms_per_clip"] / row["cuda_autocast_ms_per_clip"]
        del cpu
        results["encoders"][name] = row
    total_gpu = sum(r["cuda_autocast_ms_per_clip"] for r in results["encoders"].values())
    total_cpu = sum(r["cpu_ms_per_clip"] for r in results["encoders"].values())
    results["all_four_clips_per_s_cuda"] = 1000 / total_gpu
    results["all_four_clips_per_s_cpu"] = 1000 / total_cpu
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepare", type=Path)
    parser.add_argument("--run", type=Path)
    parser.add_argument("--limit", type=int, default=15, help="clips to prepare")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cpu-clips", type=int, default=2)
    parser.add_argument("--device", default="cuda", help="cuda (the point) or cpu (to check the script)")
    parser.add_argument("--tiny", action="store_true", help="tiny encoders (to check the script)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.prepare:
        prepare(args.prepare, args.limit)
        return
    if not args.run:
        parser.error("give --prepare DIR or --run DIR")
    results = run(args.run, args)
    print(f"\n{results['device']}, {results['clips']} real clips, batch {args.batch}\n")
    dev = args.device.upper()
    print(f"| encoder | dim | {dev} autocast ms/clip | {dev} fp32 ms/clip | CPU ms/clip | {dev} vs CPU | autocast≈fp32 (min cos) |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results["encoders"].items():
        print(f"| {name} | {r['dim']} | {r['cuda_autocast_ms_per_clip']:.2f} | {r['cuda_fp32_ms_per_clip']:.2f} | "
              f"{r['cpu_ms_per_clip']:.0f} | {r['speedup_cuda_vs_cpu']:.0f}x | {r['autocast_vs_fp32_min_cosine']:.4f} |")
    print(f"\nall four encoders: {results['all_four_clips_per_s_cuda']:.1f} clips/s on {dev}, "
          f"{results['all_four_clips_per_s_cpu']:.2f} clips/s on CPU")
    print(json.dumps(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
