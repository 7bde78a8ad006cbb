"""Benchmark: which Whisper pooling (and 30 s padding or not) separates emotions best.

Clips: ``../shared/corpora/ravdess_speech`` (1,380 acted utterances, 23 speakers, 8
emotions, ~3.5 s, 16 kHz FLAC). Each clip goes through the ``whisper`` encoder (default
tag tiny.en; ``--ref`` for another) once per input mode:

- ``padded``: each window zero-padded to 30 s, as Whisper was trained, then cut to the
  clip's frames;
- ``unpadded``: the clip's own frames only (about 8x less compute on 3.5 s clips).

and every pooling candidate is computed from the same hidden states: ``last`` (last-layer
frame mean), ``layers`` (mean over the L+1 hidden states of their frame means),
``layers_no_emb`` (the same without the embeddings), ``layer<k>`` (one hidden state) and
``layer_stats`` (each layer output's mean and std over frames, concatenated: the default).

Quality: 5-fold GroupKFold by speaker (speaker-independent), standardised features into a
class-balanced logistic regression (C=1), UAR (balanced accuracy) over the pooled
out-of-fold predictions, with and without per-speaker z-scores (each speaker's clips
standardised by their own mean and std, a common SER normalisation). Chance is 0.125.
Cost: clips/s of the encoder alone (decoding excluded) with torch on ``--threads``
threads; the RSS once the encoder is built and the process's peak RSS after each mode
(decoding is per batch, so audio does not pile up; run one mode per process to read a
mode's peak alone).

``--subset quarter`` keeps statement 01, repetition 01 (345 clips, all 23 speakers): the
padded mode costs ~0.8 s a clip on one CPU thread, so it is measured on that quarter.

Usage::

    python bench/bench_whisper_pooling.py --modes unpadded              # all 1,380 clips
    python bench/bench_whisper_pooling.py --subset quarter --modes padded,unpadded
    python bench/bench_whisper_pooling.py --json-out bench/results/whisper_pooling.json
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "ravdess_speech"


def _rows(corpus: Path, subset: str) -> list[dict[str, str]]:
    with open(corpus / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    if subset == "quarter":
        rows = [r for r in rows if r["statement"] == "01" and r["repetition"] == "01"]
    return rows


def extract(ref: str, rows: list[dict[str, str]], corpus: Path, padded: bool, batch: int) -> tuple[dict, float, int]:
    """Pooling candidates per clip ``{name: (N, D)}``, the encoder's clips/s and the RSS
    (MiB) once it is built."""
    import soundfile as sf

    from extractors.encoders.whisper import pool
    from extractors.registry import build_encoder

    enc = build_encoder(ref)
    enc.padded = padded
    loaded_rss = _rss_mib()
    enc.encode([np.zeros(16000, np.float32)])  # warm-up
    pooled: dict[str, list[np.ndarray]] = {}
    seconds = 0.0
    for start in range(0, len(rows), batch):
        waves = [sf.read(corpus / r["path"], dtype="float32")[0] for r in rows[start : start + batch]]
        t0 = time.perf_counter()
        states = enc.hidden_states(waves)  # (L+1, T, D) per clip
        seconds += time.perf_counter() - t0
        for s in states:
            names = ["last", "layers", "layers_no_emb", "layer_stats"] + [f"layer{k}" for k in range(s.shape[0])]
            for name in names:
                pooled.setdefault(name, []).append(pool(s, name))
    return {k: np.stack(v) for k, v in pooled.items()}, len(rows) / seconds, loaded_rss


def _rss_mib() -> int:
    import psutil

    return round(psutil.Process().memory_info().rss / 2**20)


def speaker_z(x: np.ndarray, speakers: np.ndarray) -> np.ndarray:
    """Each speaker's rows standardised by that speaker's mean and std."""
    out = np.empty_like(x)
    for s in np.unique(speakers):
        rows = speakers == s
        out[rows] = (x[rows] - x[rows].mean(0)) / (x[rows].std(0) + 1e-6)
    return out


def uar(x: np.ndarray, labels: np.ndarray, speakers: np.ndarray) -> float:
    """Speaker-independent UAR: 5-fold GroupKFold, scaler + balanced logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pred = np.empty_like(labels)
    for train, test in GroupKFold(n_splits=5).split(x, labels, speakers):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=3000, class_weight="balanced"))
        model.fit(x[train], labels[train])
        pred[test] = model.predict(x[test])
    return float(balanced_accuracy_score(labels, pred))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default="whisper:tiny.en")
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--subset", choices=["all", "quarter"], default="all")
    parser.add_argument("--modes", default="unpadded", help="padded,unpadded")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    from benchlib import emit_json, print_figures

    torch.set_num_threads(args.threads)
    if not (args.corpus / "labels.csv").is_file():
        sys.exit(f"corpus not found at {args.corpus} (../shared/corpora/ravdess_speech)")
    rows = _rows(args.corpus, args.subset)
    labels = np.array([r["label"] for r in rows])
    speakers = np.array([r["speaker"] for r in rows])
    figures: dict[str, object] = {"ref": args.ref, "clips": len(rows), "speakers": len(set(speakers)),
                                  "threads": args.threads}
    for mode in args.modes.split(","):
        pooled, rate, loaded = extract(args.ref, rows, args.corpus, mode == "padded", args.batch)
        figures[f"{mode} clips/s"] = round(rate, 2)
        figures[f"{mode} peak RSS MiB so far"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        figures.setdefault("RSS with the encoder built MiB", loaded)
        for name, x in pooled.items():
            figures[f"{mode} {name} UAR"] = round(uar(x, labels, speakers), 3)
            figures[f"{mode} {name} UAR speaker-z"] = round(uar(speaker_z(x, speakers), labels, speakers), 3)
        print(f"{mode}: done", file=sys.stderr, flush=True)
    print_figures(figures)
    emit_json(figures, args.json_out)


if __name__ == "__main__":
    main()
