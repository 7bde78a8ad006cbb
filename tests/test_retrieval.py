"""P@k across groups (heads.retrieval): own-group neighbours never count, planted speaker
offsets sink raw retrieval and per-group normalisation recovers it, a run's test split
gives the queries and its fused projection the learned space."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from featurestore import InputError, Store
from featurestore.features import write_features
from heads.retrieval import precision_at_k, retrieval_eval

LABELS = ["angry", "happy", "sad"]


def test_precision_at_k_counts_only_other_groups():
    # Two groups; within a group the nearest row shares its label, across groups it never does.
    x = np.array([[1, 0], [1, 0.01], [0, 1], [0, 1.01]], dtype=np.float32)
    labels = ["a", "a", "b", "b"]
    assert precision_at_k(x, labels, ["g1", "g2", "g1", "g2"], k=1) == 1.0  # other group, same label
    assert precision_at_k(x, labels, ["g1", "g1", "g2", "g2"], k=1) == 0.0  # own group excluded
    assert precision_at_k(x, labels, ["g1", "g2", "g1", "g2"], k=1, queries=np.array([0])) == 1.0
    with pytest.raises(InputError, match="at least two groups"):
        precision_at_k(x, labels, ["g"] * 4, k=1)
    with pytest.raises(InputError, match="-k must be >= 1"):
        precision_at_k(x, labels, ["g1", "g2", "g1", "g2"], k=0)


def _speaker_store(path, n_speakers: int = 8, per: int = 30, seed: int = 0) -> Store:
    rng = np.random.default_rng(seed)
    store = Store(path)
    n = n_speakers * per
    cls = np.arange(n) % 3
    speaker = np.arange(n) // per
    ids = [f"c{i:04d}" for i in range(n)]
    store.upsert_clips(pa.table({"clip_id": ids, "label": [LABELS[c] for c in cls],
                                 "speaker": [f"spk{s}" for s in speaker]}))
    x = rng.normal(0, 1, (3, 12))[cls] + rng.normal(0, 6, (n_speakers, 12))[speaker] + rng.normal(0, 0.6, (n, 12))
    write_features(store, "feat", ids, x, {"weights": "speakers"}, dtype="float32")  # (N, 12)
    return store


def test_group_offsets_sink_raw_retrieval_and_normalisation_recovers_it(tmp_path):
    store = _speaker_store(tmp_path / "s")
    report = retrieval_eval(store, ["feat"], k=10)
    p = report["p_at_k"]
    assert report["queries"] == 240 and report["groups"] == 8 and report["chance"] == pytest.approx(1 / 3, abs=1e-3)
    assert p["raw"] < 0.55 and p["normalized"] > 0.9, p
    with pytest.raises(InputError, match="no 'accent' column"):
        retrieval_eval(store, ["feat"], group="accent")


def test_run_gives_held_out_queries_and_a_learned_space(tmp_path):
    from heads import HeadConfig, train_head

    store = _speaker_store(tmp_path / "s")
    train_head(store, HeadConfig(encoders=["feat"], split_by="speaker", normalize="speaker", hidden=32,
                                 threads=1, seed=0), out=tmp_path / "run", quiet=True)
    report = retrieval_eval(store, run=tmp_path / "run", k=10)
    p = report["p_at_k"]
    assert 0 < report["queries"] < 240 and report["query_groups"] >= 1
    assert set(p) == {"raw", "normalized", "learned"}
    assert p["learned"] > 0.9 and p["learned"] > p["raw"] + 0.3, p
