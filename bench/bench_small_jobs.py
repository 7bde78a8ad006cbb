"""Benchmark: a small CPU-only extraction job against a plain one-process openSMILE loop.

The shared wavs (../shared/data, read in place) are linked (not copied) ``--repeat`` times
into a temp folder (72 wavs x 7 = 504 files by default) and ingested. Then, in this one
invocation and on the same files:

* baseline: one process, ``opensmile.Smile(eGeMAPSv02, Functionals).process_file`` per
  file, nothing else (what a user would script by hand);
* ``emofs extract --encoders egemaps`` in a fresh process (``python -m`` the CLI, so
  imports and worker start count), ``--workers auto``; its report (workers, the
  bottleneck line) is kept.

Each is run ``--runs`` times (best kept). Target on 2 cores: extract >= 1.8x the loop.
Prints a markdown table and a JSON object (``--json PATH`` saves it).

Usage:
    python bench/bench_small_jobs.py [--repeat 7] [--runs 2] [--workers auto] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchlib import emit_json, print_figures, print_targets  # noqa: E402
SHARED = (REPO / ".." / "shared" / "data").resolve()


def link_wavs(folder: Path, repeat: int) -> list[Path]:
    wavs = sorted(SHARED.rglob("*.wav"))
    if not wavs:
        sys.exit(f"no wavs under {SHARED}: the benchmark needs ../shared/data")
    links = []
    for r in range(repeat):
        for i, wav in enumerate(wavs):
            link = folder / f"rep{r:02d}" / f"{i:03d}_{wav.name}"
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(wav, link)
            links.append(link)
    return links


def plain_loop(files: list[Path]) -> float:
    import opensmile

    t = time.perf_counter()
    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                            feature_level=opensmile.FeatureLevel.Functionals)
    for f in files:
        smile.process_file(str(f))
    return time.perf_counter() - t


def extract_cli(store: Path, workers: str) -> tuple[float, dict]:
    cmd = [sys.executable, "-c", "from cli import app; app()", "extract", "--encoders", "egemaps",
           "--store", str(store), "--workers", workers, "--json"]
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"emofs extract failed: {proc.stderr[-2000:]}")
    return wall, json.loads(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="links per shared wav (>= 1)")
    parser.add_argument("--runs", type=int, default=2, help="runs of each side (>= 1; best kept)")
    parser.add_argument("--workers", default="auto")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.repeat < 1 or args.runs < 1:
        parser.error("--repeat and --runs must be >= 1")

    from extractors import ingest
    from featurestore import Store
    from featurestore.schema import CLIPS

    with tempfile.TemporaryDirectory(prefix="emofs-bench-small-") as tmp:
        root = Path(tmp)
        files = link_wavs(root / "wavs", args.repeat)
        template = Store(root / "template")
        ingest([root / "wavs"], template, progress=False)
        loops, runs = [], []
        for k in range(args.runs):  # interleaved: both sides see the same machine load
            loops.append(plain_loop(files))
            target = root / f"store{k}"
            shutil.copytree(Path(template.uri) / CLIPS, target / CLIPS)
            runs.append(extract_cli(target, args.workers))
        wall, report = min(runs, key=lambda r: r[0])
    loop_s = min(loops)
    figures = {
        "files": len(files), "cpu_count": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
        "plain_loop_s": round(loop_s, 2), "plain_loop_runs_s": [round(x, 2) for x in loops],
        "extract_s": round(wall, 2), "extract_runs_s": [round(r[0], 2) for r in runs],
        "speedup_vs_loop": round(loop_s / wall, 2),
        "extract_workers": report["workers"], "extracted": report["encoders"]["egemaps"]["extracted"],
        "waiting_s": report["waiting_s"], "encoding_s": report["encoding_s"],
        "bottleneck": report["bottleneck"],
    }
    print_figures(figures)
    print_targets([("extract vs plain loop", f"{figures['speedup_vs_loop']}x", ">= 1.8x",
                    figures["speedup_vs_loop"] >= 1.8)])
    emit_json(figures, args.json)


if __name__ == "__main__":
    main()
