"""The dashboard's gate: the controller's token on every request, reads only.

The token is required on loopback too: login nodes are shared, and any user
of the machine can reach 127.0.0.1. A request carries it one of three ways:

- ``Authorization: Bearer <token>``, for scripts;
- ``?token=<token>`` on any URL, which is how ``cobalt dashboard`` links
  arrive: the answer sets an HttpOnly, SameSite=Strict cookie and redirects to
  the same URL without the token, so it leaves the address bar and history;
- that cookie, for everything the page loads afterwards.

Every other method than GET and HEAD is refused with 405: the dashboard
changes nothing, runs nothing, and offers no terminal.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from urllib.parse import parse_qsl, quote, urlencode

from starlette.datastructures import URL, Headers
from starlette.requests import cookie_parser
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

READ_METHODS = frozenset({"GET", "HEAD"})

SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-resource-policy", b"same-origin"),
]

NEEDS_TOKEN = (
    "This dashboard needs the controller's token. Run `cobalt dashboard` on the "
    "controller's machine to get a link that carries it."
)

_UNAUTHORIZED_PAGE = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>cobalt dashboard: token needed</title>
<link rel="icon" href="data:,"></head>
<body>
<h1>Token needed</h1>
<p>{NEEDS_TOKEN.replace("`cobalt dashboard`", "<code>cobalt dashboard</code>")}</p>
</body></html>
"""


def cookie_name(port: int) -> str:
    """One cookie per controller port, so two controllers on one host do not collide."""
    return f"cobalt_dashboard_{port}"


class TokenGate:
    """ASGI middleware that lets through only token-bearing GET and HEAD requests."""

    def __init__(self, app: ASGIApp, token: str, cookie: str) -> None:
        self.app = app
        self._token = token.encode()
        self.cookie = cookie

    def _valid(self, candidate: str | None) -> bool:
        return candidate is not None and secrets.compare_digest(
            candidate.encode("utf-8", "surrogateescape"), self._token
        )

    def _presented(self, headers: Headers) -> Iterable[str]:
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            yield credentials.strip()
        cookie = cookie_parser(headers.get("cookie", "")).get(self.cookie)
        if cookie is not None:
            yield cookie

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            return
        secured = _secured(send)
        response = self._check(scope)
        if response is not None:
            await response(scope, receive, secured)
        else:
            await self.app(scope, receive, secured)

    def _check(self, scope: Scope) -> Response | None:
        """A refusal or redirect, or ``None`` to let the request through."""
        if scope["method"] not in READ_METHODS:
            return PlainTextResponse(
                "The cobalt dashboard is read-only: it answers GET and HEAD only.\n",
                status_code=405,
                headers={"Allow": "GET, HEAD"},
            )
        url = URL(scope=scope)
        query = parse_qsl(url.query, keep_blank_values=True)
        offered = [v for k, v in query if k == "token"]
        if offered:
            if not all(self._valid(v) for v in offered):
                return _unauthorized(scope)
            rest = urlencode([(k, v) for k, v in query if k != "token"])
            # One leading slash: "//host" would send the browser to another site.
            location = "/" + quote(url.path.lstrip("/")) + (f"?{rest}" if rest else "")
            response = Response(status_code=303, headers={"Location": location})
            response.set_cookie(self.cookie, offered[0], httponly=True, samesite="strict", path="/")
            response.headers["Cache-Control"] = "no-store"
            return response
        if any(self._valid(v) for v in self._presented(Headers(scope=scope))):
            return None
        return _unauthorized(scope)


def _unauthorized(scope: Scope) -> Response:
    headers = {"WWW-Authenticate": 'Bearer realm="cobalt dashboard"', "Cache-Control": "no-store"}
    if str(scope.get("path", "")).startswith("/api/"):
        return JSONResponse({"error": NEEDS_TOKEN}, status_code=401, headers=headers)
    return HTMLResponse(_UNAUTHORIZED_PAGE, status_code=401, headers=headers)


def _secured(send: Send) -> Send:
    """``send``, adding :data:`SECURITY_HEADERS` to every response."""

    async def secured(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
        await send(message)

    return secured
