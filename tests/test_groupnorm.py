"""Per-group z-scores shared by heads and indexes (featurestore.groupnorm): statistics
over batches equal statistics over everything, and `emofs label` normalises a speaker
with the whole archive's clips of that speaker, not with whichever chunk it lands in."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from featurestore import Store
from featurestore.features import write_features
from featurestore.groupnorm import GroupAccumulator, group_statistics, zscore_by_group

LABELS = ["angry", "happy", "sad"]


def _rows(seed: int = 0, n: int = 300):
    rng = np.random.default_rng(seed)
    groups = np.array([f"g{i % 7}" if i % 50 else None for i in range(n)], dtype=object)
    offsets = {f"g{i}": rng.normal(0, 5, 6) for i in range(7)}
    x = rng.normal(0, 1, (n, 6)) + np.stack([offsets.get(g, np.zeros(6)) for g in groups])  # (N, 6)
    return x, groups


def test_accumulated_statistics_equal_one_pass_statistics():
    x, groups = _rows()
    own, fell_back = group_statistics(x, groups, min_clips=10)
    acc = GroupAccumulator()
    for start in range(0, len(x), 37):
        acc.add(x[start:start + 37], groups[start:start + 37])
    own2, fell_back2 = acc.statistics(min_clips=10)
    assert fell_back == fell_back2 == {"<none>": 6}
    assert set(own) == set(own2) == {f"g{i}" for i in range(7)}
    for g in own:
        assert np.allclose(own[g][0], own2[g][0]) and np.allclose(own[g][1], own2[g][1])
    z = zscore_by_group(x, groups, own, (x.mean(0), x.std(0)))
    for g in own:  # each group is centred and unit-variance on its own
        rows = groups == g
        assert np.allclose(z[rows].mean(0), 0, atol=1e-9) and np.allclose(z[rows].std(0), 1)


def test_pinned_statistics_do_not_depend_on_the_chunk():
    from heads.normalize import GroupNormalizer

    x, groups = _rows(1)
    norm = GroupNormalizer("speaker", {"f": (x.mean(0), x.std(0))}, min_clips=10)
    whole, _ = norm.apply({"f": x}, groups)
    pinned = norm.pin([({"f": x[:100]}, groups[:100]), ({"f": x[100:]}, groups[100:])])
    chunked = np.concatenate([pinned.apply({"f": x[s:s + 40]}, groups[s:s + 40])[0]["f"]
                              for s in range(0, len(x), 40)])
    assert np.allclose(chunked, whole["f"], atol=1e-5)
    unpinned = np.concatenate([norm.apply({"f": x[s:s + 40]}, groups[s:s + 40])[0]["f"]
                               for s in range(0, len(x), 40)])
    assert not np.allclose(unpinned, whole["f"], atol=1e-2)  # per-chunk statistics drift


def test_label_predicts_chunks_with_whole_archive_group_statistics(tmp_path, monkeypatch):
    import workflows.label as label_job
    from featurestore.schema import predictions_name
    from heads import HeadConfig, train_head
    from heads.predict import load_run, predict_clips

    rng = np.random.default_rng(0)
    store = Store(tmp_path / "store")
    n, per = 240, 24
    cls = np.arange(n) % 3
    speaker = np.arange(n) // per
    ids = [f"c{i:04d}" for i in range(n)]
    store.upsert_clips(pa.table({"clip_id": ids, "label": [LABELS[c] for c in cls],
                                 "speaker": [f"spk{s}" for s in speaker]}))
    x = rng.normal(0, 1, (3, 8))[cls] + rng.normal(0, 6, (10, 8))[speaker] + rng.normal(0, 0.5, (n, 8))
    write_features(store, "feat", ids, x, {"weights": "synthetic"}, dtype="float32")
    train_head(store, HeadConfig(encoders=["feat"], split_by="speaker", head="linear", normalize="speaker",
                                 threads=1, seed=0), out=tmp_path / "run", quiet=True)
    run = load_run(tmp_path / "run")
    expected = predict_clips(store, run, clip_ids=ids)  # one pass: each speaker's own statistics

    monkeypatch.setattr(label_job, "_PREDICT_CHUNK", 17)  # every speaker straddles chunks
    order = sorted(ids, key=lambda c: int(c[1:]) % 7)  # and its clips are spread over them
    pinned = label_job._pin_group_stats(store, run, order)
    label_job._predict(store, pinned, "lab", order, {c: "sha" for c in ids}, {c: f"/a/{c}" for c in ids},
                       progress=False)
    got = store.table(predictions_name("lab")).to_pylist()
    probs = {r["clip_id"]: r["probs"] for r in got}
    want = dict(zip(expected["clip_id"].to_list(), expected["probs"].to_list()))
    assert len(probs) == n
    assert max(abs(a - b) for c in ids for a, b in zip(probs[c], want[c])) < 1e-4
    # Without pinning, the per-chunk statistics of a 17-clip chunk differ from the speaker's.
    label_job._predict(store, run, "unpinned", order, {c: "sha" for c in ids}, {c: f"/a/{c}" for c in ids},
                       progress=False)
    drift = {r["clip_id"]: r["probs"] for r in store.table(predictions_name("unpinned")).to_pylist()}
    assert max(abs(a - b) for c in ids for a, b in zip(drift[c], want[c])) > 1e-2
