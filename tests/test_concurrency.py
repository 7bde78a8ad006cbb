"""Several emofs processes writing one store at once: no row duplicated, lost or overwritten.

Each test starts real processes (``python -c``) that import first and then wait for a
common start time, so their writes interleave; small batches make many commits.
"""

from __future__ import annotations

import math
import os
import shutil
import struct
import subprocess
import sys
import time
import wave
from pathlib import Path

import pyarrow as pa
import pytest

from featurestore import Store, StoreError

REPO = Path(__file__).resolve().parents[1]

_UPSERTER = r"""
import sys, time
import pyarrow as pa
from featurestore import Store
root, who, rounds, start_at = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
shared = [f"shared{i:03d}" for i in range(30)]
own = [f"own{who}_{i:03d}" for i in range(15)]
store = Store(root)
while time.time() < start_at:
    time.sleep(0.002)
for r in range(1, rounds + 1):
    ids = shared + own
    for b in range(0, len(ids), 5):
        chunk = ids[b : b + 5]
        store.upsert_clips(pa.table({"clip_id": chunk, "label": [f"{who}:{r}"] * len(chunk),
                                     f"n_w{who}": pa.array([r] * len(chunk), pa.int64())}))
"""

_INGESTER = r"""
import sys, time
from extractors import ingest
from featurestore import Store
folder, root, start_at = sys.argv[1], sys.argv[2], float(sys.argv[3])
store = Store(root)
while time.time() < start_at:
    time.sleep(0.002)
ingest([folder], store, batch_size=3, workers=1, progress=False)
"""


def _run_at_once(code: str, argv_per_process: list[list[str]], timeout: float = 60) -> None:
    """Start one ``python -c code`` per argv list, all released at the same instant."""
    start_at = f"{time.time() + 2.0:.3f}"  # imports (lance, pyarrow, av) finish before it
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", code, *argv, start_at], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for argv in argv_per_process]
    failures = []
    for proc in procs:
        out, err = proc.communicate(timeout=timeout)
        if proc.returncode:
            failures.append(err[-2000:])
    assert not failures, "\n".join(failures)


def _write_wav(path: Path, pitch: float, seconds: float = 0.1, rate: int = 16_000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = b"".join(struct.pack("<h", int(3000 * math.sin(2 * math.pi * pitch * t / rate)))
                      for t in range(int(seconds * rate)))
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(frames)


@pytest.fixture()
def two_copies(tmp_path) -> tuple[Path, Path]:
    """copy1/ and copy2/: the same 24 tiny wav files under the same relative paths."""
    first = tmp_path / "copy1"
    for i in range(24):
        _write_wav(first / f"actor{i % 3}" / f"clip{i:02d}.wav", pitch=200 + 15 * i)
    second = tmp_path / "copy2"
    shutil.copytree(first, second)
    return first, second


def test_concurrent_upserts_keep_every_row_once_with_the_latest_values(tmp_path):
    root, rounds = str(tmp_path / "store"), 3
    _run_at_once(_UPSERTER, [[root, str(who), str(rounds)] for who in range(3)])

    clips = Store(root).clips()
    ids = clips["clip_id"].to_list()
    assert len(ids) == len(set(ids)) == 30 + 3 * 15  # overlapping ids once, each own id once
    rows = {r["clip_id"]: r for r in clips.to_dicts()}
    for clip_id, row in rows.items():
        if clip_id.startswith("shared"):
            # Every process's own column ends at its last round: no update was lost.
            assert [row[f"n_w{w}"] for w in range(3)] == [rounds] * 3, row
            # The last write of a shared id is some process's last round.
            assert row["label"] in {f"{w}:{rounds}" for w in range(3)}, row
        else:
            who = int(clip_id[3])
            assert row["label"] == f"{who}:{rounds}" and row[f"n_w{who}"] == rounds, row


def test_concurrent_ingests_of_two_copies_keep_both(tmp_path, two_copies):
    root = str(tmp_path / "store")
    _run_at_once(_INGESTER, [[str(folder), root] for folder in two_copies])

    clips = Store(root).clips(columns=["clip_id", "uri", "root", "rel_path"])
    files = sorted(str(p.resolve()) for folder in two_copies for p in folder.rglob("*.wav"))
    assert clips.height == 48
    assert clips["clip_id"].n_unique() == 48  # no id duplicated
    assert sorted(clips["uri"].to_list()) == files  # every file present, once
    for row in clips.to_dicts():  # each id is its file's own (rel path, or root-prefixed)
        assert row["clip_id"] in (row["rel_path"], f"{Path(row['root']).name}/{row['rel_path']}")
    # A later sequential ingest of both finds nothing to do.
    from extractors import ingest

    report = ingest(list(two_copies), Store(root), progress=False)
    assert report.unchanged == 48 and report.new == report.updated == 0


def test_read_only_store_fails_before_any_probing(tmp_path, two_copies, monkeypatch):
    import importlib

    from extractors import ingest

    ingest_module = importlib.import_module("extractors.ingest")  # the module, not the function
    root = tmp_path / "store"
    ingest([two_copies[0]], Store(root), progress=False)
    probed = []
    monkeypatch.setattr(ingest_module, "probe", lambda path: probed.append(path))
    root.chmod(0o555)
    try:
        if os.access(root, os.W_OK):
            pytest.skip("running as root: chmod does not make a directory read-only")
        with pytest.raises(StoreError, match=r"cannot write to the store .*writable") as err:
            ingest([two_copies[1]], Store(root), progress=False)
        assert "\n" not in str(err.value) and probed == []
    finally:
        root.chmod(0o755)


def test_unwritable_store_path_fails_in_one_line_everywhere(tmp_path, two_copies):
    """A store under a file (unwritable even for root): every write command refuses first."""
    from typer.testing import CliRunner

    from cli import app
    from featurestore.index import IndexConfig, build_index
    from featurestore.maintenance import vacuum

    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    store = Store(blocker / "store")
    with pytest.raises(StoreError, match="cannot write to the store"):
        store.check_writable()
    with pytest.raises(StoreError, match="cannot write to the store"):
        build_index(store, IndexConfig(["egemaps"]))
    with pytest.raises(StoreError, match="cannot write to the store"):
        vacuum(store)
    result = CliRunner().invoke(app, ["ingest", str(two_copies[0]), "--store", str(blocker / "store")])
    assert result.exit_code == 1, result.output
    assert result.output.startswith("error: cannot write to the store")
    assert len(result.output.strip().splitlines()) == 1


def test_store_objects_of_one_uri_share_one_reentrant_lock(tmp_path):
    first, second = Store(tmp_path / "s"), Store(tmp_path / "s")
    with first.writing():
        with second.writing():  # same process, same store: nests instead of deadlocking
            second.upsert_clips(pa.table({"clip_id": ["a"], "extra": [1]}))
    assert first.clips()["extra"].to_list() == [1]  # extra columns survive the first write
    assert (tmp_path / "s" / ".emofs-write.lock").exists()


def test_sigkill_mid_ingest_then_rerun_keeps_every_file_once(tmp_path):
    """A killed ingest loses at most its batch in flight; a rerun adds the rest, no twins."""
    folder = tmp_path / "clips"
    for i in range(240):
        _write_wav(folder / f"s{i % 4}" / f"c{i:03d}.wav", pitch=150 + 3 * i, seconds=0.05)
    root = tmp_path / "store"
    code = ("import sys\nfrom extractors import ingest\nfrom featurestore import Store\n"
            "ingest([sys.argv[1]], Store(sys.argv[2]), batch_size=1, workers=1, progress=False)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder), str(root)], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = Store(root)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if store.version() is not None and store.clips(columns=["clip_id"]).height >= 5:
                    break
            except StoreError:  # the first commit is being written
                pass
            time.sleep(0.02)
        if proc.poll() is not None:
            pytest.skip("the ingest finished before it could be killed (a very fast machine)")
        proc.kill()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    partial = store.clips(columns=["clip_id"]).height
    assert 5 <= partial < 240
    from extractors import ingest

    report = ingest([folder], store, batch_size=16, progress=False)
    ids = store.clips(columns=["clip_id", "uri"])
    assert ids.height == 240 and ids["clip_id"].n_unique() == 240 and ids["uri"].n_unique() == 240
    assert report.new == 240 - partial


# ------------------------------------------------- readers while ingest and vacuum run
def _clip_table(ids: list[str], round_: int) -> pa.Table:
    """Clip rows whose label never changes (a third are 'sad') and whose speaker does."""
    labels = ["sad", "happy", "angry"]
    return pa.table({"clip_id": ids, "name": ids, "rel_path": [f"{c}.wav" for c in ids],
                     "label": [labels[int(c[1:]) % 3] for c in ids],
                     "speaker": [f"round{round_}"] * len(ids)})


def _stale_handle(store: Store):
    """A handle on the clips version before a write and a ``vacuum --older-than 0``: its
    data and deletion files are gone, as for a reader caught by a concurrent vacuum."""
    from featurestore.maintenance import vacuum
    from featurestore.schema import CLIPS

    stale = store.dataset(CLIPS)
    store.upsert_clips(_clip_table([f"c{i:03d}" for i in range(0, 60, 7)], 99))
    vacuum(store, "0")
    return stale


def test_readers_survive_concurrent_ingest_and_vacuum_older_than_0(tmp_path):
    """Writes plus ``vacuum --older-than 0`` in a loop while threads read clips with a
    ``--where`` filter (store API and ``/api/clips``) and single clips (``/api/clip``):
    not one read fails or sees a wrong answer."""
    import threading

    pytest.importorskip("starlette")
    from starlette.testclient import TestClient

    from featurestore.maintenance import vacuum
    from workflows.app import AppConfig, create_app

    ids = [f"c{i:03d}" for i in range(60)]
    sad = sorted(c for c in ids if int(c[1:]) % 3 == 0)
    store = Store(tmp_path / "s")
    store.upsert_clips(_clip_table(ids, 0))
    app = create_app(AppConfig(store=store.uri), store=store)
    stop = threading.Event()
    failures: list[str] = []
    reads = {"store": 0, "clips": 0, "clip": 0}
    cycles = {"writes": 0, "removed": 0}

    def maintain():
        round_ = 0
        while not stop.is_set():
            round_ += 1
            for start in range(0, len(ids), 20):  # ingest-like batches: many commits
                store.upsert_clips(_clip_table(ids[start : start + 20], round_))
                cycles["writes"] += 1
            report = vacuum(store, "0")
            cycles["removed"] += sum(r.versions_removed for r in report.datasets)

    def read_store():
        while not stop.is_set():
            try:
                got = sorted(Store(store.uri).clips(where="label = 'sad'", columns=["clip_id"])["clip_id"])
                if got != sad:
                    failures.append(f"store.clips: {len(got)} sad clips")
            except Exception as exc:  # noqa: BLE001 - any failure is the finding
                failures.append(f"store.clips: {type(exc).__name__}: {exc}")
            reads["store"] += 1

    def read_app(kind: str):
        client = TestClient(app, base_url="http://127.0.0.1:8765")
        n = 0
        while not stop.is_set():
            n += 1
            if kind == "clips":
                answer = client.get("/api/clips", params={"where": "label = 'sad'", "limit": 100})
                ok = answer.status_code == 200 and sorted(r["clip_id"] for r in answer.json()["rows"]) == sad
            else:
                clip_id = ids[n % len(ids)]
                answer = client.get(f"/api/clip/{clip_id}")
                ok = answer.status_code == 200 and answer.json()["clip"]["clip_id"] == clip_id
            if not ok:
                failures.append(f"/api/{kind}: {answer.status_code} {answer.text[:300]}")
            reads[kind] += 1

    threads = [threading.Thread(target=maintain), threading.Thread(target=read_store),
               threading.Thread(target=read_app, args=("clips",)),
               threading.Thread(target=read_app, args=("clip",))]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline and not failures:
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert not failures, f"{len(failures)} failed reads of {sum(reads.values())}: {failures[:3]}"
    assert cycles["removed"] > 0 and min(reads.values()) > 0, (cycles, reads)


def test_a_vanished_file_is_read_again_from_the_latest_version(tmp_path, monkeypatch):
    """The real pylance error of a vacuumed file is recognised and retried on the latest
    version, by ``Store.table`` and by ``per_version`` (the app's clip cards)."""
    from featurestore.schema import CLIPS
    from featurestore.vanished import is_vanished
    from featurestore.versioned import per_version

    store = Store(tmp_path / "s")
    store.upsert_clips(_clip_table([f"c{i:03d}" for i in range(60)], 0))
    stale = _stale_handle(store)
    with pytest.raises((OSError, ValueError)) as gone:
        stale.to_table(filter="label = 'sad'")
    assert is_vanished(gone.value), gone.value  # the exact exception pylance raises
    assert not is_vanished(ValueError("Invalid user input: Schema error: No field named nope"))

    opened = []
    real = Store.dataset

    def first_stale(self, name, version=None):  # the first open returns the vacuumed version
        opened.append(name)
        return stale if len(opened) == 1 else real(self, name, version)

    monkeypatch.setattr(Store, "dataset", first_stale)
    table = store.table(CLIPS, where="label = 'sad'", columns=["clip_id"])
    assert table.num_rows == 20 and len(opened) == 2
    opened.clear()
    rows = per_version(store, CLIPS, "test-vanished", lambda ds: ds.to_table(columns=["clip_id"]).num_rows)
    assert rows == 60 and len(opened) == 2


def test_bad_filter_is_a_400_naming_it_and_storage_errors_never_are(tmp_path, monkeypatch):
    """A wrong ``where`` is still a 400 that names the filter (a parse error and an error
    only the data shows); files that keep vanishing are a 503 that blames the vacuum."""
    pytest.importorskip("starlette")
    from starlette.testclient import TestClient

    from featurestore.errors import DatasetChangedError, QueryError
    from featurestore.schema import CLIPS
    from workflows.app import AppConfig, create_app

    store = Store(tmp_path / "s")
    store.upsert_clips(_clip_table([f"c{i:03d}" for i in range(60)], 0))
    client = TestClient(create_app(AppConfig(store=store.uri), store=store), base_url="http://127.0.0.1:8765")
    for where in ("nosuchcol = 1", "CAST(label AS INT) = 1"):
        answer = client.get("/api/clips", params={"where": where})
        assert answer.status_code == 400, answer.text
        assert f"--where {where!r}" in answer.json()["error"] and answer.json()["type"] == "QueryError"

    stale = _stale_handle(store)
    monkeypatch.setattr(Store, "dataset", lambda self, name, version=None: stale)  # never recovers
    with pytest.raises(DatasetChangedError) as err:
        store.table(CLIPS, where="label = 'sad'")
    assert not isinstance(err.value, QueryError) and "vacuum" in str(err.value)
    answer = client.get("/api/clips", params={"where": "label = 'sad'"})
    assert answer.status_code == 503, answer.text
    assert "--where" not in answer.json()["error"] and answer.json()["type"] == "DatasetChangedError"


def test_vacuum_age_counts_from_when_a_version_was_replaced(tmp_path):
    """``older_than`` spares a version replaced moments ago even when it was committed long
    before (what a running reader holds); ``0`` keeps only the current version."""
    from datetime import timedelta

    from featurestore.maintenance import cleanup_retired
    from featurestore.schema import CLIPS

    store = Store(tmp_path / "s")
    store.upsert_clips(_clip_table(["c000"], 1))
    store.upsert_clips(_clip_table(["c001"], 2))
    time.sleep(1.2)
    store.upsert_clips(_clip_table(["c002"], 3))  # the previous version: 1.2 s old, replaced now
    versions = [v["version"] for v in store.dataset(CLIPS).versions()]
    assert cleanup_retired(store.dataset(CLIPS), timedelta(seconds=1)) == len(versions) - 2
    assert [v["version"] for v in store.dataset(CLIPS).versions()] == versions[-2:]
    assert cleanup_retired(store.dataset(CLIPS), timedelta(0)) == 1
    assert [v["version"] for v in store.dataset(CLIPS).versions()] == versions[-1:]
    assert store.clips().height == 3


def test_a_dataset_being_created_reads_as_absent_not_as_damaged(tmp_path):
    """Lance writes a new dataset's data before its first manifest: a reader that comes in
    between (another process's first ingest) sees no dataset yet, not a broken one; a
    dataset with a committed but unreadable manifest still fails with one line."""
    from featurestore.errors import StoreError

    (tmp_path / "store" / "clips.lance" / "data").mkdir(parents=True)
    store = Store(tmp_path / "store")
    assert store.dataset("clips") is None and store.version() is None
    versions = tmp_path / "store" / "clips.lance" / "_versions"
    versions.mkdir()
    (versions / "1.manifest").write_bytes(b"not a manifest")
    with pytest.raises(StoreError, match="exists but is not a readable Lance dataset"):
        Store(tmp_path / "store").dataset("clips")
