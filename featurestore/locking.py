"""One writer at a time per store: an inter-process lock around every read-modify-write.

Lance makes each commit atomic, but an upsert is a read (which keys exist?) followed by a
write: two processes upserting the same new key at once both insert it (duplicates), and
two ingests allocating clip ids at once hand the same id to two files. Holding the store's
write lock across the read and the commit makes those sections serial; readers never
wait (they see the last committed version of each dataset).

Local stores lock ``<store>/.emofs-write.lock`` with ``flock`` (released by the kernel
when the process dies, so a killed writer never leaves a stale lock). S3 stores lock the
object ``<store>/.emofs-write.lock`` (:mod:`featurestore.object_lock`): created with a
conditional put (``If-None-Match: *``, which S3, MinIO and moto honour), it holds a lease
that a heartbeat renews, and a lease left by a killed writer expires and is taken over
(a conditional put on its ETag), so a dead process blocks others for at most ``ttl``.
Other object stores (gs://, az://) have no such lock here; there each dataset commit is
still atomic (Lance's conditional puts) and a writer is expected to run alone.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import StoreError

__all__ = ["WriteLock", "LOCK_FILE"]

log = logging.getLogger(__name__)

LOCK_FILE = ".emofs-write.lock"
#: Say that we wait after this long, then keep waiting up to ``timeout``.
_ANNOUNCE_AFTER_S = 2.0
_POLL_S = 0.05


class WriteLock:
    """Reentrant (per process) exclusive lock of one local store directory.

    Args:
        root: the store directory (created if missing), or None for a store without
            a lockable file system (object stores): then :meth:`hold` only nests.
        timeout: seconds to wait for another process before giving up.
    """

    def __init__(self, root: str | os.PathLike | None, *, timeout: float = 600.0):
        from .remote import is_remote

        remote = root is not None and is_remote(str(root))
        self.path = None if root is None or remote else Path(root) / LOCK_FILE
        self.timeout = timeout
        self._guard = threading.RLock()
        self._depth = 0
        self._fd: int | None = None
        self._lease = None
        if remote and str(root).startswith(("s3://", "s3a://")):
            from .object_lock import ObjectLease

            self._lease = ObjectLease(f"{str(root).rstrip('/')}/{LOCK_FILE}", timeout=timeout)

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Hold the lock for the block (nested holds in one process are free)."""
        with self._guard:
            if self._depth == 0 and self.path is not None:
                self._fd = self._acquire()
            elif self._depth == 0 and self._lease is not None:
                self._lease.acquire()
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0 and self._fd is not None:
                    self._release(self._fd)
                    self._fd = None
                elif self._depth == 0 and self._lease is not None:
                    self._lease.release()

    def check_writable(self) -> None:
        """Fail now, in one line, if this process could not write to the store.

        Cheap and never waits for another writer: creates the store directory and the
        lock file if missing, and checks that the directory is writable.

        Raises:
            StoreError: the store directory (or its parent) is read-only or not ours.
        """
        if self.path is None:
            return
        os.close(self._open())
        if not os.access(self.path.parent, os.W_OK | os.X_OK):
            raise self._unwritable("permission denied")

    def _open(self) -> int:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise self._unwritable(exc.strerror or str(exc)) from exc

    def _unwritable(self, why: str) -> StoreError:
        return StoreError(
            f"cannot write to the store at {self.path.parent} ({why}): check that it is "
            "writable (not a read-only mount) and that you own it, or pass another --store"
        )

    def _acquire(self) -> int:
        import fcntl

        fd = self._open()
        start, announced = time.monotonic(), False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                waited = time.monotonic() - start
                if waited > self.timeout:
                    os.close(fd)
                    raise StoreError(
                        f"another emofs process has been writing to {self.path.parent} for "
                        f"{self.timeout:.0f}s: wait for it to finish, or stop it") from None
                if not announced and waited > _ANNOUNCE_AFTER_S:
                    log.info("waiting for another emofs process writing to %s", self.path.parent)
                    announced = True
                time.sleep(_POLL_S)

    @staticmethod
    def _release(fd: int) -> None:
        import fcntl

        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
