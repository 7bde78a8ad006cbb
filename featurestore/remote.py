"""A fast reachability probe for object-store stores (``s3://``, ``gs://``, ``az://`` ...).

Lance reports an unreachable bucket as a ``ValueError`` that reads like any other open
failure, after retrying for many seconds; the store used to take it for "no store here"
(``emofs info`` said "run emofs ingest first") or let it out as a traceback (``emofs
ingest``). :func:`check_remote` opens ``<store>/clips.lance`` once with short timeouts and
no retries when a remote store is opened, and turns a failure into one
:class:`~featurestore.errors.StoreError` line that says what is wrong (region,
credentials, endpoint, bucket) and what to set. A store that is reachable but empty
passes: commands that need one say so themselves.

It is also the ONE place that reads the object-store settings from the environment
(:func:`object_store_settings`): Lance gets them as ``storage_options``
(:func:`lance_options`), PyArrow as a configured filesystem (:func:`filesystem`, used for
index files, media in a bucket and listings), and the commit lock as an S3 client
(:func:`s3_client`), so the three never disagree about endpoint, region, ``allow_http`` or
credentials. Settings (S3 and S3-compatible servers)::

    AWS_ENDPOINT_URL       e.g. http://127.0.0.1:9000 for MinIO / moto (default: AWS)
    AWS_REGION             or AWS_DEFAULT_REGION (required by AWS; any value for most servers)
    AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN   (or AWS_PROFILE)
    AWS_ALLOW_HTTP=true    needed for a plain-http endpoint (Lance refuses http otherwise)
"""

from __future__ import annotations

import os
import re
from typing import Any

from .errors import StoreError

__all__ = ["check_remote", "PROBE_OPTIONS", "is_remote", "object_store_settings", "lance_options",
           "filesystem", "s3_client", "split_bucket"]

#: Lance storage options of the probe: fail in seconds rather than retry for minutes.
PROBE_OPTIONS = {
    "client_max_retries": "0",
    "client_retry_timeout": "2",
    "connect_timeout": "3s",
    "timeout": "5s",
}

#: Store URIs already found reachable in this process (probed once each).
_REACHABLE: set[str] = set()


def check_remote(uri: str) -> None:
    """Raise :class:`StoreError` (one line) when the object store behind ``uri`` cannot be
    used; return at once for local paths and for stores already found reachable.

    Args:
        uri: a store URI (``s3://bucket/store``); local paths and ``file://`` are skipped.

    Raises:
        StoreError: no region or credentials, an endpoint that refuses or times out, a
            missing bucket, access denied, or a scheme Lance does not know.
    """
    if not is_remote(uri) or uri in _REACHABLE:
        return
    import lance

    try:
        lance.dataset(f"{uri}/clips.lance", storage_options={**(lance_options(uri) or {}), **PROBE_OPTIONS})
    except (ValueError, OSError) as exc:
        text = str(exc)
        if not _is_not_found(text):
            raise StoreError(f"cannot reach store {uri}: {diagnose(uri, text)}") from None
    _REACHABLE.add(uri)


def _is_not_found(text: str) -> bool:
    """Lance's "no dataset at this path" (the bucket answered): the store is just empty."""
    return "was not found" in text and "Server returned" not in text


def diagnose(uri: str, text: str) -> str:
    """What is wrong and what to set, from Lance's error text about ``uri``."""
    scheme, _, rest = uri.partition("://")
    bucket = rest.split("/", 1)[0]
    low = text.lower()
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT")
    if "no object store provider found for scheme" in low:
        return (f"Lance does not know the scheme {scheme + '://'!r}: use s3://, gs://, az:// "
                "or a local directory")
    if "resolve region" in low:
        return (f"no AWS region for bucket {bucket!r}: set AWS_REGION (or AWS_DEFAULT_REGION), "
                "or AWS_ENDPOINT_URL for an S3-compatible server")
    if "nosuchbucket" in low:
        return f"bucket {bucket!r} does not exist: create it or fix the --store URI"
    if "404" in low and "server returned" in low:
        return (f"the endpoint answered 404 for bucket {bucket!r}: the bucket does not exist, or "
                f"{endpoint or 'the endpoint'} is not an S3 server (check AWS_ENDPOINT_URL)")
    if "builder error" in low and (endpoint or "").startswith("http://"):
        return (f"the endpoint {endpoint} is plain http, which is refused by default: set "
                "AWS_ALLOW_HTTP=true (or use an https endpoint)")
    if any(s in low for s in ("failed to get aws credentials", "token request", "credential")):
        return f"no usable credentials for {scheme}://: {_credentials_hint(scheme)}"
    if any(s in low for s in ("403", "forbidden", "accessdenied", "invalidaccesskeyid",
                              "signaturedoesnotmatch", "401", "unauthorized")):
        code = re.search(r"<Code>([^<]+)</Code>", text)
        why = f" ({code.group(1)})" if code else ""
        return f"access to bucket {bucket!r} denied{why}: {_credentials_hint(scheme)}"
    if "azure account name" in low or "storage account" in low:
        return "no Azure storage account: set AZURE_STORAGE_ACCOUNT_NAME (and a key or token)"
    if any(s in low for s in ("error sending request", "connect", "dns", "timed out", "timeout",
                              "resolve host", "connection refused")):
        where = endpoint or f"the default {scheme} endpoint"
        return (f"cannot connect to {where}: check the endpoint (AWS_ENDPOINT_URL), that the "
                "server is running and the network reaches it")
    return f"{_first_line(text)}: check the URI, credentials and endpoint"


def _credentials_hint(scheme: str) -> str:
    if scheme.startswith("s3"):
        return "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
    if scheme == "gs":
        return "set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file"
    if scheme in ("az", "abfss"):
        return "set AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY"
    return "check the credentials of this object store"


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    line = lines[0] if lines else "unknown error"
    return line.split(", /home/")[0].split(", /rust")[0][:300]


# --------------------------------------------------------------- settings, one place
def is_remote(uri: str) -> bool:
    """True for an object-store URI (``s3://...``), False for local paths and ``file://``."""
    return "://" in str(uri) and not str(uri).startswith("file://")


def split_bucket(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ``("bucket", "a/b")``."""
    rest = uri.split("://", 1)[1]
    bucket, _, key = rest.partition("/")
    return bucket, key.strip("/")


def object_store_settings() -> dict[str, Any]:
    """The S3 settings of this process, read from the environment (see the module doc).

    Returns:
        ``endpoint`` (str or None), ``region``, ``allow_http`` (bool), ``access_key``,
        ``secret_key``, ``session_token`` (None when unset).
    """
    env = os.environ
    allow = (env.get("AWS_ALLOW_HTTP") or "").strip().lower() in ("1", "true", "yes", "on")
    return {
        "endpoint": env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or env.get("AWS_ENDPOINT") or None,
        "region": env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
        "allow_http": allow,
        "access_key": env.get("AWS_ACCESS_KEY_ID") or None,
        "secret_key": env.get("AWS_SECRET_ACCESS_KEY") or None,
        "session_token": env.get("AWS_SESSION_TOKEN") or None,
    }


def lance_options(uri: str) -> dict[str, str] | None:
    """Lance ``storage_options`` for ``uri`` (None for local paths and non-S3 schemes,
    which Lance configures from the environment itself)."""
    if not is_remote(uri) or not uri.startswith(("s3://", "s3a://")):
        return None
    cfg = object_store_settings()
    opts = {"allow_http": "true" if cfg["allow_http"] else "false"}
    for key, name in (("endpoint", "aws_endpoint"), ("region", "aws_region"),
                      ("access_key", "aws_access_key_id"), ("secret_key", "aws_secret_access_key"),
                      ("session_token", "aws_session_token")):
        if cfg[key]:
            opts[name] = cfg[key]
    return opts


_FILESYSTEMS: dict[tuple, Any] = {}


def filesystem(uri: str):
    """A PyArrow filesystem and the path inside it for ``uri`` (local path or object store).

    S3 filesystems are built from :func:`object_store_settings` (the same endpoint, region,
    credentials and ``allow_http`` Lance gets) with short timeouts, and cached per setting.

    Returns:
        ``(pyarrow.fs.FileSystem, path)``.

    Raises:
        StoreError: an ``http://`` endpoint without ``AWS_ALLOW_HTTP=true``.
    """
    import pyarrow.fs as pafs

    if not uri.startswith(("s3://", "s3a://")):
        return pafs.FileSystem.from_uri(uri if is_remote(uri) else os.path.abspath(uri))
    cfg = object_store_settings()
    bucket, key = split_bucket(uri)
    cache_key = tuple(sorted((k, v) for k, v in cfg.items()))
    fs = _FILESYSTEMS.get(cache_key)
    if fs is None:
        kwargs: dict[str, Any] = {"connect_timeout": 3, "request_timeout": 20,
                                  "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=3)}
        endpoint = cfg["endpoint"]
        if endpoint:
            scheme, _, host = endpoint.partition("://")
            if scheme == "http" and not cfg["allow_http"]:
                raise StoreError(f"the endpoint {endpoint} is plain http, which is refused by default: "
                                 "set AWS_ALLOW_HTTP=true (or use an https endpoint)")
            kwargs.update(endpoint_override=host.rstrip("/") if host else endpoint,
                          scheme=scheme if host else "https")
        if cfg["region"]:
            kwargs["region"] = cfg["region"]
        if cfg["access_key"] and cfg["secret_key"]:
            kwargs.update(access_key=cfg["access_key"], secret_key=cfg["secret_key"],
                          session_token=cfg["session_token"])
        fs = _FILESYSTEMS[cache_key] = pafs.S3FileSystem(**kwargs)
    return fs, f"{bucket}/{key}".rstrip("/")


def s3_client():
    """A boto3 S3 client with the same settings as :func:`filesystem` (for conditional puts).

    Raises:
        StoreError: boto3 is not installed.
    """
    try:
        import boto3
        from botocore.config import Config
    except ImportError as exc:  # pragma: no cover - boto3 is a dependency
        raise StoreError("writing to an s3:// store needs boto3: pip install boto3") from exc
    cfg = object_store_settings()
    return boto3.client(
        "s3", endpoint_url=cfg["endpoint"], region_name=cfg["region"] or "us-east-1",
        aws_access_key_id=cfg["access_key"], aws_secret_access_key=cfg["secret_key"],
        aws_session_token=cfg["session_token"],
        config=Config(connect_timeout=3, read_timeout=10, retries={"max_attempts": 2}))


# ------------------------------------------------------------------ media in a bucket
class ObjectPath:
    """The parts of :class:`pathlib.Path` that ingest uses, for a file in an object store.

    ``str()`` is the URI (``s3://bucket/raw/a.mp4``); ``stat()`` asks the store for size and
    modification time; :func:`open_media` reads it with ranged requests.
    """

    def __init__(self, uri: str, size: int | None = None, mtime_ns: int | None = None):
        from pathlib import PurePosixPath

        self.scheme, _, rest = str(uri).rstrip("/").partition("://")
        self._key = PurePosixPath("/" + rest)
        self._size, self._mtime_ns = size, mtime_ns

    def __str__(self) -> str:
        return f"{self.scheme}:/{self._key}"

    def __repr__(self) -> str:
        return f"ObjectPath({str(self)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, ObjectPath) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __truediv__(self, other) -> "ObjectPath":
        return ObjectPath(f"{self}/{other}")

    name = property(lambda self: self._key.name)
    stem = property(lambda self: self._key.stem)
    suffix = property(lambda self: self._key.suffix)
    parent = property(lambda self: ObjectPath(f"{self.scheme}:/{self._key.parent}"))

    def relative_to(self, root: "ObjectPath"):
        return self._key.relative_to(root._key)

    def resolve(self) -> "ObjectPath":
        return self

    def expanduser(self) -> "ObjectPath":
        return self

    def is_absolute(self) -> bool:
        return True

    def stat(self):
        """``st_size`` and ``st_mtime_ns`` of the object (one HEAD request unless listed)."""
        from types import SimpleNamespace

        if self._size is None:
            fs, path = filesystem(str(self))
            info = fs.get_file_info(path)
            if info.size is None:
                raise FileNotFoundError(f"{self} does not exist")
            self._size, self._mtime_ns = info.size, info.mtime_ns or 0
        return SimpleNamespace(st_size=self._size, st_mtime_ns=self._mtime_ns)


def list_objects(uri: str) -> tuple[str, list[ObjectPath]]:
    """What ``uri`` names in its object store: ``("file", [it])``, ``("dir", [files below,
    sorted])`` or ``("missing", [])``. Folders or files whose name starts with '.' are left out.

    Raises:
        StoreError: the bucket cannot be reached (one line).
    """
    import pyarrow.fs as pafs

    fs, path = filesystem(uri)
    try:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.File:
            return "file", [ObjectPath(uri, info.size, info.mtime_ns)]
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    except OSError as exc:
        raise StoreError(f"cannot list {uri}: {diagnose(uri, str(exc))}") from None
    scheme = uri.split("://", 1)[0]
    files = [ObjectPath(f"{scheme}://{i.path}", i.size, i.mtime_ns) for i in infos
             if i.type == pafs.FileType.File
             and not any(part.startswith(".") for part in i.path[len(path):].split("/"))]
    if not files and info.type == pafs.FileType.NotFound:
        return "missing", []
    return "dir", sorted(files, key=str)


def open_media(path):
    """What PyAV and hashing should open for ``path``: the path itself when local, else a
    seekable PyArrow input file over the object store (ranged GETs, no full download).

    Use as a context manager-free value: close it when it is not a ``str``.
    """
    text = str(path)
    if not is_remote(text):
        return text
    fs, key = filesystem(text)
    return fs.open_input_file(key)
