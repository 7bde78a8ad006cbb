"""Missing-modality fusion: presence masks, modality dropout, per-pattern metrics, and
predicting / labelling clips that have only some of a run's feature sets."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from cli import app
from featurestore import InputError, Store
from featurestore.features import write_features

LABELS = ["angry", "happy", "sad"]
N = 240
runner = CliRunner()


def _pattern(i: int) -> str:
    """Clip i's modalities: a third audio only, a sixth video only, the rest both."""
    return {0: "aud", 1: "aud", 2: "vis"}.get(i % 6, "both")


def _partial_store(store: Store, seed: int = 0) -> list[str]:
    """3-class clips; 'aud' (24-d) and 'vis' (16-d) are each missing for some clips."""
    rng = np.random.default_rng(seed)
    cls = rng.choice(3, N, p=[0.5, 0.3, 0.2])
    ids = [f"clip{i:04d}" for i in range(N)]
    store.upsert_clips(pa.table({"clip_id": ids, "label": [LABELS[c] for c in cls],
                                 "speaker": [f"spk{i % 8}" for i in range(N)]}))
    for name, dim, noise in (("aud", 24, 1.5), ("vis", 16, 1.5)):
        means = rng.normal(0, 1, (3, dim))
        x = means[cls] + rng.normal(0, noise, (N, dim))
        keep = [i for i in range(N) if _pattern(i) in (name, "both")]
        write_features(store, name, [ids[i] for i in keep], x[keep], {"weights": f"synthetic-{name}", "dim": dim})
    return ids


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    s = Store(tmp_path_factory.mktemp("mm") / "store")
    _partial_store(s)
    return s


@pytest.fixture(scope="module")
def run_dir(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("mm_runs") / "mm"
    result = runner.invoke(app, [
        "train", "head", "--encoders", "aud,vis", "--epochs", "15", "--batch-size", "32", "--hidden", "32",
        "--threads", "1", "--out", str(out), "--store", store.uri, "--json",
    ])
    assert result.exit_code == 0, result.output
    return out


# ------------------------------------------------------------------ the heads
@pytest.mark.parametrize("kind", ["concat", "attention", "linear"])
def test_masked_fusion_ignores_the_missing_slot(kind):
    import torch

    from heads.models import FusionHead, LinearHead

    torch.manual_seed(0)
    head = LinearHead([6, 4], 3) if kind == "linear" else FusionHead([6, 4], 3, hidden=8, fusion=kind)
    head.eval()
    a, b = torch.randn(5, 6), torch.randn(5, 4)
    present = torch.tensor([[1, 1], [1, 0], [0, 1], [1, 0], [1, 1]], dtype=torch.bool)
    out = head([a, b], present)
    # Any values (even NaN / huge) in a missing modality's slot give the same output.
    a2, b2 = a.clone(), b.clone()
    a2[~present[:, 0]] = float("nan")
    b2[~present[:, 1]] = 1e6 * torch.randn(int((~present[:, 1]).sum()), 4)
    assert torch.equal(head([a2, b2], present), out)
    # A full mask is exactly the unmasked head (runs trained before masks predict the same).
    full = torch.ones(5, 2, dtype=torch.bool)
    assert torch.equal(head([a, b], full), head([a, b]))
    # A single-modality row differs from the same row with both (the mask is not a no-op).
    assert not torch.allclose(out[1], head([a, b])[1])
    if kind == "attention":
        _, weights = head.fuse([a, b], present)
        assert torch.all(weights[~present] == 0) and torch.allclose(weights.sum(1), torch.ones(5))


def test_modality_dropout_keeps_one_present_modality():
    import torch

    from heads.models import drop_modalities

    present = torch.tensor([[1, 1, 1], [1, 0, 1], [0, 1, 0]] * 200, dtype=torch.bool)
    kept = drop_modalities(present, 0.6, torch.Generator().manual_seed(0))
    assert torch.all(kept <= present)  # never reveals a missing modality
    assert torch.all(kept.any(1))  # every clip keeps one
    assert 0.2 < (kept[present].float().mean()) < 0.7  # about 1 - p survive (plus the kept one)
    assert torch.equal(drop_modalities(present, 0.0), present)


# --------------------------------------------------------------------- training
def test_train_keeps_clips_with_any_set_and_reports_patterns(run_dir):
    config = json.loads((run_dir / "config.json").read_text())
    assert config["require_all"] is False and config["modality_dropout"] == pytest.approx(0.3)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert sum(metrics["counts"].values()) == N  # no clip dropped
    patterns = metrics["by_modalities"]
    assert set(patterns) == {"aud only", "vis only", "both"}
    assert sum(p["n"] for p in patterns.values()) == metrics["test"]["n"]
    assert {"weighted_f1", "uar", "accuracy"} <= set(patterns["both"])


def test_require_all_and_dropout_flags(store, tmp_path):
    from heads import HeadConfig, prepare_data

    prepared = prepare_data(store, HeadConfig(encoders=["aud", "vis"], require_all=True, drop_missing=True),
                            quiet=True)
    assert len(prepared.clip_ids) == N // 2 and prepared.present is None
    result = runner.invoke(app, ["train", "head", "--encoders", "aud,vis", "--require-all", "--store", store.uri,
                                 "--out", str(tmp_path / "r")])
    assert result.exit_code == 1 and "40 of 240 labelled clips have no 'aud' features" in result.output
    result = runner.invoke(app, ["train", "head", "--encoders", "aud,vis", "--modality-dropout", "1.5",
                                 "--store", store.uri])
    assert result.exit_code == 1 and "--modality-dropout" in result.output
    assert HeadConfig(encoders=["aud"]).modality_dropout == 0.0


def test_streaming_batches_match_preloaded(store):
    from featurestore.reader import batch_loader
    from heads import HeadConfig, prepare_data
    from heads.data import split_dataset

    cfg = HeadConfig(encoders=["aud", "vis"])
    loaded = prepare_data(store, cfg, quiet=True)
    streamed = prepare_data(store, cfg.replace(preload="never"), quiet=True)
    a = next(iter(batch_loader(split_dataset(loaded, "train"), 64)))
    b = next(iter(batch_loader(split_dataset(streamed, "train"), 64)))
    for name in ("aud", "vis"):
        assert torch_equal(a["present"][name], b["present"][name])
        assert np.allclose(a[name].float().numpy(), b[name].float().numpy(), atol=1e-3)
    assert torch_equal(a["label"], b["label"])


def torch_equal(x, y) -> bool:
    return bool((x == y).all())


# ---------------------------------------------------------------------- predict
def test_run_on_two_sets_predicts_clips_with_one(run_dir, store):
    from heads import predict_clips

    frame = predict_clips(store, run_dir)
    assert frame.height == N
    expected = {"aud": "aud", "vis": "vis", "both": "aud+vis"}
    assert frame["modalities"].to_list() == [expected[_pattern(i)] for i in range(N)]
    truth = dict(zip(*store.clips(columns=["clip_id", "label"]).to_dict(as_series=False).values()))
    right = np.array([truth[c] == lab for c, lab in zip(frame["clip_id"], frame["label"])])
    for pattern in ("aud", "vis"):  # single-modality clips are answered well above chance
        rows = np.array([_pattern(i) == pattern for i in range(N)])
        assert right[rows].mean() > 0.6, pattern

    result = runner.invoke(app, ["predict", str(run_dir), "--store", store.uri])
    assert result.exit_code == 0, result.output
    assert f"{N} clips" in result.output and "modalities: aud+vis 120, aud 80, vis 40" in result.output
    stored = pl.from_arrow(store.table("predictions/mm.lance")).sort("clip_id")
    assert stored["modalities"].to_list() == frame.sort("clip_id")["modalities"].to_list()


def test_eval_reports_metrics_per_presence_pattern(run_dir, store):
    from heads import evaluate_run

    figures = evaluate_run(store, run_dir)
    patterns = figures["by_modalities"]
    assert {k: v["n"] for k, v in patterns.items()} == {"aud only": 80, "vis only": 40, "both": 120}
    both = np.array([_pattern(i) == "both" for i in range(N)])
    sub = evaluate_run(store, run_dir, where="clip_id IN (" + ", ".join(
        f"'clip{i:04d}'" for i in np.flatnonzero(both)) + ")")
    assert patterns["both"]["weighted_f1"] == pytest.approx(sub["weighted_f1"])
    table = runner.invoke(app, ["eval", str(run_dir), "--store", store.uri])
    assert table.exit_code == 0, table.output
    assert "by presence pattern" in table.stdout and "vis only" in table.stdout and "both" in table.stdout


def test_linear_head_answers_single_modality_clips(store, tmp_path):
    from heads import HeadConfig, predict_clips, train_head

    result = train_head(store, HeadConfig(encoders=["aud", "vis"], head="linear"), out=tmp_path / "lin", quiet=True)
    assert set(result.by_modalities) == {"aud only", "vis only", "both"}
    frame = predict_clips(store, tmp_path / "lin")
    assert frame.height == N and frame["modalities"].n_unique() == 3


def test_old_style_run_still_loads_and_predicts_as_before(run_dir, store, tmp_path):
    from heads import load_run, predict_clips

    old = tmp_path / "old"
    shutil.copytree(run_dir, old)
    config = json.loads((old / "config.json").read_text())
    for key in ("require_all", "modality_dropout"):
        del config[key]
    (old / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")

    run = load_run(old)
    assert run.config.require_all is True and run.config.modality_dropout == 0.0
    # Fingerprint as the code before presence masks computed it (labels are not redone).
    ckpt = (old / "checkpoints/best.ckpt").read_bytes()
    assert run.model_fingerprint == hashlib.sha256(ckpt + json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
    # Clips lacking a set are refused as before (or skipped with --drop-missing) ...
    with pytest.raises(InputError, match="40 of 240 clips have no 'aud' features.*--drop-missing"):
        predict_clips(store, old)
    frame = predict_clips(store, old, drop_missing=True)
    assert frame.height == N // 2 and set(frame["modalities"]) == {"aud+vis"}
    # ... and clips with every set get the same probabilities as with the unmasked head.
    new = predict_clips(store, run_dir, clip_ids=frame["clip_id"].to_list())
    np.testing.assert_array_equal(np.array(frame["probs"].to_list()), np.array(new["probs"].to_list()))


# ------------------------------------------------------------------------ label
def _copy(files, folder):
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copyfile(f, folder / f.name)
    return folder


def test_label_answers_audio_only_and_video_only_clips(tmp_path, shared_data):
    """A run over egemaps (audio) + mae (face) labels wav-only and silent-video clips."""
    from extractors import extract, ingest
    from heads.config import HeadConfig
    from heads.train import train_head
    from workflows.label import label

    wavs = sorted((shared_data / "ravdess_actor05" / "wav").glob("*.wav"))
    faces = sorted((shared_data / "ravdess_actor05" / "facecrop").glob("*.avi"))  # video, no audio
    train = _copy(wavs[:16:2] + faces[:16:2], tmp_path / "train")
    labels = pl.read_csv(shared_data / "labels.csv").with_columns(
        pl.col("path").str.split("/").list.last().alias("path"))
    labels.filter(pl.col("path").is_in([f.name for f in train.iterdir()])).write_csv(tmp_path / "labels.csv")
    store = Store(tmp_path / "store")
    ingest([train], store, labels=tmp_path / "labels.csv", progress=False)
    extract(store, ["egemaps", "mae:tiny"], workers=0, progress=False)
    cfg = HeadConfig(encoders=["egemaps", "mae"], epochs=2, max_steps=4, hidden=16, batch_size=8,
                     accelerator="cpu", patience=1, test_frac=0.25, val_frac=0.25)
    train_head(store, cfg, out=tmp_path / "run", quiet=True)

    archive = _copy(wavs[1:7:2] + faces[1:7:2], tmp_path / "archive")
    report = label([archive], store, tmp_path / "run", workers=0, progress=False, out=tmp_path / "out.csv")
    assert report.clips == 6 and report.labelled == 6 and report.errors == []
    preds = pl.from_arrow(store.table("predictions/run.lance"))
    used = dict(zip([p.rsplit("/", 1)[-1] for p in preds["path"].to_list()], preds["modalities"].to_list()))
    assert {used[f.name] for f in wavs[1:7:2]} == {"egemaps"}
    assert {used[f.name] for f in faces[1:7:2]} == {"mae"}
    out = pl.read_csv(tmp_path / "out.csv")
    assert out["label"].null_count() == 0 and set(out["modalities"]) == {"egemaps", "mae"}
