"""Benchmark: an extraction's store writes, batch after batch, with and without compaction.

``emofs extract`` commits every batch: one ``merge_insert`` per feature set plus one on
``clips.lance`` (peak frame, face ratio). Each commit adds a fragment, and a merge_insert
reads the key column of every fragment, so without compaction the cost of a commit grows
with the number of batches already written (quadratic in all). This script replays that
write pattern (``--clips`` new clips in batches of ``--batch``, a ``--dim`` float16 feature
set) into two fresh stores in the same process, with the tiered compaction of
``featurestore.compaction`` and with it switched off, and reports the total write time,
the cost of the last commits, the fragments left and the time to read the set back.

Usage:
    python bench/bench_writes.py [--clips 10000] [--batch 16] [--dim 1024]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from featurestore.compaction import FRAGMENTS_PER_TIER as DEFAULT_PER_TIER  # noqa: E402


def replay(root: Path, args, compact: bool) -> dict:
    """Write ``args.clips`` clips batch by batch into a new store at ``root``; timings."""
    from featurestore import Store, compaction
    from featurestore.features import features_name, read_features, write_features
    from featurestore.schema import CLIPS

    compaction.FRAGMENTS_PER_TIER = DEFAULT_PER_TIER if compact else 1 << 40
    store = Store(root)
    ids = [f"clip{i:07d}" for i in range(args.clips)]
    store.upsert_clips(pa.table({"clip_id": ids}))  # as ingest leaves it: one fragment
    rng = np.random.default_rng(0)
    spec = {"encoder": "bench", "dim": args.dim}
    commits = []
    started = time.perf_counter()
    for start in range(0, args.clips, args.batch):
        batch = ids[start : start + args.batch]
        t0 = time.perf_counter()
        write_features(store, "bench", batch, rng.standard_normal((len(batch), args.dim)), spec)
        store.upsert_clips(pa.table({"clip_id": batch, "peak_frame": pa.array([7] * len(batch), pa.int32())}))
        commits.append(time.perf_counter() - t0)
    total = time.perf_counter() - started
    t0 = time.perf_counter()
    got = read_features(store, "bench")
    read_s = time.perf_counter() - t0
    assert len(got.clip_ids) == len(set(got.clip_ids)) == args.clips
    tail = commits[-max(1, len(commits) // 20):]
    return {
        "write_s": round(total, 2),
        "first_batches_ms": round(1000 * float(np.mean(commits[:20])), 1),
        "last_batches_ms": round(1000 * float(np.mean(tail)), 1),
        "fragments": {"features": len(store.dataset(features_name("bench")).get_fragments()),
                      "clips": len(store.dataset(CLIPS).get_fragments())},
        "read_features_s": round(read_s, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--dim", type=int, default=1024)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        without = replay(Path(tmp) / "off", args, compact=False)
        tiered = replay(Path(tmp) / "on", args, compact=True)
    figures = {"clips": args.clips, "batch": args.batch, "dim": args.dim,
               "no_compaction": without, "tiered_compaction": tiered,
               "write_speedup": round(without["write_s"] / tiered["write_s"], 2),
               "last_batch_speedup": round(without["last_batches_ms"] / tiered["last_batches_ms"], 2),
               "read_speedup": round(without["read_features_s"] / tiered["read_features_s"], 2)}
    print(json.dumps(figures, indent=1))
    print("\n| | no compaction | tiered compaction | ratio |\n|---|---|---|---|")
    for key, label in (("write_s", "all writes, s"), ("first_batches_ms", "first 20 batches, ms each"),
                       ("last_batches_ms", "last 5% of batches, ms each"),
                       ("read_features_s", "read the set back, s")):
        print(f"| {label} | {without[key]} | {tiered[key]} | {without[key] / tiered[key]:.2f}x |")
    print(f"| fragments left (features, clips) | {without['fragments']['features']}, "
          f"{without['fragments']['clips']} | {tiered['fragments']['features']}, {tiered['fragments']['clips']} | |")


if __name__ == "__main__":
    main()
