"""`emofs extract --engine ray` and the Ray actor pool flags (--actors, --gpus-per-actor).

The pool sizing is checked against stated cluster resources (GPU clusters included, which
this machine has none of); the engine runs on a local Ray with 2 CPUs over real clips and
must write the local engine's exact vectors, continue what the local engine started, and
extract nothing on a rerun.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from featurestore import Store
from featurestore.errors import InputError
from featurestore.store import sql_in

from extractors.ray_engine import ActorPool, RayOptions, actor_pool

ENCODERS = ["egemaps", "hubert:tiny"]


# --------------------------------------------------------------------- pool sizing
def test_actor_pool_sizes_gpu_and_cpu_actors_from_flags():
    gpu_node = {"CPU": 16.0, "GPU": 2.0}
    assert actor_pool(gpu_node, "auto", RayOptions()) == ActorPool(2, 1.0, "cuda")
    assert actor_pool(gpu_node, "auto", RayOptions(gpus_per_actor=0.5)) == ActorPool(4, 0.5, "cuda")
    assert actor_pool(gpu_node, "cuda:0", RayOptions(actors=3, gpus_per_actor=0.5)) == ActorPool(3, 0.5, "cuda:0")
    assert actor_pool(gpu_node, "cpu", RayOptions()) == ActorPool(8, 0.0, "cpu")  # --device cpu: CPU actors
    assert actor_pool({"CPU": 2.0}, "auto", RayOptions()) == ActorPool(1, 0.0, "cpu")
    assert actor_pool({"CPU": 8.0}, "auto", RayOptions(actors=7)) == ActorPool(7, 0.0, "cpu")
    with pytest.raises(InputError, match=r"--actors 3 x --gpus-per-actor 1 needs 3 GPUs, the Ray cluster has 2"):
        actor_pool(gpu_node, "auto", RayOptions(actors=3))
    with pytest.raises(InputError, match=r"--actors 1 x --gpus-per-actor 4 needs 4 GPUs"):
        actor_pool(gpu_node, "auto", RayOptions(gpus_per_actor=4))
    with pytest.raises(InputError, match=r"^--gpus-per-actor 0.5: no GPU in the Ray cluster \(2 CPUs, 0 GPUs\)"):
        actor_pool({"CPU": 2.0}, "auto", RayOptions(gpus_per_actor=0.5))
    with pytest.raises(InputError, match=r"--actors 2: the Ray cluster has 2 CPUs and no GPU.*--actors 1 or fewer"):
        actor_pool({"CPU": 2.0}, "auto", RayOptions(actors=2))


@pytest.mark.parametrize("engine, device, flags, message", [
    ("spark", "auto", {}, "--engine must be one of local, ray"),
    ("local", "auto", {"actors": 2}, "--actors needs --engine ray"),
    ("local", "auto", {"gpus_per_actor": 0.5}, "--gpus-per-actor needs --engine ray"),
    ("local", "auto", {"address": "auto"}, "--ray-address needs --engine ray"),
    ("ray", "auto", {"actors": 0}, "--actors must be >= 1"),
    ("ray", "auto", {"gpus_per_actor": 0}, "--gpus-per-actor must be a fraction in"),
    ("ray", "auto", {"gpus_per_actor": 1.5}, "--gpus-per-actor must be a fraction in"),
    ("ray", "cpu", {"gpus_per_actor": 0.5}, "drop --device cpu or --gpus-per-actor"),
])
def test_ray_flags_are_checked_with_flag_names(engine, device, flags, message):
    with pytest.raises(InputError, match=message):
        RayOptions.of(engine, device, **flags)
    assert RayOptions.of("local") is None
    assert RayOptions.of("ray", "auto", gpus_per_actor=2).gpus_per_actor == 2


# ----------------------------------------------------------------------- extract
def _store(shared_data: Path, root: Path, n: int = 4) -> Store:
    from extractors import ingest

    folder = root / "media"
    folder.mkdir(parents=True)
    for wav in sorted((shared_data / "ravdess_actor05" / "wav").glob("*.wav"))[:n]:
        shutil.copyfile(wav, folder / wav.name)
    store = Store(root / "store")
    ingest([folder], store, progress=False)
    return store


def _vectors(store: Store, name: str) -> dict:
    table = store.table(f"features/{name}.lance", columns=["clip_id", "vector"])
    return dict(zip(table.column("clip_id").to_pylist(), table.column("vector").to_pylist()))


def test_extract_on_ray_matches_local_engine_and_reruns_nothing(tmp_path, shared_data):
    pytest.importorskip("ray.data")
    import ray
    from typer.testing import CliRunner

    from cli import app
    from extractors import extract
    from extractors.engine import extract_on_ray, extract_with
    from featurestore.fragments import duplicate_keys

    local = _store(shared_data, tmp_path / "local")
    remote = _store(shared_data, tmp_path / "ray")
    expected = extract(local, ENCODERS, workers=0, batch_size=3, progress=False)
    assert expected.encoders["hubert"].extracted == 4
    # the local engine did half of egemaps: Ray continues it (per clip, per feature set)
    clips = remote.clips(columns=["clip_id"])
    ids = sorted(clips["clip_id"].to_list())
    extract(remote, ["egemaps"], where=sql_in("clip_id", ids[:2]), workers=0, progress=False)

    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False)
    try:
        with pytest.raises(InputError, match="no GPU in the Ray cluster"):
            extract_with("ray", remote, ENCODERS, gpus_per_actor=0.5, progress=False)
        report = extract_on_ray(remote, ENCODERS, options=RayOptions(actors=1), batch_size=2, progress=False)
        rerun = CliRunner().invoke(app, ["extract", "--engine", "ray", "--encoders", ",".join(ENCODERS),
                                         "--store", str(remote.uri), "--actors", "1", "--json"])
    finally:
        ray.shutdown()

    assert report.device == "ray: 1 cpu actor" and report.clips == 4
    assert report.decoded == expected.decoded == 4 and report.decode_errors == 0 and not report.errors
    eg, hu = report.encoders["egemaps"], report.encoders["hubert"]
    assert (eg.extracted, eg.up_to_date, eg.failed) == (2, 2, 0), vars(eg)
    assert (hu.extracted, hu.up_to_date, hu.failed) == (4, 0, 0), vars(hu)
    assert eg.spec_fingerprint == expected.encoders["egemaps"].spec_fingerprint
    for name in ("egemaps", "hubert"):
        assert _vectors(remote, name) == _vectors(local, name)  # bit-identical float16 vectors
        assert duplicate_keys(remote, f"features/{name}.lance") == {}
    assert rerun.exit_code == 0, rerun.output
    again = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert {n: e["extracted"] for n, e in again["encoders"].items()} == {"egemaps": 0, "hubert": 0}
    assert again["encoders"]["hubert"]["up_to_date"] == 4
