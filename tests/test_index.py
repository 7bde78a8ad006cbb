"""FAISS indexes and `emofs similar`: kinds, filters, fusion, incremental adds, errors, CLI."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from cli import app
from featurestore import InputError, Store
from featurestore.features import write_features
from featurestore.index import (
    DimensionMismatchError,
    IndexConfig,
    IndexCorruptError,
    IndexNotFoundError,
    build_index,
    drop_index,
    list_indexes,
    load_index,
    read_manifest,
)
from featurestore.index import find_similar, neighbour_vote

runner = CliRunner()
LABELS = ["sad", "happy", "angry", "neutral"]
SPEC_A = {"encoder": "enc_a", "dim": 16, "weights": "test"}
SPEC_B = {"encoder": "enc_b", "dim": 6, "weights": "test"}


def _clustered(n: int, dim: int, seed: int, centres: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(centres, dim)) * 3
    which = np.arange(n) % centres
    return (means[which] + rng.normal(size=(n, dim))).astype(np.float32), which


def _add_clips(store: Store, start: int, n: int, *, seed: int = 0,
               encoders: dict[str, tuple[dict, int]] | None = None) -> list[str]:
    ids = [f"clip{i:05d}.wav" for i in range(start, start + n)]
    which = np.arange(start, start + n) % len(LABELS)
    store.upsert_clips(pa.table({
        "clip_id": ids,
        "uri": [f"/data/{c}" for c in ids],
        "rel_path": ids,
        "label": [LABELS[w] for w in which],
        "split": ["train" if i % 3 else "test" for i in range(start, start + n)],
        "has_audio": [True] * n,
    }))
    for j, (name, (spec, dim)) in enumerate((encoders or {"enc_a": (SPEC_A, 16)}).items()):
        vectors, _ = _clustered(n + start, dim, seed=seed + j)
        write_features(store, name, ids, vectors[start:], spec, dtype="float32")
    return ids


@pytest.fixture()
def store(tmp_path) -> Store:
    s = Store(tmp_path / "store")
    _add_clips(s, 0, 400)
    return s


def _zscore_unit(x: np.ndarray) -> np.ndarray:
    """Reference of the index metric: z-score each dim over the indexed rows, then L2."""
    std = x.std(axis=0)
    z = (x - x.mean(axis=0)) / np.where(std < 1e-8, 1.0, std)
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def _exact_neighbours(store: Store, query: str, k: int, allowed: set[str] | None = None) -> list[str]:
    from featurestore.features import read_features

    m = read_features(store, "enc_a")
    x = _zscore_unit(m.vectors.astype(np.float64))  # (N, D)
    q = x[m.clip_ids.index(query)]
    scores = x @ q
    order = [m.clip_ids[i] for i in np.argsort(-scores, kind="stable")]
    order = [c for c in order if c != query and (allowed is None or c in allowed)]
    return order[:k]


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_self_query_ranks_self_first_only_with_include_self(store, kind):
    report = build_index(store, IndexConfig(["enc_a"], kind=kind), progress=False)
    assert (report.kind, report.mode, report.rows, report.dim) == (kind, "created", 400, 16)
    with_self = store.similar("clip00007.wav", k=5, include_self=True)
    assert with_self["clip_id"][0] == "clip00007.wav"
    assert with_self["score"][0] == pytest.approx(1.0, abs=1e-4)
    assert with_self["rank"].to_list() == [1, 2, 3, 4, 5]
    default = store.similar("clip00007.wav", k=5)
    assert "clip00007.wav" not in default["clip_id"].to_list() and default.height == 5
    scores = default["score"].to_list()
    assert scores == sorted(scores, reverse=True)
    exact = _exact_neighbours(store, "clip00007.wav", 5)
    overlap = len(set(default["clip_id"]) & set(exact))
    assert overlap == 5 if kind == "flat" else overlap >= 4
    assert set(default["label"]) <= set(LABELS) and default["path"][0].endswith(".wav")


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
@pytest.mark.parametrize("force_selector", [False, True])
def test_filter_is_honoured_and_k_returned(store, kind, force_selector, monkeypatch):
    import featurestore.index.search as search

    if force_selector:  # exercise the FAISS id-selector path instead of the exact subset scan
        monkeypatch.setattr(search, "EXACT_SUBSET_MAX", 0)
    build_index(store, IndexConfig(["enc_a"], kind=kind), progress=False)
    # Exact scan: a filter correlated with the neighbourhood (sad clips for an angry query).
    # Selector path: an uncorrelated filter, where ANN recall must hold.
    where = "split = 'train'" if force_selector else "label = 'sad' AND split = 'train'"
    allowed = set(store.clips(where=where)["clip_id"])
    frame = store.similar("clip00002.wav", k=12, where=where)  # an 'angry' clip
    assert frame.height == 12 and set(frame["clip_id"]) <= allowed
    if not force_selector:
        assert set(frame["label"]) == {"sad"}
    exact = _exact_neighbours(store, "clip00002.wav", 12, allowed)
    assert len(set(frame["clip_id"]) & set(exact)) >= (12 if kind == "flat" or not force_selector else 10)
    # A filter leaving fewer than k rows returns all of them (self excluded).
    few = "clip_id IN ('clip00001.wav', 'clip00005.wav', 'clip00009.wav', 'clip00002.wav')"
    frame = store.similar("clip00002.wav", k=10, where=few)
    assert sorted(frame["clip_id"]) == ["clip00001.wav", "clip00005.wav", "clip00009.wav"]


def test_fused_index_across_dims_scores_weighted_mean_cosine(tmp_path):
    store = Store(tmp_path / "store")
    _add_clips(store, 0, 120, encoders={"enc_a": (SPEC_A, 16), "enc_b": (SPEC_B, 6)})
    # A clip with only one encoder is left out of the fused index.
    store.upsert_clips(pa.table({"clip_id": ["lonely.wav"], "label": ["sad"]}))
    write_features(store, "enc_a", ["lonely.wav"], np.ones((1, 16), np.float32), SPEC_A, dtype="float32")
    report = build_index(store, IndexConfig(["enc_a", "enc_b"], [1.0, 0.5], kind="flat"), progress=False)
    assert (report.name, report.rows, report.dim) == ("enc_a+enc_b", 120, 22)
    manifest = read_manifest(store, "enc_a+enc_b")
    assert manifest["fused"] and manifest["weights"] == [1.0, 0.5]
    assert manifest["feature_sets"]["enc_b"]["dim"] == 6

    from featurestore.features import read_features

    def unit(name):
        m = read_features(store, name)
        order = [i for i in np.argsort(m.clip_ids) if m.clip_ids[i] != "lonely.wav"]  # indexed rows
        x = m.vectors[order].astype(np.float64)
        ids = [m.clip_ids[i] for i in order]
        return ids, _zscore_unit(x)

    ids_a, xa = unit("enc_a")
    ids_b, xb = unit("enc_b")
    ia = {c: i for i, c in enumerate(ids_a)}
    ib = {c: i for i, c in enumerate(ids_b)}
    frame = store.similar("clip00010.wav", k=5)
    for cid, score in zip(frame["clip_id"], frame["score"]):
        expected = (xa[ia[cid]] @ xa[ia["clip00010.wav"]] + 0.5 * (xb[ib[cid]] @ xb[ib["clip00010.wav"]])) / 1.5
        assert score == pytest.approx(float(expected), abs=1e-4)
    assert "lonely.wav" not in load_index(store, "enc_a+enc_b").clip_ids


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_new_clips_are_added_incrementally_and_staleness_warned(store, kind, caplog):
    build_index(store, IndexConfig(["enc_a"], kind=kind), progress=False)
    new_ids = _add_clips(store, 400, 30)
    with caplog.at_level(logging.WARNING, logger="featurestore"):
        result = find_similar(store, "clip00003.wav", k=3)
    assert any("30 clips extracted since the build" in n for n in result.notes)
    assert "emofs index build --encoder enc_a" in caplog.text  # the library logs, the CLI shows
    report = build_index(store, IndexConfig(["enc_a"], kind="auto"), progress=False)
    assert (report.mode, report.kind, report.added, report.rows) == ("added", kind, 30, 430)
    assert load_index(store, "enc_a").clip_ids[-30:] == new_ids
    frame = store.similar(new_ids[5], k=3, include_self=True)
    assert frame["clip_id"][0] == new_ids[5]
    assert find_similar(store, "clip00003.wav", k=3).notes == []
    again = build_index(store, IndexConfig(["enc_a"]), progress=False)
    assert (again.mode, again.added) == ("unchanged", 0)


def test_changed_fingerprint_rebuilds_and_says_why(store):
    build_index(store, IndexConfig(["enc_a"], kind="flat"), progress=False)
    ids = store.clips()["clip_id"].to_list()
    vectors, _ = _clustered(len(ids), 16, seed=9)
    write_features(store, "enc_a", ids, vectors, {**SPEC_A, "weights": "v2"}, dtype="float32")
    assert "spec of 'enc_a' changed" in list_indexes(store)[0]["status"]
    report = build_index(store, IndexConfig(["enc_a"]), progress=False)
    assert report.mode == "rebuilt" and "spec of 'enc_a' changed" in report.reason
    assert report.rows == 400


def test_feature_set_extracted_afresh_to_the_same_version_is_not_taken_for_the_built_one(store):
    from featurestore.schema import features_name
    from featurestore.versioned import dataset_version

    build_index(store, IndexConfig(["enc_a"], kind="flat"), progress=False)
    built = dataset_version(store, features_name("enc_a"))
    ids = store.clips()["clip_id"].to_list()
    store.remove(features_name("enc_a"))
    vectors, _ = _clustered(len(ids), 16, seed=9)
    while (dataset_version(store, features_name("enc_a")) or 0) < built:  # new weights, same version
        write_features(store, "enc_a", ids, vectors, {**SPEC_A, "weights": "v2"}, dtype="float32")
    assert dataset_version(store, features_name("enc_a")) == built
    assert "spec of 'enc_a' changed" in list_indexes(store)[0]["status"]
    result = find_similar(store, "clip00003.wav", k=3)
    assert any("spec of 'enc_a' changed" in n for n in result.notes)


def test_missing_corrupt_index_and_dim_mismatch_are_clear(store, tmp_path):
    with pytest.raises(IndexNotFoundError, match="emofs index build --encoder"):
        store.similar("clip00001.wav")
    build_index(store, IndexConfig(["enc_a"], kind="hnsw"), progress=False)
    with pytest.raises(InputError, match="unknown clip 'nope'"):
        store.similar("nope")
    faiss_file = tmp_path / "store" / "index" / "enc_a.faiss"
    good = faiss_file.read_bytes()
    faiss_file.write_bytes(b"not a faiss index at all")
    with pytest.raises(IndexCorruptError, match="corrupt.*--rebuild"):
        load_index(store, "enc_a", use_cache=False)
    result = runner.invoke(app, ["similar", "clip00001.wav", "--store", store.uri])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert "corrupt" in result.output
    faiss_file.write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(IndexCorruptError):
        load_index(store, "enc_a", use_cache=False)
    faiss_file.unlink()
    with pytest.raises(IndexCorruptError, match="missing"):
        load_index(store, "enc_a", use_cache=False)
    # A rebuild repairs it; then the feature set changes dim under the index.
    build_index(store, IndexConfig(["enc_a"], kind="flat", rebuild=True), progress=False)
    ids = store.clips()["clip_id"].to_list()
    write_features(store, "enc_a", ids, np.ones((len(ids), 8), np.float32),
                   {**SPEC_A, "dim": 8}, dtype="float32")
    with pytest.raises(DimensionMismatchError, match="dim 8 .*dim 16.*--rebuild"):
        store.similar("clip00001.wav")


def test_new_media_file_query_without_extractor_is_clear(store, tmp_path, monkeypatch):
    import workflows.similar as wsim

    build_index(store, IndexConfig(["enc_a"], kind="flat"), progress=False)
    media = tmp_path / "new.wav"
    media.write_bytes(b"RIFF")
    # featurestore runs no encoders: without a file_vectors callback a new file is refused.
    with pytest.raises(InputError, match="not in the store.*emofs similar FILE"):
        store.similar(str(media))
    calls = []

    def fake_extract_file(path, feature_sets, st, add=False):
        calls.append((path, tuple(feature_sets), add))
        return {"enc_a": {"vector": np.full(16, 0.5, np.float32), "tokens": None}}

    # With the extraction contract available (the workflows layer), the file's vector is searched.
    monkeypatch.setattr(wsim, "extract_file", fake_extract_file)
    frame = wsim.similar(store, str(media), k=4)
    assert frame.height == 4 and calls == [(media.resolve(), ("enc_a",), False)]
    # The same through featurestore with an explicit callback.
    vectors = lambda path, encoders, add: {"enc_a": np.full(16, 0.5, np.float32)}  # noqa: E731
    assert find_similar(store, str(media), k=4, file_vectors=vectors).frame.equals(frame)
    # A vector of the wrong size is a one-line dim error.
    monkeypatch.setattr(wsim, "extract_file",
                        lambda p, f, s, add=False: {"enc_a": {"vector": np.ones(5), "tokens": None}})
    with pytest.raises(DimensionMismatchError, match="dim 5"):
        wsim.similar(store, str(media))
    # An encoder that does not apply to the file's modality is named.
    monkeypatch.setattr(wsim, "extract_file", lambda p, f, s, add=False: {})
    with pytest.raises(InputError, match="gave no 'enc_a' features"):
        wsim.similar(store, str(media))


def test_index_config_from_flags():
    config = IndexConfig.from_flags(encoder="enc_a", fused=None, weights=None, kind="flat",
                                    name=None, recall=0.9, nlist=None, rebuild=True,
                                    standardize=False)
    assert (config.encoders, config.weights, config.name, config.kind) == (["enc_a"], [1.0], "enc_a", "flat")
    assert (config.recall, config.rebuild, config.standardize) == (0.9, True, False)
    fused = IndexConfig.from_flags(encoder=None, fused="enc_a, enc_b", weights="1,0.5")
    assert (fused.encoders, fused.weights, fused.name) == (["enc_a", "enc_b"], [1.0, 0.5], "enc_a+enc_b")
    with pytest.raises(InputError, match="exactly one of --encoder NAME or --fused A,B"):
        IndexConfig.from_flags(encoder="a", fused="a,b", weights=None)
    with pytest.raises(InputError, match="exactly one of"):
        IndexConfig.from_flags(encoder=None, fused=None, weights=None)
    with pytest.raises(InputError, match="--weights goes with --fused"):
        IndexConfig.from_flags(encoder="a", fused=None, weights="1")
    with pytest.raises(InputError, match="--weights must be numbers"):
        IndexConfig.from_flags(encoder=None, fused="a,b", weights="1,x")
    with pytest.raises(InputError, match="--fused takes a comma-separated list without empty"):
        IndexConfig.from_flags(encoder=None, fused="a,,b", weights=None)
    with pytest.raises(InputError, match="one value per encoder"):
        IndexConfig.from_flags(encoder=None, fused="a,b", weights="1")
    with pytest.raises(InputError, match="--kind must be one of"):
        IndexConfig.from_flags(encoder="a", fused=None, weights=None, kind="lsh")


def test_cli_build_list_similar_drop(store):
    s = ["--store", store.uri]
    result = runner.invoke(app, ["index", "build", "--encoder", "enc_a", "--kind", "hnsw", *s])
    assert result.exit_code == 0, result.output
    assert "index enc_a: created, hnsw, 400 rows" in result.output and "efSearch=" in result.output
    result = runner.invoke(app, ["index", "build", "--encoder", "enc_a", "--fused", "a,b", *s])
    assert result.exit_code == 1 and "exactly one of" in result.output
    result = runner.invoke(app, ["index", "build", "--fused", "enc_a", "--weights", "1,2", *s])
    assert result.exit_code == 1 and "one value per encoder" in result.output

    result = runner.invoke(app, ["similar", "clip00000.wav", "-k", "10", "--format", "json", *s])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["rank"] for r in rows] == list(range(1, 11))
    assert set(rows[0]) == {"rank", "clip_id", "path", "label", "score"}
    assert "neighbours:" in result.stderr
    result = runner.invoke(app, ["similar", "/data/clip00000.wav", "-k", "3", "--include-self", *s])
    assert result.exit_code == 0, result.output
    assert "clip00000.wav" in result.stdout and "2/2 neighbours:" in result.stdout  # self does not vote

    runner.invoke(app, ["index", "build", "--encoder", "enc_a", "--kind", "flat", "--name", "exact", *s])
    result = runner.invoke(app, ["similar", "clip00000.wav", "-f", "csv", *s])
    assert "most recently built of 2" in result.stderr and "exact" in result.stderr
    result = runner.invoke(app, ["index", "list", "--format", "json", *s])
    listed = {r["name"]: r for r in json.loads(result.stdout)}
    assert listed["exact"]["kind"] == "flat" and listed["enc_a"]["status"] == "up to date"
    result = runner.invoke(app, ["info", "--json", *s])
    assert json.loads(result.stdout)["indexes"]["exact"]["rows"] == 400
    result = runner.invoke(app, ["index", "drop", "exact", *s])
    assert result.exit_code == 0 and store.index_names() == ["enc_a"]
    result = runner.invoke(app, ["index", "drop", "exact", *s])
    assert result.exit_code == 1 and "no index 'exact'" in result.output


def test_neighbour_vote_line():
    import polars as pl

    frame = pl.DataFrame({"clip_id": ["q", "a", "b", "c"], "label": ["x", "sad", "sad", None]})
    assert neighbour_vote(frame, exclude="q") == "2/3 neighbours: sad"
    assert neighbour_vote(frame.head(1), exclude="q") is None


def test_drop_missing_is_clear(store):
    with pytest.raises(IndexNotFoundError, match="emofs index list"):
        drop_index(store, "ghost")
    with pytest.raises(InputError, match="invalid index name"):
        drop_index(store, "../x")


def test_real_clips_egemaps_neighbours(shared_store, tmp_path):
    """Over the shared clips with `egemaps`: neighbours of a RAVDESS clip, by score, labelled."""
    extractors = pytest.importorskip("extractors")
    extract = getattr(extractors, "extract", None)
    if extract is None:
        pytest.skip("extractors.extract is not available yet")
    store = Store(tmp_path / "store")
    shutil.copytree(shared_store.uri, store.uri)
    store = Store(store.uri)
    extract(store, ["egemaps"], where="has_audio")
    report = build_index(store, IndexConfig(["egemaps"]), progress=False)
    assert report.kind == "flat" and report.rows >= 50 and report.dim == 88
    ravdess = store.clips(where="has_audio AND uri LIKE '%ravdess%'")
    assert ravdess.height
    query = ravdess["clip_id"][0]
    result = find_similar(store, query, k=8)
    frame = result.frame
    assert frame.height == 8 and query not in frame["clip_id"].to_list()
    scores = frame["score"].to_list()
    assert scores == sorted(scores, reverse=True) and all(-1.0 <= s <= 1.0001 for s in scores)
    assert frame["label"].null_count() == 0
    assert result.vote().split(" neighbours: ")[1].split(" ")[0] in set(frame["label"])
    # The same audio as a new file (not in the store) finds the stored clip first.
    from workflows.similar import similar

    src = ravdess["uri"][0]
    copy = tmp_path / ("copy_" + src.rsplit("/", 1)[-1])
    shutil.copyfile(src, copy)
    again = similar(store, str(copy), k=3)
    assert again["clip_id"][0] == query and again["score"][0] == pytest.approx(1.0, abs=1e-3)


def test_standardize_keeps_large_raw_dims_from_dominating(tmp_path):
    """eGeMAPS-like vectors: one dim in the thousands, the emotion in small dims."""
    store = Store(tmp_path / "s")
    n = 40
    rng = np.random.default_rng(0)
    which = np.arange(n) % 2
    vectors = rng.normal(size=(n, 8)).astype(np.float32) * 0.1
    vectors[:, :4] += np.where(which[:, None] == 0, 1.0, -1.0)  # the class signal
    vectors[:, 7] = 3000 + rng.normal(size=n) * 30  # e.g. a pitch in Hz
    ids = [f"c{i:02d}.wav" for i in range(n)]
    store.upsert_clips(pa.table({"clip_id": ids, "label": [LABELS[w] for w in which]}))
    write_features(store, "gemaps", ids, vectors, {"encoder": "gemaps"}, dtype="float32")

    build_index(store, IndexConfig(["gemaps"], name="plain", standardize=False), progress=False)
    plain = store.similar(ids[0], k=5, index="plain")
    assert plain["score"].min() > 0.999  # raw cosine: everything looks the same

    build_index(store, IndexConfig(["gemaps"], name="std"), progress=False)
    assert read_manifest(store, "std")["standardize"] is not None
    hits = 0
    for i in range(n):
        frame = store.similar(ids[i], k=5, index="std")
        hits += sum(label == LABELS[which[i]] for label in frame["label"].to_list())
    assert hits >= 0.95 * 5 * n  # neighbours share the class once each dim is z-scored
    scores = store.similar(ids[0], k=39, index="std")["score"]
    assert scores.min() < 0  # scores spread over [-1, 1]


# ------------------------------------------------------------------ integrity (checksums)
def _garble_middle(path, size: int = 4096) -> None:
    """Overwrite ``size`` bytes in the middle of a file, as a bad disk or a stray write would."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + size] = np.random.default_rng(7).integers(0, 256, size, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


def test_garbled_index_bytes_are_caught_rebuilt_and_reported(store, tmp_path):
    from featurestore.check import check_store

    build_index(store, IndexConfig(["enc_a"], kind="flat"), progress=False)
    manifest = read_manifest(store, "enc_a")
    assert set(manifest["checksums"]) == {"faiss", "ids", "manifest"}
    assert all(v.startswith("sha256:") for v in manifest["checksums"].values())
    _garble_middle(tmp_path / "store" / "index" / "enc_a.faiss")

    with pytest.raises(IndexCorruptError, match=r"sha256 .*--encoder enc_a --rebuild`$"):
        store.similar("clip00001.wav")
    result = runner.invoke(app, ["similar", "clip00001.wav", "--store", store.uri])
    assert result.exit_code == 1, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert result.output.startswith("error: index file") and "--rebuild" in result.output
    report = check_store(store)
    assert list(report.indexes) == ["enc_a"] and "corrupt" in report.indexes["enc_a"]

    rebuilt = build_index(store, IndexConfig(["enc_a"], kind="flat"), progress=False)
    assert rebuilt.mode == "rebuilt" and rebuilt.reason.startswith("the old index is damaged: ")
    assert rebuilt.rows == 400 and check_store(store).ok
    assert store.similar("clip00001.wav", k=3)["score"].max() <= 1.0 + 1e-3

    (tmp_path / "store" / "index" / "enc_a.ids.parquet").write_bytes(b"PAR1 garbage PAR1")
    with pytest.raises(IndexCorruptError, match="id map .*corrupt"):
        load_index(store, "enc_a", use_cache=False)


def test_index_without_checksums_loads_and_never_ranks_garbage(store, tmp_path):
    """A manifest from before checksums: nothing to verify, but scores are still checked."""
    from featurestore.check import check_store

    build_index(store, IndexConfig(["enc_a"], kind="flat"), progress=False)
    path = tmp_path / "store" / "index" / "enc_a.json"
    old = json.loads(path.read_text())
    old.pop("checksums")
    path.write_text(json.dumps(old))
    assert len(load_index(store, "enc_a", use_cache=False).clip_ids) == 400  # still loads
    assert len(store.similar("clip00001.wav", k=5)) == 5

    _garble_middle(tmp_path / "store" / "index" / "enc_a.faiss")
    with pytest.raises(IndexCorruptError, match=r"score of .*not a cosine.*--rebuild"):
        store.similar("clip00001.wav", k=400)
    assert "not unit length" in check_store(store).indexes["enc_a"]
    report = build_index(store, IndexConfig(["enc_a"], kind="flat"), progress=False)
    assert report.mode == "rebuilt" and "no checksums" in report.reason  # never blessed as is
    assert "checksums" in read_manifest(store, "enc_a")


def test_check_repair_rebuilds_a_damaged_index(store, tmp_path):
    build_index(store, IndexConfig(["enc_a"], kind="hnsw"), progress=False)
    _garble_middle(tmp_path / "store" / "index" / "enc_a.faiss")
    result = runner.invoke(app, ["check", "--store", store.uri])
    assert result.exit_code == 1 and "index enc_a:" in result.output
    result = runner.invoke(app, ["check", "--repair", "--json", "--store", store.uri])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["ok"] and summary["repaired"]["indexes_rebuilt"] == ["enc_a"]
    assert read_manifest(store, "enc_a")["kind"] == "hnsw" and len(store.similar("clip00001.wav")) == 10


# ------------------------------------------------------------------ --normalize GROUP
def _speaker_clips(store: Store, n_speakers: int = 8, per: int = 24, seed: int = 3,
                   small: int = 0) -> np.ndarray:
    """3 classes; each speaker adds an offset far larger than the class signal.

    ``small`` extra clips go to a speaker too small for its own statistics.
    """
    rng = np.random.default_rng(seed)
    n = n_speakers * per + small
    cls = np.arange(n) % 3
    speaker = [f"spk{i // per}" for i in range(n_speakers * per)] + ["tiny"] * small
    ids = [f"s{i:04d}" for i in range(n)]
    store.upsert_clips(pa.table({"clip_id": ids, "uri": [f"/d/{c}.wav" for c in ids], "rel_path": ids,
                                 "label": [LABELS[c] for c in cls], "speaker": speaker}))
    means = rng.normal(0, 1.0, (3, 10))
    offsets = rng.normal(0, 8.0, (n_speakers + 1, 10))
    which = np.array([int(s[3:]) if s != "tiny" else n_speakers for s in speaker])
    x = means[cls] + offsets[which] + rng.normal(0, 0.4, (n, 10))  # (N, 10)
    write_features(store, "feat", ids, x, {"weights": "speakers"}, dtype="float32")
    return x


def _label_agreement(store: Store, index: str, ids: list[str], k: int = 5) -> float:
    """Label agreement of the ``k`` nearest clips of OTHER speakers (P@k across speakers)."""
    clips = store.clips(columns=["clip_id", "label", "speaker"])
    labels = dict(zip(clips["clip_id"].to_list(), clips["label"].to_list()))
    speakers = dict(zip(clips["clip_id"].to_list(), clips["speaker"].to_list()))
    hits = [np.mean([lab == labels[q] for lab in find_similar(
        store, q, k=k, index=index, warn_stale=False, where=f"speaker != '{speakers[q]}'").frame["label"].to_list()])
        for q in ids]
    return float(np.mean(hits))


def test_normalize_speaker_index_removes_speaker_offsets(tmp_path):
    store = Store(tmp_path / "s")
    _speaker_clips(store, small=4)
    build_index(store, IndexConfig(["feat"], name="raw", kind="flat"), progress=False)
    report = build_index(store, IndexConfig(["feat"], name="spk", kind="flat", normalize="speaker"),
                         progress=False)
    assert report.normalize == {"column": "speaker", "groups": 8, "fallback_groups": {"tiny": 4}}
    manifest = read_manifest(store, "spk")
    assert manifest["normalize"]["column"] == "speaker" and set(manifest["normalize"]["groups"]) == {
        f"spk{i}" for i in range(8)}
    queries = [f"s{i:04d}" for i in range(0, 192, 7)]
    raw, normed = _label_agreement(store, "raw", queries), _label_agreement(store, "spk", queries)
    assert raw < 0.6 and normed > 0.95, (raw, normed)
    # A stored clip is normalised with its speaker's statistics: it finds itself at cosine 1.
    top = find_similar(store, "s0005", k=1, index="spk", include_self=True).frame
    assert top["clip_id"][0] == "s0005" and top["score"][0] == pytest.approx(1.0, abs=1e-4)


def test_normalize_index_queries_a_new_file_with_its_group(tmp_path):
    store = Store(tmp_path / "s")
    x = _speaker_clips(store)
    build_index(store, IndexConfig(["feat"], name="spk", kind="flat", normalize="speaker"), progress=False)
    media = tmp_path / "new.wav"
    media.write_bytes(b"not decoded: the callback gives the vector")
    same = lambda path, encoders, add: {"feat": x[30]}  # noqa: E731 - clip s0030 (spk1)
    hit = find_similar(store, str(media), k=1, index="spk", file_vectors=same, group="spk1")
    assert hit.frame["clip_id"][0] == "s0030" and hit.frame["score"][0] == pytest.approx(1.0, abs=1e-4)
    unknown = find_similar(store, str(media), k=1, index="spk", file_vectors=same)
    assert any("unknown (pass --group)" in n for n in unknown.notes)
    assert unknown.frame["score"][0] < 0.99  # global statistics: not the same vector any more


def test_normalize_index_rebuilds_when_groups_change_and_cli(tmp_path):
    store = Store(tmp_path / "s")
    _speaker_clips(store)
    result = runner.invoke(app, ["index", "build", "-e", "feat", "--normalize", "speaker", "--name", "spk",
                                 "--store", store.uri])
    assert result.exit_code == 0 and "normalised by speaker: 8 groups" in result.output, result.output
    assert build_index(store, IndexConfig(["feat"], name="spk", normalize="speaker"),
                       progress=False).mode == "unchanged"
    store.upsert_clips(pa.table({"clip_id": ["s0000"], "speaker": ["spk7"]}))
    report = build_index(store, IndexConfig(["feat"], name="spk", normalize="speaker"), progress=False)
    assert report.mode == "rebuilt" and report.reason == "the clips' speaker values changed"
    write_features(store, "feat", ["s9999"], np.zeros((1, 10)), {"weights": "speakers"}, dtype="float32")
    report = build_index(store, IndexConfig(["feat"], name="spk", normalize="speaker"), progress=False)
    assert report.mode == "rebuilt" and "new clips change their groups' statistics" in report.reason
    report = build_index(store, IndexConfig(["feat"], name="spk"), progress=False)
    assert report.mode == "rebuilt" and "--normalize speaker -> none" in report.reason
    result = runner.invoke(app, ["index", "build", "-e", "feat", "--normalize", "accent", "--store", store.uri])
    assert result.exit_code == 1 and "--normalize accent: clips have no 'accent' column" in result.output
    with pytest.raises(InputError, match="drop --no-standardize"):
        IndexConfig(["feat"], normalize="speaker", standardize=False)


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_query_vector_read_back_from_the_index_equals_the_stored_features(store, kind):
    from featurestore.features import read_features
    from featurestore.index import fuse_vectors

    build_index(store, IndexConfig(["enc_a"], kind=kind), progress=False)
    loaded = load_index(store, "enc_a")
    features = read_features(store, "enc_a")
    manifest = loaded.manifest
    for clip in ("clip00000.wav", "clip00123.wav", "clip00399.wav"):
        stored = features.vectors[features.clip_ids.index(clip)][None]  # (1, D)
        want = fuse_vectors([stored], manifest["weights"], manifest["standardize"])[0]  # (D,)
        got = loaded.reconstruct(loaded.row_of()[clip])
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
        first = find_similar(store, clip, k=5, include_self=True).frame
        assert first["clip_id"][0] == clip and first["score"][0] == pytest.approx(1.0, abs=1e-5)


def test_search_sees_new_features_and_relabels_after_the_index_was_built(store):
    build_index(store, IndexConfig(["enc_a"], kind="flat"), progress=False)
    before = find_similar(store, "clip00007.wav", k=3).frame
    # the clip's features are re-extracted (same spec, new vector) without an index update:
    # the query must use the stored vector, not the index's old copy of it
    far = read_features_of(store, "clip00008.wav") * -1.0
    write_features(store, "enc_a", ["clip00007.wav"], far[None], SPEC_A, dtype="float32")
    after = find_similar(store, "clip00007.wav", k=3).frame
    assert not set(after["clip_id"]) & set(before["clip_id"])
    # a relabel (new clips version) shows in the next search's rows
    neighbour = after["clip_id"][1]
    store.upsert_clips(pa.table({"clip_id": [neighbour], "uri": [f"/data/{neighbour}"],
                                 "rel_path": [neighbour], "label": ["relabelled"]}))
    again = find_similar(store, "clip00007.wav", k=3).frame
    assert "relabelled" in again["label"].to_list()


def read_features_of(store: Store, clip: str) -> np.ndarray:
    from featurestore.features import read_features

    return read_features(store, "enc_a", clip_ids=[clip]).vectors[0]


def test_default_index_is_the_newest_that_holds_the_query(store):
    """README flow: an index over a set some clips lack, built after the one a query is in,
    must not make `similar` fail for those clips when --index is not given."""
    s = ["--store", store.uri]
    assert runner.invoke(app, ["index", "build", "--encoder", "enc_a", *s]).exit_code == 0
    ids = store.clips(columns=["clip_id"])["clip_id"].to_list()
    rng = np.random.default_rng(3)
    write_features(store, "face", ids[:50], rng.normal(size=(50, 5)), {"encoder": "face", "dim": 5,
                                                                       "weights": "test"}, dtype="float32")
    assert runner.invoke(app, ["index", "build", "--encoder", "face", *s]).exit_code == 0
    result = runner.invoke(app, ["similar", ids[100], "-k", "3", *s])  # not in the newest ('face')
    assert result.exit_code == 0, result.output
    assert "using index 'enc_a', the most recently built of those holding" in result.stderr
    result = runner.invoke(app, ["similar", ids[0], "-k", "3", *s])  # in both: the newest
    assert result.exit_code == 0 and "using index 'face', the most recently built of 2" in result.stderr
    result = runner.invoke(app, ["similar", ids[100], "--index", "face", *s])  # the clip lacks 'face'
    assert result.exit_code == 1 and "search an index that holds it (--index enc_a)" in result.output
    result = runner.invoke(app, ["index", "build", "--encoder", "enc_aa", *s])  # a typo
    assert result.exit_code == 1 and "did you mean 'enc_a'?" in result.output


def test_ivf_nlist_is_clamped_so_a_small_store_builds_silently(tmp_path, capfd, caplog):
    """faiss warns from C++ ("WARNING clustering N points to M centroids") when k-means has
    under 39 rows a list: nlist is clamped to rows // 39 (at least 1), said once."""
    small = Store(tmp_path / "small")
    _add_clips(small, 0, 20)
    report = build_index(small, IndexConfig(["enc_a"], kind="ivf"), progress=False)
    assert report.params["nlist"] == 1 and "nlist_requested" not in report.params
    s = Store(tmp_path / "store")
    _add_clips(s, 0, 400)
    with caplog.at_level(logging.WARNING, logger="featurestore.index.kinds"):
        report = build_index(s, IndexConfig(["enc_a"], kind="ivf", nlist=100, name="wide"), progress=False)
    assert report.params["nlist"] == 400 // 39 and report.params["nlist_requested"] == 100
    assert sum("--nlist 100" in r.getMessage() for r in caplog.records) == 1
    assert "clustering" not in capfd.readouterr().err
    hits = find_similar(s, "clip00000.wav", k=5, index="wide", warn_stale=False).rows
    assert len(hits) == 5
