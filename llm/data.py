"""Training / evaluation examples from the store: cached vectors, EVA patch tokens, clip text.

Vectors of every feature set are read once into memory (``(N, D)`` per set); the video
encoder's token sequences, which are large, are read per example with Lance ``take``.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from featurestore.errors import InputError, MissingFeatureSetError, StoreError
from featurestore.schema import features_name
from featurestore.store import Store

from .config import LLMConfig
from .prompts import answer_text, pick_instruction, user_prompt

log = logging.getLogger(__name__)

__all__ = ["ClipRecord", "StoreFeatures", "LLMDataset", "merge_tokens", "load_records", "make_example", "collate"]


def merge_tokens(tokens: np.ndarray, merge: int, max_tokens: int | None = None) -> np.ndarray:
    """MiniGPT-v2's token merge: concatenate ``merge`` adjacent tokens into one.

    Args:
        tokens: ``(T, Dt)`` patch tokens.
        merge: tokens per merged token (trailing ``T % merge`` tokens are dropped).
        max_tokens: keep at most this many merged tokens (evenly spaced).

    Returns:
        ``(T // merge, merge * Dt)`` array.
    """
    tokens = np.asarray(tokens)
    if tokens.ndim != 2:
        raise InputError(f"video tokens must be (T, Dt) (got shape {tokens.shape})")
    count = tokens.shape[0] // merge
    if count == 0:
        raise InputError(
            f"a clip has {tokens.shape[0]} video tokens, fewer than --merge {merge}: lower --merge"
        )
    merged = tokens[: count * merge].reshape(count, merge * tokens.shape[1])  # (T/m, m*Dt)
    if max_tokens is not None and count > max_tokens:
        keep = np.linspace(0, count - 1, max_tokens).round().astype(int)
        merged = merged[keep]
    return merged


@dataclass
class ClipRecord:
    """The text side of one clip."""

    clip_id: str
    label: str | None
    subtitle: str | None
    description: str | None


class StoreFeatures:
    """Cached features of some clips, by feature set.

    Args:
        store: the store.
        feature_encoders: sets whose pooled ``vector`` is used (one token each).
        video_encoder: set whose ``tokens`` fill ``<VideoHere>`` (or None).
        clip_ids: restrict to these clips (None: all rows).
    """

    def __init__(self, store: Store, feature_encoders: Sequence[str], video_encoder: str | None,
                 clip_ids: Sequence[str] | None = None):
        self.store = store
        self.feature_encoders = list(feature_encoders)
        self.video_encoder = video_encoder
        wanted = None if clip_ids is None else set(clip_ids)
        self.dims: dict[str, int] = {}
        self._vectors: dict[str, tuple[dict[str, int], np.ndarray]] = {}
        for name in self.feature_encoders:
            ds = self._open(name)
            table = ds.to_table(columns=["clip_id", "vector"])
            vector = table.column("vector").combine_chunks()
            dim = vector.type.list_size
            matrix = vector.values.to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32)
            ids = table.column("clip_id").to_pylist()
            index = {c: i for i, c in enumerate(ids) if wanted is None or c in wanted}
            self.dims[name] = dim
            self._vectors[name] = (index, matrix)
        self.video_dim: int | None = None
        self._video_rows: dict[str, int] = {}
        self._video_ds = None
        if video_encoder:
            ds = self._open(video_encoder)
            if "tokens" not in ds.schema.names:
                raise StoreError(
                    f"feature set {video_encoder!r} has no token column: re-extract it with tokens "
                    "or pass --video none"
                )
            self.video_dim = ds.schema.field("tokens").type.value_type.list_size
            ids = ds.to_table(columns=["clip_id"]).column("clip_id").to_pylist()
            self._video_rows = {c: i for i, c in enumerate(ids) if wanted is None or c in wanted}
            self._video_ds = ds

    def _open(self, name: str):
        ds = self.store.dataset(features_name(name))
        if ds is None:
            raise MissingFeatureSetError.of(self.store, name, alternative="leave it out of --encoders")
        return ds

    def clip_ids(self) -> set[str]:
        """Clips with at least one cached feature among the chosen sets."""
        out: set[str] = set(self._video_rows)
        for index, _ in self._vectors.values():
            out |= set(index)
        return out

    def vector(self, name: str, clip_id: str) -> np.ndarray | None:
        """The ``(D,)`` vector of one clip (None: not extracted for this clip)."""
        index, matrix = self._vectors[name]
        row = index.get(clip_id)
        return None if row is None else matrix[row]

    def video_tokens(self, clip_id: str) -> np.ndarray | None:
        """The raw ``(T, Dt)`` video tokens of one clip (None: missing or empty)."""
        row = self._video_rows.get(clip_id)
        if row is None:
            return None
        table = self._video_ds.take([row], columns=["clip_id", "tokens"])
        assert table.column("clip_id")[0].as_py() == clip_id, "row order changed under the reader"
        cell = table.column("tokens")[0]
        if not cell.is_valid or len(cell) == 0:
            return None
        values = cell.values.values.to_numpy(zero_copy_only=False)
        return values.reshape(len(cell), self.video_dim).astype(np.float32)  # (T, Dt)


def load_records(store: Store, where: str | None, description_column: str = "description") -> list[ClipRecord]:
    """Clip rows (id, label, subtitle, description) selected by ``where``."""
    frame = store.clips(where=where)
    if frame.height == 0:
        raise InputError(
            f"no clips match --where {where!r} in {store.uri}: check the filter with `emofs clips`"
            if where else f"the store {store.uri} holds no clips: run `emofs ingest` first"
        )
    if description_column not in frame.columns:
        raise InputError(
            f"--description-column {description_column!r} is not a clip column "
            f"(columns: {', '.join(frame.columns)})"
        )
    cols = {c: frame[c].to_list() if c in frame.columns else [None] * frame.height
            for c in ("clip_id", "label", "subtitle", description_column)}
    return [
        ClipRecord(cid, lab, sub, desc)
        for cid, lab, sub, desc in zip(cols["clip_id"], cols["label"], cols["subtitle"], cols[description_column])
    ]


def make_example(
    record: ClipRecord,
    features: StoreFeatures,
    config: LLMConfig,
    labels: Sequence[str],
    task: str,
    *,
    rng: random.Random | None = None,
    question: str | None = None,
    with_answer: bool = True,
) -> dict[str, Any]:
    """One example: user prompt with placeholders, modality arrays, answer.

    Returns:
        dict with ``clip_id``, ``task``, ``prompt``, ``answer`` (None without answer),
        ``label``, ``video`` (``(T', m*Dt)`` float32 or None) and ``features``
        (encoder -> ``(D,)`` float32, present ones only, in config order).
    """
    vecs = {}
    for name in features.feature_encoders:
        vec = features.vector(name, record.clip_id)
        if vec is not None:
            vecs[name] = vec
    video = None
    if features.video_encoder:
        raw = features.video_tokens(record.clip_id)
        if raw is not None:
            video = merge_tokens(raw, config.merge, config.max_video_tokens)
    missing = [n for n in features.feature_encoders if n not in vecs]
    if features.video_encoder and video is None and features.video_encoder not in missing:
        missing.append(f"{features.video_encoder} video")
    instruction = question or pick_instruction(task, labels, rng)
    prompt = user_prompt(task, instruction, record.subtitle, has_video=video is not None,
                         present_features=list(vecs), missing=missing, style=config.prompt_style)
    answer = answer_text(task, record.label, record.description) if with_answer else None
    return {
        "clip_id": record.clip_id,
        "task": task,
        "prompt": prompt,
        "answer": answer,
        "label": record.label,
        "video": video,
        "features": vecs,
    }


@dataclass
class LLMDataset:
    """Map-style dataset: one example per clip, task drawn by the mixing ratio each access.

    Clips that can serve none of the configured tasks (no label, no description) are
    dropped; ``dropped`` counts them. ``splits`` (clip -> part) and ``split_note`` describe
    a ``--split-by`` group split (the records are its train and val clips).
    """

    records: list[ClipRecord]
    features: StoreFeatures
    config: LLMConfig
    labels: list[str]
    seed: int = 0
    dropped: int = 0
    splits: dict[str, str] = field(default_factory=dict)
    split_note: str | None = None
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        kept = []
        for rec in self.records:
            if self._eligible(rec):
                kept.append(rec)
        self.dropped = len(self.records) - len(kept)
        self.records = kept
        for task in self.config.tasks:  # a task no clip can serve trains nothing: say so
            if kept and not any(answer_text(task, r.label, r.description) for r in kept):
                need = "a description (--description-column)" if task == "reason" else "a label"
                log.warning(f"--task {task}: none of the {len(kept)} clips has {need}, so this task is "
                            "not trained; drop it from --task or annotate clips first")

    def _eligible(self, rec: ClipRecord) -> list[str]:
        return [t for t in self.config.tasks if answer_text(t, rec.label, rec.description)]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rec = self.records[index]
        tasks = self._eligible(rec)
        weights = [self.config.tasks[t] for t in tasks]
        task = self._rng.choices(tasks, weights=weights)[0]
        return make_example(rec, self.features, self.config, self.labels, task, rng=self._rng)


def collate(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Examples stay a list: the model splices them into embeddings itself."""
    return batch
