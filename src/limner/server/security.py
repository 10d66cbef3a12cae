"""The server's front door: Host and Origin checks, authentication, body size.

One ASGI middleware, run before any route:

1. **Host** (DNS rebinding): a page on ``evil.example`` whose name an attacker points at
   127.0.0.1 would otherwise reach this server with the browser's blessing. Its requests
   carry ``Host: evil.example``; only loopback names, the address the server listens on
   and names given with ``--public-host`` are answered.
2. **Origin** (cross-site requests): a browser sends ``Origin`` with cross-site fetches
   and form posts. Only the server's own origin and those allowed with
   ``--allow-origin`` may call it.
3. **Authentication**, when configured: ``Authorization: Bearer TOKEN`` or HTTP Basic,
   compared in constant time. The studio's static files are public (the page must load
   to ask for the token); every API route is not.
4. **Body size**: a ``Content-Length`` over the limit is refused at once; a chunked body
   is counted while it is read and refused when it passes the limit.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from urllib.parse import urlsplit

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from limner.server.errors import _error_body
from limner.server.settings import ServerSettings, is_loopback

__all__ = ["FrontDoor", "host_name"]

_API_PREFIXES = ("/api/", "/sdapi/", "/v1/", "/docs", "/redoc", "/openapi.json")
_PUBLIC_API = ("/api/v1/health",)
_WILDCARD_BINDS = ("0.0.0.0", "::", "")


class BodyTooLarge(StarletteHTTPException):
    """Raised from `receive` when a body passes the limit; an HTTP error, so that FastAPI's
    body parsing lets it through as the 413 it is."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is over {limit} bytes")


def host_name(host_header: str) -> str:
    """The name part of a Host header: ``[::1]:7860`` -> ``::1``, ``a.b:80`` -> ``a.b``."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


class FrontDoor:
    def __init__(self, app: ASGIApp, settings: ServerSettings) -> None:
        self.app = app
        self.settings = settings
        self.public_hosts = {h.lower().rstrip(".") for h in settings.public_hosts}
        bind = settings.host.strip("[]").lower()
        if bind not in _WILDCARD_BINDS:
            self.public_hosts.add(bind)
        self.any_host = bind in _WILDCARD_BINDS and settings.auth_required
        self.origins = {o.rstrip("/").lower() for o in settings.allowed_origins}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is not None:
            status, message, headers = refusal
            response = JSONResponse(
                _error_body(scope.get("path", "/"), status, message),
                status_code=status,
                headers=headers,
            )
            await response(scope, receive, send)
            return
        if scope["type"] == "http":
            await self._with_body_limit(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def _refusal(self, scope: Scope) -> tuple[int, str, dict | None] | None:
        headers = _headers(scope)
        host = host_name(headers.get("host", ""))
        if not (is_loopback(host) or host in self.public_hosts or self.any_host):
            return (
                403,
                f"host {host[:100]!r} is not served here (DNS rebinding protection); "
                "start the server with --public-host NAME to answer to that name",
                None,
            )
        origin = headers.get("origin")
        if origin is not None and not self._origin_allowed(origin, headers.get("host", "")):
            return (
                403,
                f"cross-origin request from {origin[:100]!r} refused; start the server with "
                "--allow-origin ORIGIN to allow it",
                None,
            )
        path = scope.get("path", "/")
        if self.settings.auth_required and _needs_auth(path):
            if not self._authenticated(headers.get("authorization", "")):
                challenge = 'Basic realm="limner"' if self.settings.user is not None else "Bearer"
                return (
                    401,
                    "authentication required: send 'Authorization: Bearer TOKEN'"
                    + (" or HTTP Basic credentials" if self.settings.user else ""),
                    {"WWW-Authenticate": challenge},
                )
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                return 400, "Content-Length is not a number", None
            if int(length) > self.settings.limits.max_body_bytes:
                return (
                    413,
                    f"the request body is {length} bytes; at most "
                    f"{self.settings.limits.max_body_bytes} are accepted",
                    None,
                )
        return None

    def _origin_allowed(self, origin: str, host_header: str) -> bool:
        origin = origin.strip().rstrip("/").lower()
        if origin in self.origins:
            return True
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and parts.netloc == host_header.strip().lower()

    def _authenticated(self, authorization: str) -> bool:
        scheme, _, value = authorization.partition(" ")
        value = value.strip()
        token = self.settings.token
        if scheme.lower() == "bearer" and token is not None:
            return hmac.compare_digest(value.encode(), token.get_secret_value().encode())
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            if self.settings.user is not None and self.settings.password is not None:
                ok_user = hmac.compare_digest(user.encode(), self.settings.user.encode())
                ok_pass = hmac.compare_digest(
                    password.encode(), self.settings.password.get_secret_value().encode()
                )
                return ok_user and ok_pass
            if token is not None:  # a token may come as the Basic password (webuiapi, curl -u)
                return hmac.compare_digest(password.encode(), token.get_secret_value().encode())
        return False

    async def _with_body_limit(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.settings.limits.max_body_bytes
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            response = JSONResponse(
                _error_body(scope["path"], 413, f"the request body is over {limit} bytes"),
                status_code=413,
            )
            await response(scope, receive, send)


def _needs_auth(path: str) -> bool:
    return path.startswith(_API_PREFIXES) and path not in _PUBLIC_API
