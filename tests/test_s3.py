"""The whole product on an object store: every command against a local S3 server (moto),
compared with the same command on a local directory.

A few real RAVDESS clips and ``egemaps`` features keep it inside the default suite's budget.
The server, its bucket and the AWS_* environment come from ``tests/conftest.py``.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli import app
from conftest import copy_to
from featurestore import Store

runner = CliRunner()
N_CLIPS = 12


def _emofs(*argv: str) -> str:
    result = runner.invoke(app, [str(a) for a in argv])
    assert result.exit_code == 0, f"emofs {' '.join(map(str, argv))}: {result.output}"
    return result.stdout


def _json(*argv: str) -> dict:
    return json.loads(_emofs(*argv, "--json"))


@pytest.fixture(scope="module")
def s3_env(s3_server):
    """The S3 server's environment for the whole module; a fresh store prefix."""
    import uuid

    with pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT"):
            mp.delenv(name, raising=False)
        for name, value in s3_server.items():
            mp.setenv(name, value)
        yield f"s3://emofs-test/s3-suite-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def clips_dir(tmp_path_factory, shared_data) -> Path:
    """12 real wavs with two labels (alternating), plus labels.csv."""
    folder = tmp_path_factory.mktemp("s3clips") / "clips"
    folder.mkdir()
    wavs = sorted((shared_data / "ravdess_actor05" / "wav").glob("*.wav"))[::4][:N_CLIPS]
    lines = ["path,label"]
    for i, wav in enumerate(wavs):
        shutil.copyfile(wav, folder / wav.name)
        lines.append(f"{wav.name},{'calm' if i % 2 == 0 else 'loud'}")
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="module")
def stores(s3_env, clips_dir, tmp_path_factory) -> dict[str, str]:
    """The same ingest + egemaps extraction into a local store and an s3:// store."""
    uris = {"local": str(tmp_path_factory.mktemp("s3local") / "store"), "s3": f"{s3_env}/store"}
    for uri in uris.values():
        _emofs("ingest", clips_dir, "--labels", clips_dir / "labels.csv", "--store", uri)
        _emofs("extract", "--encoders", "egemaps", "--workers", "0", "--store", uri)
    return uris


def _vectors(uri: str, name: str = "egemaps") -> dict[str, list]:
    table = Store(uri).table(f"features/{name}.lance", columns=["clip_id", "vector"])
    return dict(zip(table.column("clip_id").to_pylist(), table.column("vector").to_pylist()))


def test_ingest_and_extract_on_s3_match_local(stores):
    cols = ["clip_id", "rel_path", "label", "sha256", "duration_s", "has_audio"]
    local, remote = (Store(stores[k]).clips(columns=cols).sort("clip_id") for k in ("local", "s3"))
    assert remote.height == N_CLIPS and remote.equals(local)
    assert _vectors(stores["s3"]) == _vectors(stores["local"]) != {}  # bit-identical float16
    # Nothing of the s3 store was written to local disk: the bucket holds the datasets.
    fs, root = _fs(stores["s3"])
    names = {i.path.rsplit("/", 1)[-1] for i in fs.get_file_info(_selector(root))}
    assert {"clips.lance", "features"} <= names


def _fs(uri):
    from featurestore.remote import filesystem

    return filesystem(uri)


def _selector(root, recursive=False):
    import pyarrow.fs as pafs

    return pafs.FileSelector(root, recursive=recursive, allow_not_found=True)


def test_info_and_check_on_s3_match_local(stores):
    info = {k: _json("info", "--store", uri) for k, uri in stores.items()}
    for key in ("clips", "modalities", "labels", "errors", "features"):
        assert info["s3"][key] == info["local"][key], key
    assert info["s3"]["size_bytes"] > 0
    check = _json("check", "--store", stores["s3"])
    assert check["ok"] and check["duplicates"] == {} and check["rows"]["clips.lance"] == N_CLIPS


def test_index_build_and_similar_on_s3_match_local(stores):
    built = {k: _json("index", "build", "--encoder", "egemaps", "--store", uri) for k, uri in stores.items()}
    assert built["s3"]["rows"] == built["local"]["rows"] == N_CLIPS
    fs, root = _fs(f"{stores['s3']}/index")
    files = sorted(i.path.rsplit("/", 1)[-1] for i in fs.get_file_info(_selector(root)))
    assert files == ["egemaps.faiss", "egemaps.ids.parquet", "egemaps.json", "egemaps.layout.arrow"]  # in the bucket
    query = Store(stores["local"]).clips(columns=["clip_id"])["clip_id"][0]
    hits = {k: json.loads(_emofs("similar", query, "-k", "5", "--format", "json", "--store", uri))
            for k, uri in stores.items()}
    assert [h["clip_id"] for h in hits["s3"]] == [h["clip_id"] for h in hits["local"]]
    np.testing.assert_allclose([h["score"] for h in hits["s3"]], [h["score"] for h in hits["local"]])
    assert Store(stores["s3"]).index_names() == ["egemaps"]


@pytest.fixture(scope="module")
def runs(stores, tmp_path_factory) -> dict[str, Path]:
    """A head trained (few steps, same seed) on each store."""
    out = {}
    for key, uri in stores.items():
        out[key] = tmp_path_factory.mktemp(f"run_{key}") / "run"
        _emofs("train", "head", "--encoders", "egemaps", "--epochs", "2", "--max-steps", "4",
               "--hidden", "8", "--threads", "1", "--out", out[key], "--store", uri)
    return out


def test_train_eval_predict_read_from_the_bucket(stores, runs):
    metrics = {k: json.loads((runs[k] / "metrics.json").read_text()) for k in runs}
    assert metrics["s3"]["test"] == metrics["local"]["test"]
    evals = {k: _json("eval", runs[k], "--store", stores[k]) for k in runs}
    assert evals["s3"]["accuracy"] == evals["local"]["accuracy"]
    for key in runs:
        _emofs("predict", runs[key], "--name", "p", "--store", stores[key])
    preds = {k: Store(stores[k]).table("predictions/p.lance").sort_by("clip_id") for k in runs}
    assert preds["s3"].column("label").to_pylist() == preds["local"].column("label").to_pylist()
    np.testing.assert_allclose(np.array(preds["s3"].column("probs").to_pylist()),
                               np.array(preds["local"].column("probs").to_pylist()), atol=1e-6)


def test_label_new_archive_into_the_bucket(stores, runs, shared_data, tmp_path):
    archive = tmp_path / "batch"
    archive.mkdir()
    for wav in sorted((shared_data / "crema_d" / "wav16k").glob("*.wav"))[:4]:
        shutil.copyfile(wav, archive / wav.name)
    reports = {k: _json("label", archive, "--run", runs[k], "--name", "batch", "--workers", "0",
                        "--store", stores[k]) for k in runs}
    assert reports["s3"]["labelled"] == reports["local"]["labelled"] == 4
    preds = {k: Store(stores[k]).table("predictions/batch.lance").sort_by("clip_id") for k in runs}
    assert preds["s3"].column("label").to_pylist() == preds["local"].column("label").to_pylist()
    assert _vectors(stores["s3"]) == _vectors(stores["local"])


def test_export_import_round_trip_through_the_bucket(stores, tmp_path):
    _emofs("export", "features", tmp_path / "out", "--store", stores["s3"])
    exported = sorted(p.name for p in (tmp_path / "out" / "egemaps").glob("*.npy"))
    assert len(exported) == len(_vectors(stores["s3"])) >= N_CLIPS  # (+ the labelled batch)
    _emofs("import", "features", tmp_path / "out" / "egemaps", "--as", "eg_back", "--store", stores["s3"])
    back, original = _vectors(stores["s3"], "eg_back"), _vectors(stores["s3"])
    assert back.keys() == original.keys()
    for clip_id, vector in original.items():
        np.testing.assert_allclose(back[clip_id], vector, rtol=1e-3)


def test_vacuum_on_s3_keeps_every_row(stores):
    before, vectors = Store(stores["s3"]).clips().sort("clip_id"), _vectors(stores["s3"])
    report = _json("vacuum", "--older-than", "0", "--store", stores["s3"])
    assert {r["dataset"] for r in report["datasets"]} >= {"clips.lance", "features/egemaps.lance"}
    assert report["bytes_after"] <= report["bytes_before"]
    assert Store(stores["s3"]).clips().sort("clip_id").equals(before)
    assert _vectors(stores["s3"]) == vectors


# -------------------------------------------------------------- misconfiguration
@pytest.mark.parametrize("case, env, expected", [
    ("missing bucket", {}, "bucket 'no-such-bucket' does not exist"),
    ("refused endpoint", {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}, "cannot connect to http://127.0.0.1:9"),
    ("http not allowed", {"AWS_ALLOW_HTTP": None}, "set AWS_ALLOW_HTTP=true"),
])
def test_misconfigured_bucket_is_one_line_within_10s(s3, monkeypatch, case, env, expected):
    from featurestore import remote

    monkeypatch.setattr(remote, "_REACHABLE", set())
    for name, value in env.items():
        if value is None:
            monkeypatch.delenv(name)
        else:
            monkeypatch.setenv(name, value)
    uri = "s3://no-such-bucket/store" if case == "missing bucket" else f"{s3}/store"
    start = time.monotonic()
    result = runner.invoke(app, ["ingest", ".", "--store", uri])
    assert time.monotonic() - start < 10
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach store") and expected in lines[0], lines


# --------------------------------------------------------------- two writers at once
def test_concurrent_writers_on_the_bucket_lose_and_duplicate_nothing(s3, tmp_path):
    from test_concurrency import _INGESTER, _UPSERTER, _run_at_once, _write_wav

    root, rounds = f"{s3}/upserts", 2
    _run_at_once(_UPSERTER, [[root, str(who), str(rounds)] for who in range(3)], timeout=180)
    clips = Store(root).clips()
    assert clips.height == clips["clip_id"].n_unique() == 30 + 3 * 15
    for row in clips.filter(clips["clip_id"].str.starts_with("shared")).to_dicts():
        assert [row[f"n_w{w}"] for w in range(3)] == [rounds] * 3, row  # no update lost

    copies = [tmp_path / "copy1", tmp_path / "copy2"]
    for i in range(12):
        for folder in copies:
            _write_wav(folder / f"actor{i % 3}" / f"clip{i:02d}.wav", pitch=200 + 15 * i)
    _run_at_once(_INGESTER, [[str(folder), f"{s3}/ingests"] for folder in copies], timeout=180)
    clips = Store(f"{s3}/ingests").clips(columns=["clip_id", "uri"])
    assert clips.height == clips["clip_id"].n_unique() == clips["uri"].n_unique() == 24


def test_object_lock_waits_for_a_holder_and_takes_over_an_expired_lease(s3):
    import threading

    from featurestore.errors import StoreError
    from featurestore.object_lock import ObjectLease

    uri = f"{s3}/.emofs-write.lock"
    first = ObjectLease(uri, timeout=5, ttl=3)
    first.acquire()
    waiter, order = ObjectLease(uri, timeout=10, ttl=3), []
    thread = threading.Thread(target=lambda: (waiter.acquire(), order.append("waiter")))
    thread.start()
    time.sleep(4.5)  # longer than the ttl: the heartbeat keeps the first lease alive
    order.append("first")
    first.release()
    thread.join(10)
    assert order == ["first", "waiter"]
    with pytest.raises(StoreError, match="held the write lock"):
        ObjectLease(uri, timeout=0.5, ttl=3).acquire()
    # A writer that died holding the lease (no heartbeat, no release): taken over after ttl.
    waiter._stop.set()
    waiter._beat.join()
    start = time.monotonic()
    late = ObjectLease(uri, timeout=10, ttl=3)
    late.acquire()
    assert 0.5 < time.monotonic() - start < 5
    late.release()


# ------------------------------------------------------------------- media in the bucket
def _upload(folder: Path, prefix: str) -> None:
    from featurestore.remote import filesystem

    fs, root = filesystem(prefix)
    for file in sorted(folder.rglob("*")):
        if file.is_file():
            with fs.open_output_stream(f"{root}/{file.relative_to(folder).as_posix()}") as out:
                out.write(file.read_bytes())


def test_ingest_extract_and_label_media_read_from_the_bucket(s3, clips_dir, media_samples, runs, tmp_path):
    raw = tmp_path / "raw"
    for wav in sorted(clips_dir.glob("*.wav"))[:4]:
        copy_to(wav, raw / "audio" / wav.name)
    copy_to(media_samples["mp4"], raw / "video" / media_samples["mp4"].name)
    copy_to(media_samples["wav"], raw / ".hidden" / "skip.wav")
    (raw / "audio" / "broken.wav").write_bytes(b"\x00" * 512)
    _upload(raw, f"{s3}/raw")
    local, remote = str(tmp_path / "local"), f"{s3}/store"
    shutil.rmtree(raw / ".hidden")
    reports = {"local": _json("ingest", raw, "--store", local),
               "s3": _json("ingest", f"{s3}/raw/", "--store", remote)}
    assert reports["s3"]["new"] == reports["local"]["new"] == 5 and len(reports["s3"]["errors"]) == 1
    again = _json("ingest", f"{s3}/raw", "--store", remote)
    assert again["unchanged"] == 5 and again["new"] == again["updated"] == 0  # ids stable
    cols = ["clip_id", "rel_path", "sha256", "duration_s", "has_audio", "has_video", "n_frames"]
    a, b = (Store(u).clips(columns=cols).sort("clip_id") for u in (local, remote))
    assert b.equals(a)
    assert Store(remote).clips(columns=["uri"])["uri"].str.starts_with(f"{s3}/raw/").all()
    for uri in (local, remote):
        _emofs("extract", "--encoders", "egemaps", "--workers", "0", "--store", uri)
    assert _vectors(remote) == _vectors(local) and len(_vectors(remote)) == 5
    # `emofs label s3://bucket/batch7`: media listed and read from the bucket.
    labelled = _json("label", f"{s3}/raw/audio", "--run", runs["s3"], "--workers", "0", "--store", remote)
    assert labelled["labelled"] == 4 and labelled["files"] == 5
