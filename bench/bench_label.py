"""Benchmark `emofs label`: clips/s end to end with the local and the Ray engine.

Builds an archive of the shared real clips repeated to >= ``--clips`` (copies under distinct
names, so every one is a new clip), trains a few-step ``egemaps`` head once, then labels the
archive into a fresh store with each engine (ingest + extract + predict + --out), each in
its own child process. Peak memory: the driver's ru_maxrss, and the peak of the summed RSS
of the whole process tree (driver + decoders, or driver + raylet + Ray workers), sampled
every 0.1 s.

    python bench/bench_label.py --clips 120 [--json]

Prints a markdown table (or JSON): seconds, clips/s, stage timings, peak RSS, and the
Ray/local ratio measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHARED = (REPO / ".." / "shared" / "data").resolve()

_CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {repo!r})
t0 = time.perf_counter()
engine = {engine!r}
if engine == "ray":
    import ray
    ray.init(address="local", num_cpus={cpus}, include_dashboard=False, configure_logging=False)
    ready = time.perf_counter() - t0
else:
    ready = 0.0
from featurestore import Store
from workflows.label import label
rep = label([{archive!r}], Store({store!r}), {run!r}, engine=engine, batch_size={batch},
            workers={workers}, out={out!r}, progress=False)
wall = time.perf_counter() - t0
if engine == "ray":
    import ray
    ray.shutdown()
self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
kids_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print("RESULT " + json.dumps({{"report": rep.as_dict(), "wall_s": wall, "ray_init_s": ready,
                               "driver_peak_mb": self_kb / 1024, "child_peak_mb": kids_kb / 1024}}))
"""


def _archive(root: Path, n: int) -> Path:
    wavs = sorted((SHARED / "ravdess_actor05" / "wav").glob("*.wav")) + sorted(
        (SHARED / "crema_d" / "wav16k").glob("*.wav"))
    out = root / "archive"
    out.mkdir()
    i = 0
    while i < n:
        src = wavs[i % len(wavs)]
        shutil.copyfile(src, out / f"r{i // len(wavs):02d}_{src.name}")
        i += 1
    return out


def _train(root: Path) -> Path:
    import polars as pl

    from extractors import extract, ingest
    from featurestore import Store
    from heads.config import HeadConfig
    from heads.train import train_head

    wavs = sorted((SHARED / "ravdess_actor05" / "wav").glob("*.wav"))
    train = root / "train"
    train.mkdir()
    for w in wavs:
        shutil.copyfile(w, train / w.name)
    labels = pl.read_csv(SHARED / "labels.csv").with_columns(pl.col("path").str.split("/").list.last())
    labels.filter(pl.col("path").is_in([w.name for w in wavs])).write_csv(root / "labels.csv")
    store = Store(root / "train-store")
    ingest([train], store, labels=root / "labels.csv", progress=False)
    extract(store, ["egemaps"], workers=0, progress=False)
    cfg = HeadConfig(encoders=["egemaps"], epochs=5, hidden=32, batch_size=16, accelerator="cpu", patience=2)
    train_head(store, cfg, out=root / "run", quiet=True)
    return root / "run"


def _run(engine: str, root: Path, archive: Path, run: Path, args) -> dict:
    store = root / f"store-{engine}"
    code = _CHILD.format(repo=str(REPO), engine=engine, cpus=args.cpus, archive=str(archive),
                         store=str(store), run=str(run), batch=args.batch_size, workers=args.workers,
                         out=str(root / f"labels-{engine}.parquet"))
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=root)
    peak = _sample_tree_rss(proc)
    stdout, stderr = proc.communicate()
    elapsed = time.perf_counter() - started
    line = next((l for l in stdout.splitlines() if l.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        raise SystemExit(f"{engine} run failed:\n{stderr[-3000:]}")
    result = json.loads(line[len("RESULT "):])
    result["process_s"] = elapsed
    result["tree_peak_mb"] = peak / 2**20
    return result


def _sample_tree_rss(proc: subprocess.Popen, every: float = 0.1) -> int:
    """Peak of the summed RSS of a process and all its descendants (sampled)."""
    import psutil

    peak = 0
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        total = 0
        try:
            for p in [root, *root.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
        except psutil.NoSuchProcess:
            break
        peak = max(peak, total)
        time.sleep(every)
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=120, help="archive size (>= 100)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="decoding processes (local engine)")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not (SHARED / "labels.csv").is_file():
        raise SystemExit(f"shared clips not found at {SHARED}")
    root = Path(tempfile.mkdtemp(prefix="bench-label-"))
    try:
        archive = _archive(root, args.clips)
        run = _train(root)
        rows = {}
        for engine in ("local", "ray"):
            res = _run(engine, root, archive, run, args)
            rep = res["report"]
            rows[engine] = {
                "engine": engine,
                "clips": rep["clips"],
                "labelled": rep["labelled"],
                "errors": rep["errors"],
                "label_s": rep["seconds"],
                "clips_per_s": rep["clips_per_s"],
                "ingest_s": rep["timings"]["ingest_s"],
                "extract_s": rep["timings"]["extract_s"],
                "predict_s": rep["timings"]["predict_s"],
                "ray_init_s": round(res["ray_init_s"], 2),
                "process_s": round(res["process_s"], 2),
                "driver_peak_mb": round(res["driver_peak_mb"], 1),
                "tree_peak_mb": round(res["tree_peak_mb"], 1),
            }
        ratio = rows["ray"]["clips_per_s"] / rows["local"]["clips_per_s"] if rows["local"]["clips_per_s"] else None
        summary = {"rows": list(rows.values()), "ray_over_local_clips_per_s": round(ratio, 3) if ratio else None,
                   "machine_cpus": args.cpus}
        if args.json:
            print(json.dumps(summary, indent=2))
            return
        cols = list(rows["local"])
        print("| " + " | ".join(cols) + " |")
        print("|" + "---|" * len(cols))
        for row in rows.values():
            print("| " + " | ".join(str(row[c]) for c in cols) + " |")
        print(f"\nRay / local clips/s: {summary['ray_over_local_clips_per_s']}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
