"""Row <-> key lookups over a string column, without a Python object per row.

An index's id map (row -> clip id) and the clip metadata a search shows hold one entry per
clip: at a million clips, a ``list`` of ``str`` and a ``dict`` from id to row cost ~200 MB
of Python objects, rebuilt on every load. :class:`KeyColumn` keeps the keys as one Arrow
string column (~30 MB at 1M clips of 26-byte ids) plus 16 bytes per key of lookup
(64-bit FNV-1a hashes of 8-byte words, sorted with their rows: a binary search per lookup, a few us), and behaves like the read-only ``list`` it replaces
(``ids[row]``, ``len``, ``in``, iteration, slices, ``ids + more``). :meth:`KeyColumn.rows`
maps many keys at once (a ``where`` filter's selection) with one vectorised search.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Iterable, Iterator

import numpy as np

__all__ = ["KeyColumn", "RowOf", "hash_key", "hash_keys"]

_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_MASK = (1 << 64) - 1


def hash_key(key: str) -> int:
    """The 64-bit FNV-1a hash of ``key``'s UTF-8 bytes taken 8 at a time (little-endian
    words, the last zero-padded), as :func:`hash_keys` computes it: a few steps a key in
    Python, not one per byte. Equal hashes are told apart by comparing the keys."""
    data = key.encode()
    h = _FNV_OFFSET
    for at in range(0, len(data), 8):
        h = ((h ^ int.from_bytes(data[at : at + 8], "little")) * _FNV_PRIME) & _MASK
    return h


def hash_keys(keys) -> np.ndarray:
    """:func:`hash_key` of every string of an Arrow string array, vectorised over the
    8-byte words (one pass per word position, over the keys that long): ``(N,)`` uint64.
    A null hashes like an empty string (lookups compare the key itself)."""
    keys = _as_array(keys)
    n = len(keys)
    out = np.full(n, _FNV_OFFSET, dtype=np.uint64)
    if not n:
        return out
    offsets = np.frombuffer(keys.buffers()[1], dtype=np.int32)[keys.offset : keys.offset + n + 1]
    data = keys.buffers()[2]
    data = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
    data = np.concatenate([data, np.zeros(8, np.uint8)])  # a last word may read past the end
    starts = offsets[:-1].astype(np.int64)
    lengths = np.diff(offsets).astype(np.int64)
    if keys.null_count:
        lengths = np.where(np.asarray(keys.is_valid()), lengths, 0)
    by_length = np.argsort(-lengths, kind="stable")  # longest first
    longest = lengths[by_length]
    prime = np.uint64(_FNV_PRIME)
    lanes = np.arange(8, dtype=np.int64)
    shifts = (lanes * 8).astype(np.uint64)
    with np.errstate(over="ignore"):
        for at in range(0, int(longest[0]), 8):
            rows = by_length[: int(np.searchsorted(-longest, -at, side="left"))]  # keys longer than at
            for part in range(0, len(rows), 1 << 18):  # (B, 8) bytes at a time
                chunk = rows[part : part + (1 << 18)]
                got = data[starts[chunk, None] + at + lanes].astype(np.uint64)  # (B, 8)
                got[lanes[None, :] >= (lengths[chunk, None] - at)] = 0  # past the key's end
                word = np.bitwise_or.reduce(got << shifts, axis=1)  # (B,) little-endian
                out[chunk] = (out[chunk] ^ word) * prime  # wraps modulo 2**64
    return out


def _as_array(keys):
    """``keys`` as one Arrow string array (from a list, polars Series or chunked array)."""
    import pyarrow as pa

    if type(keys).__module__.startswith("polars"):  # a polars Series (polars not imported for others)
        keys = keys.to_arrow()
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks() if keys.num_chunks != 1 else keys.chunk(0)
    if not isinstance(keys, pa.Array):
        keys = pa.array(list(keys), pa.string())
    if pa.types.is_dictionary(keys.type):
        keys = keys.dictionary_decode()
    if not pa.types.is_string(keys.type):
        keys = keys.cast(pa.string())
    return keys


class KeyColumn(Sequence):
    """Keys in row order (an Arrow string column), with lookups by key.

    Args:
        keys: the keys, in row order (an Arrow array / chunked array, a polars Series or a
            list); a null key never matches a lookup.
    """

    def __init__(self, keys: Any):
        import pyarrow.compute as pc

        self._keys = _as_array(keys)  # (N,) in row order
        self._order: np.ndarray | None = None
        self._sorted: np.ndarray | None = None
        self._last: tuple[tuple[Any, ...], np.ndarray] | None = None
        self._pc = pc

    # ------------------------------------------------------------------ lookups
    def _index(self) -> tuple[np.ndarray, np.ndarray]:
        """The keys' 64-bit hashes sorted, and the row of each (rows of equal hashes in
        row order), built on first use: ``((N,) uint64, (N,) int64)``."""
        if self._order is None:
            hashes = hash_keys(self._keys)  # (N,)
            order = np.argsort(hashes, kind="stable")
            self._sorted, self._order = hashes[order], order.astype(np.int64)
        return self._sorted, self._order

    def row(self, key: Any) -> int | None:
        """The first row holding ``key``, or None."""
        if not isinstance(key, str):
            return None
        hashes, order = self._index()
        want = np.uint64(hash_key(key))
        at = int(np.searchsorted(hashes, want, side="left"))
        while at < len(hashes) and hashes[at] == want:  # equal hashes: rows in order
            row = int(order[at])
            if self._keys[row].as_py() == key:
                return row
            at += 1
        return None

    def lookup(self, keys: Iterable[str]) -> np.ndarray:
        """The first row of each of ``keys`` (-1 where not held), aligned with ``keys``: ``(M,)`` int64."""
        import pyarrow as pa

        if isinstance(keys, (list, tuple)) and len(keys) <= 64:  # a page of results
            return self._lookup_few(keys)
        wanted = _as_array(keys)
        out = np.full(len(wanted), -1, dtype=np.int64)
        hashes, order = self._index()
        if not len(wanted) or not len(hashes):
            return out
        at = np.searchsorted(hashes, hash_keys(wanted), side="left")  # (M,)
        at = np.minimum(at, len(hashes) - 1)
        rows = order[at]
        same = self._pc.equal(self._keys.take(pa.array(rows)), wanted).fill_null(False).to_numpy(zero_copy_only=False)
        out[same] = rows[same]
        for i in np.flatnonzero(~same):  # a hash shared by another key first (rare), or absent
            if wanted[int(i)].is_valid:
                found = self.row(wanted[int(i)].as_py())
                out[i] = -1 if found is None else found
        return out

    def _lookup_few(self, keys: Sequence[Any]) -> np.ndarray:
        """:meth:`lookup` of a few keys: hashed in Python, one search, each key compared."""
        last = self._last  # a result page is looked up twice (its paths, then its cards)
        if last is not None and last[0] == tuple(keys):
            return last[1].copy()
        out = np.full(len(keys), -1, dtype=np.int64)
        hashes, order = self._index()
        if not len(keys) or not len(hashes):
            return out
        want = np.array([hash_key(k) if isinstance(k, str) else 0 for k in keys], dtype=np.uint64)
        at = np.minimum(np.searchsorted(hashes, want, side="left"), len(hashes) - 1)  # (M,)
        rows = order[at].tolist()
        held = self._keys
        for i, (key, row) in enumerate(zip(keys, rows)):  # scalars: no Arrow kernel call (which
            if isinstance(key, str):                      # lets go of the GIL) for a few keys
                out[i] = row if held[row].as_py() == key else (-1 if (r := self.row(key)) is None else r)
        self._last = (tuple(keys), out.copy())  # one assignment: threads see either pair whole
        return out

    def rows(self, keys: Iterable[str]) -> np.ndarray:
        """Rows of the ``keys`` found (first row of each), in the order of ``keys``; keys
        not held are left out. ``(M,)`` int64."""
        found = self.lookup(keys)
        return found[found >= 0]

    def __contains__(self, key: object) -> bool:
        return self.row(key) is not None

    def index(self, key: Any, start: int = 0, stop: int | None = None) -> int:
        """``list.index``: the first row holding ``key`` (ValueError when none)."""
        row = self.row(key)
        if row is None or row < start or (stop is not None and row >= stop):
            if row is not None:  # a later duplicate may fall in range: scan that slice
                return list(self)[start:stop].index(key) + start
            raise ValueError(f"{key!r} is not in the id map")
        return row

    # ------------------------------------------------------------------ the list it replaces
    def __len__(self) -> int:
        return len(self._keys)

    def __getitem__(self, item):
        if isinstance(item, slice):
            return self._keys[item].to_pylist()
        row = int(item)
        if row < 0:
            row += len(self._keys)
        if not 0 <= row < len(self._keys):
            raise IndexError(f"row {item} out of range ({len(self._keys)} rows)")
        return self._keys[row].as_py()

    def take(self, rows: Sequence[int] | np.ndarray) -> list[str | None]:
        """The keys of ``rows`` (in that order)."""
        import pyarrow as pa

        if len(rows) <= 64:  # a page of results: scalars, no Arrow kernel call
            keys = self._keys
            return [keys[int(r)].as_py() for r in rows]
        return self._keys.take(pa.array(np.asarray(rows, dtype=np.int64))).to_pylist()

    def __iter__(self) -> Iterator[str]:
        for start in range(0, len(self._keys), 65536):  # a batch of Python strings at a time
            yield from self._keys.slice(start, 65536).to_pylist()

    def __add__(self, other: Sequence[str]) -> list[str]:
        return self.to_list() + list(other)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, KeyColumn):
            return self._keys.equals(other._keys)
        if isinstance(other, (list, tuple)):
            return len(other) == len(self) and self.to_list() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def to_list(self) -> list[str]:
        """Every key as a Python list (offline paths only: one object per row)."""
        return self._keys.to_pylist()

    def to_arrow(self):
        """The keys as an Arrow string array, in row order."""
        return self._keys

    @property
    def nbytes(self) -> int:
        """Bytes held (the keys, the sorted copy and the permutation once built)."""
        extra = 0 if self._order is None else self._order.nbytes + self._sorted.nbytes
        return self._keys.nbytes + extra

    def __repr__(self) -> str:
        return f"KeyColumn({len(self)} keys)"


class RowOf(Mapping):
    """``{key: row}`` over a :class:`KeyColumn` (the mapping ``LoadedIndex.row_of()`` was)."""

    def __init__(self, keys: KeyColumn):
        self.keys = keys

    def __getitem__(self, key: str) -> int:
        row = self.keys.row(key)
        if row is None:
            raise KeyError(key)
        return row

    def get(self, key: Any, default: Any = None) -> Any:
        row = self.keys.row(key)
        return default if row is None else row

    def __contains__(self, key: object) -> bool:
        return self.keys.row(key) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)

    def rows(self, keys: Iterable[str]) -> np.ndarray:
        """:meth:`KeyColumn.rows`."""
        return self.keys.rows(keys)
