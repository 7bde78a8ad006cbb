"""Ingest: real clips, idempotence, corrupt files, ids, labels."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from conftest import SHARED_LABELS, copy_to
from extractors import ingest
from featurestore import LabelsError, Store


def test_shared_data_counts_match_labels(shared_store, shared_rows):
    clips = shared_store.clips()
    assert clips.height == len(shared_rows) == 122
    expected = Counter(r["modalities"] for r in shared_rows)
    got = Counter(clips["modality"].to_list())
    assert got == expected
    assert clips["clip_id"].n_unique() == 122


def test_labels_and_speakers_land_on_rows(shared_store, shared_rows):
    rows = {r["clip_id"]: r for r in shared_store.clips().to_dicts()}
    for expected in shared_rows:
        row = rows[expected["path"]]  # ids are the path relative to the ingested root
        assert row["label"] == expected["label"]
        assert row["speaker"] == expected["speaker"]
        assert row["dataset"] == expected["dataset"]  # extra CSV columns land too
        assert row["sha256"] and len(row["sha256"]) == 64
        assert row["duration_s"] > 0.5
        if "video" in expected["modalities"]:
            assert row["fps"] > 0 and row["width"] > 0 and row["n_frames"] > 0
        if "audio" in expected["modalities"]:
            assert row["sample_rate"] in (16_000, 44_100, 48_000) and row["channels"] >= 1


def test_reingest_is_a_noop(shared_store, shared_data):
    before_ids = sorted(shared_store.clips()["clip_id"].to_list())
    version = shared_store.version()
    report = ingest([shared_data], shared_store, labels=SHARED_LABELS, progress=False)
    assert report.new == report.updated == report.annotated == 0
    assert report.unchanged == 122
    assert shared_store.version() == version
    assert sorted(shared_store.clips()["clip_id"].to_list()) == before_ids


def test_corrupt_files_become_error_rows(tmp_path, media_samples):
    folder = tmp_path / "archive"
    copy_to(media_samples["mp4"], folder / "a_good.mp4")
    (folder / "b_zero.mp4").write_bytes(b"")
    data = media_samples["mp4"].read_bytes()
    (folder / "c_truncated.mp4").write_bytes(data[: len(data) // 2])
    (folder / "d_text.mp4").write_text("this is not a video\n")
    copy_to(media_samples["wav"], folder / "e_good.wav")
    store = Store(tmp_path / "store")

    report = ingest([folder], store, progress=False)

    assert sorted(store.clips()["clip_id"].to_list()) == ["a_good.mp4", "e_good.wav"]
    errors = store.errors()
    assert sorted(Path(u).name for u in errors["uri"].to_list()) == [
        "b_zero.mp4", "c_truncated.mp4", "d_text.mp4"]
    assert set(errors["stage"].to_list()) == {"ingest"}
    reasons = dict(zip((Path(u).name for u in errors["uri"]), errors["message"]))
    assert "empty" in reasons["b_zero.mp4"]
    assert "truncated" in reasons["c_truncated.mp4"] or "corrupt" in reasons["c_truncated.mp4"]
    assert len(report.errors) == 3

    # Fixing a file clears its error on the next ingest; the others stay.
    copy_to(media_samples["mp4"], folder / "b_zero.mp4")
    ingest([folder], store, progress=False)
    assert "b_zero.mp4" in store.clips()["clip_id"].to_list()
    assert store.errors().height == 2


def test_same_names_spaces_and_unicode(tmp_path, media_samples):
    root = tmp_path / "root"
    copy_to(media_samples["mp4"], root / "one" / "a.mp4")
    copy_to(media_samples["mp4"], root / "two" / "a.mp4")
    copy_to(media_samples["wav"], root / "with space" / "émotion ü.wav")
    store = Store(tmp_path / "store")
    ingest([root], store, progress=False)
    ids = sorted(store.clips()["clip_id"].to_list())
    assert ids == ["one/a.mp4", "two/a.mp4", "with space/émotion ü.wav"]
    names = store.clips(where="name = 'a'")
    assert names.height == 2


def test_two_roots_never_collide_and_ids_are_stable(tmp_path, media_samples):
    copy_to(media_samples["mp4"], tmp_path / "rootA" / "clip.mp4")
    copy_to(media_samples["wav"], tmp_path / "rootB" / "clip.mp4".replace(".mp4", ".wav"))
    copy_to(media_samples["flv"], tmp_path / "rootB" / "clip.mp4")
    store = Store(tmp_path / "store")
    ingest([tmp_path / "rootA"], store, progress=False)
    ingest([tmp_path / "rootB"], store, progress=False)
    rows = {r["clip_id"]: r["uri"] for r in store.clips().to_dicts()}
    assert len(rows) == 3
    assert rows["clip.mp4"].endswith("rootA/clip.mp4")  # the first holder keeps its id
    assert rows["rootB/clip.mp4"].endswith("rootB/clip.mp4")
    version = store.version()
    ingest([tmp_path / "rootB", tmp_path / "rootA"], store, progress=False)
    assert {r["clip_id"]: r["uri"] for r in store.clips().to_dicts()} == rows
    assert store.version() == version


def test_labels_report_missing_files_and_pick_up_changes(tmp_path, media_samples):
    root = tmp_path / "root"
    copy_to(media_samples["mp4"], root / "x.mp4")
    copy_to(media_samples["wav"], root / "y.wav")
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label,valence\nx.mp4,happy,0.5\ny.wav,sad,-0.25\nghost.mp4,angry,0\n")
    store = Store(tmp_path / "store")
    report = ingest([root], store, labels=labels, progress=False)
    assert report.unmatched_labels == [(4, "ghost.mp4")]
    row = store.clips(where="clip_id = 'y.wav'").to_dicts()[0]
    assert row["label"] == "sad" and row["valence"] == pytest.approx(-0.25)

    labels.write_text("name,label\nx,angry\n")  # join by stem, change one label
    report = ingest([root], store, labels=labels, progress=False)
    assert report.annotated == 1
    assert store.clips(where="label = 'angry'")["clip_id"].to_list() == ["x.mp4"]
    assert store.clips(where="clip_id = 'y.wav'")["label"].to_list() == ["sad"]


def test_labels_without_join_column_fail_clearly(tmp_path, media_samples):
    copy_to(media_samples["wav"], tmp_path / "root" / "y.wav")
    labels = tmp_path / "labels.csv"
    labels.write_text("file,label\ny.wav,sad\n")
    with pytest.raises(LabelsError, match="path, clip_id, name"):
        ingest([tmp_path / "root"], Store(tmp_path / "store"), labels=labels, progress=False)
    assert not Store(tmp_path / "store").exists()  # failed before writing anything


def test_media_fills_rows_imported_without_media(tmp_path, media_samples):
    import pyarrow as pa

    store = Store(tmp_path / "store")
    # As `emofs import annotations` leaves them: keyed by name, no media yet.
    store.upsert_clips(pa.table({"clip_id": ["sample_01"], "name": ["sample_01"],
                                 "has_media": [False], "label": ["worried"]}))
    copy_to(media_samples["mp4"], tmp_path / "archive" / "sample_01.mp4")
    ingest([tmp_path / "archive"], store, progress=False)
    rows = store.clips().to_dicts()
    assert len(rows) == 1
    assert rows[0]["clip_id"] == "sample_01" and rows[0]["has_media"] is True
    assert rows[0]["label"] == "worried" and rows[0]["modality"] == "audio+video"


def test_allocator_sync_yields_ids_another_writer_committed():
    from featurestore.ids import ClipIdAllocator

    alloc = ClipIdAllocator({"old.wav": None})
    mine, root = "/x/copy2/a.wav", Path("/x/copy2")
    assert alloc.allocate(mine, root, "a.wav") == "a.wav"  # a claim, not committed yet
    assert alloc.adopt("old.wav", "/x/copy2/old.wav") == "old.wav"
    alloc.sync({"a.wav": "/x/copy1/a.wav", "old.wav": None, "b.wav": "/x/copy2/b.wav"})
    assert alloc.allocate(mine, root, "a.wav") == "copy2/a.wav"  # the committed row wins
    assert alloc.allocate("/x/copy2/old.wav", root, "old.wav") == "old.wav"  # adoption kept
    assert alloc.allocate("/x/copy2/b.wav", root, "b.wav") == "b.wav"


def test_ids_committed_by_another_ingest_mid_run_are_never_overwritten(tmp_path, monkeypatch):
    """Another ingest commits the same relative paths while this one probes: both survive."""
    import importlib

    from test_concurrency import _write_wav

    for copy in ("copy1", "copy2"):
        for i in range(3):
            _write_wav(tmp_path / copy / f"clip{i}.wav", pitch=300 + 50 * i)
    root = tmp_path / "store"
    module = importlib.import_module("extractors.ingest")
    probe_batch, raced = module._probe_batch, []

    def racing(batch, existing, workers):
        if not raced:  # ids are allocated already; now the other writer commits first
            raced.append(None)
            raced[0] = ingest([tmp_path / "copy1"], Store(root), progress=False)
        return probe_batch(batch, existing, workers)

    monkeypatch.setattr(module, "_probe_batch", racing)
    report = ingest([tmp_path / "copy2"], Store(root), progress=False)
    assert report.new == 3 and raced[0].new == 3
    rows = dict(Store(root).clips().select(["clip_id", "uri"]).iter_rows())
    assert len(rows) == 6
    assert {c: Path(u).parent.name for c, u in rows.items()} == {
        **{f"clip{i}.wav": "copy1" for i in range(3)}, **{f"copy2/clip{i}.wav": "copy2" for i in range(3)}}


def test_labels_hints_lead_somewhere(tmp_path, media_samples):
    """A CSV without a `label` column says so and how to use it; a CSV whose paths match
    nothing says how paths are read (both were silent: '122 clips got new labels')."""
    from typer.testing import CliRunner

    from cli import app

    folder = tmp_path / "clips"
    copy_to(media_samples["wav"], folder / "a.wav")
    (folder / "emotions.csv").write_text("path,emotion\na.wav,sad\n")
    store = str(tmp_path / "store")
    runner = CliRunner()
    result = runner.invoke(app, ["ingest", str(folder), "--labels", str(folder / "emotions.csv"), "--store", store])
    assert result.exit_code == 0, result.output
    assert "1 clips got new annotations (emotion)" in result.output
    assert "no `label` column" in result.output and "--label emotion" in result.output
    (tmp_path / "parent.csv").write_text("path,label\nelsewhere/a.wav,sad\n")
    result = runner.invoke(app, ["ingest", str(folder), "--labels", str(tmp_path / "parent.csv"), "--store", store])
    assert result.exit_code == 0 and "none matched: a path column is read relative to" in result.output
