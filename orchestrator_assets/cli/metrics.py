"""`orchestrator metrics`: the Prometheus exporter, a small process reading the instance."""

from __future__ import annotations

import signal
import threading

import click


@click.group()
def metrics() -> None:
    """Prometheus metrics of every campaign, read from the Dagster instance."""


@metrics.command()
@click.option("--port", default=9464, show_default=True, help="Port to serve /metrics on.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--interval",
    default=15.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds between reads of the instance.",
)
def serve(port: int, host: str, interval: float) -> None:
    """Serve the metrics over HTTP until stopped (SIGTERM or Ctrl-C).

    Reads runs, target statuses and new materializations from the instance in DAGSTER_HOME
    (SQLite or PostgreSQL) every INTERVAL seconds, so it counts campaigns whichever process
    (CLI, daemon, run pod) ran them.
    """
    from dagster import DagsterInstance
    from prometheus_client import start_http_server

    from orchestrator_assets.cli.options import make_console
    from orchestrator_assets.reports.metrics import EventLogCollector
    from orchestrator_assets.spec.errors import OrchestratorError
    from orchestrator_assets.spec.settings import Settings, ensure_dagster_home

    console = make_console()
    ensure_dagster_home(Settings())
    collector = EventLogCollector()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with DagsterInstance.get() as instance:
        collector.refresh(instance)  # the first answer already holds the history
        try:
            server, thread = start_http_server(port, host, registry=collector.metrics.registry)
        except OSError as exc:
            raise OrchestratorError(
                f"--port {port}: cannot listen on {host}:{port}: {exc}"
            ) from None
        console.print(f"serving metrics on http://{host}:{port}/metrics (every {interval:g}s)")
        try:
            while not stop.wait(interval):
                collector.refresh(instance)
        except KeyboardInterrupt:
            pass
        finally:
            server.shutdown()
            thread.join(timeout=5)
    console.print("metrics exporter stopped")
