"""Use a trained run: load it, score clips (``emofs eval``), predict (``emofs predict``).

Loading a run needs torch only (not Lightning): the head is rebuilt from ``config.json``,
``labels.json`` and ``features.json`` and takes the weights of ``checkpoints/best.ckpt``.
A run is finished once ``metrics.json`` is there (training writes it last, atomically): a
directory without it is what a killed or failed training left, and is refused.

A clip is predicted from the run's feature sets it has (at least one; a run with
``require_all``, and every run trained before presence masks, needs all of them), and the
sets used are reported per clip (``modalities``: ``egemaps+mae``).
"""

from __future__ import annotations

import logging
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from featurestore.errors import InputError
from featurestore.store import Store

from .config import PRESENCE_KEYS, HeadConfig

log = logging.getLogger(__name__)

__all__ = ["LoadedRun", "load_run", "run_finished", "check_finished", "FINISHED", "read_checkpoint",
           "predict_proba", "predict_clips", "evaluate_run", "predict_to_store",
           "modality_weights", "run_features", "group_column", "seen_in_training"]

_CHECKPOINT = "checkpoints/best.ckpt"
#: Written last by ``emofs train head``: a run directory without it is unfinished.
FINISHED = "metrics.json"


def run_finished(run_dir: str | Path) -> bool:
    """True when ``run_dir`` is a finished head run (its ``metrics.json`` was written)."""
    return (Path(run_dir) / FINISHED).is_file()


def unfinished_message(run_dir: str | Path) -> str:
    return (f"{run_dir} is an unfinished head run (no {FINISHED}: its training was killed or failed): "
            f"train it again (`emofs train head --out {run_dir}` with the flags in its config.json "
            "replaces it) or pass a finished run")


def check_finished(run_dir: str | Path) -> None:
    """Raise :class:`InputError` when ``run_dir`` holds a run that never finished."""
    run_dir = Path(run_dir)
    if (run_dir / "config.json").exists() and not run_finished(run_dir):
        raise InputError(unfinished_message(run_dir))


@dataclass
class LoadedRun:
    """A run directory loaded for inference.

    Attributes:
        run_dir: the directory; run_id: its name.
        config: the resolved :class:`HeadConfig`.
        vocabulary: labels in class-index order.
        features: ``features.json`` (fingerprint, dim, ... per feature set).
        head: the :class:`heads.models.FusionHead` in eval mode (CPU).
        model_fingerprint: hash of the checkpoint bytes + config.
    """

    run_dir: Path
    run_id: str
    config: HeadConfig
    vocabulary: list[str]
    features: dict[str, dict[str, Any]]
    head: Any
    model_fingerprint: str
    normalizer: Any = None  # heads.normalize.GroupNormalizer of a --normalize run


def load_run(run_dir: str | Path, *, unfinished_ok: bool = False) -> LoadedRun:
    """Load a run directory written by ``emofs train head``.

    Args:
        unfinished_ok: load a run without ``metrics.json`` (training itself, before it
            writes it).

    Raises:
        InputError: the directory is not a finished run (unfinished: no ``metrics.json``;
            or names the missing file), or one of its files is damaged (a truncated
            checkpoint: names the file and the way out).
    """
    from .models import build_head

    run_dir = Path(run_dir)
    if not unfinished_ok:
        check_finished(run_dir)
    for name in ("config.json", "labels.json", "features.json", _CHECKPOINT):
        if not (run_dir / name).exists():
            raise InputError(
                f"{run_dir} is not a finished head run (no {name}): pass a directory written by "
                "`emofs train head`"
            )
    try:
        raw = json.loads((run_dir / "config.json").read_text())
        config = HeadConfig.load(run_dir / "config.json")
        vocabulary = json.loads((run_dir / "labels.json").read_text())
        features = json.loads((run_dir / "features.json").read_text())
        dims = [int(features[e]["dim"]) for e in config.encoders]
    except (ValueError, KeyError, TypeError, OSError) as exc:  # JSONDecodeError is a ValueError
        raise InputError(_damaged(run_dir, "config.json / labels.json / features.json", exc)) from exc
    ckpt_bytes = (run_dir / _CHECKPOINT).read_bytes()
    described = config.to_dict()
    if isinstance(raw, dict) and not any(k in raw for k in PRESENCE_KEYS):  # an older run: same fingerprint
        described = {k: v for k, v in described.items() if k not in PRESENCE_KEYS}
    fingerprint = hashlib.sha256(
        ckpt_bytes + json.dumps(described, sort_keys=True).encode()
    ).hexdigest()[:16]
    state = read_checkpoint(run_dir / _CHECKPOINT)["state_dict"]
    weights = {k[len("head."):]: v for k, v in state.items() if k.startswith("head.")}
    head = build_head(dims, len(vocabulary), config)
    try:
        head.load_state_dict(weights)
    except RuntimeError as exc:  # missing / unexpected keys, wrong shapes
        raise InputError(_damaged(run_dir, run_dir / _CHECKPOINT, exc)) from exc
    head.eval()
    normalizer = _load_normalizer(run_dir, config)
    return LoadedRun(run_dir=run_dir, run_id=run_dir.name, config=config, vocabulary=vocabulary,
                     features=features, head=head, model_fingerprint=fingerprint, normalizer=normalizer)


def _load_normalizer(run_dir: Path, config: HeadConfig):
    if not config.normalize:
        return None
    from .normalize import GroupNormalizer

    return GroupNormalizer.load(run_dir)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a head run's ``checkpoints/best.ckpt`` (tensors only, never arbitrary pickles).

    Raises:
        InputError: the file is truncated or not a checkpoint (names the file and the fix).
    """
    import pickle
    import zipfile

    import torch

    path = Path(path)
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        raise InputError(_damaged(run_dir, path, exc)) from exc
    if not isinstance(data, dict) or not isinstance(data.get("state_dict"), dict):
        raise InputError(_damaged(run_dir, path, ValueError("it holds no state_dict")))
    return data


def _damaged(run_dir: Path, file: Path | str, exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    reason = (lines[0] if lines else type(exc).__name__).split(". ")[0][:200]
    return (f"run {run_dir} is damaged: {file} cannot be read ({reason}): restore the run directory "
            f"from a backup, or retrain it (`emofs train head` with the flags in its config.json) "
            "and pass the new run")


def predict_proba(head, dataset, encoders: Sequence[str], *, batch_size: int = 1024,
                  with_weights: bool = False):
    """Class probabilities ``(N, C)`` of every clip of a batch dataset, in its order.

    With ``with_weights``, also the attention fusion's modality weights ``(N, M)`` (None
    for concat fusion). A batch's presence mask (``batch["present"]``) is passed to the head.
    """
    import torch

    from featurestore.reader import batch_loader

    from .data import batch_presence

    head.eval()
    probs, weights = [], []
    with torch.inference_mode():
        for batch in batch_loader(dataset, batch_size):
            inputs = [batch[e] for e in encoders]  # M x (B, D_m)
            fused, w = head.fuse(inputs, batch_presence(batch, encoders))
            probs.append(torch.softmax(head.classifier(fused), dim=-1).numpy())  # (B, C)
            if w is not None:
                weights.append(w.numpy())  # (B, M)
    n_classes = head.classifier.out_features
    out = np.concatenate(probs) if probs else np.zeros((0, n_classes), np.float32)
    if with_weights:
        return out, (np.concatenate(weights) if weights else None)
    return out


def _check_features(store: Store, run: LoadedRun) -> None:
    from heads.data import feature_fingerprints

    current = feature_fingerprints(store, run.config.encoders)
    for name, trained in run.features.items():
        now = current[name]
        if int(now["dim"]) != int(trained["dim"]):
            raise InputError(
                f"feature set {name!r} is {now['dim']}-d in {store.uri} but the run was trained on "
                f"{trained['dim']}-d vectors: re-extract with the run's encoder or retrain"
            )
        if now["fingerprint"] != trained["fingerprint"]:
            log.warning(f"feature set {name!r} changed since training (fingerprint {trained['fingerprint']} "
                 f"-> {now['fingerprint']}): predictions may be off")


def run_features(store: Store, run: LoadedRun, clip_ids: list[str], drop_missing: bool, groups=None):
    """Vectors and presence of ``clip_ids`` as the run reads them (per-group z-scores of a
    ``--normalize`` run over these clips); returns ``(kept ids, kept (N,) bool, presence
    (n, M) bool, dataset)``. A clip with some of the run's feature sets is kept unless the
    run requires all; one with none is an error, or left out with ``drop_missing``."""
    from heads.data import TensorBatches, read_aligned

    from .presence import apply_present, presence_matrix

    encoders = run.config.encoders
    arrays, has_set = {}, {}
    for name in encoders:
        arrays[name], has_set[name] = read_aligned(store, name, clip_ids)
        has = has_set[name]
        if run.config.require_all and not has.all() and not drop_missing:
            raise InputError(
                f"{int((~has).sum())} of {len(clip_ids)} clips have no {name!r} features: run "
                f"`emofs extract --encoders {name}` or pass --drop-missing"
            )
    matrix = presence_matrix(has_set, encoders, len(clip_ids))  # (N, M)
    present = matrix.all(1) if run.config.require_all else matrix.any(1)  # (N,)
    if not present.all() and not run.config.require_all and not drop_missing:
        what = f"no {encoders[0]!r} features" if len(encoders) == 1 else f"none of the run's feature sets ({', '.join(encoders)})"
        raise InputError(
            f"{int((~present).sum())} of {len(clip_ids)} clips have {what}: run "
            f"`emofs extract --encoders {','.join(encoders)}` or pass --drop-missing"
        )
    if not present.all():
        log.warning(f"--drop-missing: skipped {int((~present).sum())} clips lacking "
                    f"{'a' if run.config.require_all else 'every'} feature set")
    kept = [c for c, ok in zip(clip_ids, present) if ok]
    arrays = {k: v[present] for k, v in arrays.items()}  # {set: (N, D)}
    has_set = {k: v[present] for k, v in has_set.items()}
    partial = None if all(h.all() for h in has_set.values()) else has_set
    if run.normalizer is not None:  # per-group z-scores over the clips being predicted
        from .normalize import group_values

        values = group_values([None] * len(kept) if groups is None else np.asarray(groups, dtype=object)[present])
        arrays, _ = apply_present(run.normalizer, arrays, partial, values)
    return kept, present, matrix[present], TensorBatches(arrays, None, partial)


def group_column(store: Store, run: LoadedRun, ids: list[str]):
    """The ``--normalize`` column of ``ids`` (None: not a normalised run, or no such column)."""
    column = run.config.normalize
    if not column:
        return None
    if column not in store.clips(limit=1).columns:
        log.warning(f"clips have no {column!r} column (the run's --normalize): every clip uses the "
                    "training statistics")
        return None
    frame = store.clips(columns=["clip_id", column])
    lookup = dict(zip(frame["clip_id"].to_list(), frame[column].to_list()))
    return [lookup.get(c) for c in ids]


def _select(store: Store, where: str | None, clip_ids: Sequence[str] | None, columns=None):
    frame = store.clips(where=where, columns=columns)
    if clip_ids is not None:
        import polars as pl

        wanted = list(clip_ids)
        unknown = set(wanted) - set(frame["clip_id"].to_list())
        if unknown:
            raise InputError(f"{len(unknown)} clip ids are not in the store (e.g. {sorted(unknown)[0]})")
        frame = frame.filter(pl.col("clip_id").is_in(wanted))
    if frame.height == 0:
        raise InputError("no clips selected" + (f" by --where {where!r}" if where else "") + ": loosen --where")
    return frame


def predict_clips(
    store: Store,
    run_dir: str | Path,
    *,
    where: str | None = None,
    clip_ids: Sequence[str] | None = None,
    drop_missing: bool = False,
):
    """Predict clips with a trained run (nothing is written).

    Args:
        store: the store holding the run's feature sets.
        run_dir: a run directory (or a :class:`LoadedRun`).
        where: SQL filter on clip columns; clip_ids: restrict to these clips.
        drop_missing: skip clips lacking a feature set instead of failing.

    Returns:
        polars DataFrame: clip_id, label (predicted), confidence, probs (list, vocabulary
        order), one ``prob_<label>`` column per class and modalities (the run's feature
        sets the clip was predicted from, ``+``-joined).
    """
    import polars as pl

    from featurestore.predictions import prob_columns

    from .presence import presence_names

    run = run_dir if isinstance(run_dir, LoadedRun) else load_run(run_dir)
    _check_features(store, run)
    ids = _select(store, where, clip_ids, columns=["clip_id"])["clip_id"].to_list()
    kept, _, presence, dataset = run_features(store, run, ids, drop_missing, group_column(store, run, ids))
    probs = predict_proba(run.head, dataset, run.config.encoders)  # (N, C)
    best = probs.argmax(1) if len(probs) else np.zeros(0, dtype=np.int64)
    data: dict[str, Any] = {
        "clip_id": kept,
        "label": [run.vocabulary[i] for i in best],
        "confidence": probs[np.arange(len(best)), best].astype(np.float32),
        "probs": pl.Series("probs", probs.astype(np.float32).tolist(), dtype=pl.List(pl.Float32)),
    }
    for j, col in enumerate(prob_columns(run.vocabulary)):
        data[col] = probs[:, j].astype(np.float32)
    data["modalities"] = pl.Series("modalities", presence_names(run.config.encoders, presence), dtype=pl.Utf8)
    return pl.DataFrame(data)


def modality_weights(store: Store, run_dir: str | Path | LoadedRun,
                     clip_ids: Sequence[str]) -> dict[str, dict[str, float]] | None:
    """The attention fusion's per-clip modality weights, as the head computes them.

    Args:
        store: the store holding the run's feature sets.
        run_dir: a run directory (or a :class:`LoadedRun`).
        clip_ids: the clips to weigh (clips lacking every feature set are left out).

    Returns:
        ``{clip_id: {feature set: weight}}`` (weights of one clip sum to 1 over its present
        feature sets; a missing one weighs 0), or None when the head has no attention fusion
        (``--fusion concat`` or a linear head): it has no weights to show.
    """
    run = run_dir if isinstance(run_dir, LoadedRun) else load_run(run_dir)
    if getattr(run.head, "attention", None) is None:
        return None
    ids = list(dict.fromkeys(clip_ids))
    if not ids:
        return {}
    _check_features(store, run)
    kept, _, _, dataset = run_features(store, run, ids, True, group_column(store, run, ids))
    if not kept:
        return {}
    _, weights = predict_proba(run.head, dataset, run.config.encoders, with_weights=True)  # (N, M)
    encoders = run.config.encoders
    return {cid: {enc: float(w) for enc, w in zip(encoders, row)} for cid, row in zip(kept, weights)}


def evaluate_run(
    store: Store,
    run_dir: str | Path,
    *,
    where: str | None = None,
    drop_missing: bool = False,
) -> dict[str, Any]:
    """Score a run on any labelled clips (``emofs eval RUN --where ...``).

    A cross-validation directory (``train head --folds``: ``cv.json`` and ``fold-*/``) is
    scored pooled over its folds, each clip by the fold that held it out; selected clips
    that no fold held out are left out and counted (``not_held_out``).

    Returns:
        :func:`heads.metrics.classification_metrics` figures plus ``run_id``, ``where``,
        ``seen_in_training`` (selected clips the run trained / validated on) and, for a run
        over more than one feature set, ``by_modalities``: headline figures per presence
        pattern (``both``, ``<set> only``, ...).

    Raises:
        InputError: the label column is absent, clips carry a label the run never saw,
            no selected clip has a label, or clips lack features (without drop_missing).
    """
    from .metrics import classification_metrics

    folds = sorted(Path(run_dir).glob("fold-*")) if (Path(run_dir) / "cv.json").is_file() else []
    runs = [load_run(d) for d in folds] or [load_run(run_dir)]
    run = runs[0]
    label = run.config.label
    if label not in store.clips(limit=1).columns:
        raise InputError(
            f"clips have no column {label!r} (the run's --label): add it with `emofs ingest --labels`"
        )
    frame = _select(store, where, None, columns=["clip_id", label])
    frame = frame.filter(frame[label].is_not_null())
    if frame.height == 0:
        raise InputError(f"none of the selected clips has a {label!r} value to score against")
    truth = dict(zip(frame["clip_id"].to_list(), frame[label].cast(str).to_list()))
    index = {v: i for i, v in enumerate(run.vocabulary)}
    unseen = sorted({v for v in truth.values() if v not in index})
    if unseen:
        raise InputError(
            f"labels never seen in training: {', '.join(unseen)} (the run knows "
            f"{', '.join(run.vocabulary)}): exclude them with --where"
        )
    parts, seen, held = [], {"train": 0, "val": 0, "clips": 0}, set()
    for one, folder in zip(runs, folds or [Path(run_dir)]):
        ids = list(truth)
        if folds:  # this fold scores the clips it held out
            ids = [c for c in ids if _split_of(folder).get(c) == "test"]
            held.update(ids)
        if not ids:
            continue
        predictions = predict_clips(store, one, clip_ids=ids, drop_missing=drop_missing)
        parts.append(predictions)
        for key, n in seen_in_training(folder, predictions["clip_id"].to_list()).items():
            seen[key] += n
    if not parts:
        raise InputError(f"no fold of {run_dir} held out any selected clip: widen --where")
    import polars as pl

    predictions = pl.concat(parts)
    y_true = np.array([index[truth[c]] for c in predictions["clip_id"].to_list()], dtype=np.int64)
    y_pred = np.array([index[v] for v in predictions["label"].to_list()], dtype=np.int64)
    figures = classification_metrics(y_true, y_pred, run.vocabulary)
    figures.update({"run_id": Path(run_dir).name if folds else run.run_id, "where": where,
                    "seen_in_training": seen})
    if folds:
        figures.update({"folds": len(folds), "not_held_out": len(truth) - len(held)})
    encoders = run.config.encoders
    if len(encoders) > 1:
        from .presence import figures_by_pattern, pattern_names

        sets = [set(m.split("+")) for m in predictions["modalities"].to_list()]
        matrix = np.array([[e in have for e in encoders] for have in sets], dtype=bool).reshape(len(sets), len(encoders))
        figures["by_modalities"] = figures_by_pattern(y_true, y_pred, pattern_names(encoders, matrix), run.vocabulary)
    return figures


def _split_of(run_dir: Path) -> dict[str, str]:
    """``{clip_id: train | val | test}`` of a run's ``splits.csv`` (empty without one)."""
    import polars as pl

    splits_file = Path(run_dir) / "splits.csv"
    if not splits_file.is_file():
        return {}
    splits = pl.read_csv(splits_file, schema_overrides={"clip_id": pl.Utf8, "split": pl.Utf8})
    return dict(zip(splits["clip_id"].to_list(), splits["split"].to_list()))


def seen_in_training(run_dir: str | Path, clip_ids: Sequence[str]) -> dict[str, int]:
    """How many of ``clip_ids`` the run trained or validated on (its ``splits.csv``):
    ``{"train": n, "val": n, "clips": len(clip_ids)}``; figures on those are not a test."""
    part = _split_of(Path(run_dir))
    counts = {"train": 0, "val": 0, "clips": len(clip_ids)}
    for clip in clip_ids:
        if part.get(clip) in ("train", "val"):
            counts[part[clip]] += 1
    return counts


def predict_to_store(
    store: Store,
    run_dir: str | Path,
    *,
    where: str | None = None,
    clip_ids: Sequence[str] | None = None,
    name: str | None = None,
    drop_missing: bool = False,
) -> dict[str, Any]:
    """Predict clips and upsert them into ``predictions/<name or run id>.lance``.

    Returns:
        ``{"dataset", "rows", "version", "labels": {label: count}, "modalities": {sets:
        count}}``.
    """
    from featurestore.predictions import predictions_name, write_predictions

    run = load_run(run_dir)
    run_id = name or run.run_id
    dataset = predictions_name(run_id)  # validates the name before any work
    frame = predict_clips(store, run, where=where, clip_ids=clip_ids, drop_missing=drop_missing)
    probs = np.array(frame["probs"].to_list(), dtype=np.float32).reshape(frame.height, len(run.vocabulary))
    version = write_predictions(store, run_id, frame["clip_id"].to_list(), probs, run.vocabulary,
                                model_fingerprint=run.model_fingerprint,
                                modalities=frame["modalities"].to_list())
    counts = frame.group_by("label").len().sort("len", descending=True)
    used = frame.group_by("modalities").len().sort("len", descending=True)
    return {"dataset": dataset, "rows": frame.height, "version": version,
            "labels": dict(counts.iter_rows()), "modalities": dict(used.iter_rows())}
