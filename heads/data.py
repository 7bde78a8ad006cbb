"""Training data for heads: clips + labels + splits joined with cached feature sets.

:func:`prepare_data` selects the labelled clips, decides the split, checks the requested
feature sets cover them and (by default) preloads the vectors as one ``(N, D)`` array per
set. A clip needs at least one of the sets (``--require-all``: every one); which sets each
clip has is its presence mask (``PreparedData.present``), served with every batch as
``batch["present"] = {set: (B,) bool}`` so the head fuses only what a clip has. :class:`HeadDataModule` (Lightning) serves batches from those arrays, or streams them
from Lance with :class:`featurestore.reader.FeatureReader` when they do not fit in memory.

Splits, in order of precedence:

1. ``--split-by COLUMN``: a group split (no group in two splits; speaker-independent with
   ``--split-by speaker``), or group k-fold with ``--folds K --fold I``.
2. the ``split`` column when the selected clips have values in it (train / val / test;
   aliases: training, valid, validation, dev, testing). A missing val or test part is
   carved out of train, stratified.
3. a stratified random split with ``--seed``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from featurestore.errors import InputError, MissingFeatureSetError
from featurestore.schema import features_name
from featurestore.inventory import feature_set_info
from featurestore.store import Store

from .config import HeadConfig
from .presence import (PartialReader, batch_presence, normalize_present, pattern_names, presence_matrix,
                       presence_names)

log = logging.getLogger(__name__)

__all__ = [
    "PreparedData",
    "prepare_data",
    "assign_splits",
    "read_aligned",
    "feature_fingerprints",
    "TensorBatches",
    "HeadDataModule",
    "SPLITS",
    "presence_matrix",
    "presence_names",
    "pattern_names",
    "batch_presence",
]

SPLITS = ("train", "val", "test")
_ALIASES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test",
}
# Preload when the arrays take less than this share of available memory (and 8 GiB).
_PRELOAD_SHARE = 0.5
_PRELOAD_CAP = 8 << 30


@dataclass
class PreparedData:
    """Clips, labels, split and (optionally preloaded) features of one run.

    Attributes:
        clip_ids: the N clips used.
        labels: ``(N,)`` class indices into ``vocabulary``.
        vocabulary: sorted label strings.
        split: ``(N,)`` array of ``"train"``/``"val"``/``"test"``.
        features: ``{set: (N, D) array}`` when preloaded, else None (stream).
        dims: ``{set: D}``.
        split_note: how the split was made (for the report).
        dropped_missing: clips dropped for lacking a feature set.
        dropped_unlabelled: selected clips without a label.
        store_uri: where the features live (for streaming).
        present: ``{set: (N,) bool}``, which clips have each set (None: every clip has
            every set); rows of absent clips in ``features`` are zeros.
    """

    clip_ids: list[str]
    labels: np.ndarray
    vocabulary: list[str]
    split: np.ndarray
    features: dict[str, np.ndarray] | None
    dims: dict[str, int]
    split_note: str
    store_uri: str
    dropped_missing: int = 0
    dropped_unlabelled: int = 0
    feature_info: dict[str, dict[str, Any]] = field(default_factory=dict)
    normalizer: Any = None  # heads.normalize.GroupNormalizer with --normalize
    normalize_report: dict[str, Any] | None = None
    groups: np.ndarray | None = None  # (N,) --split-by values (str), when splitting by group
    present: dict[str, np.ndarray] | None = None  # {set: (N,) bool}; None: all present

    def indices(self, split: str) -> np.ndarray:
        """Row positions of one split."""
        return np.flatnonzero(self.split == split)

    def counts(self) -> dict[str, int]:
        """Clips per split."""
        return {s: int((self.split == s).sum()) for s in SPLITS}

    def subset(self, encoders: Sequence[str]) -> "PreparedData":
        """The same clips, labels and split with only some feature sets (ablations)."""
        enc = list(encoders)
        return PreparedData(
            clip_ids=self.clip_ids, labels=self.labels, vocabulary=self.vocabulary,
            split=self.split,
            features=None if self.features is None else {e: self.features[e] for e in enc},
            dims={e: self.dims[e] for e in enc}, split_note=self.split_note,
            store_uri=self.store_uri, dropped_missing=self.dropped_missing,
            dropped_unlabelled=self.dropped_unlabelled,
            feature_info={e: self.feature_info[e] for e in enc},
            normalizer=self.normalizer, normalize_report=self.normalize_report, groups=self.groups,
            present=None if self.present is None else {e: self.present[e] for e in enc},
        )

    def presence(self, encoders: Sequence[str] | None = None, rows: np.ndarray | None = None) -> np.ndarray:
        """``(n, M)`` bool presence of ``encoders`` (default: every set) for ``rows``."""
        enc = list(encoders or self.dims)
        rows = np.arange(len(self.clip_ids)) if rows is None else rows
        return presence_matrix(self.present, enc, len(self.clip_ids))[rows]


def feature_fingerprints(store: Store, encoders: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Fingerprint, spec, dim, dtype and version of each feature set (``features.json``)."""
    out = {}
    for name in encoders:
        if store.dataset(features_name(name)) is None:
            raise MissingFeatureSetError.of(store, name)
        info = feature_set_info(store, name)
        out[name] = {k: info[k] for k in ("fingerprint", "spec", "dim", "dtype", "version", "rows")}
    return out


def read_aligned(store: Store, name: str, clip_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Vectors of ``clip_ids`` (in that order) from one feature set, as stored dtype.

    Returns:
        ``(vectors (N, D), present (N,) bool)``; rows of absent clips are zeros.
    """
    import pyarrow.compute as pc

    from featurestore.reader import fsl_to_numpy

    table = store.table(features_name(name), columns=["clip_id", "vector"])
    if table is None:
        raise MissingFeatureSetError.of(store, name)
    stored = fsl_to_numpy(table.column("vector"))  # (M, D)
    position = pc.index_in(pa.array(list(clip_ids), pa.string()), value_set=table.column("clip_id"))
    present = position.is_valid().to_numpy(zero_copy_only=False)
    rows = position.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    vectors = stored[rows] if len(stored) else np.zeros((len(rows), stored.shape[1]), stored.dtype)
    vectors[~present] = 0
    return vectors, present  # (N, D), (N,)


def _refuse_nonfinite(name: str, vectors: np.ndarray, present: np.ndarray, clip_ids: Sequence[str]) -> None:
    """InputError naming the clips whose ``name`` vector holds NaN or inf (one such row makes
    the loss NaN and the head predict one class)."""
    bad = np.flatnonzero(present & ~np.isfinite(vectors).all(axis=1))  # (K,)
    if len(bad):
        examples = ", ".join(str(clip_ids[i]) for i in bad[:3])
        raise InputError(
            f"{len(bad)} of the selected clips have a {name!r} vector holding NaN or inf (e.g. {examples}): "
            f"run `emofs check --repair` to quarantine them, then `emofs extract --encoders {name}` "
            "redoes them")


def _labelled_clips(store: Store, cfg: HeadConfig):
    import polars as pl

    frame = store.clips(where=cfg.where)
    if cfg.label not in frame.columns:
        raise InputError(
            f"clips have no column {cfg.label!r} (columns: {', '.join(frame.columns)}): "
            "pass --label with one of them or add it with `emofs ingest --labels`"
        )
    if cfg.split_by and cfg.split_by not in frame.columns:
        raise InputError(
            f"--split-by {cfg.split_by}: clips have no such column (columns: {', '.join(frame.columns)})"
        )
    if cfg.normalize and cfg.normalize not in frame.columns:
        raise InputError(
            f"--normalize {cfg.normalize}: clips have no such column (columns: {', '.join(frame.columns)})"
        )
    if frame.height == 0:
        raise InputError(
            "no clips selected" + (f" by --where {cfg.where!r}" if cfg.where else "")
            + ": ingest clips first or loosen --where"
        )
    keep = ["clip_id", cfg.label] + [c for c in ("split", cfg.split_by, cfg.normalize) if c and c in frame.columns]
    frame = frame.select(list(dict.fromkeys(keep))).with_columns(
        pl.col(cfg.label).cast(pl.Utf8).alias("_label")
    )
    labelled = frame.filter(pl.col("_label").is_not_null() & (pl.col("_label") != ""))
    return labelled, frame.height - labelled.height


def prepare_data(
    store: Store, cfg: HeadConfig, *, progress: bool = True, quiet: bool = False
) -> PreparedData:
    """Select labelled clips, split them, check and (maybe) preload their features.

    Raises:
        InputError: no label column, fewer than two classes, clips lacking a feature set
            (without ``--drop-missing``), an unusable split column or group split.
        MissingFeatureSetError: a requested feature set does not exist.
    """
    info = feature_fingerprints(store, cfg.encoders)
    frame, unlabelled = _labelled_clips(store, cfg)
    if frame.height == 0:
        raise InputError(
            f"none of the selected clips has a {cfg.label!r} value: add labels with "
            "`emofs ingest PATH --labels labels.csv` or pick another --label"
        )
    clip_ids = frame["clip_id"].to_list()

    # Which clips have every feature set; read the vectors on the way when preloading.
    n = len(clip_ids)
    itemsize = {n_: 2 if info[n_]["dtype"] == "float16" else 4 for n_ in cfg.encoders}
    nbytes = sum(n * info[e]["dim"] * itemsize[e] for e in cfg.encoders)
    preload = _decide_preload(cfg.preload, nbytes)
    if cfg.normalize and not preload:
        raise InputError(f"--normalize {cfg.normalize} needs the features in memory: drop --preload never "
                         "(or pass --preload always)")
    arrays: dict[str, np.ndarray] = {}
    has_set: dict[str, np.ndarray] = {}
    for name in cfg.encoders:
        if preload:
            arrays[name], has = read_aligned(store, name, clip_ids)
            _refuse_nonfinite(name, arrays[name], has, clip_ids)
        else:
            table = store.table(features_name(name), columns=["clip_id"])
            import pyarrow.compute as pc

            has = pc.is_in(pa.array(clip_ids, pa.string()), value_set=table.column("clip_id"))
            has = has.to_numpy(zero_copy_only=False)
        has_set[name] = has
        if cfg.require_all and not has.all() and not cfg.drop_missing:
            raise InputError(
                f"{int((~has).sum())} of {n} labelled clips have no {name!r} features: run "
                f"`emofs extract --encoders {name}` or pass --drop-missing to leave them out "
                "(ablate and --require-all compare feature sets on the clips having every one)"
            )
    matrix = presence_matrix(has_set, cfg.encoders, n)  # (N, M)
    present = matrix.all(1) if cfg.require_all else matrix.any(1)  # (N,) clips kept
    if not present.all() and not cfg.require_all and not cfg.drop_missing:
        lacking = int((~present).sum())
        what = (f"no {cfg.encoders[0]!r} features" if len(cfg.encoders) == 1
                else f"none of the feature sets {', '.join(cfg.encoders)}")
        missing = [c for c, ok in zip(clip_ids, present) if not ok]
        if _lack_the_modality(store, cfg.encoders, missing):
            raise InputError(
                f"{lacking} of {n} labelled clips have {what}, and none of them has the media those "
                f"sets read (extract cannot add them): pass --drop-missing to train on the other "
                f"{n - lacking}, or add a feature set of their modality to --encoders"
            )
        raise InputError(
            f"{lacking} of {n} labelled clips have {what}: run `emofs extract --encoders "
            f"{','.join(cfg.encoders)}` or pass --drop-missing to train without them"
        )
    dropped = int((~present).sum())
    if dropped:
        if not quiet:
            what = ("one or more of the requested feature sets" if cfg.require_all
                    else "all of the requested feature sets")
            log.warning(f"--drop-missing: dropped {dropped} of {n} clips lacking {what}")
        frame = frame.filter(_pl_mask(present))
        clip_ids = frame["clip_id"].to_list()
        arrays = {k: v[present] for k, v in arrays.items()}
        has_set = {k: v[present] for k, v in has_set.items()}
    if not clip_ids:
        raise InputError("no clip has the requested feature sets: run `emofs extract` first")
    partial = {k: v for k, v in has_set.items() if not v.all()}
    if partial and not quiet:
        patterns = pattern_names(cfg.encoders, presence_matrix(has_set, cfg.encoders, len(clip_ids)))
        shares = ", ".join(f"{p} {patterns.count(p)}" for p in dict.fromkeys(sorted(patterns)))
        log.info(f"clips by modalities: {shares}")

    raw_labels = frame["_label"].to_list()
    vocabulary = sorted(set(raw_labels))
    if len(vocabulary) < 2:
        raise InputError(
            f"--label {cfg.label}: need at least two classes to train (found {vocabulary})"
        )
    index = {v: i for i, v in enumerate(vocabulary)}
    labels = np.array([index[v] for v in raw_labels], dtype=np.int64)
    split, note = assign_splits(frame, labels, cfg)
    missing_train = [vocabulary[c] for c in range(len(vocabulary)) if not (labels[split == "train"] == c).any()]
    if missing_train and not quiet:
        log.warning(f"classes with no training clip (the head cannot learn them): {', '.join(missing_train)}")
    normalizer = report = None
    if cfg.normalize:
        from .normalize import GroupNormalizer, group_values

        normalizer, arrays, report = normalize_present(
            GroupNormalizer, cfg.normalize, arrays, has_set, split == "train",
            group_values(frame[cfg.normalize].to_list()))
    return PreparedData(
        clip_ids=clip_ids, labels=labels, vocabulary=vocabulary, split=split,
        features=arrays if preload else None,
        dims={e: int(info[e]["dim"]) for e in cfg.encoders}, split_note=note,
        store_uri=store.uri, dropped_missing=dropped, dropped_unlabelled=unlabelled,
        feature_info=info, normalizer=normalizer, normalize_report=report,
        groups=_group_array(frame[cfg.split_by].to_list()) if cfg.split_by else None,
        present=None if not partial else has_set,
    )


def _group_array(values: list) -> np.ndarray:
    """Group column values as strings (None: ``<none>``), as the group splits see them."""
    return np.array(["<none>" if g is None else str(g) for g in values])


def _lack_the_modality(store: Store, encoders: Sequence[str], clip_ids: list[str]) -> bool:
    """Whether every clip of ``clip_ids`` lacks the media all ``encoders`` read (their specs'
    ``modality``: audio-only clips for face sets, video-only clips for speech sets)."""
    from featurestore.features import feature_spec
    from featurestore.store import sql_quote

    media = {"audio": "has_audio", "video": "has_video"}
    columns = {media.get((feature_spec(store, e) or {}).get("modality")) for e in encoders}
    if None in columns or not clip_ids:
        return False  # text, imported or unknown sets: extract may add them
    quoted = ", ".join(sql_quote(c) for c in clip_ids[:5000])
    rows = store.clips(where=f"clip_id IN ({quoted})", columns=["clip_id", *sorted(columns)])
    return rows.height > 0 and not any(any(bool(v) for v in rows[c].to_list()) for c in columns)


def _pl_mask(mask: np.ndarray):
    """A polars boolean Series from a numpy mask (for ``DataFrame.filter``)."""
    import polars as pl

    return pl.Series(mask)


def _decide_preload(mode: str, nbytes: int) -> bool:
    if mode != "auto":
        return mode == "always"
    try:
        import psutil

        available = psutil.virtual_memory().available
    except ImportError:  # pragma: no cover - psutil ships with the venv
        available = 4 << 30
    return nbytes < min(_PRELOAD_CAP, _PRELOAD_SHARE * available)


# ------------------------------------------------------------------------ splits
def assign_splits(frame, labels: np.ndarray, cfg: HeadConfig) -> tuple[np.ndarray, str]:
    """Split labels ``train``/``val``/``test`` for each row of ``frame``.

    Args:
        frame: polars frame with the clips (``split`` and ``cfg.split_by`` columns if any).
        labels: ``(N,)`` class indices (stratification).
        cfg: split settings (``split_by``, ``folds``, ``fold``, fractions, ``seed``).

    Returns:
        ``(split (N,) array of str, one-line description)``.
    """
    rng = np.random.default_rng(cfg.seed)
    n = len(labels)
    if cfg.split_by:
        groups = _group_array(frame[cfg.split_by].to_list())
        if cfg.folds:
            return _group_kfold(groups, cfg, rng)
        return _group_split(groups, cfg, rng)
    if "split" in frame.columns and frame["split"].null_count() < n:
        raw = frame["split"].to_list()
        unknown = sorted({str(v) for v in raw if v is not None and str(v).lower() not in _ALIASES})
        if unknown:
            raise InputError(
                f"split column holds {', '.join(unknown)}: use train / val / test, or ignore the "
                "column with --split-by COLUMN"
            )
        nulls = sum(v is None for v in raw)
        if nulls:
            raise InputError(
                f"{nulls} of {n} clips have no split value: fill the split column, or split "
                "another way with --split-by COLUMN"
            )
        split = np.array([_ALIASES[str(v).lower()] for v in raw], dtype=object)
        carved = []
        for part, frac in (("test", cfg.test_frac), ("val", cfg.val_frac)):
            if not (split == part).any():
                train = np.flatnonzero(split == "train")
                chosen = _stratified_take(train, labels[train], frac, rng)
                split[chosen] = part
                carved.append(part)
        note = "split column" + (f" ({' and '.join(carved)} carved from train, stratified)" if carved else "")
        return split.astype(str), note
    split = np.full(n, "train", dtype=object)
    test = _stratified_take(np.arange(n), labels, cfg.test_frac, rng)
    split[test] = "test"
    rest = np.flatnonzero(split == "train")
    val = _stratified_take(rest, labels[rest], cfg.val_frac / (1 - cfg.test_frac), rng)
    split[val] = "val"
    return split.astype(str), f"stratified random split (seed {cfg.seed})"


def _stratified_take(rows: np.ndarray, labels: np.ndarray, frac: float, rng) -> np.ndarray:
    """About ``frac`` of ``rows`` per class (a class keeps at least one row)."""
    chosen = []
    for c in np.unique(labels):
        members = rows[labels == c]
        k = int(round(frac * len(members)))
        k = min(k, len(members) - 1)
        if k > 0:
            chosen.append(rng.permutation(members)[:k])
    return np.concatenate(chosen) if chosen else np.array([], dtype=np.int64)


def _group_sizes(groups: np.ndarray, rng) -> tuple[list[str], dict[str, int]]:
    names, counts = np.unique(groups, return_counts=True)
    order = rng.permutation(len(names))
    return [str(names[i]) for i in order], {str(k): int(v) for k, v in zip(names, counts)}


def _group_split(groups: np.ndarray, cfg: HeadConfig, rng) -> tuple[np.ndarray, str]:
    order, size = _group_sizes(groups, rng)
    if len(order) < 3:
        raise InputError(
            f"--split-by {cfg.split_by}: {len(order)} group(s) ({', '.join(order)}); a group split "
            "needs at least 3 (train, val, test): pick another column or drop --split-by"
        )
    n = len(groups)
    remaining = list(order)
    assigned: dict[str, list[str]] = {}
    for part, frac in (("test", cfg.test_frac), ("val", cfg.val_frac)):
        target = frac * n
        picked, total = [], 0
        for g in list(remaining):
            if len(remaining) - len(picked) <= 1 + (part == "test"):
                break  # leave a group for val (when picking test) and one for train
            if total + size[g] <= target:
                picked.append(g)
                total += size[g]
        if not picked:  # every group overshoots: take the smallest one
            candidates = remaining[: len(remaining) - 1] if part == "val" else remaining
            picked = [min(candidates, key=lambda g: size[g])]
        assigned[part] = picked
        remaining = [g for g in remaining if g not in picked]
    split = np.full(n, "train", dtype=object)
    for part, chosen in assigned.items():
        split[np.isin(groups, chosen)] = part
    note = (
        f"group split by {cfg.split_by} (seed {cfg.seed}): test {', '.join(sorted(assigned['test']))}; "
        f"val {', '.join(sorted(assigned['val']))}; train {len(remaining)} group(s)"
    )
    return split.astype(str), note


def _group_kfold(groups: np.ndarray, cfg: HeadConfig, rng) -> tuple[np.ndarray, str]:
    order, size = _group_sizes(groups, rng)
    k_folds = len(order) if cfg.folds == "loo" else int(cfg.folds)
    fold = cfg.fold or 0
    if 3 <= len(order) < k_folds and fold == 0:  # fewer groups than asked: one group a fold
        log.warning(f"--folds {cfg.folds}: --split-by {cfg.split_by} has only {len(order)} groups; "
                    f"using {len(order)} folds (one group each)")
    if len(order) >= 3:
        k_folds = min(k_folds, len(order))
    if len(order) < 3:
        raise InputError(
            f"--split-by {cfg.split_by} has only {len(order)} group(s): cross-validation needs at "
            "least 3 (test, val, train); split by another column or drop --folds"
        )
    if fold >= k_folds:
        raise InputError(f"--fold must be in 0..{k_folds - 1} (got {fold})")
    # Largest groups first, each into the currently smallest fold (balanced folds).
    folds: list[list[str]] = [[] for _ in range(k_folds)]
    load = [0] * k_folds
    for g in sorted(order, key=lambda g: -size[g]):
        k = int(np.argmin(load))
        folds[k].append(g)
        load[k] += size[g]
    test = folds[fold]
    # Validation: held-out groups of the training folds (about --val-frac of their clips).
    rest = [g for g in order if g not in test]
    target = cfg.val_frac * sum(size[g] for g in rest)
    val: list[str] = []
    for g in np.random.default_rng(cfg.seed + 1000 * (fold + 1)).permutation(rest).tolist():
        if val and (sum(size[v] for v in val) >= target or len(val) >= len(rest) - 1):
            break
        val.append(g)
    split = np.full(len(groups), "train", dtype=object)
    split[np.isin(groups, test)] = "test"
    split[np.isin(groups, val)] = "val"
    note = (
        f"group {k_folds}-fold by {cfg.split_by} (seed {cfg.seed}), fold {fold}: "
        f"test {', '.join(sorted(test))}; val {', '.join(sorted(val))} (from the training folds)"
    )
    return split.astype(str), note


# ------------------------------------------------------------------ batches
class TensorBatches:
    """Preloaded features served a batch at a time: ``ds[[i, j, ...]] -> dict``.

    Args:
        features: ``{set: (N, D) array}`` (float16 stays float16; the model casts).
        labels: ``(N,)`` class indices, or None.
        present: ``{set: (N,) bool}`` presence per set, or None (all present; no mask).
    """

    def __init__(self, features: dict[str, np.ndarray], labels: np.ndarray | None,
                 present: dict[str, np.ndarray] | None = None):
        import torch

        self.features = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in features.items()}
        self.present = None if present is None else {
            k: torch.from_numpy(np.ascontiguousarray(v, dtype=bool)) for k, v in present.items()}
        self.labels = None if labels is None else torch.from_numpy(np.asarray(labels, dtype=np.int64))
        self.n = len(next(iter(self.features.values())))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, indices) -> dict[str, Any]:
        import torch

        idx = torch.as_tensor(np.atleast_1d(np.asarray(indices, dtype=np.int64)))  # (B,)
        batch = {"index": idx}
        for name, x in self.features.items():
            batch[name] = x.index_select(0, idx)  # (B, D)
        if self.present is not None:
            batch["present"] = {k: v.index_select(0, idx) for k, v in self.present.items()}  # (B,) each
        if self.labels is not None:
            batch["label"] = self.labels.index_select(0, idx)  # (B,)
        return batch


def split_dataset(prepared: PreparedData, part: str | None, *, encoders: Sequence[str] | None = None):
    """A batch dataset over one split (``None``: every clip), preloaded or streaming."""
    encoders = list(encoders or prepared.dims)
    rows = np.arange(len(prepared.clip_ids)) if part is None else prepared.indices(part)
    present = None if prepared.present is None else {e: prepared.present[e][rows] for e in encoders}
    if prepared.features is not None:
        return TensorBatches({e: prepared.features[e][rows] for e in encoders}, prepared.labels[rows], present)
    from featurestore.reader import FeatureReader

    ids = [prepared.clip_ids[i] for i in rows]
    if present is not None and not all(p.all() for p in present.values()):
        return PartialReader(prepared.store_uri, encoders, ids, present, prepared.labels[rows],
                             dims=prepared.dims)
    reader = FeatureReader(prepared.store_uri, encoders, clip_ids=ids)
    reader.labels = prepared.labels[rows]
    return reader


def _datamodule_class():
    import lightning.pytorch as pl

    from featurestore.reader import batch_loader

    class HeadDataModule(pl.LightningDataModule):
        """Lightning DataModule over a :class:`PreparedData` (train / val / test)."""

        def __init__(self, prepared: PreparedData, cfg: HeadConfig):
            super().__init__()
            self.prepared = prepared
            self.cfg = cfg
            self._sets: dict[str, Any] = {}

        def setup(self, stage: str | None = None) -> None:
            for part in SPLITS:
                if part not in self._sets:
                    self._sets[part] = split_dataset(self.prepared, part)

        def _loader(self, part: str, shuffle: bool):
            workers = self.cfg.workers if self.prepared.features is None else 0
            return batch_loader(self._sets[part], self.cfg.batch_size, shuffle=shuffle,
                                num_workers=workers, seed=self.cfg.seed)

        def train_dataloader(self):
            return self._loader("train", True)

        def val_dataloader(self):
            return self._loader("val", False)

        def test_dataloader(self):
            return self._loader("test", False)

    return HeadDataModule


def __getattr__(name: str):
    if name == "HeadDataModule":  # built on first use: importing Lightning takes seconds
        cls = _datamodule_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
