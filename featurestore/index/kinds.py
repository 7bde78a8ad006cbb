"""FAISS index kinds: creation, adding rows, search-parameter tuning and the GPU copy.

Kinds: ``flat`` (exact ``IndexFlatIP``), ``ivf`` (``IndexIVFFlat``, ``nlist ~ 4 sqrt(N)``,
``nprobe`` tuned to a recall target), ``hnsw`` (``IndexHNSWFlat`` inner product,
``efSearch`` tuned), and ``auto`` which picks by size. ``faiss`` is imported lazily.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from ..progress import track_progress

if TYPE_CHECKING:
    from .config import IndexConfig

log = logging.getLogger(__name__)

__all__ = [
    "KINDS",
    "auto_kind",
    "new_index",
    "train_index",
    "add_vectors",
    "search_param_name",
    "set_search_param",
    "tune_search",
    "to_gpu",
]

KINDS = ("auto", "flat", "ivf", "hnsw")
#: ``auto`` uses exact search up to this many rows and IVF past it. IVF beat HNSW in
#: bench/bench_index.py at both 100k (0.12 vs 0.31 ms p50, recall 0.999 vs 0.984) and 1M
#: rows (0.46 ms, recall 1.0 vs 7.0 ms, recall 0.92 at efSearch 1024) on 2 cores.
_AUTO_FLAT_MAX = 20_000
_ADD_BATCH = 20_000
_TUNE_QUERIES = 200
_TUNE_MARGIN = 0.02
#: IVF k-means trains on at most this many rows per list.
_TRAIN_PER_LIST = 64
#: ... and on at least this many (faiss's own floor: fewer prints a warning from C++), so
#: ``nlist`` is clamped to ``rows // 39`` (at least 1).
_MIN_PER_LIST = 39


def auto_kind(n: int) -> str:
    """The kind ``auto`` picks for ``n`` rows: exact when small, else IVF."""
    return "flat" if n <= _AUTO_FLAT_MAX else "ivf"


def _default_nlist(n: int) -> int:
    return max(1, min(int(round(4 * math.sqrt(n))), n // _MIN_PER_LIST))


def new_index(kind: str, dim: int, n: int, config: IndexConfig, params: dict[str, Any]):
    """An empty inner-product FAISS index of ``kind`` (``flat``, ``ivf`` or ``hnsw``).

    An IVF ``nlist`` (``config.nlist`` or ``4 sqrt(n)``) is clamped to ``n // 39`` (at least 1,
    with a warning and ``params["nlist_requested"]`` when the user asked for more), so
    k-means always has the rows per list faiss wants.

    Args:
        kind: a concrete kind (not ``auto``).
        dim: vector dimension.
        n: rows it will hold (sizes the IVF lists).
        config: the build config (``nlist``, ``hnsw_m``, ``ef_construction``).
        params: updated in place with the build parameters chosen (``nlist``, ``M``, ...).

    Returns:
        The FAISS index (an IVF index still needs :func:`train_index`).
    """
    import faiss

    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = config.ef_construction
        params.update(M=config.hnsw_m, efConstruction=config.ef_construction)
        return index
    nlist = config.nlist or _default_nlist(n)
    most = max(1, n // _MIN_PER_LIST)
    if nlist > most:  # k-means needs >= 39 rows a list (faiss would print a warning to stderr)
        log.warning(f"--nlist {nlist} is more IVF lists than {n} rows can train ({_MIN_PER_LIST} rows "
                    f"a list): using {most}")
        params.update(nlist_requested=nlist)
        nlist = most
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.max_points_per_centroid = _TRAIN_PER_LIST  # k-means on <= 64 rows per list
    # one list over fewer than 39 rows (a tiny store): its centroid is their mean, no warning
    index.cp.min_points_per_centroid = max(1, min(_MIN_PER_LIST, n // nlist))
    index.cp.niter = 15
    params.update(nlist=nlist)
    return index


def train_index(index, kind: str, vectors: np.ndarray, description: str = "index") -> None:
    """Train an IVF index's lists on (a seeded sample of) ``vectors``; no-op for others.

    Args:
        index: from :func:`new_index`.
        kind: its kind.
        vectors: ``(N, D)`` float32 rows to be indexed.
        description: what to call the index in the log line.
    """
    if kind != "ivf":
        return
    train = vectors
    cap = _TRAIN_PER_LIST * index.nlist
    if len(vectors) > cap:
        train = vectors[np.random.default_rng(0).choice(len(vectors), cap, replace=False)]  # (cap, D)
    log.info(f"{description}: training IVF ({index.nlist} lists) on {len(train)} rows")
    index.train(train)


def add_vectors(index, vectors: np.ndarray, description: str, progress: bool) -> None:
    """Add ``(N, D)`` float32 ``vectors`` to ``index`` in batches, reporting progress."""
    n = vectors.shape[0]
    with track_progress(n, description, enabled=progress, unit="rows") as advance:
        for start in range(0, n, _ADD_BATCH):
            chunk = vectors[start : start + _ADD_BATCH]  # (B, D)
            index.add(chunk)
            advance(chunk.shape[0])


def search_param_name(kind: str) -> str | None:
    """The tuned search parameter of ``kind`` (``nprobe``, ``efSearch``; None for flat)."""
    return {"ivf": "nprobe", "hnsw": "efSearch"}.get(kind)


def set_search_param(index, kind: str, value: int) -> None:
    """Set ``index``'s search parameter (:func:`search_param_name`) to ``value``."""
    if kind == "ivf":
        index.nprobe = int(value)
    elif kind == "hnsw":
        index.hnsw.efSearch = int(value)


def tune_search(index, kind: str, vectors: np.ndarray, target: float,
                params: dict[str, Any]) -> None:
    """Pick the smallest nprobe / efSearch whose recall@10 (self excluded) meets ``target``.

    The sample queries are rows of the index (their own row excluded); unseen queries
    score slightly lower, so the sample must clear ``target + 0.02``. The chosen value
    is set on ``index`` and stored in ``params`` (with ``tuned_recall_at_10``).

    Args:
        index: a filled index.
        kind: its kind (flat needs no tuning).
        vectors: ``(N, D)`` the rows it holds.
        target: recall@10 target in ``(0, 1]``.
        params: updated in place.
    """
    import faiss

    name = search_param_name(kind)
    if name is None:
        return
    n = vectors.shape[0]
    k = min(10, n - 1)
    if k < 1:
        set_search_param(index, kind, 16)
        params[name] = 16
        return
    rng = np.random.default_rng(0)
    rows = rng.choice(n, size=min(_TUNE_QUERIES, n), replace=False)
    queries = vectors[rows]  # (Q, D)
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    _, truth = exact.search(queries, k + 1)  # (Q, k+1)
    truth_sets = [set(t[t != r][:k]) for t, r in zip(truth, rows)]
    if kind == "ivf":
        candidates = [c for c in (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512,
                                  1024, 2048, 4096) if c < index.nlist] + [index.nlist]
    else:
        candidates = [16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 1024]
    chosen, recall = candidates[-1], 0.0
    for value in candidates:
        set_search_param(index, kind, value)
        _, found = index.search(queries, k + 1)  # (Q, k+1)
        hits = sum(len(truth_sets[i] & set(f[f != r][:k])) for i, (f, r) in enumerate(zip(found, rows)))
        recall = hits / max(1, sum(len(t) for t in truth_sets))
        chosen = value
        if recall >= min(1.0, target + _TUNE_MARGIN):
            break
    set_search_param(index, kind, chosen)
    params[name] = int(chosen)
    params["tuned_recall_at_10"] = round(float(recall), 4)


def to_gpu(index, kind: str):
    """A GPU copy of ``index`` when faiss sees a GPU (flat and ivf), else None."""
    import faiss

    get_num_gpus = getattr(faiss, "get_num_gpus", None)
    if get_num_gpus is None or get_num_gpus() < 1 or kind == "hnsw":
        return None
    try:
        return faiss.index_cpu_to_all_gpus(index)
    except (RuntimeError, AttributeError) as exc:  # unsupported kind / build
        log.warning(f"could not move the index to the GPU ({str(exc).splitlines()[0]}): searching on CPU")
        return None
