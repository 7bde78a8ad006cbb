"""Benchmark: emofs FAISS index kinds vs numpy brute force vs Lance's own IVF_PQ search.

Data: clustered synthetic vectors (a Gaussian mixture around ``--centroids`` centres, each
cluster spread over a low-rank subspace, plus isotropic noise), L2-normalised, d=1024.
Queries are held-out draws from the same mixture. Ground truth is exact cosine top-10.

Measured per method: build time, p50/p99 single-query latency (one query at a time, as
`emofs similar` does), batch queries/s, recall@10 against exact. The emofs kinds are built
and tuned by the library's own code (featurestore.index) and searched through
featurestore.index.search_index, the path `emofs similar` takes.

Usage::

    python bench/bench_index.py --rows 100000                  # markdown + JSON on stdout
    python bench/bench_index.py --rows 1000000 --json-out bench/index_1m.json

The machine is shared while this runs: compare the ratios (printed against numpy in the
same process), not absolute figures across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("LANCE_LOG", "error")  # Lance's per-query deprecation chatter
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

K = 10


def make_data(n: int, dim: int, centroids: int, queries: int, seed: int = 0,
              spread: float = 0.25, noise: float = 0.1):
    """Clustered unit vectors ``(n, dim)`` and held-out queries ``(queries, dim)``."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((centroids, dim), dtype=np.float32)  # (C, D)
    rank = 32
    basis = rng.standard_normal((rank, dim), dtype=np.float32) * (spread / np.sqrt(rank))  # (R, D)

    def draw(count: int) -> np.ndarray:
        out = np.empty((count, dim), dtype=np.float32)
        for start in range(0, count, 50_000):
            m = min(50_000, count - start)
            which = rng.integers(0, centroids, size=m)
            x = centres[which]  # (m, D)
            x += rng.standard_normal((m, rank), dtype=np.float32) @ basis
            x += noise * rng.standard_normal((m, dim), dtype=np.float32)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            out[start : start + m] = x
        return out

    return draw(n), draw(queries)


def exact_topk(data: np.ndarray, queries: np.ndarray, k: int = K) -> np.ndarray:
    """Exact top-k rows by inner product, blockwise (``(Q, k)``)."""
    best_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), k), dtype=np.int64)
    for start in range(0, len(data), 100_000):
        block = data[start : start + 100_000]
        scores = queries @ block.T  # (Q, B)
        idx = np.argpartition(-scores, k, axis=1)[:, :k]
        s = np.take_along_axis(scores, idx, axis=1)
        cat_s = np.concatenate([best_s, s], axis=1)
        cat_i = np.concatenate([best_i, idx + start], axis=1)
        order = np.argsort(-cat_s, axis=1)[:, :k]
        best_s = np.take_along_axis(cat_s, order, axis=1)
        best_i = np.take_along_axis(cat_i, order, axis=1)
    return best_i


def recall(found: list[list[int]], truth: np.ndarray) -> float:
    hits = sum(len(set(f[:K]) & set(t.tolist())) for f, t in zip(found, truth))
    return hits / (min(len(found), len(truth)) * K)


def latency(fn, queries: np.ndarray, repeat: int) -> tuple[float, float, list[list[int]]]:
    """p50 / p99 milliseconds of ``fn(q)`` over single queries, and its results."""
    fn(queries[0])  # warm-up
    times, results = [], []
    for q in queries[:repeat]:
        t0 = time.perf_counter()
        results.append(fn(q))
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99)), results


def bench_numpy(data, queries, truth, repeat):
    def one(q):
        s = data @ q  # (N,)
        idx = np.argpartition(-s, K)[:K]
        return idx[np.argsort(-s[idx])].tolist()

    p50, p99, res = latency(one, queries, repeat)
    t0 = time.perf_counter()
    exact_topk(data, queries)
    qps = len(queries) / (time.perf_counter() - t0)
    return {"method": "numpy brute force", "build_s": 0.0, "p50_ms": p50, "p99_ms": p99,
            "batch_qps": qps, "recall@10": recall(res, truth), "params": {}}


def bench_faiss(kind, data, queries, truth, repeat, threads):
    import faiss

    from featurestore.index import (
        IndexConfig,
        LoadedIndex,
        add_vectors,
        new_index,
        search_index,
        train_index,
        tune_search,
    )

    faiss.omp_set_num_threads(threads)
    config = IndexConfig(["bench"], kind=kind)
    params: dict = {}
    t0 = time.perf_counter()
    index = new_index(kind, data.shape[1], len(data), config, params)
    train_index(index, kind, data, f"bench {kind}")
    add_vectors(index, data, f"bench {kind}", progress=False)
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    tune_search(index, kind, data, config.recall, params)
    tune = time.perf_counter() - t0
    loaded = LoadedIndex("bench", index, [], {"kind": kind, "params": params})
    faiss.omp_set_num_threads(1)  # one query at a time: no OpenMP fan-out

    def one(q):
        return [r for r, _ in search_index(loaded, q, K)]

    p50, p99, res = latency(one, queries, repeat)
    faiss.omp_set_num_threads(threads)
    t0 = time.perf_counter()
    _, found = index.search(queries, K)  # (Q, K)
    qps = len(queries) / (time.perf_counter() - t0)
    out = {"method": f"emofs faiss {kind}", "build_s": build, "tune_s": tune, "p50_ms": p50,
           "p99_ms": p99, "batch_qps": qps, "recall@10": recall(res, truth),
           "batch_recall@10": recall(found.tolist(), truth), "params": params}
    del index, loaded
    return out


def bench_lance(data, queries, truth, repeat, workdir: Path):
    import lance
    import pyarrow as pa

    dim = data.shape[1]
    uri = str(workdir / "vectors.lance")
    t0 = time.perf_counter()
    table = pa.table({"id": pa.array(np.arange(len(data))),
                      "vector": pa.FixedSizeListArray.from_arrays(pa.array(data.reshape(-1)), dim)})
    ds = lance.write_dataset(table, uri, mode="overwrite")
    del table
    partitions = max(1, int(np.sqrt(len(data))))
    ds.create_index("vector", index_type="IVF_PQ", metric="cosine", num_partitions=partitions,
                    num_sub_vectors=dim // 16)
    build = time.perf_counter() - t0
    ds = lance.dataset(uri)
    rows = []
    for label, extra in (("defaults", {}), ("nprobes=64 refine=10", {"nprobes": 64, "refine_factor": 10})):
        def one(q, extra=extra):
            t = ds.to_table(columns=["id"], nearest={"column": "vector", "q": q, "k": K, **extra})
            return t.column("id").to_pylist()

        p50, p99, res = latency(one, queries, repeat)
        t0 = time.perf_counter()
        for q in queries[: min(len(queries), 200)]:
            one(q)
        qps = min(len(queries), 200) / (time.perf_counter() - t0)
        rows.append({"method": f"lance IVF_PQ ({label})", "build_s": build, "p50_ms": p50,
                     "p99_ms": p99, "batch_qps": qps, "recall@10": recall(res, truth),
                     "params": {"num_partitions": partitions, "num_sub_vectors": dim // 16, **extra}})
    return rows


def markdown(rows: list[dict], numpy_p50: float) -> str:
    lines = ["| method | build s | p50 ms | p99 ms | x numpy (p50) | batch q/s | recall@10 | params |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['build_s']:.1f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | "
            f"{numpy_p50 / r['p50_ms']:.1f} | {r['batch_qps']:.0f} | {r['recall@10']:.3f} | "
            f"{json.dumps(r.get('params', {}), sort_keys=True)} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--centroids", type=int, default=None, help="default: rows / 50")
    parser.add_argument("--spread", type=float, default=0.25, help="within-cluster low-rank spread")
    parser.add_argument("--noise", type=float, default=0.1, help="isotropic noise per dim")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=300, help="single queries timed")
    parser.add_argument("--kinds", default="flat,ivf,hnsw")
    parser.add_argument("--no-lance", action="store_true")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args(argv)

    centroids = args.centroids or max(10, args.rows // 50)
    t0 = time.perf_counter()
    data, queries = make_data(args.rows, args.dim, centroids, args.queries, spread=args.spread,
                              noise=args.noise)
    truth = exact_topk(data, queries)
    print(f"data: {args.rows} x {args.dim}, {centroids} centroids, {args.queries} queries "
          f"({time.perf_counter() - t0:.1f}s); cores: {os.cpu_count()}", file=sys.stderr, flush=True)
    rows = [bench_numpy(data, queries, truth, args.repeat)]
    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    for kind in [k for k in args.kinds.split(",") if k]:
        rows.append(bench_faiss(kind, data, queries, truth, args.repeat, args.threads))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    if not args.no_lance:
        workdir = Path(tempfile.mkdtemp(prefix="emofs-bench-"))
        try:
            rows.extend(bench_lance(data, queries, truth, args.repeat, workdir))
            print(json.dumps(rows[-2:]), file=sys.stderr, flush=True)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    numpy_p50 = rows[0]["p50_ms"]
    result = {"rows": args.rows, "dim": args.dim, "centroids": centroids, "queries": args.queries,
              "spread": args.spread, "noise": args.noise,
              "cores": os.cpu_count(), "results": rows}
    print(markdown(rows, numpy_p50))
    print(json.dumps(result))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
