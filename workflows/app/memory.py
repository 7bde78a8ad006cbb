"""The app server's memory: allocator settings, the warm-up, and giving freed pages back.

A server at a million clips holds the index (its IVF lists), the clip columns a result
shows and their lookups; everything else it reads once (the index file, the clips table
while columns are built) is freed again, but allocators keep freed pages for reuse, so
the resident size would stay at the peak of those one-off reads. :func:`tune_allocator`
makes large blocks go back to the system when freed (glibc: a fixed mmap threshold, two
arenas; Arrow: the system allocator instead of mimalloc's retained pages),
:func:`warm` reads what a search needs once, in one thread, before the first search
needs it, and :func:`release_memory` returns what is free afterwards (also when a later
rebuild, after an ingest or a correction, made the process grow: :func:`maybe_release`).
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["tune_allocator", "release_memory", "maybe_release", "warm", "rss_bytes"]

_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
#: Blocks from this size on are mapped on their own and unmapped when freed (glibc's own
#: threshold grows with the largest block freed, up to 32 MiB, so a server that read a big
#: table once kept it); a fixed value also fixes the trim threshold.
MMAP_THRESHOLD = 256 * 1024
#: A process that grew this much since its last release gives free pages back.
GROWTH_BYTES = 64 * 2**20
_CHECK_EVERY = 256

_state = {"calls": 0, "baseline": 0}
_lock = threading.Lock()


def _libc() -> Any:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): nothing to tune or trim
        return None


def tune_allocator() -> None:
    """Give large freed blocks back to the system (glibc, Arrow); call before the server's
    threads start. No-op where the allocator is not glibc."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        libc.mallopt(_M_ARENA_MAX, 2)  # one arena per thread kept each its own free pages
    try:
        import pyarrow as pa

        pa.set_memory_pool(pa.system_memory_pool())  # mimalloc keeps freed segments around
    except (ImportError, AttributeError):
        pass


def rss_bytes() -> int:
    """This process's resident size (0 where ``/proc`` is not there)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def release_memory() -> int:
    """Collect garbage and return free heap pages to the system; the resident size after."""
    gc.collect()
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
    try:
        import pyarrow as pa

        pa.default_memory_pool().release_unused()
    except (ImportError, AttributeError):
        pass
    with _lock:
        _state["baseline"] = rss_bytes()
    return _state["baseline"]


def maybe_release() -> None:
    """:func:`release_memory` when the process grew by :data:`GROWTH_BYTES` since the last
    release (looked at every few hundred calls: a cache rebuilt after a store change)."""
    _state["calls"] += 1
    if _state["calls"] % _CHECK_EVERY:
        return
    if rss_bytes() - _state["baseline"] > GROWTH_BYTES:
        release_memory()


def warm(store, index: str | None = None) -> None:
    """Read what a search of ``store`` needs (the default index and its id lookups, the
    clip columns results show), then :func:`release_memory`. Errors are left to the
    requests that meet them (logged here at debug level)."""
    from featurestore.errors import EmofsError
    from featurestore.index import load_index, resolve_index_name
    from featurestore.index.neighbours import clip_meta

    from .queries import card_facts
    from .spaces import default_index

    start = time.perf_counter()
    try:
        name = index or default_index(store) or resolve_index_name(store, None)[0]
        loaded = load_index(store, name)
        loaded.ensure_direct_map()
        loaded.row_of().get("")  # builds the id lookup
        meta = clip_meta(store)
        meta.ids.row("")
        card_facts(store).ids.row("")
    except (EmofsError, OSError, ValueError) as exc:
        log.debug(f"warm-up of {store.uri} stopped: {exc}")
    size = release_memory()
    gc.freeze()  # what the warm-up made lives on: later full collections skip it
    log.info(f"warm in {time.perf_counter() - start:.1f}s, {size / 2**20:.0f} MB resident")


def warm_in_background(store) -> threading.Thread:
    """:func:`warm` in a daemon thread (the server answers meanwhile; a first search waits
    for the index it needs instead of reading it a second time)."""
    thread = threading.Thread(target=warm, args=(store,), name="emofs-warm", daemon=True)
    thread.start()
    return thread
