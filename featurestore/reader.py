"""The one torch reader over the store (DESIGN convention 4).

:class:`FeatureReader` is a map-style ``torch.utils.data.Dataset`` over one or more
feature sets joined on ``clip_id`` (plus, optionally, a label column of ``clips.lance``).
Clips are chosen by explicit ids, a SQL filter on clip columns and/or a value of the
``split`` column. Indexing takes a *list* of positions and returns a whole batch, so a
``DataLoader(reader, batch_size=None, sampler=BatchSampler(...))`` reads each batch with
one Lance ``take`` per feature set instead of one row at a time.

The reader pickles as a store URI, pinned dataset versions and row offsets; each worker
opens Lance lazily on its first batch, and :meth:`FeatureReader.loader` uses ``spawn``
workers (forking a process that holds Lance's Rust thread pools can deadlock).

Why not ``lance.torch.data.LanceDataset`` directly: it iterates *one* dataset in storage
order (no join across feature sets, no shuffle except by fragment) and opens the dataset in
its constructor; ``SafeLanceDataset`` opens lazily but returns Python dicts per row. This
reader keeps their ideas (lazy open, spawn context, fixed-size-list -> tensor without a
copy per row) for the multi-feature-set, shuffled case training needs.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from .errors import InputError, MissingFeatureSetError
from .filters import validate_where
from .schema import dataset_uri, features_name
from .store import Store, sql_quote

__all__ = ["FeatureReader", "batch_loader", "fsl_to_numpy"]


def fsl_to_numpy(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A ``fixed_size_list<float>[D]`` column as an ``(N, D)`` array (no per-row copy)."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    dim = arr.type.list_size
    values = arr.values.slice(arr.offset * dim, len(arr) * dim)
    return values.to_numpy(zero_copy_only=False).reshape(-1, dim)  # (N, D)


class FeatureReader:
    """Map-style torch dataset: batches of feature vectors (and labels) read from Lance.

    Args:
        store: a :class:`Store` or its URI.
        feature_sets: feature-set names to join on ``clip_id`` (in this order).
        clip_ids: read these clips (in this order); else every clip selected by
            ``where`` / ``split``.
        where: SQL filter on clip columns (``"label = 'sad'"``).
        split: keep clips whose ``split`` column equals this value.
        label_column: clip column to return as class indices (needs ``vocabulary``).
        vocabulary: label strings; a label outside it raises :class:`InputError`.
        drop_missing: drop clips lacking a feature set (else raise naming the count).

    ``reader[[i, j, ...]]`` returns ``{"index": (B,) int64, "<set>": (B, D) float tensor,
    ..., "label": (B,) int64}``.

    Example:
        >>> reader = FeatureReader(store, ["hubert", "mae"], split="train",
        ...                        label_column="label", vocabulary=["angry", "sad"])
        >>> loader = reader.loader(batch_size=256, shuffle=True, num_workers=2)
    """

    def __init__(
        self,
        store: Store | str,
        feature_sets: Sequence[str],
        *,
        clip_ids: Sequence[str] | None = None,
        where: str | None = None,
        split: str | None = None,
        label_column: str | None = None,
        vocabulary: Sequence[str] | None = None,
        drop_missing: bool = False,
    ):
        store = store if isinstance(store, Store) else Store(store, create=False)
        if not feature_sets:
            raise InputError("the reader needs at least one feature set")
        self.store_uri = store.uri
        self.feature_sets = list(feature_sets)
        if clip_ids is None or where or split:
            validate_where(where)  # before it is wrapped in (...): a stray ')' shows
            filters = [f"({where})"] if where else []
            if split is not None:
                filters.append(f"split = {sql_quote(split)}")
            frame = store.clips(where=" AND ".join(filters) or None, columns=["clip_id"])
            selected = frame["clip_id"].to_list()
            if clip_ids is not None:
                keep = set(selected)
                selected = [c for c in clip_ids if c in keep]
            clip_ids = selected
        clip_ids = list(clip_ids)

        self.versions: dict[str, int] = {}
        self.dims: dict[str, int] = {}
        offsets: dict[str, np.ndarray] = {}
        present = np.ones(len(clip_ids), dtype=bool)
        for name in self.feature_sets:
            ds = store.dataset(features_name(name))
            if ds is None:
                raise MissingFeatureSetError.of(store, name)
            self.versions[name] = ds.version
            self.dims[name] = ds.schema.field("vector").type.list_size
            ids = ds.to_table(columns=["clip_id"]).column("clip_id").to_pylist()
            position = {c: i for i, c in enumerate(ids)}
            rows = np.array([position.get(c, -1) for c in clip_ids], dtype=np.int64)
            present &= rows >= 0
            offsets[name] = rows
        if not present.all():
            missing = int((~present).sum())
            if not drop_missing:
                raise InputError(
                    f"{missing} of {len(clip_ids)} clips lack at least one of the feature sets "
                    f"{', '.join(self.feature_sets)}: run `emofs extract` for them or pass --drop-missing"
                )
        self.dropped = int((~present).sum())
        self.clip_ids = [c for c, ok in zip(clip_ids, present) if ok]
        self.offsets = {n: o[present] for n, o in offsets.items()}

        self.labels: np.ndarray | None = None
        self.vocabulary = list(vocabulary) if vocabulary is not None else None
        if label_column is not None:
            if self.vocabulary is None:
                raise InputError("label_column needs a vocabulary")
            self.labels = _label_indices(store, self.clip_ids, label_column, self.vocabulary)
        self._datasets: dict[str, Any] | None = None

    # --------------------------------------------------------------- dataset
    def __len__(self) -> int:
        return len(self.clip_ids)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_datasets"] = None  # each worker opens Lance itself
        return state

    def _open(self) -> dict[str, Any]:
        if self._datasets is None:
            import lance

            self._datasets = {
                n: lance.dataset(dataset_uri(self.store_uri, features_name(n)), version=v)
                for n, v in self.versions.items()
            }
        return self._datasets

    def __getitem__(self, indices) -> dict[str, Any]:
        import torch

        idx = np.atleast_1d(np.asarray(indices, dtype=np.int64))  # (B,)
        batch: dict[str, Any] = {"index": torch.from_numpy(idx)}
        datasets = self._open()
        for name in self.feature_sets:
            rows = self.offsets[name][idx]
            order = np.argsort(rows, kind="stable")
            table = datasets[name].take(rows[order], columns=["vector"])
            vectors = np.empty((len(idx), self.dims[name]), dtype=_np_dtype(table))
            vectors[order] = fsl_to_numpy(table.column("vector"))  # (B, D)
            batch[name] = torch.from_numpy(vectors)
        if self.labels is not None:
            batch["label"] = torch.from_numpy(self.labels[idx])
        return batch

    def loader(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        num_workers: int = 0,
        seed: int = 0,
        drop_last: bool = False,
    ):
        """A ``DataLoader`` yielding whole batches (spawn workers, Lance opened per worker)."""
        return batch_loader(self, batch_size, shuffle=shuffle, num_workers=num_workers,
                            seed=seed, drop_last=drop_last)


def batch_loader(dataset, batch_size: int, *, shuffle: bool = False, num_workers: int = 0,
                 seed: int = 0, drop_last: bool = False):
    """DataLoader over a dataset whose ``__getitem__`` takes a list of positions."""
    import torch
    from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler

    if shuffle:
        generator = torch.Generator().manual_seed(seed)
        base = RandomSampler(range(len(dataset)), generator=generator)
    else:
        base = SequentialSampler(range(len(dataset)))
    sampler = BatchSampler(base, batch_size=batch_size, drop_last=drop_last)
    kwargs: dict[str, Any] = {}
    if num_workers > 0:
        kwargs = {
            "num_workers": num_workers,
            "multiprocessing_context": torch.multiprocessing.get_context("spawn"),
            "persistent_workers": True,
            "prefetch_factor": 4,
        }
    return DataLoader(dataset, batch_size=None, sampler=sampler, **kwargs)


def _np_dtype(table: pa.Table):
    value = table.schema.field("vector").type.value_type
    return np.float16 if value == pa.float16() else np.float32


def _label_indices(store: Store, clip_ids: list[str], column: str, vocabulary: list[str]) -> np.ndarray:
    frame = store.clips()
    if column not in frame.columns:
        raise InputError(
            f"clips have no column {column!r} (columns: {', '.join(frame.columns)}): "
            "pass --label with one of them or add it with `emofs ingest --labels`"
        )
    values = dict(zip(frame["clip_id"].to_list(), frame[column].cast(str).to_list()))
    index = {v: i for i, v in enumerate(vocabulary)}
    out = np.empty(len(clip_ids), dtype=np.int64)
    unknown: dict[str, int] = {}
    for i, c in enumerate(clip_ids):
        v = values.get(c)
        if v not in index:
            unknown[str(v)] = unknown.get(str(v), 0) + 1
            continue
        out[i] = index[v]
    if unknown:
        shown = ", ".join(f"{k} ({n})" for k, n in sorted(unknown.items()))
        raise InputError(
            f"labels never seen in training: {shown}; the run knows {', '.join(vocabulary)}: "
            "filter them out with --where or retrain with these clips"
        )
    return out
