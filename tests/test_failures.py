"""No silent wrong answers, no tracebacks: each case was reproduced on main, then fixed.

Every CLI case runs through Typer's CliRunner and expects exit code 1 with one
``error: ...`` line that says what to do (or, for a bad file among good ones, a warning, an
errors.lance row and the good files done).
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from cli import app
from conftest import REPO, copy_to
from featurestore import QueryError, Store

runner = CliRunner()


def _one_error_line(result, *needles: str) -> str:
    """Exit code 1, one ``error:`` line holding every needle, no traceback."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.strip().splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture()
def tiny_store(tmp_path) -> Store:
    store = Store(tmp_path / "store")
    store.upsert_clips(pa.table({
        "clip_id": ["a", "b", "c"],
        "label": ["sad", "happy", "a;b"],
        "split": ["train", "test", "train"],
    }))
    return store


# ------------------------------------------------------------ 1. a --where parsed in part
@pytest.mark.parametrize("where, needle", [
    ("label = 'sad'; DELETE FROM clips WHERE 1=1", "';'"),
    ("label = 'sad') OR (1=1", "closes a parenthesis never opened"),
    ("(label = 'sad')) garbage", "closes a parenthesis never opened"),
    ("label = 'sad' garbage", "not one whole filter"),
    ("label = 'sad' ORDER BY split", "not one whole filter"),
    ("split = 'train' LIMIT 1", "not one whole filter"),
    ("label = 'sad' -- and the rest", "comment"),
    ("((label = 'sad')", "parenthesis open"),
    ("label = 'sad", "unterminated"),
    ("not sql", "No field named sql"),
])
def test_where_must_parse_whole(tiny_store, where, needle):
    """Before: the text after ';' or a stray ')' was dropped and 18 rows came back, rc 0."""
    with pytest.raises(QueryError, match="--where"):
        tiny_store.clips(where=where)
    result = runner.invoke(app, ["clips", "--where", where, "--store", tiny_store.uri])
    _one_error_line(result, needle)


def test_good_filters_still_run(tiny_store):
    assert tiny_store.clips(where="label = 'a;b'")["clip_id"].to_list() == ["c"]  # ';' quoted
    assert tiny_store.clips(where="label = 'it''s'").height == 0
    assert tiny_store.clips(where="(label = 'sad' OR label = 'happy') AND split = 'train'").height == 1
    assert tiny_store.clips(where="`label` IN ('sad', 'happy')").height == 2


def test_wrapped_filters_are_checked_before_wrapping(tiny_store):
    """The reader and read_features wrap --where in (...): a stray ')' would balance there."""
    from featurestore.features import read_features, write_features
    from featurestore.reader import FeatureReader

    with pytest.raises(QueryError, match="never opened"):
        FeatureReader(tiny_store, ["x"], where="label = 'sad') OR (1=1", split="train")
    write_features(tiny_store, "x", ["a", "b"], np.ones((2, 4), np.float32), {"ref": "x"})
    with pytest.raises(QueryError, match="never opened"):
        read_features(tiny_store, "x", where="clip_id = 'a') OR (true")
    assert read_features(tiny_store, "x", where="clip_id = 'a'").vectors.shape == (1, 4)


def test_errors_where_is_checked_without_an_errors_dataset(tiny_store):
    """Before: `emofs errors --where 'not sql'` on a store without errors said "0 rows", rc 0."""
    result = runner.invoke(app, ["errors", "--where", "not sql", "--store", tiny_store.uri])
    _one_error_line(result, "No field named sql", "stage")
    result = runner.invoke(app, ["errors", "--where", "stage = 'ingest'", "--store", tiny_store.uri])
    assert result.exit_code == 0, result.output


# ------------------------------------------------------- 2. symlink loops, dangling links
def test_broken_links_are_error_rows_and_the_rest_goes_on(tmp_path, media_samples):
    """Before: OSError (ELOOP) / FileNotFoundError traceback, nothing ingested."""
    from extractors import find_media

    folder = tmp_path / "media"
    copy_to(media_samples["wav"], folder / "good.wav")
    (folder / "a.wav").symlink_to("b.wav")
    (folder / "b.wav").symlink_to("a.wav")
    (folder / "c.wav").symlink_to("nowhere.wav")
    assert [p.name for _, p in find_media([folder])] == ["good.wav"]  # label's file list

    store = str(tmp_path / "store")
    result = runner.invoke(app, ["ingest", str(folder), "--store", store])
    assert result.exit_code == 0, result.output
    assert "1 new" in result.output and "3 unreadable" in result.output
    assert result.output.count("warning: skipped") == 3
    errors = Store(store).errors().sort("uri")
    assert errors["stage"].to_list() == ["ingest"] * 3
    assert [Path(u).name for u in errors["uri"].to_list()] == ["a.wav", "b.wav", "c.wav"]
    messages = errors["message"].to_list()
    assert "link loop" in messages[0] and "dangling" in messages[2] and "nowhere.wav" in messages[2]


# ----------------------------------------------------------- 3. an .npy header that lies
def test_npy_header_larger_than_the_file_is_skipped(tmp_path):
    """Before: MemoryError (the header claimed 200 GB), none of the good files imported."""
    from numpy.lib import format as npformat

    folder = tmp_path / "feats" / "HL"
    folder.mkdir(parents=True)
    for i in range(3):
        np.save(folder / f"good{i}.npy", np.full(16, i, np.float32))
    header = io.BytesIO()
    npformat.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                             "shape": (50_000_000_000,)})
    (folder / "huge.npy").write_bytes(header.getvalue().ljust(256, b"\0"))
    # a version-2 header whose length field claims 4 GiB
    (folder / "hlen.npy").write_bytes(b"\x93NUMPY\x02\x00" + (0xFFFFFFF0).to_bytes(4, "little") + b"{" * 100)

    store = str(tmp_path / "store")
    result = runner.invoke(app, ["import", "features", str(folder), "--create-missing", "--store", store])
    assert result.exit_code == 0, result.output
    assert "3 of 5 files imported" in result.output and "2 skipped" in result.output
    errors = {Path(u).name: m for u, m in Store(store).errors().select("uri", "message").iter_rows()}
    assert "header claims shape (50000000000,)" in errors["huge.npy"]
    assert "truncated .npy header" in errors["hlen.npy"]


# ------------------------------------------------------------- 4. a truncated checkpoint
@pytest.fixture()
def damaged_run(tmp_path) -> Path:
    import torch

    from heads.config import HeadConfig

    run = tmp_path / "runs" / "r1"
    (run / "checkpoints").mkdir(parents=True)
    HeadConfig(encoders=["egemaps"]).save(run / "config.json")
    (run / "labels.json").write_text(json.dumps(["happy", "sad"]))
    (run / "features.json").write_text(json.dumps({"egemaps": {"dim": 88, "fingerprint": "f"}}))
    (run / "metrics.json").write_text("{}")  # a finished run whose checkpoint broke since
    buffer = io.BytesIO()
    torch.save({"state_dict": {"head.w": torch.zeros(64, 88)}, "epoch": 3}, buffer)
    (run / "checkpoints" / "best.ckpt").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return run


@pytest.mark.parametrize("argv", [
    ["eval", "{run}"],
    ["predict", "{run}"],
    ["label", "{media}", "--run", "{run}"],
])
def test_truncated_checkpoint_names_the_file(tiny_store, damaged_run, media_samples, tmp_path, argv):
    """Before: RuntimeError: PytorchStreamReader failed reading zip archive (a traceback)."""
    media = copy_to(media_samples["wav"], tmp_path / "new" / "x.wav").parent
    argv = [a.format(run=damaged_run, media=media) for a in argv] + ["--store", tiny_store.uri]
    _one_error_line(runner.invoke(app, argv), "best.ckpt", "damaged", "restore", "retrain")


# ----------------------------------------------------------------- 5. --out is a file
def test_train_out_that_is_a_file(tiny_store, tmp_path):
    """Before: FileExistsError traceback (after the data was prepared)."""
    out = tmp_path / "taken"
    out.write_text("not a run")
    result = runner.invoke(app, ["train", "head", "-e", "egemaps", "--out", str(out), "--store", tiny_store.uri])
    _one_error_line(result, "is a file", "--out")
    result = runner.invoke(app, ["train", "head", "-e", "egemaps", "--out", str(out / "sub"),
                                 "--store", tiny_store.uri])
    _one_error_line(result, "which is a file")


# ------------------------------------------------------------- 6. an unreachable bucket
_AWS_VARS = ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT", "AWS_PROFILE",
             "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ALLOW_HTTP")


@pytest.fixture()
def aws_env(monkeypatch):
    for name in _AWS_VARS:
        monkeypatch.delenv(name, raising=False)

    def set_env(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)

    return set_env


def test_no_region_says_so(aws_env):
    """Before: `info` said "no emofs store ... run emofs ingest first"; ingest: a traceback."""
    result = runner.invoke(app, ["info", "--store", "s3://emofs-test-noregion/store"])
    _one_error_line(result, "cannot reach store", "AWS_REGION")


def test_refused_endpoint_fails_fast(aws_env, tmp_path, media_samples):
    """Before: a traceback after 11 s. The probe answers in seconds, in one line."""
    aws_env(AWS_ENDPOINT_URL="http://127.0.0.1:9", AWS_ALLOW_HTTP="true", AWS_REGION="us-east-1",
            AWS_ACCESS_KEY_ID="dummy", AWS_SECRET_ACCESS_KEY="dummy")
    started = time.perf_counter()
    result = runner.invoke(app, ["ingest", str(media_samples["wav"]), "--store", "s3://emofs-test-refused/store"])
    assert time.perf_counter() - started < 10
    _one_error_line(result, "cannot connect to http://127.0.0.1:9", "AWS_ENDPOINT_URL")


class _FakeS3(BaseHTTPRequestHandler):
    """Answers every request with the class's canned status and body."""

    status = 200
    body = (b'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>b</Name>'
            b"<KeyCount>0</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>"
            b"</ListBucketResult>")

    def do_GET(self):  # noqa: N802 - http.server API
        self.send_response(self.status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("status, body, needle", [
    (200, None, "no emofs store at s3://"),  # reachable, empty: the old message is right here
    (403, b"<Error><Code>InvalidAccessKeyId</Code></Error>", "denied (InvalidAccessKeyId)"),
])
def test_reachable_bucket_answers(aws_env, status, body, needle):
    handler = type("Handler", (_FakeS3,), {"status": status, "body": body or _FakeS3.body})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        aws_env(AWS_ENDPOINT_URL=f"http://127.0.0.1:{server.server_port}", AWS_ALLOW_HTTP="true",
                AWS_REGION="us-east-1", AWS_ACCESS_KEY_ID="dummy", AWS_SECRET_ACCESS_KEY="dummy")
        result = runner.invoke(app, ["info", "--store", f"s3://emofs-test-{status}/store"])
        _one_error_line(result, needle)
    finally:
        server.shutdown()


def test_remote_diagnosis_wording(aws_env):
    from featurestore.remote import diagnose

    assert "AWS_ALLOW_HTTP=true" not in diagnose("s3://b/s", "HTTP error: builder error")
    assert "does not exist" in diagnose("s3://b/s", "Server returned non-2xx status code: 404 Not Found: "
                                                    "<Code>NoSuchBucket</Code>")
    assert "GOOGLE_APPLICATION_CREDENTIALS" in diagnose("gs://b/s", "Error performing token request")
    assert "scheme" in diagnose("weird://b/s", "No object store provider found for scheme: 'weird'")


# ----------------------------------------------- 7. decoding workers outlive a kill -9
_POOL_SCRIPT = """
import sys, threading, time
sys.path.insert(0, {repo!r})
from extractors.media import MediaConfig
from extractors.workers import prepared

def run():
    for _ in prepared([60.0] * 4, MediaConfig(), workers=2, task=time.sleep):
        pass

if __name__ == "__main__":
    threading.Thread(target=run, daemon=True).start()
    print("started", flush=True)
    time.sleep(120)
"""


def _descendants(pid: int) -> list[int]:
    import psutil

    return [p.pid for p in psutil.Process(pid).children(recursive=True)]


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_workers_exit_when_their_parent_is_killed(tmp_path):
    """Before: kill -9 of `emofs extract` left ~220 MB workers running with parent 1."""
    import psutil

    script = tmp_path / "pool.py"
    script.write_text(textwrap.dedent(_POOL_SCRIPT.format(repo=str(REPO))))
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    workers: list[int] = []
    try:
        assert parent.stdout.readline().strip() == "started"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            workers = [p for p in _descendants(parent.pid)
                       if "multiprocessing-fork" in " ".join(psutil.Process(p).cmdline())]
            if len(workers) >= 2:
                break
            time.sleep(0.1)
        assert len(workers) >= 2, "the decoding pool did not start"
        time.sleep(1.0)  # let them initialise (the watchdog starts in the initializer)
        everything = _descendants(parent.pid)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_alive(p) for p in everything):
            time.sleep(0.2)
        assert not [p for p in everything if _alive(p)], "workers outlived their parent"
    finally:
        if parent.poll() is None:
            parent.kill()
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


# ------------------------------------------------------------------ 8. an empty argument
def test_empty_similar_query(tiny_store):
    """Before: `emofs similar ""` said "error:  is a folder"."""
    _one_error_line(runner.invoke(app, ["similar", "", "--store", tiny_store.uri]), "QUERY is empty")
    _one_error_line(runner.invoke(app, ["similar", "  ", "--store", tiny_store.uri]), "QUERY is empty")


def test_empty_llm_ask_target(tiny_store, tmp_path):
    result = runner.invoke(app, ["llm", "ask", "", "--run", str(tmp_path / "run"), "--store", tiny_store.uri])
    _one_error_line(result, "TARGET is empty")


# ------------------------------------------------- 9. bad values are stopped at the door
def _store_with_nonfinite_rows(root: Path) -> Store:
    """40 labelled clips with an 8-d feature set ``feat``; c00..c02 hold NaN / inf (stored
    as an older emofs or another tool could have: through the table, past the door)."""
    from featurestore.features import feature_table, features_name, write_features

    store = Store(root)
    ids = [f"c{i:02d}" for i in range(40)]
    store.upsert_clips(pa.table({"clip_id": ids, "label": ["a", "b"] * 20,
                                 "split": ["train"] * 30 + ["test"] * 10}))
    x = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
    x[:, 0] += np.tile([2.0, -2.0], 20)
    write_features(store, "feat", ids, x, {"weights": "synthetic"}, dtype="float32")
    bad = x[:3].copy()
    bad[0, 1], bad[1, 2], bad[2] = np.nan, np.inf, np.nan
    schema = store.dataset(features_name("feat")).schema
    store.upsert(features_name("feat"), feature_table(ids[:3], bad, None, schema), schema=schema)
    return store


def test_nonfinite_vectors_never_enter_a_feature_set(tmp_path):
    """The writers' door: NaN / inf (also a float32 value past float16's range) is refused."""
    from types import SimpleNamespace

    from extractors.prepare import encoder_outputs
    from featurestore.errors import InputError
    from featurestore.features import write_features
    from featurestore.finite import finite_rows

    store = Store(tmp_path / "store")
    x = np.ones((3, 4), np.float32)
    x[1, 0] = 1e5  # finite in float32, inf in float16
    assert finite_rows(x).tolist() == [True, True, True]
    assert finite_rows(x, dtype="float16").tolist() == [True, False, True]
    assert finite_rows(np.ones((2, 4)), [np.ones((3, 4)), np.full((2, 4), np.nan)]).tolist() == [True, False]
    with pytest.raises(InputError, match=r"1 of 3 rows hold NaN or inf .*e\.g\. b"):
        write_features(store, "f", ["a", "b", "c"], x, {"w": 1})  # float16 by default
    assert store.dataset("features/f.lance") is None
    write_features(store, "f", ["a", "b", "c"], x, {"w": 1}, dtype="float32")  # fits float32

    # extract (local and Ray share encoder_outputs): a bad clip becomes an error message
    enc = SimpleNamespace(name="e", need="audio")
    good, nan, big = (SimpleNamespace(vector=v, tokens=None) for v in
                      (np.ones(4, np.float32), np.array([0, np.nan, 1, 1], np.float32),
                       np.array([0, 1e6, 1, 1], np.float32)))
    items = [{"encoded": {"e": out}} for out in (good, nan, big)]
    outs = encoder_outputs(enc, items, "float16")
    assert outs[0] is good
    assert "NaN or inf" in outs[1] and "not finite" in outs[1]
    assert "float16" in outs[2] and "--dtype float32" in outs[2]
    assert encoder_outputs(enc, items[2:], "float32")[0] is big


def test_extract_records_a_nonfinite_clip_and_writes_the_rest(tmp_path, media_samples, monkeypatch):
    from extractors import extract, ingest
    from extractors.encoders.egemaps import EgemapsEncoder

    folder = tmp_path / "media"
    for name in ("a.wav", "b.wav"):
        copy_to(media_samples["wav"], folder / name)
    store = Store(tmp_path / "store")
    ingest([folder], store, progress=False)
    real = EgemapsEncoder.encode
    calls = []

    def encode(self, inputs):
        out = real(self, inputs)
        calls.append(1)
        if len(calls) == 1:  # the first clip's functionals blow past float16
            out[0].vector = out[0].vector * np.float32(1e6)
        return out

    monkeypatch.setattr(EgemapsEncoder, "encode", encode)
    report = extract(store, ["egemaps"], workers=0, progress=False)
    assert report.encoders["egemaps"].extracted == 1 and report.encoders["egemaps"].failed == 1
    assert store.dataset("features/egemaps.lance").count_rows() == 1
    errors = store.errors()
    assert errors["stage"].to_list() == ["encode"] and "NaN or inf" in errors["message"][0]


def test_check_finds_and_repair_quarantines_nonfinite_rows(tmp_path):
    """Before: `emofs check` said ok over 3 NaN/inf rows."""
    from featurestore.index import IndexConfig, build_index

    store = _store_with_nonfinite_rows(tmp_path / "store")
    build_index(store, IndexConfig(["feat"], name="feat"), progress=False)
    result = runner.invoke(app, ["check", "--store", store.uri])
    assert result.exit_code == 1 and "3 rows hold NaN or inf" in result.output, result.output
    assert "c00, c01, c02" in result.output and "emofs check --repair" in result.output

    result = runner.invoke(app, ["check", "--repair", "--json", "--store", store.uri])
    assert result.exit_code == 0, result.output
    done = json.loads(result.output)
    assert done["ok"] and done["repaired"]["nonfinite_rows_quarantined"] == {"feat": 3}
    assert done["repaired"]["indexes_rebuilt"] == ["feat"]
    assert store.dataset("features/feat.lance").count_rows() == 37
    errors = store.errors().sort("clip_id")
    assert errors["clip_id"].to_list() == ["c00", "c01", "c02"]
    assert set(errors["stage"]) == {"encode"} and set(errors["encoder"]) == {"feat"}
    assert "emofs extract --encoders feat" in errors["message"][0]
    from featurestore.features import up_to_date_clip_ids
    from featurestore.inventory import feature_set_info

    fp = feature_set_info(store, "feat")["fingerprint"]
    assert "c00" not in up_to_date_clip_ids(store, "feat", fp)  # so a re-extract redoes it


def test_nonfinite_tokens_are_found(tmp_path):
    from featurestore.features import feature_schema, feature_table, features_name
    from featurestore.finite import nonfinite_clip_ids

    store = Store(tmp_path / "store")
    schema = feature_schema(2, "float32", {"w": 1}, token_dim=2)
    tokens = [np.ones((3, 2)), np.zeros((0, 2)), np.array([[1.0, np.inf]]), np.ones((2, 2))]
    table = feature_table(["a", "b", "c", "d"], np.ones((4, 2)), tokens, schema)
    store.upsert(features_name("t"), table, schema=schema)
    assert nonfinite_clip_ids(store, "t") == ["c"]
    assert nonfinite_clip_ids(store, "t", tokens=False) == []


def test_index_build_leaves_out_nonfinite_rows(tmp_path):
    """Before: after `index build --rebuild` (standardised) EVERY similar failed with a NaN score."""
    from featurestore.index import IndexConfig, build_index

    store = _store_with_nonfinite_rows(tmp_path / "store")
    report = build_index(store, IndexConfig(["feat"], name="feat", standardize=True, rebuild=True),
                         progress=False)
    assert report.rows == 37 and report.nonfinite == {"feat": 3}
    again = build_index(store, IndexConfig(["feat"], name="feat", standardize=True), progress=False)
    assert again.mode == "unchanged" and again.nonfinite == {"feat": 3}
    result = runner.invoke(app, ["similar", "c05", "-k", "3", "--format", "json", "--store", store.uri])
    assert result.exit_code == 0, result.output
    _one_error_line(runner.invoke(app, ["similar", "c00", "--store", store.uri]),
                    "'feat' vector holds NaN or inf", "emofs check --repair")


def test_training_stops_on_nonfinite_inputs_and_loss(tmp_path):
    """Before: `train head` exited 0 with a NaN loss and one class predicted."""
    import torch

    from featurestore.errors import InputError
    from heads.config import HeadConfig
    from heads.data import prepare_data
    from heads.loop import training_loss
    from heads.models import FusionHead

    store = _store_with_nonfinite_rows(tmp_path / "store")
    with pytest.raises(InputError, match=r"3 of the selected clips have a 'feat' vector holding NaN.*"
                                         r"emofs check --repair"):
        prepare_data(store, HeadConfig(encoders=["feat"], preload="always"), quiet=True)
    head = FusionHead([4], 2, hidden=8)
    batch = {"e": torch.ones(3, 4), "label": torch.tensor([0, 1, 0])}
    loss, _ = training_loss(head, batch, ["e"], None, 0.0)
    assert torch.isfinite(loss)
    batch["e"][1, 2] = float("nan")
    with pytest.raises(InputError, match=r"training loss is nan: the features of e .*emofs check"):
        training_loss(head, batch, ["e"], None, 0.0)


def test_long_annotation_values_are_cut_at_ingest(tmp_path, media_samples, caplog):
    """Before: a 10 MB field was stored; `clips --limit 3` took 58 s and printed 26 MB."""
    from featurestore.annotations import MAX_TEXT_CHARS
    from featurestore.interop import import_annotations

    folder = tmp_path / "media"
    copy_to(media_samples["wav"], folder / "a.wav")
    copy_to(media_samples["wav"], folder / "b.wav")
    huge = "lorem ipsum " * 100_000  # 1.2 MB
    (tmp_path / "labels.csv").write_text(f"path,label,description\na.wav,{huge},{huge}\nb.wav,sad,{huge}\n")
    store = str(tmp_path / "store")
    result = runner.invoke(app, ["ingest", str(folder), "--labels", str(tmp_path / "labels.csv"),
                                 "--store", store])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if "characters cut to" in line]
    assert len(warnings) == 1 and "label (1 row)" in warnings[0] and "description (2 rows)" in warnings[0]
    clips = Store(store).clips().sort("clip_id")
    assert [len(v) for v in clips["description"].to_list()] == [MAX_TEXT_CHARS] * 2
    assert clips["label"].to_list() == [huge[:MAX_TEXT_CHARS], "sad"]

    started = time.perf_counter()
    for argv in (["clips", "--limit", "3"], ["info"]):
        result = runner.invoke(app, [*argv, "--store", store])
        assert result.exit_code == 0 and len(result.output) < 5000, (argv, len(result.output))
    assert time.perf_counter() - started < 10

    (tmp_path / "subs.csv").write_text(f"name,sentence\na,{huge}\n")
    with caplog.at_level("WARNING"):
        import_annotations(Store(store), tmp_path / "subs.csv")
    assert len(Store(store).clips(where="clip_id = 'a.wav'")["subtitle"][0]) == MAX_TEXT_CHARS
    assert any("subtitle (1 row)" in r.getMessage() for r in caplog.records)


def test_table_cells_are_cut_for_stores_written_before_the_limit(tiny_store):
    tiny_store.upsert_clips(pa.table({"clip_id": ["a"], "label": ["x" * 2_000_000]}))
    result = runner.invoke(app, ["clips", "--store", tiny_store.uri])
    assert result.exit_code == 0 and len(result.output) < 5000
    result = runner.invoke(app, ["info", "--store", tiny_store.uri])
    assert result.exit_code == 0 and len(result.output) < 5000


def test_non_utf8_file_name_is_an_error_row_and_the_rest_goes_on(tmp_path, media_samples):
    """Before: `ingest` and `label` died with a UnicodeEncodeError traceback, nothing ingested."""
    from workflows.label import archive_files

    folder = tmp_path / "media"
    for i in range(4):
        copy_to(media_samples["wav"], folder / f"good{i}.wav")
    bad = os.fsencode(folder) + b"/lat\xe9.wav"
    with open(bad, "wb") as handle:
        handle.write(media_samples["wav"].read_bytes())
    store = str(tmp_path / "store")
    result = runner.invoke(app, ["ingest", str(folder), "--store", store])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and "4 new" in result.output and "1 unreadable" in result.output
    assert "lat\\xe9.wav" in result.output and "not valid UTF-8" in result.output
    errors = Store(store).errors()
    assert errors["uri"].to_list() == [f"{folder}/lat\\xe9.wav"] and errors["stage"][0] == "ingest"
    # label's file list keeps the file under that name, so --out shows it with its error
    assert archive_files([folder])[-1] == f"{folder}/lat\\xe9.wav"
