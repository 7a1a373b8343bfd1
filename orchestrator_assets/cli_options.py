"""What the `orchestrator` command modules share: the --output option and the instance."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from orchestrator_assets.settings import Settings, ensure_dagster_home

if TYPE_CHECKING:
    from dagster import DagsterInstance

OUTPUT = click.option(
    "--output",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="A table for people, or JSON (a list of objects) for scripts.",
)


def open_instance() -> DagsterInstance:
    """The Dagster instance in DAGSTER_HOME (created with the platform's config when new).

    Dagster is imported here, when a command runs, so `orchestrator --help` stays quick."""
    from dagster import DagsterInstance

    ensure_dagster_home(Settings())
    return DagsterInstance.get()
