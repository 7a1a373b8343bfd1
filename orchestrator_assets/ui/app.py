"""The review UI's Starlette app: routes, error pages, live updates."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading

from dagster import DagsterInstance
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from orchestrator_assets.spec.errors import OrchestratorError
from orchestrator_assets.ui.data import NotFound, State, event_position
from orchestrator_assets.ui.diffs import pygments_css
from orchestrator_assets.ui.pages.campaign import campaign_page
from orchestrator_assets.ui.pages.campaigns import campaigns_page
from orchestrator_assets.ui.pages.decide import decide
from orchestrator_assets.ui.pages.login import login, logout
from orchestrator_assets.ui.pages.target import target_page
from orchestrator_assets.ui.security import AuthMiddleware, Forbidden, Keys
from orchestrator_assets.ui.settings import UISettings
from orchestrator_assets.ui.web import HERE, render

log = logging.getLogger(__name__)


async def events(request: Request) -> Response:
    """Server-sent events: the event log's position whenever it moves, so open pages refresh
    what they show without a reload."""
    data: State = request.app.state.data
    interval = request.app.state.settings.live_interval_s

    async def positions():
        last = None
        while True:
            position = await asyncio.to_thread(event_position, data.instance)
            if position != last:
                last = position
                yield {"event": "position", "data": str(position)}
            await asyncio.sleep(interval)

    return EventSourceResponse(positions(), ping=15)


def highlight_css(request: Request) -> Response:
    """The Pygments colours of the diffs."""
    return Response(request.app.state.css, media_type="text/css")


def _message(request: Request, status: int, title: str, text: str) -> Response:
    return render(request, "message.html", status_code=status, title=title, text=text)


async def not_found(request: Request, exc: Exception) -> Response:
    """An unknown campaign or target."""
    return _message(request, 404, "Not found", str(exc))


async def bad_input(request: Request, exc: Exception) -> Response:
    """A request the platform refuses with a reason (a user's mistake, not a crash)."""
    return _message(request, 400, "Cannot do that", str(exc))


async def forbidden(request: Request, exc: Exception) -> Response:
    """A cross-site or stale form."""
    return _message(request, 403, "Refused", str(exc))


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (an unknown path, a wrong method)."""
    assert isinstance(exc, HTTPException)
    text = "no such page" if exc.status_code == 404 else str(exc.detail)
    return _message(request, exc.status_code, f"Error {exc.status_code}", text)


async def crashed(request: Request, exc: Exception) -> Response:
    """Anything else: logged with its traceback here, one line on the page."""
    log.exception("%s %s failed", request.method, request.url.path)
    return _message(
        request, 500, "Something went wrong", f"{type(exc).__name__}: {exc} (details in the log)"
    )


def warm(data: State, done: threading.Event) -> None:
    """Read every campaign's report once at start, so the first page is served from the cache
    (at 2,000 targets a report takes about a second to build from the event log)."""
    try:
        for loaded in data.catalog().campaigns.values():
            data.report(loaded.spec)
    except Exception:  # a page shows the error when it is asked for; warming is best effort
        log.exception("warming the campaign reports failed")
    finally:
        done.set()


def build_app(
    instance: DagsterInstance, settings: UISettings | None = None, default_actor: str = "ui"
) -> Starlette:
    """The review UI over `instance`; `default_actor` decides when nobody is named (loopback
    without a token or an actor header: the user who started the UI)."""
    settings = settings or UISettings()
    keys = Keys()
    routes = [
        Route("/", campaigns_page),
        Route("/c/{campaign}", campaign_page),
        Route("/c/{campaign}/t/{target}", target_page),
        Route("/c/{campaign}/t/{target}/decide", decide, methods=["POST"]),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/events", events),
        Route("/static/highlight.css", highlight_css),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    data = State(instance)
    warmed = threading.Event()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        threading.Thread(target=warm, args=(data, warmed), daemon=True, name="warm").start()
        yield

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            Middleware(AuthMiddleware, settings=settings, keys=keys, default_actor=default_actor)
        ],
        exception_handlers={
            NotFound: not_found,
            OrchestratorError: bad_input,
            Forbidden: forbidden,
            HTTPException: http_error,
            Exception: crashed,
        },
    )
    app.state.settings = settings
    app.state.keys = keys
    app.state.data = data
    app.state.warmed = warmed
    app.state.css = pygments_css()
    return app
