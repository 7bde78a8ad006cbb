"""Lance-free version checks and the saved clip metadata behind a fast ``emofs similar``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import lance
import numpy as np
import pyarrow as pa
import pytest

from featurestore import Store
from featurestore.errors import SchemaVersionError
from featurestore.features import write_features
from featurestore.index import IndexConfig, build_index, find_similar
from featurestore.manifests import local_latest_version
from featurestore.schema import CLIPS, SCHEMA_VERSION, SCHEMA_VERSION_KEY
from featurestore.versioned import CACHE_DIR, dataset_version

REPO = Path(__file__).resolve().parents[1]
SPEC = {"weights": "synthetic", "dim": 8}


@pytest.mark.parametrize("v2_names", [False, True])
def test_latest_version_from_file_names_matches_lance(tmp_path, v2_names):
    path = str(tmp_path / "x.lance")
    assert local_latest_version(path) is None
    lance.write_dataset(pa.table({"a": [0]}), path, enable_v2_manifest_paths=v2_names)
    for i in range(1, 4):
        lance.write_dataset(pa.table({"a": [i]}), path, mode="append")
        assert local_latest_version(path) == lance.dataset(path).latest_version == i + 1
    lance.dataset(path).delete("a = 2")  # a delete commits a version too
    assert local_latest_version(path) == lance.dataset(path).latest_version == 5


def _store(root: Path, labels: list[str]) -> Store:
    store = Store(root)
    ids = [f"c{i:03d}" for i in range(len(labels))]
    store.upsert_clips(pa.table({"clip_id": ids, "label": labels, "rel_path": [f"{c}.wav" for c in ids]}))
    rng = np.random.default_rng(0)
    write_features(store, "enc", ids, rng.normal(size=(len(ids), 8)).astype(np.float32), SPEC,
                   dtype="float32")
    build_index(store, IndexConfig(encoders=["enc"], kind="flat"))
    return store


_SEARCH = """
import json, sys
from featurestore import Store
from featurestore.index import find_similar
result = find_similar(Store(sys.argv[1], create=False), "c000", k=5)
print(json.dumps({"rows": result.rows, "lance": "lance" in sys.modules}))
"""


def _search_in_new_process(store: Store) -> dict:
    proc = subprocess.run([sys.executable, "-c", _SEARCH, store.uri], cwd=REPO, capture_output=True,
                          text=True, check=True)
    return json.loads(proc.stdout)


def test_a_new_process_searches_an_unchanged_store_without_lance(tmp_path):
    store = _store(tmp_path / "s", ["sad", "happy"] * 20)
    cold = _search_in_new_process(store)  # opens Lance, saves the clip metadata
    warm = _search_in_new_process(store)
    assert cold["lance"] and not warm["lance"]
    assert warm["rows"] == cold["rows"] and len(warm["rows"]) == 5
    assert all(r["label"] in ("sad", "happy") and r["path"].endswith(".wav") for r in warm["rows"])


def test_saved_clip_metadata_follows_every_change(tmp_path):
    store = _store(tmp_path / "s", ["sad"] * 40)
    assert {r["label"] for r in _search_in_new_process(store)["rows"]} == {"sad"}
    # A label correction commits a new clips version: the saved metadata is not used.
    ids = [f"c{i:03d}" for i in range(40)]
    store.upsert_clips(pa.table({"clip_id": ids, "label": ["calm"] * 40}))
    after = _search_in_new_process(store)
    assert after["lance"] and {r["label"] for r in after["rows"]} == {"calm"}
    # The clips dataset deleted and written afresh restarts its version numbers: the
    # saved metadata of the old dataset must not match the new one.
    version = dataset_version(store, CLIPS)
    shutil.rmtree(store.path(CLIPS))
    fresh = Store(store.uri)
    for _ in range(version):
        fresh.upsert_clips(pa.table({"clip_id": ids, "label": ["angry"] * 40}))
    assert dataset_version(fresh, CLIPS) == version
    assert {r["label"] for r in _search_in_new_process(fresh)["rows"]} == {"angry"}


def test_newer_schema_is_refused_from_saved_metadata_too(tmp_path):
    store = _store(tmp_path / "s", ["sad", "happy"] * 20)
    _search_in_new_process(store)
    saved_file = Path(store.uri) / CACHE_DIR / "clip_meta.json"
    saved = json.loads(saved_file.read_text())
    saved["schema_version"] = SCHEMA_VERSION + 1
    saved_file.write_text(json.dumps(saved))
    with pytest.raises(SchemaVersionError, match="newer emofs"):
        find_similar(Store(store.uri), "c000", k=3)


def test_unreadable_saved_metadata_is_rebuilt(tmp_path):
    store = _store(tmp_path / "s", ["sad", "happy"] * 20)
    expected = _search_in_new_process(store)["rows"]
    (Path(store.uri) / CACHE_DIR / "clip_meta.json").write_text("{not json")
    assert _search_in_new_process(store)["rows"] == expected
    assert not _search_in_new_process(store)["lance"]  # rewritten by the run before


def test_newer_schema_is_refused_on_every_read_and_write(tmp_path):
    store = Store(tmp_path / "s")
    store.upsert_clips(pa.table({"clip_id": ["a"]}))
    store.dataset(CLIPS).replace_schema_metadata({SCHEMA_VERSION_KEY: str(SCHEMA_VERSION + 1)})
    reopened = Store(tmp_path / "s")  # opening is cheap: no Lance yet
    with pytest.raises(SchemaVersionError, match="newer emofs"):
        reopened.clips()
    with pytest.raises(SchemaVersionError):  # a retry from a notebook or a server: still refused
        reopened.clips()
    with pytest.raises(SchemaVersionError):
        reopened.upsert_clips(pa.table({"clip_id": ["b"]}))
    assert store.dataset(CLIPS).count_rows() == 1  # nothing written into the newer store


def test_snapshot_of_a_recreated_dataset_is_not_served_and_killed_writes_are_swept(tmp_path):
    import os

    from featurestore.versioned import Snapshot

    snap = Snapshot("facts.json", dump=list, load=list)
    store = Store(tmp_path / "s")
    store.upsert_clips(pa.table({"clip_id": ["a"]}))
    snap.write(store, CLIPS, 1, ["old"])
    assert snap.read(store, CLIPS, 1) == ["old"]
    manifest = next((Path(store.path(CLIPS)) / "_versions").iterdir())
    stat = manifest.stat()
    shutil.rmtree(store.path(CLIPS))  # recreated at the same version, same manifest size and mtime
    Store(tmp_path / "s").upsert_clips(pa.table({"clip_id": ["b"]}))
    for fresh in (Path(store.path(CLIPS)) / "_versions").iterdir():
        os.utime(fresh, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert snap.read(store, CLIPS, 1) is None

    cache = tmp_path / "s" / CACHE_DIR
    killed, writing = cache / ".facts.json.1.2.tmp", cache / ".facts.json.3.4.tmp"
    killed.write_text("{")
    writing.write_text("{")
    os.utime(killed, (0, 0))  # left by a process killed long ago
    snap.write(store, CLIPS, 1, ["new"])
    assert snap.read(store, CLIPS, 1) == ["new"]
    assert not killed.exists() and writing.exists()  # another writer's fresh file is left alone
