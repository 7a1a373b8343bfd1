"""What the `orchestrator` command modules share: the --output option and the instance."""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.text import Text

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


def progress_printer(console: Console) -> Callable[[str, str], None]:
    """Where a run's progress lines go: `emit(stage, message)` prints one line on `console`.

    The messages are the sandboxed tools' own output, printed as they are: never read as rich
    markup (a "[/tmp]" in a test's output would stop the run's printing with a MarkupError).
    Into a file or a pipe, which shows no styles, a line is written as it is; rich's rendering
    cost about 0.5 ms of the run's CPU a line, and a campaign prints dozens a target."""
    if not console.is_terminal:
        stream = console.file

        def write(stage: str, message: str) -> None:
            stream.write(f"{stage:>13} {message}\n")
            stream.flush()  # a `| tee` or a CI log shows the run as it goes

        return write

    def styled(stage: str, message: str) -> None:
        failed = "failed" in message or "FAILED" in message
        line = Text.assemble((f"{stage:>13}", "dim"), " ", (message, "red" if failed else ""))
        console.print(line, soft_wrap=True)

    return styled


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
