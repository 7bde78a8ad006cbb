"""The analyst app's settings (``emofs app`` flags), checked before the server starts."""

from __future__ import annotations

import ipaddress
import os
import secrets
from dataclasses import dataclass, field

from featurestore.errors import InputError

__all__ = ["AppConfig", "TOKEN_ENV", "RUNS_ENV", "LOOPBACK_HOSTS", "is_loopback"]

#: Environment variable read when ``--token`` is not given.
TOKEN_ENV = "EMOFS_APP_TOKEN"
#: Environment variable naming the folder of run directories (default ``runs``, where
#: ``emofs train head`` writes them).
RUNS_ENV = "EMOFS_APP_RUNS"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def is_loopback(host: str) -> bool:
    """True when ``host`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class AppConfig:
    """How the app serves one store.

    Attributes:
        store: store directory or URI (``--store``).
        host: address to bind (``--host``); anything but loopback needs a token.
        port: TCP port (``--port``).
        read_only: refuse corrections (``--read-only``).
        token: a secret every request must carry (``--token`` or ``$EMOFS_APP_TOKEN``;
            ``auto`` draws a random one); None on loopback without one.
        max_upload_mb: largest media file accepted by the upload search.
        allowed_hosts: Host header values accepted (against DNS rebinding); filled from
            ``host`` when empty.
        runs_dir: folder of head run directories (``$EMOFS_APP_RUNS``, default ``runs``):
            a prediction run's directory there gives the clip page its modality weights
            and the Runs page its cross-validation tables (``cv.json``).
    """

    store: str | None = None
    host: str = "127.0.0.1"
    port: int = 8765
    read_only: bool = False
    token: str | None = None
    max_upload_mb: float = 50.0
    allowed_hosts: list[str] = field(default_factory=list)
    runs_dir: str | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise InputError(f"--port must be in 0..65535 (got {self.port})")
        if self.max_upload_mb <= 0:
            raise InputError(f"--max-upload-mb must be > 0 (got {self.max_upload_mb})")
        if self.token is None:
            self.token = os.environ.get(TOKEN_ENV) or None
        if self.token == "auto":
            self.token = secrets.token_urlsafe(18)
        if self.token is not None and len(self.token) < 8:
            raise InputError("--token must be at least 8 characters (or `auto` for a random one)")
        if not is_loopback(self.host) and not self.token:
            raise InputError(
                f"--host {self.host} exposes the store beyond this machine: pass --token SECRET "
                f"(or --token auto, or set {TOKEN_ENV}) so every request must carry it")
        if self.runs_dir is None:
            self.runs_dir = os.environ.get(RUNS_ENV) or "runs"  # may not exist yet: no runs
        elif not os.path.isdir(self.runs_dir):
            raise InputError(f"--runs {self.runs_dir} is not a folder: pass the folder `emofs train "
                             "head --out` wrote its run directories into (default runs)")
        if not self.allowed_hosts:
            self.allowed_hosts = list(LOOPBACK_HOSTS) + ([self.host] if self.host not in LOOPBACK_HOSTS else [])

    @property
    def any_host(self) -> bool:
        """True when bound to every interface (then any Host header is accepted)."""
        return self.host in ("0.0.0.0", "::")

    @property
    def max_upload_bytes(self) -> int:
        """The upload size limit in bytes."""
        return int(self.max_upload_mb * 2**20)

    def url(self) -> str:
        """The page's address (with the token when there is one)."""
        host = "127.0.0.1" if self.any_host else self.host
        return f"http://{host}:{self.port}/" + (f"?token={self.token}" if self.token else "")
