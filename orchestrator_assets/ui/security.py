"""Who is using the UI, and refusing requests that another site made a browser send.

Three things: the actor (a reverse proxy's header, a login with the shared token, or the user
running the UI when it is loopback-only without a token); a login requirement when a token is
set; and for every form a CSRF token bound to a per-browser nonce plus an Origin (or Referer)
check, so a page elsewhere cannot make a logged-in browser record a decision.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from urllib.parse import urlsplit

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from orchestrator_assets.ui.settings import UISettings

SESSION_COOKIE = "orchestrator_ui_session"
CSRF_COOKIE = "orchestrator_ui_csrf"
CSRF_FIELD = "csrf_token"
OPEN_PATHS = ("/login", "/static/")  # reachable before logging in


class Forbidden(Exception):
    """A request refused for what it is (cross-site, no valid CSRF token): a 403 page."""


class Keys:
    """The process's signing key: cookies made by this UI are recognised, others are not.

    Random per start: a restart logs people out, which is fine for a review tool, and no key
    has to be configured or stored."""

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)

    def sign(self, purpose: str, value: str) -> str:
        """A MAC of `value` for one purpose (session, csrf)."""
        mac = hmac.new(self._key, f"{purpose}:{value}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def valid(self, purpose: str, value: str, mac: str) -> bool:
        """True when `mac` is this process's MAC of `value`."""
        return hmac.compare_digest(self.sign(purpose, value), mac)


def session_cookie(keys: Keys, actor: str) -> str:
    """The cookie value that says `actor` logged in."""
    name = base64.urlsafe_b64encode(actor.encode()).decode()
    return f"{name}.{keys.sign('session', name)}"


def session_actor(keys: Keys, cookie: str | None) -> str | None:
    """Who the session cookie names, if it is one this process made."""
    if not cookie or "." not in cookie:
        return None
    name, mac = cookie.rsplit(".", 1)
    if not keys.valid("session", name, mac):
        return None
    try:
        return base64.urlsafe_b64decode(name.encode()).decode()
    except ValueError:
        return None


def token_matches(settings: UISettings, given: str | None) -> bool:
    """True when `given` is the configured token (compared in constant time)."""
    if settings.token is None or not given:
        return False
    return hmac.compare_digest(given.encode(), settings.token.get_secret_value().encode())


def csrf_nonce(request: Request) -> str:
    """This browser's CSRF nonce (made by the middleware when it had none)."""
    return getattr(request.state, "csrf_nonce", "")


def csrf_token(keys: Keys, request: Request) -> str:
    """The token every form of this browser carries."""
    return keys.sign("csrf", csrf_nonce(request))


def same_origin(request: Request) -> bool:
    """True when the request comes from a page of this UI (by Origin, else Referer).

    A browser sends Origin with every cross-site POST; a client that sends neither (a script)
    still needs the CSRF token, which only a page of this UI hands out."""
    own = f"{request.url.scheme}://{request.headers.get('host', '')}"
    origin = request.headers.get("origin")
    if origin is not None:
        return origin == own
    referer = request.headers.get("referer")
    if referer is not None:
        parts = urlsplit(referer)
        return f"{parts.scheme}://{parts.netloc}" == own
    return True


async def checked_form(request: Request) -> FormData:
    """The posted form, once it is known to come from a page of this UI."""
    if not same_origin(request):
        raise Forbidden(
            "refused: the form was posted from another site (Origin "
            f"{request.headers.get('origin') or request.headers.get('referer')!r})"
        )
    form = await request.form()
    keys: Keys = request.app.state.keys
    given = str(form.get(CSRF_FIELD) or "")
    if not given or not keys.valid("csrf", csrf_nonce(request), given):
        raise Forbidden(
            "refused: the form's CSRF token is missing or stale; reload the page and try again"
        )
    return form


class AuthMiddleware:
    """Sets `request.state.actor` and the CSRF nonce; sends people to the login page when a
    token is configured and they have not logged in."""

    def __init__(self, app: ASGIApp, settings: UISettings, keys: Keys, default_actor: str):
        self.app = app
        self.settings = settings
        self.keys = keys
        self.default_actor = default_actor

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        nonce = request.cookies.get(CSRF_COOKIE)
        fresh = not nonce or len(nonce) != 43
        if fresh:
            nonce = secrets.token_urlsafe(32)
        scope.setdefault("state", {})
        scope["state"]["csrf_nonce"] = nonce
        actor = self._actor(request)
        scope["state"]["actor"] = actor
        if actor is None and not request.url.path.startswith(OPEN_PATHS):
            if request.method == "GET" and "text/event-stream" not in request.headers.get(
                "accept", ""
            ):
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                response: Response = RedirectResponse(f"/login?next={target}", status_code=303)
            else:
                response = Response("log in first", status_code=401)
            await self._send(response, fresh, nonce, scope, receive, send)
            return

        async def with_cookie(message) -> None:
            if fresh and message["type"] == "http.response.start":
                cookie = _cookie_header(CSRF_COOKIE, nonce)
                message["headers"] = [*message.get("headers", []), cookie]
            await send(message)

        await self.app(scope, receive, with_cookie)

    async def _send(self, response, fresh, nonce, scope, receive, send) -> None:
        if fresh:
            response.raw_headers.append(_cookie_header(CSRF_COOKIE, nonce))
        await response(scope, receive, send)

    def _actor(self, request: Request) -> str | None:
        """Who makes the request; None when a token is set and the request carries no proof."""
        named = None
        if self.settings.actor_header:
            named = (request.headers.get(self.settings.actor_header) or "").strip() or None
        if self.settings.token is None:
            return named or self.default_actor
        bearer = request.headers.get("authorization", "")
        if bearer.lower().startswith("bearer ") and token_matches(self.settings, bearer[7:]):
            return named or "token"
        logged_in = session_actor(self.keys, request.cookies.get(SESSION_COOKIE))
        if logged_in is None:
            return None
        return named or logged_in


def _cookie_header(name: str, value: str) -> tuple[bytes, bytes]:
    # SameSite=Strict: the browser leaves the cookie off requests other sites start, one more
    # wall behind the CSRF token and the Origin check.
    return (b"set-cookie", f"{name}={value}; Path=/; HttpOnly; SameSite=Strict".encode())
