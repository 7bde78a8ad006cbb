"""Similar clips for a clip id, a stored path or a new media file (``emofs similar``).

featurestore searches the index but runs no encoders; this job adds the one thing it
cannot do: a media file that is not in the store is extracted on the fly with the
store's specs of the index's encoders (:func:`extractors.extract_file`), and stored
too with ``add=True``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

import featurestore.index as store_index
from featurestore.errors import InputError
from featurestore.index import FileVectors, SimilarResult
from featurestore.store import Store

__all__ = ["find_similar", "similar", "extracted_file_vectors", "check_query"]


def extract_file(path: Path, encoders: list[str], store: Store, *, add: bool = False) -> dict:
    """:func:`extractors.extract_file`, imported on first use: a query that is a clip id
    or a stored path never loads the encoder package."""
    from extractors import extract_file as extract

    return extract(path, encoders, store, add=add)


def extracted_file_vectors(store: Store) -> FileVectors:
    """A ``file_vectors`` callback that extracts a media file with ``store``'s specs.

    Args:
        store: the store whose feature-set specs the encoders are rebuilt from (and
            where the file is ingested when the callback is called with ``add=True``).

    Returns:
        ``file_vectors(path, encoders, add) -> {encoder: (D,) float32 or None}``; an
        encoder that does not apply to the file's modality maps to None.
    """

    def file_vectors(path: Path, encoders: list[str], add: bool) -> dict[str, np.ndarray | None]:
        out = extract_file(path, encoders, store, add=add)
        vectors: dict[str, np.ndarray | None] = {}
        for enc in encoders:
            entry = out.get(enc)
            vector = None if entry is None else entry.get("vector")
            vectors[enc] = None if vector is None else np.asarray(vector, dtype=np.float32)  # (D,)
        return vectors

    return file_vectors


def find_similar(store: Store, query: str | Path, **kwargs: Any) -> SimilarResult:
    """The ``k`` clips most similar to ``query``, extracting a new media file if needed.

    Args:
        store: the store.
        query: a ``clip_id``, the path of a clip in the store, or a media file that is
            not in the store (extracted with the index's encoders; stored with ``add``).
        **kwargs: ``k``, ``index``, ``where``, ``include_self``, ``add``, ``warn_stale``,
            ``group`` (the query's group for a ``--normalize`` index)
            as in :func:`featurestore.index.find_similar`.

    Returns:
        A :class:`featurestore.index.SimilarResult`.

    Raises:
        IndexNotFoundError, IndexCorruptError, DimensionMismatchError, InputError (also
        for an empty ``query``).
    """
    check_query(query)
    kwargs.setdefault("file_vectors", extracted_file_vectors(store))
    return store_index.find_similar(store, query, **kwargs)


def check_query(query: str | Path) -> None:
    """Refuse an empty query (``emofs similar ""``) before it reads as the current folder.

    Raises:
        InputError: ``query`` is empty or blank.
    """
    if not str(query).strip():
        raise InputError("QUERY is empty: pass a clip_id, a stored path or a media file")


def similar(store: Store, query: str | Path, **kwargs: Any) -> Any:
    """Nearest clips to ``query`` as a polars DataFrame (see :func:`find_similar`)."""
    return find_similar(store, query, **kwargs).frame
