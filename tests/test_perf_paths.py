"""The fast paths of issue 19 behave like the slow ones they replace.

* the plain-torch head loop (``--trainer plain``, the default for preloaded features)
  writes the same metrics.csv, best epoch, step count and weights as the Lightning run,
  for an explicit epoch budget, a ``--max-steps`` cut and early stopping held back by
  ``min_steps``; its checkpoint (and a Lightning one) loads in ``emofs predict``;
* ``emofs train head`` on preloaded features and ``import cli`` load no Lightning;
* the featurestore package exposes ``Store`` lazily (``featurestore.errors`` loads no pyarrow).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from featurestore import Store
from featurestore.features import write_features

REPO = Path(__file__).resolve().parents[1]
LABELS = ["angry", "happy", "neutral", "sad"]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    rng = np.random.default_rng(3)
    s = Store(tmp_path_factory.mktemp("perf") / "store")
    n = 300
    cls = rng.integers(0, len(LABELS), n)
    ids = [f"c{i:04d}" for i in range(n)]
    s.upsert_clips(pa.table({"clip_id": ids, "label": [LABELS[c] for c in cls],
                             "speaker": [f"spk{i % 6}" for i in range(n)]}))
    for name, dim, noise in (("aud", 20, 3.0), ("vis", 12, 4.0)):
        means = rng.normal(0, 1, (len(LABELS), dim))
        write_features(s, name, ids, means[cls] + rng.normal(0, noise, (n, dim)),
                       {"weights": f"synthetic-{name}", "dim": dim})
    # "part" covers two thirds of the clips: presence masks and modality dropout are used.
    write_features(s, "part", ids[:200], rng.normal(0, 1, (200, 8)), {"weights": "part"})
    return s


def _train(store: Store, out: Path, trainer: str, **flags):
    from heads import HeadConfig
    from heads.train import train_head

    cfg = HeadConfig(encoders=["aud", "vis", "part"], hidden=16, threads=1, accelerator="cpu", **flags)
    return train_head(store, cfg, out=out, quiet=True, trainer=trainer)


@pytest.mark.parametrize("flags", [
    {"epochs": 4, "batch_size": 32},                 # explicit budget, checkpoint on the best epoch
    {"epochs": 3, "batch_size": 32, "max_steps": 5},  # cut mid-epoch before any validation
    {"batch_size": 64, "patience": 1},                # derived epochs: min_steps holds early stopping
], ids=["epochs", "max-steps", "min-steps"])
def test_plain_loop_matches_lightning(store, tmp_path, flags):
    import polars as pl
    import torch

    from heads.predict import load_run

    plain = _train(store, tmp_path / "plain", "plain", **flags)
    light = _train(store, tmp_path / "light", "lightning", **flags)
    assert plain.schedule["trainer"] == "plain" and light.schedule["trainer"] == "lightning"
    assert (plain.best_epoch, plain.epochs, plain.schedule["steps"]) == \
        (light.best_epoch, light.epochs, light.schedule["steps"])
    a, b = pl.read_csv(tmp_path / "plain" / "metrics.csv"), pl.read_csv(tmp_path / "light" / "metrics.csv")
    assert a.columns == b.columns and a.height == b.height and a.height >= 1
    assert a["epoch"].to_list() == b["epoch"].to_list() and a["step"].to_list() == b["step"].to_list()
    for column in a.columns[2:]:
        assert np.allclose(a[column].to_numpy(), b[column].to_numpy(), atol=1e-5, equal_nan=True), column
    ckpt_plain = torch.load(tmp_path / "plain/checkpoints/best.ckpt", weights_only=True)
    ckpt_light = torch.load(tmp_path / "light/checkpoints/best.ckpt", weights_only=True)
    assert ckpt_plain["epoch"] == ckpt_light["epoch"]
    assert ckpt_plain["state_dict"].keys() == ckpt_light["state_dict"].keys()
    run_p, run_l = load_run(tmp_path / "plain"), load_run(tmp_path / "light")  # both formats load
    for (name, x), y in zip(run_p.head.state_dict().items(), run_l.head.state_dict().values()):
        assert torch.allclose(x, y, atol=1e-5), name
    assert plain.test["weighted_f1"] == pytest.approx(light.test["weighted_f1"], abs=1e-6)


def test_plain_run_predicts_from_the_cli(store, tmp_path):
    from typer.testing import CliRunner

    from cli import app

    _train(store, tmp_path / "run", "auto", epochs=2, batch_size=32)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["schedule"]["trainer"] == "plain"
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "run"), "--store", store.uri, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report, report


def test_unknown_trainer_names_the_flag(store, tmp_path):
    from featurestore.errors import InputError

    with pytest.raises(InputError, match="--trainer"):
        _train(store, tmp_path / "bad", "keras", epochs=1)


def test_preloaded_training_imports_no_lightning(store, tmp_path):
    code = ("import sys; from cli import app\n"
            "try:\n    app()\nexcept SystemExit:\n    pass\n"
            "print('HEAVY', [m for m in ('lightning', 'lightning.pytorch', 'torch._dynamo') if m in sys.modules])")
    argv = ["train", "head", "-e", "aud,vis", "--epochs", "1", "--max-steps", "2", "--threads", "1",
            "--store", store.uri, "--out", str(tmp_path / "run"), "--json"]
    proc = subprocess.run([sys.executable, "-c", code, *argv], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "HEAVY []" in proc.stdout, proc.stdout[-500:]
    assert (tmp_path / "run" / "checkpoints" / "best.ckpt").is_file()


def test_featurestore_errors_load_no_pyarrow():
    code = ("import sys, featurestore.errors, featurestore; assert 'pyarrow' not in sys.modules; "
            "featurestore.Store; print('pyarrow' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "True", proc.stderr[-2000:]


def test_similar_for_a_stored_clip_loads_no_polars_or_encoders(tmp_path):
    """`emofs similar CLIP` answers from the index without polars or the extractors
    package (its start-up cost; bench/bench_startup.py), and prints the same neighbours
    as the library's DataFrame."""
    from featurestore.index import IndexConfig, build_index, find_similar

    rng = np.random.default_rng(5)
    s = Store(tmp_path / "store")
    ids = [f"c{i:03d}" for i in range(60)]
    s.upsert_clips(pa.table({"clip_id": ids, "label": [LABELS[i % 4] for i in range(60)]}))
    write_features(s, "aud", ids, rng.normal(0, 1, (60, 16)), {"weights": "synthetic-aud", "dim": 16})
    build_index(s, IndexConfig(encoders=["aud"], kind="flat"))
    code = ("import sys; from cli import app\n"
            "try:\n    app()\nexcept SystemExit:\n    pass\n"
            "print('HEAVY', [m for m in ('polars', 'extractors') if m in sys.modules])")
    argv = ["similar", "c007", "-k", "4", "--format", "csv", "--store", s.uri]
    proc = subprocess.run([sys.executable, "-c", code, *argv], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[-1] == "HEAVY []", proc.stdout[-500:]
    expected = find_similar(s, "c007", k=4).frame
    assert lines[0] == "rank,clip_id,path,label,score"
    got = [line.split(",") for line in lines[1:-1]]
    assert [r[1] for r in got] == expected["clip_id"].to_list()
    assert [r[3] for r in got] == expected["label"].to_list()
    assert [float(r[4]) for r in got] == expected["score"].to_list()
    assert "neighbours:" in proc.stderr  # the vote line still comes (stderr for csv)


def test_egemaps_vector_is_opensmiles_functionals_bit_for_bit(media_samples):
    """The encoder skips openSMILE's pandas frame, not a single bit of its output (also for
    a clip shorter than the 0.1 s it is padded to)."""
    import opensmile

    from extractors.media import decode_audio
    from extractors.registry import build_encoder

    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                            feature_level=opensmile.FeatureLevel.Functionals)
    enc = build_encoder("egemaps")
    for name in ("wav", "mp4"):
        wave = decode_audio(media_samples[name])
        for clip in (wave, wave[:800]):
            got = enc.encode([clip])[0].vector
            padded = np.pad(clip, (0, max(0, 1600 - len(clip))))
            want = smile.process_signal(padded[None, :], 16000).to_numpy(dtype=np.float32)[0]  # (88,)
            assert got.dtype == np.float32 and got.tobytes() == want.tobytes()


# ------------------------------------------------------------------ small extraction jobs
def _jobs(n: int, video: bool = False):
    from extractors.encoders.base import Need
    from extractors.pipeline import Job

    need = Need("audio") if not video else Need("peak_face", 224)
    return [Job(f"c{i}", f"/x/{i}", None, (need,), ("enc",)) for i in range(n)]


def test_pool_size_follows_the_job(monkeypatch):
    from extractors import pipeline, workers

    monkeypatch.setattr(workers, "cores", lambda: 4)
    short = {f"c{i}": 3.0 for i in range(500)}
    # a few short audio clips: a worker would take longer to start than the whole job
    assert pipeline.pool_size("auto", "cpu", _jobs(5), short) == 0
    # hundreds of them, or a few long videos: one worker per core, never more than clips
    assert pipeline.pool_size("auto", "cpu", _jobs(500), short) == 4
    assert pipeline.pool_size("auto", "cpu", _jobs(3, video=True), {f"c{i}": 10.0 for i in range(3)}) == 3
    assert pipeline.pool_size("auto", "cuda", _jobs(500), short) == 3  # one core feeds the GPU
    # an explicit --workers is kept (bounded by the clips)
    assert pipeline.pool_size(2, "cpu", _jobs(5), short) == 2
    assert pipeline.pool_size(0, "cpu", _jobs(500), short) == 0


def test_cpu_only_extraction_imports_no_torch(tmp_path, shared_data):
    """egemaps runs in the decoding processes: the main process needs no torch (1-2 s)."""
    wavs = sorted((shared_data / "crema_d" / "wav16k").glob("*.wav"))[:3]
    folder = tmp_path / "wavs"
    folder.mkdir()
    for wav in wavs:
        (folder / wav.name).symlink_to(wav)
    code = ("import sys, json; from extractors import ingest, extract; from featurestore import Store\n"
            f"s = Store({str(tmp_path / 'store')!r}); ingest([{str(folder)!r}], s, progress=False)\n"
            "r = extract(s, ['egemaps'], progress=False)\n"
            "print(json.dumps({'torch': 'torch' in sys.modules, 'workers': r.workers, 'device': r.device,"
            " 'done': r.encoders['egemaps'].extracted}))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {
        "torch": False, "workers": 0, "device": "cpu", "done": len(wavs)}


def test_bottleneck_line_of_a_worker_only_job():
    from extractors.pipeline import ExtractReport

    line = ExtractReport(device="cpu", workers=2, waiting_s=30.0, encoding_s=1.0, in_worker=["egemaps"],
                         main_encoders=False).bottleneck
    assert "egemaps" in line and "2 worker" in line and "waited" not in line  # no encoder waited
    assert "the encoders waited" in ExtractReport(device="cpu", workers=2, waiting_s=30.0,
                                                  encoding_s=1.0).bottleneck
