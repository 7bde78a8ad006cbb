"""Small-data training: per-group normalisation, cross-validation in one command, derived
schedules and the linear baseline head."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from cli import app
from featurestore import InputError, Store
from featurestore.features import write_features

LABELS = ["angry", "happy", "sad"]
runner = CliRunner()


def _speaker_store(path, n_speakers: int = 10, per_speaker: int = 36, seed: int = 0) -> Store:
    """3 classes; each speaker adds a large random offset to every (class-informative) feature."""
    rng = np.random.default_rng(seed)
    store = Store(path)
    n = n_speakers * per_speaker
    cls = np.tile(np.arange(3), n // 3 + 1)[:n]
    speaker = np.repeat(np.arange(n_speakers), per_speaker)
    ids = [f"c{i:04d}" for i in range(n)]
    store.upsert_clips(pa.table({"clip_id": ids, "label": [LABELS[c] for c in cls],
                                 "speaker": [f"spk{s}" for s in speaker]}))
    dim = 12
    means = rng.normal(0, 1.0, (3, dim))  # class signal
    offsets = rng.normal(0, 6.0, (n_speakers, dim))  # speaker offset, much larger
    x = means[cls] + offsets[speaker] + rng.normal(0, 0.6, (n, dim))  # (N, D)
    write_features(store, "feat", ids, x, {"weights": "synthetic-speakers", "dim": dim})
    return store


@pytest.fixture(scope="module")
def speakers(tmp_path_factory) -> Store:
    return _speaker_store(tmp_path_factory.mktemp("cv") / "store")


def _train(store, out, **changes):
    from heads import HeadConfig, train_head

    cfg = HeadConfig(encoders=["feat"], split_by="speaker", hidden=32, threads=1, seed=1, **changes)
    return train_head(store, cfg, out=out, quiet=True)


# ------------------------------------------------------------------ --normalize
def test_normalize_speaker_removes_speaker_offsets(speakers, tmp_path):
    plain = _train(speakers, tmp_path / "plain")
    normed = _train(speakers, tmp_path / "normed", normalize="speaker")
    assert normed.test["uar"] >= 0.85, (plain.test["uar"], normed.test["uar"])
    assert normed.test["uar"] >= plain.test["uar"] + 0.25, (plain.test["uar"], normed.test["uar"])
    config = json.loads((tmp_path / "normed/config.json").read_text())
    assert config["normalize"] == "speaker" and (tmp_path / "normed/normalize.json").is_file()
    report = json.loads((tmp_path / "normed/metrics.json").read_text())["normalize"]
    assert report["column"] == "speaker" and report["groups"] == 10 and report["fallback_groups"] == {}

    # eval / predict read the speaker column and normalise the same way.
    from heads import evaluate_run, predict_clips

    tested = pl.read_csv(tmp_path / "normed/splits.csv").filter(pl.col("split") == "test")
    test_ids = tested["clip_id"].to_list()
    where = "clip_id IN (" + ", ".join(f"'{c}'" for c in test_ids) + ")"
    figures = evaluate_run(speakers, tmp_path / "normed", where=where)
    assert figures["accuracy"] == pytest.approx(normed.test["accuracy"])
    # Too few clips of a speaker: falls back to the training statistics (logged, no error).
    few = predict_clips(speakers, tmp_path / "normed", clip_ids=test_ids[:3])
    assert few.height == 3


def test_normalize_needs_the_column(speakers, tmp_path):
    result = runner.invoke(app, ["train", "head", "-e", "feat", "--normalize", "accent",
                                 "--store", speakers.uri, "--out", str(tmp_path / "r")])
    assert result.exit_code == 1 and "--normalize accent" in result.output


# ------------------------------------------------------------------ cross-validation
def test_cross_validation_cli_trains_every_fold(speakers, tmp_path):
    out = tmp_path / "cv"
    result = runner.invoke(app, [
        "train", "head", "-e", "feat", "--split-by", "speaker", "--folds", "5", "--normalize", "speaker",
        "--hidden", "16", "--threads", "1", "--max-steps", "20", "--store", speakers.uri, "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    assert "mean ± std" in result.output and "UAR" in result.output
    for fold in range(5):
        assert f"\n│ {fold}" in result.output or f"│ {fold} " in result.output
    # Every clip is in exactly one test fold; validation never overlaps the fold's test groups.
    tested = []
    for fold in range(5):
        splits = pl.read_csv(out / f"fold-{fold}/splits.csv")
        tested += splits.filter(pl.col("split") == "test")["clip_id"].to_list()
        assert (splits["split"] == "val").sum() > 0
    assert len(tested) == len(set(tested)) == 360
    cv = json.loads((out / "cv.json").read_text())
    assert cv["folds"] == 5 and len(cv["per_fold"]) == 5
    for key in ("uar", "war", "weighted_f1", "macro_f1"):
        assert key in cv["mean"] and key in cv["std"] and all(key in r for r in cv["per_fold"])
    assert cv["pooled"]["n"] == 360 and np.asarray(cv["pooled"]["confusion"]).sum() == 360
    assert (out / "confusion.png").stat().st_size > 0
    assert pl.read_csv(out / "cv.csv").height == 5


def test_leave_one_group_out_and_single_fold(speakers, tmp_path):
    from heads import HeadConfig
    from heads.cv import cross_validate
    from heads.train import train_head

    cfg = HeadConfig(encoders=["feat"], split_by="speaker", folds="loo", hidden=8, max_steps=3, threads=1)
    cv = cross_validate(speakers, cfg, out=tmp_path / "loo", quiet=True)
    assert len(cv.rows) == 10 and all(r["n_test"] == 36 for r in cv.rows)
    # --fold i trains just that fold, with the same split as the cross-validation's fold i.
    one = train_head(speakers, cfg.replace(fold=3), out=tmp_path / "one", quiet=True)
    assert one.counts["test"] == 36
    assert (pl.read_csv(tmp_path / "one/splits.csv").equals(pl.read_csv(tmp_path / "loo/fold-3/splits.csv")))


def test_more_folds_than_groups_uses_one_group_a_fold(tmp_path, caplog):
    """--folds 5 on 4 speakers (the demo store's case) runs 4 folds and says so; 2 groups is one line."""
    from heads import HeadConfig
    from heads.cv import cross_validate

    store = _speaker_store(tmp_path / "four", n_speakers=4, per_speaker=24)
    cfg = HeadConfig(encoders=["feat"], split_by="speaker", folds=5, hidden=8, max_steps=3, threads=1)
    with caplog.at_level("WARNING"):
        cv = cross_validate(store, cfg, out=tmp_path / "cv", quiet=True)
    assert len(cv.rows) == 4 and sorted(r["test_groups"] for r in cv.rows) == [f"spk{i}" for i in range(4)]
    assert "only 4 groups; using 4 folds" in caplog.text
    two = _speaker_store(tmp_path / "two", n_speakers=2, per_speaker=24)
    with pytest.raises(InputError, match="only 2 group"):
        cross_validate(two, cfg, out=tmp_path / "cv2", quiet=True)


# ------------------------------------------------------------------ derived schedule
def test_schedule_scales_with_the_training_set():
    from heads import HeadConfig
    from heads.schedule import MIN_STEPS, resolve_schedule

    small, info = resolve_schedule(HeadConfig(encoders=["x"]), 320)
    assert small.batch_size == 40 and small.epochs * info["steps_per_epoch"] >= MIN_STEPS
    assert small.patience * info["steps_per_epoch"] >= 200 and info["min_steps"] == MIN_STEPS
    big, info = resolve_schedule(HeadConfig(encoders=["x"]), 30000)  # no more work than before
    assert (big.batch_size, big.epochs, big.patience) == (256, 30, 5)
    tiny, _ = resolve_schedule(HeadConfig(encoders=["x"]), 40)
    assert tiny.batch_size == 16
    fixed, info = resolve_schedule(HeadConfig(encoders=["x"], batch_size=8, epochs=3, patience=2), 320)
    assert (fixed.batch_size, fixed.epochs, fixed.patience) == (8, 3, 2) and info["derived"] == []
    assert info["min_steps"] is None


def test_small_run_trains_enough_steps(speakers, tmp_path):
    result = _train(speakers, tmp_path / "r", normalize="speaker")
    metrics = json.loads((tmp_path / "r/metrics.json").read_text())
    assert metrics["schedule"]["steps"] >= 500 and metrics["schedule"]["batch_size"] < 64
    config = json.loads((tmp_path / "r/config.json").read_text())
    assert config["batch_size"] == metrics["schedule"]["batch_size"] and config["weight_decay"] > 0
    assert result.test["uar"] > 0.85


# ------------------------------------------------------------------ --head linear
def test_linear_head_matches_sklearn_logistic_regression(tmp_path):
    sklearn = pytest.importorskip("sklearn.linear_model")
    from heads import HeadConfig, train_head

    rng = np.random.default_rng(3)
    n, dim = 600, 20
    cls = rng.choice(4, n)
    x = (rng.normal(0, 1, (4, dim))[cls] * 0.8 + rng.normal(0, 1.0, (n, dim))) * rng.uniform(0.5, 20, dim)
    store = Store(tmp_path / "store")
    ids = [f"c{i:04d}" for i in range(n)]
    store.upsert_clips(pa.table({"clip_id": ids, "label": [f"k{c}" for c in cls]}))
    write_features(store, "x", ids, x, {"weights": "synthetic-linear", "dim": dim})
    cfg = HeadConfig(encoders=["x"], head="linear", class_weights=False, threads=1)
    result = train_head(store, cfg, out=tmp_path / "lin", quiet=True)
    split = np.array(pl.read_csv(tmp_path / "lin/splits.csv")["split"].to_list())
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    reference = make_pipeline(StandardScaler(), sklearn.LogisticRegression(max_iter=2000))
    reference.fit(x[split == "train"], cls[split == "train"])
    expected = float((reference.predict(x[split == "test"]) == cls[split == "test"]).mean())
    assert abs(result.test["accuracy"] - expected) <= 0.02, (result.test["accuracy"], expected)
    assert result.schedule["steps"] > 0 and result.test["accuracy"] > 0.4
    # The run loads and predicts like any other.
    from heads import predict_clips

    assert predict_clips(store, tmp_path / "lin").height == n


def test_killed_cross_validation_is_redone(speakers, tmp_path):
    """Before: a cross-validation killed after fold 0 refused its --out forever (fold-0
    "already holds a run"). Now the folds are replaced, with a warning, and cv.json comes last."""
    from heads import HeadConfig, load_run
    from heads.cv import cross_validate

    out = tmp_path / "cv"
    cfg = HeadConfig(encoders=["feat"], split_by="speaker", folds=2, head="linear", threads=1)
    first = cross_validate(speakers, cfg, out=out, quiet=True)
    (out / "cv.json").unlink()  # as if killed before the summary
    (out / "fold-1" / "metrics.json").unlink()  # ... and during fold 1
    (out / "fold-5").mkdir()
    HeadConfig(encoders=["feat"]).save(out / "fold-5" / "config.json")  # a fold this run does not have
    with pytest.raises(InputError, match="unfinished head run"):
        load_run(out / "fold-1")
    again = cross_validate(speakers, cfg, out=out, quiet=True)
    assert [r["uar"] for r in again.rows] == [r["uar"] for r in first.rows]
    assert json.loads((out / "cv.json").read_text())["folds"] == 2
    assert not (out / "fold-5").exists()
    with pytest.raises(InputError, match="already holds a cross-validation"):
        cross_validate(speakers, cfg, out=out, quiet=True)


def test_eval_of_a_folds_run_pools_each_clip_by_the_fold_that_held_it_out(speakers, tmp_path):
    """`emofs eval runs/cv1` on a --folds run (it was 'not a finished head run') scores every
    clip with the fold that never saw it: the cross-validation's own pooled figures."""
    from heads import HeadConfig, evaluate_run
    from heads.cv import cross_validate

    cfg = HeadConfig(encoders=["feat"], split_by="speaker", folds=3, hidden=8, max_steps=20, threads=1)
    cv = cross_validate(speakers, cfg, out=tmp_path / "cv", quiet=True)
    figures = evaluate_run(speakers, tmp_path / "cv")
    assert figures["folds"] == 3 and figures["n"] == 360 and figures["not_held_out"] == 0
    assert figures["seen_in_training"] == {"train": 0, "val": 0, "clips": 360}
    assert figures["uar"] == pytest.approx(cv.pooled["uar"])
    result = runner.invoke(app, ["eval", str(tmp_path / "cv"), "--where", "speaker = 'spk0'", "--json",
                                 "--store", speakers.uri])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["n"] == 36
