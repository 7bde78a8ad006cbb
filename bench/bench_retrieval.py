"""Benchmark: retrieval quality (P@k across speakers) of raw, speaker-normalised and learned
vectors, and the linear head against scikit-learn on the same speaker folds.

P@k (``heads.retrieval.precision_at_k``): label agreement of a query's k nearest clips
(cosine, vectors prepared as ``emofs index build`` does) among clips of OTHER speakers;
queries are the test speakers of a head run trained with ``--split-by speaker``.

* synthetic (always, seconds): 12 speakers x 40 clips, 4 classes, per-speaker offsets
  much larger than the class signal: raw P@10 sinks, ``--normalize speaker`` recovers it,
  and a head trained with it learns a space at least as good;
* ``--shared``: the real clips of ``../shared/data`` (ingested with labels.csv into a temp
  store, ``egemaps`` extracted, an MLP head trained with ``--split-by speaker --normalize
  speaker``); only ~4 speakers, so the figures are a sanity check, not a target;
* ``--corpus DIR`` (e.g. ``../shared/corpora/ravdess_speech``, 1,380 utterances of 23
  actors): every feature set of ``--sets`` (``egemaps whisper whisper,egemaps``) extracted
  once into ``--store`` (kept between runs), then for each set the default head's 5-fold
  speaker-independent cross-validation (``--folds 5 --split-by speaker``) with and without
  ``--normalize speaker``, and P@k across speakers in the raw, speaker-normalised and
  learned (``emofs embed``) spaces of one ``--split-by speaker --normalize speaker`` run;
* ``--baseline`` (with ``--shared``): ``--head linear`` vs scikit-learn's
  StandardScaler + LogisticRegression(class_weight=balanced) on the same 3 speaker folds
  (same train / test rows), mean UAR both ways, and one fold's training time.

Prints a JSON object (``--json PATH`` saves it too).

Usage:
    python bench/bench_retrieval.py
    python bench/bench_retrieval.py --shared --baseline --json /tmp/retrieval.json
    python bench/bench_retrieval.py --corpus ../shared/corpora/ravdess_speech \
        --sets egemaps whisper whisper,egemaps --store /tmp/ravdess-store
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

from featurestore import Store  # noqa: E402
from featurestore.features import write_features  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
LABELS = ["angry", "happy", "neutral", "sad"]


def synthetic(root: Path, k: int) -> dict:
    """Planted per-speaker offsets: P@k raw / normalised / learned."""
    from heads import HeadConfig, train_head
    from heads.retrieval import retrieval_eval

    rng = np.random.default_rng(0)
    n_spk, per, dim = 12, 40, 24
    n = n_spk * per
    cls = np.arange(n) % len(LABELS)
    spk = np.arange(n) // per
    ids = [f"c{i:04d}" for i in range(n)]
    store = Store(root / "synthetic")
    store.upsert_clips(pa.table({"clip_id": ids, "label": [LABELS[c] for c in cls],
                                 "speaker": [f"spk{s}" for s in spk]}))
    x = rng.normal(0, 1, (len(LABELS), dim))[cls] + rng.normal(0, 5, (n_spk, dim))[spk] \
        + rng.normal(0, 1.0, (n, dim))  # (N, D)
    write_features(store, "feat", ids, x, {"weights": "bench-synthetic"}, dtype="float32")
    run = root / "synthetic-run"
    train_head(store, HeadConfig(encoders=["feat"], split_by="speaker", normalize="speaker", threads=1),
               out=run, quiet=True)
    return retrieval_eval(store, run=run, k=k)


def shared(root: Path, k: int, baseline: bool) -> dict:
    """The shared clips: ingest, extract egemaps, train, P@k; optionally linear vs sklearn."""
    from extractors import ingest
    from extractors.pipeline import extract
    from heads import HeadConfig, train_head
    from heads.retrieval import retrieval_eval

    store = Store(root / "shared")
    t0 = time.perf_counter()
    ingest([SHARED], store, labels=SHARED / "labels.csv", progress=False)
    extract(store, ["egemaps"], device="cpu", progress=False)
    prep_s = time.perf_counter() - t0
    run = root / "shared-run"
    result = train_head(store, HeadConfig(encoders=["egemaps"], split_by="speaker", normalize="speaker", drop_missing=True,
                                          threads=1), out=run, quiet=True)
    out = {"prepare_s": round(prep_s, 1), "head_test_uar": round(float(result.test["uar"]), 4),
           "retrieval": retrieval_eval(store, run=run, k=k)}
    if baseline:
        out["baseline"] = linear_vs_sklearn(store, root / "cv")
    return out


def corpus(folder: Path, store_dir: Path, runs: Path, sets: list[str], k: int, folds: int = 5) -> dict:
    """Speaker-independent UAR (default head, K folds) and P@k of each feature set."""
    from extractors import ingest
    from extractors.pipeline import extract
    from heads import HeadConfig, cross_validate, train_head
    from heads.retrieval import retrieval_eval

    store = Store(store_dir)
    t0 = time.perf_counter()
    ingest([folder], store, labels=folder / "labels.csv", progress=False)
    needed = sorted({name for spec in sets for name in spec.split(",")})
    extract(store, needed, device="cpu", progress=False)  # skips clips already extracted
    report: dict = {"corpus": str(folder), "clips": store.clips(columns=["clip_id"]).height,
                    "prepare_s": round(time.perf_counter() - t0, 1), "folds": folds, "sets": {}}
    for spec in sets:
        encoders = spec.split(",")
        row: dict = {}
        for normalize in ("speaker", None):
            cfg = HeadConfig(encoders=encoders, split_by="speaker", folds=folds, normalize=normalize,
                             drop_missing=True, threads=1)
            t1 = time.perf_counter()
            cv = cross_validate(store, cfg, out=runs / f"cv-{spec}-{normalize}", quiet=True)
            row["uar_normalized" if normalize else "uar_raw"] = cv.mean["uar"]
            row["cv_s" if normalize else "cv_raw_s"] = round(time.perf_counter() - t1, 1)
        run = runs / f"run-{spec}"
        train_head(store, HeadConfig(encoders=encoders, split_by="speaker", normalize="speaker",
                                     drop_missing=True, threads=1), out=run, quiet=True)
        row["retrieval"] = retrieval_eval(store, run=run, k=k)["p_at_k"]
        report["sets"][spec] = row
    return report


def linear_vs_sklearn(store: Store, out: Path, folds: int = 3) -> dict:
    """Mean UAR over speaker folds: ``--head linear`` vs scikit-learn, same rows."""
    import polars as pl
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from heads import HeadConfig, cross_validate
    from heads.data import read_aligned
    from heads.metrics import classification_metrics

    cfg = HeadConfig(encoders=["egemaps"], split_by="speaker", folds=folds, head="linear", threads=1,
                     drop_missing=True)
    t0 = time.perf_counter()
    cv = cross_validate(store, cfg, out=out, quiet=True)
    cv_s = time.perf_counter() - t0
    clips = store.clips(columns=["clip_id", "label"])
    label_of = dict(zip(clips["clip_id"].to_list(), clips["label"].to_list()))
    sk_uar, fold_s = [], []
    for row in cv.rows:
        splits = pl.read_csv(Path(row["run_dir"]) / "splits.csv")
        ids = splits["clip_id"].to_list()
        part = np.array(splits["split"].to_list())
        x, _ = read_aligned(store, "egemaps", ids)  # (N, 88)
        y = np.array([label_of[c] for c in ids])
        vocab = sorted(set(y.tolist()))
        ref = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, class_weight="balanced"))
        t1 = time.perf_counter()
        ref.fit(x[part == "train"].astype(np.float64), y[part == "train"])
        fold_s.append(time.perf_counter() - t1)
        pred = ref.predict(x[part == "test"].astype(np.float64))
        idx = {v: i for i, v in enumerate(vocab)}
        figures = classification_metrics(np.array([idx[v] for v in y[part == "test"]]),
                                         np.array([idx[v] for v in pred]), vocab)
        sk_uar.append(float(figures["uar"]))
    return {"folds": folds, "linear_uar_mean": cv.mean["uar"], "sklearn_uar_mean": round(float(np.mean(sk_uar)), 4),
            "linear_per_fold": [r["uar"] for r in cv.rows], "sklearn_per_fold": [round(u, 4) for u in sk_uar],
            "linear_cv_s": round(cv_s, 2), "linear_one_fold_s": round(cv_s / folds, 2),
            "sklearn_one_fold_fit_s": round(float(np.mean(fold_s)), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--shared", action="store_true", help="also the real clips of ../shared/data")
    parser.add_argument("--baseline", action="store_true", help="with --shared: linear head vs scikit-learn")
    parser.add_argument("--corpus", type=Path, help="a labelled corpus folder with labels.csv (speaker, label)")
    parser.add_argument("--sets", nargs="+", default=["egemaps", "whisper", "whisper,egemaps"],
                        help="with --corpus: feature sets to compare (comma = fused)")
    parser.add_argument("--store", type=Path, help="with --corpus: store kept between runs (default: a temp one)")
    parser.add_argument("--json", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.corpus:
            store_dir = (args.store or root / "corpus" / "store").resolve()
            store_dir.parent.mkdir(parents=True, exist_ok=True)
            report = {"k": args.k, "corpus": corpus(args.corpus.resolve(), store_dir, root / "runs", args.sets, args.k)}
            text = json.dumps(report, indent=2)
            print(text)
            if args.json:
                args.json.write_text(text + "\n")
            return
        report = {"k": args.k, "synthetic": synthetic(root, args.k)}
        if args.shared:
            if not SHARED.is_dir():
                raise SystemExit(f"{SHARED} is missing: run without --shared")
            report["shared"] = shared(root, args.k, args.baseline)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
