"""Options shared by the `orchestrator` commands."""

import click

OUTPUT = click.option(
    "--output",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="A table for people, or JSON (a list of objects) for scripts.",
)
