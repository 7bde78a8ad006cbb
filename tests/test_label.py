"""`emofs label`: ingest -> extract what is missing -> predict, resumable, local and Ray.

A real head run (few steps, ``egemaps`` features of real RAVDESS clips) is trained once per
module; each test labels copies of other real clips in its own folder and store.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from featurestore import Store
from featurestore.errors import InputError, StoreError

REPO = Path(__file__).resolve().parents[1]
N_TRAIN = 36


def _wavs(shared_data: Path) -> list[Path]:
    ravdess = sorted((shared_data / "ravdess_actor05" / "wav").glob("*.wav"))
    crema = sorted((shared_data / "crema_d" / "wav16k").glob("*.wav"))
    return ravdess + crema


def _copy(files, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copyfile(f, folder / f.name)
    return folder


@pytest.fixture(scope="module")
def head_run(tmp_path_factory, shared_data):
    """A head run trained for a few steps on egemaps features of 36 real clips."""
    import polars as pl

    from extractors import extract, ingest
    from heads.config import HeadConfig
    from heads.train import train_head

    root = tmp_path_factory.mktemp("label_train")
    files = _wavs(shared_data)[:N_TRAIN]
    train = _copy(files, root / "train")
    labels = pl.read_csv(shared_data / "labels.csv").with_columns(
        pl.col("path").str.split("/").list.last().alias("path"))
    labels.filter(pl.col("path").is_in([f.name for f in files])).write_csv(root / "labels.csv")
    store = Store(root / "store")
    ingest([train], store, labels=root / "labels.csv", progress=False)
    extract(store, ["egemaps"], workers=0, progress=False)
    cfg = HeadConfig(encoders=["egemaps"], epochs=3, max_steps=6, hidden=16, batch_size=16,
                     accelerator="cpu", patience=1)
    train_head(store, cfg, out=root / "run", quiet=True)
    return root / "run"


@pytest.fixture()
def new_clips(shared_data) -> list[Path]:
    """Real clips the head never saw."""
    return _wavs(shared_data)[N_TRAIN:]


def _label(archives, store, run, **kwargs):
    from workflows.label import label

    kwargs.setdefault("workers", 0)
    kwargs.setdefault("progress", False)
    return label(archives, store, run, **kwargs)


def _predictions(store: Store, name: str):
    import polars as pl

    return pl.from_arrow(store.table(f"predictions/{name}.lance")).sort("clip_id")


def test_label_folder_predicts_every_readable_clip(tmp_path, head_run, new_clips):
    from heads.predict import predict_clips

    archive = _copy(new_clips[:8], tmp_path / "archive")
    (archive / "broken.wav").write_bytes(b"RIFF garbage, not audio" * 50)
    store = Store(tmp_path / "store")
    report = _label([archive], store, head_run, out=tmp_path / "labels.csv")

    assert report.files == 9 and report.clips == 8 and report.labelled == 8
    assert report.extracted == {"egemaps": 8}
    assert [e["path"] for e in report.errors] == [str((archive / "broken.wav").resolve())]
    assert sum(report.label_counts.values()) == 8
    preds = _predictions(store, "run")
    assert preds.height == 8 and preds["clip_id"].n_unique() == 8
    assert set(preds["path"].to_list()) == {str((archive / f.name).resolve()) for f in new_clips[:8]}
    assert preds["media_sha256"].null_count() == 0
    # The stored probabilities are the head's, recomputed independently here.
    direct = predict_clips(store, head_run, clip_ids=preds["clip_id"].to_list()).sort("clip_id")
    np.testing.assert_allclose(np.array(preds["probs"].to_list()), np.array(direct["probs"].to_list()),
                               atol=1e-6)
    assert preds["label"].to_list() == direct["label"].to_list()
    # errors.lance lists the corrupt file; --out lists every file, the corrupt one with its error.
    errors = store.errors()
    assert str((archive / "broken.wav").resolve()) in errors["uri"].to_list()
    import polars as pl

    out = pl.read_csv(tmp_path / "labels.csv")
    assert out.height == 9
    broken = out.filter(pl.col("path").str.ends_with("broken.wav"))
    assert broken["label"][0] is None and broken["error"][0].startswith("ingest:")
    assert out.filter(pl.col("label").is_not_null()).height == 8


def test_rerun_does_no_new_work_and_added_files_only_those(tmp_path, head_run, new_clips):
    archive = _copy(new_clips[:6], tmp_path / "archive")
    store = Store(tmp_path / "store")
    _label([archive], store, head_run)
    versions = (store.version("features/egemaps.lance"), store.version("predictions/run.lance"))

    again = _label([archive], store, head_run, out=tmp_path / "again.parquet")
    assert again.labelled == 0 and again.extracted == {} and again.already_labelled == 6
    assert (store.version("features/egemaps.lance"), store.version("predictions/run.lance")) == versions
    import polars as pl

    assert pl.read_parquet(tmp_path / "again.parquet").height == 6  # earlier labels included

    _copy(new_clips[6:10], archive)
    grown = _label([archive], store, head_run, out=tmp_path / "grown.csv")
    assert grown.labelled == 4 and grown.extracted == {"egemaps": 4} and grown.already_labelled == 6
    assert _predictions(store, "run").height == 10
    assert pl.read_csv(tmp_path / "grown.csv")["label"].null_count() == 0


def test_changed_file_is_relabelled(tmp_path, head_run, new_clips):
    archive = _copy(new_clips[:3], tmp_path / "archive")
    store = Store(tmp_path / "store")
    _label([archive], store, head_run)
    before = store.table("features/egemaps.lance").to_pydict()
    target = archive / new_clips[0].name
    shutil.copyfile(new_clips[5], target)  # same path, other content
    report = _label([archive], store, head_run)
    assert report.labelled == 1 and report.extracted == {"egemaps": 1}
    after = store.table("features/egemaps.lance").to_pydict()
    old = dict(zip(before["clip_id"], before["vector"]))
    new = dict(zip(after["clip_id"], after["vector"]))
    assert len(new) == 3 and new[target.name] != old[target.name]


_CHILD = """
import sys
sys.path.insert(0, {repo!r})
from featurestore import Store
from workflows.label import label
label([{archive!r}], Store({store!r}), {run!r}, batch_size=1, workers=0, progress=False)
"""


def test_killed_run_resumes_without_duplicates(tmp_path, head_run, shared_data):
    from featurestore.fragments import duplicate_keys

    files = _wavs(shared_data)[-30:]  # a fresh store: every clip is new
    archive = _copy(files, tmp_path / "archive")
    store_dir = tmp_path / "store"
    code = _CHILD.format(repo=str(REPO), archive=str(archive), store=str(store_dir), run=str(head_run))
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, cwd=tmp_path)
    versions = store_dir / "features" / "egemaps.lance" / "_versions"
    deadline = time.time() + 120
    while time.time() < deadline and child.poll() is None:
        # Each committed batch adds a manifest; listing the folder is cheap, so the kill
        # lands a few batches in, well before the end.
        if versions.is_dir() and len(os.listdir(versions)) >= 4:
            os.kill(child.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL, child.stderr.read().decode()[-2000:]
    import lance

    done_at_kill = lance.dataset(str(versions.parent)).count_rows()
    assert 1 <= done_at_kill < len(files), done_at_kill  # it really was killed mid-run

    store = Store(store_dir)
    report = _label([archive], store, head_run)
    assert report.clips == len(files) and not report.errors
    preds = _predictions(store, "run")
    assert preds.height == len(files) and preds["clip_id"].n_unique() == len(files)
    assert duplicate_keys(store, "features/egemaps.lance") == {}
    assert duplicate_keys(store, "predictions/run.lance") == {}
    assert report.extracted.get("egemaps", 0) == len(files) - done_at_kill  # committed ones kept
    assert _label([archive], store, head_run).labelled == 0


# ----------------------------------------------------------------- fragments (Ray's writer)
def _schema():
    return pa.schema([pa.field("clip_id", pa.string(), nullable=False), pa.field("v", pa.float32())],
                     metadata={"emofs.spec": "s1"})


def test_fragment_commit_upserts_and_uncommitted_fragments_stay_invisible(tmp_path):
    from featurestore.fragments import commit_fragments, duplicate_keys, prepare_dataset, write_fragments

    store = Store(tmp_path / "store")
    name = "features/x.lance"
    schema = _schema()
    prepare_dataset(store, name, schema)
    uri = store.path(name)
    first = write_fragments(uri, pa.table({"clip_id": ["a", "b"], "v": [1.0, 2.0]}, schema=schema), schema)
    commit_fragments(store, name, first, ["a", "b"], schema)
    # A worker of a killed job wrote these but no driver committed them.
    write_fragments(uri, pa.table({"clip_id": ["b", "z"], "v": [8.0, 9.0]}, schema=schema), schema)
    assert sorted(store.table(name).column("clip_id").to_pylist()) == ["a", "b"]
    # The rerun rewrites b (newer spec) and adds c: one commit, old b deleted in it.
    newer = schema.with_metadata({"emofs.spec": "s2"})
    second = write_fragments(uri, pa.table({"clip_id": ["b", "c"], "v": [3.0, 4.0]}, schema=newer), newer)
    version = commit_fragments(store, name, second, ["b", "c"], newer)
    rows = {r["clip_id"]: r["v"] for r in store.table(name).to_pylist()}
    assert rows == {"a": 1.0, "b": 3.0, "c": 4.0}
    assert duplicate_keys(store, name) == {}
    assert store.dataset(name).schema.metadata[b"emofs.spec"] == b"s2"
    assert store.version(name) == version


def test_fragment_commit_refuses_other_columns(tmp_path):
    from featurestore.fragments import commit_fragments, prepare_dataset, write_fragments

    store = Store(tmp_path / "store")
    prepare_dataset(store, "features/x.lance", _schema())
    other = pa.schema([pa.field("clip_id", pa.string(), nullable=False), pa.field("w", pa.int64())])
    frags = write_fragments(str(tmp_path / "elsewhere.lance"), pa.table({"clip_id": ["a"], "w": [1]}, schema=other), other)
    with pytest.raises(StoreError, match="columns"):
        commit_fragments(store, "features/x.lance", frags, ["a"], other)


# ----------------------------------------------------------------------------- Ray
def test_ray_engine_matches_local_engine(tmp_path, head_run, new_clips):
    pytest.importorskip("ray.data")
    import ray

    from featurestore.fragments import duplicate_keys

    archive = _copy(new_clips[:10], tmp_path / "archive")
    (archive / "broken.wav").write_bytes(b"\x00" * 4096)
    local_store, ray_store = Store(tmp_path / "local"), Store(tmp_path / "ray")
    local = _label([archive], local_store, head_run)
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False)
    try:
        with pytest.raises(InputError, match="^--gpus-per-actor 0.5: no GPU in the Ray cluster"):
            _label([archive], ray_store, head_run, engine="ray", gpus_per_actor=0.5)
        remote = _label([archive], ray_store, head_run, engine="ray", batch_size=3, actors=1)
        again = _label([archive], ray_store, head_run, engine="ray", batch_size=3)
    finally:
        ray.shutdown()
    assert remote.extracted == {"egemaps": 10} and remote.labelled == 10 and len(remote.errors) == 1
    assert again.labelled == 0 and again.extracted == {}
    a, b = _predictions(local_store, "run"), _predictions(ray_store, "run")
    assert a["clip_id"].to_list() == b["clip_id"].to_list()
    assert a["label"].to_list() == b["label"].to_list()
    np.testing.assert_allclose(np.array(a["probs"].to_list()), np.array(b["probs"].to_list()), atol=1e-5)
    fa = {r["clip_id"]: r["vector"] for r in local_store.table("features/egemaps.lance").to_pylist()}
    fb = {r["clip_id"]: r["vector"] for r in ray_store.table("features/egemaps.lance").to_pylist()}
    assert fa == fb  # the same float16 vectors, written as fragments by Ray workers
    assert (local_store.dataset("features/egemaps.lance").schema.metadata
            == ray_store.dataset("features/egemaps.lance").schema.metadata)
    assert duplicate_keys(ray_store, "features/egemaps.lance") == {}


# ------------------------------------------------------------------------------ CLI
def test_cli_label_json_and_flag_checks(tmp_path, head_run, new_clips):
    from typer.testing import CliRunner

    from cli import app

    archive = _copy(new_clips[:3], tmp_path / "archive")
    store = str(tmp_path / "store")
    runner = CliRunner()
    result = runner.invoke(app, ["label", str(archive), "--run", str(head_run), "--store", store,
                                 "--workers", "0", "--out", str(tmp_path / "o.csv"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["labelled"] == 3 and summary["errors"] == 0 and summary["out"].endswith("o.csv")
    text = runner.invoke(app, ["label", str(archive), "--run", str(head_run), "--store", store, "--workers", "0"])
    assert text.exit_code == 0 and "0 labelled now, 3 already labelled" in text.stdout

    bad = [
        (["--out", str(tmp_path / "o.txt")], "--out must end in .csv or .parquet"),
        (["--llm-run", str(head_run)], "--llm-run is only used with --explain"),
        (["--explain"], "--explain needs --llm-run"),
        (["--ray-address", "auto"], "--ray-address needs --engine ray"),
        (["--engine", "spark"], "--engine must be one of local, ray"),
        (["--batch-size", "0"], "--batch-size must be >= 1"),
        (["--actors", "2"], "--actors needs --engine ray"),
        (["--engine", "ray", "--actors", "0"], "--actors must be >= 1"),
        (["--engine", "ray", "--gpus-per-actor", "1.5"], "--gpus-per-actor must be a fraction in (0, 1]"),
        (["--engine", "ray", "--device", "cpu", "--gpus-per-actor", "1"], "drop --device cpu"),
    ]
    for extra, message in bad:
        res = runner.invoke(app, ["label", str(archive), "--run", str(head_run), "--store", store, *extra])
        assert res.exit_code == 1 and message in res.output, (extra, res.output)
    res = runner.invoke(app, ["label", str(archive), "--run", str(tmp_path), "--store", store])
    assert res.exit_code == 1 and "not a finished head run" in res.output


def test_label_refuses_run_trained_on_other_features(tmp_path, head_run, new_clips):
    run = tmp_path / "run"
    shutil.copytree(head_run, run)
    features = json.loads((run / "features.json").read_text())
    features["egemaps"]["fingerprint"] = "0000000000000000"
    (run / "features.json").write_text(json.dumps(features))
    archive = _copy(new_clips[:2], tmp_path / "archive")
    with pytest.raises(InputError, match="trained on 0000000000000000"):
        _label([archive], Store(tmp_path / "store"), run)


# -------------------------------------------------------------------------- explain
def test_explain_adds_one_reason_per_clip(tmp_path, head_run, new_clips):
    """--explain with a real (tiny, 2-step) `emofs llm train` run on the same features."""
    from llm import LLMConfig, train
    from llm.tiny import build_tiny_llama

    labels = json.loads((head_run / "labels.json").read_text())
    base = build_tiny_llama(tmp_path / "llama", labels, hidden_size=32, layers=1, heads=2)
    config = LLMConfig(base=str(base), feature_encoders=("egemaps",), video_encoder=None,
                       max_steps=2, batch_size=4, lora_r=4, max_new_tokens=8)
    llm_run = tmp_path / "llm"
    train(Store(head_run.parent / "store"), config, llm_run, progress=False)

    archive = _copy(new_clips[:3], tmp_path / "archive")
    store = Store(tmp_path / "store")
    report = _label([archive], store, head_run, llm_run=llm_run, explain=True, out=tmp_path / "o.parquet")
    assert report.labelled == 3 and report.explained == 3
    preds = _predictions(store, "run")
    assert preds["explanation"].null_count() == 0
    import polars as pl

    assert pl.read_parquet(tmp_path / "o.parquet")["explanation"].null_count() == 0
    assert _label([archive], store, head_run, llm_run=llm_run, explain=True).explained == 0
