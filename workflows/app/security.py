"""Request guard (pure ASGI): Host check, token, same-origin writes, errors as JSON.

- the Host header must name the bound address (a page on another site cannot reach the
  app through DNS rebinding);
- with a token, every request carries it (``Authorization: Bearer``, the ``X-Emofs-Token``
  header, the ``emofs_token`` cookie the page gets on its first load, or ``?token=``);
- CORS stays closed: no ``Access-Control-Allow-*`` header is ever sent, and a write whose
  ``Origin`` is another site is refused;
- any exception becomes a JSON answer with one line (:mod:`.errors`), never a traceback.
"""

from __future__ import annotations

import hmac
from http.cookies import SimpleCookie
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from .config import AppConfig
from .errors import error_body, json_bytes, status_of

__all__ = ["Guard", "TOKEN_COOKIE", "SECURITY_HEADERS"]

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
        query_token = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [None])[0]
        set_cookie = self.config.token is not None and query_token == self.config.token

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
        origin = headers.get("origin")
        if scope["method"] not in ("GET", "HEAD") and origin and origin != "null":
            if _hostname(urlsplit(origin).netloc) != host or urlsplit(origin).port != _port(headers):
                return 403, f"cross-origin writes are refused (Origin {origin})"
        return None

    def _has_token(self, scope: dict[str, Any], headers: dict[str, str]) -> bool:
        want = self.config.token.encode()
        candidates = []
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            candidates.append(auth[7:].strip())
        candidates.append(headers.get("x-emofs-token", ""))
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


async def _send_json(send: Callable, status: int, body: dict[str, Any]) -> None:
    payload = json_bytes(body)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(payload)).encode()), *SECURITY_HEADERS]})
    await send({"type": "http.response.body", "body": payload})
