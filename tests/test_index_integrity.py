"""Index integrity beyond bytes: an edited manifest, an id map that no longer matches its
vectors, and `emofs check` / `index build` finding the drift."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from cli import app
from featurestore import Store
from featurestore.check import check_store
from featurestore.features import write_features
from featurestore.index import IndexConfig, IndexCorruptError, build_index, load_index, read_manifest
from featurestore.index.files import checksum, seal_manifest

runner = CliRunner()
SPEC = {"encoder": "enc_a", "dim": 8, "weights": "test"}


def _store(tmp_path, n: int = 60) -> Store:
    store = Store(tmp_path / "store")
    ids = [f"clip{i:03d}.wav" for i in range(n)]
    store.upsert_clips(pa.table({"clip_id": ids, "uri": [f"/data/{c}" for c in ids], "rel_path": ids,
                                 "speaker": [f"s{i % 3}" for i in range(n)], "has_audio": [True] * n}))
    vectors = np.random.default_rng(0).normal(size=(n, 8)).astype(np.float32)  # (N, 8)
    write_features(store, "enc_a", ids, vectors, SPEC, dtype="float32")
    return store


def _edit_manifest(tmp_path, edit, *, reseal: bool) -> None:
    path = tmp_path / "store" / "index" / "enc_a.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    if reseal:
        manifest = seal_manifest(manifest)
    else:
        manifest["checksums"].pop("manifest", None)  # as an emofs from before the seal wrote it
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize("reseal", [False, True], ids=["unsealed", "resealed"])
def test_a_manifest_naming_the_wrong_kind_is_corrupt_not_an_attribute_error(tmp_path, reseal):
    store = _store(tmp_path)
    build_index(store, IndexConfig(["enc_a"], kind="flat"), progress=False)
    _edit_manifest(tmp_path, lambda m: m.update(kind="hnsw", params={"efSearch": 16}), reseal=reseal)

    with pytest.raises(IndexCorruptError, match=r"manifest says hnsw but the file holds a IndexFlatIP.*--rebuild`$"):
        load_index(store, "enc_a", use_cache=False)
    result = runner.invoke(app, ["similar", "clip001.wav", "--store", store.uri])
    assert result.exit_code == 1 and result.output.startswith("error: index 'enc_a'"), result.output
    assert len(result.output.strip().splitlines()) == 1 and "--rebuild" in result.output
    assert "IndexFlatIP" in check_store(store).indexes["enc_a"]

    report = build_index(store, IndexConfig(["enc_a"]), progress=False)
    assert report.mode == "rebuilt" and "damaged" in report.reason
    assert check_store(store).ok and read_manifest(store, "enc_a")["kind"] == "flat"


def test_an_edited_sealed_manifest_is_caught_by_its_own_checksum(tmp_path):
    store = _store(tmp_path)
    build_index(store, IndexConfig(["enc_a"], kind="flat"), progress=False)
    assert set(read_manifest(store, "enc_a")["checksums"]) == {"faiss", "ids", "manifest"}
    path = tmp_path / "store" / "index" / "enc_a.json"
    manifest = json.loads(path.read_text())
    manifest["weights"] = [2.0]  # no FAISS property disagrees: only the seal can tell
    path.write_text(json.dumps(manifest, indent=4))  # re-serialised differently: still fine if unedited
    with pytest.raises(IndexCorruptError, match=r"manifest was edited or damaged.*--rebuild`$"):
        load_index(store, "enc_a", use_cache=False)
    manifest["weights"] = [1.0]
    path.write_text(json.dumps(manifest, indent=4))
    assert len(load_index(store, "enc_a", use_cache=False).clip_ids) == 60


def test_a_manifest_dim_that_disagrees_is_corrupt(tmp_path):
    store = _store(tmp_path)
    build_index(store, IndexConfig(["enc_a"], kind="flat"), progress=False)
    _edit_manifest(tmp_path, lambda m: m.update(dim=9), reseal=True)
    with pytest.raises(IndexCorruptError, match="dim 9 is not the sum"):
        load_index(store, "enc_a", use_cache=False)


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_a_rotated_id_map_with_updated_checksums_is_drift_that_build_rebuilds(tmp_path, kind):
    store = _store(tmp_path)
    build_index(store, IndexConfig(["enc_a"], kind=kind), progress=False)
    assert check_store(store).ok  # no false alarm on a healthy index
    ids_path = tmp_path / "store" / "index" / "enc_a.ids.parquet"
    ids = pq.read_table(ids_path).column("clip_id").to_pylist()
    sink = io.BytesIO()
    pq.write_table(pa.table({"clip_id": ids[1:] + ids[:1]}), sink)
    ids_path.write_bytes(sink.getvalue())
    _edit_manifest(tmp_path, lambda m: m["checksums"].update(ids=checksum(sink.getvalue())), reseal=True)
    load_index(store, "enc_a", use_cache=False)  # bytes and manifest agree: it loads

    report = check_store(store)
    assert "has drifted from its feature sets" in report.indexes["enc_a"] and "--rebuild" in report.indexes["enc_a"]
    result = runner.invoke(app, ["check", "--store", store.uri])
    assert result.exit_code == 1 and "drifted" in result.output

    rebuilt = build_index(store, IndexConfig(["enc_a"], kind=kind), progress=False)
    assert rebuilt.mode == "rebuilt" and "drifted" in rebuilt.reason  # never "unchanged"
    assert check_store(store).ok
    assert store.similar("clip007.wav", k=1, include_self=True)["clip_id"][0] == "clip007.wav"


def test_an_id_map_naming_clips_without_features_is_drift(tmp_path):
    store = _store(tmp_path)
    build_index(store, IndexConfig(["enc_a"], kind="flat"), progress=False)
    ids_path = tmp_path / "store" / "index" / "enc_a.ids.parquet"
    ids = pq.read_table(ids_path).column("clip_id").to_pylist()
    sink = io.BytesIO()
    pq.write_table(pa.table({"clip_id": ["ghost.wav"] + ids[1:]}), sink)
    ids_path.write_bytes(sink.getvalue())
    _edit_manifest(tmp_path, lambda m: m["checksums"].update(ids=checksum(sink.getvalue())), reseal=True)
    assert "1 clips that have no features" in check_store(store).indexes["enc_a"]


def test_new_clips_and_group_normalised_indexes_are_not_drift(tmp_path):
    store = _store(tmp_path)
    build_index(store, IndexConfig(["enc_a"], kind="flat", name="spk", normalize="speaker",
                                   min_group_clips=5), progress=False)
    build_index(store, IndexConfig(["enc_a"], kind="flat"), progress=False)
    more = [f"new{i}.wav" for i in range(5)]
    store.upsert_clips(pa.table({"clip_id": more, "uri": more, "rel_path": more, "speaker": ["s0"] * 5,
                                 "has_audio": [True] * 5}))
    write_features(store, "enc_a", more, np.ones((5, 8), np.float32), SPEC, dtype="float32")
    assert check_store(store).ok  # behind its feature set (stale), not drifted
    assert build_index(store, IndexConfig(["enc_a"], kind="flat"), progress=False).mode == "added"
