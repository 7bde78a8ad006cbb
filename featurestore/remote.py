"""A fast reachability probe for object-store stores (``s3://``, ``gs://``, ``az://`` ...).

Lance reports an unreachable bucket as a ``ValueError`` that reads like any other open
failure, after retrying for many seconds; the store used to take it for "no store here"
(``emofs info`` said "run emofs ingest first") or let it out as a traceback (``emofs
ingest``). :func:`check_remote` opens ``<store>/clips.lance`` once with short timeouts and
no retries when a remote store is opened, and turns a failure into one
:class:`~featurestore.errors.StoreError` line that says what is wrong (region,
credentials, endpoint, bucket) and what to set. A store that is reachable but empty
passes: commands that need one say so themselves.
"""

from __future__ import annotations

import os
import re

from .errors import StoreError

__all__ = ["check_remote", "PROBE_OPTIONS"]

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
    if "://" not in uri or uri.startswith("file://") or uri in _REACHABLE:
        return
    import lance

    try:
        lance.dataset(f"{uri}/clips.lance", storage_options=PROBE_OPTIONS)
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
    if "nosuchbucket" in low or ("404" in low and "server returned" in low):
        return f"bucket {bucket!r} does not exist: create it or fix the --store URI"
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
