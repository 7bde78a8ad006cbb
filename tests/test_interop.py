"""Import / export of Emotion-LLaMA and MERTools features and annotations."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from cli import app
from featurestore import Store
from featurestore.errors import InputError, LabelsError
from featurestore.features import read_features, write_features
from featurestore.interop import export_features, import_annotations, import_features, read_annotations
from featurestore.interop.annotations import detect_format
from featurestore.interop.layouts import export_folder_name, find_feature_folders
from featurestore.interop.npy_io import NpyError, read_many, read_npy, read_npy_head

RNG = np.random.default_rng(7)


def _folder(root: Path, name: str, arrays: dict[str, np.ndarray]) -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    for stem, arr in arrays.items():
        np.save(folder / f"{stem}.npy", arr)
    return folder


def _names(n: int, prefix: str = "sample_") -> list[str]:
    return [f"{prefix}{i:08d}" for i in range(n)]


def _clips(store: Store, rows: list[dict]) -> None:
    store.upsert_clips(pa.Table.from_pylist(
        rows, schema=pa.schema([("clip_id", pa.string()), ("name", pa.string()),
                                ("has_media", pa.bool_()), ("modality", pa.string())])))


# ------------------------------------------------------------------- npy reader
@pytest.mark.parametrize(
    "array",
    [
        np.arange(7, dtype=np.float32),
        np.arange(6, dtype=np.float16).reshape(1, 6),
        np.asfortranarray(np.arange(12, dtype=np.float64).reshape(3, 4)),
        np.arange(5, dtype=">f4"),
        np.zeros((20000, 8), np.float32),  # payload larger than the first read
    ],
    ids=["f32-vector", "f16-row", "f64-fortran", "big-endian", "large"],
)
def test_read_npy_matches_np_load(tmp_path, array):
    path = tmp_path / "a.npy"
    np.save(path, array)
    got = read_npy(path)
    want = np.load(path, allow_pickle=False)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.tobytes() == want.tobytes()
    header, small = read_npy_head(path)
    assert header.shape == array.shape
    assert (small is None) == (array.nbytes > 60000)


def test_read_npy_v2_header_and_refusals(tmp_path):
    from numpy.lib import format as npformat

    v2 = tmp_path / "v2.npy"
    with open(v2, "wb") as handle:
        npformat.write_array(handle, np.ones(3, np.float32), version=(2, 0))
    assert read_npy(v2).tolist() == [1, 1, 1]
    pickled = tmp_path / "obj.npy"
    np.save(pickled, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(NpyError, match="pickle"):
        read_npy(pickled)
    truncated = tmp_path / "cut.npy"
    truncated.write_bytes((tmp_path / "v2.npy").read_bytes()[:-2])
    with pytest.raises(NpyError, match="truncated"):
        read_npy(truncated)
    results = read_many([v2, pickled, tmp_path / "missing.npy"], read_npy, workers=2, chunk=1)
    assert isinstance(results[0], np.ndarray)
    assert isinstance(results[1], NpyError) and isinstance(results[2], OSError)


# ------------------------------------------------------------------ round trips
def _emotion_llama_tree(root: Path, n: int = 12) -> dict[str, dict[str, np.ndarray]]:
    names = _names(n)
    trees = {
        "HL-UTT": {s: RNG.standard_normal(16).astype(np.float32) for s in names},
        "mae_340_UTT": {s: RNG.standard_normal((1, 8)).astype(np.float16) for s in names},
        "maeV_399_UTT": {s: RNG.standard_normal((1 + i % 4, 8)).astype(np.float32)
                         for i, s in enumerate(names)},
    }
    for folder, arrays in trees.items():
        _folder(root, folder, arrays)
    return trees


def test_emotion_llama_round_trip_is_bitwise(tmp_path):
    src = tmp_path / "el"
    trees = _emotion_llama_tree(src)
    store = Store(tmp_path / "store")
    reports = {r.feature_set: r for r in import_features(store, src, layout="emotion-llama", progress=False)}
    assert set(reports) == {"HL-UTT", "mae_340_UTT", "maeV_399_UTT"}
    assert reports["HL-UTT"].created == 12 and reports["mae_340_UTT"].created == 0
    assert reports["HL-UTT"].form == "vector" and reports["mae_340_UTT"].form == "row"
    assert reports["mae_340_UTT"].dtype == "float16"
    assert reports["maeV_399_UTT"].level == "frame"
    clips = store.clips()
    assert clips.height == 12 and not any(clips["has_media"].to_list())
    assert sorted(clips["clip_id"].to_list()) == sorted(trees["HL-UTT"])

    # [T, D] arrays: tokens plus their mean.
    table = store.table("features/maeV_399_UTT.lance").to_pylist()
    row = next(r for r in table if r["clip_id"] == "sample_00000003")
    tokens = np.array(row["tokens"], np.float32)
    assert tokens.shape == (4, 8)
    np.testing.assert_allclose(row["vector"], tokens.mean(axis=0), rtol=1e-6)
    spec = json.loads(store.dataset("features/HL-UTT.lance").schema.metadata[b"emofs.spec"])
    assert spec["layout"] == "emotion-llama" and spec["folder"] == "HL-UTT" and spec["files"] == 12
    assert spec["encoder"] == "hubert" and spec["source_dtype"] == "float32"

    import_annotations(store, _write(tmp_path / "ann.txt", "sample_00000001 22 surprise -0.61\n"))
    out = tmp_path / "out"
    report = export_features(store, out, progress=False)
    assert report.folders == {"HL-UTT": 12, "mae_340_UTT": 12, "maeV_399_UTT": 12}
    for folder, arrays in trees.items():
        for stem in arrays:
            assert (out / folder / f"{stem}.npy").read_bytes() == (src / folder / f"{stem}.npy").read_bytes()
    assert (out / "annotations.txt").read_text() == "sample_00000001 22 surprise -0.61\n"

    # export -> import into a fresh store gives the same rows bit for bit.
    again = Store(tmp_path / "store2")
    import_features(again, out, layout="emotion-llama", progress=False)
    for name in trees:
        a = read_features(store, name, dtype=None)
        b = read_features(again, name, dtype=None)
        order_a, order_b = np.argsort(a.clip_ids), np.argsort(b.clip_ids)
        assert a.vectors[order_a].tobytes() == b.vectors[order_b].tobytes()


def test_mertools_round_trip_utt_and_fra(tmp_path):
    src = tmp_path / "features"
    names = _names(6)
    utt = _folder(src, "chinese-hubert-large-UTT", {s: RNG.standard_normal(12).astype(np.float32) for s in names})
    fra = _folder(src, "clip-vit-large-patch14-FRA",
                  {s: RNG.standard_normal((2 + i, 12)).astype(np.float32) for i, s in enumerate(names)})
    _folder(src, "not-a-feature-folder", {"x": np.zeros(3, np.float32)})  # ignored: no -UTT/-FRA
    store = Store(tmp_path / "store")
    reports = import_features(store, src, layout="mertools", progress=False)
    assert [r.feature_set for r in reports] == ["chinese-hubert-large-UTT", "clip-vit-large-patch14-FRA"]
    assert [r.level for r in reports] == ["utterance", "frame"]
    out = tmp_path / "out"
    export_features(store, out, layout="mertools", annotations=False, progress=False)
    for folder in (utt, fra):
        for stem in names:
            assert (out / folder.name / f"{stem}.npy").read_bytes() == (folder / f"{stem}.npy").read_bytes()
    # Frame-level sets go to Emotion-LLaMA as their pooled [D] vectors.
    el = tmp_path / "el"
    export_features(store, el, encoders=["clip-vit-large-patch14-FRA"], annotations=False, progress=False)
    vec = np.load(el / "clip-vit-large-patch14-FRA" / f"{names[0]}.npy")
    np.testing.assert_allclose(vec, np.load(fra / f"{names[0]}.npy").mean(axis=0), rtol=1e-6)


def test_extracted_sets_export_to_emotion_llama_folder_names(tmp_path):
    store = Store(tmp_path / "store")
    _clips(store, [{"clip_id": f"v/{n}.mp4", "name": n, "has_media": True, "modality": "audio+video"}
                   for n in ("a", "b")])
    vectors = RNG.standard_normal((2, 4)).astype(np.float32)
    for set_name in ("hubert", "mae", "videomae", "egemaps"):
        write_features(store, set_name, ["v/a.mp4", "v/b.mp4"], vectors, {"weights": "tiny"})
    report = export_features(store, tmp_path / "out", progress=False)
    assert report.sets == {"egemaps": "egemaps", "hubert": "HL-UTT", "mae": "mae_340_UTT",
                           "videomae": "maeV_399_UTT"}
    arr = np.load(tmp_path / "out" / "HL-UTT" / "a.npy")
    assert arr.dtype == np.float32 and arr.shape == (4,)
    np.testing.assert_allclose(arr, vectors[0].astype(np.float16), rtol=1e-3)  # stored as float16
    with pytest.raises(InputError, match="--overwrite"):
        export_features(store, tmp_path / "out", encoders=["hubert"], progress=False)
    with pytest.raises(InputError, match="available"):
        export_features(store, tmp_path / "out", encoders=["nope"], progress=False)


def test_layout_folder_names(tmp_path):
    assert export_folder_name("hubert", None, "emotion-llama") == "HL-UTT"
    assert export_folder_name("hubert.large-ls960", None, "emotion-llama") == "HL-UTT"
    assert export_folder_name("eva", None, "emotion-llama") == "eva"
    assert export_folder_name("eva", None, "mertools", frame_level=True) == "eva-FRA"
    assert export_folder_name("mae_340_UTT", None, "mertools") == "mae_340-UTT"
    imported = {"source": "import", "layout": "emotion-llama", "folder": "HL_23_UTT"}
    assert export_folder_name("hl23", imported, "emotion-llama") == "HL_23_UTT"
    one = _folder(tmp_path, "HL-UTT", {"a": np.zeros(2, np.float32)})
    assert [f.path.name for f in find_feature_folders(one, "emotion-llama")] == ["HL-UTT"]
    plain = _folder(tmp_path, "plain", {"a": np.zeros(2, np.float32)})
    with pytest.raises(InputError, match="-UTT"):
        import_features(Store(tmp_path / "s"), plain, layout="mertools", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no .npy"):
        find_feature_folders(tmp_path / "empty", "emotion-llama")
    with pytest.raises(InputError, match="--layout"):
        find_feature_folders(one, "openface")


# -------------------------------------------------------------- malformed files
def _pickled(path: Path) -> None:
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)


MALFORMED = {
    "pickled": (_pickled, "pickle"),
    "nan": (lambda p: np.save(p, np.array([0, np.nan, 1, 2], np.float32)), "NaN or inf"),
    "inf": (lambda p: np.save(p, np.array([0, np.inf, 1, 2], np.float32)), "NaN or inf"),
    "empty": (lambda p: np.save(p, np.zeros(0, np.float32)), "empty array"),
    "wrong_dim": (lambda p: np.save(p, np.zeros(5, np.float32)), "dim 5 but most files"),
    "not_npy": (lambda p: p.write_text("not an array"), "not a .npy file"),
    "int_dtype": (lambda p: np.save(p, np.arange(4)), "not a float feature"),
    "three_d": (lambda p: np.save(p, np.zeros((1, 1, 4), np.float32)), "expected [D]"),
    "truncated": (lambda p: p.write_bytes(_npy_bytes(np.ones(4, np.float32))[:-3]), "truncated"),
    "float32_overflow": (lambda p: np.save(p, np.array([1e300, 0, 0, 0])), "range"),
}


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_file_is_skipped_with_reason(tmp_path, case):
    make, reason = MALFORMED[case]
    good = {s: RNG.standard_normal(4).astype(np.float32) for s in _names(3)}
    folder = _folder(tmp_path, "HL-UTT", good)
    make(folder / f"bad_{case}.npy")
    store = Store(tmp_path / "store")
    (report,) = import_features(store, folder, layout="emotion-llama", progress=False)
    assert report.imported == 3
    assert len(report.skipped) == 1 and reason in report.skipped[0][1], report.skipped
    assert sorted(store.clips()["name"].to_list()) == sorted(good)  # no row for the bad file
    errors = store.errors(where="stage = 'import'")
    assert errors.height == 1 and errors["uri"][0].endswith(f"bad_{case}.npy")
    assert reason in errors["message"][0]


def test_frames_in_utterance_folder_and_majority_dim(tmp_path):
    src = tmp_path / "feats"
    _folder(src, "m-UTT", {"a": np.zeros(4, np.float32), "b": np.zeros((3, 4), np.float32),
                           "c": np.ones(4, np.float32)})
    _folder(src, "HL-UTT", {"a": np.zeros(8, np.float32), "b": np.zeros(8, np.float32),
                            "c": np.zeros(6, np.float32)})
    store = Store(tmp_path / "store")
    (utt,) = import_features(store, src / "m-UTT", layout="mertools", progress=False)
    assert utt.imported == 2 and "-FRA folder" in utt.skipped[0][1]
    (el,) = import_features(Store(tmp_path / "store2"), src / "HL-UTT", layout="emotion-llama",
                            progress=False)
    assert el.dim == 8 and el.imported == 2 and el.skipped[0][0].endswith("c.npy")


# --------------------------------------------------------------- name matching
def test_names_match_existing_clips_and_unmatched_are_reported(tmp_path):
    store = Store(tmp_path / "store")
    _clips(store, [
        {"clip_id": "crema/mp4/x.mp4", "name": "x", "has_media": True, "modality": "audio+video"},
        {"clip_id": "crema/wav/x.wav", "name": "x", "has_media": True, "modality": "audio"},
        {"clip_id": "crema/mp4/y.mp4", "name": "y", "has_media": True, "modality": "audio+video"},
    ])
    folder = _folder(tmp_path, "HL-UTT", {n: np.ones(4, np.float32) for n in ("x", "y", "z")})
    (report,) = import_features(store, folder, layout="emotion-llama", progress=False)
    assert report.imported == 1 and report.created == 0
    assert report.unmatched == ["z"] and report.ambiguous == ["x"]
    (report,) = import_features(store, folder, layout="emotion-llama", where="modality = 'audio+video'",
                                create_missing=True, progress=False)
    assert report.imported == 3 and report.created == 1 and not report.ambiguous
    ids = set(store.table("features/HL-UTT.lance").column("clip_id").to_pylist())
    assert ids == {"crema/mp4/x.mp4", "crema/mp4/y.mp4", "z"}
    assert store.clips(where="clip_id = 'z'")["has_media"].to_list() == [False]


def test_created_clip_ids_never_clash(tmp_path):
    store = Store(tmp_path / "store")
    _clips(store, [{"clip_id": "s1", "name": "other", "has_media": True, "modality": "audio"}])
    folder = _folder(tmp_path, "HL-UTT", {"s1": np.ones(4, np.float32)})
    (report,) = import_features(store, folder, layout="emotion-llama", create_missing=True, progress=False)
    assert report.created == 1
    row = store.clips(where="name = 's1'").to_dicts()[0]
    assert row["clip_id"] == "s1~2" and row["has_media"] is False
    assert store.clips(where="clip_id = 's1'")["name"].to_list() == ["other"]


def test_import_refuses_to_mix_into_a_set_of_another_origin(tmp_path):
    store = Store(tmp_path / "store")
    _clips(store, [{"clip_id": "a", "name": "a", "has_media": True, "modality": "audio"}])
    write_features(store, "hubert", ["a"], np.ones((1, 4), np.float32), {"weights": "x"})
    folder = _folder(tmp_path, "HL-UTT", {"a": np.full(4, 2, np.float32)})
    with pytest.raises(InputError, match="--replace"):
        import_features(store, folder, layout="emotion-llama", name="hubert", progress=False)
    _folder(tmp_path, "mae_340_UTT", {"a": np.ones(4, np.float32)})
    with pytest.raises(InputError, match="one feature set"):
        import_features(store, tmp_path, layout="emotion-llama", name="x", progress=False)
    before = store.version("features/hubert.lance")
    import_features(store, folder, layout="emotion-llama", name="hubert", replace=True, progress=False)
    assert read_features(store, "hubert").vectors.tolist() == [[2, 2, 2, 2]]
    old = store.dataset("features/hubert.lance", version=before).to_table().column("vector").to_pylist()
    assert old == [[1, 1, 1, 1]]  # the replaced rows stay readable in Lance's history


# ----------------------------------------------------------------- annotations
def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_emotion_llama_txt_forms_and_bad_lines(tmp_path):
    path = _write(tmp_path / "MERR_fine_grained.txt",
                  "sample_00000047 22 surprise -0.61\n\nsample_2 happy\nsample_3 40 sad\n"
                  "sample_4 x sad\nsample_5 1 sad 0.5 extra\nsample_6 3 angry -10\nsample_7 3 angry nan\n")
    parsed = read_annotations(path)
    assert parsed.format == "emotion-llama-txt"
    assert [(r.line, r.name) for r in parsed.rows] == [(1, "sample_00000047"), (3, "sample_2"),
                                                       (4, "sample_3"), (7, "sample_6")]
    assert parsed.rows[0].values == {"label": "surprise", "frames": 22, "valence": -0.61}
    assert parsed.rows[3].values["valence"] is None  # -10 means unknown
    assert [n for n, _ in parsed.errors] == [5, 6, 8]
    store = Store(tmp_path / "store")
    report = import_annotations(store, path)
    assert report.created == 4 and report.annotated == 4 and len(report.skipped) == 3
    row = store.clips(where="name = 'sample_00000047'").to_dicts()[0]
    assert (row["label"], row["frames"], row["valence"], row["has_media"]) == ("surprise", 22, -0.61, False)
    assert store.errors(where="stage = 'import'").height == 3
    assert "line 5" in " ".join(store.errors()["message"].to_list())


def test_mer_csv_and_transcripts(tmp_path):
    store = Store(tmp_path / "store")
    _clips(store, [{"clip_id": "v/a.mp4", "name": "a", "has_media": True, "modality": "audio+video"}])
    labels = _write(tmp_path / "train_label.csv",
                    "name,discrete,valence\na,happy,1.5\nb,sad,-10\nc,angry,oops\nd,sad\n,neutral,0\n")
    report = import_annotations(store, labels)
    assert report.format == "mer-csv" and report.annotated == 2 and report.created == 1
    assert [n for n, _ in report.skipped] == [4, 5, 6]
    assert "valence 'oops'" in report.skipped[0][1]
    a = store.clips(where="clip_id = 'v/a.mp4'").to_dicts()[0]
    assert (a["label"], a["valence"], a["has_media"]) == ("happy", 1.5, True)

    subs = _write(tmp_path / "subtitle_chieng.csv", 'name,chinese,english\na,你好,"Hello, there"\n')
    assert detect_format(subs) == "transcripts"
    import_annotations(store, subs)
    a = store.clips(where="clip_id = 'v/a.mp4'").to_dicts()[0]
    assert (a["subtitle"], a["subtitle_zh"], a["label"]) == ("Hello, there", "你好", "happy")
    import_annotations(store, _write(tmp_path / "t.csv", "name,sentence\na,Hi.\n"), fmt="transcripts")
    a = store.clips(where="clip_id = 'v/a.mp4'").to_dicts()[0]
    assert a["subtitle"] == "Hi." and a["subtitle_zh"] == "你好" and a["valence"] == 1.5
    with pytest.raises(LabelsError, match="discrete"):
        import_annotations(store, subs, fmt="mer-csv")
    with pytest.raises(InputError, match="cannot tell"):
        detect_format(_write(tmp_path / "x.csv", "name,foo\n"))


def test_merr_json(tmp_path):
    text = (
        '{\n'
        '  "sample_00000003": {"peak_index": "12", "caption": "coarse words"},\n'
        '  "sample_00000047": {\n'
        '    "smp_reason_caption": "fine reasoning", "peak_index": 4},\n'
        '  "broken": [1, 2],\n'
        '  "badpeak": {"peak_index": "twelve"},\n'
        '  "nothing": {"other": 1}\n'
        '}\n'
    )
    path = _write(tmp_path / "MERR_fine_grained.json", text)
    parsed = read_annotations(path)
    assert {r.name: r.values for r in parsed.rows} == {
        "sample_00000003": {"description": "coarse words", "peak_frame": 12},
        "sample_00000047": {"description": "fine reasoning", "peak_frame": 4},
    }
    assert [n for n, _ in parsed.errors] == [5, 6, 7]
    store = Store(tmp_path / "store")
    import_annotations(store, path)
    row = store.clips(where="name = 'sample_00000047'").to_dicts()[0]
    assert (row["description"], row["peak_frame"]) == ("fine reasoning", 4)
    bad = _write(tmp_path / "bad.json", '{\n "a": {"caption": "x"},\n "b": \n}\n')
    with pytest.raises(LabelsError, match="line 4"):
        read_annotations(bad)
    with pytest.raises(LabelsError, match="keyed by clip name"):
        read_annotations(_write(tmp_path / "list.json", "[1, 2]"))


# ------------------------------------------------------------------------- CLI
def test_cli_import_export(tmp_path):
    runner = CliRunner()
    src = tmp_path / "el"
    _emotion_llama_tree(src, n=4)
    store = str(tmp_path / "store")
    result = runner.invoke(app, ["import", "features", str(src), "--layout", "emotion-llama", "--store", store])
    assert result.exit_code == 0, result.output
    assert "HL-UTT: 4 of 4 files imported" in result.output
    ann = _write(tmp_path / "a.txt", "sample_00000000 5 happy 0.25\n")
    result = runner.invoke(app, ["import", "annotations", str(ann), "--store", store, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["annotated"] == 1
    out = tmp_path / "out"
    result = runner.invoke(app, ["export", "features", str(out), "--encoders", "HL-UTT,mae_340_UTT",
                                 "--store", store, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["folders"] == {"HL-UTT": 4, "mae_340_UTT": 4} and summary["annotation_rows"] == 1
    assert (out / "annotations.txt").read_text() == "sample_00000000 5 happy 0.25\n"
    result = runner.invoke(app, ["import", "features", str(src), "--layout", "openface", "--store", store])
    assert result.exit_code == 1 and "--layout must be one of" in result.output
    result = runner.invoke(app, ["import", "annotations", str(tmp_path / "nope.txt"), "--store", store])
    assert result.exit_code == 1 and "does not exist" in result.output


# ------------------------------------------------------------------ real clips
def test_real_clips_sharing_a_name_are_resolved_with_where(tmp_path, shared_data):
    from extractors import ingest

    pairs = [(v, shared_data / "crema_d" / "wav16k" / f"{v.stem}.wav")
             for v in sorted((shared_data / "crema_d").glob("*.flv"))]
    pairs = [(v, w) for v, w in pairs if w.is_file()]
    if not pairs:
        pytest.skip("no CREMA-D video with a wav of the same name in ../shared/data")
    mp4, wav = pairs[0]
    store = Store(tmp_path / "store")
    ingest([mp4, wav], store, progress=False)
    folder = _folder(tmp_path, "HL-UTT", {mp4.stem: RNG.standard_normal(4).astype(np.float32)})
    (report,) = import_features(store, folder, layout="emotion-llama", progress=False)
    assert report.imported == 0 and report.ambiguous == [mp4.stem] and report.created == 0
    (report,) = import_features(store, folder, layout="emotion-llama", where="has_video", progress=False)
    assert report.imported == 1
    (clip_id,) = store.table("features/HL-UTT.lance").column("clip_id").to_pylist()
    assert store.clips(where=f"clip_id = '{clip_id}'")["uri"].to_list() == [str(mp4)]


def test_float64_sources_and_reimport_clears_fixed_errors(tmp_path):
    src = _folder(tmp_path, "HL-UTT", {"a": np.array([0.1, 0.2, 0.3]), "b": np.array([1.0, np.nan, 2.0])})
    store = Store(tmp_path / "store")
    (report,) = import_features(store, src, layout="emotion-llama", progress=False)
    assert (report.dtype, report.source_dtype, report.imported) == ("float32", "float64", 1)
    assert store.errors(where="stage = 'import'").height == 1
    np.save(src / "b.npy", np.array([1.0, 1.5, 2.0]))  # fixed
    (report,) = import_features(store, src, layout="emotion-llama", create_missing=True, progress=False)
    assert report.imported == 2 and not report.skipped
    assert store.errors(where="stage = 'import'").height == 0
    assert store.table("features/HL-UTT.lance").num_rows == 2  # upserted, not duplicated
    export_features(store, tmp_path / "out", progress=False)
    back = np.load(tmp_path / "out" / "HL-UTT" / "a.npy")
    assert back.dtype == np.float64
    np.testing.assert_array_equal(back, np.array([0.1, 0.2, 0.3], np.float32).astype(np.float64))
