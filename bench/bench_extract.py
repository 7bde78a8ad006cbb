"""Benchmark `emofs extract`: decode-once vs per-encoder passes, overlap, memory growth.

On the shared audio+video clips (../shared/data: CREMA-D flv + mp4, RAVDESS mp4), linked
(not copied) N times into a temporary folder, with hubert, mae, videomae, eva at ``tiny``
plus ``egemaps``:

1. decode-once pipeline (all encoders in one pass) vs a baseline running each encoder in
   its own pass over the media, decoding again each time (as the MER2023 toolkit does);
   target >= 2.5x.
2. overlap: pipeline wall <= 1.15 x max(decode-only pass, encode-only pass on pre-decoded
   input); decode-only is the worker stage alone (the same spawn workers: decode, faces,
   peak frame, and the ``in_worker`` encoders such as egemaps, which run there), encode-only
   runs the main-process encoders and the batched store writes on inputs decoded beforehand
   (with the pipeline's torch threads). Where both stages run on the same cores (CPU only),
   no overlap beats their summed CPU time over the cores: ``cpu_bound_s`` = (decode CPU +
   encode CPU) / cores, and ``pipeline_vs_cpu_bound`` is the wall over the larger bound.
3. peak RSS of a full run in a fresh subprocess at 20 and 200 clips; target growth < 20%.

Prints a markdown table of the figures, one of the targets, then one JSON object. Usage::

    python bench/bench_extract.py [--clips 105] [--workers 2] [--batch-size 16]
        [--rss-small 20] [--rss-large 200] [--device auto] [--large]

``--large`` (for a GPU) uses real-sized random-weight configs instead of ``tiny`` ones.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchlib import emit_json, print_targets  # noqa: E402

SHARED = (REPO / ".." / "shared" / "data").resolve()
TINY = ["hubert:tiny", "mae:tiny", "videomae:tiny", "eva:tiny", "egemaps"]


def audio_video_clips() -> list[Path]:
    """The shared clips that have both audio and video."""
    crema = SHARED / "crema_d"
    clips = sorted(crema.glob("*.flv")) + sorted((crema / "mp4").glob("*.mp4"))
    clips += sorted((SHARED / "ravdess_actor05" / "av").glob("*.mp4"))
    if not clips:
        sys.exit(f"no shared clips under {SHARED}: the benchmark needs ../shared/data")
    return clips


def make_store(root: Path, n_clips: int):
    """A store with ``n_clips`` rows: the audio+video clips linked repeatedly (no copies)."""
    from extractors import ingest
    from featurestore import Store

    src = audio_video_clips()
    folder = root / "clips"
    for i in range(n_clips):
        path = src[i % len(src)]
        link = folder / f"rep{i // len(src):03d}" / path.name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            os.symlink(path, link)
    store = Store(root / "store")
    ingest([folder], store, progress=False)
    return store


def fresh_store(root: Path, template, name: str):
    """Copy of a store holding only clips (every configuration starts from the same state)."""
    from featurestore import Store
    from featurestore.schema import CLIPS

    target = root / name
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(Path(template.uri) / CLIPS, target / CLIPS)
    return Store(target)


def bench_pipeline(root, template, encoders, args) -> dict:
    from extractors import extract

    store = fresh_store(root, template, "once")
    t0, cpu0 = time.perf_counter(), cpu_seconds()
    report = extract(store, encoders, workers=args.workers, batch_size=args.batch_size,
                     device=args.device, tokens=args.tokens, progress=False)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    assert report.decode_errors == 0 and all(e.failed == 0 for e in report.encoders.values())
    return {"wall_s": wall, "cpu_s": cpu, "clips": report.decoded}


def bench_per_encoder(root, template, encoders, args) -> dict:
    from extractors import extract

    store = fresh_store(root, template, "per_encoder")
    passes, cpu0 = {}, cpu_seconds()
    for ref in encoders:
        name = ref.split(":")[0]
        t0 = time.perf_counter()
        extract(store, [ref], workers=args.workers, batch_size=args.batch_size, device=args.device,
                tokens={k: v for k, v in args.tokens.items() if k == name}, progress=False)
        passes[name] = time.perf_counter() - t0
    return {"wall_s": sum(passes.values()), "cpu_s": cpu_seconds() - cpu0, "passes_s": passes}


def bench_split(root, template, encoders, args) -> dict:
    """Decode-only (workers, no encoders) and encode-only (pre-decoded inputs) passes."""
    from extractors.encoders.base import resolve_device
    from extractors.media import MediaConfig
    from extractors.pipeline import (
        BatchWriter, ExtractConfig, ExtractReport, EncoderReport, Job, load_encoders,
        prepared,
    )
    from featurestore.features import spec_fingerprint

    store = fresh_store(root, template, "split")
    device = resolve_device(args.device)
    loaded = load_encoders(encoders, device, args.tokens)
    cfg = ExtractConfig(encoders, device, args.batch_size, args.workers, "float16", args.tokens, MediaConfig())
    rows = store.clips(columns=["clip_id", "uri", "subtitle"]).to_dicts()
    needs = tuple(dict.fromkeys(e.need for e in loaded))
    names = tuple(e.name for e in loaded)
    jobs = [Job(r["clip_id"], r["uri"], r["subtitle"], needs, names) for r in rows]

    t0, cpu0 = time.perf_counter(), cpu_seconds()  # the worker stage: decode, faces, peak + in-worker encoders
    items = list(prepared(jobs, cfg.media, args.workers, worker_encoders=loaded))
    decode_s, decode_cpu = time.perf_counter() - t0, cpu_seconds() - cpu0  # workers reaped: counted

    specs = {e.name: e.spec(cfg.dtype, cfg.media) for e in loaded}
    report = ExtractReport(encoders={e.name: EncoderReport(spec_fingerprint(specs[e.name])) for e in loaded})
    writer = BatchWriter(store, loaded, specs, cfg, report)
    import torch

    from extractors.workers import cores

    threads = torch.get_num_threads()
    if device == "cpu" and args.workers:  # as the pipeline: the cores the workers leave
        torch.set_num_threads(max(1, cores() - args.workers))
    t0, cpu0 = time.perf_counter(), cpu_seconds()
    for start in range(0, len(items), args.batch_size):
        writer.flush(items[start : start + args.batch_size])
    encode_s, encode_cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    torch.set_num_threads(threads)
    return {"decode_only_s": decode_s, "encode_only_s": encode_s,
            "decode_cpu_s": decode_cpu, "encode_cpu_s": encode_cpu}


def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and its reaped children."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class WorkerPeak:
    """Samples the peak RSS (VmHWM, Linux) of this process's children while it runs.

    ``getrusage(RUSAGE_CHILDREN)`` is no use here: a spawned worker is forked from this
    process before it execs, so it would report the parent's size.
    """

    def __init__(self, every_s: float = 0.2):
        import threading

        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every_s,), daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self, every_s: float) -> None:
        me = str(os.getpid())
        while not self._stop.wait(every_s):
            for stat in Path("/proc").glob("[0-9]*/stat"):
                try:
                    if stat.read_text().rsplit(")", 1)[1].split()[1] != me:  # field 4: ppid
                        continue
                    for line in (stat.parent / "status").read_text().splitlines():
                        if line.startswith("VmHWM:"):
                            self.peak_kib = max(self.peak_kib, int(line.split()[1]))
                except (OSError, IndexError, ValueError):
                    continue  # the process ended meanwhile


def rss_child(store_uri: str, args) -> None:
    """(Subprocess) extract a store built by the parent; print peak RSS in MiB."""
    from extractors import extract
    from featurestore import Store

    with WorkerPeak() as workers:
        report = extract(Store(store_uri), args.encoders, workers=args.workers,
                         batch_size=args.batch_size, device=args.device, tokens=args.tokens,
                         progress=False)
    print(json.dumps({
        "clips": report.decoded,
        "peak_rss_mib": round(own_peak_kib() / 1024, 1),
        "peak_worker_rss_mib": round(workers.peak_kib / 1024, 1),
        "seconds": round(report.seconds, 1),
    }))


def own_peak_kib() -> int:
    """This process's peak RSS (VmHWM). Not ``ru_maxrss``: Linux carries that across exec,
    so a child started from a large parent would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # not Linux: the best there is


def bench_rss(root: Path, args) -> dict:
    out = {}
    for n in (args.rss_small, args.rss_large):
        store = make_store(root / f"rss{n}", n)
        cmd = [sys.executable, __file__, "--rss-child", store.uri, "--workers", str(args.workers),
               "--batch-size", str(args.batch_size), "--device", args.device,
               "--encoders", ",".join(args.encoders)]
        if args.tokens:
            cmd += ["--tokens", ",".join(f"{k}={v}" for k, v in args.tokens.items())]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out[n] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def large_encoders(root: Path) -> list[str]:
    """Real-sized random-weight checkpoints saved to disk (GPU benchmark; no hub needed)."""
    import torch
    from transformers import HubertConfig, HubertModel, VideoMAEConfig, VideoMAEModel, ViTMAEConfig, ViTMAEModel

    torch.manual_seed(0)
    refs = []
    for name, model in (
        ("hubert", HubertModel(HubertConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                            intermediate_size=4096, feat_extract_norm="layer",
                                            do_stable_layer_norm=True))),
        ("mae", ViTMAEModel(ViTMAEConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                         intermediate_size=4096, mask_ratio=0.0))),
        ("videomae", VideoMAEModel(VideoMAEConfig(hidden_size=1024, num_hidden_layers=24,
                                                  num_attention_heads=16, intermediate_size=4096))),
    ):
        model.save_pretrained(root / f"w_{name}")
        refs.append(f"{name}:{root / f'w_{name}'}")
    import timm
    from timm.models import save_for_hf

    eva = timm.create_model("eva_giant_patch14_clip_224", pretrained=False, num_classes=0)
    save_for_hf(eva, str(root / "w_eva"), model_args={"num_classes": 0}, safe_serialization=True)
    refs.append(f"eva:{root / 'w_eva'}")
    return refs + ["egemaps"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=105)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--rss-small", type=int, default=20)
    parser.add_argument("--rss-large", type=int, default=200)
    parser.add_argument("--encoders", default=",".join(TINY))
    parser.add_argument("--tokens", default="")
    parser.add_argument("--large", action="store_true", help="real-sized random weights (GPU)")
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--only-rss", action="store_true", help="only the peak-RSS runs (quick)")
    parser.add_argument("--json", type=Path, default=None, help="also save the figures here")
    parser.add_argument("--rss-child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.encoders = [e for e in args.encoders.split(",") if e]
    args.tokens = {k: int(v) for k, v in (p.split("=") for p in args.tokens.split(",") if p)}
    if args.rss_child:
        rss_child(args.rss_child, args)
        return
    if min(args.clips, args.rss_small, args.rss_large, args.batch_size) < 1 or args.workers < 0:
        parser.error("--clips, --rss-small, --rss-large and --batch-size must be >= 1, --workers >= 0")
    if args.only_rss:
        with tempfile.TemporaryDirectory() as tmp:
            rss = bench_rss(Path(tmp), args)
        figures = {"rss": rss, **rss_figures(rss, args), "load_avg_1m": round(os.getloadavg()[0], 2)}
        print_targets(targets(figures, args))
        emit_json(figures, args.json)
        return

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.large:
            args.encoders = large_encoders(root)
        template = make_store(root / "template", args.clips)
        from extractors.pipeline import load_encoders
        from extractors.encoders.base import resolve_device

        load_encoders(args.encoders, resolve_device(args.device), args.tokens)  # warm imports
        once = bench_pipeline(root, template, args.encoders, args)
        per = bench_per_encoder(root, template, args.encoders, args)
        split = bench_split(root, template, args.encoders, args)
        rss = {} if args.skip_rss else bench_rss(root, args)

    bound = max(split["decode_only_s"], split["encode_only_s"])
    cpu_bound = (split["decode_cpu_s"] + split["encode_cpu_s"]) / (os.cpu_count() or 1)
    figures = {
        "clips": once["clips"],
        "cpu_count": os.cpu_count(),
        "workers": args.workers,
        "batch_size": args.batch_size,
        "encoders": [e if ":" not in e or not e.split(":", 1)[1].startswith("/") else e.split(":")[0] + ":<large random>"
                     for e in args.encoders],
        "decode_once_s": round(once["wall_s"], 2),
        "decode_once_clips_per_s": round(once["clips"] / once["wall_s"], 2),
        "per_encoder_passes_s": round(per["wall_s"], 2),
        "per_encoder_pass_s": {k: round(v, 2) for k, v in per["passes_s"].items()},
        "speedup_vs_per_encoder": round(per["wall_s"] / once["wall_s"], 2),
        # The same ratio in CPU seconds: the work saved, whatever the scheduling. The wall
        # speed-up cannot pass it by much: it is the ceiling of decode-once on these clips.
        "cpu_s_per_encoder_passes": round(per["cpu_s"], 2),
        "cpu_s_decode_once": round(once["cpu_s"], 2),
        "cpu_speedup_vs_per_encoder": round(per["cpu_s"] / once["cpu_s"], 2),
        "decode_only_s": round(split["decode_only_s"], 2),
        "encode_only_s": round(split["encode_only_s"], 2),
        "overlap_ratio": round(once["wall_s"] / bound, 3),
        "decode_cpu_s": round(split["decode_cpu_s"], 2),
        "encode_cpu_s": round(split["encode_cpu_s"], 2),
        "cpu_bound_s": round(cpu_bound, 2),
        "pipeline_vs_cpu_bound": round(once["wall_s"] / max(bound, cpu_bound), 3),
        "rss": rss,
    }
    if rss:
        small, large = rss[args.rss_small], rss[args.rss_large]
        figures.update(rss_figures(rss, args))
    print("| figure | value |")  # the targets follow in their own table
    print("|---|---|")
    print(f"| decode-once pipeline ({figures['clips']} clips) | {figures['decode_once_s']} s "
          f"({figures['decode_once_clips_per_s']} clips/s) |")
    print(f"| per-encoder passes (baseline) | {figures['per_encoder_passes_s']} s |")
    print(f"| speed-up vs per-encoder passes | {figures['speedup_vs_per_encoder']}x |")
    print(f"| CPU seconds per-encoder passes / decode-once (work saved) | "
          f"{figures['cpu_s_per_encoder_passes']} / {figures['cpu_s_decode_once']} s = "
          f"{figures['cpu_speedup_vs_per_encoder']}x |")
    print(f"| decode-only / encode-only | {figures['decode_only_s']} s / {figures['encode_only_s']} s |")
    print(f"| pipeline / max(decode-only, encode-only) | {figures['overlap_ratio']} |")
    print(f"| CPU seconds decode / encode -> bound on {figures['cpu_count']} cores | "
          f"{figures['decode_cpu_s']} / {figures['encode_cpu_s']} -> {figures['cpu_bound_s']} s |")
    print(f"| pipeline / max(decode-only, encode-only, CPU bound) | {figures['pipeline_vs_cpu_bound']} |")
    if rss:
        print(f"| peak RSS main, {args.rss_small} -> {args.rss_large} clips | "
              f"{small['peak_rss_mib']} -> {large['peak_rss_mib']} MiB ({figures['rss_growth']:+.1%}) |")
        print(f"| peak RSS worker, {args.rss_small} -> {args.rss_large} clips | "
              f"{small['peak_worker_rss_mib']} -> {large['peak_worker_rss_mib']} MiB "
              f"({figures['worker_rss_growth']:+.1%}) |")
    print_targets(targets(figures, args))
    emit_json(figures, args.json)


def rss_figures(rss: dict, args) -> dict:
    small, large = rss[args.rss_small], rss[args.rss_large]
    return {"rss_growth": round(large["peak_rss_mib"] / small["peak_rss_mib"] - 1, 3),
            "worker_rss_growth": round(large["peak_worker_rss_mib"] / small["peak_worker_rss_mib"] - 1, 3),
            "peak_rss_main_mib": max(small["peak_rss_mib"], large["peak_rss_mib"])}


def targets(figures: dict, args) -> list[tuple]:
    """Issue 19's targets for the figures measured."""
    rows = []
    if "speedup_vs_per_encoder" in figures:
        rows += [("decode-once vs per-encoder passes", f"{figures['speedup_vs_per_encoder']}x", ">= 2.5x",
                  figures["speedup_vs_per_encoder"] >= 2.5),
                 ("pipeline / max(decode-only, encode-only)", figures["overlap_ratio"], "<= 1.15",
                  figures["overlap_ratio"] <= 1.15)]
    if "rss_growth" in figures:
        rows += [(f"main peak RSS growth {args.rss_small} -> {args.rss_large} clips",
                  f"{figures['rss_growth']:+.1%}", "< +20%", figures["rss_growth"] < 0.2),
                 ("main peak RSS (MiB)", figures["peak_rss_main_mib"], "<= 800",
                  figures["peak_rss_main_mib"] <= 800)]
    return rows


if __name__ == "__main__":
    main()
