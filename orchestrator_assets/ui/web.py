"""What every page shares: the templates, flash messages, and rendering with the page's
context (actor, CSRF token, live-update position)."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote, unquote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from orchestrator_assets.ui.data import State, event_position
from orchestrator_assets.ui.security import CSRF_FIELD, Keys, csrf_token
from orchestrator_assets.ui.settings import UISettings

HERE = Path(__file__).parent
FLASH_COOKIE = "orchestrator_ui_flash"
templates = Jinja2Templates(directory=str(HERE / "templates"))


def state(request: Request) -> State:
    """The app's view of the instance."""
    return request.app.state.data


def settings(request: Request) -> UISettings:
    """The app's settings."""
    return request.app.state.settings


def render(request: Request, template: str, status_code: int = 200, **context) -> Response:
    """A page: the template with the shared context; a pending flash message is shown once."""
    keys: Keys = request.app.state.keys
    flash = _read_flash(request)
    try:
        position = event_position(state(request).instance)
    except Exception:  # an error page must render even when the instance does not answer
        position = 0
    response = templates.TemplateResponse(
        request,
        template,
        {
            "actor": getattr(request.state, "actor", None),
            "csrf_field": CSRF_FIELD,
            "csrf_token": csrf_token(keys, request),
            "flash": flash,
            "position": position,
            "ui": settings(request),
            **context,
        },
        status_code=status_code,
    )
    if flash is not None:
        response.delete_cookie(FLASH_COOKIE, path="/")
    return response


def redirect(url: str, message: str | None = None, kind: str = "ok") -> Response:
    """Go to `url` (after a POST) with a message shown on the next page."""
    response = RedirectResponse(url, status_code=303)
    if message:
        value = quote(json.dumps({"kind": kind, "text": message}))
        response.set_cookie(FLASH_COOKIE, value, path="/", httponly=True, samesite="strict")
    return response


def _read_flash(request: Request) -> dict | None:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    try:
        value = json.loads(unquote(raw))
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def blank(value: object) -> object:
    """A cell for the page: empty for a missing value (None, NaN, pandas' NA)."""
    import pandas as pd

    try:
        return "" if value is None or pd.isna(value) else value
    except (TypeError, ValueError):
        return value


templates.env.filters["blank"] = blank
