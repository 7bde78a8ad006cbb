"""A full disk is one line naming the path and the space needed, never a traceback.

Writes fail with ``ENOSPC`` in several shapes: Python's ``OSError(28, ...)``, PyArrow's
``OSError: [Errno 28] Error writing bytes to file``, pylance's ``OSError: LanceError(IO):
No space left on device (os error 28)``. :func:`is_disk_full` recognises all of them (and
``EDQUOT``, a quota that is full); :func:`disk_full_error` turns one into a
:class:`~featurestore.errors.DiskFullError` that says where, how much the write needed
(where known) and how much is free; :func:`disk_full_as_error` does both around a write and
removes its temporaries first. The CLI maps whatever still escapes the library
(``commands.common``) with :func:`disk_full_error` too, naming the store.

Only the standard library is imported here (the CLI's error path stays cheap).
"""

from __future__ import annotations

import errno
import os
import shutil
from contextlib import contextmanager
from typing import Iterable, Iterator

from .errors import DiskFullError

__all__ = ["is_disk_full", "disk_full_error", "disk_full_as_error", "free_space", "human_bytes"]

_CODES = (errno.ENOSPC, errno.EDQUOT)
_PHRASES = ("no space left on device", "os error 28", "errno 28", "disk quota exceeded",
            "os error 122")


def is_disk_full(exc: BaseException) -> bool:
    """True when ``exc`` (or an exception it was raised ``from``) says the disk is full.

    Only explicit causes count, not the exception being handled when ``exc`` was raised:
    an error raised while reporting a full disk is not itself a full disk.
    """
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, DiskFullError):
            return True
        if isinstance(exc, OSError) and exc.errno in _CODES:
            return True
        if isinstance(exc, Exception) and any(p in str(exc).lower() for p in _PHRASES):
            return True
        exc = exc.__cause__
        seen += 1
    return False


def human_bytes(n: float | None) -> str:
    """``n`` bytes as ``"12.3 MiB"`` (``"?"`` when unknown)."""
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover


def _local(path: str) -> str | None:
    if path.startswith("file://"):
        return path[len("file://"):]
    return None if "://" in path else path


def free_space(path: str) -> tuple[int, int] | None:
    """``(free, total)`` bytes of the disk holding ``path`` (its nearest existing parent);
    None for an object-store URI or when it cannot be told."""
    local = _local(str(path))
    if local is None:
        return None
    probe = os.path.abspath(local)
    while probe and not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    try:
        usage = shutil.disk_usage(probe)
    except OSError:
        return None
    return usage.free, usage.total


def disk_full_error(path: str, needed: int | None = None) -> DiskFullError:
    """The :class:`DiskFullError` for a write to ``path`` that ran out of space.

    Args:
        path: the file or store written (as the user knows it).
        needed: bytes the write needed, when known.
    """
    space = free_space(path)
    free = None if space is None else space[0]
    if needed is not None:
        short = needed if free is None or free >= needed else needed - free
        what = (f"it needs {human_bytes(needed)}"
                + ("" if free is None else f", {human_bytes(free)} is free")
                + f"; free at least {human_bytes(short)}")
    elif free is not None:
        what = (f"{human_bytes(free)} of {human_bytes(space[1])} is free, less than the write "
                "needs; free some space")
    else:
        what = "the disk is full; free some space"
    return DiskFullError(f"no space left on device writing {path}: {what} (or use --store on a "
                         "bigger disk) and run the command again; what was written before is intact")


def _remove_quietly(path: str) -> None:
    local = _local(path)
    try:
        if local is not None:
            if os.path.isfile(local):
                os.remove(local)
        else:  # an object store: through pyarrow
            from .remote import filesystem

            fs, key = filesystem(path)
            fs.delete_file(key)
    except Exception:  # noqa: BLE001 - best effort: the error that matters is the disk
        pass


@contextmanager
def disk_full_as_error(path: str, needed: int | None = None,
                       temporaries: Iterable[str] = ()) -> Iterator[list[str]]:
    """Turn a full disk inside the block into :class:`DiskFullError`, removing temporaries.

    Args:
        path: what the block writes (named in the message).
        needed: bytes it writes, when known.
        temporaries: files to remove when the disk fills up; the block may also append
            to the list it is given.

    Raises:
        DiskFullError: the block failed because the disk (or a quota) is full.
    """
    leftovers = list(temporaries)
    try:
        yield leftovers
    except DiskFullError:
        for tmp in leftovers:
            _remove_quietly(tmp)
        raise
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        for tmp in leftovers:
            _remove_quietly(tmp)
        raise disk_full_error(path, needed) from exc
