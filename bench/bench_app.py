"""Benchmark: the analyst app's `/api/similar` under concurrent clients, on 127.0.0.1 only.

Builds a synthetic store (``--clips`` rows, default 100k, with clustered 88-d vectors like
eGeMAPS and a FAISS index built by the library), starts ``emofs app`` on a free loopback
port in a child process and drives ``GET /api/similar/{clip_id}?k=10`` from ``--clients``
threads (default 8) for ``--requests`` requests (default 10k; the server's RSS is read
after 1k, 5k and 10k, to show memory stays flat). Baseline, same invocation: the
library call the route makes (``workflows.similar.find_similar``) timed in-process, one at
a time, so the ratio shows what HTTP, JSON and concurrency add.

Also measured: the first and second ``/api/map`` answer over every clip as the page loads
it (``source=index:egemaps&format=bin``: the index's layout, precomputed by the build,
served as one binary answer), the same for a raw feature set (``features:egemaps``,
computed streaming on its first request), the page + ``/api/info`` load, and the server's
RSS before and after the run (also split into anonymous memory and file-backed pages:
the memory-mapped index counts there, shared with the page cache and reclaimable).

``--baseline-json`` names the figures of an earlier run to report ratios against.

Usage::

    python bench/bench_app.py                            # JSON on stdout
    python bench/bench_app.py --clips 20000 --requests 400 --json-out bench/results/app.json

The machine is shared while this runs: read the ratios, not absolute figures across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("LANCE_LOG", "error")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LABELS = ["angry", "happy", "sad", "neutral", "fear", "disgust"]


def build_store(path: Path, n: int, dim: int = 88, seed: int = 0):
    """A store of ``n`` synthetic clips with one clustered feature set and its index."""
    import pyarrow as pa

    from featurestore import Store
    from featurestore.features import write_features
    from featurestore.index import IndexConfig, build_index

    rng = np.random.default_rng(seed)
    store = Store(path)
    ids = [f"synthetic/clip{i:06d}.wav" for i in range(n)]
    which = rng.integers(0, len(LABELS), size=n)
    store.upsert_clips(pa.table({
        "clip_id": ids, "name": [c.split("/")[1][:-4] for c in ids], "rel_path": ids,
        "uri": [f"/nonexistent/{c}" for c in ids], "root": ["/nonexistent"] * n,
        "label": [LABELS[w] for w in which], "split": np.where(rng.random(n) < 0.2, "test", "train").tolist(),
        "has_audio": [True] * n, "has_video": [False] * n, "modality": ["audio"] * n,
        "duration_s": rng.uniform(1, 5, n)}))
    centres = rng.standard_normal((len(LABELS), dim)).astype(np.float32) * 2
    vectors = centres[which] + rng.standard_normal((n, dim)).astype(np.float32)  # (N, D)
    spec = {"encoder": "egemaps", "dim": dim, "weights": "synthetic"}
    for start in range(0, n, 25_000):
        write_features(store, "egemaps", ids[start : start + 25_000], vectors[start : start + 25_000], spec,
                       dtype="float32")
    build_index(store, IndexConfig(["egemaps"]), progress=False)
    return store, ids


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(store_uri: str, port: int) -> subprocess.Popen:
    """``emofs app`` on 127.0.0.1:``port`` in a child process; returns once it answers."""
    import httpx

    cmd = [sys.executable, "-c", "from cli import app; app()", "app", "--store", store_uri,
           "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/info", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the app did not start: " + proc.stderr.read().decode()[-2000:])


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = np.array(samples) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "mean_ms": round(float(ms.mean()), 2), "n": len(samples)}


def drive(base: str, ids: list[str], clients: int, requests: int, seed: int = 1) -> tuple[list[float], float]:
    """``requests`` similar queries from ``clients`` threads; latencies and wall seconds."""
    import httpx

    rng = np.random.default_rng(seed)
    queries = [ids[i] for i in rng.integers(0, len(ids), size=requests)]
    latencies: list[float] = []
    lock = threading.Lock()
    errors: list[str] = []

    def worker(part: list[str]) -> None:
        with httpx.Client(base_url=base, timeout=60) as client:
            for clip in part:
                t0 = time.perf_counter()
                answer = client.get(f"/api/similar/{clip}", params={"k": 10})
                took = time.perf_counter() - t0
                if answer.status_code != 200 or len(answer.json()["results"]) != 10:
                    errors.append(answer.text[:200])
                with lock:
                    latencies.append(took)

    threads = [threading.Thread(target=worker, args=(queries[i::clients],)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{len(errors)} failed requests, e.g. {errors[0]}")
    return latencies, time.perf_counter() - t0


def memory_mb(proc) -> dict[str, float]:
    """The server's RSS, and its anonymous / file-backed parts (Linux), in MB."""
    out = {"rss": round(proc.memory_info().rss / 2**20, 1)}
    try:
        with open(f"/proc/{proc.pid}/status") as status:
            for line in status:
                if line.startswith(("RssAnon", "RssFile")):
                    key, value = line.split(":")
                    out[key.strip().lower()] = round(int(value.split()[0]) / 1024, 1)
    except OSError:
        pass
    return out


def map_load(base: str, source: str, clips: int) -> float:
    """Seconds to fetch (and check) the page's binary map of ``source``."""
    import struct

    import httpx

    t = time.perf_counter()
    answer = httpx.get(base + "/api/map", params={"source": source, "colour": "label", "format": "bin"},
                       timeout=600)
    took = time.perf_counter() - t
    assert answer.status_code == 200, answer.text[:300]
    (length,) = struct.unpack("<I", answer.content[4:8])
    assert json.loads(answer.content[8 : 8 + length])["n"] == clips
    return round(took, 3)


def rss_marks(requests: int) -> list[int]:
    """Request counts after which the server's RSS is read: 1k, 5k, 10k, 20k, ... and the end."""
    marks = [m for m in (1000, 5000, 10_000, 20_000, 50_000, 100_000) if m < requests]
    return marks + [requests]


def main(argv: list[str] | None = None) -> dict:
    import httpx
    import psutil

    from workflows.similar import find_similar

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=10_000,
                        help="similar requests driven (the server's RSS is read at 1k, 5k, 10k, ...)")
    parser.add_argument("--library-calls", type=int, default=200, help="in-process library calls")
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--baseline-json", type=Path, help="an earlier result: ratios against it")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="emofs-bench-app-") as tmp:
        t0 = time.perf_counter()
        store, ids = build_store(Path(tmp) / "store", args.clips)
        build_s = time.perf_counter() - t0
        rng = np.random.default_rng(2)
        direct = []
        for i in rng.integers(0, len(ids), size=args.library_calls):
            t = time.perf_counter()
            find_similar(store, ids[i], k=10, warn_stale=False)
            direct.append(time.perf_counter() - t)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        proc = start_server(store.uri, port)
        try:
            server = psutil.Process(proc.pid)
            drive(base, ids, args.clients, 40)  # warm-up: index load, caches
            rss_before = server.memory_info().rss
            latencies, wall, rss_at = [], 0.0, {}
            done = 0
            for mark in rss_marks(args.requests):  # RSS after 1k, 5k, 10k, ... requests
                part, took = drive(base, ids, args.clients, mark - done, seed=mark)
                latencies += part
                wall += took
                done = mark
                rss_at[str(mark)] = round(server.memory_info().rss / 2**20, 1)
            rss_after = server.memory_info().rss
            t = time.perf_counter()
            httpx.get(base + "/", timeout=30)
            httpx.get(base + "/api/info", timeout=30)
            page_s = time.perf_counter() - t
            memory_after = memory_mb(server)
            timings = {"map_first_s": map_load(base, "index:egemaps", args.clips),
                       "map_cached_s": map_load(base, "index:egemaps", args.clips),
                       "map_features_first_s": map_load(base, "features:egemaps", args.clips),
                       "map_features_cached_s": map_load(base, "features:egemaps", args.clips)}
            memory_after_map = memory_mb(server)
        finally:
            proc.terminate()
            proc.wait(30)
    http = percentiles(latencies)
    base_stats = percentiles(direct)
    result = {
        "bench": "app_similar", "clips": args.clips, "clients": args.clients, "cores": os.cpu_count(),
        "store_build_s": round(build_s, 1),
        "http_similar": {**http, "requests_per_s": round(len(latencies) / wall, 1)},
        "library_similar_in_process": base_stats,
        "ratio_http_p50_vs_library_p50": round(http["p50_ms"] / base_stats["p50_ms"], 2),
        "targets": {"p50_ms<=15": http["p50_ms"] <= 15, "p99_ms<=60": http["p99_ms"] <= 60,
                    "rss_mb<=1200": rss_after / 2**20 <= 1200, "map_first_s<=3": timings["map_first_s"] <= 3},
        "page_and_info_load_s": round(page_s, 3), **timings,
        "server_rss_mb": {"before": round(rss_before / 2**20, 1), "after": round(rss_after / 2**20, 1),
                          "requests_between": len(latencies), "after_requests": rss_at,
                          "growth_first_to_last_mark": round(rss_at[max(rss_at, key=int)]
                                                             - rss_at[min(rss_at, key=int)], 1),
                          "split_after_requests": memory_after, "after_maps": memory_after_map},
    }
    if args.baseline_json and args.baseline_json.is_file():
        before = json.loads(args.baseline_json.read_text())
        result["baseline"] = before.get("baseline") or before
        b = result["baseline"]

        def ratio(now, then):
            return round(now / then, 2) if then else None

        result["vs_baseline"] = {
            "http_p50": ratio(http["p50_ms"], b["http_similar"]["p50_ms"]),
            "http_p99": ratio(http["p99_ms"], b["http_similar"]["p99_ms"]),
            "server_rss": ratio(rss_after / 2**20, b["server_rss_mb"]["after"]),
            "map_first": ratio(timings["map_first_s"], b["map_first_s"]),
            "map_cached": ratio(timings["map_cached_s"], b["map_cached_s"])}
    text = json.dumps(result, indent=2)
    print(text)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
