"""`orchestrator ui`: the review web app on this platform's Dagster instance."""

from __future__ import annotations

import socket

import click

from orchestrator_assets.cli.options import make_console, open_instance


@click.command()
@click.option("--host", help="Address to bind (default ORCHESTRATOR_UI_HOST, else 127.0.0.1).")
@click.option(
    "--port", type=int, help="Port (default ORCHESTRATOR_UI_PORT, else 3001; 0: any free one)."
)
def ui(host: str | None, port: int | None) -> None:
    """Serve the review UI: campaigns, targets, diffs; approve, reject or steer in a browser.

    Decisions are the same event-log records `orchestrator approve|reject|steer` make. Off the
    loopback address it needs ORCHESTRATOR_UI_TOKEN (people log in with it)."""
    import uvicorn

    from orchestrator_assets.cli.prs import current_actor
    from orchestrator_assets.ui.app import build_app
    from orchestrator_assets.ui.settings import UISettings

    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = UISettings(**overrides)
    settings.check_bind()  # before anything listens
    # Bind first, then print: with port 0 the printed URL is the one the OS chose.
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.host, settings.port))
    bound = sock.getsockname()[1]
    app = build_app(open_instance(), settings, default_actor=current_actor())
    shown = f"[{settings.host}]" if family == socket.AF_INET6 else settings.host
    console = make_console()
    console.print(f"review UI: http://{shown}:{bound}", soft_wrap=True)
    console.file.flush()
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=3)
    uvicorn.Server(config).run(sockets=[sock])
