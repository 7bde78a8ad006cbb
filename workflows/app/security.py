"""Request guard (pure ASGI): Host check, token, same-origin writes, errors as JSON.

- the Host header must name the bound address (a page on another site cannot reach the
  app through DNS rebinding);
- with a token, every request carries it (``Authorization: Bearer``, the ``X-Emofs-Token``
  header, the ``emofs_token`` cookie the page gets on its first load, or ``?token=``);
- CORS stays closed: no ``Access-Control-Allow-*`` header is ever sent;
- a write (any method but GET / HEAD / OPTIONS) needs proof that the page itself sent it:
  an ``Origin`` (or, without one, a ``Referer``) equal to the page's own origin, or the
  token in a header (``Authorization: Bearer`` / ``X-Emofs-Token``, which a page on
  another site cannot set without a CORS preflight this app never grants). ``Origin:
  null`` (sandboxed frames, ``data:`` pages) and a write with neither header are refused
  (403), and so are the form encodings a cross-site form can send without a preflight
  (``text/plain``, ``application/x-www-form-urlencoded``, ``multipart/form-data``: 415);
- every body is bounded before it is read: the declared ``Content-Length`` and the bytes
  actually received are checked against the route's limit (:func:`body_limit`; 413), so a
  huge body is never held in memory;
- any exception becomes a JSON answer with one line (:mod:`.errors`), never a traceback.
"""

from __future__ import annotations

import hmac
from http.cookies import SimpleCookie
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from .config import AppConfig
from .errors import PayloadError, error_body, json_bytes, status_of

__all__ = ["Guard", "TOKEN_COOKIE", "SECURITY_HEADERS", "JSON_BODY_LIMIT", "body_limit"]

#: Largest body of a JSON write (a correction or an undo is well under 1 KiB).
JSON_BODY_LIMIT = 64 * 1024
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
#: Content types a cross-site ``<form>`` (or a no-cors fetch) sends without a preflight.
FORM_TYPES = ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data")


def body_limit(path: str, config: AppConfig) -> int:
    """The most bytes a request body to ``path`` may hold (uploads: ``--max-upload-mb``)."""
    return config.max_upload_bytes if path == "/api/upload" else JSON_BODY_LIMIT


class BodyTooLargeError(PayloadError):
    """A request body over its route's limit (413)."""

    def __init__(self, limit: int):
        what = f"{limit / 2**20:g} MiB (emofs app --max-upload-mb)" if limit >= 2**20 else f"{limit // 1024} KiB"
        super().__init__(f"the request body is over this route's limit of {what}", 413)

TOKEN_COOKIE = "emofs_token"
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy",
     b"default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
     b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"),
]


class Guard:
    """ASGI middleware wrapping the app (see the module docstring)."""

    def __init__(self, app: Callable, config: AppConfig):
        self.app = app
        self.config = config

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        problem = self._refuse(scope, headers)
        if problem is not None:
            await _send_json(send, problem[0], {"error": problem[1]})
            return
        if scope["method"] not in SAFE_METHODS:
            receive = _bounded(receive, body_limit(scope.get("path", ""), self.config))
        set_cookie = self.config.token is not None and parse_qs(
            scope.get("query_string", b"").decode("latin-1")).get("token", [None])[0] == self.config.token

        started = False

        async def send_wrapped(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                extra = list(SECURITY_HEADERS)
                if set_cookie:
                    extra.append((b"set-cookie", f"{TOKEN_COOKIE}={self.config.token}; Path=/; "
                                  "HttpOnly; SameSite=Strict".encode()))
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        try:
            await self.app(scope, receive, send_wrapped)
        except Exception as exc:  # noqa: BLE001 - the page gets one line, the log the rest
            if started:
                raise
            await _send_json(send, status_of(exc), error_body(exc))

    def _refuse(self, scope: dict[str, Any], headers: dict[str, str]) -> tuple[int, str] | None:
        host = _hostname(headers.get("host", ""))
        if not self.config.any_host and host not in self.config.allowed_hosts:
            return 421, f"this app answers on {self.config.host} only (Host {host!r} refused)"
        if self.config.token and not self._has_token(scope, headers):
            return 401, "this app needs its token: open the URL `emofs app` printed (…?token=…)"
        if scope["method"] in SAFE_METHODS:
            return None
        return self._refuse_write(scope, headers, host)

    def _refuse_write(self, scope: dict[str, Any], headers: dict[str, str], host: str) -> tuple[int, str] | None:
        declared = headers.get("content-length", "")
        limit = body_limit(scope.get("path", ""), self.config)
        if declared.isdigit() and int(declared) > limit:
            return 413, str(BodyTooLargeError(limit))
        if not (self.config.token and self._has_token(scope, headers, header_only=True)):
            problem = self._foreign_origin(headers, host)
            if problem is not None:
                return 403, problem
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type in FORM_TYPES:
            return 415, (f"writes take JSON (Content-Type: application/json) or a media file's bytes, "
                         f"not {content_type}")
        return None

    @staticmethod
    def _foreign_origin(headers: dict[str, str], host: str) -> str | None:
        """Why a write's Origin (or Referer) is not the page's own, or None when it is."""
        origin = headers.get("origin")
        if origin is None:  # some clients send only a Referer; its origin must be ours too
            referer = urlsplit(headers.get("referer", ""))
            origin = f"{referer.scheme}://{referer.netloc}" if referer.scheme and referer.netloc else None
        if origin is None or origin == "null":
            return ("writes need the page's own Origin header (or the token in an X-Emofs-Token "
                    "header): this request has " + ("Origin: null" if origin else "neither"))
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or _hostname(parts.netloc) != host or parts.port != _port(headers):
            return f"cross-origin writes are refused (Origin {origin})"
        return None

    def _has_token(self, scope: dict[str, Any], headers: dict[str, str], header_only: bool = False) -> bool:
        """Whether the request carries the token; ``header_only``: in a header a page on
        another site cannot set (not the cookie or the query, which a forged request carries)."""
        want = self.config.token.encode()
        candidates = []
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            candidates.append(auth[7:].strip())
        candidates.append(headers.get("x-emofs-token", ""))
        if header_only:
            return any(hmac.compare_digest(c.encode(), want) for c in candidates if c)
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # noqa: BLE001 - a malformed cookie header is no token
            pass
        if TOKEN_COOKIE in cookie:
            candidates.append(cookie[TOKEN_COOKIE].value)
        candidates += parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [])
        return any(hmac.compare_digest(c.encode(), want) for c in candidates if c)


def _hostname(netloc: str) -> str:
    if netloc.startswith("["):
        return netloc[1:].split("]")[0]
    return netloc.rsplit(":", 1)[0] if netloc.count(":") == 1 else netloc


def _port(headers: dict[str, str]) -> int | None:
    netloc = headers.get("host", "")
    tail = netloc.rsplit("]", 1)[-1]
    return int(tail.rsplit(":", 1)[1]) if ":" in tail and tail.rsplit(":", 1)[1].isdigit() else None


def _bounded(receive: Callable, limit: int) -> Callable:
    """``receive`` that raises :class:`BodyTooLargeError` once more than ``limit`` bytes arrived
    (a chunked body declares no length; the route stops reading at the limit)."""
    seen = 0

    async def bounded_receive() -> dict[str, Any]:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLargeError(limit)
        return message

    return bounded_receive


async def _send_json(send: Callable, status: int, body: dict[str, Any]) -> None:
    payload = json_bytes(body)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(payload)).encode()), *SECURITY_HEADERS]})
    await send({"type": "http.response.body", "body": payload})
