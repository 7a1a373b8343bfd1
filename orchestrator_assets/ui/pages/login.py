"""Logging in with the shared token (when one is configured), and out."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from orchestrator_assets.ui.security import (
    SESSION_COOKIE,
    checked_form,
    session_cookie,
    token_matches,
)
from orchestrator_assets.ui.web import render, settings


def _next(value: str | None) -> str:
    # Only a path of this UI: a login must not send people to another site.
    return value if value and value.startswith("/") and not value.startswith("//") else "/"


async def login(request: Request) -> Response:
    """The login form; posted: check the token and remember who logged in."""
    target = _next(request.query_params.get("next"))
    if settings(request).token is None:
        return RedirectResponse(target, status_code=303)
    if request.method == "GET":
        return render(request, "login.html", next=target, error=None)
    form = await checked_form(request)
    name = str(form.get("name") or "").strip()
    if not name or not token_matches(settings(request), str(form.get("token") or "")):
        error = "enter your name and the UI's token" if not name else "that token is not right"
        return render(request, "login.html", status_code=401, next=target, error=error)
    response = RedirectResponse(_next(str(form.get("next") or "")), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        session_cookie(request.app.state.keys, name),
        path="/",
        httponly=True,
        samesite="strict",
    )
    return response


async def logout(request: Request) -> Response:
    """Forget the login."""
    await checked_form(request)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
