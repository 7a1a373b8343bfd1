"""What the `orchestrator` command modules share: the --output option and the instance."""

from __future__ import annotations

import fcntl
import os
import sys
from typing import TYPE_CHECKING

import click
from rich.console import Console

from orchestrator_assets.spec.settings import Settings, ensure_dagster_home

if TYPE_CHECKING:
    from dagster import DagsterInstance

OUTPUT = click.option(
    "--output",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="A table for people, or JSON (a list of objects) for scripts.",
)


# Into a file or a pipe rich would assume 80 columns and fold the tables' cells: a table gets the
# width it needs instead (up to this many columns), so a saved summary reads like the screen.
FILE_WIDTH = 4096


def make_console(stderr: bool = False) -> Console:
    """A console for the CLI's output: on a terminal (or with COLUMNS set) as wide as that,
    into a file or a pipe wide enough that no table is folded or cut."""
    stream = sys.stderr if stderr else sys.stdout
    wide = not stream.isatty() and not os.environ.get("COLUMNS")
    return Console(
        stderr=stderr, highlight=False, soft_wrap=True, width=FILE_WIDTH if wide else None
    )


def open_instance() -> DagsterInstance:
    """The Dagster instance in DAGSTER_HOME (created with the platform's config when new).

    Dagster is imported here, when a command runs, so `orchestrator --help` stays quick."""
    from dagster import DagsterInstance

    settings = Settings()
    settings.dagster_home.mkdir(parents=True, exist_ok=True)
    # Two commands started at once on a new home would both create its storage's tables ("table
    # secondary_indexes already exists"): one at a time creates them; later opens just wait.
    with open(settings.dagster_home / ".instance.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ensure_dagster_home(settings)
        instance = DagsterInstance.get()
        instance.get_runs(limit=1)  # run, event log and schedule storages are made on first use
        instance.event_log_storage.get_maximum_record_id()
        instance.schedule_storage  # noqa: B018
    return instance
