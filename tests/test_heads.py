"""Heads: data/splits, the torch reader, a few-step Lightning run, eval, predict, ablate, errors."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from cli import app
from featurestore import InputError, Store
from featurestore.features import read_features, write_features

LABELS = ["angry", "happy", "sad"]
N_CLIPS = 240
runner = CliRunner()


def _synthetic(store: Store, n: int = N_CLIPS, seed: int = 0) -> list[str]:
    """Imbalanced 3-class clips, 8 speakers, two learnable feature sets (+1 incomplete)."""
    rng = np.random.default_rng(seed)
    cls = rng.choice(3, n, p=[0.55, 0.3, 0.15])
    ids = [f"clip{i:04d}" for i in range(n)]
    store.upsert_clips(pa.table({
        "clip_id": ids,
        "label": [LABELS[c] for c in cls],
        "speaker": [f"spk{i % 8}" for i in range(n)],
    }))
    for name, dim, dtype, noise in (("aud", 24, "float16", 2.0), ("vis", 16, "float32", 2.5)):
        means = rng.normal(0, 1, (3, dim))
        x = means[cls] + rng.normal(0, noise, (n, dim))  # class-dependent mean + noise
        write_features(store, name, ids, x, {"weights": f"synthetic-{name}", "dim": dim}, dtype=dtype)
    # "part" covers only the first 200 clips.
    part = ids[: min(n, 200)]
    write_features(store, "part", part, rng.normal(0, 1, (len(part), 8)), {"weights": "part"})
    return ids


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    s = Store(tmp_path_factory.mktemp("heads") / "store")
    _synthetic(s)
    return s


@pytest.fixture(scope="module")
def run_dir(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run1"
    result = runner.invoke(app, [
        "train", "head", "--encoders", "aud,vis", "--split-by", "speaker", "--epochs", "10",
        "--batch-size", "32", "--hidden", "32", "--dropout", "0.2", "--threads", "1", "--out", str(out), "--store", store.uri,
        "--json",
    ])
    assert result.exit_code == 0, result.output
    return out


# ------------------------------------------------------------------ the run files
def test_run_writes_every_file(run_dir):
    for name in ("config.json", "labels.json", "features.json", "splits.csv", "metrics.csv",
                 "checkpoints/best.ckpt", "metrics.json", "confusion.png", "curves.png"):
        assert (run_dir / name).is_file() and (run_dir / name).stat().st_size > 0, name
    assert json.loads((run_dir / "labels.json").read_text()) == LABELS
    config = json.loads((run_dir / "config.json").read_text())
    assert config["encoders"] == ["aud", "vis"] and config["split_by"] == "speaker"
    features = json.loads((run_dir / "features.json").read_text())
    assert set(features) == {"aud", "vis"} and features["aud"]["dim"] == 24
    assert len(features["vis"]["fingerprint"]) == 16
    epochs = pl.read_csv(run_dir / "metrics.csv")
    assert {"epoch", "train_loss", "val_loss", "val_weighted_f1", "val_uar"} <= set(epochs.columns)
    assert epochs.height >= 2 and epochs["epoch"].to_list() == sorted(epochs["epoch"].to_list())
    assert epochs["val_loss"].null_count() == 0


def test_run_learns_and_reports(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    test = metrics["test"]
    # Learnable synthetic data: far above chance (majority class share 0.55, UAR chance 1/3).
    assert test["weighted_f1"] > 0.75
    assert test["uar"] > 0.6
    assert sum(metrics["counts"].values()) == N_CLIPS
    assert "group split by speaker" in metrics["split"]
    assert metrics["timings"]["first_step_s"] > 0


def test_speaker_split_is_speaker_independent(run_dir, store):
    splits = pl.read_csv(run_dir / "splits.csv").join(
        store.clips(columns=["clip_id", "speaker"]), on="clip_id")
    per_speaker = splits.group_by("speaker").agg(pl.col("split").n_unique().alias("n"))
    assert per_speaker["n"].max() == 1
    assert set(splits["split"].unique().to_list()) == {"train", "val", "test"}


def test_reload_gives_the_same_predictions(run_dir, store):
    from heads import load_run, predict_clips
    from heads.metrics import classification_metrics

    splits = pl.read_csv(run_dir / "splits.csv")
    test_ids = splits.filter(pl.col("split") == "test")["clip_id"].to_list()
    frame = predict_clips(store, run_dir, clip_ids=test_ids)
    again = predict_clips(store, load_run(run_dir), clip_ids=test_ids)
    assert frame["probs"].to_list() == again["probs"].to_list()
    truth = dict(zip(*store.clips(columns=["clip_id", "label"]).to_dict(as_series=False).values()))
    index = {v: i for i, v in enumerate(LABELS)}
    figures = classification_metrics([index[truth[c]] for c in frame["clip_id"]],
                                     [index[v] for v in frame["label"]], LABELS)
    saved = json.loads((run_dir / "metrics.json").read_text())["test"]
    assert figures["confusion"] == saved["confusion"]
    assert figures["weighted_f1"] == pytest.approx(saved["weighted_f1"])
    probs = np.array(frame["probs"].to_list())
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
    assert np.allclose(frame["confidence"].to_numpy(), probs.max(1), atol=1e-6)
    assert np.allclose(frame["prob_sad"].to_numpy(), probs[:, 2], atol=1e-6)


def test_eval_cli_scores_any_clips(run_dir, store):
    result = runner.invoke(app, ["eval", str(run_dir), "--where", "speaker IN ('spk0', 'spk1')",
                                 "--store", store.uri, "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["n"] == N_CLIPS // 4
    assert 0 <= figures["uar"] <= 1 and len(figures["confusion"]) == 3
    table = runner.invoke(app, ["eval", str(run_dir), "--store", store.uri])
    assert table.exit_code == 0 and "weighted F1" in table.stdout


def test_predict_cli_writes_one_row_per_clip(run_dir, store):
    from featurestore.predictions import read_predictions

    for _ in range(2):  # a second run upserts the same rows
        result = runner.invoke(app, ["predict", str(run_dir), "--store", store.uri, "--json"])
        assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["rows"] == N_CLIPS and report["dataset"] == "predictions/run1.lance"
    frame = read_predictions(store, "run1")
    assert frame.height == N_CLIPS and frame["clip_id"].n_unique() == N_CLIPS
    assert {"run_id", "label", "confidence", "probs", "prob_angry", "prob_happy", "prob_sad",
            "model_fingerprint", "predicted_at"} <= set(frame.columns)
    assert set(frame["run_id"].unique()) == {"run1"}
    meta = store.dataset("predictions/run1.lance").schema.metadata
    assert json.loads(meta[b"emofs.vocabulary"]) == LABELS
    assert "run1" in store.prediction_runs()


def test_predict_where_subset(run_dir, store):
    from heads import predict_clips

    frame = predict_clips(store, run_dir, where="speaker = 'spk3'")
    assert frame.height == N_CLIPS // 8


# ------------------------------------------------------------------------ errors
def test_missing_features_error_and_drop(store, tmp_path):
    from heads import HeadConfig, prepare_data

    # --require-all: the strict behaviour (every clip needs every set, or --drop-missing).
    result = runner.invoke(app, ["train", "head", "--encoders", "aud,part", "--require-all",
                                 "--store", store.uri, "--out", str(tmp_path / "r")])
    assert result.exit_code == 1
    assert "40 of 240 labelled clips have no 'part' features" in result.output
    assert "--drop-missing" in result.output
    assert not (tmp_path / "r").exists()
    strict = HeadConfig(encoders=["aud", "part"], drop_missing=True, require_all=True)
    prepared = prepare_data(store, strict, quiet=True)
    assert len(prepared.clip_ids) == 200 and prepared.dropped_missing == 40
    # Default: a clip needs one of the sets; the 40 without 'part' are kept, masked.
    prepared = prepare_data(store, HeadConfig(encoders=["aud", "part"]), quiet=True)
    assert len(prepared.clip_ids) == 240 and prepared.dropped_missing == 0
    assert int(prepared.present["part"].sum()) == 200 and prepared.present["aud"].all()
    # A single set still refuses clips lacking it unless --drop-missing.
    with pytest.raises(InputError, match="40 of 240 labelled clips have no 'part' features.*--drop-missing"):
        prepare_data(store, HeadConfig(encoders=["part"]), quiet=True)


def test_unknown_feature_set_and_label_column(store, tmp_path):
    result = runner.invoke(app, ["train", "head", "--encoders", "nope", "--store", store.uri])
    assert result.exit_code == 1 and "no feature set 'nope'" in result.output
    result = runner.invoke(app, ["train", "head", "--encoders", "aud", "--label", "emotion",
                                 "--store", store.uri])
    assert result.exit_code == 1 and "no column 'emotion'" in result.output


def test_bad_flags_name_the_flag(store):
    result = runner.invoke(app, ["train", "head", "--encoders", "aud", "--fusion", "sum",
                                 "--store", store.uri])
    assert result.exit_code == 1 and "--fusion" in result.output
    result = runner.invoke(app, ["train", "head", "--encoders", "aud", "--folds", "4",
                                 "--store", store.uri])
    assert result.exit_code == 1 and "--split-by" in result.output


def test_label_never_seen_in_training(run_dir, tmp_path):
    from heads import evaluate_run

    other = Store(tmp_path / "other")
    ids = _synthetic(other, n=40, seed=5)
    other.upsert_clips(pa.table({"clip_id": ids[:3], "label": ["surprise"] * 3}))
    with pytest.raises(InputError, match="labels never seen in training: surprise"):
        evaluate_run(other, run_dir)
    figures = evaluate_run(other, run_dir, where="label != 'surprise'")
    assert figures["n"] == 37


def test_run_dir_is_never_overwritten(run_dir, store):
    before = (run_dir / "metrics.json").read_text()
    result = runner.invoke(app, ["train", "head", "--encoders", "aud", "--out", str(run_dir),
                                 "--store", store.uri])
    assert result.exit_code == 1 and "already holds a run" in result.output
    assert (run_dir / "metrics.json").read_text() == before


# ------------------------------------------------------------------------ ablation
def test_ablation_trains_every_subset(store, tmp_path):
    out = tmp_path / "abl"
    result = runner.invoke(app, [
        "ablate", "--encoders", "aud,vis", "--epochs", "2", "--batch-size", "64", "--hidden", "16", "--threads", "1",
        "--out", str(out), "--store", store.uri, "--format", "csv",
    ])
    assert result.exit_code == 0, result.output
    table = pl.read_csv(out / "ablation.csv")
    # 2^2 - 1 subsets, then the linear baseline on every set as a reference row.
    assert table["encoders"].to_list() == ["aud", "vis", "aud+vis", "aud+vis (linear)"]
    assert table["head"].to_list() == ["mlp", "mlp", "mlp", "linear"]
    assert (out / "ablation.png").stat().st_size > 0
    dirs = [n.replace(" (linear)", ".linear") for n in table["encoders"]]
    for name in dirs:
        assert (out / name / "metrics.json").is_file()
    # Same clips and split for every subset.
    splits = [pl.read_csv(out / n / "splits.csv") for n in dirs]
    assert all(s.equals(splits[0]) for s in splits)
    assert "weighted_f1" in result.stdout


# ----------------------------------------------------------------- splits and data
def _frame(n=100, **columns):
    return pl.DataFrame({"clip_id": [f"c{i}" for i in range(n)], **columns})


def test_stratified_split_keeps_class_shares():
    from heads import HeadConfig
    from heads.data import assign_splits

    labels = np.array([0] * 70 + [1] * 20 + [2] * 10)
    split, note = assign_splits(_frame(), labels, HeadConfig(encoders=["x"], seed=1))
    assert "stratified" in note
    for c, n in ((0, 70), (1, 20), (2, 10)):
        assert (split[labels == c] == "test").sum() == round(0.2 * n)
    again, _ = assign_splits(_frame(), labels, HeadConfig(encoders=["x"], seed=1))
    assert (again == split).all()


def test_split_column_with_aliases_and_carved_val():
    from heads import HeadConfig
    from heads.data import assign_splits

    raw = ["Train"] * 80 + ["testing"] * 20
    labels = np.array([0, 1] * 50)
    split, note = assign_splits(_frame(split=raw), labels, HeadConfig(encoders=["x"]))
    assert (split[80:] == "test").all()
    assert (split == "val").sum() == 12 and "val carved from train" in note
    with pytest.raises(InputError, match="split column holds holdout"):
        assign_splits(_frame(split=["holdout"] * 100), labels, HeadConfig(encoders=["x"]))


def test_group_kfold_covers_every_group_once():
    from heads import HeadConfig
    from heads.data import assign_splits

    frame = _frame(speaker=[f"s{i % 6}" for i in range(100)])
    labels = np.zeros(100, dtype=np.int64)
    tested = []
    for fold in range(3):
        cfg = HeadConfig(encoders=["x"], split_by="speaker", folds=3, fold=fold)
        split, _ = assign_splits(frame, labels, cfg)
        speakers = np.array(frame["speaker"].to_list())
        tested += sorted(set(speakers[split == "test"]))
        for part in ("train", "val"):
            assert not set(speakers[split == part]) & set(speakers[split == "test"])
    assert sorted(tested) == [f"s{i}" for i in range(6)]
    with pytest.raises(InputError, match="at least 3"):
        assign_splits(_frame(speaker=["a", "b"] * 50), labels,
                      HeadConfig(encoders=["x"], split_by="speaker"))


def test_reader_batches_match_the_store(store):
    from featurestore.reader import FeatureReader

    reader = FeatureReader(store, ["aud", "vis"], where="speaker = 'spk2'", label_column="label",
                           vocabulary=LABELS)
    assert len(reader) == N_CLIPS // 8
    batch = reader[[4, 0, 2]]
    for name in ("aud", "vis"):
        full = read_features(store, name, clip_ids=[reader.clip_ids[i] for i in (4, 0, 2)])
        by_id = dict(zip(full.clip_ids, full.vectors))
        expected = np.stack([by_id[reader.clip_ids[i]] for i in (4, 0, 2)])
        assert np.allclose(batch[name].float().numpy(), expected, atol=1e-3)
    assert batch["aud"].shape == (3, 24) and batch["vis"].shape == (3, 16)
    labels = dict(zip(*store.clips(columns=["clip_id", "label"]).to_dict(as_series=False).values()))
    assert [LABELS[i] for i in batch["label"].tolist()] == [labels[reader.clip_ids[i]] for i in (4, 0, 2)]
    with pytest.raises(InputError, match="lack at least one"):
        FeatureReader(store, ["part"])
    assert len(FeatureReader(store, ["part"], drop_missing=True)) == 200


def test_reader_spawn_worker_opens_lance_lazily(store):
    from featurestore.reader import FeatureReader

    reader = FeatureReader(store, ["aud"], where="speaker = 'spk1'")
    assert reader._datasets is None
    seen = []
    for batch in reader.loader(batch_size=8, shuffle=True, num_workers=1, seed=0):
        seen += batch["index"].tolist()
        assert batch["aud"].shape[1] == 24
    assert sorted(seen) == list(range(len(reader)))


def test_streaming_training_matches_preload_shapes(store, tmp_path):
    from heads import HeadConfig, train_head

    cfg = HeadConfig(encoders=["aud"], epochs=1, batch_size=64, hidden=16, preload="never",
                     fusion="attention", threads=1)
    result = train_head(store, cfg, out=tmp_path / "stream", quiet=True)
    assert result.test["n"] == result.counts["test"]
    assert result.attention == {"aud": pytest.approx(1.0)}
    assert (tmp_path / "stream" / "checkpoints" / "best.ckpt").is_file()


def test_write_predictions_refuses_another_vocabulary(store):
    from featurestore.predictions import write_predictions

    probs = np.array([[0.2, 0.8], [0.6, 0.4]], dtype=np.float32)
    write_predictions(store, "manual", ["clip0000", "clip0001"], probs, ["a", "b"], model_fingerprint="x")
    with pytest.raises(InputError, match="another vocabulary"):
        write_predictions(store, "manual", ["clip0000"], np.array([[1.0]]), ["a"], model_fingerprint="y")
    with pytest.raises(InputError, match="probs must be"):
        write_predictions(store, "manual", ["clip0000"], probs, ["a", "b"], model_fingerprint="y")
    with pytest.raises(InputError, match="invalid prediction run name"):
        write_predictions(store, "../x", ["clip0000"], probs[:1], ["a", "b"], model_fingerprint="y")


# ------------------------------------------------------------ unfinished (killed) runs
def test_killed_run_is_refused_then_replaced(store, tmp_path, monkeypatch):
    """Before: a run killed after a checkpoint (no metrics.json) was predicted from silently,
    and one killed before any checkpoint blocked its --out forever ("already holds a run")."""
    import heads.report
    from heads import HeadConfig, train_head

    out = tmp_path / "killed"
    cfg = HeadConfig(encoders=["aud"], head="linear", threads=1)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies after the checkpoint, before metrics.json

    with monkeypatch.context() as m:
        m.setattr(heads.report, "plot_curves", killed)
        with pytest.raises(KeyboardInterrupt):
            train_head(store, cfg, out=out, quiet=True)
    assert (out / "checkpoints/best.ckpt").is_file() and not (out / "metrics.json").exists()
    for argv in (["eval", str(out)], ["predict", str(out)], ["embed", str(out)]):
        result = runner.invoke(app, [*argv, "--store", store.uri])
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        errors = [l for l in result.output.splitlines() if l.startswith("error: ")]
        assert len(errors) == 1 and "unfinished head run" in errors[0] and "--out" in errors[0], result.output
    assert "predictions/killed.lance" not in {f"predictions/{n}.lance" for n in store.prediction_runs()}

    # train head --out on the leftover replaces it (with a warning line); a finished run is refused.
    (out / "lightning").mkdir()
    (out / "lightning" / "metrics.csv").write_text("stale\n")
    result = runner.invoke(app, ["train", "head", "-e", "aud", "--head", "linear", "--threads", "1",
                                 "--out", str(out), "--store", store.uri])
    assert result.exit_code == 0, result.output
    assert "holds an unfinished run" in result.output and "replacing it" in result.output
    assert (out / "metrics.json").is_file() and not (out / "lightning").exists()
    assert runner.invoke(app, ["eval", str(out), "--store", store.uri]).exit_code == 0
    result = runner.invoke(app, ["train", "head", "-e", "aud", "--head", "linear", "--out", str(out),
                                 "--store", store.uri])
    assert result.exit_code == 1 and "already holds a run" in result.output


def test_leftover_without_checkpoint_and_the_app(store, tmp_path):
    """Killed before any checkpoint: refused as unfinished (not 'no best.ckpt'); the app's
    run lookup skips it."""
    from heads import HeadConfig, load_run
    from workflows.app.rundirs import run_dir_of

    out = tmp_path / "runs" / "early"
    out.mkdir(parents=True)
    HeadConfig(encoders=["aud"]).save(out / "config.json")
    with pytest.raises(InputError, match="unfinished head run .*killed"):
        load_run(out)
    assert run_dir_of(store, tmp_path / "runs", "early") is None
    (out / "metrics.json").write_text("{}")
    assert run_dir_of(store, tmp_path / "runs", "early") == out


def test_eval_on_clips_the_run_trained_on_says_so(store, run_dir):
    """Scoring training clips gives flattering figures: eval says how many it saw, first."""
    import polars as pl

    splits = pl.read_csv(run_dir / "splits.csv")
    train_ids = splits.filter(pl.col("split") == "train")["clip_id"].to_list()[:5]
    test_ids = splits.filter(pl.col("split") == "test")["clip_id"].to_list()[:5]
    quoted = ", ".join(f"'{c}'" for c in train_ids + test_ids)
    result = runner.invoke(app, ["eval", str(run_dir), "--where", f"clip_id IN ({quoted})", "--store", store.uri])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("warning: 5 of these 10 clips trained the run and 0 validated it")
    only_test = ", ".join(f"'{c}'" for c in test_ids)
    result = runner.invoke(app, ["eval", str(run_dir), "--where", f"clip_id IN ({only_test})", "--json",
                                 "--store", store.uri])
    assert json.loads(result.stdout)["seen_in_training"] == {"train": 0, "val": 0, "clips": 5}


def test_missing_modality_points_to_drop_missing_not_extract(tmp_path):
    """Video-only clips in a speech-only run: extract can never add them, so the error says
    --drop-missing (it said 'run emofs extract', which extracted nothing)."""
    s = Store(tmp_path / "store")
    ids = [f"c{i:02d}" for i in range(30)]
    s.upsert_clips(pa.table({"clip_id": ids, "label": [LABELS[i % 3] for i in range(30)],
                             "has_audio": [i < 20 for i in range(30)], "has_video": [i >= 20 for i in range(30)]}))
    write_features(s, "speech", ids[:20], np.random.default_rng(0).normal(size=(20, 4)),
                   {"weights": "t", "modality": "audio"})
    result = runner.invoke(app, ["train", "head", "-e", "speech", "--out", str(tmp_path / "r"), "--store", s.uri])
    assert result.exit_code == 1
    assert "10 of 30 labelled clips have no 'speech' features" in result.output
    assert "extract cannot add them): pass --drop-missing" in result.output
