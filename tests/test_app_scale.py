"""The analyst app at scale and by emotion: learned spaces offered first and named in
results, the build-space POST (CSRF-checked), the map served from the index's precomputed
layout, and the memory-bounded paths (memory-mapped index, columnar id maps) returning
the same neighbours as before."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette")
from starlette.testclient import TestClient  # noqa: E402

from featurestore import Store  # noqa: E402
from test_app import BASE, PAGE, app_store, cv_app  # noqa: E402,F401  (module fixtures)
from workflows.app import AppConfig, create_app  # noqa: E402


def _parse_map(blob: bytes) -> dict:
    assert blob[:4] == b"EMAP"
    (length,) = struct.unpack("<I", blob[4:8])
    head = json.loads(blob[8 : 8 + length])

    def section(name, dtype):
        at, size = head["sections"][name]
        return np.frombuffer(blob[at : at + size], dtype=dtype)

    offsets, raw = section("id_offsets", "<i4"), section("id_bytes", np.uint8).tobytes()
    head["clip_ids"] = [raw[offsets[i] : offsets[i + 1]].decode() for i in range(head["n"])]
    head["x"], head["y"], head["codes"] = section("x", "<f4"), section("y", "<f4"), section("codes", "<i4")
    return head


@pytest.fixture(scope="module")
def spaced(cv_app):
    """cv_app's store with a raw index over ``aud`` and the learned space of run fold-0
    built through the page's POST."""
    from featurestore.index import IndexConfig, build_index

    store, cv, ids, client = cv_app
    build_index(store, IndexConfig(["aud"]), progress=False)
    answer = client.post("/api/spaces", json={"run": "fold-0"})
    assert answer.status_code == 201, answer.text
    return store, ids, client, answer.json()


def test_the_learned_space_is_offered_first_and_named_in_results(spaced):
    store, ids, client, built = spaced
    space = built["space"]
    assert space["kind"] == "learned" and space["run_id"] == "fold-0" and space["index"] == "emotion"
    assert built["embedded"] == len(ids)
    listed = client.get("/api/spaces").json()
    assert [s["kind"] for s in listed["spaces"]] == ["learned", "raw"] and listed["default"] == "emotion"
    assert "fold-0" in listed["runs"]
    info = client.get("/api/info").json()
    assert info["spaces"][0]["index"] == "emotion"  # the page's first (default) option
    # no index named: the learned space, and the answer says so
    body = client.get(f"/api/similar/{ids[0]}", params={"k": 5}).json()
    assert body["index"] == "emotion" and body["space"]["kind"] == "learned"
    assert "learned by run fold-0" in body["space"]["label"]
    raw = client.get(f"/api/similar/{ids[0]}", params={"k": 5, "index": "aud"}).json()
    assert raw["index"] == "aud" and raw["space"]["kind"] == "raw"
    # in the learned space neighbours share the query's label more often than in raw aud
    page = Path(__file__).resolve().parents[1] / "workflows" / "app" / "static"
    assert 'id="result-space"' in (page / "index.html").read_text()


def test_build_space_post_is_csrf_checked_and_explains_failures(spaced, app_store, tmp_path):
    store, ids, client, _ = spaced
    bare = TestClient(create_app(AppConfig(store=store.uri, runs_dir=client.app.state.config.runs_dir),
                                 store=store), base_url=BASE)
    before = sorted(store.index_names())
    assert bare.post("/api/spaces", json={"run": "fold-0", "name": "x1"}).status_code == 403  # no Origin
    assert bare.post("/api/spaces", json={"run": "fold-0", "name": "x1"},
                     headers={"Origin": "http://evil.example"}).status_code == 403
    assert bare.post("/api/spaces", content=b'{"run": "fold-0"}',
                     headers={"Origin": BASE, "Content-Type": "text/plain"}).status_code == 415
    read_only = TestClient(create_app(AppConfig(store=store.uri, read_only=True,
                                                runs_dir=client.app.state.config.runs_dir), store=store),
                           base_url=BASE, headers=PAGE)
    assert read_only.post("/api/spaces", json={"run": "fold-0", "name": "x1"}).status_code == 403
    assert sorted(store.index_names()) == before  # nothing built
    missing = client.post("/api/spaces", json={"run": "no-such-run"})
    assert missing.status_code == 404 and "no head run 'no-such-run'" in missing.json()["error"]
    assert "fold-0" in missing.json()["error"]  # lists the runs there are
    assert client.post("/api/spaces", json={}).status_code == 400
    # a run trained on other feature sets than this store has: one line saying what to do
    other = TestClient(create_app(AppConfig(store=app_store.uri, runs_dir=client.app.state.config.runs_dir),
                                  store=app_store), base_url=BASE, headers=PAGE)
    refused = other.post("/api/spaces", json={"run": "fold-0"})
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert "cannot embed" in error and "\n" not in error and "emofs" in error
    assert "emotion" not in app_store.index_names()


def test_the_map_is_served_from_the_index_layout_computed_once_per_version(spaced, monkeypatch):
    import featurestore.index.layout as layout
    from featurestore.index import IndexConfig, build_index, load_index, read_manifest

    store, ids, client, _ = spaced
    path = Path(store.uri) / "index" / "aud.layout.arrow"
    assert path.is_file()  # written by the build
    first = client.get("/api/map", params={"source": "index:aud", "colour": "label", "format": "bin"})
    assert first.status_code == 200 and first.headers["content-type"] == "application/octet-stream"
    got = _parse_map(first.content)
    loaded = load_index(store, "aud", use_cache=False)
    assert got["cached"] and got["n"] == len(loaded.clip_ids) and got["clip_ids"] == loaded.clip_ids.to_list()
    expected = layout.pca_2d(loaded.index.reconstruct_n(0, loaded.index.ntotal))  # (N, 2)
    for axis, key in enumerate(("x", "y")):
        sign = np.sign(got[key] @ expected[:, axis]) or 1.0
        assert np.allclose(got[key], sign * expected[:, axis], atol=1e-3)
    labels = dict(zip(*store.clips(columns=["clip_id", "label"]).to_dict(as_series=False).values()))
    assert [got["values"][c] for c in got["codes"]] == [labels[c] for c in got["clip_ids"]]
    as_json = client.get("/api/map", params={"source": "index:aud", "colour": "label"}).json()
    assert as_json["clip_ids"] == got["clip_ids"] and np.allclose(as_json["x"], got["x"], atol=1e-3)

    def no_recompute(*args, **kwargs):
        raise AssertionError("the map was computed again")

    monkeypatch.setattr(layout, "pca_2d_chunks", no_recompute)
    again = _parse_map(client.get("/api/map", params={"source": "index:aud", "format": "bin"}).content)
    assert again["cached"] and np.array_equal(again["x"], got["x"])
    monkeypatch.undo()
    # a new index version (a rebuild) gets its own layout, stamped with its manifest
    old_stamp = path.stat().st_mtime_ns
    build_index(store, IndexConfig(["aud"], rebuild=True), progress=False)
    digest = read_manifest(store, "aud")["checksums"]["manifest"]
    import pyarrow as pa

    meta = pa.ipc.open_file(pa.memory_map(str(path))).schema.metadata
    assert json.loads(meta[layout.LAYOUT_KEY.encode()])["digest"] == digest and path.stat().st_mtime_ns != old_stamp
    # a layout missing (an index built by an older emofs) is computed on the first request, then kept
    path.unlink()
    fresh = _parse_map(client.get("/api/map", params={"source": "index:aud", "format": "bin"}).content)
    assert not fresh["cached"] and path.is_file()
    assert _parse_map(client.get("/api/map", params={"source": "index:aud", "format": "bin"}).content)["cached"]
    assert client.get("/api/map", params={"source": "index:nope"}).status_code == 404
    assert client.get("/api/map", params={"source": "index:aud", "format": "xml"}).status_code == 400


def test_memory_bounded_paths_return_the_same_neighbours(app_store):
    """A memory-mapped index and the columnar id map and clip metadata answer exactly what
    an in-memory index with Python dicts (and a brute-force scan) answers."""
    from featurestore.index import find_similar, fused_matrix, load_index
    from featurestore.index.ids import KeyColumn

    mapped = load_index(app_store, "egemaps")
    copied = load_index(app_store, "egemaps", use_cache=False, mmap=False)
    assert mapped.mapped and not copied.mapped
    ids = copied.clip_ids.to_list()
    by_dict = {c: i for i, c in enumerate(ids)}
    assert all(mapped.row_of()[c] == by_dict[c] for c in ids[::7])
    assert list(mapped.row_of().rows(ids[::-3] + ["nope"])) == [by_dict[c] for c in ids[::-3]]
    assert KeyColumn(ids).lookup(["nope", ids[5]]).tolist() == [-1, 5]
    got_ids, vectors, _ = fused_matrix(app_store, ["egemaps"], [1.0], stats=mapped.manifest.get("standardize"))
    for query in ids[:: max(1, len(ids) // 6)]:
        result = find_similar(app_store, query, k=8, index="egemaps", warn_stale=False)
        scores, rows = copied.index.search(copied.reconstruct(by_dict[query])[None], 9)
        want = [ids[r] for r in rows[0] if ids[r] != query][:8]
        assert [r["clip_id"] for r in result.rows] == want
        exact = vectors @ vectors[got_ids.index(query)]  # (N,) brute force, the index is flat or exact here
        top = [got_ids[i] for i in np.argsort(-exact, kind="stable") if got_ids[i] != query][:8]
        assert set(r["clip_id"] for r in result.rows[:3]) <= set(top)
        labels = dict(zip(*app_store.clips(columns=["clip_id", "label"]).to_dict(as_series=False).values()))
        assert [r["label"] for r in result.rows] == [labels[c] for c in want]
    sad = app_store.clips(where="label = 'sad'", columns=["clip_id"])["clip_id"].to_list()
    filtered = find_similar(app_store, ids[0], k=4, index="egemaps", where="label = 'sad'", warn_stale=False)
    assert len(filtered.rows) == 4 and {r["clip_id"] for r in filtered.rows} <= set(sad)


def test_key_hashes_agree_one_by_one_and_vectorised():
    """hash_key (a few keys in Python) and hash_keys (a column) give the same hashes for
    keys of every length class, multi-byte text, a sliced column and a null."""
    import pyarrow as pa

    from featurestore.index.ids import KeyColumn, hash_key, hash_keys

    keys = ["", "a", "abcdefgh", "abcdefghi", "x" * 63, "émotion/日本語.wav", "synthetic/clip000001.wav", None]
    column = pa.array(keys, pa.string())
    assert hash_keys(column).tolist() == [hash_key(k or "") for k in keys]
    assert hash_keys(column.slice(2, 4)).tolist() == [hash_key(k) for k in keys[2:6]]
    ids = KeyColumn(column)
    assert ids.lookup(["a", "nope", "abcdefghi", None]).tolist() == [1, -1, 3, -1]
    assert ids.lookup(["a", "nope", "abcdefghi", None]).tolist() == [1, -1, 3, -1]  # the kept page
    assert ids.lookup(["abcdefghi"]).tolist() == [3] and ids.take([6, 1]) == [keys[6], "a"]


def test_store_info_counts_without_a_frame_and_json_keeps_nan_as_null(app_store):
    """store_info's clip counts (streamed batch by batch) equal a group-by of the clips;
    the app's JSON is the C encoder's when every float is finite, NaN as null otherwise."""
    from featurestore import store_info
    from workflows.app.errors import json_bytes

    info = store_info(app_store)
    clips = app_store.clips(columns=["label", "modality"])
    assert info["clips"] == clips.height
    assert info["labels"] == {(k if k is not None else "<none>"): v for k, v in sorted(
        clips["label"].value_counts().iter_rows(), key=lambda kv: (-kv[1], kv[0] is None, kv[0] or ""))}
    assert sum(info["modalities"].values()) == clips.height
    assert json_bytes({"a": [1.5, float("nan")], "b": Path("/x")}) == b'{"a":[1.5,null],"b":"/x"}'


def test_warm_up_reads_the_search_caches_then_gives_memory_back(app_store):
    """The server's warm-up loads the default index and the clip columns (a search then
    finds them cached) and returns free pages; a manifest rewritten is read again."""
    from featurestore.index import IndexConfig, build_index, load_index, shared_manifest
    from workflows.app.memory import release_memory, warm

    warm(app_store)
    assert release_memory() > 0
    name = app_store.index_names()[0]
    before = shared_manifest(app_store, name)
    assert shared_manifest(app_store, name) is before and load_index(app_store, name) is load_index(app_store, name)
    build_index(app_store, IndexConfig([before["encoders"][0]], name=name, rebuild=True), progress=False)
    after = shared_manifest(app_store, name)
    assert after is not before and after["updated_at"] >= before["updated_at"]
    assert load_index(app_store, name).manifest["checksums"] == after["checksums"]
