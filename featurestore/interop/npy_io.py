"""Fast, pickle-free reading and writing of small ``.npy`` files.

``np.load`` spends most of its time on small files in Python overhead (zip sniffing,
``ast.literal_eval`` of the header, several reads). Feature folders hold thousands of
4 KiB files, so :func:`read_npy` reads a file with one ``read`` call, parses the
header with a regular expression (falling back to :mod:`numpy.lib.format` for
anything unusual) and wraps the payload with ``np.frombuffer``. Object arrays are
refused from the header alone: emofs never unpickles anything.
"""

from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

__all__ = ["NpyHeader", "NpyError", "read_npy_head", "read_npy_header", "read_npy", "write_npy", "read_many"]

_MAGIC = b"\x93NUMPY"
# What np.save writes: {'descr': '<f4', 'fortran_order': False, 'shape': (1, 1024), }
_HEADER_RE = re.compile(
    r"^\{'descr': '(?P<descr>[^']+)', 'fortran_order': (?P<fortran>True|False), "
    r"'shape': \((?P<shape>[0-9, ]*)\), \}\s*$"
)
#: Bytes read up front: the whole of a typical utterance-level file (1024 x float32).
_FIRST_READ = 1 << 16
_FLOAT_KINDS = {"f"}


class NpyError(ValueError):
    """A file is not a usable ``.npy`` feature array (the message says why)."""


@dataclass(frozen=True)
class NpyHeader:
    """What a ``.npy`` header says about its array.

    Attributes:
        dtype: the array dtype (never an object dtype).
        shape: the array shape.
        fortran_order: whether the payload is column-major.
        offset: byte offset of the payload in the file.
        count: number of elements.
        nbytes: payload size in bytes.
    """

    dtype: np.dtype
    shape: tuple[int, ...]
    fortran_order: bool
    offset: int
    count: int = field(init=False)
    nbytes: int = field(init=False)

    def __post_init__(self) -> None:
        count = 1
        for n in self.shape:
            count *= int(n)
        object.__setattr__(self, "count", count)
        object.__setattr__(self, "nbytes", count * self.dtype.itemsize)


def _parse_header(raw: bytes) -> NpyHeader:
    """Parse the magic + header at the start of ``raw`` (which must hold all of it)."""
    if len(raw) < 10 or not raw.startswith(_MAGIC):
        raise NpyError("not a .npy file (no NUMPY magic bytes)")
    major = raw[6]
    if major == 1:
        hlen, start = int.from_bytes(raw[8:10], "little"), 10
    elif major in (2, 3):
        if len(raw) < 12:
            raise NpyError("truncated .npy header")
        hlen, start = int.from_bytes(raw[8:12], "little"), 12
    else:
        raise NpyError(f"unsupported .npy format version {major}")
    if len(raw) < start + hlen:
        raise _NeedMore(start + hlen)
    text = raw[start : start + hlen].decode("utf-8" if major == 3 else "latin1")
    match = _HEADER_RE.match(text)
    if match:
        descr, fortran = match["descr"], match["fortran"] == "True"
        shape = tuple(int(p) for p in match["shape"].replace(" ", "").split(",") if p)
    else:  # hand-written or older headers: numpy's own (safe) literal parser
        try:
            meta = ast.literal_eval(text)
            descr, fortran, shape = meta["descr"], bool(meta["fortran_order"]), tuple(meta["shape"])
        except (ValueError, SyntaxError, KeyError, TypeError) as exc:
            raise NpyError(f"unreadable .npy header ({exc})") from exc
    if not isinstance(descr, str):
        raise NpyError("structured array (a record dtype), not a feature array")
    try:
        dtype = np.dtype(descr)
    except TypeError as exc:
        raise NpyError(f"unknown dtype {descr!r} in the .npy header") from exc
    if dtype.hasobject:
        raise NpyError("holds Python objects (a pickled array); emofs never loads pickles")
    return NpyHeader(dtype, shape, fortran, start + hlen)


class _NeedMore(Exception):
    def __init__(self, size: int):
        self.size = size


#: Parsed headers by their raw bytes: a feature folder repeats one header thousands of times.
_HEADER_CACHE: dict[bytes, NpyHeader] = {}
_HEADER_CACHE_SIZE = 4096


def _header(raw: bytes) -> NpyHeader:
    """Parse (or look up) the header at the start of ``raw``; raises ``_NeedMore``."""
    if len(raw) >= 12 and raw[:6] == _MAGIC:
        start = 10 if raw[6] == 1 else 12
        end = start + int.from_bytes(raw[8:start], "little")
        if len(raw) < end:
            raise _NeedMore(end)
        key = raw[:end]
        header = _HEADER_CACHE.get(key)
        if header is None:
            header = _parse_header(raw)
            if len(_HEADER_CACHE) < _HEADER_CACHE_SIZE:
                _HEADER_CACHE[key] = header
        return header
    return _parse_header(raw)


def read_npy_head(path: str | os.PathLike, *, max_bytes: int = _FIRST_READ) -> tuple[NpyHeader, np.ndarray | None]:
    """Read the header of a ``.npy`` file, and its array when the file is small.

    One ``read`` of up to ``max_bytes`` serves both; a larger payload is left for
    :func:`read_npy` (the array is then None).

    Raises:
        NpyError: not a .npy file, object/structured dtype, or a truncated file.
        OSError: the file cannot be read.
    """
    return _read(path, first_read=max_bytes, whole=False)


def read_npy_header(path: str | os.PathLike) -> NpyHeader:
    """Read only the header of a ``.npy`` file (see :func:`read_npy_head`)."""
    return read_npy_head(path, max_bytes=4096)[0]


def read_npy(path: str | os.PathLike) -> np.ndarray:
    """Read a ``.npy`` file into a (read-only) array without ever unpickling.

    Raises:
        NpyError: not a .npy file, object/structured dtype, or a truncated payload.
        OSError: the file cannot be read.
    """
    return _read(path, first_read=_FIRST_READ, whole=True)[1]


def _read(path, *, first_read: int, whole: bool) -> tuple[NpyHeader, np.ndarray | None]:
    """One open: header from the first read; the payload too when ``whole`` or it fits."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        size = os.fstat(fd).st_size
        raw = os.read(fd, first_read)
        try:
            header = _header(raw)
        except _NeedMore as more:
            if more.size > size:  # never allocate what a corrupt length field claims
                raise NpyError(f"truncated .npy header (it claims {more.size} bytes, the file "
                               f"holds {size}): re-export the file") from None
            raw += _read_exactly(fd, more.size - len(raw))
            header = _header(raw)
        end = header.offset + header.nbytes
        if end > size:
            raise NpyError(_size_mismatch(header, size))
        if len(raw) < end:
            if not whole and len(raw) == first_read:
                return header, None  # a large payload: the caller reads it when needed
            raw += _read_exactly(fd, end - len(raw))
    finally:
        os.close(fd)
    return header, _array(raw, header)


def _size_mismatch(header: NpyHeader, size: int) -> str:
    """The reason for a file whose header promises more bytes than it holds."""
    held = max(size - header.offset, 0)
    shape = "(" + ", ".join(str(n) for n in header.shape) + ("," if len(header.shape) == 1 else "") + ")"
    return (f"header claims shape {shape} {header.dtype} ({_human(header.nbytes)}) but the file "
            f"holds {_human(held)} of data: it is truncated or its header is corrupt; re-export it")


def _human(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"


def _read_exactly(fd: int, size: int) -> bytes:
    chunks, left = [], size
    while left > 0:
        chunk = os.read(fd, left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _array(raw: bytes, header: NpyHeader) -> np.ndarray:
    if len(raw) < header.offset + header.nbytes:
        raise NpyError(
            f"truncated .npy payload ({max(len(raw) - header.offset, 0)} of {header.nbytes} bytes)"
        )
    flat = np.frombuffer(raw, dtype=header.dtype, count=header.count, offset=header.offset)
    return flat.reshape(header.shape, order="F" if header.fortran_order else "C")


_WRITE_HEADERS: dict[tuple[str, tuple[int, ...]], bytes] = {}


def write_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` byte for byte as ``np.save`` would (never pickled).

    The header numpy writes for a (dtype, shape) is produced once by numpy itself and
    reused, so thousands of small files cost one ``open``/``write`` each.
    """
    array = np.ascontiguousarray(array)
    if array.dtype.hasobject:
        raise NpyError("refusing to write an object array (it would need pickling)")
    key = (array.dtype.str, array.shape)
    header = _WRITE_HEADERS.get(key)
    if header is None:
        import io

        from numpy.lib import format as npformat

        buffer = io.BytesIO()
        npformat.write_array(buffer, np.empty(array.shape, array.dtype), allow_pickle=False)
        header = buffer.getvalue()[: len(buffer.getvalue()) - array.nbytes]
        if len(_WRITE_HEADERS) < _HEADER_CACHE_SIZE:
            _WRITE_HEADERS[key] = header
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), 0o666)
    try:
        data = header + array.tobytes()
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
    finally:
        os.close(fd)


def read_many(
    paths: Sequence[str | os.PathLike],
    reader: Callable[[str | os.PathLike], object],
    *,
    workers: int = 8,
    chunk: int = 256,
    advance: Callable[[int], None] | None = None,
) -> list[object]:
    """Apply ``reader`` to every path in a thread pool, in order.

    Each result is the reader's return value or the exception it raised (so one bad
    file never stops the others). Files are handed out in chunks to keep the pool's
    per-task overhead below the cost of reading a 4 KiB file.
    """
    from concurrent.futures import ThreadPoolExecutor

    def run(block: Sequence) -> list[object]:
        out: list[object] = []
        for p in block:
            try:
                out.append(reader(p))
            except (NpyError, OSError, ValueError) as exc:
                out.append(exc)
        return out

    blocks = [paths[i : i + chunk] for i in range(0, len(paths), chunk)]
    results: list[object] = []
    if workers <= 1 or len(blocks) <= 1:
        for block in blocks:
            results.extend(run(block))
            if advance:
                advance(len(block))
        return results
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for block, out in zip(blocks, pool.map(run, blocks)):
            results.extend(out)
            if advance:
                advance(len(block))
    return results
