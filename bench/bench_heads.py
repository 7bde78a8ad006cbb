"""Benchmark: head training from the Lance store vs an npy-per-clip-per-encoder layout.

Builds (in a temp dir) a store of N synthetic clips x K feature sets (D-d float16) and the
Emotion-LLaMA / MERTools layout (one ``.npy`` per clip per encoder), then measures in this
process:

* whole-set load time: store (``heads.data.read_aligned``) vs npy files (``np.load`` each);
* training-epoch samples/s (Lightning, MLP projectors + concat fusion): preloaded tensors,
  streaming from Lance (``FeatureReader``, 0 and 2 spawn workers), and the npy loader;
* time from command start to the first training step of ``emofs train head`` (a fresh
  process, so imports count), plus Lightning's bare import time.

Targets (2 cores): preloaded epoch >= 15k samples/s; store load >= 10x faster than npy;
first step < 5 s. Prints a markdown table and a JSON object (``--json PATH`` saves it).

Usage:
    python bench/bench_heads.py                 # 30k clips x 4 sets x 1024-d
    python bench/bench_heads.py --clips 5000    # quicker (any --clips >= 20 runs)
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchlib import emit_json, print_figures, print_targets  # noqa: E402

from featurestore import Store  # noqa: E402
from featurestore.features import write_features  # noqa: E402

LABELS = ["angry", "disgust", "fear", "happy", "neutral", "sad"]


def build(root: Path, n: int, sets: int, dim: int, seed: int = 0) -> tuple[Store, list[str], list[str]]:
    """Synthetic store + npy folders: class-dependent means + noise, 50 speakers."""
    rng = np.random.default_rng(seed)
    store = Store(root / "store")
    ids = [f"clip{i:06d}" for i in range(n)]
    cls = rng.choice(len(LABELS), n, p=[0.3, 0.1, 0.1, 0.2, 0.2, 0.1])
    store.upsert_clips(pa.table({"clip_id": ids, "label": [LABELS[c] for c in cls],
                                 "speaker": [f"spk{i % 50}" for i in range(n)]}))
    names = [f"enc{k}" for k in range(sets)]
    for name in names:
        means = rng.normal(0, 1, (len(LABELS), dim)).astype(np.float32)
        x = (means[cls] + rng.normal(0, 3.0, (n, dim)).astype(np.float32)).astype(np.float16)
        write_features(store, name, ids, x, {"weights": f"synthetic-{name}", "dim": dim})
        folder = root / "npy" / name
        folder.mkdir(parents=True)
        for cid, row in zip(ids, x):
            np.save(folder / f"{cid}.npy", row)
    return store, ids, names


def load_store(store: Store, names: list[str], ids: list[str]) -> float:
    from heads.data import read_aligned

    t = time.perf_counter()
    arrays = [read_aligned(store, name, ids)[0] for name in names]
    assert all(a.shape[0] == len(ids) for a in arrays)
    return time.perf_counter() - t


def load_npy(root: Path, names: list[str], ids: list[str]) -> float:
    t = time.perf_counter()
    arrays = [np.stack([np.load(root / "npy" / name / f"{cid}.npy") for cid in ids]) for name in names]
    assert all(a.shape[0] == len(ids) for a in arrays)
    return time.perf_counter() - t


class NpyBatches:
    """Baseline loader: one ``np.load`` per clip per encoder for each batch."""

    def __init__(self, root: Path, names: list[str], ids: list[str], labels: np.ndarray):
        self.root, self.names, self.ids, self.labels = root, names, ids, labels

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, indices):
        import torch

        idx = np.asarray(indices)
        batch = {"index": torch.from_numpy(idx)}
        for name in self.names:
            batch[name] = torch.from_numpy(
                np.stack([np.load(self.root / "npy" / name / f"{self.ids[i]}.npy") for i in idx]))
        batch["label"] = torch.from_numpy(self.labels[idx])
        return batch


def epoch_rate(prepared, cfg, *, epochs: int, train_set=None, limit: int | None = None) -> dict[str, float]:
    """Train with Lightning; samples/s of the training part of each epoch (no validation)."""
    import lightning.pytorch as pl

    from heads.data import HeadDataModule
    from heads.train import inverse_frequency_weights, lightning_module_class, quiet_lightning

    quiet_lightning()
    times: list[float] = []
    seen: list[int] = []

    class Timer(pl.Callback):
        def on_train_epoch_start(self, trainer, module):
            self.t = time.perf_counter()
            self.n = 0

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            self.n += len(batch["label"])

        def on_train_epoch_end(self, trainer, module):
            times.append(time.perf_counter() - self.t)
            seen.append(self.n)

    module = lightning_module_class()(
        encoders=list(cfg.encoders), dims=[prepared.dims[e] for e in cfg.encoders],
        vocabulary=prepared.vocabulary, hidden=cfg.hidden, fusion=cfg.fusion,
        dropout=cfg.dropout, lr=cfg.lr, weight_decay=cfg.weight_decay,
        class_weights=inverse_frequency_weights(prepared), monitor=cfg.monitor)
    dm = HeadDataModule(prepared, cfg)
    if train_set is not None:
        from featurestore.reader import batch_loader

        dm.setup()
        dm.train_dataloader = lambda: batch_loader(train_set, cfg.batch_size, shuffle=True, seed=0)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=epochs, logger=False, enable_checkpointing=False,
                         callbacks=[Timer()], limit_train_batches=limit or 1.0,
                         enable_model_summary=False, enable_progress_bar=False, limit_val_batches=0,
                         num_sanity_val_steps=0)
    trainer.fit(module, datamodule=dm)
    rates = [n / t for n, t in zip(seen, times)]
    return {"best": max(rates), "median": float(np.median(rates)), "epochs": len(rates),
            "epoch_s": min(times)}


def read_rate(prepared, names: list[str], batch_size: int, workers: int, limit: int) -> float:
    """Samples/s of reading shuffled training batches from Lance (no model step)."""
    from featurestore.reader import FeatureReader

    rows = prepared.indices("train")
    reader = FeatureReader(prepared.store_uri, names, clip_ids=[prepared.clip_ids[i] for i in rows])
    loader = reader.loader(batch_size, shuffle=True, num_workers=workers, seed=0)
    if workers:
        loader.timeout = 120  # a stuck worker raises instead of hanging the bench
    it = iter(loader)
    first = next(it, None)  # worker start-up (spawn) is not part of the rate
    if first is None:
        raise SystemExit("no training batches: pass a larger --clips")
    t, n = time.perf_counter(), 0
    for batch in itertools.islice(it, limit):  # at most `limit`: a small store has fewer batches
        n += len(batch["index"])
    if n == 0:  # a single batch an epoch: time one more (fresh) pass over it
        t = time.perf_counter()
        n = sum(len(b["index"]) for b in loader)
    rate = n / (time.perf_counter() - t)
    del it, loader
    return rate


def first_step(store: Store, names: list[str], out: Path, threads: int) -> dict[str, float]:
    """Fresh ``emofs train head`` process: seconds from launch to the first training step."""
    cmd = [sys.executable, "-c", "from cli import app; app()", "train", "head",
           "--encoders", ",".join(names), "--epochs", "1", "--max-steps", "3", "--threads", str(threads),
           "--store", store.uri, "--out", str(out), "--json"]
    launched = time.time()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ})
    if proc.returncode != 0:
        raise SystemExit(f"train head failed: {proc.stderr[-2000:]}")
    timings = json.loads(proc.stdout)["timings"]
    imp = subprocess.run([sys.executable, "-c",
                          "import time; t=time.perf_counter(); import lightning.pytorch; "
                          "print(time.perf_counter()-t)"], capture_output=True, text=True)
    torch_imp = subprocess.run([sys.executable, "-c",
                                "import time; t=time.perf_counter(); import torch; "
                                "print(time.perf_counter()-t)"], capture_output=True, text=True)
    return {
        "first_step_from_launch_s": timings["first_step_s"],  # from the process' start time
        "first_step_in_job_s": timings["first_step_in_job_s"],
        "data_load_in_job_s": timings["data_s"],
        "process_wall_s": round(time.time() - launched, 3),
        "import_lightning_s": round(float(imp.stdout.strip() or "nan"), 3),
        "import_torch_s": round(float(torch_imp.stdout.strip() or "nan"), 3),
    }


def note(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=30000)
    parser.add_argument("--sets", type=int, default=4)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--hidden", default="128,256",
                        help="projector widths for the preloaded epoch (first: every other figure)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: best on a shared CPU)")
    parser.add_argument("--limit", type=int, default=20,
                        help="batches per streaming / npy epoch (rates need no full epoch)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.clips < 20 or min(args.sets, args.dim, args.batch_size, args.epochs, args.limit, args.threads) < 1:
        parser.error("--clips must be >= 20 (three non-empty splits); --sets, --dim, --batch-size, "
                     "--epochs, --limit and --threads >= 1")

    import torch

    torch.set_num_threads(args.threads)
    from heads import HeadConfig
    from heads.data import prepare_data

    with tempfile.TemporaryDirectory(prefix="emofs-bench-heads-") as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        store, ids, names = build(root, args.clips, args.sets, args.dim)
        build_s = time.perf_counter() - t
        # Load each way twice; the second (warm page cache) is the fair comparison.
        note(f'built in {build_s:.1f}s; loading')
        store_s = min(load_store(store, names, ids) for _ in range(2))
        npy_s = min(load_npy(root, names, ids) for _ in range(2))

        widths = [int(w) for w in str(args.hidden).split(",")]
        cfg = HeadConfig(encoders=names, hidden=widths[0], batch_size=args.batch_size,
                         epochs=args.epochs, accelerator="cpu")
        prepared = prepare_data(store, cfg, quiet=True)
        note('preloaded epochs')
        preload = epoch_rate(prepared, cfg, epochs=args.epochs)
        per_width = {w: epoch_rate(prepared, cfg.replace(hidden=w), epochs=args.epochs)["best"]
                     for w in widths[1:]}
        streamed = prepared.subset(names)
        streamed.features = None
        note('streaming epochs')
        stream0 = epoch_rate(streamed, cfg, epochs=1, limit=args.limit)
        read0 = read_rate(prepared, names, args.batch_size, 0, args.limit)
        read2 = read_rate(prepared, names, args.batch_size, 2, args.limit)
        train_rows = prepared.indices("train")
        npy_set = NpyBatches(root, names, [prepared.clip_ids[i] for i in train_rows],
                             prepared.labels[train_rows])
        note('npy epoch')
        npy_rate = epoch_rate(prepared, cfg, epochs=1, train_set=npy_set, limit=args.limit)
        note('first step')
        start = first_step(store, names, root / "run", args.threads)

    figures = {
        "clips": args.clips, "feature_sets": args.sets, "dim": args.dim, "dtype": "float16",
        "hidden": widths[0], "batch_size": args.batch_size, "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(), "build_s": round(build_s, 1),
        "load_store_s": round(store_s, 3), "load_npy_s": round(npy_s, 3),
        "load_speedup_x": round(npy_s / store_s, 1),
        "epoch_preload_samples_s": round(preload["best"]), "epoch_preload_median_samples_s": round(preload["median"]),
        **{f"epoch_preload_hidden{w}_samples_s": round(r) for w, r in per_width.items()},
        "epoch_stream_w0_samples_s": round(stream0["best"]),
        "read_stream_w0_samples_s": round(read0), "read_stream_w2_spawn_samples_s": round(read2),
        "epoch_npy_samples_s": round(npy_rate["best"]),
        **start,
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    targets = [
        ("preloaded epoch samples/s", figures["epoch_preload_samples_s"], ">= 15000",
         figures["epoch_preload_samples_s"] >= 15000),
        ("store load speed-up vs npy", figures["load_speedup_x"], ">= 10x", figures["load_speedup_x"] >= 10),
        ("first step from launch (s)", figures["first_step_from_launch_s"], "< 5",
         figures["first_step_from_launch_s"] < 5),
    ]
    print_figures(figures)
    print_targets(targets)
    emit_json(figures, args.json)


if __name__ == "__main__":
    main()
