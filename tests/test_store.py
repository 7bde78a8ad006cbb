"""Store: locations, bad paths, schema version, upserts."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from featurestore import QueryError, Store, StoreError, StoreNotFoundError
from featurestore.schema import CLIPS


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


# ------------------------------------------------------------------ emofs check / --repair
def _append_copy(store, name: str, clip_id: str, **changes) -> None:
    """Append a second row for ``clip_id`` (a duplicate, as a writers' race leaves one)."""
    import lance

    row = store.table(name, where=f"clip_id = '{clip_id}'")
    for column, value in changes.items():
        i = row.schema.get_field_index(column)
        row = row.set_column(i, row.schema.field(i), pa.array([value], row.schema.field(i).type))
    lance.write_dataset(row, store.path(name), mode="append")


@pytest.fixture()
def damaged_store(tmp_path):
    """clips a-d, features of a-c, predictions of a-b; then duplicates and an orphan row."""
    from datetime import datetime, timezone

    import numpy as np

    from featurestore.features import write_features
    from featurestore.predictions import write_predictions

    store = Store(tmp_path / "s")
    t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    store.upsert_clips(pa.table({"clip_id": ["a", "b", "c", "d"], "label": ["sad"] * 4,
                                 "ingested_at": pa.array([t0] * 4, pa.timestamp("us", tz="UTC"))}))
    write_features(store, "enc", ["a", "b", "c", "ghost"], np.eye(4, dtype=np.float32),
                   {"encoder": "enc"}, dtype="float32")
    write_predictions(store, "run1", ["a", "b"], np.array([[0.9, 0.1], [0.2, 0.8]], np.float32),
                      ["sad", "happy"], model_fingerprint="m", predicted_at=t0)
    later, earlier = datetime(2024, 6, 1, tzinfo=timezone.utc), datetime(2023, 6, 1, tzinfo=timezone.utc)
    _append_copy(store, CLIPS, "b", label="happy", ingested_at=later)  # the newer row: kept
    _append_copy(store, CLIPS, "c", label="angry", ingested_at=earlier)  # older, appended last
    _append_copy(store, "features/enc.lance", "a", fingerprint="stale-spec")  # not the current spec
    _append_copy(store, "predictions/run1.lance", "b", label="sad", predicted_at=earlier)
    return store


def test_check_finds_duplicates_and_orphans(damaged_store):
    from featurestore.check import check_store

    report = check_store(damaged_store)
    assert not report.ok
    assert report.duplicates == {
        CLIPS: {"keys": 2, "extra_rows": 2, "examples": ["b", "c"]},
        "features/enc.lance": {"keys": 1, "extra_rows": 1, "examples": ["a"]},
        "predictions/run1.lance": {"keys": 1, "extra_rows": 1, "examples": ["b"]},
    }
    assert report.orphans == {"features/enc.lance": {"rows": 1, "examples": ["ghost"]}}
    assert len(report.problems()) == 4 and all("emofs check --repair" in p for p in report.problems())


def test_repair_keeps_the_newest_row_and_drops_orphans(damaged_store):
    from featurestore.check import check_store, repair_store

    report = repair_store(damaged_store)
    assert report.ok and check_store(damaged_store).ok
    assert report.repaired["duplicate_rows_removed"] == {
        CLIPS: 2, "features/enc.lance": 1, "predictions/run1.lance": 1}
    assert report.repaired["orphan_rows_removed"] == {"features/enc.lance": 1}
    labels = dict(damaged_store.clips().select(["clip_id", "label"]).iter_rows())
    assert labels == {"a": "sad", "b": "happy", "c": "sad", "d": "sad"}  # newest by ingested_at
    features = damaged_store.table("features/enc.lance").to_pylist()
    assert sorted(r["clip_id"] for r in features) == ["a", "b", "c"]
    assert all(r["fingerprint"] != "stale-spec" for r in features)  # the current spec's row
    preds = damaged_store.table("predictions/run1.lance").to_pylist()
    assert {r["clip_id"]: r["label"] for r in preds} == {"a": "sad", "b": "happy"}  # newest predicted_at


def test_check_cli_exit_codes_and_json(damaged_store):
    from typer.testing import CliRunner

    from cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["check", "--store", damaged_store.uri])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines[-1].endswith(": 4 problems") and any("clips.lance: 2 keys" in l for l in lines)
    result = runner.invoke(app, ["check", "--json", "--store", damaged_store.uri])
    assert result.exit_code == 1 and not json.loads(result.stdout)["ok"]
    result = runner.invoke(app, ["check", "--repair", "--store", damaged_store.uri])
    assert result.exit_code == 0, result.output
    assert "4 duplicate rows and 1 orphan rows removed" in result.output
    assert result.output.strip().endswith(": ok")
    assert runner.invoke(app, ["check", "--store", damaged_store.uri]).exit_code == 0


def test_repair_keeps_orphans_when_clips_are_missing(tmp_path):
    import numpy as np

    from featurestore.check import repair_store
    from featurestore.features import write_features

    store = Store(tmp_path / "s")
    write_features(store, "enc", ["x", "y"], np.eye(2, dtype=np.float32), {"e": 1}, dtype="float32")
    report = repair_store(store)
    assert not report.ok and report.orphans["features/enc.lance"]["rows"] == 2
    assert "clips.lance is empty or missing" in report.repaired["notes"][0]
    assert store.table("features/enc.lance").num_rows == 2


# ------------------------------------------- check: corrections history vs clips
class _Killed(Exception):
    pass


def _kill_clip_write(monkeypatch, store):
    """The process dies between a correction's history row and its clip update."""
    def boom(table):
        raise _Killed()

    monkeypatch.setattr(store, "upsert_clips", boom)


def test_correction_cut_short_is_found_and_rolled_forward(tmp_path, monkeypatch):
    """Before: a kill between the two writes left `happy->k3_6` in the history while the clip
    said `happy`, and `emofs check` said ok."""
    from typer.testing import CliRunner

    from cli import app
    from featurestore.check import check_store, repair_store
    from featurestore.corrections import correct_clip, read_corrections, undo_correction

    store = Store(tmp_path / "s")
    store.upsert_clips(pa.table({"clip_id": ["a", "b"], "label": ["happy", "sad"]}))
    undone = correct_clip(store, "b", who="ann", label="angry")[0]
    with monkeypatch.context() as m:
        _kill_clip_write(m, store)
        with pytest.raises(_Killed):
            correct_clip(store, "a", who="ann", label="k3_6")
        with pytest.raises(_Killed):  # an undo cut short: its row written, clip and mark not
            undo_correction(store, undone["correction_id"], who="bob")
    assert dict(store.clips().select("clip_id", "label").iter_rows()) == {"a": "happy", "b": "angry"}
    report = check_store(store)
    assert not report.ok
    assert sorted((p["kind"], p["clip_id"]) for p in report.corrections) == [
        ("unapplied", "a"), ("unapplied", "b"), ("undo_unmarked", "b")]
    assert any("corrections.lance: 2 corrections the clips do not show" in line for line in report.problems())
    result = CliRunner().invoke(app, ["check", "--store", store.uri])
    assert result.exit_code == 1 and "a label is 'happy', history 'k3_6'" in result.output

    result = CliRunner().invoke(app, ["check", "--repair", "--store", store.uri])
    assert result.exit_code == 0, result.output
    assert "corrections: 2 rolled forward onto the clips, 0 later changes recorded, 1 undos marked" in result.output
    assert dict(store.clips().select("clip_id", "label").iter_rows()) == {"a": "k3_6", "b": "sad"}
    history = {r["correction_id"]: r for r in read_corrections(store).to_dicts()}
    assert history[undone["correction_id"]]["undone_by"]  # the undo is complete
    assert check_store(store).ok and repair_store(store).repaired["corrections"] == {}


def test_clip_changed_outside_corrections_is_recorded_not_overwritten(tmp_path):
    from featurestore.check import check_store, repair_store
    from featurestore.corrections import REPAIR_WHO, correct_clip, read_corrections

    store = Store(tmp_path / "s")
    store.upsert_clips(pa.table({"clip_id": ["a"], "label": ["happy"]}))
    correct_clip(store, "a", who="ann", label="sad")
    store.upsert_clips(pa.table({"clip_id": ["a"], "label": ["calm"]}))  # e.g. ingest --labels
    assert [p["kind"] for p in check_store(store).corrections] == ["changed"]
    report = repair_store(store)
    assert report.ok and report.repaired["corrections"]["recorded"] == 1
    assert store.clips()["label"].to_list() == ["calm"]  # the clip keeps its value
    newest = read_corrections(store).to_dicts()[0]
    assert (newest["who"], newest["old_value"], newest["new_value"]) == (REPAIR_WHO, "sad", "calm")
