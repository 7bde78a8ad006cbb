"""Store: locations, bad paths, schema version, upserts."""

from __future__ import annotations

import pyarrow as pa
import pytest

from featurestore import QueryError, SchemaVersionError, Store, StoreError, StoreNotFoundError
from featurestore.schema import CLIPS, SCHEMA_VERSION, SCHEMA_VERSION_KEY


def test_store_path_that_is_a_file(tmp_path):
    target = tmp_path / "not-a-dir"
    target.write_text("x")
    with pytest.raises(StoreError, match="is a file"):
        Store(target)


def test_missing_store_for_reading(tmp_path):
    with pytest.raises(StoreNotFoundError, match="emofs ingest"):
        Store(tmp_path / "nothing", create=False)


def test_env_var_picks_the_store(tmp_path, monkeypatch):
    monkeypatch.setenv("EMOFS_STORE", str(tmp_path / "from-env"))
    assert Store().uri == str(tmp_path / "from-env")


def test_upsert_is_idempotent_and_keeps_unmentioned_columns(tmp_path):
    store = Store(tmp_path / "s")
    store.upsert_clips(pa.table({"clip_id": ["a", "b"], "label": ["sad", "happy"]}))
    store.upsert_clips(pa.table({"clip_id": ["b", "c"], "speaker": ["s1", "s2"]}))
    store.upsert_clips(pa.table({"clip_id": ["b", "c"], "speaker": ["s1", "s2"]}))
    rows = {r["clip_id"]: r for r in store.clips().to_dicts()}
    assert sorted(rows) == ["a", "b", "c"]
    assert rows["b"]["label"] == "happy" and rows["b"]["speaker"] == "s1"


def test_newer_schema_is_refused(tmp_path):
    store = Store(tmp_path / "s")
    store.upsert_clips(pa.table({"clip_id": ["a"]}))
    store.dataset(CLIPS).replace_schema_metadata({SCHEMA_VERSION_KEY: str(SCHEMA_VERSION + 1)})
    with pytest.raises(SchemaVersionError, match="newer emofs"):
        Store(tmp_path / "s")


def test_bad_where_is_a_query_error(tmp_path):
    store = Store(tmp_path / "s")
    store.upsert_clips(pa.table({"clip_id": ["a"]}))
    with pytest.raises(QueryError, match="no_such_column"):
        store.clips(where="no_such_column = 1")


def test_compaction_targets_the_largest_overfull_tier():
    from featurestore.compaction import compaction_target

    assert compaction_target([16] * 64, per_tier=64, first_tier=1024) is None  # not yet
    assert compaction_target([16] * 65, per_tier=64, first_tier=1024) == 1024
    assert compaction_target([1024] * 64 + [16] * 10, per_tier=64, first_tier=1024) == 65536
    assert compaction_target([70_000] * 80, per_tier=64, first_tier=1024) == 64 ** 3 * 16  # 4M tier
    assert compaction_target([1024] * 60 + [16] * 10, per_tier=64, first_tier=1024) == 65536


def test_batched_upserts_keep_few_fragments_and_every_row(tmp_path, monkeypatch):
    """Many small commits (an extraction, batch by batch) end in a few fragments: every
    row once, the latest values, nothing lost."""
    import numpy as np

    from featurestore import compaction
    from featurestore.features import features_name, read_features, write_features

    monkeypatch.setattr(compaction, "FRAGMENTS_PER_TIER", 4)
    monkeypatch.setattr(compaction, "FIRST_TIER_ROWS", 8)
    store = Store(tmp_path / "s")
    spec = {"encoder": "x", "dim": 3}
    rng = np.random.default_rng(0)
    expected = {}
    for batch in range(40):
        ids = [f"c{(batch * 2 + i) % 50:02d}" for i in range(3)]  # new clips and rewrites
        vectors = rng.standard_normal((3, 3)).astype(np.float32)
        write_features(store, "x", ids, vectors, spec, dtype="float32")
        store.upsert_clips(pa.table({"clip_id": ids, "label": [f"b{batch}"] * 3}))
        expected.update(zip(ids, vectors))
    for name in (features_name("x"), CLIPS):
        assert len(store.dataset(name).get_fragments()) <= 3 * 4  # bounded by the tiers
    got = read_features(store, "x")
    assert sorted(got.clip_ids) == sorted(expected)  # each clip once
    for clip_id, vector in zip(got.clip_ids, got.vectors):
        assert np.allclose(vector, expected[clip_id])
    assert store.clips().height == len(expected)


def test_vacuum_reclaims_replaced_files_and_keeps_the_data(tmp_path):
    import json

    import numpy as np
    from typer.testing import CliRunner

    from cli import app
    from featurestore.features import read_features, write_features

    store = Store(tmp_path / "s")
    rng = np.random.default_rng(0)
    for batch in range(30):  # 30 commits of 4 rows, each rewriting two earlier rows
        ids = [f"c{(batch * 2 + i) % 70:02d}" for i in range(4)]
        write_features(store, "x", ids, rng.standard_normal((4, 256)).astype(np.float32),
                       {"encoder": "x", "dim": 256}, dtype="float32")
        store.upsert_clips(pa.table({"clip_id": ids, "label": [f"b{batch}"] * 4}))
    before = read_features(store, "x")
    clips_before = store.clips().sort("clip_id")
    runner = CliRunner()
    bad = runner.invoke(app, ["vacuum", "--store", str(store.uri), "--older-than", "soon"])
    assert bad.exit_code == 1 and "--older-than" in bad.output
    done = runner.invoke(app, ["vacuum", "--store", str(store.uri), "--older-than", "0", "--json"])
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert report["bytes_after"] < report["bytes_before"] / 2
    assert all(r["fragments_after"] == 1 for r in report["datasets"])
    after = read_features(store, "x")
    by_id = dict(zip(before.clip_ids, before.vectors))
    assert sorted(after.clip_ids) == sorted(by_id)
    assert all(np.array_equal(v, by_id[c]) for c, v in zip(after.clip_ids, after.vectors))
    assert store.clips().sort("clip_id").equals(clips_before)
