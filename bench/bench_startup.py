"""Benchmark: start cost of each command (what a user waits for before any work).

Builds a small synthetic store in a temp dir (``--clips`` clips, two feature sets, a flat
FAISS index over the first) and runs each command in a fresh process, as a user would:

* ``emofs --help``, ``emofs info``, ``emofs similar CLIP`` (process start to answer; warm:
  the store's saved clip metadata is current; and after a change: none saved, so the
  search opens Lance),
  ``emofs train head`` (process start to the first training step, from its ``--json``
  timings, plus the process' wall time);
* each command also once under ``python -X importtime``: its import seconds (every
  module's self time summed), the slowest top-level imports, and which heavy libraries
  (torch, lightning, transformers, faiss, lance, polars, ...) it loaded at all.

Wall times are the median of ``--repeat`` runs. Targets (2 cores): ``similar`` <= 0.5 s;
first training step < 5 s (aim 2 s). Prints a markdown table and a JSON object
(``--json PATH`` saves it).

Usage:
    python bench/bench_startup.py
    python bench/bench_startup.py --repeat 5 --trainer lightning --json /tmp/startup.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchlib import emit_json, print_targets  # noqa: E402

from featurestore import Store  # noqa: E402
from featurestore.features import write_features  # noqa: E402
from featurestore.versioned import CACHE_DIR  # noqa: E402

HEAVY = ("torch", "lightning", "transformers", "faiss", "lance", "polars", "pyarrow", "av",
         "opensmile", "sklearn", "matplotlib", "pandas", "scipy")
LABELS = ["angry", "happy", "neutral", "sad"]
LAUNCH = [sys.executable, "-c", "from cli import app; app()"]


def build(root: Path, n: int, dim: int) -> tuple[Store, list[str]]:
    """Synthetic labelled store with two feature sets and a flat index over ``enc0``."""
    from featurestore.index import IndexConfig, build_index

    rng = np.random.default_rng(0)
    store = Store(root / "store")
    ids = [f"clip{i:05d}" for i in range(n)]
    cls = rng.integers(0, len(LABELS), n)
    store.upsert_clips(pa.table({"clip_id": ids, "label": [LABELS[c] for c in cls],
                                 "speaker": [f"spk{i % 10}" for i in range(n)]}))
    names = ["enc0", "enc1"]
    for name in names:
        means = rng.normal(0, 1, (len(LABELS), dim)).astype(np.float32)
        x = (means[cls] + rng.normal(0, 2.0, (n, dim))).astype(np.float16)
        write_features(store, name, ids, x, {"weights": f"synthetic-{name}", "dim": dim})
    build_index(store, IndexConfig(encoders=["enc0"], kind="flat"))
    return store, names


def run(args: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess]:
    t = time.perf_counter()
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args[3:])} failed: {proc.stderr[-2000:]}")
    return wall, proc


def import_profile(argv: list[str], env: dict[str, str], top: int = 6) -> dict:
    """``python -X importtime``: total import seconds, slowest top-level imports, heavy ones."""
    proc = subprocess.run([sys.executable, "-X", "importtime", *LAUNCH[1:], *argv], cwd=REPO,
                          capture_output=True, text=True, env=env)
    total, roots, loaded = 0, [], set()
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if not m:
            continue
        self_us, cum_us, indent, name = int(m[1]), int(m[2]), len(m[3]), m[4]
        total += self_us
        loaded.add(name.split(".")[0])
        if indent == 1:  # imported by the command itself (not by another module)
            roots.append((cum_us, name))
    roots.sort(reverse=True)
    return {"import_s": round(total / 1e6, 3),
            "slowest_imports": {name: round(us / 1e6, 3) for us, name in roots[:top]},
            "heavy_loaded": sorted(h for h in HEAVY if h in loaded)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=500, help="clips in the synthetic store (>= 40)")
    parser.add_argument("--dim", type=int, default=88)
    parser.add_argument("--repeat", type=int, default=3, help="fresh processes per command (median)")
    parser.add_argument("--trainer", default=None, help="pass --trainer to `train head` (default: its own)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.clips < 40 or args.repeat < 1 or args.dim < 1:
        parser.error("--clips must be >= 40 (three non-empty splits), --repeat and --dim >= 1")

    env = {**os.environ, "EMOFS_NO_COLOR": "1"}
    with tempfile.TemporaryDirectory(prefix="emofs-bench-startup-") as tmp:
        root = Path(tmp)
        store, names = build(root, args.clips, args.dim)
        query = "clip00007"
        commands = {
            "help": ["--help"],
            "info": ["info", "--store", store.uri],
            "similar": ["similar", query, "-k", "5", "--store", store.uri],
        }
        figures: dict[str, dict] = {}
        for key, argv in commands.items():
            run(LAUNCH + argv, env)  # warm the page cache (and the store's .emofs-cache)
            walls = [run(LAUNCH + argv, env)[0] for _ in range(args.repeat)]
            figures[key] = {"wall_s": round(statistics.median(walls), 3),
                            "wall_min_s": round(min(walls), 3), **import_profile(argv, env)}
        # The first search after the clips changed has no saved clip metadata: it opens Lance.
        walls = []
        for _ in range(args.repeat):
            shutil.rmtree(Path(store.uri) / CACHE_DIR, ignore_errors=True)
            walls.append(run(LAUNCH + commands["similar"], env)[0])
        shutil.rmtree(Path(store.uri) / CACHE_DIR, ignore_errors=True)
        figures["similar_after_change"] = {"wall_s": round(statistics.median(walls), 3),
                                           "wall_min_s": round(min(walls), 3),
                                           **import_profile(commands["similar"], env)}
        train = ["train", "head", "--encoders", ",".join(names), "--epochs", "1", "--max-steps", "3",
                 "--threads", "1", "--store", store.uri, "--json"]
        if args.trainer:
            train += ["--trainer", args.trainer]
        first, walls = [], []
        for k in range(args.repeat):
            wall, proc = run(LAUNCH + train + ["--out", str(root / f"run{k}")], env)
            walls.append(wall)
            first.append(json.loads(proc.stdout)["timings"]["first_step_s"])
        figures["train_head"] = {
            "first_step_s": round(statistics.median(first), 3), "first_step_min_s": round(min(first), 3),
            "wall_s": round(statistics.median(walls), 3),
            **import_profile(train + ["--out", str(root / "run-importtime")], env)}

    out = {"clips": args.clips, "dim": args.dim, "repeat": args.repeat, "trainer": args.trainer or "default",
           "cpu_count": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2), "commands": figures}
    targets = [("similar: process start to answer (s)", figures["similar"]["wall_s"], "<= 0.5",
                figures["similar"]["wall_s"] <= 0.5),
               ("train head: start to first step (s)", figures["train_head"]["first_step_s"], "< 5 (aim 2)",
                figures["train_head"]["first_step_s"] < 5)]
    print("\n| command | wall s | import s | heavy libraries loaded |\n|---|---|---|---|")
    for key, f in figures.items():
        wall = f"{f['wall_s']}" + (f" (first step {f['first_step_s']})" if "first_step_s" in f else "")
        print(f"| {key} | {wall} | {f['import_s']} | {', '.join(f['heavy_loaded'])} |")
    print_targets(targets)
    emit_json(out, args.json)


if __name__ == "__main__":
    main()
