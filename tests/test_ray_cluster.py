"""`emofs label --engine ray` and `emofs extract --engine ray` on a real 2-node Ray cluster
against the S3 store, label also with a worker process killed mid-job: every clip ends
exactly once and the vectors are bit-identical to the local engine's.

``ray.cluster_utils.Cluster`` starts a head node and a worker node (separate raylets and
worker processes, each with its own CPUs) on this machine; the driver joins by address,
so emofs ships its packages to the workers as on a real cluster.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest

from featurestore import Store

pytest.importorskip("ray.data")
# One cluster start (shared by the module), a head training and three Ray runs: 40-46 s
# together on the 2 shared cores, so the module runs in the default suite.


def _wavs(shared_data: Path) -> list[Path]:
    return sorted((shared_data / "ravdess_actor05" / "wav").glob("*.wav"))


@pytest.fixture(scope="module")
def head_run(tmp_path_factory, shared_data):
    """A head trained a few steps on egemaps features of 16 real clips (local store)."""
    from extractors import extract, ingest
    from heads.config import HeadConfig
    from heads.train import train_head

    root = tmp_path_factory.mktemp("cluster_train")
    train = root / "train"
    train.mkdir()
    lines = ["path,label"]
    for i, wav in enumerate(_wavs(shared_data)[:16]):
        shutil.copyfile(wav, train / wav.name)
        lines.append(f"{wav.name},{'calm' if i % 2 else 'loud'}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    store = Store(root / "store")
    ingest([train], store, labels=root / "labels.csv", progress=False)
    extract(store, ["egemaps"], workers=0, progress=False)
    cfg = HeadConfig(encoders=["egemaps"], epochs=2, max_steps=4, hidden=8, batch_size=8,
                     accelerator="cpu", patience=1)
    train_head(store, cfg, out=root / "run", quiet=True)
    return root / "run"


@pytest.fixture(scope="module")
def cluster(s3_server):
    """A head node (1 CPU) and a worker node (2 CPUs), shared by the module's tests (each
    test's driver connects and disconnects); the nodes inherit the S3 environment."""
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    with pytest.MonkeyPatch.context() as env:
        for name, value in s3_server.items():
            env.setenv(name, value)
        cl = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
        worker = cl.add_node(num_cpus=2)
        cl.wait_for_nodes()
        try:
            yield cl, worker
        finally:
            ray.shutdown()
            cl.shutdown()


def _archive(shared_data, tmp_path, n=8) -> Path:
    archive = tmp_path / "batch"
    archive.mkdir()
    for wav in _wavs(shared_data)[20:20 + n]:
        shutil.copyfile(wav, archive / wav.name)
    return archive


def _vectors(store: Store) -> dict:
    table = store.table("features/egemaps.lance", columns=["clip_id", "vector"])
    return dict(zip(table.column("clip_id").to_pylist(), table.column("vector").to_pylist()))


def _kill_a_worker_when_busy(nodes, stop: threading.Event, killed: list) -> None:
    """Kill one task/actor worker process of the cluster as soon as one runs emofs work."""
    import psutil

    raylets = [psutil.Process(n.all_processes["raylet"][0].process.pid) for n in nodes]
    while not stop.is_set() and not killed:
        for proc in [c for r in raylets for c in r.children(recursive=True)]:
            try:
                title = " ".join(proc.cmdline())
            except psutil.Error:
                continue
            if "ray::" in title and any(k in title for k in ("MapWorker", "MapBatches", "_EncoderActor")):
                proc.kill()
                killed.append(title[:80])
                return
        time.sleep(0.05)


# The kill case must catch a busy worker (timing-dependent), so it runs with `-m slow`.
@pytest.mark.parametrize("kill", [pytest.param(False, id="two-nodes"),
                                  pytest.param(True, id="worker-killed", marks=pytest.mark.slow)])
def test_label_on_two_ray_nodes_matches_local_engine(cluster, s3, head_run, shared_data, tmp_path, kill):
    from featurestore.fragments import duplicate_keys
    from workflows.label import label

    cl, worker = cluster
    archive = _archive(shared_data, tmp_path)
    local = Store(tmp_path / "local")
    expected = label([archive], local, head_run, workers=0, progress=False)
    remote = Store(f"{s3}/store")
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_a_worker_when_busy, args=([cl.head_node, worker], stop, killed), daemon=True)
    if kill:
        killer.start()
    try:
        report = label([archive], remote, head_run, engine="ray", ray_address=cl.address,
                       batch_size=2, progress=False)
    finally:
        stop.set()
    if kill:
        killer.join(5)
        assert killed, "no worker process was running emofs work on the worker node"
    assert report.labelled == expected.labelled == 8 and not report.errors
    assert _vectors(remote) == _vectors(local)  # bit-identical float16 vectors
    assert duplicate_keys(remote, "features/egemaps.lance") == {}
    assert duplicate_keys(remote, f"predictions/{report.dataset.split('/')[-1].removesuffix('.lance')}.lance") == {}
    a = Store(tmp_path / "local").table(expected.dataset).sort_by("clip_id")
    b = remote.table(report.dataset).sort_by("clip_id")
    assert a.column("clip_id").to_pylist() == b.column("clip_id").to_pylist()
    assert a.column("label").to_pylist() == b.column("label").to_pylist()


def test_extract_on_two_ray_nodes_matches_local_engine(cluster, s3, shared_data, tmp_path):
    """`emofs extract --engine ray --ray-address` against the S3 store: the local engine's
    vectors, once each; a rerun extracts nothing."""
    from extractors import extract, ingest
    from extractors.engine import extract_with
    from featurestore.fragments import duplicate_keys

    cl, _ = cluster
    archive = _archive(shared_data, tmp_path, n=6)
    local, remote = Store(tmp_path / "local"), Store(f"{s3}/extract")
    for store in (local, remote):
        ingest([archive], store, progress=False)
    extract(local, ["egemaps"], workers=0, progress=False)
    report = extract_with("ray", remote, ["egemaps"], ray_address=cl.address, actors=2, batch_size=2,
                          progress=False)
    again = extract_with("ray", remote, ["egemaps"], ray_address=cl.address, progress=False)
    assert report.encoders["egemaps"].extracted == 6 and report.device == "ray: 2 cpu actors"
    assert again.encoders["egemaps"].extracted == 0 and again.encoders["egemaps"].up_to_date == 6
    assert _vectors(remote) == _vectors(local)  # bit-identical float16 vectors
    assert duplicate_keys(remote, "features/egemaps.lance") == {}
