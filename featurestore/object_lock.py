"""A cross-process, cross-machine write lock on S3: a lease object made with conditional puts.

``<store>/.emofs-write.lock`` holds ``{"owner", "host", "pid", "expires"}``. To take the
lock a writer creates it with ``If-None-Match: *`` (only one create of a missing key
succeeds); while it holds it, a heartbeat thread pushes ``expires`` forward with
``If-Match: <etag>`` (fails if someone else replaced it); it releases with a conditional
delete. A lock whose ``expires`` has passed was left by a dead writer: the next writer
replaces it with ``If-Match`` on the ETag it read, so two waiters never both take it over.
``expires`` is wall-clock time: hosts sharing a store need clocks within a few seconds
(NTP), far less than ``ttl``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid

from .errors import StoreError
from .remote import diagnose, s3_client, split_bucket

__all__ = ["ObjectLease", "LEASE_TTL_S"]

log = logging.getLogger(__name__)

#: Seconds a lease lasts without a heartbeat (renewed every third of it).
LEASE_TTL_S = 30.0
_POLL_S = 0.05
_ANNOUNCE_AFTER_S = 2.0


class ObjectLease:
    """Exclusive lease on one S3 object (not reentrant: :class:`WriteLock` nests it).

    Args:
        uri: ``s3://bucket/path/.emofs-write.lock``.
        timeout: seconds to wait for another writer before giving up.
        ttl: seconds a lease lasts without a heartbeat.
    """

    def __init__(self, uri: str, *, timeout: float = 600.0, ttl: float = LEASE_TTL_S):
        self.uri = uri
        self.bucket, self.key = split_bucket(uri)
        self.timeout, self.ttl = timeout, ttl
        self._client = None
        self._etag: str | None = None
        self._stop: threading.Event | None = None
        self._beat: threading.Thread | None = None
        self.lost = False

    @property
    def client(self):
        if self._client is None:
            self._client = s3_client()
        return self._client

    def _body(self) -> bytes:
        return json.dumps({"owner": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid(),
                           "expires": time.time() + self.ttl}).encode()

    def acquire(self) -> None:
        """Take the lease, waiting up to ``timeout`` for another writer.

        Raises:
            StoreError: another writer held it for ``timeout`` s, or the bucket refused.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        start, announced = time.monotonic(), False
        while True:
            try:
                self._etag = self.client.put_object(Bucket=self.bucket, Key=self.key, Body=self._body(),
                                                    IfNoneMatch="*")["ETag"]
                break
            except ClientError as exc:
                if _code(exc) not in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
                    raise StoreError(f"cannot take the write lock {self.uri}: {diagnose(self.uri, str(exc))}") from None
                if self._take_over_expired():
                    break
            except BotoCoreError as exc:
                raise StoreError(f"cannot take the write lock {self.uri}: {diagnose(self.uri, str(exc))}") from None
            waited = time.monotonic() - start
            if waited > self.timeout:
                raise StoreError(f"another emofs process has held the write lock {self.uri} for "
                                 f"{self.timeout:.0f}s: wait for it to finish, or stop it")
            if not announced and waited > _ANNOUNCE_AFTER_S:
                log.info("waiting for another emofs process writing to %s", self.uri.rsplit("/", 1)[0])
                announced = True
            time.sleep(_POLL_S)
        self.lost = False
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, args=(self._stop,), daemon=True,
                                      name="emofs-lock-heartbeat")
        self._beat.start()

    def _take_over_expired(self) -> bool:
        """Replace the lock object if its lease has expired (conditional on its ETag)."""
        from botocore.exceptions import ClientError

        try:
            got = self.client.get_object(Bucket=self.bucket, Key=self.key)
            held = json.loads(got["Body"].read() or b"{}")
        except ClientError as exc:
            return False if _code(exc) in ("NoSuchKey", "404") else _raise(self.uri, exc)
        except ValueError:
            held, got = {"expires": 0}, got
        if float(held.get("expires", 0)) > time.time():
            return False
        try:
            self._etag = self.client.put_object(Bucket=self.bucket, Key=self.key, Body=self._body(),
                                                IfMatch=got["ETag"])["ETag"]
        except ClientError:
            return False  # another waiter took it over first
        log.warning("took over the write lock %s left by %s pid %s (lease expired)", self.uri,
                    held.get("host"), held.get("pid"))
        return True

    def _heartbeat(self, stop: threading.Event) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        while not stop.wait(self.ttl / 3):
            try:
                self._etag = self.client.put_object(Bucket=self.bucket, Key=self.key, Body=self._body(),
                                                    IfMatch=self._etag)["ETag"]
            except (ClientError, BotoCoreError) as exc:
                if isinstance(exc, ClientError) and _code(exc) in ("PreconditionFailed", "412", "NoSuchKey"):
                    self.lost = True
                    log.warning("lost the write lock %s (lease expired while held)", self.uri)
                    return
                log.debug("lock heartbeat failed, retrying: %s", exc)

    def release(self) -> None:
        """Stop the heartbeat and delete the lock object (if it is still ours)."""
        from botocore.exceptions import BotoCoreError, ClientError

        if self._stop is not None:
            self._stop.set()
            self._beat.join()
            self._stop = self._beat = None
        if self._etag is None or self.lost:
            return
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=self._etag)
        except (ClientError, BotoCoreError) as exc:  # expires on its own after ttl
            log.warning("could not delete the write lock %s: %s", self.uri, exc)
        self._etag = None


def _code(exc) -> str:
    err = exc.response.get("Error", {})
    return str(err.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode"))


def _raise(uri: str, exc) -> bool:
    raise StoreError(f"cannot read the write lock {uri}: {diagnose(uri, str(exc))}") from None
