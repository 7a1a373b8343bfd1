"""The `orchestrator` command: its group, the command modules it is made of, and the entry point
that turns a user's mistake into one clear line."""

from __future__ import annotations

import sys
import warnings

import click

from orchestrator_assets.cli.cache import cache
from orchestrator_assets.cli.metrics import metrics
from orchestrator_assets.cli.options import make_console
from orchestrator_assets.cli.prs import prs
from orchestrator_assets.cli.publish import publish
from orchestrator_assets.cli.report import list_campaigns, logs, report
from orchestrator_assets.cli.review import approve, audit, cancel, diff, reject, steer
from orchestrator_assets.cli.run import run, validate
from orchestrator_assets.cli.sandboxes import sandboxes
from orchestrator_assets.cli.ui import ui
from orchestrator_assets.spec.errors import OrchestratorError, SpecError

errors = make_console(stderr=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Apply one change across many repositories, verified, reviewed and delivered as PRs.

    State lives in the Dagster instance in DAGSTER_HOME (default: .dagster_home in the project),
    so everything done here shows in the UI (`make dev`).
    """
    ctx.obj = {"debug": debug}


for _command in (validate, run, report, logs, list_campaigns, cache, prs, sandboxes, metrics):
    cli.add_command(_command)
for _command in (approve, reject, steer, diff, cancel, audit, ui):
    cli.add_command(_command)
cli.add_command(publish)  # preview before publish (stages/publish.py)


def main() -> None:
    """Entry point: user mistakes become one clear line; tracebacks only with --debug."""
    warnings.filterwarnings("ignore")
    debug = "--debug" in sys.argv[1:]
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        errors.print("aborted")
        raise SystemExit(130) from None
    except click.ClickException as exc:
        exc.show()
        raise SystemExit(exc.exit_code) from None
    except SpecError as exc:
        if debug:
            raise
        for problem in exc.problems:
            errors.print(f"[red]error:[/] {problem.render(exc.file)}", soft_wrap=True)
        raise SystemExit(2) from None
    except OrchestratorError as exc:
        if debug:
            raise
        errors.print(f"[red]error:[/] {exc}", soft_wrap=True)
        raise SystemExit(2) from None
    except SystemExit:
        raise
    except Exception as exc:
        if debug:
            raise
        errors.print(
            f"[red]error:[/] {type(exc).__name__}: {exc}\n(run with --debug for the traceback)"
        )
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
