"""Benchmark: modality dropout vs none, weighted F1 on clips having every modality.

On the shared clips (../shared/data: audio-only, video-only and audio+video), trains the
MLP head over an audio and a face feature set (default ``egemaps,mae``) with
``--modality-dropout`` P (default 0.3) and with 0, same clips, folds and seeds. Each run is
a random 5-fold cross-validation (``--split-by clip_id --folds 5``), so every clip is a test
clip once per seed; test predictions are pooled over folds, and the weighted F1 is computed
on the pooled clips per presence pattern (``both``: clips with every modality). A
``--require-all`` head (trained on the both-modality clips only) is the reference row.

Target: dropout loses no more than 0.02 weighted F1 on ``both`` clips (mean over seeds).

Usage:
    python bench/bench_missing_modality.py --store /tmp/demo-store        # a store holding
        # the shared clips with egemaps and mae features (`make demo STORE=...` builds one)
    python bench/bench_missing_modality.py --store S --seeds 0,1,2 --json out.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from featurestore import Store  # noqa: E402
from heads import HeadConfig, classification_metrics  # noqa: E402
from heads.data import prepare_data  # noqa: E402
from heads.presence import pattern_names  # noqa: E402
from heads.train import train_head  # noqa: E402


def pooled_cv(store: Store, cfg: HeadConfig, folds: int, root: Path) -> dict:
    """Pool the test predictions of every fold; weighted F1 overall and per pattern."""
    from heads.predict import load_run, predict_proba
    from heads.data import split_dataset

    truth, pred, patterns = [], [], []
    for fold in range(folds):
        fold_cfg = cfg.replace(split_by="clip_id", folds=folds, fold=fold)
        prepared = prepare_data(store, fold_cfg, quiet=True)
        run = train_head(store, fold_cfg, out=root / f"fold{fold}", prepared=prepared, quiet=True)
        rows = prepared.indices("test")
        probs = predict_proba(load_run(run.run_dir).head, split_dataset(prepared, "test"), cfg.encoders)
        truth += prepared.labels[rows].tolist()
        pred += probs.argmax(1).tolist()
        patterns += pattern_names(cfg.encoders, prepared.presence(cfg.encoders, rows))
        vocabulary = prepared.vocabulary
    truth, pred, patterns = np.array(truth), np.array(pred), np.array(patterns)
    out = {"all": round(classification_metrics(truth, pred, vocabulary)["weighted_f1"], 4), "n_all": len(truth)}
    for name in sorted(set(patterns)):
        rows = patterns == name
        out[name] = round(classification_metrics(truth[rows], pred[rows], vocabulary)["weighted_f1"], 4)
        out[f"n_{name}"] = int(rows.sum())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", required=True, help="store with the shared clips and both feature sets")
    parser.add_argument("--encoders", default="egemaps,mae")
    parser.add_argument("--dropout", type=float, default=0.3, help="--modality-dropout of the measured head")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--json", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    store = Store(args.store, create=False)
    seeds = [int(s) for s in args.seeds.split(",")]
    base = HeadConfig(encoders=args.encoders, epochs=args.epochs, threads=1, accelerator="cpu")
    variants = {
        f"dropout {args.dropout}": base.replace(modality_dropout=args.dropout),
        "dropout 0": base.replace(modality_dropout=0.0),
        "require-all (both-modality clips only)": base.replace(modality_dropout=0.0, require_all=True,
                                                               drop_missing=True),
    }
    started = time.time()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, cfg in variants.items():
            per_seed = [pooled_cv(store, cfg.replace(seed=s), args.folds, Path(tmp) / f"{name}-{s}".replace(" ", "_"))
                        for s in seeds]
            keys = [k for k in per_seed[0] if not k.startswith("n_")]
            rows[name] = {"per_seed": per_seed,
                          "mean": {k: round(float(np.mean([p.get(k, np.nan) for p in per_seed])), 4) for k in keys},
                          "n": {k: per_seed[0][k] for k in per_seed[0] if k.startswith("n_")}}
    with_drop, without = rows[f"dropout {args.dropout}"]["mean"], rows["dropout 0"]["mean"]
    loss = round(without["both"] - with_drop["both"], 4)
    result = {
        "bench": "missing_modality", "store": args.store, "encoders": base.encoders, "seeds": seeds,
        "folds": args.folds, "epochs": args.epochs, "rows": rows,
        "both_weighted_f1": {"dropout": with_drop["both"], "no_dropout": without["both"]},
        "loss_on_both": loss, "target_max_loss": 0.02, "meets_target": loss <= 0.02,
        "seconds": round(time.time() - started, 1),
    }
    print("| head | " + " | ".join(k for k in with_drop) + " |")
    print("|---|" + "---|" * len(with_drop))
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(str(row["mean"].get(k, "-")) for k in with_drop) + " |")
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
