"""Benchmark: importing a folder of small per-clip ``.npy`` files (Emotion-LLaMA layout).

Writes N (default 10,000) ``[1024]`` float32 files into a temporary ``HL-UTT/`` folder,
warms the page cache, then times in the same process:

* ``numpy``: a plain ``np.load(path, allow_pickle=False)`` loop over the files (baseline);
* ``emofs read``: emofs' pickle-free reader over the same files (thread pool);
* ``emofs import``: the whole ``import_features`` into a fresh store (read, validate,
  create clip rows, write the Lance feature set);
* ``emofs export``: ``export_features`` of that set back to ``.npy`` files, against a
  plain ``np.save`` loop writing the same arrays (the export baseline).

Each figure is the best of ``--repeat`` runs. Prints a JSON object and a markdown table.

Usage:
    python bench/bench_interop.py [--files 10000] [--dim 1024] [--repeat 3] [--workers 4]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()

    from featurestore import Store
    from featurestore.interop import export_features, import_features
    from featurestore.interop.npy_io import read_many, read_npy

    work = Path(tempfile.mkdtemp(prefix="emofs-bench-interop-"))
    try:
        folder = work / "HL-UTT"
        folder.mkdir()
        rng = np.random.default_rng(0)
        data = rng.standard_normal((args.files, args.dim)).astype(np.float32)
        for i in range(args.files):
            np.save(folder / f"sample_{i:08d}.npy", data[i])
        files = sorted(folder.iterdir())
        for f in files:  # warm the page cache for every contender alike
            f.read_bytes()

        loaded = [np.load(f, allow_pickle=False) for f in files]
        ours = read_many(files, read_npy, workers=args.workers)
        assert all(a.tobytes() == b.tobytes() for a, b in zip(loaded, ours))

        t_numpy = _best(lambda: [np.load(f, allow_pickle=False) for f in files], args.repeat)
        t_read = _best(lambda: read_many(files, read_npy, workers=args.workers), args.repeat)
        t_read1 = _best(lambda: [read_npy(f) for f in files], args.repeat)

        stores = iter(range(args.repeat))

        def do_import():
            store = Store(work / f"store{next(stores)}")
            (report,) = import_features(store, folder, layout="emotion-llama",
                                        workers=args.workers, progress=False)
            assert report.imported == args.files

        t_import = _best(do_import, args.repeat)
        exports = iter(range(args.repeat))
        store = Store(work / "store0")

        def do_export():
            out = work / f"out{next(exports)}"
            report = export_features(store, out, progress=False, workers=args.workers,
                                     annotations=False)
            assert report.folders["HL-UTT"] == args.files

        t_export = _best(do_export, args.repeat)
        saves = iter(range(args.repeat))

        def do_save():
            out = work / f"save{next(saves)}"
            out.mkdir()
            for i, f in enumerate(files):
                np.save(out / f.name, data[i])

        t_save = _best(do_save, args.repeat)
        sample = files[123].name
        assert (work / "out0" / "HL-UTT" / sample).read_bytes() == (folder / sample).read_bytes()

        rows = [
            ("numpy np.load loop (baseline)", t_numpy),
            ("emofs read (threads)", t_read),
            ("emofs read (1 thread)", t_read1),
            ("emofs import (read+validate+Lance write)", t_import),
            ("numpy np.save loop (export baseline)", t_save),
            ("emofs export (Lance read + np.save-format files)", t_export),
        ]
        baseline = {name: (t_save if "save" in name or "export" in name else t_numpy) for name, t in rows}
        result = {
            "files": args.files,
            "dim": args.dim,
            "workers": args.workers,
            "repeat": args.repeat,
            "seconds": {name: round(t, 4) for name, t in rows},
            "files_per_second": {name: round(args.files / t) for name, t in rows},
            "speedup_vs_numpy_baseline": {name: round(baseline[name] / t, 2) for name, t in rows},
        }
        print(json.dumps(result, indent=2))
        print()
        print(f"| {args.files} x [{args.dim}] float32 .npy | seconds | files/s | vs numpy baseline |")
        print("|---|---:|---:|---:|")
        for name, t in rows:
            print(f"| {name} | {t:.3f} | {args.files / t:,.0f} | {baseline[name] / t:.2f}x |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
