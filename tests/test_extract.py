"""`emofs extract`: decode once, batched encoders, resumable, errors recorded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli import app
from conftest import REPO, SHARED_LABELS, copy_to
from extractors import extract, extract_file, ingest
from featurestore import Store
from featurestore.errors import InputError, StoreError
from featurestore.features import feature_spec, features_name, read_features

TINY = ["hubert:tiny", "mae:tiny", "videomae:tiny", "eva:tiny", "egemaps"]


def _small_folder(shared_data: Path, dst: Path) -> Path:
    """2 audio+video flv, 1 audio+video mp4, 2 wav (audio only), 2 face-crop avi (video only)."""
    crema = shared_data / "crema_d"
    picks = [*sorted(crema.glob("*.flv"))[:2], sorted((crema / "mp4").glob("*.mp4"))[0],
             *sorted((shared_data / "ravdess_actor05" / "wav").glob("*.wav"))[:2],
             *sorted((shared_data / "ravdess_actor05" / "facecrop").glob("*.avi"))[:2]]
    for i, src in enumerate(picks):
        copy_to(src, dst / f"{i:02d}_{src.name}")
    return dst


def _ids(store: Store, name: str) -> list[str]:
    return store.table(features_name(name), columns=["clip_id"]).column("clip_id").to_pylist()


def _modality_ids(store: Store, modality: str) -> set[str]:
    clips = store.clips(columns=["clip_id", "has_audio", "has_video"]).to_dicts()
    return {c["clip_id"] for c in clips if c[f"has_{modality}"]}


@pytest.fixture(scope="module")
def small_store(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("small")
    store = Store(root / "store")
    ingest([_small_folder(shared_data, root / "clips")], store, progress=False)
    report = extract(store, TINY, workers=0, batch_size=3, progress=False)
    return store, report


def test_extract_writes_one_row_per_applicable_clip(small_store):
    store, report = small_store
    audio, video = _modality_ids(store, "audio"), _modality_ids(store, "video")
    assert len(audio) == 5 and len(video) == 5
    for name in ("hubert", "egemaps"):
        assert sorted(_ids(store, name)) == sorted(audio)
        assert report.encoders[name].not_applicable == 2  # the video-only avi
    for name in ("mae", "videomae", "eva"):
        assert sorted(_ids(store, name)) == sorted(video)
        assert report.encoders[name].not_applicable == 2  # the wav files
    assert store.errors().height == 0 and report.decode_errors == 0
    dims = {"hubert": 32, "mae": 32, "videomae": 32, "eva": 64, "egemaps": 88}
    for name, dim in dims.items():
        fm = read_features(store, name)
        assert fm.vectors.shape[1] == dim and np.isfinite(fm.vectors).all()
        spec = feature_spec(store, name)
        assert spec["ref"].startswith(name) and spec["dim"] == dim and spec["dtype"] == "float16"
    tokens = store.table(features_name("eva"), columns=["tokens"]).column("tokens").to_pylist()
    assert all(len(t) == 256 and len(t[0]) == 64 for t in tokens)
    rows = store.clips(columns=["clip_id", "has_video", "peak_frame", "face_ratio"]).to_dicts()
    for row in rows:
        if row["has_video"]:
            assert row["peak_frame"] is not None and 0.0 <= row["face_ratio"] <= 1.0
        else:
            assert row["peak_frame"] is None


def test_rerun_adds_nothing(small_store):
    store, _ = small_store
    versions = {n: store.version(features_name(n)) for n in ("hubert", "mae", "eva")}
    again = extract(store, TINY, workers=0, progress=False)
    assert again.decoded == 0
    assert all(e.extracted == 0 for e in again.encoders.values())
    assert {n: store.version(features_name(n)) for n in versions} == versions


def test_extract_file_matches_stored_and_add(small_store, tmp_path):
    store, _ = small_store
    row = store.clips(where="modality = 'audio+video'", columns=["clip_id", "uri"]).row(0, named=True)
    got = extract_file(row["uri"], ["hubert", "eva", "egemaps"], store, device="cpu")
    stored = read_features(store, "eva", clip_ids=[row["clip_id"]]).vectors[0]
    np.testing.assert_allclose(got["eva"]["vector"], stored, rtol=1e-2, atol=1e-2)
    assert got["eva"]["tokens"].shape == (256, 64) and got["egemaps"]["tokens"] is None
    # a new file, added to the store with its features
    new = copy_to(Path(row["uri"]), tmp_path / "new_clip.flv")
    before = store.clips().height
    added = extract_file(new, ["mae", "hubert"], store, add=True, device="cpu")
    assert store.clips().height == before + 1
    new_id = store.clips(where=f"uri = '{new.resolve()}'", columns=["clip_id"])["clip_id"][0]
    assert new_id in _ids(store, "mae")
    assert added["mae"]["vector"].shape == (32,)
    with pytest.raises(StoreError, match="emofs extract"):
        extract_file(new, ["no_such_set"], store)


def test_spec_change_reextracts(tmp_path, shared_data):
    store = Store(tmp_path / "store")
    wavs = sorted((shared_data / "crema_d" / "wav16k").glob("*.wav"))[:3]
    ingest(wavs, store, progress=False)
    extract(store, ["hubert:tiny"], workers=0, progress=False)
    old_fp = set(store.table(features_name("hubert"), columns=["fingerprint"]).column(0).to_pylist())
    report = extract(store, ["hubert:tiny"], workers=0, tokens={"hubert": 4}, progress=False)
    assert report.encoders["hubert"].extracted == 3
    table = store.table(features_name("hubert"))
    assert table.num_rows == 3 and len(set(table.column("clip_id").to_pylist())) == 3
    new_fp = set(table.column("fingerprint").to_pylist())
    assert len(new_fp) == 1 and new_fp.isdisjoint(old_fp)
    assert all(len(t) <= 4 for t in table.column("tokens").to_pylist())
    assert feature_spec(store, "hubert")["options"] == {"tokens": 4}


def test_corrupt_file_in_the_middle(tmp_path, shared_data):
    folder = tmp_path / "clips"
    wavs = sorted((shared_data / "crema_d" / "wav16k").glob("*.wav"))[:5]
    for i, src in enumerate(wavs):
        copy_to(src, folder / f"{i}.wav")
    store = Store(tmp_path / "store")
    ingest([folder], store, progress=False)
    bad = folder / "2.wav"
    bad.write_bytes(b"RIFF" + os.urandom(3000))  # corrupted after ingest
    report = extract(store, ["egemaps"], workers=0, batch_size=2, progress=False)
    assert report.decode_errors == 1 and report.encoders["egemaps"].extracted == 4
    errors = store.errors().to_dicts()
    assert len(errors) == 1 and errors[0]["stage"] == "decode" and errors[0]["clip_id"] == "2.wav"
    assert sorted(_ids(store, "egemaps")) == ["0.wav", "1.wav", "3.wav", "4.wav"]
    copy_to(wavs[2], bad)  # fixed: the rerun extracts it and forgets the error
    extract(store, ["egemaps"], workers=0, progress=False)
    assert store.errors().height == 0 and len(_ids(store, "egemaps")) == 5


@pytest.mark.parametrize("ref, failing_calls", [
    ("egemaps", (2,)),  # runs beside decoding, one clip per call: the second clip fails
    ("hubert:tiny", (1, 3)),  # batched in the main process: the batch, then clip 2 alone
])
def test_encoder_crash_is_recorded_not_fatal(tmp_path, shared_data, monkeypatch, ref, failing_calls):
    from extractors.registry import encoder_class

    store = Store(tmp_path / "store")
    ingest(sorted((shared_data / "crema_d" / "wav16k").glob("*.wav"))[:3], store, progress=False)
    name = ref.split(":")[0]
    cls = encoder_class(name)
    real = cls.encode
    calls = {"n": 0}

    def flaky(self, inputs):
        calls["n"] += 1
        if calls["n"] in failing_calls:
            raise RuntimeError("boom")
        return real(self, inputs)

    monkeypatch.setattr(cls, "encode", flaky)
    report = extract(store, [ref], workers=0, batch_size=3, progress=False)
    assert report.encoders[name].failed == 1 and report.encoders[name].extracted == 2
    err = store.errors().to_dicts()[0]
    assert err["stage"] == "encode" and err["encoder"] == name and "boom" in err["message"]


def test_bad_weights_fail_before_decoding(tmp_path, shared_data, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    store = Store(tmp_path / "store")
    ingest([sorted((shared_data / "crema_d" / "wav16k").glob("*.wav"))[0]], store, progress=False)
    import extractors.pipeline as pipeline

    monkeypatch.setattr(pipeline, "prepare_clip", lambda *a: pytest.fail("decoded before loading"))
    with pytest.raises(InputError, match="hubert:tiny"):
        extract(store, ["egemaps", "hubert:someone/missing"], workers=0, progress=False)
    with pytest.raises(InputError, match="--batch-size"):
        extract(store, ["egemaps"], batch_size=0)
    with pytest.raises(InputError, match="twice"):
        extract(store, ["egemaps", "egemaps:v02"])
    assert store.feature_sets() == []


def test_cli_extract_with_spawn_workers(tmp_path, shared_data):
    store = tmp_path / "store"
    crema = shared_data / "crema_d"
    files = [str(p) for p in sorted(crema.glob("*.flv"))[:2] + sorted(crema.glob("*.mp3"))[:2]]
    runner = CliRunner()
    assert runner.invoke(app, ["ingest", *files, "--store", str(store)]).exit_code == 0
    result = runner.invoke(app, ["extract", "--store", str(store), "--encoders", "egemaps,mae:tiny",
                                 "--workers", "2", "--batch-size", "2", "--dtype", "float32", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["encoders"]["egemaps"]["extracted"] == 4
    assert report["encoders"]["mae"]["extracted"] == 2 and report["encoders"]["mae"]["not_applicable"] == 2
    info = json.loads(runner.invoke(app, ["info", "--store", str(store), "--json"]).stdout)
    assert info["features"]["mae"]["dtype"] == "float32" and info["features"]["mae"]["rows"] == 2
    # egemaps ran in the spawned workers: the same vector as computed in this process
    in_process = extract_file(files[0], ["egemaps"], Store(store))["egemaps"]["vector"]
    clip_id = Store(store).clips(where=f"uri = '{files[0]}'")["clip_id"][0]
    stored = Store(store).table(features_name("egemaps"), where=f"clip_id = '{clip_id}'")
    assert np.array_equal(np.asarray(stored.column("vector")[0].as_py(), np.float32), in_process)
    bad = runner.invoke(app, ["extract", "--store", str(store), "--encoders", "egemaps", "--tokens", "x"])
    assert bad.exit_code == 1 and "--tokens" in bad.output
    for value in ("-1", "many"):
        bad = runner.invoke(app, ["extract", "--store", str(store), "--encoders", "egemaps", "--workers", value])
        assert bad.exit_code == 1 and "--workers must be auto or a number" in bad.output


def test_summary_names_the_bottleneck(monkeypatch):
    from extractors import pipeline
    from extractors.pipeline import ExtractReport

    monkeypatch.setattr(pipeline, "cores", lambda: 8)
    slow_decode = ExtractReport(device="cpu", workers=2, waiting_s=30.0, encoding_s=5.0)
    assert "decoding" in slow_decode.bottleneck and "--workers" in slow_decode.bottleneck
    assert "CPU cores" in ExtractReport(device="cpu", workers=8, waiting_s=30.0, encoding_s=5.0).bottleneck
    slow_encode = ExtractReport(device="cpu", workers=2, waiting_s=1.0, encoding_s=30.0)
    assert "encoders" in slow_encode.bottleneck and "--device cuda" in slow_encode.bottleneck
    assert ExtractReport(device="cpu", workers=2, waiting_s=10.0, encoding_s=10.0).bottleneck is None
    assert ExtractReport(device="cpu", workers=2, waiting_s=2.0, encoding_s=1.0).bottleneck is None  # short
    assert ExtractReport(device="cpu", workers=2, waiting_s=9.0, encoding_s=1.0).as_dict()["bottleneck"]


def test_auto_workers_take_the_cores(monkeypatch):
    from extractors import workers

    monkeypatch.setattr(workers, "cores", lambda: 8)
    assert workers.resolve_workers("auto", "cpu") == 8  # decoding is most of the CPU work
    assert workers.resolve_workers("auto", "cuda") == 7  # one core feeds the GPU
    assert workers.resolve_workers(3, "cuda") == 3
    monkeypatch.setattr(workers, "cores", lambda: 64)
    assert workers.resolve_workers("auto", "cpu") == 16  # capped: ~250 MB per process
    assert workers.parse_workers(" AUTO ") == "auto" and workers.parse_workers("0") == 0


def test_parse_token_counts():
    from extractors import parse_token_counts

    assert parse_token_counts("eva=64,hubert=32") == {"eva": 64, "hubert": 32}
    assert parse_token_counts(" eva = 64 , hubert=32 ") == {"eva": 64, "hubert": 32}
    assert parse_token_counts(None) == parse_token_counts("") == parse_token_counts("none") == {}
    for bad in ("eva", "eva=", "eva=many", "eva=-4"):
        with pytest.raises(InputError, match=r"--tokens takes NAME=COUNT pairs, e\.g\. eva=64,hubert=32"):
            parse_token_counts(bad)
    with pytest.raises(InputError, match="--tokens takes a comma-separated list without empty items"):
        parse_token_counts("eva=64,,hubert=32")


def test_encoder_refs_are_parsed_once():
    from extractors.pipeline import ExtractConfig
    from extractors.registry import EncoderRef, load_encoders, parse_ref

    ref = parse_ref(" hubert:/models/h:v2 ")
    assert (ref.name, ref.weights, str(ref)) == ("hubert", "/models/h:v2", "hubert:/models/h:v2")
    assert parse_ref(ref) is ref and parse_ref("egemaps") == EncoderRef("egemaps")
    cfg = ExtractConfig("hubert:tiny, egemaps,")
    assert cfg.encoders == [EncoderRef("hubert", "tiny"), EncoderRef("egemaps")]
    with pytest.raises(InputError, match="names 'egemaps' twice"):
        load_encoders(["egemaps", "egemaps:opensmile"], "cpu")
    with pytest.raises(InputError, match="'eva' is not among --encoders"):
        load_encoders(cfg.encoders, "cpu", {"eva": 4})


def test_applies_and_group_by_settings():
    from extractors.media import MediaConfig
    from extractors.specs import applies, group_by_settings

    assert applies("audio", {"has_audio": True, "has_media": True})
    assert not applies("audio", {"has_audio": True, "has_media": False})
    assert not applies("video", {"has_audio": True, "has_video": False})
    assert applies("text", {"subtitle": " hi ", "has_media": False})
    assert not applies("text", {"subtitle": "  "})

    slow = {"video_fps": 4.0, **{k: v for k, v in MediaConfig().as_dict().items() if k != "video_fps"}}
    specs = {
        "hubert": {"ref": "hubert:tiny", "dtype": "float16", "media": MediaConfig().as_dict(),
                   "options": {"tokens": 8}},
        "text": {"ref": "text:tiny", "dtype": "float16"},  # no media: joins its dtype's group
        "mae": {"ref": "mae:tiny", "dtype": "float16", "media": slow},
        "eva": {"ref": "eva:tiny", "dtype": "float32", "media": MediaConfig().as_dict(), "options": {}},
    }
    groups = group_by_settings(specs)
    assert [(g.names, g.dtype) for g in groups] == [
        (("hubert", "text"), "float16"), (("mae",), "float16"), (("eva",), "float32")]
    assert groups[0].refs == ("hubert:tiny", "text:tiny") and groups[0].tokens == {"hubert": 8}
    assert groups[0].media == MediaConfig() and groups[1].media == MediaConfig(video_fps=4.0)
    only_text = group_by_settings({"text": {"ref": "text:tiny", "dtype": "float32"}})
    assert [(g.names, g.media) for g in only_text] == [(("text",), None)]


def test_rebuild_encoder_checks_the_stored_fingerprint():
    from extractors.media import MediaConfig
    from extractors.registry import build_encoder
    from extractors.specs import rebuild_encoder
    from featurestore.features import spec_fingerprint

    spec = build_encoder("egemaps").spec("float32", MediaConfig(max_audio_s=30.0))
    enc, rebuilt = rebuild_encoder("egemaps", json.loads(json.dumps(spec)), "cpu")
    assert enc.name == "egemaps" and spec_fingerprint(rebuilt) == spec_fingerprint(spec)
    old = {**spec, "code_version": 0}
    with pytest.raises(InputError, match=r"no longer matches feature set 'egemaps' \(changed: code_version\): "
                                         r"re-run `emofs extract --encoders egemaps:\w+` first"):
        rebuild_encoder("egemaps", old, "cpu")
    with pytest.raises(InputError, match=r"feature set 'egemaps' of the run \(changed: code_version\): retrain$"):
        rebuild_encoder("egemaps", old, "cpu", fingerprint=spec_fingerprint(old), context=" of the run",
                        fix="retrain")


def test_missing_feature_set_error_reads_the_same_everywhere(tmp_path):
    import pyarrow as pa

    from featurestore.errors import MissingFeatureSetError
    from featurestore.reader import FeatureReader

    store = Store(tmp_path / "s")
    store.upsert_clips(pa.table({"clip_id": ["a"]}))
    media = tmp_path / "new.wav"
    media.write_bytes(b"RIFF")
    expected = (f"no feature set 'nope' in {store.uri} (available: none): "
                "run `emofs extract --encoders nope` first")
    for call in (lambda: read_features(store, "nope"), lambda: FeatureReader(store, ["nope"]),
                 lambda: extract_file(media, ["nope"], store)):
        with pytest.raises(MissingFeatureSetError) as caught:
            call()
        assert str(caught.value) == expected and caught.value.name == "nope"
    assert issubclass(MissingFeatureSetError, StoreError)
    hint = MissingFeatureSetError.of(store, "nope", alternative="leave it out of --encoders")
    assert str(hint).endswith("first, or leave it out of --encoders")


def _jobs(shared_data, n: int):
    from extractors.encoders.base import Need
    from extractors.prepare import Job

    clips = sorted((shared_data / "crema_d" / "mp4").glob("*.mp4"))
    return [Job(f"c{i}", str(clips[i % len(clips)]), None, (Need("face_clip"),), ("videomae",))
            for i in range(n)]


def crash_on_c3(job):
    """(In a decoding process) dies on clip c3 every time, like a decoder crashing on a file."""
    from extractors.workers import prepare_in_worker

    if job.clip_id == "c3":
        os._exit(11)
    return prepare_in_worker(job)


def with_modules(job):
    """(In a decoding process) the prepared clip plus which heavy modules got imported."""
    from extractors.workers import prepare_in_worker

    item = prepare_in_worker(job)
    item["heavy"] = sorted(m for m in ("torch", "lance", "transformers", "polars") if m in sys.modules)
    return item


def test_decoding_processes_stay_light(shared_data):
    """Decoding and egemaps in the workers import neither torch nor the store (~250 MB each)."""
    from extractors.encoders.base import Need
    from extractors.media import MediaConfig
    from extractors.pipeline import load_encoders
    from extractors.prepare import Job
    from extractors.workers import prepared

    wav = next((shared_data / "crema_d" / "wav16k").glob("*.wav"))
    jobs = _jobs(shared_data, 2) + [Job("w", str(wav), None, (Need("audio"),), ("egemaps",))]
    items = list(prepared(jobs, MediaConfig(), workers=2, task=with_modules,
                          worker_encoders=load_encoders(["egemaps"], "cpu")))
    assert all(it["heavy"] == [] for it in items)
    assert items[2]["encoded"]["egemaps"].vector.shape == (88,)


def test_a_file_that_kills_its_decoding_process_is_an_error_not_the_end(shared_data):
    from extractors.media import MediaConfig
    from extractors.workers import CRASHED, prepared

    items = list(prepared(_jobs(shared_data, 10), MediaConfig(), workers=2, prefetch=4, task=crash_on_c3))
    assert [it["clip_id"] for it in items] == [f"c{i}" for i in range(10)]  # order kept
    assert [it["clip_id"] for it in items if it["error"]] == ["c3"] and items[3]["error"] == CRASHED
    assert all(it["inputs"] for it in items if it["clip_id"] != "c3")


def test_killed_decoding_processes_lose_nothing(shared_data):
    """Workers killed mid-run (the OS out of memory, a user): their clips are redone."""
    import multiprocessing

    from extractors.media import MediaConfig
    from extractors.workers import prepared

    items = prepared(_jobs(shared_data, 10), MediaConfig(), workers=2, prefetch=4)
    first = next(items)
    for worker in multiprocessing.active_children():
        os.kill(worker.pid, signal.SIGKILL)
    rest = list(items)
    assert [it["clip_id"] for it in [first, *rest]] == [f"c{i}" for i in range(10)]
    assert not any(it["error"] for it in rest)


@pytest.mark.parametrize("max_bytes, most, unreadable", [(1, 5, 0), (1 << 30, 9, 0), (1, 5, 4)])
def test_decoded_clips_in_flight_are_capped_by_bytes(shared_data, monkeypatch, max_bytes, most,
                                                      unreadable):
    """The main process holds at most ``max_bytes`` of decoded clips waiting (at the mean clip's
    size), never fewer than two jobs per worker, at most ``prefetch``; order and clips kept.
    Unreadable files first (no bytes) do not open the window."""
    from extractors import workers
    from extractors.media import MediaConfig

    submitted, taken, outstanding = [], [], []
    submit = workers._submit

    def counting(pool, task, job):
        submitted.append(job.clip_id)
        outstanding.append(len(submitted) - len(taken))
        return submit(pool, task, job)

    monkeypatch.setattr(workers, "_submit", counting)
    items = []
    jobs = _jobs(shared_data, 12)
    for job in jobs[:unreadable]:
        job.uri = str(shared_data / "missing.mp4")
    for it in workers.prepared(jobs, MediaConfig(), workers=2, prefetch=8, max_bytes=max_bytes):
        taken.append(it["clip_id"])
        items.append(it)
    assert [it["clip_id"] for it in items] == [f"c{i}" for i in range(12)]
    assert all(bool(it["error"]) == (i < unreadable) for i, it in enumerate(items))
    assert all(it["inputs"] for it in items[unreadable:])
    # in flight + the clip being handed over: 1 byte, 2 workers x 2 jobs; 1 GiB, the 8 of prefetch
    assert max(outstanding) == most


_KILL_SCRIPT = """
import sys
from featurestore import Store
from extractors import extract
if __name__ == "__main__":
    extract(Store(sys.argv[1]), ["egemaps"], device="cpu", workers=0, batch_size=2, progress=False)
"""


def test_sigkill_mid_run_then_rerun_completes(tmp_path, shared_data):
    store = Store(tmp_path / "store")
    wavs = sorted((shared_data / "ravdess_actor05" / "wav").glob("*.wav"))[:24]
    ingest(wavs, store, progress=False)
    script = tmp_path / "run.py"
    script.write_text(_KILL_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(script), str(store.uri)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                ds = store.dataset(features_name("egemaps"))
            except StoreError:  # the first commit is being written
                ds = None
            if ds is not None and ds.count_rows() >= 4:
                break
            assert proc.poll() is None, "the run finished before it could be killed"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    partial = len(_ids(store, "egemaps"))
    assert 4 <= partial < 24
    report = extract(store, ["egemaps"], device="cpu", workers=0, batch_size=8, progress=False)
    assert report.encoders["egemaps"].up_to_date == partial
    assert report.encoders["egemaps"].extracted == 24 - partial
    ids = _ids(store, "egemaps")
    assert len(ids) == 24 and len(set(ids)) == 24


def test_extract_all_shared_clips(tmp_path, shared_data):
    store = Store(tmp_path / "store")
    ingest([shared_data], store, labels=SHARED_LABELS, progress=False)
    report = extract(store, TINY, workers=2, progress=False)
    assert report.decode_errors == 0
    for name in ("hubert", "egemaps"):
        assert sorted(_ids(store, name)) == sorted(_modality_ids(store, "audio"))
    for name in ("mae", "videomae", "eva"):
        assert sorted(_ids(store, name)) == sorted(_modality_ids(store, "video"))
    again = extract(store, TINY, workers=2, progress=False)
    assert again.decoded == 0


def test_text_encoder_uses_subtitles_only(tmp_path, shared_data):
    import pyarrow as pa

    store = Store(tmp_path / "store")
    ingest(sorted((shared_data / "crema_d" / "wav16k").glob("*.wav"))[:2], store, progress=False)
    first = store.clips(columns=["clip_id"])["clip_id"][0]
    store.upsert_clips(pa.table({"clip_id": [first], "subtitle": ["don't forget a jacket"]}))
    report = extract(store, ["text:tiny"], device="cpu", workers=0, progress=False)
    assert report.encoders["text"].extracted == 1 and report.encoders["text"].not_applicable == 1
    assert report.decoded == 1 and _ids(store, "text") == [first]


def test_changed_media_is_reextracted(tmp_path, media_samples):
    """A file whose bytes change loses its stale features at ingest; extract redoes them."""
    import shutil

    from extractors import extract, ingest
    from featurestore import Store
    from featurestore.features import read_features

    folder = tmp_path / "clips"
    folder.mkdir()
    shutil.copyfile(media_samples["wav"], folder / "a.wav")
    other = next(p for p in media_samples["wav"].parent.glob("*.wav") if p != media_samples["wav"])
    shutil.copyfile(other, folder / "b.wav")
    store = Store(tmp_path / "store")
    ingest([folder], store, progress=False)
    extract(store, ["egemaps"], workers=0, progress=False)
    before = read_features(store, "egemaps", clip_ids=["a.wav", "b.wav"])
    old = dict(zip(before.clip_ids, before.vectors))

    shutil.copyfile(other, folder / "a.wav")  # a.wav now holds b's recording
    ingest([folder], store, progress=False)
    assert read_features(store, "egemaps", clip_ids=["a.wav"]).clip_ids == []
    report = extract(store, ["egemaps"], workers=0, progress=False)
    assert report.encoders["egemaps"].extracted == 1
    after = read_features(store, "egemaps", clip_ids=["a.wav"])
    assert not np.allclose(after.vectors[0], old["a.wav"])
    np.testing.assert_allclose(after.vectors[0], old["b.wav"], rtol=1e-3, atol=1e-3)
