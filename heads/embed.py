"""A learned emotion space: a trained run's fused projection as a feature set (``emofs embed``).

The vector a head feeds its classifier (the fused projectors' output of an MLP head, the
standardised inputs of a linear head) places clips by emotion as the run learned it.
Written as ``features/<name>.lance`` with a spec naming the run (run id, model
fingerprint, the feature sets and group normalisation it read), it is a feature set
like any other: ``emofs index build --encoder NAME`` and ``emofs similar`` then search
by emotion instead of by raw acoustics.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from featurestore.errors import InputError
from featurestore.progress import track_progress
from featurestore.schema import features_name
from featurestore.store import Store

log = logging.getLogger(__name__)

__all__ = ["EMBED_ENCODER", "embed_run", "embedding_spec", "run_embeddings"]

#: ``encoder`` of an embedding feature set's spec.
EMBED_ENCODER = "head-embedding"
_CHUNK = 4096


def embedding_spec(run, dim: int) -> dict[str, Any]:
    """The spec of run ``run``'s embedding feature set (its fingerprint changes with the model).

    Args:
        run: a :class:`heads.predict.LoadedRun`.
        dim: the embedding width.
    """
    cfg = run.config
    return {
        "encoder": EMBED_ENCODER,
        "run_id": run.run_id,
        "run_dir": str(Path(run.run_dir).resolve()),
        "model_fingerprint": run.model_fingerprint,
        "head": getattr(cfg, "head", "mlp"),
        "fusion": cfg.fusion,
        "normalize": cfg.normalize,
        "source_features": {e: run.features[e].get("fingerprint") for e in cfg.encoders},
        "dim": int(dim),
        "pooling": "fused projection (the classifier's input)",
    }


def run_embeddings(store: Store, run, clip_ids: list[str]) -> tuple[list[str], np.ndarray]:
    """The fused projections of ``clip_ids`` under a loaded run, read as ``emofs predict``
    reads them: a clip with some of the run's feature sets is embedded from those (the
    missing ones masked, as the head was trained with them missing; a ``--require-all``
    run needs all), a clip with none is left out, and ``--normalize`` runs z-score each
    group over the clips given here.

    Returns:
        ``(kept clip ids, (N, F) float32)``.
    """
    import torch

    from featurestore.reader import batch_loader

    from .predict import group_column, run_features
    from .presence import batch_presence

    encoders = run.config.encoders
    kept, present, _, dataset = run_features(store, run, clip_ids, True, group_column(store, run, clip_ids))
    if not present.all():
        log.warning(f"{int((~present).sum())} of {len(clip_ids)} clips lack "
                    f"{'one' if run.config.require_all else 'every one'} of the run's feature sets "
                    f"({', '.join(encoders)}) and get no embedding")
    if not kept:
        return [], np.zeros((0, 0), dtype=np.float32)
    out = []
    run.head.eval()
    with torch.inference_mode():
        for batch in batch_loader(dataset, 1024):
            fused, _ = run.head.fuse([batch[e] for e in encoders], batch_presence(batch, encoders))  # (B, F)
            out.append(fused.float().numpy())
    return kept, np.concatenate(out).astype(np.float32)  # (N, F)


def embed_run(
    store: Store,
    run_dir: str | Path,
    *,
    where: str | None = None,
    name: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Write run ``run_dir``'s fused projection of the selected clips as a feature set.

    Args:
        store: the store holding the run's feature sets (and receiving the new one).
        run_dir: a head run directory (``emofs train head``).
        where: SQL filter over clip columns (default: every clip).
        name: feature-set name (default ``<run id>-emb``).
        progress: show a progress bar.

    Returns:
        ``{"feature_set", "rows", "dim", "version", "run_id", "model_fingerprint",
        "skipped"}`` (``skipped``: selected clips lacking one of the run's feature sets).

    Raises:
        InputError: a bad name, no clip selected, or no selected clip has the run's
            feature sets; the run's errors from :func:`heads.predict.load_run`.
    """
    from featurestore.features import write_features

    from .predict import load_run

    run = load_run(run_dir)
    name = name or f"{run.run_id}-emb"
    features_name(name)  # validates the name before any work
    if name in run.config.encoders:
        raise InputError(f"--name {name!r} is one of the run's input feature sets: pick another name")
    ids = store.clips(where=where, columns=["clip_id"])["clip_id"].to_list()
    if not ids:
        raise InputError("no clips selected" + (f" by --where {where!r}" if where else "") + ": loosen --where")
    kept, vectors = run_embeddings(store, run, ids)  # (N, F)
    if not kept:
        raise InputError(f"none of the {len(ids)} selected clips has the run's feature sets "
                         f"({', '.join(run.config.encoders)}): run `emofs extract` first")
    spec = embedding_spec(run, vectors.shape[1])
    version = None
    with track_progress(len(kept), f"embedding with {run.run_id}", enabled=progress) as advance:
        for start in range(0, len(kept), _CHUNK):
            version = write_features(store, name, kept[start:start + _CHUNK], vectors[start:start + _CHUNK],
                                     spec, dtype="float32")
            advance(min(_CHUNK, len(kept) - start))
    return {"feature_set": name, "rows": len(kept), "dim": int(vectors.shape[1]), "version": version,
            "run_id": run.run_id, "model_fingerprint": run.model_fingerprint, "skipped": len(ids) - len(kept)}
